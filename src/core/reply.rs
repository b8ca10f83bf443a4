//! Neutral replies: plain text or a card with fields and buttons. Adapters render them natively
//! (Block Kit, Discord components) or as text ([`Reply::to_text`]) where they cannot.

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

/// A button; `id` is what comes back as the click's action id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    /// `approve:<request-id>`, `deny:<request-id>`, ...
    pub id: String,
    /// Label shown.
    pub label: String,
    /// Danger buttons are red where the platform can.
    pub danger: bool,
}

/// A structured message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    /// First line.
    pub title: String,
    /// Label/value rows.
    pub fields: Vec<(String, String)>,
    /// Free text under the fields (plans, warnings), one entry per line.
    pub lines: Vec<String>,
    /// Buttons.
    pub buttons: Vec<Button>,
    /// Tone.
    pub style: Style,
    /// The state shown as the label, for request and operation cards (absent in replies queued
    /// by older versions, which fall back to a label from the tone).
    #[serde(default)]
    pub state: Option<CardState>,
}

/// What the bot says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Plain text (may hold several lines).
    Text(String),
    /// A card.
    Card(Card),
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

    /// The text fallback used by the shell and by platforms that cannot render a card:
    /// buttons appear as `[BUTTON-ID]`.
    pub fn to_text(&self) -> String {
        match &self.body {
            Body::Text(t) => t.clone(),
            Body::Card(c) => {
                let mut out = String::new();
                let mark = match (c.state, c.style) {
                    (Some(s), _) => format!("[{}] ", s.label()),
                    (None, Style::Info) => String::new(),
                    (None, Style::Pending) => "[pending] ".into(),
                    (None, Style::Success) => "[ok] ".into(),
                    (None, Style::Warning) => "[warning] ".into(),
                    (None, Style::Danger) => "[failed] ".into(),
                };
                out.push_str(&format!("== {mark}{} ==", c.title));
                for (k, v) in &c.fields {
                    out.push_str(&format!("\n{k}: {v}"));
                }
                for l in &c.lines {
                    out.push('\n');
                    out.push_str(l);
                }
                if !c.buttons.is_empty() {
                    out.push('\n');
                    let b: Vec<String> = c.buttons.iter().map(|b| format!("[{}]", b.id)).collect();
                    out.push_str(&b.join(" "));
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(style: Style, state: Option<CardState>) -> Reply {
        Reply::card(Card {
            title: "Request r000000000: stop the app".into(),
            fields: vec![],
            lines: vec![],
            buttons: vec![],
            style,
            state,
        })
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
