//! Discord embeds and their fields: building one embed, fields within their limits, the
//! description from parts, and fitting all embeds of a message into the 10-embed, 6000-character
//! budget, saying what was left out.

use serde_json::{json, Map, Value};

use super::text::truncate;
use super::{
    EMBEDS, EMBEDS_TOTAL, EMBED_DESCRIPTION, EMBED_FIELDS, EMBED_TITLE, FIELD_NAME, FIELD_VALUE,
    FOOTER, GREY,
};

/// An inline field holds at most this many characters of value (longer values get a row).
const INLINE_VALUE: usize = 40;

/// An empty field name or value (Discord refuses empty ones).
const BLANK: &str = "\u{200b}";

fn nonblank(s: String) -> String {
    if s.trim().is_empty() {
        BLANK.to_string()
    } else {
        s
    }
}

/// A field: name and value already markdown, cut to the limits; inline when both are short.
pub(super) fn field(name: &str, value_md: &str) -> Value {
    let name = nonblank(truncate(name, FIELD_NAME));
    let value = nonblank(truncate(value_md, FIELD_VALUE));
    let inline = value.chars().count() <= INLINE_VALUE && !value.contains('\n');
    json!({"name": name, "value": value, "inline": inline})
}

pub(super) fn block_field(name: &str, value_md: &str) -> Value {
    let mut f = field(name, value_md);
    f["inline"] = json!(false);
    f
}

/// Joins description parts (already markdown) with blank lines, within the description limit;
/// a part that does not fit whole is cut, and the rest are named in a closing line.
pub(super) fn description(parts: Vec<String>) -> String {
    let parts: Vec<String> = parts.into_iter().filter(|p| !p.trim().is_empty()).collect();
    let mut out = String::new();
    let mut used = 0;
    let note_room = 60;
    for (i, p) in parts.iter().enumerate() {
        let sep = if out.is_empty() { 0 } else { 2 };
        let n = p.chars().count();
        if used + sep + n <= EMBED_DESCRIPTION - note_room {
            if sep > 0 {
                out.push_str("\n\n");
            }
            out.push_str(p);
            used += sep + n;
            continue;
        }
        let room = (EMBED_DESCRIPTION - note_room).saturating_sub(used + sep);
        if room > 40 && !p.contains("```") {
            if sep > 0 {
                out.push_str("\n\n");
            }
            out.push_str(&truncate(p, room));
        }
        let more = parts.len() - i - 1;
        out.push_str(&format!("\n*… cut here, {more} more part(s) not shown*"));
        break;
    }
    truncate(&out, EMBED_DESCRIPTION)
}

/// Fields past the limit of 25 fold into one last field that says how many were left out.
pub(super) fn cap_fields(mut fields: Vec<Value>) -> Vec<Value> {
    if fields.len() > EMBED_FIELDS {
        let more = fields.len() - (EMBED_FIELDS - 1);
        fields.truncate(EMBED_FIELDS - 1);
        fields.push(block_field(
            BLANK,
            &format!("*… {more} more field(s) not shown*"),
        ));
    }
    fields
}

pub(super) fn embed(title: &str, description: String, fields: Vec<Value>, colour: u32) -> Value {
    let mut e = Map::new();
    e.insert("type".into(), json!("rich"));
    let title = title.trim();
    if !title.is_empty() {
        e.insert("title".into(), json!(truncate(title, EMBED_TITLE)));
    }
    if !description.trim().is_empty() {
        e.insert("description".into(), json!(description));
    }
    if !fields.is_empty() {
        e.insert("fields".into(), Value::Array(fields));
    }
    if !e.contains_key("title") && !e.contains_key("description") && !e.contains_key("fields") {
        e.insert("title".into(), json!("dualkey"));
    }
    e.insert("color".into(), json!(colour));
    Value::Object(e)
}

pub(super) fn add_footer_note(e: &mut Value, note: &str) {
    let old = e["footer"]["text"].as_str().unwrap_or("").to_string();
    let text = if old.is_empty() {
        note.to_string()
    } else {
        format!("{old} · {note}")
    };
    e["footer"] = json!({"text": truncate(&text, FOOTER)});
}

/// Characters an embed counts against the 6000 total.
pub fn embed_len(e: &Value) -> usize {
    let n = |v: &Value| v.as_str().map(|s| s.chars().count()).unwrap_or(0);
    let mut total = n(&e["title"]) + n(&e["description"]) + n(&e["footer"]["text"]);
    total += n(&e["author"]["name"]);
    if let Some(f) = e["fields"].as_array() {
        total += f
            .iter()
            .map(|f| n(&f["name"]) + n(&f["value"]))
            .sum::<usize>();
    }
    total
}

/// Shrinks an embed to at most `max` characters: the description first (down to a short cut),
/// then fields from the end, then the title.
fn shrink(e: &mut Value, max: usize) {
    let over = |e: &Value| embed_len(e).saturating_sub(max);
    if over(e) == 0 {
        return;
    }
    if let Some(d) = e["description"].as_str().map(str::to_owned) {
        let n = d.chars().count();
        let keep = n.saturating_sub(over(e) + 40).max(40.min(n));
        let cut = if d.contains("```") && keep < n {
            // A cut inside a code block would leave it open.
            "*… cut here*".to_string()
        } else {
            truncate(&d, keep)
        };
        e["description"] = json!(cut);
    }
    let mut dropped = 0;
    while over(e) > 0 {
        let Some(fields) = e["fields"].as_array_mut() else {
            break;
        };
        if fields.pop().is_none() {
            break;
        }
        dropped += 1;
        e["footer"] = json!({"text": format!("… {dropped} field(s) not shown")});
    }
    if over(e) > 0 {
        if let Some(d) = e["description"].as_str().map(str::to_owned) {
            let keep = d.chars().count().saturating_sub(over(e)).max(1);
            e["description"] = json!(truncate(&d, keep));
        }
    }
    if over(e) > 0 {
        if let Some(t) = e["title"].as_str().map(str::to_owned) {
            let keep = t.chars().count().saturating_sub(over(e)).max(1);
            e["title"] = json!(truncate(&t, keep));
        }
    }
}

/// Keeps at most 10 embeds and 6000 characters across them, saying what was left out.
pub(super) fn fit_total(mut embeds: Vec<Value>) -> Vec<Value> {
    let note = |n: usize| {
        json!({"type": "rich", "color": GREY,
            "description": format!("*… {n} more section(s) not shown; run the same command in `dualkey shell` or the CLI for all of it*")})
    };
    let mut left_out = 0;
    if embeds.len() > EMBEDS {
        left_out = embeds.len() - (EMBEDS - 1);
        embeds.truncate(EMBEDS - 1);
    }
    let reserve = 120;
    let mut out = Vec::new();
    let mut used = 0;
    let count = embeds.len();
    for (i, mut e) in embeds.into_iter().enumerate() {
        let room = EMBEDS_TOTAL - reserve - used;
        if embed_len(&e) > room {
            if room >= 200 || out.is_empty() {
                shrink(&mut e, room);

                out.push(e);
                left_out += count - i - 1;
            } else {
                left_out += count - i;
            }
            break;
        }
        used += embed_len(&e);
        out.push(e);
    }
    if left_out > 0 {
        out.push(note(left_out));
    }
    out
}
