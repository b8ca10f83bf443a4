//! Block Kit rendering of neutral replies: a header, field sections, the step list as one
//! section (so `chat.update` changes it in place), warnings by severity, votes, the expiry as a
//! Slack date token, buttons in actions blocks with native confirm dialogs, and always a `text`
//! fallback for notifications and clients that cannot show blocks.
//!
//! Text that came from users or the database (migration names, errors, notes) is escaped for
//! mrkdwn (`&`, `<`, `>`), so a name like `<!channel>` cannot ping anyone; mentions and date
//! tokens built here are not. Every Block Kit limit is respected by truncating with `…` on a
//! character boundary.

use slack_morphism::prelude::*;

use crate::core::event::Platform;
use crate::core::reply::{
    utc_text, Body, Button, ButtonStyle, Card, CardState, Reply, Report, Section, Severity, Step,
    StepState, Style, Table,
};

/// Most blocks Slack accepts in one message.
pub const MAX_BLOCKS: usize = 50;
/// Section (and context) text.
const SECTION_TEXT: usize = 3000;
/// The longest escaped text a digest of audit lines may fill: a few sections.
pub const DIGEST_TEXT: usize = 4 * SECTION_TEXT - 200;
/// One section field.
const FIELD_TEXT: usize = 2000;
/// Fields per section.
const FIELDS_PER_SECTION: usize = 10;
/// Header text.
const HEADER_TEXT: usize = 150;
/// Button label.
const BUTTON_TEXT: usize = 75;
/// Button `action_id`.
const ACTION_ID: usize = 255;
/// Button `value`.
const BUTTON_VALUE: usize = 2000;
/// Confirm dialog title.
const CONFIRM_TITLE: usize = 100;
/// Confirm dialog text.
const CONFIRM_TEXT: usize = 300;
/// Confirm dialog's confirm and deny labels.
const CONFIRM_BUTTON: usize = 30;
/// Elements in one actions block.
const BUTTONS_PER_ACTIONS: usize = 25;
/// The `text` fallback (Slack truncates far later; notifications show much less).
const FALLBACK_TEXT: usize = 3000;
/// One warning line.
const WARNING_LINE: usize = 1000;
/// One step line before the list is compacted.
const STEP_LINE: usize = 300;

/// A reply as a Slack message: Block Kit blocks plus the `text` fallback, which is never empty.
pub fn message(reply: &Reply) -> SlackMessageContent {
    let (blocks, fallback) = match &reply.body {
        Body::Text(t) => (text_blocks(t), t.clone()),
        Body::Card(c) => (card_blocks(c), reply.summary()),
        Body::Report(r) => (report_blocks(r), reply.summary()),
    };
    let fallback = if fallback.trim().is_empty() {
        "dualkey".to_string()
    } else {
        truncate_md(&escape(&fallback), FALLBACK_TEXT)
    };
    let content = SlackMessageContent::new().with_text(fallback);
    if blocks.is_empty() {
        content
    } else {
        content.with_blocks(blocks)
    }
}

/// Escapes text for mrkdwn: `&`, `<` and `>` become entities, so nothing in it is read as a
/// mention, a link or a special token like `<!channel>`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Byte index after at most `max` characters of `s`, moved back so that it does not split an
/// entity (`&amp;`) that [`escape`] wrote.
fn cut_point(s: &str, max: usize) -> usize {
    let mut cut = s.char_indices().nth(max).map(|(i, _)| i).unwrap_or(s.len());
    if let Some(amp) = s[..cut].rfind('&') {
        if cut - amp < 6 && !s[amp..cut].contains(';') && s[amp..].contains(';') {
            let rest = &s[amp..];
            if rest.starts_with("&amp;") || rest.starts_with("&lt;") || rest.starts_with("&gt;") {
                cut = amp;
            }
        }
    }
    cut
}

/// `s` cut to at most `max` characters, ending in `…` when cut (plain text).
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut = s
        .char_indices()
        .nth(max.saturating_sub(1))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    format!("{}…", &s[..cut])
}

/// Like [`truncate`], for escaped mrkdwn: never splits an entity.
fn truncate_md(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    format!("{}…", &s[..cut_point(s, max.saturating_sub(1))])
}

