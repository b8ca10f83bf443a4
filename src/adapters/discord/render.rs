//! Discord rendering of neutral replies: a card is one embed (title with the state, a colour by
//! state, inline fields, the step list, warnings by severity, votes, the expiry as a Discord
//! timestamp), a report is one embed per section (tables as monospace code blocks), text is the
//! message `content`; buttons are action rows of type-2 buttons whose `custom_id` is the button
//! id. Every Discord limit is respected by truncating with `…` on a character boundary, and the
//! message says when something was left out.
//!
//! Text that came from users or the database is escaped for Discord markdown ([`escape`]), so a
//! migration called `*_x_*` shows as written and `@everyone` pings nobody; `allowed_mentions`
//! never lets `@everyone`, `@here` or roles ping, and lets only the card's own mentions of
//! Discord accounts through.
//!
//! Discord has no confirmation dialog for buttons: a button's [`crate::core::reply::Confirm`]
//! text is shown in the embed as a field, `Before you click <label>`, next to the button it
//! belongs to; the click itself counts at once.

use serde_json::{json, Map, Value};

use crate::core::event::Platform;
use crate::core::reply::{
    table_text, utc_text, Body, Button, ButtonStyle, Card, CardState, Mention, Reply, Report,
    Section, Severity, Step, StepState, Style, Table, Visibility, Warning,
};

/// Message `content`.
pub const CONTENT: usize = 2000;
/// Embeds in one message.
pub const EMBEDS: usize = 10;
/// Embed title.
pub const EMBED_TITLE: usize = 256;
/// Embed description.
pub const EMBED_DESCRIPTION: usize = 4096;
/// Fields in one embed.
pub const EMBED_FIELDS: usize = 25;
/// Field name.
pub const FIELD_NAME: usize = 256;
/// Field value.
pub const FIELD_VALUE: usize = 1024;
/// Embed footer text.
pub const FOOTER: usize = 2048;
/// Title, description, field names and values and footer text of all embeds together.
pub const EMBEDS_TOTAL: usize = 6000;
/// Button label.
pub const BUTTON_LABEL: usize = 80;
/// Button `custom_id`.
pub const CUSTOM_ID: usize = 100;
/// Buttons in one action row.
pub const BUTTONS_PER_ROW: usize = 5;
/// Action rows in one message.
pub const ROWS: usize = 5;
pub use super::interactions::EPHEMERAL;

/// Amber: waiting for votes.
pub const AMBER: u32 = 0xF0B232;
/// Blue: approved, queued, running.
pub const BLUE: u32 = 0x3498DB;
/// Green: succeeded.
pub const GREEN: u32 = 0x2ECC71;
/// Red: failed, interrupted, denied, expired.
pub const RED: u32 = 0xE74C3C;
/// Grey: cancelled.
pub const GREY: u32 = 0x95A5A6;
/// Orange: a warning.
pub const ORANGE: u32 = 0xE67E22;
/// Blurple: information (reports, notices).
pub const BLURPLE: u32 = 0x5865F2;

/// An inline field holds at most this many characters of value (longer values get a row).
const INLINE_VALUE: usize = 40;
/// The part of a card's description the step list may use.
const STEPS_BUDGET: usize = 2500;
/// One step line before the list is compacted.
const STEP_LINE: usize = 400;
/// One warning line.
const WARNING_LINE: usize = 600;
/// A step's recorded output shown inline (longer output goes in a code block).
const INLINE_OUTPUT: usize = 60;
/// An empty field name or value (Discord refuses empty ones).
const BLANK: &str = "\u{200b}";

/// A reply as a Discord message body: `content`, `embeds`, `components`, `allowed_mentions`,
/// and `flags: 64` when only the asker should see it. The same body edits a message (Discord
/// ignores the ephemeral bit on edits; [`edit`] leaves it out).
pub fn message(reply: &Reply) -> Value {
    let mut users: Vec<String> = Vec::new();
    let (content, embeds, buttons) = match &reply.body {
        Body::Text(t) => (text_content(t), vec![], vec![]),
        Body::Card(c) => {
            users = discord_mentions(&c.mentions);
            (String::new(), vec![card_embed(c)], c.buttons.clone())
        }
        Body::Report(r) => (String::new(), report_embeds(r), r.buttons.clone()),
    };
    let (components, left_out) = components(&buttons);
    let mut embeds = embeds;
    if left_out > 0 {
        if let Some(last) = embeds.last_mut() {
            add_footer_note(
                last,
                &format!("… {left_out} more button(s) not shown (Discord shows at most 25)"),
            );
        }
    }
    let embeds = fit_total(embeds);
    let mut m = Map::new();
    m.insert("content".into(), json!(content));
    m.insert("embeds".into(), Value::Array(embeds));
    m.insert("components".into(), Value::Array(components));
    m.insert(
        "allowed_mentions".into(),
        json!({"parse": [], "users": users}),
    );
    if reply.visibility == Visibility::Ephemeral {
        m.insert("flags".into(), json!(EPHEMERAL));
    }
    Value::Object(m)
}

/// [`message`] without `flags`, for editing a message in place.
pub fn edit(reply: &Reply) -> Value {
    let mut v = message(reply);
    if let Value::Object(m) = &mut v {
        m.remove("flags");
    }
    v
}

