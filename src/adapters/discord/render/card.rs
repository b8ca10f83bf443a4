//! A card as one Discord embed: colour and icon by state, fields, mentions of Discord
//! accounts, the step list within its budget, warnings by severity, votes, the expiry and the
//! confirmation texts of its buttons.

use serde_json::Value;

use super::embed::{block_field, cap_fields, description, embed, field};
use super::text::{code_block, code_safe, escape, truncate};
use super::{AMBER, BLUE, BLURPLE, FIELD_VALUE, GREEN, GREY, ORANGE, RED};
use crate::core::event::Platform;
use crate::core::reply::{
    utc_text, Button, Card, CardState, Mention, Severity, Step, StepState, Style, Warning,
};

/// The part of a card's description the step list may use.
pub(super) const STEPS_BUDGET: usize = 2500;

/// One step line before the list is compacted.
const STEP_LINE: usize = 400;

/// One warning line.
const WARNING_LINE: usize = 600;

/// A step's recorded output shown inline (longer output goes in a code block).
const INLINE_OUTPUT: usize = 60;

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

pub(super) fn discord_mentions(mentions: &[Mention]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in mentions.iter().filter_map(discord_account) {
        if !out.iter().any(|o| o == id) && out.len() < 100 {
            out.push(id.to_string());
        }
    }
    out
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
pub(super) fn steps_md(steps: &[Step], budget: usize) -> String {
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
pub(super) fn warnings_md(warnings: &[Warning]) -> String {
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

pub(super) fn confirm_fields(buttons: &[Button]) -> Vec<Value> {
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

pub(super) fn card_embed(c: &Card) -> Value {
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
