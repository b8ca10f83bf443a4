//! Discord interactions in: slash commands, button clicks, autocomplete and PING, from the
//! gateway (`INTERACTION_CREATE`) or from the HTTP endpoint (`POST /discord/interactions`),
//! turned into the same [`Incoming`] and the same [`InboundEvent`]s.
//!
//! - a command becomes [`EventKind::Invoke`] (the subcommand and its option values) and is
//!   acked with a deferred ephemeral response (type 5, flag 64);
//! - a click becomes [`EventKind::Action`] (the button's `custom_id`) and is acked with a
//!   deferred update (type 6): the card itself is edited through the outbox, the clicker's
//!   answer (a refusal, "vote recorded") is an ephemeral follow-up;
//! - autocomplete is answered by [`register::autocomplete`];
//! - the delivery id is the interaction id, so a redelivered interaction acts once.
//!
//! The HTTP endpoint checks Discord's Ed25519 signature over `timestamp ‖ body` (serenity's
//! [`Verifier`]) and a 5-minute timestamp window of its own (serenity has none), against the
//! core's clock, before it reads the payload; the ack is the HTTP response, sent without any
//! store I/O (the dedupe insert and the dispatch run in [`Inbound::submit`]'s task).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{json, Value};
use serenity::interactions_endpoint::Verifier;

use super::register;
use super::DiscordAdapter;
use crate::adapters::Inbound;
use crate::core::event::{Actor, ChannelRef, EventKind, InboundEvent, Platform};

/// The largest request body the endpoint reads (interactions are a few KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// How far a request's timestamp may be from now, either way.
pub const MAX_SKEW_SECS: i64 = 300;
/// The `flags` bit of an ephemeral message.
pub const EPHEMERAL: u64 = 1 << 6;

/// The answer to a PING.
pub fn pong() -> Value {
    json!({"type": 1})
}

/// The ack of a slash command: a deferred response only the sender sees ("dualkey is
/// thinking…"), edited later with the answer.
pub fn deferred_command() -> Value {
    json!({"type": 5, "data": {"flags": EPHEMERAL}})
}

/// The ack of a button click: a deferred update of the message clicked (the card is edited
/// through the outbox; answers to the clicker are ephemeral follow-ups).
pub fn deferred_update() -> Value {
    json!({"type": 6})
}

/// An immediate ephemeral answer (type 4).
pub fn ephemeral_answer(text: &str) -> Value {
    json!({"type": 4, "data": {"content": text, "flags": EPHEMERAL}})
}

/// How dualkey answers an interaction after its ack, kept in the event's `reply_to` (opaque
/// to the core, redacted from its `Debug`): `c` (command: the first answer edits the deferred
/// response) or `k` (click: every answer is a follow-up), the application id, the token.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplyHandle {
    /// A slash command, whose deferred response waits to be edited.
    pub command: bool,
    /// The application id (from the interaction).
    pub application_id: String,
    /// The interaction token (valid 15 minutes).
    pub token: String,
}