/// Escapes text for Discord markdown: `\ * _ ~ ` | > < # [ ]` get a backslash (so nothing in it
/// is bold, a quote, a spoiler, a heading, a link or a mention), a `-` starting a line too (a
/// list), and `@everyone` / `@here` get a zero-width space after the `@`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut line_start = true;
    for c in s.chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '<' | '#' | '[' | ']' => {
                out.push('\\');
                out.push(c);
            }
            '-' if line_start => out.push_str("\\-"),
            c => out.push(c),
        }
        line_start = c == '\n';
    }
    out.replace("@everyone", "@\u{200b}everyone")
        .replace("@here", "@\u{200b}here")
}

/// `s` cut to at most `max` characters, ending in `…` when cut; never ends in a lone escaping
/// backslash (which would escape the `…`).
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let keep = max.saturating_sub(1);
    let cut = s
        .char_indices()
        .nth(keep)
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let mut head = &s[..cut];
    let trailing = head.len() - head.trim_end_matches('\\').len();
    if trailing % 2 == 1 {
        head = &head[..head.len() - 1];
    }
    format!("{head}…")
}

/// Text inside code (a span or a block) cannot be escaped: backticks become `ˋ` so the code
/// cannot be closed early.
fn code_safe(s: &str) -> String {
    s.replace('`', "ˋ")
}

/// A code block holding `s`, at most `max` characters in all, cut on a line with a note.
fn code_block(s: &str, max: usize) -> String {
    let body = code_safe(s);
    let wrapped = format!("```\n{body}\n```");
    if wrapped.chars().count() <= max {
        return wrapped;
    }
    let room = max.saturating_sub(8 + 40);
    let lines: Vec<&str> = body.lines().collect();
    let mut kept = String::new();
    let mut shown = 0;
    for l in &lines {
        let add = l.chars().count() + usize::from(!kept.is_empty());
        if kept.chars().count() + add > room {
            break;
        }
        if !kept.is_empty() {
            kept.push('\n');
        }
        kept.push_str(l);
        shown += 1;
    }
    if shown == 0 {
        kept = truncate(&body, room.max(1));
        shown = 1;
    }
    let more = lines.len().saturating_sub(shown);
    let note = if more > 0 {
        format!("\n… {more} more line(s)")
    } else {
        String::new()
    };
    truncate(&format!("```\n{kept}{note}\n```"), max)
}

fn text_content(t: &str) -> String {
    let s = escape(t);
    if s.trim().is_empty() {
        return "dualkey".into();
    }
    if s.chars().count() <= CONTENT {
        return s;
    }
    let note = "\n… cut here (Discord shows 2000 characters); run the same command in \
                `dualkey shell` or the CLI for all of it";
    let room = CONTENT - note.chars().count();
    let cut = truncate(&s, room);
    // Prefer a line end when there is one in the last quarter.
    let body = match cut.rfind('\n') {
        Some(i) if cut[..i].chars().count() > room * 3 / 4 => cut[..i].to_string(),
        _ => cut,
    };
    format!("{body}{note}")
}

/// The colour of a card: by its state when it has one, else by its tone.
pub fn colour(state: Option<CardState>, style: Style) -> u32 {
    match state {
        Some(CardState::Pending) => AMBER,
        Some(CardState::Approved | CardState::Queued | CardState::Running) => BLUE,
        Some(CardState::Succeeded) => GREEN,
        Some(
            CardState::Failed | CardState::Interrupted | CardState::Denied | CardState::Expired,
        ) => RED,
        Some(CardState::Cancelled) => GREY,
        None => match style {
            Style::Info => BLURPLE,
            Style::Pending => AMBER,
            Style::Success => GREEN,
            Style::Warning => ORANGE,
            Style::Danger => RED,
        },
    }
}

fn state_icon(state: Option<CardState>, style: Style) -> &'static str {
    match state {
        Some(CardState::Pending) => "⏳",
        Some(CardState::Approved) => "☑️",
        Some(CardState::Queued) => "📥",
        Some(CardState::Running) => "🔄",
        Some(CardState::Succeeded) => "✅",
        Some(CardState::Failed) => "❌",
        Some(CardState::Interrupted) => "🛑",
        Some(CardState::Denied) => "⛔",
        Some(CardState::Cancelled) => "➖",
        Some(CardState::Expired) => "⏰",
        None => match style {
            Style::Info => "ℹ️",
            Style::Pending => "⏳",
            Style::Success => "✅",
            Style::Warning => "⚠️",
            Style::Danger => "❌",
        },
    }
}

fn step_icon(s: StepState) -> &'static str {
    match s {
        StepState::Planned => "⚪",
        StepState::Running => "🔄",
        StepState::Succeeded => "✅",
        StepState::Failed => "❌",
        StepState::Other => "❔",
    }
}

fn severity_icon(s: Severity) -> &'static str {
    match s {
        Severity::Danger => "🚨",
        Severity::Caution => "⚠️",
        Severity::Info => "ℹ️",
    }
}

/// A Discord user id: digits only.
fn is_snowflake(id: &str) -> bool {
    !id.is_empty() && id.len() <= 20 && id.chars().all(|c| c.is_ascii_digit())
}

fn discord_account(m: &Mention) -> Option<&str> {
    m.accounts
        .iter()
        .find(|(p, id)| *p == Platform::Discord && is_snowflake(id))
        .map(|(_, id)| id.as_str())
}

/// `<@id>` for an operator with a Discord account, else the escaped operator name.
fn mention_md(m: &Mention) -> String {
    match discord_account(m) {
        Some(id) => format!("<@{id}>"),
        None => escape(&m.operator),
    }
}

fn discord_mentions(mentions: &[Mention]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in mentions.iter().filter_map(discord_account) {
        if !out.iter().any(|o| o == id) && out.len() < 100 {
            out.push(id.to_string());
        }
    }
    out
}

