//! Slack payloads in: slash commands and `block_actions` clicks become [`InboundEvent`]s,
//! handed to [`Inbound::submit`] (the dedupe insert, then the dispatcher in its own task), and
//! the ack is returned right after, never waiting for the work.
//!
//! HTTP mode ([`routes`]): `POST /slack/commands` and `POST /slack/interactions`, each request
//! checked with Slack's signing secret over the raw body ([`verify_signature`]) before anything
//! is stored. Socket Mode uses [`accept_command`] and [`accept_interaction`] from its callbacks.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use slack_morphism::prelude::*;

use crate::adapters::Inbound;
use crate::core::dispatch::already_received;
use crate::core::event::{Actor, ChannelRef, EventKind, InboundEvent, Platform};

/// The largest request body the HTTP endpoints read (Slack's payloads are a few KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// How far a request's timestamp may be from now, either way (Slack's replay window).
pub const MAX_SKEW_SECS: i64 = 300;

/// The event of a slash command: delivery `cmd:<trigger_id>`, answered through its
/// `response_url`.
pub fn command_event(ev: &SlackCommandEvent) -> InboundEvent {
    let user = ev.user_id.value().to_string();
    let mut out = InboundEvent::new(
        format!("cmd:{}", ev.trigger_id.value()),
        Actor {
            platform: Platform::Slack,
            account: user.clone(),
            display: user,
        },
        ChannelRef {
            platform: Platform::Slack,
            id: ev.channel_id.value().to_string(),
        },
        EventKind::Command {
            text: ev.text.clone().unwrap_or_default().trim().to_string(),
        },
    );
    out.reply_to = Some(ev.response_url.value().to_string());
    out
}

/// The event of a `block_actions` click on a button (the first action): delivery
/// `click:<action_ts>:<user>`, the same on a redelivery. `None` for other interactions and for
/// clicks that lack a user, an action or a channel.
pub fn interaction_event(ev: &SlackInteractionEvent) -> Option<InboundEvent> {
    let SlackInteractionEvent::BlockActions(ba) = ev else {
        return None;
    };
    let user = ba.user.as_ref()?.id.value().to_string();
    let action = ba.actions.as_ref()?.first()?;
    let channel = match &ba.container {
        SlackInteractionActionContainer::Message(m) => m.channel_id.clone(),
        SlackInteractionActionContainer::MessageAttachment(m) => m.channel_id.clone(),
        SlackInteractionActionContainer::View(_) => None,
    }
    .or_else(|| ba.channel.as_ref().map(|c| c.id.clone()))?;
    let stamp = action
        .action_ts
        .as_ref()
        .map(|t| t.value().to_string())
        .unwrap_or_else(|| ba.trigger_id.value().to_string());
    let mut out = InboundEvent::new(
        format!("click:{stamp}:{user}"),
        Actor {
            platform: Platform::Slack,
            account: user.clone(),
            display: user,
        },
        ChannelRef {
            platform: Platform::Slack,
            id: channel.value().to_string(),
        },
        EventKind::Action {
            action_id: action.action_id.value().to_string(),
        },
    );
    out.reply_to = ba.response_url.as_ref().map(|u| u.value().to_string());
    Some(out)
}

/// The "on it" line a command is acked with.
pub fn on_it(command: &str, text: &str) -> String {
    let text = text.trim();
    let shown = if text.is_empty() {
        command.to_string()
    } else {
        format!("{command} {text}")
    };
    format!("On it: `{}`", shown.replace('`', "'"))
}

/// The refusal of a slash command that is not `configured` (`slack.command`): another
/// command routed to this app's URL runs nothing. `None` for the configured command.
pub fn foreign_command(configured: &str, command: &str) -> Option<String> {
    if command.trim() == configured {
        return None;
    }
    let shown: String = command.trim().chars().take(40).collect();
    Some(format!(
        "dualkey answers `{configured}` only (slack.command), not `{}`; nothing was done. Type `{configured} help` for what it does.",
        shown.replace('`', "'")
    ))
}

fn ephemeral_ack(text: String) -> SlackCommandEventResponse {
    SlackCommandEventResponse::new(SlackMessageContent::new().with_text(text))
        .with_response_type(SlackMessageResponseType::Ephemeral)
}

