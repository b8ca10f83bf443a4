//! Neutral replies: plain text, a card (title, state, fields, steps with their states, warnings
//! with a severity, votes, expiry, mentions, buttons with a style and a confirm text) or a report
//! (sections, fields, tables). Adapters render them natively (Block Kit, Discord embeds and
//! components) or as text ([`Reply::to_text`], the shell and every platform's fallback).

use serde::{Deserialize, Serialize};

/// Who sees a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Visibility {
    /// Only the person who asked.
    Ephemeral,
    /// Everyone in the channel.
    InChannel,
}

/// The tone of a card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Style {
    /// Informational.
    Info,
    /// Waiting for something (approval, a running step).
    Pending,
    /// Done well.
    Success,
    /// Needs attention.
    Warning,
    /// Failed or refused.
    Danger,
}

/// The state a request or operation card reports. It is the card's label (`[running]` in the
/// text fallback), kept apart from the tone so that, say, a denied request does not read as
/// failed and a running operation does not read as pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CardState {
    /// A request waiting for votes.
    Pending,
    /// Approved, waiting for the worker (an operation exists only once approved).
    Approved,
    /// An operation waiting for the worker.
    Queued,
    /// An operation whose steps are running.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// A step failed, or the plan changed before the first step.
    Failed,
    /// dualkey stopped while the operation ran; it is never resumed by itself.
    Interrupted,
    /// An approver said no.
    Denied,
    /// Withdrawn.
    Cancelled,
    /// Nobody voted in time.
    Expired,
}

impl CardState {
    /// The label (`running`), also the stored request or operation state name.
    pub fn label(self) -> &'static str {
        match self {
            CardState::Pending => "pending",
            CardState::Approved => "approved",
            CardState::Queued => "queued",
            CardState::Running => "running",
            CardState::Succeeded => "succeeded",
            CardState::Failed => "failed",
            CardState::Interrupted => "interrupted",
            CardState::Denied => "denied",
            CardState::Cancelled => "cancelled",
            CardState::Expired => "expired",
        }
    }

    /// The tone that goes with the state.
    pub fn style(self) -> Style {
        match self {
            CardState::Pending | CardState::Approved | CardState::Queued | CardState::Running => {
                Style::Pending
            }
            CardState::Succeeded => Style::Success,
            CardState::Failed | CardState::Interrupted | CardState::Denied => Style::Danger,
            CardState::Cancelled | CardState::Expired => Style::Warning,
        }
    }
}

/// How a button looks where the platform can style it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ButtonStyle {
    /// The platform's default look.
    #[default]
    Default,
    /// The main action (green or blue).
    Primary,
    /// A destructive or refusing action (red).
    Danger,
}

/// An "are you sure?" step shown natively before a click counts (Slack's confirm dialog; a
/// platform without one renders the text next to the button).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirm {
    /// Dialog title.
    pub title: String,
    /// What the click will do.
    pub text: String,
    /// Label of the confirming choice.
    pub confirm: String,
    /// Label of the backing-out choice.
    pub deny: String,
}

/// A button; `id` is what comes back as the click's action id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    /// `approve:<request-id>`, `deny:<request-id>`, ...
    pub id: String,
    /// Label shown.
    pub label: String,
    /// Look.
    #[serde(default)]
    pub style: ButtonStyle,
    /// Native confirmation before the click counts (destructive plans).
    #[serde(default)]
    pub confirm: Option<Confirm>,
}

impl Button {
    /// A button with the default look and no confirmation.
    pub fn new(id: impl Into<String>, label: impl Into<String>, style: ButtonStyle) -> Button {
        Button {
            id: id.into(),
            label: label.into(),
            style,
            confirm: None,
        }
    }

    /// The same button behind a confirmation dialog.
    pub fn with_confirm(mut self, confirm: Confirm) -> Button {
        self.confirm = Some(confirm);
        self
    }
}

/// How serious a warning is (its label in the text fallback: `Severity::label`, in `human`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Read before approving.
    #[default]
    Caution,
    /// Data is lost or a step cannot be undone.
    Danger,
}