fn nonblank(s: String) -> String {
    if s.trim().is_empty() {
        BLANK.to_string()
    } else {
        s
    }
}

/// A field: name and value already markdown, cut to the limits; inline when both are short.
fn field(name: &str, value_md: &str) -> Value {
    let name = nonblank(truncate(name, FIELD_NAME));
    let value = nonblank(truncate(value_md, FIELD_VALUE));
    let inline = value.chars().count() <= INLINE_VALUE && !value.contains('\n');
    json!({"name": name, "value": value, "inline": inline})
}

fn block_field(name: &str, value_md: &str) -> Value {
    let mut f = field(name, value_md);
    f["inline"] = json!(false);
    f
}

/// A step's recorded output within `max` characters: inline code when short and on one line,
/// else a code block on its own lines.
fn output_md(out: &str, max: usize) -> String {
    if out.chars().count() <= INLINE_OUTPUT && !out.contains('\n') {
        format!("`{}`", code_safe(out))
    } else {
        format!("\n{}", code_block(out, max.saturating_sub(1)))
    }
}

/// One step line, full (detail and output) or compact (name and state).
fn step_line(i: usize, s: &Step, compact: bool) -> String {
    let mut line = format!("{} {}. **{}**", step_icon(s.state), i + 1, escape(&s.name));
    if !compact && !s.detail.is_empty() {
        line.push_str(": ");
        line.push_str(&truncate(&escape(&s.detail), STEP_LINE / 2));
    }
    if let Some((state, _)) = &s.recorded {
        line.push_str(" — ");
        line.push_str(&escape(state));
    }
    if line.chars().count() > STEP_LINE {
        return if compact {
            truncate(&line, STEP_LINE)
        } else {
            step_line(i, s, true)
        };
    }
    if let Some((_, out)) = s
        .recorded
        .as_ref()
        .filter(|(_, o)| !o.is_empty() && !compact)
    {
        let room = STEP_LINE - line.chars().count() - 1;
        if room >= 30 {
            line.push(' ');
            line.push_str(&output_md(out, room));
        }
    }
    line
}

/// The step list within `budget` characters: full lines when they fit, else compact ones, else
/// a window around the step that matters now (the first that has not succeeded) with how many
/// were left out before and after.
fn steps_md(steps: &[Step], budget: usize) -> String {
    let fits =
        |lines: &[String]| lines.iter().map(|l| l.chars().count() + 1).sum::<usize>() <= budget;
    let full: Vec<String> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| step_line(i, s, false))
        .collect();
    if fits(&full) {
        return full.join("\n");
    }
    let compact: Vec<String> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| step_line(i, s, true))
        .collect();
    if fits(&compact) {
        return compact.join("\n");
    }
    let focus = steps
        .iter()
        .position(|s| s.state != StepState::Succeeded)
        .unwrap_or(steps.len() - 1);
    let room = budget.saturating_sub(80);
    let len = |l: &String| l.chars().count() + 1;
    let (mut lo, mut hi) = (focus, focus + 1);
    let mut used = len(&compact[focus]);
    loop {
        let mut grew = false;
        if hi < compact.len() && used + len(&compact[hi]) <= room {
            used += len(&compact[hi]);
            hi += 1;
            grew = true;
        }
        if lo > 0 && used + len(&compact[lo - 1]) <= room {
            used += len(&compact[lo - 1]);
            lo -= 1;
            grew = true;
        }
        if !grew {
            break;
        }
    }
    let mut lines = Vec::new();
    if lo > 0 {
        lines.push(format!("*… {lo} earlier step(s)*"));
    }
    lines.extend(compact[lo..hi].iter().cloned());
    if hi < compact.len() {
        lines.push(format!("*… {} more step(s)*", compact.len() - hi));
    }
    truncate(&lines.join("\n"), budget)
}