/// Splits mrkdwn into pieces of at most `max` characters, at line ends where it can.
fn split_md(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0;
    for line in text.split('\n') {
        let mut line = line.to_string();
        let mut len = line.chars().count();
        while len > max {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
                cur_len = 0;
            }
            let mut cut = cut_point(&line, max);
            if cut == 0 {
                cut = line
                    .char_indices()
                    .nth(1)
                    .map(|(i, _)| i)
                    .unwrap_or(line.len());
            }
            out.push(line[..cut].to_string());
            line = line[cut..].to_string();
            len = line.chars().count();
        }
        let extra = if cur.is_empty() { len } else { len + 1 };
        if cur_len + extra > max {
            out.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        if !cur.is_empty() {
            cur.push('\n');
            cur_len += 1;
        }
        cur.push_str(&line);
        cur_len += len;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out.retain(|s| !s.trim().is_empty());
    out
}

fn section(text: String) -> SlackBlock {
    SlackSectionBlock::new()
        .with_text(md!(truncate_md(&text, SECTION_TEXT)))
        .into()
}

/// Sections holding escaped mrkdwn, split at the section limit.
fn sections(md: &str) -> Vec<SlackBlock> {
    split_md(md, SECTION_TEXT)
        .into_iter()
        .map(section)
        .collect()
}

fn context(md: String) -> SlackBlock {
    let text: SlackBlockMarkDownText = SlackBlockMarkDownText::new(truncate_md(&md, SECTION_TEXT));
    SlackContextBlock::new(vec![text.into()]).into()
}

fn header(text: &str) -> SlackBlock {
    let text = if text.trim().is_empty() {
        "dualkey"
    } else {
        text
    };
    let pt = SlackBlockPlainText::new(truncate(text, HEADER_TEXT)).with_emoji(true);
    SlackHeaderBlock::new(pt.into()).into()
}

/// A field: `*Label*\nvalue`, escaped, within the field limit.
fn field(label: &str, value_md: &str) -> String {
    let label = escape(label);
    let s = if label.is_empty() {
        value_md.to_string()
    } else {
        format!("*{label}*\n{value_md}")
    };
    truncate_md(&s, FIELD_TEXT)
}

/// Sections of at most ten fields each.
fn field_sections(fields: Vec<String>) -> Vec<SlackBlock> {
    fields
        .chunks(FIELDS_PER_SECTION)
        .map(|chunk| {
            let f: Vec<SlackBlockText> = chunk
                .iter()
                .map(|s| {
                    let s = if s.trim().is_empty() { "–" } else { s };
                    SlackBlockMarkDownText::new(truncate_md(s, FIELD_TEXT)).into()
                })
                .collect();
            SlackSectionBlock::new().with_fields(f).into()
        })
        .collect()
}

fn button(b: &Button) -> SlackActionBlockElement {
    let value = b.id.split_once(':').map(|(_, v)| v).unwrap_or(&b.id);
    let label = if b.label.trim().is_empty() {
        &b.id
    } else {
        &b.label
    };
    let mut e = SlackBlockButtonElement::new(truncate(label, BUTTON_TEXT).into())
        .with_action_id(truncate(&b.id, ACTION_ID).into())
        .with_value(truncate(value, BUTTON_VALUE));
    match b.style {
        ButtonStyle::Default => {}
        ButtonStyle::Primary => e = e.with_style(SlackBlockButtonStyle::Primary),
        ButtonStyle::Danger => e = e.with_style(SlackBlockButtonStyle::Danger),
    }
    if let Some(c) = &b.confirm {
        let text: SlackBlockPlainText = SlackBlockPlainText::new(truncate(&c.text, CONFIRM_TEXT));
        let mut item = SlackBlockConfirmItem::new(
            truncate(nonempty(&c.title, "Are you sure?"), CONFIRM_TITLE).into(),
            text.into(),
            truncate(nonempty(&c.confirm, "Yes"), CONFIRM_BUTTON).into(),
            truncate(nonempty(&c.deny, "Back"), CONFIRM_BUTTON).into(),
        );
        if b.style == ButtonStyle::Danger {
            item = item.with_style("danger".into());
        } else if b.style == ButtonStyle::Primary {
            item = item.with_style("primary".into());
        }
        e = e.with_confirm(item);
    }
    e.into()
}

fn nonempty<'a>(s: &'a str, or: &'a str) -> &'a str {
    if s.trim().is_empty() {
        or
    } else {
        s
    }
}

/// Actions blocks of at most 25 buttons each.
fn actions(buttons: &[Button]) -> Vec<SlackBlock> {
    buttons
        .chunks(BUTTONS_PER_ACTIONS)
        .map(|chunk| SlackActionsBlock::new(chunk.iter().map(button).collect()).into())
        .collect()
}

/// Caps `content` so that it and `actions` fit in [`MAX_BLOCKS`], ending the content with a
/// context that says how much was left out; the buttons are always kept.
fn cap(mut content: Vec<SlackBlock>, mut actions: Vec<SlackBlock>) -> Vec<SlackBlock> {
    actions.truncate(MAX_BLOCKS - 2);
    let room = MAX_BLOCKS - actions.len();
    if content.len() > room {
        let keep = room - 1;
        let more = content.len() - keep;
        content.truncate(keep);
        content.push(context(format!(
            "… {more} more block(s) not shown (Slack shows at most {MAX_BLOCKS}); \
             run the same command in `dualkey shell` or the CLI for all of it"
        )));
    }
    content.extend(actions);
    content
}

fn text_blocks(t: &str) -> Vec<SlackBlock> {
    cap(sections(&escape(t)), vec![])
}

fn state_emoji(state: Option<CardState>, style: Style) -> &'static str {
    match state {
        Some(CardState::Pending) => ":hourglass_flowing_sand:",
        Some(CardState::Approved) => ":ballot_box_with_check:",
        Some(CardState::Queued) => ":inbox_tray:",
        Some(CardState::Running) => ":arrows_counterclockwise:",
        Some(CardState::Succeeded) => ":white_check_mark:",
        Some(CardState::Failed) => ":x:",
        Some(CardState::Interrupted) => ":octagonal_sign:",
        Some(CardState::Denied) => ":no_entry:",
        Some(CardState::Cancelled) => ":heavy_minus_sign:",
        Some(CardState::Expired) => ":alarm_clock:",
        None => match style {
            Style::Info => ":information_source:",
            Style::Pending => ":hourglass_flowing_sand:",
            Style::Success => ":white_check_mark:",
            Style::Warning => ":warning:",
            Style::Danger => ":x:",
        },
    }
}