/// Starts a slash command's work and returns the ack, the "on it" line, without any I/O. A
/// repeated delivery this process accepted before is acked as "already received" (with its
/// request id) and acts no further; one only the store knows (another replica, a restart) is
/// acked as new and then told so through the response URL, as is a delivery the store cannot
/// record.
pub async fn accept_command(
    inbound: &Inbound,
    ev: &SlackCommandEvent,
) -> SlackCommandEventResponse {
    if let Some(refusal) = foreign_command(inbound.core().slash(), ev.command.value()) {
        tracing::warn!(
            command = ev.command.value(),
            "slack: a slash command other than slack.command refused"
        );
        return ephemeral_ack(refusal);
    }
    let event = command_event(ev);
    let text = match &event.kind {
        EventKind::Command { text } => text.clone(),
        EventKind::Action { .. } | EventKind::Invoke { .. } => String::new(),
    };
    if let Err(request) = inbound.first_sight(&event) {
        tracing::info!(delivery = %event.delivery_id, "slack: command delivered again; acked, not run");
        let shown = format!("{} {text}", ev.command.value());
        return ephemeral_ack(already_received(Some(&shown), request.as_deref()));
    }
    drop(inbound.submit(event));
    ephemeral_ack(on_it(ev.command.value(), &text))
}

/// Starts a click's work. Other interactions are acked and ignored (logged). A click the store
/// cannot record is answered through the response URL; nothing was done and the person may
/// click again.
pub async fn accept_interaction(inbound: &Inbound, ev: &SlackInteractionEvent) {
    let Some(event) = interaction_event(ev) else {
        tracing::info!(
            kind = interaction_kind(ev),
            "slack: interaction acked and ignored"
        );
        return;
    };
    drop(inbound.submit(event));
}

fn interaction_kind(ev: &SlackInteractionEvent) -> &'static str {
    match ev {
        SlackInteractionEvent::BlockActions(_) => "block_actions (not a button click)",
        SlackInteractionEvent::DialogSubmission(_) => "dialog_submission",
        SlackInteractionEvent::MessageAction(_) => "message_action",
        SlackInteractionEvent::Shortcut(_) => "shortcut",
        SlackInteractionEvent::ViewSubmission(_) => "view_submission",
        SlackInteractionEvent::ViewClosed(_) => "view_closed",
        SlackInteractionEvent::BlockSuggestion(_) => "block_suggestion",
    }
}

// ----- HTTP mode -----

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Slack-Request-Timestamp is missing or not a number")]
    BadTimestamp,
    #[error("the request timestamp is more than 5 minutes from now")]
    Stale,
    #[error("X-Slack-Signature is missing or malformed")]
    BadSignature,
    #[error("the signature does not match")]
    Mismatch,
}