/// A warning on a card, with its severity. Stored plans written before severities existed
/// hold plain strings; they read back as [`Severity::Caution`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WarningRepr")]
pub struct Warning {
    /// How serious.
    pub severity: Severity,
    /// What to know.
    pub text: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WarningRepr {
    Text(String),
    Full { severity: Severity, text: String },
}

impl From<WarningRepr> for Warning {
    fn from(r: WarningRepr) -> Warning {
        match r {
            WarningRepr::Text(text) => Warning {
                severity: Severity::Caution,
                text,
            },
            WarningRepr::Full { severity, text } => Warning { severity, text },
        }
    }
}

impl Warning {
    /// A data-loss or irreversible warning.
    pub fn danger(text: impl Into<String>) -> Warning {
        Warning {
            severity: Severity::Danger,
            text: text.into(),
        }
    }

    /// A read-before-approving warning.
    pub fn caution(text: impl Into<String>) -> Warning {
        Warning {
            severity: Severity::Caution,
            text: text.into(),
        }
    }

    /// Worth knowing.
    pub fn info(text: impl Into<String>) -> Warning {
        Warning {
            severity: Severity::Info,
            text: text.into(),
        }
    }
}

/// The state of one step on a card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Not started.
    #[default]
    Planned,
    /// Running now.
    Running,
    /// Done.
    Succeeded,
    /// Failed; the operation stopped here.
    Failed,
    /// Any other recorded state (shown as is).
    Other,
}

impl StepState {
    /// Parses a stored step state (`running`, `succeeded`, `failed`).
    pub fn parse(s: &str) -> StepState {
        match s {
            "running" => StepState::Running,
            "succeeded" => StepState::Succeeded,
            "failed" => StepState::Failed,
            "planned" => StepState::Planned,
            _ => StepState::Other,
        }
    }
}

/// One step of a plan as a card shows it; `recorded` holds the stored state name and output
/// once the worker started the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Step name (`backup`, `app-stop`, ...).
    pub name: String,
    /// What it does, in words.
    pub detail: String,
    /// Its state.
    #[serde(default)]
    pub state: StepState,
    /// The stored state name and output summary, once started.
    #[serde(default)]
    pub recorded: Option<(String, String)>,
}

/// Votes on a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Votes {
    /// Approvals so far.
    pub approvals: u32,
    /// Approvals needed.
    pub required: u32,
    /// `(operator, "approved" | "denied")`, in vote order.
    pub cast: Vec<(String, String)>,
}

/// A person named on a card: the operator id, and their accounts so a platform can mention
/// them natively (`platform`, account id) and fall back to the name elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mention {
    /// What the mention is for (`requester`).
    pub role: String,
    /// The operator id.
    pub operator: String,
    /// Platform accounts (`slack`, `U0ALICE`).
    pub accounts: Vec<(super::event::Platform, String)>,
}

/// A structured message: request and operation cards, notices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    /// First line.
    pub title: String,
    /// Label/value rows.
    pub fields: Vec<(String, String)>,
    /// Free text under the fields, one entry per line.
    pub lines: Vec<String>,
    /// Buttons.
    pub buttons: Vec<Button>,
    /// Tone.
    pub style: Style,
    /// The state shown as the label, for request and operation cards (absent in replies queued
    /// by older versions, which fall back to a label from the tone).
    #[serde(default)]
    pub state: Option<CardState>,
    /// The plan's steps with their states.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Warnings, most serious first.
    #[serde(default)]
    pub warnings: Vec<Warning>,
    /// Votes so far (request cards).
    #[serde(default)]
    pub votes: Option<Votes>,
    /// When an open request expires (ms since the epoch).
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    /// People named on the card.
    #[serde(default)]
    pub mentions: Vec<Mention>,
    /// The error that stopped an operation.
    #[serde(default)]
    pub error: Option<String>,
    /// The latest progress line of a running step (bytes written, elapsed).
    #[serde(default)]
    pub progress: Option<String>,
}