fn step_emoji(s: StepState) -> &'static str {
    match s {
        StepState::Planned => ":white_circle:",
        StepState::Running => ":arrows_counterclockwise:",
        StepState::Succeeded => ":white_check_mark:",
        StepState::Failed => ":x:",
        StepState::Other => ":grey_question:",
    }
}

fn severity_emoji(s: Severity) -> &'static str {
    match s {
        Severity::Danger => ":rotating_light:",
        Severity::Caution => ":warning:",
        Severity::Info => ":information_source:",
    }
}

/// A mention: `<@U…>` when the operator has a Slack account, else the escaped operator name.
fn mention_md(m: &crate::core::reply::Mention) -> String {
    match m.accounts.iter().find(|(p, _)| *p == Platform::Slack) {
        Some((_, id))
            if !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            format!("<@{id}>")
        }
        _ => escape(&m.operator),
    }
}

/// One step line, full or compact (name and state only).
fn step_line(i: usize, s: &Step, compact: bool) -> String {
    let mut line = format!("{} {}. *{}*", step_emoji(s.state), i + 1, escape(&s.name));
    if !compact && !s.detail.is_empty() {
        line.push_str(": ");
        line.push_str(&escape(&s.detail));
    }
    if let Some((state, out)) = &s.recorded {
        line.push_str(" — ");
        line.push_str(&escape(state));
        if !out.is_empty() && !compact {
            line.push_str(&format!(" ({})", escape(out)));
        }
    }
    truncate_md(&line, STEP_LINE)
}