/// Warnings, most serious first, one line each with an icon by severity.
fn warnings_md(warnings: &[Warning]) -> String {
    let mut w: Vec<&Warning> = warnings.iter().collect();
    w.sort_by_key(|w| std::cmp::Reverse(w.severity));
    w.iter()
        .map(|w| {
            let label = match w.severity {
                Severity::Danger => "**Danger:** ",
                Severity::Caution => "**Warning:** ",
                Severity::Info => "",
            };
            truncate(
                &format!("{} {label}{}", severity_icon(w.severity), escape(&w.text)),
                WARNING_LINE,
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Joins description parts (already markdown) with blank lines, within the description limit;
/// a part that does not fit whole is cut, and the rest are named in a closing line.
fn description(parts: Vec<String>) -> String {
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
fn cap_fields(mut fields: Vec<Value>) -> Vec<Value> {
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

fn confirm_fields(buttons: &[Button]) -> Vec<Value> {
    buttons
        .iter()
        .filter_map(|b| {
            let c = b.confirm.as_ref()?;
            let label = if b.label.trim().is_empty() {
                &b.id
            } else {
                &b.label
            };
            let mut text = escape(&c.text);
            if !c.title.trim().is_empty() {
                text = format!("**{}** {text}", escape(&c.title));
            }
            Some(block_field(
                &format!("Before you click {}", escape(label)),
                &text,
            ))
        })
        .collect()
}

fn card_embed(c: &Card) -> Value {
    let title = format!("{} {}{}", state_icon(c.state, c.style), c.label(), c.title);
    let requester = c.mentions.iter().find(|m| m.role == "requester");
    let mut fields = Vec::new();
    let mut requester_shown = false;
    for (k, v) in &c.fields {
        if c.votes.is_some() && k == "Votes" {
            continue; // shown below with the count
        }
        if k == "Requested by" {
            if let Some(m) = requester {
                fields.push(field(&escape(k), &mention_md(m)));
                requester_shown = true;
                continue;
            }
        }
        fields.push(field(&escape(k), &escape(v)));
    }
    if let (Some(m), false) = (requester, requester_shown) {
        fields.insert(0, field("Requested by", &mention_md(m)));
    }
    for m in c.mentions.iter().filter(|m| m.role != "requester") {
        let mut role = m.role.clone();
        if let Some(f) = role.get_mut(0..1) {
            f.make_ascii_uppercase();
        }
        fields.push(field(&escape(&role), &mention_md(m)));
    }
    if let Some(v) = &c.votes {
        let mut s = format!("☑️ {}/{} approvals", v.approvals, v.required);
        let cast: Vec<String> = v
            .cast
            .iter()
            .map(|(who, what)| format!("{} {}", escape(who), escape(what)))
            .collect();
        if !cast.is_empty() {
            s.push_str(": ");
            s.push_str(&cast.join(", "));
        }
        fields.push(block_field("Votes", &s));
    }
    if let Some(ms) = c.expires_at_ms {
        let secs = ms.div_euclid(1000);
        fields.push(block_field(
            "Expires",
            &format!("⏰ <t:{secs}:R> (<t:{secs}:f>, {})", utc_text(ms)),
        ));
    }
    if let Some(p) = &c.progress {
        fields.push(block_field("Progress", &format!("⏳ {}", escape(p))));
    }
    if let Some(e) = &c.error {
        fields.push(block_field("❌ Error", &code_block(e, FIELD_VALUE)));
    }
    fields.extend(confirm_fields(&c.buttons));

    let mut parts = Vec::new();
    if !c.warnings.is_empty() {
        parts.push(warnings_md(&c.warnings));
    }
    if !c.steps.is_empty() {
        parts.push(steps_md(&c.steps, STEPS_BUDGET));
    }
    if !c.lines.is_empty() {
        parts.push(escape(&c.lines.join("\n")));
    }
    embed(
        &title,
        description(parts),
        cap_fields(fields),
        colour(c.state, c.style),
    )
}

fn embed(title: &str, description: String, fields: Vec<Value>, colour: u32) -> Value {
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

fn add_footer_note(e: &mut Value, note: &str) {
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
fn fit_total(mut embeds: Vec<Value>) -> Vec<Value> {
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

fn table_md(t: &Table, max: usize) -> String {
    if t.columns.is_empty() {
        return String::new();
    }
    code_block(&table_text(t).join("\n"), max)
}

fn severity_colour(warnings: &[Warning]) -> Option<u32> {
    match warnings.iter().map(|w| w.severity).max()? {
        Severity::Danger => Some(RED),
        Severity::Caution => Some(ORANGE),
        Severity::Info => None,
    }
}

fn section_embed(title: &str, s: &Section) -> Value {
    let fields: Vec<Value> = s
        .fields
        .iter()
        .map(|(k, v)| field(&escape(k), &escape(v)))
        .collect();
    let mut parts = Vec::new();
    if !s.lines.is_empty() {
        parts.push(escape(&s.lines.join("\n")));
    }
    if let Some(t) = &s.table {
        parts.push(table_md(t, 3000));
    }
    if !s.warnings.is_empty() {
        parts.push(warnings_md(&s.warnings));
    }
    embed(
        title,
        description(parts),
        cap_fields(fields),
        severity_colour(&s.warnings).unwrap_or(BLURPLE),
    )
}

fn report_embeds(r: &Report) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, s) in r.sections.iter().enumerate() {
        let heading = s.heading.as_deref().map(escape).unwrap_or_default();
        let title = if i == 0 {
            match (r.title.trim().is_empty(), heading.is_empty()) {
                (false, true) => r.title.clone(),
                (false, false) => format!("{} — {heading}", r.title),
                (true, _) => heading,
            }
        } else {
            heading
        };
        out.push(section_embed(&title, s));
    }
    if out.is_empty() {
        out.push(embed(
            if r.title.trim().is_empty() {
                "dualkey"
            } else {
                &r.title
            },
            String::new(),
            vec![],
            BLURPLE,
        ));
    }
    let confirms = confirm_fields(&r.buttons);
    if !confirms.is_empty() {
        out.push(embed("", String::new(), cap_fields(confirms), ORANGE));
    }
    out
}

fn button_style(s: ButtonStyle) -> u64 {
    match s {
        ButtonStyle::Primary => 1,
        ButtonStyle::Default => 2,
        ButtonStyle::Danger => 4,
    }
}

/// Action rows of at most 5 buttons, at most 5 rows; duplicate ids are dropped (Discord
/// refuses a message with two equal `custom_id`s). Returns the rows and how many buttons did
/// not fit.
fn components(buttons: &[Button]) -> (Vec<Value>, usize) {
    let mut seen: Vec<String> = Vec::new();
    let mut list = Vec::new();
    for b in buttons {
        let id = truncate_plain(&b.id, CUSTOM_ID);
        if id.is_empty() || seen.contains(&id) {
            continue;
        }
        seen.push(id.clone());
        let label = if b.label.trim().is_empty() {
            &b.id
        } else {
            &b.label
        };
        list.push(json!({
            "type": 2,
            "style": button_style(b.style),
            "label": truncate(label, BUTTON_LABEL),
            "custom_id": id,
        }));
    }
    let max = BUTTONS_PER_ROW * ROWS;
    let left_out = list.len().saturating_sub(max);
    list.truncate(max);
    let rows = list
        .chunks(BUTTONS_PER_ROW)
        .map(|row| json!({"type": 1, "components": row}))
        .collect();
    (rows, left_out)
}

/// Cut to at most `max` characters without an ellipsis (ids must stay ids).
fn truncate_plain(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::reply::{Confirm, Votes};
    use proptest::prelude::*;

    fn request_card() -> Card {
        let mut c = Card::new("Request r123abc456: deploy 2 migrations", Style::Pending);
        c.state = Some(CardState::Pending);
        c.fields = vec![
            ("Requested by".into(), "alice".into()),
            ("Environment".into(), "production".into()),
            ("Votes".into(), "bob approved".into()),
        ];
        c.votes = Some(Votes {
            approvals: 1,
            required: 2,
            cast: vec![("bob".into(), "approved".into())],
        });
        c.expires_at_ms = Some(1_764_612_000_000);
        c.mentions = vec![Mention {
            role: "requester".into(),
            operator: "alice".into(),
            accounts: vec![
                (Platform::Slack, "U0ALICE".into()),
                (Platform::Discord, "300000000000000001".into()),
            ],
        }];
        c.warnings = vec![
            Warning::info("takes a minute"),
            Warning::danger("drops column `email`"),
        ];
        c.steps = vec![
            Step {
                name: "backup".into(),
                detail: "pg_dump -Fc".into(),
                state: StepState::Succeeded,
                recorded: Some(("succeeded".into(), "12 MB".into())),
            },
            Step {
                name: "migrate".into(),
                detail: "apply 2 migrations".into(),
                state: StepState::Running,
                recorded: None,
            },
        ];
        c.buttons = vec![
            Button::new("approve:r123abc456", "Approve", ButtonStyle::Primary).with_confirm(
                Confirm {
                    title: "Approve and run?".into(),
                    text: "deploy: 2 step(s) run as soon as the vote counts.".into(),
                    confirm: "Approve".into(),
                    deny: "Back".into(),
                },
            ),
            Button::new("deny:r123abc456", "Deny", ButtonStyle::Danger),
        ];
        c
    }

    fn n(v: &Value) -> usize {
        v.as_str().map(|s| s.chars().count()).unwrap_or(0)
    }

    /// Every Discord limit on a message body.
    fn check_limits(v: &Value) {
        assert!(n(&v["content"]) <= CONTENT, "content {}", n(&v["content"]));
        let embeds = v["embeds"].as_array().unwrap();
        assert!(embeds.len() <= EMBEDS);
        let total: usize = embeds.iter().map(embed_len).sum();
        assert!(total <= EMBEDS_TOTAL, "embeds total {total}");
        for e in embeds {
            assert!(n(&e["title"]) <= EMBED_TITLE);
            assert!(n(&e["description"]) <= EMBED_DESCRIPTION);
            assert!(n(&e["footer"]["text"]) <= FOOTER);
            assert!(
                !e["title"].is_null() || !e["description"].is_null() || !e["fields"].is_null(),
                "an empty embed: {e}"
            );
            if let Some(d) = e["description"].as_str() {
                assert_eq!(d.matches("```").count() % 2, 0, "an open code block: {d}");
            }
            if let Some(f) = e["fields"].as_array() {
                assert!(f.len() <= EMBED_FIELDS);
                for f in f {
                    let (name, value) = (n(&f["name"]), n(&f["value"]));
                    assert!(name <= FIELD_NAME && name > 0);
                    assert!(value <= FIELD_VALUE && value > 0);
                    let text = f["value"].as_str().unwrap();
                    assert_eq!(text.matches("```").count() % 2, 0, "open code: {text}");
                }
            }
        }
        let rows = v["components"].as_array().unwrap();
        assert!(rows.len() <= ROWS);
        let mut ids = Vec::new();
        for r in rows {
            assert_eq!(r["type"], 1);
            let b = r["components"].as_array().unwrap();
            assert!(!b.is_empty() && b.len() <= BUTTONS_PER_ROW);
            for b in b {
                assert_eq!(b["type"], 2);
                assert!(n(&b["label"]) <= BUTTON_LABEL && n(&b["label"]) > 0);
                let id = b["custom_id"].as_str().unwrap();
                assert!(!id.is_empty() && id.chars().count() <= CUSTOM_ID);
                assert!(!ids.contains(&id.to_string()), "duplicate custom_id {id}");
                ids.push(id.to_string());
            }
        }
        // serenity reads the embeds and rows back.
        let _: Vec<serenity::model::channel::Embed> =
            serde_json::from_value(v["embeds"].clone()).expect("serenity Embed");
    }

    #[test]
    fn colours_follow_the_state_then_the_tone() {
        let cases = [
            (CardState::Pending, AMBER),
            (CardState::Approved, BLUE),
            (CardState::Queued, BLUE),
            (CardState::Running, BLUE),
            (CardState::Succeeded, GREEN),
            (CardState::Failed, RED),
            (CardState::Interrupted, RED),
            (CardState::Denied, RED),
            (CardState::Expired, RED),
            (CardState::Cancelled, GREY),
        ];
        for (state, want) in cases {
            let mut c = Card::new("t", state.style());
            c.state = Some(state);
            let v = message(&Reply::card(c));
            assert_eq!(v["embeds"][0]["color"], want, "{state:?}");
            let title = v["embeds"][0]["title"].as_str().unwrap();
            assert!(title.contains(&format!("[{}] t", state.label())), "{title}");
        }
        for (style, want) in [
            (Style::Info, BLURPLE),
            (Style::Pending, AMBER),
            (Style::Success, GREEN),
            (Style::Warning, ORANGE),
            (Style::Danger, RED),
        ] {
            let v = message(&Reply::card(Card::new("t", style)));
            assert_eq!(v["embeds"][0]["color"], want, "{style:?}");
        }
    }

    #[test]
    fn a_request_card_is_one_embed_with_fields_votes_expiry_warnings_steps_and_buttons() {
        let v = message(&Reply::card(request_card()));
        check_limits(&v);
        assert_eq!(v["content"], "");
        assert!(v.get("flags").is_none(), "a card is public");
        let e = &v["embeds"][0];
        assert_eq!(v["embeds"].as_array().unwrap().len(), 1);
        assert_eq!(
            e["title"],
            "⏳ [pending] Request r123abc456: deploy 2 migrations"
        );
        let fields = e["fields"].as_array().unwrap();
        let get = |name: &str| {
            fields
                .iter()
                .find(|f| f["name"] == name)
                .unwrap_or_else(|| panic!("field {name} in {fields:?}"))
        };
        assert_eq!(get("Requested by")["value"], "<@300000000000000001>");
        assert_eq!(get("Requested by")["inline"], true);
        assert_eq!(get("Environment")["value"], "production");
        assert_eq!(get("Votes")["value"], "☑️ 1/2 approvals: bob approved");
        assert_eq!(
            fields.iter().filter(|f| f["name"] == "Votes").count(),
            1,
            "the Votes field is not repeated"
        );
        let exp = get("Expires")["value"].as_str().unwrap();
        assert!(exp.contains("<t:1764612000:R>"), "{exp}");
        assert!(exp.contains("2025-12-01 18:00 UTC"), "{exp}");
        let confirm = get("Before you click Approve")["value"].as_str().unwrap();
        assert!(confirm.contains("2 step(s) run as soon as"), "{confirm}");
        assert_eq!(v["allowed_mentions"]["parse"], json!([]));
        assert_eq!(
            v["allowed_mentions"]["users"],
            json!(["300000000000000001"])
        );

        let d = e["description"].as_str().unwrap();
        let danger = d.find("drops column").unwrap();
        let info = d.find("takes a minute").unwrap();
        assert!(danger < info, "danger first: {d}");
        assert!(d.contains("🚨 **Danger:** drops column \\`email\\`"), "{d}");
        assert!(
            d.contains("✅ 1. **backup**: pg\\_dump -Fc — succeeded `12 MB`"),
            "{d}"
        );
        assert!(d.contains("🔄 2. **migrate**: apply 2 migrations"), "{d}");

        let rows = v["components"].as_array().unwrap();
        assert_eq!(rows.len(), 1);
        let b = rows[0]["components"].as_array().unwrap();
        assert_eq!(
            b[0],
            json!({"type": 2, "style": 1, "label": "Approve", "custom_id": "approve:r123abc456"})
        );
        assert_eq!(
            b[1],
            json!({"type": 2, "style": 4, "label": "Deny", "custom_id": "deny:r123abc456"})
        );
    }

    #[test]
    fn a_requester_without_a_discord_account_is_named_and_not_mentioned() {
        let mut c = request_card();
        c.mentions[0].accounts = vec![(Platform::Slack, "U0ALICE".into())];
        let v = message(&Reply::card(c));
        let all = v.to_string();
        assert!(!all.contains("<@"), "{all}");
        assert_eq!(v["allowed_mentions"]["users"], json!([]));
        let f = &v["embeds"][0]["fields"][0];
        assert_eq!(
            (f["name"].as_str(), f["value"].as_str()),
            (Some("Requested by"), Some("alice"))
        );
        // A malformed id is not turned into a mention either.
        let mut c = request_card();
        c.mentions[0].accounts = vec![(Platform::Discord, "<@&1> x".into())];
        assert!(!message(&Reply::card(c)).to_string().contains("<@"));
    }

    #[test]
    fn error_progress_and_recorded_output_render_as_code_and_text() {
        let mut c = Card::new("Operation o1: rollback", Style::Danger);
        c.state = Some(CardState::Failed);
        c.error = Some("pg_restore: error: ```boom``` @everyone".into());
        c.progress = Some("12 MB written, 3 s".into());
        c.steps = vec![Step {
            name: "restore".into(),
            detail: "pg_restore".into(),
            state: StepState::Failed,
            recorded: Some(("failed".into(), "line one\nline two".into())),
        }];
        let v = message(&Reply::card(c));
        check_limits(&v);
        let e = &v["embeds"][0];
        assert_eq!(e["color"], RED);
        let err = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "❌ Error")
            .unwrap()["value"]
            .as_str()
            .unwrap();
        assert_eq!(err, "```\npg_restore: error: ˋˋˋboomˋˋˋ @everyone\n```");
        assert!(v.to_string().contains("⏳ 12 MB written, 3 s"));
        let d = e["description"].as_str().unwrap();
        assert!(
            d.contains("❌ 1. **restore**: pg\\_restore — failed \n```\nline one\nline two\n```"),
            "{d}"
        );
        // Pings are off whatever the text says.
        assert_eq!(v["allowed_mentions"]["parse"], json!([]));
    }

    #[test]
    fn text_is_content_escaped_and_ephemeral_sets_the_flag() {
        let v = message(&Reply::ephemeral("not allowed: *you* are @everyone <@1>"));
        assert_eq!(v["flags"], EPHEMERAL);
        assert_eq!(v["embeds"], json!([]));
        assert_eq!(v["components"], json!([]));
        assert_eq!(
            v["content"],
            "not allowed: \\*you\\* are @\u{200b}everyone \\<@1\\>"
        );
        assert!(edit(&Reply::ephemeral("x")).get("flags").is_none());
        let v = message(&Reply::public("hello"));
        assert!(v.get("flags").is_none());
        assert_eq!(v["content"], "hello");
        assert_eq!(message(&Reply::public("  "))["content"], "dualkey");
        // Reports are ephemeral by default.
        let r = message(&Reply::report(Report {
            title: "Status".into(),
            sections: vec![],
            buttons: vec![],
        }));
        assert_eq!(r["flags"], EPHEMERAL);
        assert_eq!(r["embeds"][0]["title"], "Status");
    }

    #[test]
    fn escape_neutralises_markdown_mentions_and_pings() {
        assert_eq!(escape("a*b_c~d`e|f>g"), "a\\*b\\_c\\~d\\`e\\|f\\>g");
        assert_eq!(escape("# head\n- item\nx-y"), "\\# head\n\\- item\nx-y");
        assert_eq!(escape("[x](http://e)"), "\\[x\\](http://e)");
        assert_eq!(escape("@here @everyone"), "@\u{200b}here @\u{200b}everyone");
        assert_eq!(escape("<#123> <@&4>"), "\\<\\#123\\> \\<@&4\\>");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape("20240101_add_users"), "20240101\\_add\\_users");
    }

    #[test]
    fn truncation_keeps_characters_and_escapes_whole() {
        assert_eq!(truncate("héllo", 3), "hé…");
        assert_eq!(truncate("hé", 3), "hé");
        // Cutting right after an escaping backslash drops it.
        assert_eq!(truncate("ab\\*cd", 4), "ab…");
        assert_eq!(truncate("a\\\\bc", 4), "a\\\\…");
        let long = escape(&"*".repeat(3000));
        let t = text_content(&"*".repeat(3000));
        assert!(t.chars().count() <= CONTENT);
        assert!(t.contains("cut here"), "{t}");
        assert!(long.starts_with("\\*"));
    }

    #[test]
    fn many_buttons_fill_five_rows_of_five_and_say_what_is_left_out() {
        let mut r = Report {
            title: "Approvals".into(),
            sections: vec![Section {
                heading: Some("Open".into()),
                lines: vec!["30 requests".into()],
                ..Default::default()
            }],
            buttons: (0..30)
                .map(|i| Button::new(format!("approve:r{i}"), "Approve", ButtonStyle::Primary))
                .collect(),
        };
        r.buttons.push(Button::new(
            "approve:r0",
            "Approve again",
            ButtonStyle::Primary,
        ));
        r.buttons
            .insert(0, Button::new("x".repeat(150), "", ButtonStyle::Default));
        let v = message(&Reply::report(r));
        check_limits(&v);
        let rows = v["components"].as_array().unwrap();
        assert_eq!(rows.len(), 5);
        assert!(rows
            .iter()
            .all(|r| r["components"].as_array().unwrap().len() == 5));
        let first = &rows[0]["components"][0];
        assert_eq!(first["custom_id"].as_str().unwrap().len(), CUSTOM_ID);
        assert_eq!(first["style"], 2);
        assert_eq!(rows[4]["components"][4]["custom_id"], "approve:r23");
        assert!(v.to_string().contains("6 more button(s) not shown"), "{v}");
    }

    #[test]
    fn a_report_is_an_embed_per_section_with_tables_as_code_blocks() {
        let r = Report {
            title: "Backups (production)".into(),
            sections: vec![
                Section {
                    heading: Some("Catalog".into()),
                    fields: vec![("Kept".into(), "3".into())],
                    lines: vec!["newest first".into()],
                    table: Some(Table {
                        columns: vec!["File".into(), "Taken".into(), "Size".into()],
                        rows: vec![
                            vec!["b1.dump".into(), "2026-12-01".into(), "12 MB".into()],
                            vec!["b`2.dump".into(), "2026-11-30".into(), "11 MB".into()],
                        ],
                    }),
                    warnings: vec![Warning::caution("newest backup is old")],
                },
                Section {
                    heading: Some("Other".into()),
                    fields: vec![("Env".into(), "production".into())],
                    ..Default::default()
                },
            ],
            buttons: vec![],
        };
        let v = message(&Reply::report(r));
        check_limits(&v);
        let e = v["embeds"].as_array().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0]["title"], "Backups (production) — Catalog");
        assert_eq!(e[0]["color"], ORANGE, "a caution colours its section");
        assert_eq!(e[1]["title"], "Other");
        assert_eq!(e[1]["color"], BLURPLE);
        assert_eq!(
            e[0]["fields"][0],
            json!({"name": "Kept", "value": "3", "inline": true})
        );
        let d = e[0]["description"].as_str().unwrap();
        assert!(
            d.contains("```\nFile      Taken       Size\nb1.dump   2026-12-01  12 MB\nbˋ2.dump  2026-11-30  11 MB\n```"),
            "{d}"
        );
        assert!(d.contains("newest backup is old"));
    }

    #[test]
    fn a_huge_card_stays_within_every_limit_and_keeps_the_running_step_and_buttons() {
        let mut c = request_card();
        let long = "é*".repeat(3000);
        c.title = long.clone();
        c.steps = (0..200)
            .map(|i| Step {
                name: format!("step-{i}"),
                detail: long.clone(),
                state: if i < 150 {
                    StepState::Succeeded
                } else if i == 150 {
                    StepState::Running
                } else {
                    StepState::Planned
                },
                recorded: (i < 150).then(|| ("succeeded".into(), long.clone())),
            })
            .collect();
        c.lines = (0..100).map(|_| long.clone()).collect();
        c.fields = (0..40).map(|i| (format!("f{i}"), long.clone())).collect();
        c.warnings = (0..30).map(|_| Warning::danger(long.clone())).collect();
        c.error = Some(long.clone());
        c.progress = Some(long.clone());
        c.buttons[0].label = long.clone();
        c.buttons[0].confirm.as_mut().unwrap().text = long.clone();
        let v = message(&Reply::card(c));
        check_limits(&v);
        assert_eq!(
            v["components"][0]["components"].as_array().unwrap().len(),
            2
        );
        let steps = steps_md(
            &(0..400)
                .map(|i| Step {
                    name: format!("step-{i}"),
                    detail: "x".repeat(300),
                    state: if i < 150 {
                        StepState::Succeeded
                    } else if i == 150 {
                        StepState::Running
                    } else {
                        StepState::Planned
                    },
                    recorded: None,
                })
                .collect::<Vec<_>>(),
            STEPS_BUDGET,
        );
        assert!(steps.contains("151. **step-150**"), "{steps}");
        assert!(steps.contains("earlier step(s)"));
        assert!(steps.contains("more step(s)"));
        assert!(steps.chars().count() <= STEPS_BUDGET);
    }

    #[test]
    fn a_long_report_keeps_ten_embeds_and_six_thousand_characters() {
        let r = Report {
            title: "Status".into(),
            sections: (0..30)
                .map(|i| Section {
                    heading: Some(format!("Section {i}")),
                    lines: vec!["y".repeat(900)],
                    fields: vec![("k".into(), "v".into())],
                    ..Default::default()
                })
                .collect(),
            buttons: vec![],
        };
        let v = message(&Reply::report(r));
        check_limits(&v);
        let last = v["embeds"].as_array().unwrap().last().unwrap().clone();
        assert!(
            last["description"]
                .as_str()
                .unwrap()
                .contains("more section(s) not shown"),
            "{last}"
        );
    }

    #[test]
    fn the_body_reads_back_as_a_serenity_message() {
        // The shape the stand-in echoes: our body plus the fields Discord adds.
        let mut body = message(&Reply::card(request_card()));
        let extra = json!({
            "id": "1300000000000000001", "channel_id": "222",
            "author": {"id": "1", "username": "dualkey", "discriminator": "0", "avatar": null,
                       "global_name": null, "bot": true},
            "timestamp": "2026-12-01T20:00:00.000000+00:00", "edited_timestamp": null,
            "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
            "attachments": [], "pinned": false, "type": 0,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let m: serenity::model::channel::Message =
            serde_json::from_value(body).expect("serenity reads the message");
        assert_eq!(m.embeds.len(), 1);
        assert_eq!(m.components.len(), 1);
        assert_eq!(m.components[0].components.len(), 2);
        assert_eq!(m.embeds[0].colour.map(|c| c.0), Some(AMBER));
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,40}",
            "[*_~`|>#\\-@é\\\\\n a-z]{0,3000}",
            Just("`".repeat(5000)),
            Just("é".repeat(7000)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn limits_hold_for_any_card(
            title in arb_text(),
            text in arb_text(),
            n_fields in 0usize..40,
            n_steps in 0usize..60,
            n_buttons in 0usize..40,
            ephemeral in any::<bool>(),
        ) {
            let mut c = Card::new(title.clone(), Style::Warning);
            c.fields = (0..n_fields).map(|i| (format!("{i}{title}"), text.clone())).collect();
            c.steps = (0..n_steps)
                .map(|i| Step {
                    name: text.clone(),
                    detail: title.clone(),
                    state: if i % 3 == 0 { StepState::Succeeded } else { StepState::Planned },
                    recorded: (i % 2 == 0).then(|| ("succeeded".into(), text.clone())),
                })
                .collect();
            c.lines = vec![text.clone(); 3];
            c.warnings = vec![Warning::caution(text.clone())];
            c.error = Some(text.clone());
            c.progress = Some(title.clone());
            c.buttons = (0..n_buttons)
                .map(|i| Button::new(format!("b{i}:{title}"), text.clone(), ButtonStyle::Default))
                .collect();
            let mut reply = Reply::card(c);
            if ephemeral {
                reply.visibility = Visibility::Ephemeral;
            }
            let v = message(&reply);
            check_limits(&v);
            prop_assert_eq!(v.get("flags").is_some(), ephemeral);

            let r = Report {
                title: title.clone(),
                sections: (0..n_steps / 3)
                    .map(|_| Section {
                        heading: Some(title.clone()),
                        fields: vec![(title.clone(), text.clone()); n_fields % 30],
                        lines: vec![text.clone()],
                        table: Some(Table {
                            columns: vec![title.clone(), "b".into()],
                            rows: vec![vec![text.clone(), text.clone()]; 3],
                        }),
                        warnings: vec![Warning::danger(title.clone())],
                    })
                    .collect(),
                buttons: vec![],
            };
            check_limits(&message(&Reply::report(r)));
            check_limits(&message(&Reply::public(text.clone())));
        }
    }
}