impl Card {
    /// A card with a title, a tone and nothing else.
    pub fn new(title: impl Into<String>, style: Style) -> Card {
        Card {
            title: title.into(),
            fields: vec![],
            lines: vec![],
            buttons: vec![],
            style,
            state: None,
            steps: vec![],
            warnings: vec![],
            votes: None,
            expires_at_ms: None,
            mentions: vec![],
            error: None,
            progress: None,
        }
    }

    /// The label in front of the title in the text rendering (`[running] `).
    pub fn label(&self) -> String {
        match (self.state, self.style) {
            (Some(s), _) => format!("[{}] ", s.label()),
            (None, Style::Info) => String::new(),
            (None, Style::Pending) => "[pending] ".into(),
            (None, Style::Success) => "[ok] ".into(),
            (None, Style::Warning) => "[warning] ".into(),
            (None, Style::Danger) => "[failed] ".into(),
        }
    }

    /// The plan as text lines: `Plan:`, the numbered steps, the warnings.
    pub fn plan_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.steps.is_empty() || !self.warnings.is_empty() {
            lines.push("Plan:".to_string());
        }
        for (i, s) in self.steps.iter().enumerate() {
            lines.push(format!("  {}. {}: {}", i + 1, s.name, s.detail));
        }
        for w in &self.warnings {
            lines.push(format!("{}: {}", w.severity.label(), w.text));
        }
        lines
    }

    /// The steps the worker started, as text lines (`step 2 backup: succeeded (12 MB)`).
    pub fn step_lines(&self) -> Vec<String> {
        self.steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let (state, out) = s.recorded.as_ref()?;
                Some(format!(
                    "step {} {}: {state}{}",
                    i + 1,
                    s.name,
                    if out.is_empty() {
                        String::new()
                    } else {
                        format!(" ({out})")
                    }
                ))
            })
            .collect()
    }
}

/// A table in a report.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Table {
    /// Column headings.
    pub columns: Vec<String>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<String>>,
}

/// One section of a report: a heading, label/value fields, lines, and an optional table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Section {
    /// Heading (none for the first, untitled section).
    pub heading: Option<String>,
    /// Label/value rows.
    pub fields: Vec<(String, String)>,
    /// Free lines.
    pub lines: Vec<String>,
    /// A table.
    pub table: Option<Table>,
    /// Warnings.
    #[serde(default)]
    pub warnings: Vec<Warning>,
}

/// A read-only report (`status`, `backups`, `checklist`, `approvals`, scheduled reports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Title.
    pub title: String,
    /// Sections in order.
    pub sections: Vec<Section>,
    /// Buttons (for example each open request's approve and deny in `approvals`).
    #[serde(default)]
    pub buttons: Vec<Button>,
}

/// What the bot says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Plain text (may hold several lines).
    Text(String),
    /// A card.
    Card(Card),
    /// A report.
    Report(Report),
}

/// A reply with its visibility.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Who sees it.
    pub visibility: Visibility,
    /// What it says.
    pub body: Body,
}

impl Reply {
    /// An ephemeral text reply (errors, usage, refusals).
    pub fn ephemeral(text: impl Into<String>) -> Reply {
        Reply {
            visibility: Visibility::Ephemeral,
            body: Body::Text(text.into()),
        }
    }

    /// A text reply everyone in the channel sees.
    pub fn public(text: impl Into<String>) -> Reply {
        Reply {
            visibility: Visibility::InChannel,
            body: Body::Text(text.into()),
        }
    }

    /// A card everyone in the channel sees.
    pub fn card(card: Card) -> Reply {
        Reply {
            visibility: Visibility::InChannel,
            body: Body::Card(card),
        }
    }

    /// A report only the person who asked sees.
    pub fn report(report: Report) -> Reply {
        Reply {
            visibility: Visibility::Ephemeral,
            body: Body::Report(report),
        }
    }

    /// A one-line summary for notifications and platforms' `text` fallback: the text itself,
    /// or the card's label and title, or the report's title.
    pub fn summary(&self) -> String {
        match &self.body {
            Body::Text(t) => t.lines().next().unwrap_or_default().to_string(),
            Body::Card(c) => format!("{}{}", c.label(), c.title),
            Body::Report(r) => r.title.clone(),
        }
    }