/// The step list as one section's text within the section limit: full lines when they fit,
/// else compact ones, else a window around the step that matters now (the first that has not
/// succeeded) with how many were left out before and after.
fn steps_md(steps: &[Step]) -> String {
    let fits = |lines: &[String]| {
        lines.iter().map(|l| l.chars().count() + 1).sum::<usize>() <= SECTION_TEXT
    };
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
    // Room for the two "… N more" lines.
    let budget = SECTION_TEXT - 120;
    let (mut lo, mut hi) = (focus, focus + 1);
    let mut used = compact[focus].chars().count() + 1;
    loop {
        let mut grew = false;
        if hi < compact.len() && used + compact[hi].chars().count() < budget {
            used += compact[hi].chars().count() + 1;
            hi += 1;
            grew = true;
        }
        if lo > 0 && used + compact[lo - 1].chars().count() < budget {
            used += compact[lo - 1].chars().count() + 1;
            lo -= 1;
            grew = true;
        }
        if !grew {
            break;
        }
    }
    let mut lines = Vec::new();
    if lo > 0 {
        lines.push(format!("_… {lo} earlier step(s)_"));
    }
    lines.extend(compact[lo..hi].iter().cloned());
    if hi < compact.len() {
        lines.push(format!("_… {} more step(s)_", compact.len() - hi));
    }
    truncate_md(&lines.join("\n"), SECTION_TEXT)
}

