//! A card as Block Kit: a header with the state, field sections, mentions, votes, the expiry,
//! warnings by severity and the step list as one section (so `chat.update` changes it in place).

use slack_morphism::prelude::*;

use super::blocks::{actions, cap, context, field, field_sections, header, section, sections};
use super::text::{escape, truncate_md};
use super::{SECTION_TEXT, STEP_LINE, WARNING_LINE};
use crate::core::event::Platform;
use crate::core::reply::{utc_text, Card, CardState, Severity, Step, StepState, Style};

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
pub(super) fn warnings_md(warnings: &[crate::core::reply::Warning]) -> String {
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

pub(super) fn card_blocks(c: &Card) -> Vec<SlackBlock> {
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