/// Checks Slack's request signature: `v0=hex(HMAC-SHA256(secret, "v0:" + timestamp + ":" +
/// body))` over the raw body, compared in constant time, with the timestamp within 300 s of
/// `now_secs` either way.
pub fn verify_signature(
    secret: &[u8],
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
    let hex_sig = signature
        .and_then(|s| s.strip_prefix("v0="))
        .ok_or(SignatureError::BadSignature)?;
    let given = hex::decode(hex_sig).map_err(|_| SignatureError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(b"v0:");
    mac.update(ts_text.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

struct HttpState {
    inbound: Inbound,
    signing_secret: SecretString,
}

/// The HTTP-mode routes: `POST /slack/commands` and `POST /slack/interactions`.
pub fn routes(inbound: Inbound, signing_secret: SecretString) -> axum::Router {
    let state = Arc::new(HttpState {
        inbound,
        signing_secret,
    });
    axum::Router::new()
        .route("/slack/commands", post(http_command))
        .route("/slack/interactions", post(http_interaction))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether the request is signed by Slack; logs why not.
fn signed(st: &HttpState, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    verify_signature(
        st.signing_secret.expose_secret().as_bytes(),
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        body,
        now_secs(),
    )
    .map_err(|e| {
        crate::adapters::count_signature_failure(crate::core::event::Platform::Slack);
        tracing::warn!(reason = %e, "slack: request refused (signature)")
    })
    .is_ok()
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, "invalid signature").into_response()
}

fn bad_request(what: &str) -> Response {
    tracing::warn!("slack: signed request with an unreadable {what}");
    (StatusCode::BAD_REQUEST, format!("unreadable {what}")).into_response()
}

/// Why a request was refused before its payload was read.
enum Refused {
    /// Bad, missing or stale signature: 401.
    Signature,
    /// Not a form body: 400.
    Form,
}

impl Refused {
    fn response(self) -> Response {
        match self {
            Refused::Signature => unauthorized(),
            Refused::Form => bad_request("form body"),
        }
    }
}

/// The form fields of a request whose signature checks out.
fn signed_form(
    st: &HttpState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Vec<(String, String)>, Refused> {
    if !signed(st, headers, body) {
        return Err(Refused::Signature);
    }
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).map_err(|_| Refused::Form)
}

async fn http_command(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The payload is in (the server read the body before this route ran).
    let began = std::time::Instant::now();
    let fields = match signed_form(&st, &headers, &body) {
        Ok(f) => f,
        Err(refused) => return refused.response(),
    };
    let obj: serde_json::Map<String, serde_json::Value> = fields
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let Ok(ev) = serde_json::from_value::<SlackCommandEvent>(serde_json::Value::Object(obj)) else {
        return bad_request("slash command");
    };
    let ack = axum::Json(accept_command(&st.inbound, &ev).await).into_response();
    crate::core::meter::ack("slack", "http", began);
    ack
}

async fn http_interaction(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The payload is in (the server read the body before this route ran).
    let began = std::time::Instant::now();
    let fields = match signed_form(&st, &headers, &body) {
        Ok(f) => f,
        Err(refused) => return refused.response(),
    };
    let Some((_, payload)) = fields.iter().find(|(k, _)| k == "payload") else {
        return bad_request("interaction (no payload)");
    };
    let Ok(ev) = serde_json::from_str::<SlackInteractionEvent>(payload) else {
        return bad_request("interaction payload");
    };
    accept_interaction(&st.inbound, &ev).await;
    crate::core::meter::ack("slack", "http", began);
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn verify(
        ts: Option<&str>,
        sig: Option<&str>,
        body: &str,
        now: i64,
    ) -> Result<(), SignatureError> {
        verify_signature(SECRET.as_bytes(), ts, sig, body.as_bytes(), now)
    }

    #[test]
    fn the_documented_slack_vector_verifies() {
        assert_eq!(verify(Some(TS), Some(SIG), BODY, 1531420618), Ok(()));
        // Within the window both ways.
        assert_eq!(verify(Some(TS), Some(SIG), BODY, 1531420618 + 300), Ok(()));
        assert_eq!(verify(Some(TS), Some(SIG), BODY, 1531420618 - 300), Ok(()));
    }

    #[test]
    fn tampering_staleness_and_missing_headers_are_refused() {
        let now = 1531420618;
        let body2 = BODY.replace("text=", "text=x");
        assert_eq!(
            verify(Some(TS), Some(SIG), &body2, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some("1531420619"), Some(SIG), BODY, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(TS), Some(SIG), BODY, now + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(Some(TS), Some(SIG), BODY, now - 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(None, Some(SIG), BODY, now),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify(Some("soon"), Some(SIG), BODY, now),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify(Some(TS), None, BODY, now),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            verify(Some(TS), Some(&SIG[3..]), BODY, now),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            verify(Some(TS), Some("v0=zz"), BODY, now),
            Err(SignatureError::BadSignature)
        );
        let wrong = verify_signature(b"other", Some(TS), Some(SIG), BODY.as_bytes(), now);
        assert_eq!(wrong, Err(SignatureError::Mismatch));
    }

    #[test]
    fn a_slash_command_and_a_click_become_events() {
        let cmd: SlackCommandEvent = serde_json::from_value(serde_json::json!({
            "team_id": "T1", "channel_id": "C1", "user_id": "U1", "command": "/db",
            "text": " app stop ", "response_url": "https://hooks.slack.com/commands/T1/1/x",
            "trigger_id": "1.2.3"
        }))
        .unwrap();
        let ev = command_event(&cmd);
        assert_eq!(ev.delivery_id, "cmd:1.2.3");
        assert_eq!(ev.actor.account, "U1");
        assert_eq!(ev.channel.id, "C1");
        assert_eq!(
            ev.kind,
            EventKind::Command {
                text: "app stop".into()
            }
        );
        assert_eq!(
            ev.reply_to.as_deref(),
            Some("https://hooks.slack.com/commands/T1/1/x")
        );
        assert_eq!(on_it("/db", " app stop "), "On it: `/db app stop`");
        assert_eq!(foreign_command("/db", "/db"), None);
        let refusal = foreign_command("/db", "/evil").unwrap();
        assert!(refusal.contains("`/db` only") && refusal.contains("`/evil`"));
        assert!(
            foreign_command("/db", "/DB").is_some(),
            "Slack sends the registered case"
        );

        let click: SlackInteractionEvent = serde_json::from_value(serde_json::json!({
            "type": "block_actions",
            "team": {"id": "T1", "domain": "d"},
            "user": {"id": "U2", "team_id": "T1"},
            "api_app_id": "A1",
            "container": {"type": "message", "message_ts": "1.000100", "channel_id": "C9"},
            "trigger_id": "4.5.6",
            "response_url": "https://hooks.slack.com/actions/T1/2/y",
            "actions": [{"type": "button", "action_id": "approve:r1", "action_ts": "170.5"}]
        }))
        .unwrap();
        let ev = interaction_event(&click).unwrap();
        assert_eq!(ev.delivery_id, "click:170.5:U2");
        assert_eq!(ev.channel.id, "C9");
        assert_eq!(
            ev.kind,
            EventKind::Action {
                action_id: "approve:r1".into()
            }
        );
        assert_eq!(
            ev.reply_to.as_deref(),
            Some("https://hooks.slack.com/actions/T1/2/y")
        );
    }
}