    /// The text fallback used by the shell and by platforms that cannot render a card:
    /// buttons appear as `[BUTTON-ID]`.
    pub fn to_text(&self) -> String {
        match &self.body {
            Body::Text(t) => t.clone(),
            Body::Card(c) => {
                let mut out = format!("== {}{} ==", c.label(), c.title);
                for (k, v) in &c.fields {
                    out.push_str(&format!("\n{k}: {v}"));
                }
                let tail = c
                    .error
                    .iter()
                    .map(|e| format!("error: {e}"))
                    .chain(c.progress.iter().map(|p| format!("progress: {p}")));
                for l in c
                    .plan_lines()
                    .into_iter()
                    .chain(c.step_lines())
                    .chain(c.lines.iter().cloned())
                    .chain(tail)
                {
                    out.push('\n');
                    out.push_str(&l);
                }
                push_buttons(&mut out, &c.buttons);
                out
            }
            Body::Report(r) => {
                let mut parts: Vec<String> = Vec::new();
                if !r.title.is_empty() {
                    parts.push(r.title.clone());
                }
                for s in &r.sections {
                    if let Some(h) = &s.heading {
                        parts.push(h.clone());
                    }
                    for (k, v) in &s.fields {
                        parts.push(format!("{k}: {v}"));
                    }
                    parts.extend(s.lines.iter().cloned());
                    if let Some(t) = &s.table {
                        parts.extend(table_text(t));
                    }
                    for w in &s.warnings {
                        parts.push(format!("{}: {}", w.severity.label(), w.text));
                    }
                }
                let mut out = parts.join("\n");
                push_buttons(&mut out, &r.buttons);
                out
            }
        }
    }
}

fn push_buttons(out: &mut String, buttons: &[Button]) {
    if !buttons.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        let b: Vec<String> = buttons.iter().map(|b| format!("[{}]", b.id)).collect();
        out.push_str(&b.join(" "));
    }
}

/// A table as aligned text lines: a heading row, then one line per row, columns padded to the
/// widest cell (counted in characters).
pub fn table_text(t: &Table) -> Vec<String> {
    let n = t.columns.len();
    let mut width = vec![0usize; n];
    for row in std::iter::once(&t.columns).chain(t.rows.iter()) {
        for (i, c) in row.iter().enumerate().take(n) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    std::iter::once(&t.columns)
        .chain(t.rows.iter())
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .take(n)
                .map(|(i, c)| {
                    if i + 1 == n {
                        c.clone()
                    } else {
                        let pad = width[i] - c.chars().count();
                        format!("{c}{}", " ".repeat(pad))
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect()
}

/// `2026-12-01 18:00 UTC`: a time in words, next to a platform's own date token.
pub fn utc_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(style: Style, state: Option<CardState>) -> Reply {
        let mut c = Card::new("Request r000000000: stop the app", style);
        c.state = state;
        Reply::card(c)
    }

    #[test]
    fn the_label_is_the_state_not_the_tone() {
        for (state, label) in [
            (CardState::Pending, "[pending]"),
            (CardState::Running, "[running]"),
            (CardState::Denied, "[denied]"),
            (CardState::Cancelled, "[cancelled]"),
            (CardState::Expired, "[expired]"),
            (CardState::Interrupted, "[interrupted]"),
        ] {
            let text = card(state.style(), Some(state)).to_text();
            assert!(text.starts_with(&format!("== {label} Request")), "{text}");
        }
    }

    #[test]
    fn replies_queued_before_card_states_still_render() {
        // An outbox payload written by an older version has no `state`.
        let old = r#"{"visibility":"InChannel","body":{"Card":{"title":"t","fields":[],"lines":[],"buttons":[],"style":"Success"}}}"#;
        let r: Reply = serde_json::from_str(old).unwrap();
        assert_eq!(r.to_text(), "== [ok] t ==");
        let new = card(Style::Pending, Some(CardState::Running));
        let back: Reply = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
    }
}