impl std::fmt::Debug for ReplyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyHandle")
            .field("command", &self.command)
            .field("application_id", &self.application_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl ReplyHandle {
    /// The `reply_to` text.
    pub fn encode(&self) -> String {
        format!(
            "{}:{}:{}",
            if self.command { "c" } else { "k" },
            self.application_id,
            self.token
        )
    }

    /// Reads a `reply_to` text back.
    pub fn decode(s: &str) -> Option<ReplyHandle> {
        let mut parts = s.splitn(3, ':');
        let command = match parts.next()? {
            "c" => true,
            "k" => false,
            _ => return None,
        };
        let application_id = parts.next()?.to_string();
        let token = parts.next()?.to_string();
        (!application_id.is_empty() && !token.is_empty()).then_some(ReplyHandle {
            command,
            application_id,
            token,
        })
    }
}

/// An interaction, read. Its `Debug` leaves out tokens (they let anyone answer as the bot for
/// 15 minutes).
pub enum Incoming {
    /// PING (HTTP endpoint only): answered with PONG.
    Ping,
    /// A command or a click for the dispatcher, with the ack it gets.
    Event {
        /// The event (delivery id = interaction id).
        event: InboundEvent,
        /// The initial response.
        ack: Value,
        /// The server it came from (`None` in a DM).
        guild: Option<String>,
    },
    /// APPLICATION_COMMAND_AUTOCOMPLETE: `data` goes to [`register::autocomplete`].
    Autocomplete {
        /// The interaction id.
        id: String,
        /// The interaction token (for the gateway's callback).
        token: String,
        /// The interaction's `data`.
        data: Value,
        /// Who is typing (`member.user.id`, or `user.id` in a DM), if the payload says.
        account: Option<String>,
        /// The server it came from (`None` in a DM).
        guild: Option<String>,
    },
    /// Anything else (a modal submit, a select menu): acked with an ephemeral note.
    Unsupported {
        /// The interaction id.
        id: String,
        /// The interaction token.
        token: String,
        /// The interaction type.
        kind: u64,
    },
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Incoming::Ping => f.write_str("Ping"),
            Incoming::Event { event, guild, .. } => f
                .debug_struct("Event")
                .field("event", event)
                .field("guild", guild)
                .finish_non_exhaustive(),
            Incoming::Autocomplete {
                id, account, guild, ..
            } => f
                .debug_struct("Autocomplete")
                .field("id", id)
                .field("account", account)
                .field("guild", guild)
                .field("token", &"<redacted>")
                .finish_non_exhaustive(),
            Incoming::Unsupported { id, kind, .. } => f
                .debug_struct("Unsupported")
                .field("id", id)
                .field("kind", kind)
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

impl Incoming {
    /// The server the interaction came from (`None` in a DM, and for PING).
    pub fn guild(&self) -> Option<&str> {
        match self {
            Incoming::Event { guild, .. } | Incoming::Autocomplete { guild, .. } => {
                guild.as_deref()
            }
            Incoming::Ping | Incoming::Unsupported { .. } => None,
        }
    }

    /// The interaction id and token (not for PING).
    pub fn id_and_token(&self) -> Option<(String, String)> {
        match self {
            Incoming::Ping => None,
            Incoming::Event { event, .. } => {
                let handle = ReplyHandle::decode(event.reply_to.as_deref()?)?;
                Some((event.delivery_id.clone(), handle.token))
            }
            Incoming::Autocomplete { id, token, .. } | Incoming::Unsupported { id, token, .. } => {
                Some((id.clone(), token.clone()))
            }
        }
    }
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

/// An option value as text: strings as they are, integers and numbers in decimal, booleans as
/// `true`/`false` (ids of users, channels and roles are strings on the wire).
fn option_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The subcommand (`rollback`; a group and its subcommand as `group sub`) and its options as
/// name/value pairs, from a command's `data`.
pub fn command_and_options(data: &Value) -> (String, Vec<(String, String)>) {
    let mut names: Vec<String> = Vec::new();
    let mut opts: &[Value] = data
        .get("options")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    // 1 = SUB_COMMAND, 2 = SUB_COMMAND_GROUP.
    while let Some(first) = opts.first() {
        let kind = first.get("type").and_then(Value::as_u64).unwrap_or(0);
        if kind != 1 && kind != 2 {
            break;
        }
        names.push(text(first, &["name"]).unwrap_or_default().to_string());
        opts = first
            .get("options")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
    }
    let options = opts
        .iter()
        .filter_map(|o| {
            let name = text(o, &["name"])?.to_string();
            Some((name, option_value(o.get("value").unwrap_or(&Value::Null))))
        })
        .collect();
    (names.join(" "), options)
}

/// An interaction as serenity read it from the gateway, back in Discord's JSON (serenity
/// serialises each variant without its `type`, which is put back here).
pub fn to_wire(interaction: &serenity::model::application::Interaction) -> Result<Value, String> {
    use serenity::model::application::Interaction as I;
    let kind = match interaction {
        I::Ping(_) => 1,
        I::Command(_) => 2,
        I::Component(_) => 3,
        I::Autocomplete(_) => 4,
        I::Modal(_) => 5,
        _ => 0,
    };
    let mut v = serde_json::to_value(interaction).map_err(|e| e.to_string())?;
    if let Value::Object(m) = &mut v {
        m.insert("type".into(), kind.into());
    }
    Ok(v)
}

/// Reads an interaction payload (the HTTP body, or the gateway event's `d`). `Err` says what is
/// missing.
pub fn parse(v: &Value) -> Result<Incoming, String> {
    let kind = v
        .get("type")
        .and_then(Value::as_u64)
        .ok_or("no interaction type")?;
    if kind == 1 {
        return Ok(Incoming::Ping);
    }
    let id = text(v, &["id"]).ok_or("no interaction id")?.to_string();
    let token = text(v, &["token"])
        .ok_or("no interaction token")?
        .to_string();
    let data = v.get("data").cloned().unwrap_or(Value::Null);
    let guild = text(v, &["guild_id"]).map(str::to_string);
    // In a server the user is `member.user`; in a DM, `user`.
    let user = v
        .get("member")
        .and_then(|m| m.get("user"))
        .or_else(|| v.get("user"));
    match kind {
        2 | 3 => command_or_click(v, kind, id, token, &data, guild, user),
        4 => Ok(Incoming::Autocomplete {
            id,
            token,
            data,
            account: user.and_then(|u| text(u, &["id"])).map(str::to_string),
            guild,
        }),
        other => Ok(Incoming::Unsupported {
            id,
            token,
            kind: other,
        }),
    }
}

/// A slash command (`kind` 2) or a button click (`kind` 3) read by [`parse`]: the event with
/// its actor, channel and reply handle, and the deferred ack to send.
fn command_or_click(
    v: &Value,
    kind: u64,
    id: String,
    token: String,
    data: &Value,
    guild: Option<String>,
    user: Option<&Value>,
) -> Result<Incoming, String> {
    let app = text(v, &["application_id"])
        .ok_or("no application id")?
        .to_string();
    let user = user.ok_or("no user")?;
    let account = text(user, &["id"]).ok_or("no user id")?.to_string();
    let display = text(v, &["member", "nick"])
        .or_else(|| text(user, &["global_name"]))
        .or_else(|| text(user, &["username"]))
        .unwrap_or(&account)
        .to_string();
    let channel = text(v, &["channel_id"])
        .or_else(|| text(v, &["channel", "id"]))
        .ok_or("no channel id")?
        .to_string();
    let (event_kind, ack, command) = if kind == 2 {
        let (command, options) = command_and_options(data);
        (
            EventKind::Invoke { command, options },
            deferred_command(),
            true,
        )
    } else {
        let custom_id = text(data, &["custom_id"])
            .ok_or("no custom_id")?
            .to_string();
        (
            EventKind::Action {
                action_id: custom_id,
            },
            deferred_update(),
            false,
        )
    };
    let mut event = InboundEvent::new(
        id,
        Actor {
            platform: Platform::Discord,
            account,
            display,
        },
        ChannelRef {
            platform: Platform::Discord,
            id: channel,
        },
        event_kind,
    );
    event.reply_to = Some(
        ReplyHandle {
            command,
            application_id: app,
            token,
        }
        .encode(),
    );
    Ok(Incoming::Event { event, ack, guild })
}

/// An autocomplete answer with no suggestions.
pub fn no_choices() -> Value {
    json!({"type": 8, "data": {"choices": []}})
}

/// What an interaction from a server other than `discord.guild_id` is told.
pub const FOREIGN_GUILD: &str =
    "dualkey is not set up for this server; ask its admins to use the server in discord.guild_id.";

/// The answer to an interaction from outside `discord.guild_id`: nothing is submitted.
pub fn foreign_answer(incoming: &Incoming) -> Value {
    match incoming {
        Incoming::Autocomplete { .. } => no_choices(),
        _ => ephemeral_answer(FOREIGN_GUILD),
    }
}

/// What an unsupported interaction is told.
pub const UNSUPPORTED: &str = "dualkey does not handle this kind of interaction; use `/db`.";

/// The initial response to `incoming` and, for commands and clicks, the event to submit after
/// it. Autocomplete is answered here (a store read, as Discord asks within 3 s).
pub async fn respond_to(inbound: &Inbound, incoming: Incoming) -> (Value, Option<InboundEvent>) {
    match incoming {
        Incoming::Ping => (pong(), None),
        Incoming::Event { event, ack, .. } => (ack, Some(event)),
        Incoming::Autocomplete { data, account, .. } => {
            // Suggestions name migrations, backups and requests: only for someone who may run
            // the command they are typing.
            let core = inbound.core();
            let allowed = account.is_some_and(|account| {
                let who = core.directory.resolve(&Actor {
                    platform: Platform::Discord,
                    account,
                    display: String::new(),
                });
                let sub = data["options"][0]["name"].as_str().unwrap_or_default();
                crate::core::command::REGISTRY
                    .iter()
                    .find(|s| s.name == sub)
                    .is_some_and(|s| !who.roles.is_empty() && who.can(s.role))
            });
            if allowed {
                (register::autocomplete(core, &data).await, None)
            } else {
                (no_choices(), None)
            }
        }
        Incoming::Unsupported { kind, .. } => {
            tracing::info!(kind, "discord: interaction type not handled");
            (ephemeral_answer(UNSUPPORTED), None)
        }
    }
}

// ----- signatures -----

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Signature-Timestamp is missing or not a number")]
    BadTimestamp,
    #[error("the request timestamp is more than 5 minutes from now")]
    Stale,
    #[error("X-Signature-Ed25519 is missing or malformed")]
    BadSignature,
    #[error("the signature does not match")]
    Mismatch,
}

/// Parses `discord.public_key` (64 hex digits) into a verifier.
pub fn verifier(public_key_hex: &str) -> anyhow::Result<Verifier> {
    let bytes = hex::decode(public_key_hex.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            anyhow::anyhow!("discord.public_key must be the application's 64-hex-digit public key")
        })?;
    Verifier::try_new(bytes)
        .map_err(|_| anyhow::anyhow!("discord.public_key is not a valid Ed25519 public key"))
}

/// The Ed25519 check alone: `signature` (hex) over `timestamp ‖ body`.
pub fn check_signature(
    verifier: &Verifier,
    signature: &str,
    timestamp: &str,
    body: &[u8],
) -> Result<(), SignatureError> {
    if signature.len() != 128 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SignatureError::BadSignature);
    }
    verifier
        .verify(signature, timestamp, body)
        .map_err(|_| SignatureError::Mismatch)
}