/// Warnings, most serious first, one line each with an emoji by severity.
fn warnings_md(warnings: &[crate::core::reply::Warning]) -> String {
    let mut w: Vec<_> = warnings.iter().collect();
    w.sort_by_key(|w| std::cmp::Reverse(w.severity));
    w.iter()
        .map(|w| {
            let label = match w.severity {
                Severity::Danger => "*Danger:* ",
                Severity::Caution => "*Warning:* ",
                Severity::Info => "",
            };
            let line = format!("{} {label}{}", severity_emoji(w.severity), escape(&w.text));
            truncate_md(&line, WARNING_LINE)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn card_blocks(c: &Card) -> Vec<SlackBlock> {
    let mut b = Vec::new();
    let label = c.label();
    b.push(header(&format!(
        "{} {}{}",
        state_emoji(c.state, c.style),
        label,
        c.title
    )));
    let requester = c.mentions.iter().find(|m| m.role == "requester");
    let mut fields = Vec::new();
    let mut requester_shown = false;
    for (k, v) in &c.fields {
        if c.votes.is_some() && k == "Votes" {
            continue; // rendered below with the count
        }
        if k == "Requested by" {
            if let Some(m) = requester {
                fields.push(field(k, &mention_md(m)));
                requester_shown = true;
                continue;
            }
        }
        fields.push(field(k, &escape(v)));
    }
    if let (Some(m), false) = (requester, requester_shown) {
        fields.insert(0, field("Requested by", &mention_md(m)));
    }
    for m in c.mentions.iter().filter(|m| m.role != "requester") {
        let mut role = m.role.clone();
        if let Some(f) = role.get_mut(0..1) {
            f.make_ascii_uppercase();
        }
        fields.push(field(&role, &mention_md(m)));
    }
    b.extend(field_sections(fields));
    if let Some(v) = &c.votes {
        let cast: Vec<String> = v
            .cast
            .iter()
            .map(|(who, what)| format!("{} {}", escape(who), escape(what)))
            .collect();
        let mut s = format!(
            ":ballot_box_with_check: {}/{} approvals",
            v.approvals, v.required
        );
        if !cast.is_empty() {
            s.push_str(": ");
            s.push_str(&cast.join(", "));
        }
        b.push(section(s));
    }
    if let Some(ms) = c.expires_at_ms {
        b.push(context(format!(
            ":alarm_clock: Expires <!date^{}^{{date_short_pretty}} {{time}}|{}>",
            ms.div_euclid(1000),
            utc_text(ms)
        )));
    }
    if !c.warnings.is_empty() {
        b.extend(sections(&warnings_md(&c.warnings)));
    }
    if !c.steps.is_empty() {
        let mut s = SlackSectionBlock::new().with_text(md!(steps_md(&c.steps)));
        s = s.with_block_id("steps".into());
        b.push(s.into());
    }
    if let Some(p) = &c.progress {
        b.push(context(format!(":hourglass_flowing_sand: {}", escape(p))));
    }
    if let Some(e) = &c.error {
        b.push(section(format!(":x: *Error:* {}", escape(e))));
    }
    if !c.lines.is_empty() {
        b.extend(sections(&escape(&c.lines.join("\n"))));
    }
    cap(b, actions(&c.buttons))
}

/// A table as fields: two columns as a two-column grid (headings first, bold), wider tables as
/// one section per row (the first cell as its text, the others as `*Column*\nvalue` fields).
fn table_blocks(t: &Table) -> Vec<SlackBlock> {
    let n = t.columns.len();
    if n == 0 {
        return vec![];
    }
    if n <= 2 {
        let mut fields = Vec::new();
        let heads: Vec<String> = t
            .columns
            .iter()
            .map(|c| format!("*{}*", escape(c)))
            .collect();
        let mut rows = t.rows.iter().peekable();
        let width = n;
        // Ten fields per section: the headings start each section so every chunk reads alone.
        let per = FIELDS_PER_SECTION / width - 1;
        let mut out = Vec::new();
        while rows.peek().is_some() {
            fields.clear();
            fields.extend(heads.iter().cloned());
            for row in rows.by_ref().take(per) {
                for i in 0..width {
                    fields.push(escape(row.get(i).map(String::as_str).unwrap_or("")));
                }
            }
            out.extend(field_sections(fields.clone()));
        }
        return out;
    }
    t.rows
        .iter()
        .map(|row| {
            let first = row.first().map(String::as_str).unwrap_or("");
            let mut f: Vec<String> = t
                .columns
                .iter()
                .zip(row.iter())
                .skip(1)
                .map(|(c, v)| field(c, &escape(v)))
                .collect();
            if f.len() > FIELDS_PER_SECTION {
                let rest = f.split_off(FIELDS_PER_SECTION - 1).join("\n");
                f.push(truncate_md(&rest, FIELD_TEXT));
            }
            let text = format!("*{}*", escape(first));
            let fields: Vec<SlackBlockText> = f
                .into_iter()
                .map(|s| SlackBlockMarkDownText::new(s).into())
                .collect();
            let mut s = SlackSectionBlock::new().with_text(md!(truncate_md(&text, SECTION_TEXT)));
            if !fields.is_empty() {
                s = s.with_fields(fields);
            }
            s.into()
        })
        .collect()
}

fn report_section(s: &Section) -> Vec<SlackBlock> {
    let mut b = Vec::new();
    if let Some(h) = &s.heading {
        b.push(section(format!("*{}*", escape(h))));
    }
    b.extend(field_sections(
        s.fields.iter().map(|(k, v)| field(k, &escape(v))).collect(),
    ));
    if !s.lines.is_empty() {
        b.extend(sections(&escape(&s.lines.join("\n"))));
    }
    if let Some(t) = &s.table {
        b.extend(table_blocks(t));
    }
    if !s.warnings.is_empty() {
        b.extend(sections(&warnings_md(&s.warnings)));
    }
    b
}

fn report_blocks(r: &Report) -> Vec<SlackBlock> {
    let mut b = vec![header(&r.title)];
    for (i, s) in r.sections.iter().enumerate() {
        if i > 0 {
            b.push(SlackDividerBlock::new().into());
        }
        b.extend(report_section(s));
    }
    cap(b, actions(&r.buttons))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::reply::{Confirm, Mention, Votes, Warning};
    use serde_json::Value;

    fn json(reply: &Reply) -> Value {
        serde_json::to_value(message(reply)).unwrap()
    }

    fn blocks(v: &Value) -> &Vec<Value> {
        v["blocks"].as_array().expect("blocks")
    }

    /// Every text in the message, with the limit that applies to it.
    fn check_limits(v: &Value) {
        let bl = blocks(v);
        assert!(bl.len() <= MAX_BLOCKS, "{} blocks", bl.len());
        let n = |s: &Value| s.as_str().unwrap().chars().count();
        for b in bl {
            match b["type"].as_str().unwrap() {
                "header" => assert!(n(&b["text"]["text"]) <= HEADER_TEXT),
                "section" => {
                    if !b["text"].is_null() {
                        let len = n(&b["text"]["text"]);
                        assert!(len <= SECTION_TEXT && len > 0, "section {len}");
                    }
                    if let Some(f) = b["fields"].as_array() {
                        assert!(f.len() <= FIELDS_PER_SECTION);
                        for f in f {
                            assert!(n(&f["text"]) <= FIELD_TEXT);
                        }
                    }
                }
                "context" => {
                    for e in b["elements"].as_array().unwrap() {
                        assert!(n(&e["text"]) <= SECTION_TEXT);
                    }
                }
                "actions" => {
                    let e = b["elements"].as_array().unwrap();
                    assert!(e.len() <= BUTTONS_PER_ACTIONS);
                    for e in e {
                        assert!(n(&e["text"]["text"]) <= BUTTON_TEXT);
                        assert!(n(&e["action_id"]) <= ACTION_ID);
                        assert!(n(&e["value"]) <= BUTTON_VALUE);
                    }
                }
                "divider" => {}
                other => panic!("unexpected block {other}"),
            }
        }
        assert!(!v["text"].as_str().unwrap().trim().is_empty());
    }

    fn request_card() -> Card {
        let mut c = Card::new("Request r123abc456: deploy 2 migrations", Style::Pending);
        c.state = Some(CardState::Pending);
        c.fields = vec![
            ("Requested by".into(), "alice (U0ALICE)".into()),
            ("Environment".into(), "production".into()),
            ("Votes".into(), "bob approved".into()),
        ];
        c.votes = Some(Votes {
            approvals: 1,
            required: 1,
            cast: vec![("bob".into(), "approved".into())],
        });
        c.expires_at_ms = Some(1_764_612_000_000);
        c.mentions = vec![Mention {
            role: "requester".into(),
            operator: "alice".into(),
            accounts: vec![(Platform::Slack, "U0ALICE".into())],
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

    #[test]
    fn approve_and_deny_buttons_carry_id_value_style_and_confirm() {
        let v = json(&Reply::card(request_card()));
        check_limits(&v);
        let actions = blocks(&v)
            .iter()
            .find(|b| b["type"] == "actions")
            .expect("actions block");
        let e = actions["elements"].as_array().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0]["type"], "button");
        assert_eq!(e[0]["action_id"], "approve:r123abc456");
        assert_eq!(e[0]["value"], "r123abc456");
        assert_eq!(e[0]["style"], "primary");
        assert_eq!(e[0]["text"]["text"], "Approve");
        assert_eq!(e[0]["confirm"]["title"]["text"], "Approve and run?");
        assert_eq!(e[0]["confirm"]["confirm"]["text"], "Approve");
        assert_eq!(e[0]["confirm"]["deny"]["text"], "Back");
        assert!(e[0]["confirm"]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("2 step(s)"));
        assert_eq!(e[1]["action_id"], "deny:r123abc456");
        assert_eq!(e[1]["value"], "r123abc456");
        assert_eq!(e[1]["style"], "danger");
        assert!(e[1]["confirm"].is_null());
        // The buttons are the last block.
        assert_eq!(blocks(&v).last().unwrap()["type"], "actions");
    }

    #[test]
    fn a_request_card_shows_state_mention_votes_expiry_warnings_and_steps() {
        let v = json(&Reply::card(request_card()));
        let all = v.to_string();
        let head = &blocks(&v)[0];
        assert_eq!(head["type"], "header");
        let h = head["text"]["text"].as_str().unwrap();
        assert!(
            h.starts_with(":hourglass_flowing_sand: [pending] Request r123abc456"),
            "{h}"
        );
        assert!(all.contains("*Requested by*\\n<@U0ALICE>"), "{all}");
        assert!(all.contains("1/1 approvals: bob approved"), "{all}");
        assert!(
            all.contains("<!date^1764612000^{date_short_pretty} {time}|2025-12-01 18:00 UTC>"),
            "{all}"
        );
        // Danger first.
        let danger = all.find("drops column").unwrap();
        let info = all.find("takes a minute").unwrap();
        assert!(danger < info);
        assert!(all.contains(":rotating_light:"));
        let steps = blocks(&v)
            .iter()
            .find(|b| b["block_id"] == "steps")
            .expect("one steps section");
        let s = steps["text"]["text"].as_str().unwrap();
        assert!(
            s.contains(":white_check_mark: 1. *backup*: pg_dump -Fc — succeeded (12 MB)"),
            "{s}"
        );
        assert!(s.contains(":arrows_counterclockwise: 2. *migrate*"), "{s}");
        assert_eq!(
            v["text"].as_str().unwrap(),
            "[pending] Request r123abc456: deploy 2 migrations"
        );
        // The "Votes" field is not repeated next to the vote line.
        assert!(!all.contains("*Votes*"), "{all}");
    }

    #[test]
    fn a_requester_without_a_slack_account_is_named() {
        let mut c = request_card();
        c.mentions[0].accounts = vec![(Platform::Discord, "300".into())];
        let all = json(&Reply::card(c)).to_string();
        assert!(all.contains("*Requested by*\\nalice"), "{all}");
        assert!(!all.contains("<@"), "{all}");
    }

    #[test]
    fn fallback_text_is_never_empty() {
        for r in [
            Reply::ephemeral(""),
            Reply::public("   \n"),
            Reply::card(Card::new("", Style::Info)),
            Reply::report(Report {
                title: String::new(),
                sections: vec![],
                buttons: vec![],
            }),
        ] {
            let v = json(&r);
            assert!(!v["text"].as_str().unwrap().trim().is_empty(), "{v}");
            if let Some(b) = v["blocks"].as_array() {
                check_limits(&v);
                assert!(!b.is_empty());
            }
        }
        let v = json(&Reply::ephemeral("line one\nline two"));
        assert_eq!(v["text"], "line one\nline two");
        assert_eq!(blocks(&v)[0]["text"]["type"], "mrkdwn");
    }

    #[test]
    fn a_huge_card_stays_within_every_limit() {
        let mut c = request_card();
        let long = "é".repeat(5000);
        c.title = long.clone();
        c.steps = steps_150_done(200, &long);
        c.lines = (0..100).map(|_| long.clone()).collect();
        c.fields = (0..40).map(|i| (format!("f{i}"), long.clone())).collect();
        c.warnings = (0..30).map(|_| Warning::danger(long.clone())).collect();
        c.error = Some(long.clone());
        c.progress = Some(long.clone());
        c.buttons[0].label = long.clone();
        c.buttons[0].confirm.as_mut().unwrap().title = long.clone();
        c.buttons[0].confirm.as_mut().unwrap().text = long.clone();
        let v = json(&Reply::card(c));
        check_limits(&v);
        let confirm = &blocks(&v).last().unwrap()["elements"][0]["confirm"];
        assert!(confirm["title"]["text"].as_str().unwrap().chars().count() <= CONFIRM_TITLE);
        assert!(confirm["text"]["text"].as_str().unwrap().chars().count() <= CONFIRM_TEXT);
        // Buttons survive the cap, and the cut is said.
        assert_eq!(blocks(&v).last().unwrap()["type"], "actions");
        assert!(v.to_string().contains("more block(s) not shown"));
        // The step list shows the running step even though it is step 151.
        let steps = render_steps_only(200);
        assert!(steps.contains("151. *step-150*"), "{steps}");
        assert!(steps.chars().count() <= SECTION_TEXT);
        assert!(steps.contains("earlier step(s)"));
    }

    /// `n` steps with `detail`: the first 150 succeeded (with `detail` as output), the 151st
    /// running, the rest planned.
    fn steps_150_done(n: usize, detail: &str) -> Vec<Step> {
        (0..n)
            .map(|i| Step {
                name: format!("step-{i}"),
                detail: detail.to_string(),
                state: if i < 150 {
                    StepState::Succeeded
                } else if i == 150 {
                    StepState::Running
                } else {
                    StepState::Planned
                },
                recorded: (i < 150).then(|| ("succeeded".into(), detail.to_string())),
            })
            .collect()
    }

    fn render_steps_only(n: usize) -> String {
        let steps = steps_150_done(n, &"x".repeat(5000));
        let mut c = Card::new("t", Style::Pending);
        c.steps = steps;
        let v = json(&Reply::card(c));
        blocks(&v)
            .iter()
            .find(|b| b["block_id"] == "steps")
            .unwrap()["text"]["text"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn user_text_cannot_ping_the_channel() {
        let mut c = Card::new("Request r1: deploy <!channel>", Style::Pending);
        c.fields = vec![("Migration".into(), "20240101_<!channel>_&_<@U0BOB>".into())];
        c.lines = vec!["<!here> hi".into()];
        c.steps = vec![Step {
            name: "<!everyone>".into(),
            detail: String::new(),
            state: StepState::Planned,
            recorded: None,
        }];
        let v = json(&Reply::card(c));
        let all = v.to_string();
        for bad in ["<!channel>", "<!here>", "<!everyone>", "<@U0BOB>"] {
            // The header is plain_text, which Slack never parses; every mrkdwn text is escaped.
            for b in blocks(&v).iter().filter(|b| b["type"] != "header") {
                assert!(!b.to_string().contains(bad), "{bad} in {b}");
            }
        }
        assert!(
            all.contains("20240101_&lt;!channel&gt;_&amp;_&lt;@U0BOB&gt;"),
            "{all}"
        );
        assert!(!v["text"].as_str().unwrap().contains("<!channel>"));
        let t = json(&Reply::public("hi <!channel>"));
        assert!(!t.to_string().contains("<!channel>"), "{t}");
    }

    #[test]
    fn truncation_never_splits_a_character_or_an_entity() {
        assert_eq!(truncate("héllo", 3), "hé…");
        assert_eq!(truncate("hé", 3), "hé");
        let s = escape("aaaa<b");
        assert_eq!(s, "aaaa&lt;b");
        // Cutting inside `&lt;` backs off to before it.
        assert_eq!(truncate_md(&s, 6), "aaaa…");
        for piece in split_md(&escape(&"<".repeat(3001)), SECTION_TEXT) {
            assert!(piece.chars().count() <= SECTION_TEXT);
            assert!(
                piece.starts_with("&lt;") && piece.ends_with("&lt;"),
                "{piece}"
            );
        }
    }

    #[test]
    fn a_report_table_renders_as_fields_not_a_code_block() {
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
                            vec!["b2.dump".into(), "2026-11-30".into(), "11 MB".into()],
                        ],
                    }),
                    warnings: vec![Warning::caution("newest backup is old")],
                },
                Section {
                    heading: Some("Two columns".into()),
                    table: Some(Table {
                        columns: vec!["Name".into(), "State".into()],
                        rows: (0..9)
                            .map(|i| vec![format!("m{i}"), "applied".into()])
                            .collect(),
                    }),
                    ..Default::default()
                },
            ],
            buttons: vec![],
        };
        let v = json(&Reply::report(r));
        check_limits(&v);
        let all = v.to_string();
        assert!(!all.contains("```"), "{all}");
        assert_eq!(blocks(&v)[0]["type"], "header");
        assert_eq!(blocks(&v)[0]["text"]["text"], "Backups (production)");
        assert!(all.contains("*Catalog*"));
        assert!(all.contains("*Kept*\\n3"));
        let row = blocks(&v)
            .iter()
            .find(|b| b["text"]["text"] == "*b1.dump*")
            .expect("a section per row");
        let f = row["fields"].as_array().unwrap();
        assert_eq!(f[0]["text"], "*Taken*\n2026-12-01");
        assert_eq!(f[1]["text"], "*Size*\n12 MB");
        // Two columns: a grid, headings first in each section; 9 rows at 4 a section need 3.
        let grids: Vec<&Value> = blocks(&v)
            .iter()
            .filter(|b| b["fields"][0]["text"] == "*Name*")
            .collect();
        assert_eq!(grids.len(), 3, "{all}");
        assert_eq!(grids[0]["fields"][2]["text"], "m0");
        assert_eq!(grids[0]["fields"][3]["text"], "applied");
        assert!(all.contains("newest backup is old"));
        assert_eq!(v["text"], "Backups (production)");
    }

    #[test]
    fn a_long_report_is_capped_with_a_note_and_keeps_its_buttons() {
        let r = Report {
            title: "Approvals".into(),
            sections: (0..80)
                .map(|i| Section {
                    heading: Some(format!("Request r{i}")),
                    fields: vec![("Env".into(), "production".into())],
                    ..Default::default()
                })
                .collect(),
            buttons: (0..30)
                .map(|i| Button::new(format!("approve:r{i}"), "Approve", ButtonStyle::Primary))
                .collect(),
        };
        let v = json(&Reply::report(r));
        check_limits(&v);
        let bl = blocks(&v);
        assert_eq!(bl.len(), MAX_BLOCKS);
        assert_eq!(bl[bl.len() - 1]["type"], "actions");
        assert_eq!(bl[bl.len() - 2]["type"], "actions");
        assert_eq!(bl[bl.len() - 3]["type"], "context");
        assert!(bl[bl.len() - 3]
            .to_string()
            .contains("more block(s) not shown"));
        assert_eq!(bl[bl.len() - 1]["elements"][4]["action_id"], "approve:r29");
    }
}
