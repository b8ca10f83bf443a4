//! Neutral inbound events: what an adapter hands to the dispatcher after it has verified and
//! acknowledged a platform payload.

use serde::{Deserialize, Serialize};

/// A chat platform (or the local shell).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Slack.
    Slack,
    /// Discord.
    Discord,
    /// The local terminal adapter.
    Shell,
}

impl Platform {
    /// Lowercase name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Slack => "slack",
            Platform::Discord => "discord",
            Platform::Shell => "shell",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Platform> {
        match s {
            "slack" => Some(Platform::Slack),
            "discord" => Some(Platform::Discord),
            "shell" => Some(Platform::Shell),
            _ => None,
        }
    }
}

/// Who sent an event, as the platform knows them. Access control uses `platform` + `account`
/// only (resolved to an operator); `display` is for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The platform the account lives on.
    pub platform: Platform,
    /// The platform's stable user id (Slack `U…`, Discord snowflake, shell operator name).
    pub account: String,
    /// A display name, never used for decisions.
    pub display: String,
}

impl Actor {
    /// `platform:account`, as written in the audit trail.
    pub fn qualified(&self) -> String {
        format!("{}:{}", self.platform.as_str(), self.account)
    }
}

/// A channel on a platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChannelRef {
    /// The platform.
    pub platform: Platform,
    /// The platform's channel id.
    pub id: String,
}

/// A message the bot posted, so it can be edited later (progress, votes, outcome).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    /// Where the message is.
    pub channel: ChannelRef,
    /// The platform's message id (Slack `ts`, Discord message id, shell sequence).
    pub id: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A slash command; `text` is everything after the command name (`"rollback X production"`).
    Command { text: String },
    /// A slash command with structured arguments (Discord subcommands and typed options):
    /// `command` is the subcommand name (`rollback`), `options` the named option values as the
    /// platform sent them (`[("migration", "20240101_x"), ("env", "production")]`). Parsed by
    /// the command's own option parser, never joined into a text line.
    Invoke {
        /// Subcommand name.
        command: String,
        /// Option name and value, in the order given.
        options: Vec<(String, String)>,
    },
    /// A button click; `action_id` is the button id (`approve:<request-id>`).
    Action { action_id: String },
}

/// A verified, acknowledged event from an adapter. Its `Debug` leaves out the response handle
/// (a Slack `response_url` lets anyone holding it post as the bot for 30 minutes).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundEvent {
    /// Platform delivery id (Slack `trigger_id`, Discord interaction id, Socket Mode envelope
    /// id): the same delivery handled twice acts once.
    pub delivery_id: String,
    /// Who sent it.
    pub actor: Actor,
    /// Where it was sent.
    pub channel: ChannelRef,
    /// The command or click.
    pub kind: EventKind,
    /// The platform's handle for answering this very event, opaque to the core (Slack's
    /// `response_url`); `None` where replies go through the channel.
    #[serde(default)]
    pub reply_to: Option<String>,
}

impl std::fmt::Debug for InboundEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundEvent")
            .field("delivery_id", &self.delivery_id)
            .field("actor", &self.actor)
            .field("channel", &self.channel)
            .field("kind", &self.kind)
            .field(
                "reply_to",
                &self
                    .reply_to
                    .as_ref()
                    .map(|_| "<response handle, redacted>"),
            )
            .finish()
    }
}

impl InboundEvent {
    /// An event with no response handle.
    pub fn new(delivery_id: String, actor: Actor, channel: ChannelRef, kind: EventKind) -> Self {
        InboundEvent {
            delivery_id,
            actor,
            channel,
            kind,
            reply_to: None,
        }
    }
}

/// The last [`RecentDeliveries::LIMIT`] delivery keys (`platform:delivery_id`) this process
/// accepted, oldest first, with the request each created.
#[derive(Default)]
pub struct RecentDeliveries {
    requests: std::collections::HashMap<String, Option<String>>,
    order: std::collections::VecDeque<String>,
}

impl RecentDeliveries {
    /// How many deliveries are remembered.
    pub const LIMIT: usize = 4096;

    /// Records `key`; `Err` with the request it created (if any yet) when it was seen before.
    pub fn first_sight(&mut self, key: &str) -> Result<(), Option<String>> {
        if let Some(request) = self.requests.get(key) {
            return Err(request.clone());
        }
        self.requests.insert(key.to_string(), None);
        self.order.push_back(key.to_string());
        while self.order.len() > Self::LIMIT {
            if let Some(old) = self.order.pop_front() {
                self.requests.remove(&old);
            }
        }
        Ok(())
    }

    /// Forgets `key` (its delivery was not recorded, so a retry must run).
    pub fn forget(&mut self, key: &str) {
        if self.requests.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }

    /// Notes that delivery `key` created request `id`.
    pub fn set_request(&mut self, key: &str, id: &str) {
        if let Some(slot) = self.requests.get_mut(key) {
            *slot = Some(id.to_string());
        } else if self.first_sight(key).is_ok() {
            self.requests.insert(key.to_string(), Some(id.to_string()));
        }
    }

    /// The request delivery `key` created, when this process saw it create one.
    pub fn request(&self, key: &str) -> Option<String> {
        self.requests.get(key).cloned().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_out_the_response_handle() {
        let mut ev = InboundEvent::new(
            "t1".into(),
            Actor {
                platform: Platform::Slack,
                account: "U1".into(),
                display: "u".into(),
            },
            ChannelRef {
                platform: Platform::Slack,
                id: "C1".into(),
            },
            EventKind::Command {
                text: "help".into(),
            },
        );
        ev.reply_to = Some("https://hooks.slack.com/commands/T1/123/SECRETPART".into());
        let shown = format!("{ev:?}");
        assert!(!shown.contains("SECRETPART"), "{shown}");
        assert!(
            shown.contains("redacted") && shown.contains("t1"),
            "{shown}"
        );
    }

    #[test]
    fn a_delivery_seen_again_is_told_apart_with_its_request_and_old_ones_are_forgotten() {
        let mut r = RecentDeliveries::default();
        assert_eq!(r.first_sight("slack:cmd:1"), Ok(()));
        assert_eq!(
            r.first_sight("slack:cmd:1"),
            Err(None),
            "seen, no request yet"
        );
        r.set_request("slack:cmd:1", "r123");
        assert_eq!(r.first_sight("slack:cmd:1"), Err(Some("r123".into())));
        r.set_request("discord:9", "r9");
        assert_eq!(r.request("discord:9").as_deref(), Some("r9"));
        r.forget("slack:cmd:1");
        assert_eq!(
            r.first_sight("slack:cmd:1"),
            Ok(()),
            "a forgotten delivery runs again"
        );
        for i in 0..RecentDeliveries::LIMIT {
            let _ = r.first_sight(&format!("k{i}"));
        }
        assert_eq!(r.request("discord:9"), None, "the oldest went");
        assert_eq!(r.requests.len(), RecentDeliveries::LIMIT);
    }
}