/// Checks a request: the timestamp (Unix seconds) within [`MAX_SKEW_SECS`] of `now_secs`
/// either way, then the signature.
pub fn verify_request(
    verifier: &Verifier,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SignatureError> {
    let ts_text = timestamp.ok_or(SignatureError::BadTimestamp)?;
    let ts: i64 = ts_text
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if now_secs.abs_diff(ts) > MAX_SKEW_SECS as u64 {
        return Err(SignatureError::Stale);
    }
    check_signature(
        verifier,
        signature.ok_or(SignatureError::BadSignature)?,
        ts_text,
        body,
    )
}

// ----- HTTP mode -----

struct HttpState {
    inbound: Inbound,
    adapter: Arc<DiscordAdapter>,
    verifier: Verifier,
}

/// The HTTP-mode route: `POST /discord/interactions`.
pub fn routes(inbound: Inbound, adapter: Arc<DiscordAdapter>, verifier: Verifier) -> axum::Router {
    let state = Arc::new(HttpState {
        inbound,
        adapter,
        verifier,
    });
    axum::Router::new()
        .route("/discord/interactions", post(http_interaction))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn http_interaction(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let began = std::time::Instant::now();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now_secs = st.inbound.core().clock.now_ms().div_euclid(1000);
    if let Err(e) = verify_request(
        &st.verifier,
        header("x-signature-timestamp"),
        header("x-signature-ed25519"),
        &body,
        now_secs,
    ) {
        crate::adapters::count_signature_failure(Platform::Discord);
        tracing::warn!(reason = %e, "discord: request refused (signature)");
        return (StatusCode::UNAUTHORIZED, "invalid request signature").into_response();
    }
    let incoming = match serde_json::from_slice::<Value>(&body)
        .map_err(|e| e.to_string())
        .and_then(|v| parse(&v))
    {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "discord: signed request with an unreadable interaction");
            return (StatusCode::BAD_REQUEST, "unreadable interaction").into_response();
        }
    };
    if !st.adapter.serves_guild(incoming.guild()) && !matches!(incoming, Incoming::Ping) {
        tracing::warn!(guild = ?incoming.guild(), "discord: interaction from outside discord.guild_id refused");
        return axum::Json(foreign_answer(&incoming)).into_response();
    }
    if let Incoming::Event { event, ack, .. } = &incoming {
        if let Err(request) = st.inbound.first_sight(event) {
            // Delivered before: the store's dedupe would ignore it too. A click gets the same
            // ack again; a command is told it was received already, not a "thinking" ack
            // whose answer never comes.
            tracing::info!(interaction = %event.delivery_id, "discord: interaction seen before; acked again, not handled");
            if matches!(event.kind, EventKind::Action { .. }) {
                return axum::Json(ack.clone()).into_response();
            }
            let note = crate::core::dispatch::already_received(None, request.as_deref());
            return axum::Json(ephemeral_answer(&note)).into_response();
        }
    }
    let (ack, event) = respond_to(&st.inbound, incoming).await;
    if let Some(event) = event {
        st.adapter.note_acked(&event);
        drop(st.inbound.submit(event));
    }
    let ack = axum::Json(ack).into_response();
    crate::core::meter::ack("discord", "http", began);
    ack
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 section 7.1, TEST 1.
    const PK: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const SIG: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

    #[test]
    fn the_rfc_8032_test_1_vector_verifies_as_an_empty_timestamp_and_body() {
        let v = verifier(PK).unwrap();
        assert_eq!(check_signature(&v, SIG, "", b""), Ok(()));
        assert_eq!(
            check_signature(&v, &SIG.to_uppercase(), "", b""),
            Ok(()),
            "hex case does not matter"
        );
        assert_eq!(
            check_signature(&v, SIG, "", b"x"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check_signature(&v, SIG, "1", b""),
            Err(SignatureError::Mismatch)
        );
        let mut bad = SIG.to_string();
        bad.replace_range(0..1, "f");
        assert_eq!(
            check_signature(&v, &bad, "", b""),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check_signature(&v, &SIG[..126], "", b""),
            Err(SignatureError::BadSignature)
        );
        assert!(verifier("zz").is_err());
        assert!(verifier(&PK[..62]).is_err());
    }

    #[test]
    fn the_timestamp_window_is_five_minutes_either_way() {
        let v = verifier(PK).unwrap();
        // The vector's "timestamp" is empty, so any window check fails before the signature.
        assert_eq!(
            verify_request(&v, Some(""), Some(SIG), b"", 0),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify_request(&v, None, Some(SIG), b"", 0),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify_request(&v, Some("1000"), Some(SIG), b"", 1301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_request(&v, Some("1000"), Some(SIG), b"", 699),
            Err(SignatureError::Stale)
        );
        // Within the window the signature decides (it does not cover "1000").
        assert_eq!(
            verify_request(&v, Some("1000"), Some(SIG), b"", 1300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_request(&v, Some("1000"), None, b"", 1000),
            Err(SignatureError::BadSignature)
        );
    }

    fn command_payload() -> Value {
        json!({
            "id": "900000000000000001", "application_id": "100000000000000000", "type": 2,
            "token": "itok-1", "version": 1, "channel_id": "200000000000000009",
            "guild_id": "400000000000000000",
            "member": {"user": {"id": "300000000000000001", "username": "alice", "global_name": "Alice"}, "nick": "al"},
            "data": {"id": "1", "name": "db", "type": 1, "options": [
                {"name": "rollback", "type": 1, "options": [
                    {"name": "migration", "type": 3, "value": "20240101_x"},
                    {"name": "env", "type": 3, "value": "production"},
                    {"name": "keep", "type": 4, "value": 3},
                    {"name": "force", "type": 5, "value": false}
                ]}
            ]}
        })
    }

    #[test]
    fn a_command_becomes_an_invoke_with_its_subcommand_and_options_and_is_deferred() {
        let Incoming::Event { event, ack, .. } = parse(&command_payload()).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(event.delivery_id, "900000000000000001");
        assert_eq!(event.actor.platform, Platform::Discord);
        assert_eq!(event.actor.account, "300000000000000001");
        assert_eq!(event.actor.display, "al");
        assert_eq!(event.channel.id, "200000000000000009");
        assert_eq!(
            event.kind,
            EventKind::Invoke {
                command: "rollback".into(),
                options: vec![
                    ("migration".into(), "20240101_x".into()),
                    ("env".into(), "production".into()),
                    ("keep".into(), "3".into()),
                    ("force".into(), "false".into()),
                ]
            }
        );
        assert_eq!(ack, json!({"type": 5, "data": {"flags": 64}}));
        let h = ReplyHandle::decode(event.reply_to.as_deref().unwrap()).unwrap();
        assert!(h.command);
        assert_eq!(h.application_id, "100000000000000000");
        assert_eq!(h.token, "itok-1");
        assert!(!format!("{h:?}").contains("itok-1"));
        assert!(!format!("{event:?}").contains("itok-1"));
    }

    #[test]
    fn a_click_in_a_dm_becomes_an_action_acked_as_a_deferred_update() {
        let v = json!({
            "id": "900000000000000002", "application_id": "100000000000000000", "type": 3,
            "token": "itok:2", "version": 1, "channel": {"id": "500000000000000000", "type": 1},
            "user": {"id": "300000000000000002", "username": "bob"},
            "data": {"custom_id": "approve:abc", "component_type": 2}
        });
        let Incoming::Event { event, ack, .. } = parse(&v).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(event.actor.account, "300000000000000002");
        assert_eq!(event.actor.display, "bob");
        assert_eq!(event.channel.id, "500000000000000000");
        assert_eq!(
            event.kind,
            EventKind::Action {
                action_id: "approve:abc".into()
            }
        );
        assert_eq!(ack, json!({"type": 6}));
        let h = ReplyHandle::decode(event.reply_to.as_deref().unwrap()).unwrap();
        assert!(!h.command);
        assert_eq!(h.token, "itok:2", "a token with ':' survives");
    }

    #[test]
    fn ping_autocomplete_other_types_and_broken_payloads() {
        assert!(matches!(
            parse(
                &json!({"type": 1, "id": "1", "token": "t", "application_id": "2", "version": 1})
            ),
            Ok(Incoming::Ping)
        ));
        let ac =
            parse(&json!({"type": 4, "id": "1", "token": "t", "data": {"name": "db"}})).unwrap();
        assert!(matches!(ac, Incoming::Autocomplete { ref data, .. } if data["name"] == "db"));
        let other = parse(&json!({"type": 5, "id": "1", "token": "t"})).unwrap();
        assert!(matches!(other, Incoming::Unsupported { kind: 5, .. }));
        assert!(parse(&json!({"id": "1"})).is_err());
        let mut no_user = command_payload();
        no_user.as_object_mut().unwrap().remove("member");
        assert!(parse(&no_user).is_err());
        let mut no_channel = command_payload();
        no_channel.as_object_mut().unwrap().remove("channel_id");
        assert!(parse(&no_channel).is_err());
        // `/db` alone: no subcommand.
        let (c, o) = command_and_options(&json!({"name": "db"}));
        assert_eq!((c.as_str(), o.len()), ("", 0));
    }

    #[test]
    fn serenitys_gateway_interaction_serialises_back_into_what_parse_reads() {
        let mut wire = command_payload();
        let o = wire.as_object_mut().unwrap();
        o.insert("attachment_size_limit".into(), json!(8388608));
        o.insert("entitlements".into(), json!([]));
        o.insert("locale".into(), json!("en-US"));
        o.insert("app_permissions".into(), json!("0"));
        let member = o.get_mut("member").unwrap().as_object_mut().unwrap();
        for (k, v) in [
            ("roles", json!([])),
            ("joined_at", json!("2024-01-01T00:00:00+00:00")),
            ("deaf", json!(false)),
            ("mute", json!(false)),
            ("flags", json!(0)),
            ("permissions", json!("0")),
        ] {
            member.insert(k.into(), v);
        }
        let typed: serenity::model::application::Interaction =
            serde_json::from_value(wire.clone()).expect("serenity reads it");
        let back = to_wire(&typed).unwrap();
        let (Incoming::Event { event: a, .. }, Incoming::Event { event: b, .. }) =
            (parse(&wire).unwrap(), parse(&back).unwrap())
        else {
            panic!("not events")
        };
        assert_eq!(a, b);
    }
}
