//! A stand-in for Slack's servers on 127.0.0.1, speaking Slack's wire format, for the Slack
//! adapter's integration tests.
//!
//! One [`SlackStandin`] serves, on one port:
//! - the Web API under `/api/<method>` (JSON or form bodies, Slack's `{"ok":..}` envelopes,
//!   HTTP 200 for API errors, 429 + `Retry-After` for rate limits);
//! - `response_url` hooks under `/hooks/<name>` (answers `ok` as text/plain, as Slack does);
//! - the Socket Mode websocket at `/link/?ticket=N` (the URL `apps.connections.open` hands out):
//!   `hello` on connect, envelopes pushed by the test, acks recorded.
//!
//! The payload builders ([`slash_command_fields`], [`block_action`], ...) produce what Slack sends,
//! and [`sign`] / [`post_signed`] sign HTTP-mode requests the way Slack does.
//!
//! The tests at the bottom drive the stand-in with slack-morphism itself, the client the adapter
//! uses against the real Slack.

#![allow(dead_code)] // The stand-in's API is wider than what its own tests use.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use slack_morphism::prelude::{SlackClientHyperConnector, SlackClientHyperHttpsConnector};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Team, app and bot identity the stand-in uses in its payloads.
pub const TEAM_ID: &str = "T0STANDIN";
pub const TEAM_DOMAIN: &str = "standin";
pub const APP_ID: &str = "A0DUALKEY";
pub const BOT_ID: &str = "B0DUALKEY";
pub const BOT_USER_ID: &str = "U0DUALKEY";
/// The legacy verification token Slack still puts in slash-command and interaction payloads.
pub const VERIFICATION_TOKEN: &str = "standinVerificationToken0";

/// How long `send_*` waits for a Socket Mode client before giving up.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
const JSON_UTF8: &str = "application/json; charset=utf-8";

/// One Web API call as the stand-in received it.
#[derive(Clone, Debug)]
pub struct Call {
    /// The method name, e.g. `chat.postMessage`.
    pub method: String,
    /// The token: from `Authorization: Bearer <token>`, else from a `token` body field.
    pub auth: Option<String>,
    /// The arguments as JSON (a form body becomes an object of strings; its `blocks` and
    /// `attachments` fields are decoded from their JSON text, as Slack does).
    pub body: Value,
    /// The request's `Content-Type`.
    pub content_type: Option<String>,
    /// The programmed failure this call was answered with; `None` when it was served normally.
    pub failure: Option<Failure>,
    pub at: Instant,
}

/// One POST to a `response_url`.
#[derive(Clone, Debug)]
pub struct ResponseUrlCall {
    /// The part of the path after `/hooks/`.
    pub name: String,
    pub body: Value,
    pub content_type: Option<String>,
    pub failure: Option<Failure>,
    pub at: Instant,
}

/// One frame a Socket Mode client sent back with an `envelope_id`.
#[derive(Clone, Debug)]
pub struct Ack {
    pub envelope_id: String,
    /// The whole frame, e.g. `{"envelope_id":..,"payload":{..}}`.
    pub frame: Value,
    pub at: Instant,
}

/// A failure to answer the next call(s) of a method with, see [`SlackStandin::fail_next`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// HTTP 429, `Retry-After: <secs>`, body `{"ok":false,"error":"ratelimited"}`.
    RateLimited { retry_after_secs: u64 },
    /// HTTP 500 with `{"ok":false,"error":"fatal_error"}`.
    ServerError,
    /// HTTP 503 with a text body, as a load balancer in front of Slack answers.
    Unavailable,
    /// HTTP 200 with `{"ok":false,"error":<error>}` (e.g. `channel_not_found`).
    ApiError(String),
}

#[derive(Debug)]
enum WsOut {
    Text(String),
    Close,
}

struct Envelope {
    frame: Value,
    sent: Vec<Instant>,
}

#[derive(Default)]
struct Store {
    calls: Vec<Call>,
    /// (channel, ts, current body) in post order.
    messages: Vec<(String, String, Value)>,
    failures: HashMap<String, VecDeque<Failure>>,
    hooks: Vec<ResponseUrlCall>,
    socket: Option<(usize, mpsc::UnboundedSender<WsOut>)>,
    envelopes: HashMap<String, Envelope>,
    acks: Vec<Ack>,
    other_frames: Vec<String>,
    /// Tokens Slack no longer accepts (revoked, or never issued): every method answers
    /// `invalid_auth`.
    rejected_tokens: Vec<String>,
    /// Channels the bot is not a member of (`conversations.info` says `is_member: false`).
    not_member: Vec<String>,
    /// Bot scopes the app was not granted (all are, unless withheld).
    withheld_scopes: Vec<String>,
}

struct Inner {
    port: u16,
    state: Mutex<Store>,
    ts_counter: AtomicU64,
    tickets: AtomicU64,
    connections: AtomicUsize,
    /// Bumped on every socket or ack change; waiters watch it.
    changes: watch::Sender<u64>,
    shutdown: watch::Receiver<bool>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, Store> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Slack-like message timestamps: `1700000000.000100`, `1700000000.000200`, ...
    fn next_ts(&self) -> String {
        let n = self.ts_counter.fetch_add(1, Ordering::SeqCst) + 1;
        let micros = n * 100;
        format!(
            "{}.{:06}",
            1_700_000_000 + micros / 1_000_000,
            micros % 1_000_000
        )
    }

    fn take_failure(&self, key: &str) -> Option<Failure> {
        self.state()
            .failures
            .get_mut(key)
            .and_then(|q| q.pop_front())
    }
}

/// The stand-in Slack server. Stops serving when dropped or on [`SlackStandin::shutdown`].
pub struct SlackStandin {
    addr: SocketAddr,
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl SlackStandin {
    /// Binds 127.0.0.1:0 and serves in a tokio task.
    pub async fn start() -> SlackStandin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Slack stand-in on 127.0.0.1:0");
        let addr = listener.local_addr().expect("stand-in local address");
        let (stop, stop_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            port: addr.port(),
            state: Mutex::new(Store::default()),
            ts_counter: AtomicU64::new(0),
            tickets: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            changes: watch::channel(0).0,
            shutdown: stop_rx.clone(),
        });
        let app = Router::new()
            .route("/api/{method}", post(api).get(api))
            .route("/hooks/{*name}", post(hook))
            .route("/link/", get(link))
            .with_state(inner.clone());
        let mut graceful = stop_rx;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = graceful.wait_for(|stopped| *stopped).await;
                })
                .await;
        });
        SlackStandin {
            addr,
            inner,
            stop,
            server: Mutex::new(Some(server)),
        }
    }

    /// Stops serving: closes the Socket Mode socket and waits (briefly) for the server task.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let handle = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let abort = handle.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), handle)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/api` (no trailing slash), for `with_slack_api_url`.
    pub fn api_url(&self) -> String {
        format!("{}/api", self.base_url())
    }

    /// A slack-morphism connector (the production connector type) that allows plain http and
    /// points at this stand-in.
    pub fn connector(&self) -> SlackClientHyperHttpsConnector {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .expect("native TLS roots")
            .https_or_http()
            .enable_http1()
            .build();
        SlackClientHyperConnector::with_connector(https).with_slack_api_url(&self.api_url())
    }

    // ----- Web API -----

    /// Every Web API call so far, failed ones included, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.state().calls.clone()
    }

    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.inner
            .state()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// The current content of a message: the body of the last successful `chat.postMessage`
    /// or `chat.update` for it.
    pub fn message(&self, channel: &str, ts: &str) -> Option<Value> {
        self.inner
            .state()
            .messages
            .iter()
            .find(|(c, t, _)| c == channel && t == ts)
            .map(|(_, _, body)| body.clone())
    }

    /// The messages of a channel as `(ts, current body)`, in post order.
    pub fn messages_in(&self, channel: &str) -> Vec<(String, Value)> {
        self.inner
            .state()
            .messages
            .iter()
            .filter(|(c, _, _)| c == channel)
            .map(|(_, ts, body)| (ts.clone(), body.clone()))
            .collect()
    }

    /// Answers the next `n` calls of `method` with `failure` instead of serving them. Failed calls
    /// are recorded (with `Call::failure` set) and change no message. `method` is a Web API
    /// method name, or `"response_url"` for the `/hooks/` endpoint.
    pub fn fail_next(&self, method: &str, n: usize, failure: Failure) {
        let mut st = self.inner.state();
        let queue = st.failures.entry(method.to_string()).or_default();
        queue.extend(std::iter::repeat_n(failure, n));
    }

    // ----- response_url -----

    /// `http://127.0.0.1:PORT/hooks/<name>`
    /// Makes Slack refuse `token` from now on, as it refuses a revoked token: every Web API
    /// method answers `{"ok":false,"error":"invalid_auth"}`.
    pub fn reject_token(&self, token: &str) {
        self.inner.state().rejected_tokens.push(token.to_string());
    }

    /// Takes the bot out of `channel`: `conversations.info` answers `is_member: false` for it.
    /// The bot is a member of every other channel.
    pub fn remove_bot_from(&self, channel: &str) {
        self.inner.state().not_member.push(channel.to_string());
    }

    /// Installs the app without the bot scope `scope`: methods needing it answer
    /// `missing_scope` with `needed` and `provided`, as Slack does. `conversations.info` needs
    /// `channels:read`.
    pub fn withhold_scope(&self, scope: &str) {
        self.inner.state().withheld_scopes.push(scope.to_string());
    }

    pub fn response_url(&self, name: &str) -> String {
        format!("{}/hooks/{name}", self.base_url())
    }

    pub fn response_url_calls(&self) -> Vec<ResponseUrlCall> {
        self.inner.state().hooks.clone()
    }

    // ----- Socket Mode -----

    /// How many Socket Mode connections have been opened so far.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` connections have been opened and one is open now.
    pub async fn wait_connections(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| st.socket.is_some() && self.connections() >= n)
            .await
    }

    /// Sends a `slash_commands` envelope (`accepts_response_payload: true`, as Slack does) whose
    /// payload is `fields` as a JSON object of strings. Returns the envelope id.
    pub async fn send_slash_command(&self, fields: &[(String, String)]) -> String {
        self.send_envelope("slash_commands", fields_to_json(fields), true)
            .await
    }

    /// Sends an `interactive` envelope (`accepts_response_payload: false`, as Slack does for
    /// `block_actions`). Returns the envelope id.
    pub async fn send_block_action(&self, payload: Value) -> String {
        self.send_envelope("interactive", payload, false).await
    }

    /// Sends `{"envelope_id":..,"type":kind,"accepts_response_payload":..,"payload":..}` on the
    /// current socket, waiting up to 5 s for a client to be connected. Returns the envelope id.
    pub async fn send_envelope(
        &self,
        kind: &str,
        payload: Value,
        accepts_response_payload: bool,
    ) -> String {
        let envelope_id = uuid::Uuid::new_v4().to_string();
        let frame = json!({
            "envelope_id": envelope_id,
            "type": kind,
            "accepts_response_payload": accepts_response_payload,
            "payload": payload,
        });
        self.inner.state().envelopes.insert(
            envelope_id.clone(),
            Envelope {
                frame,
                sent: Vec::new(),
            },
        );
        self.push(&envelope_id).await;
        envelope_id
    }

    /// Sends an envelope again, unchanged (Slack redelivers envelopes it saw no ack for).
    pub async fn redeliver(&self, envelope_id: &str) {
        assert!(
            self.inner.state().envelopes.contains_key(envelope_id),
            "redeliver: no envelope {envelope_id} was sent"
        );
        self.push(envelope_id).await;
    }

    /// The envelope as sent (the frame), if any.
    pub fn envelope(&self, envelope_id: &str) -> Option<Value> {
        self.inner
            .state()
            .envelopes
            .get(envelope_id)
            .map(|e| e.frame.clone())
    }

    /// Waits for the first ack of `envelope_id`; returns the ack frame and the time from the
    /// (latest) send of the envelope before it to the ack.
    pub async fn wait_ack(
        &self,
        envelope_id: &str,
        timeout: Duration,
    ) -> Option<(Value, Duration)> {
        let found = self
            .wait_until(timeout, |st| {
                st.acks.iter().any(|a| a.envelope_id == envelope_id)
            })
            .await;
        if !found {
            return None;
        }
        let st = self.inner.state();
        let ack = st.acks.iter().find(|a| a.envelope_id == envelope_id)?;
        let sent = st
            .envelopes
            .get(envelope_id)
            .and_then(|e| e.sent.iter().rev().find(|s| **s <= ack.at).copied())
            .unwrap_or(ack.at);
        Some((ack.frame.clone(), ack.at.duration_since(sent)))
    }

    /// Waits until `envelope_id` has been acked at least `n` times.
    pub async fn wait_acks(&self, envelope_id: &str, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| {
            st.acks
                .iter()
                .filter(|a| a.envelope_id == envelope_id)
                .count()
                >= n
        })
        .await
    }

    /// Every ack received so far, in order.
    pub fn acks(&self) -> Vec<Ack> {
        self.inner.state().acks.clone()
    }

    /// Text frames from the client that were not acks (ignored, kept for inspection).
    pub fn other_frames(&self) -> Vec<String> {
        self.inner.state().other_frames.clone()
    }

    /// Closes the current socket (close frame 1000), as Slack does when it rotates connections.
    /// Returns whether a socket was open. Later sends wait for the client to reconnect.
    pub fn disconnect(&self) -> bool {
        let socket = self.inner.state().socket.take();
        self.inner.bump();
        match socket {
            Some((_, tx)) => tx.send(WsOut::Close).is_ok(),
            None => false,
        }
    }

    async fn push(&self, envelope_id: &str) {
        let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
        loop {
            let mut changes = self.inner.changes.subscribe();
            {
                let mut st = self.inner.state();
                if let Some((_, tx)) = st.socket.clone() {
                    let env = st
                        .envelopes
                        .get_mut(envelope_id)
                        .expect("envelope registered before sending");
                    let text = env.frame.to_string();
                    env.sent.push(Instant::now());
                    if tx.send(WsOut::Text(text)).is_ok() {
                        return;
                    }
                    env.sent.pop();
                    st.socket = None;
                }
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                panic!(
                    "Slack stand-in: no Socket Mode client connected within {CONNECT_WAIT:?} \
                     to send envelope {envelope_id}"
                );
            }
        }
    }

    async fn wait_until(&self, timeout: Duration, cond: impl Fn(&Store) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut changes = self.inner.changes.subscribe();
            if cond(&self.inner.state()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return cond(&self.inner.state());
            }
        }
    }
}

impl Drop for SlackStandin {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(handle) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            handle.abort();
        }
    }
}

// ----- HTTP handlers -----

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Decodes a request body the way Slack accepts it: JSON, or form-urlencoded (where `blocks`
/// and `attachments` are JSON text).
fn decode_body(content_type: Option<&str>, body: &[u8]) -> Value {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    if body.is_empty() {
        return Value::Object(Map::new());
    }
    if ct.starts_with("application/json") {
        return serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    }
    if ct.starts_with("application/x-www-form-urlencoded") {
        if let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
            return form_to_json(&pairs);
        }
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn form_to_json(pairs: &[(String, String)]) -> Value {
    let mut map = Map::new();
    for (k, v) in pairs {
        let value = match k.as_str() {
            "blocks" | "attachments" => {
                serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()))
            }
            _ => Value::String(v.clone()),
        };
        map.insert(k.clone(), value);
    }
    Value::Object(map)
}

fn json_reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, JSON_UTF8)],
        body.to_string(),
    )
        .into_response()
}

fn failure_reply(failure: &Failure) -> Response {
    match failure {
        Failure::RateLimited { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (header::CONTENT_TYPE, JSON_UTF8.to_string()),
                (header::RETRY_AFTER, retry_after_secs.to_string()),
            ],
            json!({"ok": false, "error": "ratelimited"}).to_string(),
        )
            .into_response(),
        Failure::ServerError => json_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"ok": false, "error": "fatal_error"}),
        ),
        Failure::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain")],
            "Service Unavailable",
        )
            .into_response(),
        Failure::ApiError(error) => {
            json_reply(StatusCode::OK, json!({"ok": false, "error": error}))
        }
    }
}

fn api_error(error: &str) -> Value {
    json!({"ok": false, "error": error})
}

fn str_arg<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    args.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

async fn api(
    State(inner): State<Arc<Inner>>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let content_type = header_str(&headers, header::CONTENT_TYPE);
    let mut args = decode_body(content_type.as_deref(), &body);
    if let (Some(q), Value::Object(map)) = (query, &mut args) {
        if let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(&q) {
            if let Value::Object(extra) = form_to_json(&pairs) {
                for (k, v) in extra {
                    map.entry(k).or_insert(v);
                }
            }
        }
    }
    let auth = header_str(&headers, header::AUTHORIZATION)
        .and_then(|h| h.strip_prefix("Bearer ").map(str::to_owned))
        .or_else(|| str_arg(&args, "token").map(str::to_owned));

    let failure = inner.take_failure(&method);
    let reply = match &failure {
        Some(f) => failure_reply(f),
        None => json_reply(
            StatusCode::OK,
            serve_method(&inner, &method, auth.as_deref(), &args),
        ),
    };
    inner.state().calls.push(Call {
        method,
        auth,
        body: args,
        content_type,
        failure,
        at,
    });
    reply
}

/// Serves one Web API method (the ones the adapter uses), answering as Slack does.
fn serve_method(inner: &Inner, method: &str, auth: Option<&str>, args: &Value) -> Value {
    if auth.is_some_and(|t| inner.state().rejected_tokens.iter().any(|r| r == t)) {
        return api_error("invalid_auth");
    }
    let bot_method = matches!(
        method,
        "chat.postMessage"
            | "chat.update"
            | "chat.postEphemeral"
            | "auth.test"
            | "conversations.info"
    );
    if bot_method {
        match auth {
            None => return api_error("not_authed"),
            Some(t) if !t.starts_with("xox") => return api_error("invalid_auth"),
            _ => {}
        }
    }
    match method {
        "chat.postMessage" => {
            let Some(channel) = str_arg(args, "channel") else {
                return api_error("channel_not_found");
            };
            if args.get("text").is_none()
                && args.get("blocks").is_none()
                && args.get("attachments").is_none()
            {
                return api_error("no_text");
            }
            let ts = inner.next_ts();
            inner
                .state()
                .messages
                .push((channel.to_string(), ts.clone(), args.clone()));
            let mut message = json!({
                "type": "message",
                "subtype": "bot_message",
                "ts": ts,
                "text": args.get("text").cloned().unwrap_or(json!("")),
                "user": BOT_USER_ID,
                "bot_id": BOT_ID,
                "app_id": APP_ID,
                "team": TEAM_ID,
            });
            for key in ["blocks", "attachments", "thread_ts"] {
                if let Some(v) = args.get(key) {
                    message[key] = v.clone();
                }
            }
            json!({"ok": true, "channel": channel, "ts": ts, "message": message})
        }
        "chat.update" => {
            let (Some(channel), Some(ts)) = (str_arg(args, "channel"), str_arg(args, "ts")) else {
                return api_error("message_not_found");
            };
            let mut st = inner.state();
            let Some(slot) = st
                .messages
                .iter_mut()
                .find(|(c, t, _)| c == channel && t == ts)
            else {
                return api_error("message_not_found");
            };
            slot.2 = args.clone();
            let text = args.get("text").cloned().unwrap_or(json!(""));
            let mut message = json!({
                "type": "message",
                "text": text,
                "user": BOT_USER_ID,
                "bot_id": BOT_ID,
            });
            for key in ["blocks", "attachments"] {
                if let Some(v) = args.get(key) {
                    message[key] = v.clone();
                }
            }
            json!({"ok": true, "channel": channel, "ts": ts, "text": text, "message": message})
        }
        "chat.postEphemeral" => {
            if str_arg(args, "channel").is_none() {
                return api_error("channel_not_found");
            }
            if str_arg(args, "user").is_none() {
                return api_error("user_not_in_channel");
            }
            json!({"ok": true, "message_ts": inner.next_ts()})
        }
        "auth.test" => json!({
            "ok": true,
            "url": format!("https://{TEAM_DOMAIN}.slack.com/"),
            "team": "Stand-in",
            "user": "dualkey",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": false,
        }),
        "conversations.info" => {
            if inner
                .state()
                .withheld_scopes
                .iter()
                .any(|s| s == "channels:read")
            {
                return json!({
                    "ok": false,
                    "error": "missing_scope",
                    "needed": "channels:read",
                    "provided": "commands,chat:write",
                });
            }
            let Some(channel) = str_arg(args, "channel") else {
                return api_error("channel_not_found");
            };
            let is_member = !inner.state().not_member.iter().any(|c| c == channel);
            json!({"ok": true, "channel": conversation(channel, is_member)})
        }
        "apps.connections.open" => match auth {
            Some(t) if t.starts_with("xapp-") => {
                let ticket = inner.tickets.fetch_add(1, Ordering::SeqCst) + 1;
                json!({
                    "ok": true,
                    "url": format!("ws://127.0.0.1:{}/link/?ticket={ticket}", inner.port),
                })
            }
            _ => api_error("invalid_auth"),
        },
        _ => api_error("unknown_method"),
    }
}

/// A public channel's conversation object as `conversations.info` returns it.
fn conversation(channel_id: &str, is_member: bool) -> Value {
    let name = channel_name(channel_id);
    json!({
        "id": channel_id,
        "name": name,
        "is_channel": true,
        "is_group": false,
        "is_im": false,
        "is_mpim": false,
        "is_private": false,
        "created": 1_449_252_889,
        "is_archived": false,
        "is_general": false,
        "unlinked": 0,
        "name_normalized": name,
        "is_shared": false,
        "is_org_shared": false,
        "is_pending_ext_shared": false,
        "pending_shared": [],
        "context_team_id": TEAM_ID,
        "parent_conversation": null,
        "creator": "U0CREATOR",
        "is_ext_shared": false,
        "shared_team_ids": [TEAM_ID],
        "is_member": is_member,
        "topic": {"value": "", "creator": "", "last_set": 0},
        "purpose": {"value": "", "creator": "", "last_set": 0},
        "previous_names": [],
    })
}

async fn hook(
    State(inner): State<Arc<Inner>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let content_type = header_str(&headers, header::CONTENT_TYPE);
    let failure = inner.take_failure("response_url");
    let reply = match &failure {
        Some(f) => failure_reply(f),
        None => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response(),
    };
    inner.state().hooks.push(ResponseUrlCall {
        name,
        body: decode_body(content_type.as_deref(), &body),
        content_type,
        failure,
        at,
    });
    reply
}

// ----- Socket Mode -----

async fn link(
    State(inner): State<Arc<Inner>>,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let issued = inner.tickets.load(Ordering::SeqCst);
    let valid = query
        .get("ticket")
        .and_then(|t| t.parse::<u64>().ok())
        .is_some_and(|t| t >= 1 && t <= issued);
    if !valid {
        return (StatusCode::UNAUTHORIZED, "invalid ticket").into_response();
    }
    ws.on_upgrade(move |socket| serve_socket(inner, socket))
}

async fn serve_socket(inner: Arc<Inner>, mut socket: WebSocket) {
    let hello = json!({
        "type": "hello",
        "num_connections": 1,
        "debug_info": {"host": "standin", "approximate_connection_time": 18060},
        "connection_info": {"app_id": APP_ID},
    });
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = inner.connections.fetch_add(1, Ordering::SeqCst) + 1;
    inner.state().socket = Some((id, tx));
    inner.bump();
    let mut shutdown = inner.shutdown.clone();
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(WsOut::Text(text)) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(WsOut::Close) | None => {
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() })))
                        .await;
                    break;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => on_client_frame(&inner, text.as_str()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                // Pings are answered by axum; pongs and binary frames are ignored.
                Some(Ok(_)) => {}
            },
            _ = shutdown.changed() => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
        }
    }
    {
        let mut st = inner.state();
        if matches!(&st.socket, Some((current, _)) if *current == id) {
            st.socket = None;
        }
    }
    inner.bump();
}

fn on_client_frame(inner: &Inner, text: &str) {
    let at = Instant::now();
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let envelope_id = parsed
        .as_ref()
        .and_then(|v| v.get("envelope_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    {
        let mut st = inner.state();
        match (envelope_id, parsed) {
            (Some(envelope_id), Some(frame)) => st.acks.push(Ack {
                envelope_id,
                frame,
                at,
            }),
            _ => st.other_frames.push(text.to_string()),
        }
    }
    inner.bump();
}

// ----- Payload builders -----

/// The fields of a slash command, in the order Slack sends them (HTTP form body and the Socket
/// Mode payload carry the same fields, all strings).
pub fn slash_command_fields(
    command: &str,
    text: &str,
    user_id: &str,
    channel_id: &str,
    trigger_id: &str,
    response_url: &str,
) -> Vec<(String, String)> {
    [
        ("token", VERIFICATION_TOKEN.to_string()),
        ("team_id", TEAM_ID.to_string()),
        ("team_domain", TEAM_DOMAIN.to_string()),
        ("channel_id", channel_id.to_string()),
        ("channel_name", channel_name(channel_id)),
        ("user_id", user_id.to_string()),
        ("user_name", user_name(user_id)),
        ("command", command.to_string()),
        ("text", text.to_string()),
        ("api_app_id", APP_ID.to_string()),
        ("is_enterprise_install", "false".to_string()),
        ("response_url", response_url.to_string()),
        ("trigger_id", trigger_id.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A slash command as the form-urlencoded body Slack POSTs in HTTP mode.
pub fn slash_command_form(
    command: &str,
    text: &str,
    user_id: &str,
    channel_id: &str,
    trigger_id: &str,
    response_url: &str,
) -> String {
    form_encode(&slash_command_fields(
        command,
        text,
        user_id,
        channel_id,
        trigger_id,
        response_url,
    ))
}

/// A slash command as the JSON object Slack puts in a Socket Mode `slash_commands` payload.
pub fn slash_command_json(
    command: &str,
    text: &str,
    user_id: &str,
    channel_id: &str,
    trigger_id: &str,
    response_url: &str,
) -> Value {
    fields_to_json(&slash_command_fields(
        command,
        text,
        user_id,
        channel_id,
        trigger_id,
        response_url,
    ))
}

/// Form fields as a JSON object of strings, in order.
pub fn fields_to_json(fields: &[(String, String)]) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// `application/x-www-form-urlencoded` encoding, as Slack encodes its bodies.
pub fn form_encode(fields: &[(String, String)]) -> String {
    serde_urlencoded::to_string(fields).expect("form-encode string pairs")
}

fn channel_name(channel_id: &str) -> String {
    if channel_id.starts_with('D') {
        "directmessage".to_string()
    } else {
        format!("chan-{}", channel_id.to_ascii_lowercase())
    }
}

fn user_name(user_id: &str) -> String {
    format!("user-{}", user_id.to_ascii_lowercase())
}

/// A `block_actions` payload for a click on a button of a bot message, as Slack sends it
/// (in HTTP mode as `payload=<json>`, see [`block_action_form`]; in Socket Mode as the
/// `interactive` envelope's payload).
#[allow(clippy::too_many_arguments)] // One argument per field Slack varies between clicks.
pub fn block_action(
    action_id: &str,
    value: &str,
    user_id: &str,
    channel_id: &str,
    message_ts: &str,
    action_ts: &str,
    response_url: &str,
    trigger_id: &str,
) -> Value {
    json!({
        "type": "block_actions",
        "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
        "user": {
            "id": user_id,
            "username": user_name(user_id),
            "name": user_name(user_id),
            "team_id": TEAM_ID,
        },
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": false,
        },
        "trigger_id": trigger_id,
        "team_id": TEAM_ID,
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": {"id": channel_id, "name": channel_name(channel_id)},
        "message": {
            "type": "message",
            "subtype": "bot_message",
            "ts": message_ts,
            "text": "Approval requested",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "team": TEAM_ID,
            "blocks": [],
        },
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [{
            "type": "button",
            "action_id": action_id,
            "block_id": "dualkey-actions",
            "text": {"type": "plain_text", "text": "Approve", "emoji": true},
            "value": value,
            "action_ts": action_ts,
        }],
    })
}

/// An interaction payload as the HTTP-mode form body: `payload=<url-encoded json>`.
pub fn block_action_form(payload: &Value) -> String {
    form_encode(&[("payload".to_string(), payload.to_string())])
}

// ----- Request signing (HTTP mode) -----

/// `v0=<hex hmac-sha256(secret, "v0:" + timestamp + ":" + body)>`, Slack's `X-Slack-Signature`.
pub fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// The current Unix time in seconds, as Slack puts it in `X-Slack-Request-Timestamp`.
pub fn now_timestamp() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        .to_string()
}

/// POSTs `body` signed as Slack signs it, with the timestamp now.
pub async fn post_signed(
    url: &str,
    secret: &str,
    body: &str,
    content_type: &str,
) -> reqwest::Response {
    let timestamp = now_timestamp();
    let signature = sign(secret, &timestamp, body);
    post_signed_with(url, body, content_type, &timestamp, &signature).await
}

/// POSTs `body` with the given `X-Slack-Request-Timestamp` and `X-Slack-Signature` (for
/// negative tests: stale timestamps, wrong signatures).
pub async fn post_signed_with(
    url: &str,
    body: &str,
    content_type: &str,
    timestamp: &str,
    signature: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", timestamp)
        .header("x-slack-signature", signature)
        .body(body.to_string())
        .send()
        .await
        .expect("POST a signed request")
}

// ----- Tests: the stand-in speaks Slack's format, as slack-morphism (the real client) sees it -----

mod tests {
    use super::*;
    use slack_morphism::errors::SlackClientError;
    use slack_morphism::prelude::*;

    const WAIT: Duration = Duration::from_secs(3);

    fn client(standin: &SlackStandin) -> Arc<SlackHyperClient> {
        Arc::new(SlackClient::new(standin.connector()))
    }

    fn bot_token() -> SlackApiToken {
        SlackApiToken::new("xoxb-standin-bot".into())
    }

    fn card_blocks(request: &str) -> Vec<SlackBlock> {
        vec![
            SlackSectionBlock::new()
                .with_text(md!("*Rollback requested* `{}`", request))
                .into(),
            SlackActionsBlock::new(vec![SlackBlockButtonElement::new(pt!("Approve"))
                .with_action_id("approve".into())
                .with_value(request.to_string())
                .with_style(SlackBlockButtonStyle::Primary)
                .into()])
            .with_block_id(format!("approval:{request}").into())
            .into(),
        ]
    }

    #[tokio::test]
    async fn slack_morphism_posts_a_card_updates_it_in_place_and_posts_an_ephemeral() {
        let standin = SlackStandin::start().await;
        let client = client(&standin);
        let token = bot_token();
        let session = client.open_session(&token);

        let posted = session
            .chat_post_message(&SlackApiChatPostMessageRequest::new(
                "C1".into(),
                SlackMessageContent::new()
                    .with_text("Rollback requested".into())
                    .with_blocks(card_blocks("req-42")),
            ))
            .await
            .expect("chat.postMessage against the stand-in");
        assert_eq!(posted.channel.value(), "C1");
        assert_eq!(posted.ts.value(), "1700000000.000100");
        assert_eq!(posted.message.origin.ts, posted.ts);
        assert_eq!(
            posted.message.content.text.as_deref(),
            Some("Rollback requested")
        );
        assert_eq!(
            posted.message.content.blocks.as_ref().map(Vec::len),
            Some(2)
        );

        let second = session
            .chat_post_message(&SlackApiChatPostMessageRequest::new(
                "C1".into(),
                SlackMessageContent::new().with_text("another".into()),
            ))
            .await
            .expect("second chat.postMessage");
        assert_eq!(second.ts.value(), "1700000000.000200");

        let updated = session
            .chat_update(&SlackApiChatUpdateRequest::new(
                "C1".into(),
                SlackMessageContent::new().with_text("Approved by <@U2>".into()),
                posted.ts.clone(),
            ))
            .await
            .expect("chat.update of a posted message");
        assert_eq!(updated.ts, posted.ts);
        assert_eq!(
            updated.message.content.text.as_deref(),
            Some("Approved by <@U2>")
        );

        let ephemeral = session
            .chat_post_ephemeral(&SlackApiChatPostEphemeralRequest::new(
                "C1".into(),
                "U3".into(),
                SlackMessageContent::new().with_text("only you see this".into()),
            ))
            .await;
        assert!(ephemeral.is_ok(), "chat.postEphemeral: {ephemeral:?}");

        // The card was updated in place: same ts, new content, still first in the channel.
        let in_c1 = standin.messages_in("C1");
        assert_eq!(in_c1.len(), 2);
        assert_eq!(in_c1[0].0, posted.ts.value().as_str());
        assert_eq!(in_c1[0].1["text"], "Approved by <@U2>");
        assert_eq!(
            standin.message("C1", posted.ts.value()).unwrap()["text"],
            "Approved by <@U2>"
        );
        assert_eq!(in_c1[1].1["text"], "another");

        // What went over the wire, as slack-morphism sends it.
        let calls = standin.calls();
        let methods: Vec<&str> = calls.iter().map(|c| c.method.as_str()).collect();
        assert_eq!(
            methods,
            [
                "chat.postMessage",
                "chat.postMessage",
                "chat.update",
                "chat.postEphemeral"
            ]
        );
        for call in &calls {
            assert_eq!(call.auth.as_deref(), Some("xoxb-standin-bot"));
            assert_eq!(
                call.content_type.as_deref(),
                Some("application/json; charset=utf-8")
            );
            assert!(call.failure.is_none());
        }
        let post = &calls[0].body;
        assert_eq!(post["channel"], "C1");
        assert_eq!(post["blocks"][1]["type"], "actions");
        assert_eq!(post["blocks"][1]["block_id"], "approval:req-42");
        assert_eq!(post["blocks"][1]["elements"][0]["action_id"], "approve");
        assert_eq!(post["blocks"][1]["elements"][0]["value"], "req-42");
        assert_eq!(calls[2].body["ts"], posted.ts.value().as_str());
        assert_eq!(calls[3].body["user"], "U3");
    }

    #[tokio::test]
    async fn updating_an_unknown_ts_is_message_not_found_and_stores_nothing() {
        let standin = SlackStandin::start().await;
        let client = client(&standin);
        let token = bot_token();
        let session = client.open_session(&token);
        let err = session
            .chat_update(&SlackApiChatUpdateRequest::new(
                "C1".into(),
                SlackMessageContent::new().with_text("x".into()),
                "1600000000.000100".into(),
            ))
            .await
            .expect_err("an unknown ts is an error");
        match err {
            SlackClientError::ApiError(e) => assert_eq!(e.code, "message_not_found"),
            other => panic!("expected ApiError(message_not_found), got {other:?}"),
        }
        assert!(standin.messages_in("C1").is_empty());
    }

    #[tokio::test]
    async fn a_programmed_429_is_a_rate_limit_error_with_retry_after_and_changes_nothing() {
        let standin = SlackStandin::start().await;
        let client = client(&standin);
        let token = bot_token();
        let session = client.open_session(&token);
        standin.fail_next(
            "chat.postMessage",
            1,
            Failure::RateLimited {
                retry_after_secs: 1,
            },
        );
        let request = SlackApiChatPostMessageRequest::new(
            "C1".into(),
            SlackMessageContent::new().with_text("audit line".into()),
        );
        match session.chat_post_message(&request).await {
            Err(SlackClientError::RateLimitError(e)) => {
                assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
                assert_eq!(e.code.as_deref(), Some("ratelimited"));
            }
            other => panic!("expected RateLimitError, got {other:?}"),
        }
        assert!(standin.messages_in("C1").is_empty(), "a 429 stores nothing");

        // Only the next call failed; the retry goes through.
        let posted = session
            .chat_post_message(&request)
            .await
            .expect("the call after the 429");
        let calls = standin.calls_to("chat.postMessage");
        assert_eq!(calls.len(), 2);
        assert_eq!(
            calls[0].failure,
            Some(Failure::RateLimited {
                retry_after_secs: 1
            })
        );
        assert_eq!(calls[0].body["text"], "audit line");
        assert_eq!(calls[1].failure, None);
        assert_eq!(standin.messages_in("C1").len(), 1);
        assert_eq!(standin.messages_in("C1")[0].0, posted.ts.value().as_str());
    }

    #[tokio::test]
    async fn a_programmed_server_error_is_an_http_error_and_the_card_keeps_its_content() {
        let standin = SlackStandin::start().await;
        let client = client(&standin);
        let token = bot_token();
        let session = client.open_session(&token);
        let posted = session
            .chat_post_message(&SlackApiChatPostMessageRequest::new(
                "C9".into(),
                SlackMessageContent::new().with_text("pending".into()),
            ))
            .await
            .unwrap();
        standin.fail_next("chat.update", 2, Failure::ServerError);
        for _ in 0..2 {
            let update = SlackApiChatUpdateRequest::new(
                "C9".into(),
                SlackMessageContent::new().with_text("approved".into()),
                posted.ts.clone(),
            );
            match session.chat_update(&update).await {
                Err(SlackClientError::HttpError(e)) => {
                    assert_eq!(e.status_code.as_u16(), 500)
                }
                other => panic!("expected HttpError 500, got {other:?}"),
            }
        }
        assert_eq!(
            standin.message("C9", posted.ts.value()).unwrap()["text"],
            "pending"
        );
        assert_eq!(standin.calls_to("chat.update").len(), 2);
        assert!(standin
            .calls_to("chat.update")
            .iter()
            .all(|c| c.failure == Some(Failure::ServerError)));
    }

    #[tokio::test]
    async fn the_web_api_answers_auth_and_method_errors_as_slack_does() {
        let standin = SlackStandin::start().await;
        let http = reqwest::Client::new();
        let call = |method: &str, auth: Option<&str>| {
            let mut req = http
                .post(format!("{}/{method}", standin.api_url()))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("channel=C1&text=hi");
            if let Some(token) = auth {
                req = req.header("authorization", format!("Bearer {token}"));
            }
            req.send()
        };
        let r = call("apps.connections.open", Some("xoxb-bot"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v, json!({"ok": false, "error": "invalid_auth"}));

        let v: Value = call("apps.connections.open", Some("xapp-1-app"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(
            v["url"],
            format!("ws://127.0.0.1:{}/link/?ticket=1", standin.addr().port())
        );

        let v: Value = call("chat.frobnicate", Some("xoxb-bot"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v, json!({"ok": false, "error": "unknown_method"}));

        let v: Value = call("chat.postMessage", None)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v, json!({"ok": false, "error": "not_authed"}));

        // A form body is accepted too, and recorded as JSON.
        let v: Value = call("chat.postMessage", Some("xoxb-bot"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(standin.messages_in("C1")[0].1["text"], "hi");
        assert_eq!(standin.calls().len(), 5);
        assert_eq!(
            standin.calls()[4].body,
            json!({"channel": "C1", "text": "hi"})
        );
    }

    #[tokio::test]
    async fn slack_morphism_responds_to_a_response_url_and_the_standin_answers_ok_as_text() {
        let standin = SlackStandin::start().await;
        let client = client(&standin);
        let url: SlackResponseUrl =
            serde_json::from_value(json!(standin.response_url("T0/123/abc"))).unwrap();
        client
            .respond_to_event(
                &url,
                &SlackApiPostWebhookMessageRequest::new(
                    SlackMessageContent::new().with_text("done".into()),
                )
                .with_replace_original(true),
            )
            .await
            .expect("POST to the response_url");
        let hooks = standin.response_url_calls();
        assert_eq!(hooks.len(), 1);
        assert_eq!(hooks[0].name, "T0/123/abc");
        assert_eq!(
            hooks[0].body,
            json!({"text": "done", "replace_original": true})
        );

        let r = reqwest::Client::new()
            .post(standin.response_url("x"))
            .json(&json!({"text": "t"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(r.text().await.unwrap(), "ok");
    }

    // ----- Socket Mode -----

    #[derive(Debug)]
    enum Seen {
        Command(Box<SlackCommandEvent>),
        Click(Box<SlackInteractionBlockActionsEvent>),
    }

    type SeenTx = mpsc::UnboundedSender<Seen>;

    async fn seen_tx(states: &SlackClientEventsUserState) -> SeenTx {
        states
            .read()
            .await
            .get_user_state::<SeenTx>()
            .expect("user state holds the sender")
            .clone()
    }

    async fn on_command(
        ev: SlackCommandEvent,
        _client: Arc<SlackHyperClient>,
        states: SlackClientEventsUserState,
    ) -> UserCallbackResult<SlackCommandEventResponse> {
        let text = format!("working on `{}`", ev.text.clone().unwrap_or_default());
        let _ = seen_tx(&states).await.send(Seen::Command(Box::new(ev)));
        Ok(
            SlackCommandEventResponse::new(SlackMessageContent::new().with_text(text))
                .with_response_type(SlackMessageResponseType::Ephemeral),
        )
    }

    async fn on_interaction(
        ev: SlackInteractionEvent,
        _client: Arc<SlackHyperClient>,
        states: SlackClientEventsUserState,
    ) -> UserCallbackResult<()> {
        if let SlackInteractionEvent::BlockActions(ba) = ev {
            let _ = seen_tx(&states).await.send(Seen::Click(Box::new(ba)));
        }
        Ok(())
    }

    async fn listen(
        standin: &SlackStandin,
    ) -> (
        SlackClientSocketModeListener<SlackClientHyperHttpsConnector>,
        mpsc::UnboundedReceiver<Seen>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel::<Seen>();
        let env = Arc::new(
            SlackClientEventsListenerEnvironment::new(client(standin)).with_user_state(tx),
        );
        let callbacks = SlackSocketModeListenerCallbacks::new()
            .with_command_events(on_command)
            .with_interaction_events(on_interaction);
        let listener = SlackClientSocketModeListener::new(
            &SlackClientSocketModeConfig::new().with_max_connections_count(1),
            env,
            callbacks,
        );
        listener
            .listen_for(&SlackApiToken::new("xapp-1-standin".into()))
            .await
            .expect("register the app token");
        listener.start().await;
        (listener, rx)
    }

    async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("slack-morphism's callback ran in time")
            .expect("callback channel open")
    }

    #[tokio::test]
    async fn a_socket_mode_listener_receives_a_slash_command_and_a_click_and_both_acks_are_recorded(
    ) {
        let standin = SlackStandin::start().await;
        let (listener, mut rx) = listen(&standin).await;

        let fields = slash_command_fields(
            "/db",
            "rollback 20240101_add_users",
            "U1",
            "C1",
            "111.222.abc",
            &standin.response_url("cmd-1"),
        );
        let cmd_id = standin.send_slash_command(&fields).await;
        let Seen::Command(cmd) = next_seen(&mut rx).await else {
            panic!("expected the slash command first")
        };
        assert_eq!(cmd.command.value(), "/db");
        assert_eq!(cmd.text.as_deref(), Some("rollback 20240101_add_users"));
        assert_eq!(cmd.user_id.value(), "U1");
        assert_eq!(cmd.channel_id.value(), "C1");
        assert_eq!(cmd.team_id.value(), TEAM_ID);
        assert_eq!(cmd.trigger_id.value(), "111.222.abc");
        assert_eq!(
            cmd.response_url.value().as_str(),
            standin.response_url("cmd-1")
        );
        let (ack, took) = standin
            .wait_ack(&cmd_id, WAIT)
            .await
            .expect("the slash command was acked");
        assert_eq!(ack["envelope_id"], cmd_id.as_str());
        assert_eq!(
            ack["payload"],
            json!({"text": "working on `rollback 20240101_add_users`", "response_type": "ephemeral"})
        );
        assert!(took < WAIT);

        let click = block_action(
            "approve",
            "req-42",
            "U2",
            "C1",
            "1700000000.000100",
            "1700000001.123456",
            &standin.response_url("click-1"),
            "333.444.def",
        );
        let click_id = standin.send_block_action(click).await;
        let Seen::Click(ba) = next_seen(&mut rx).await else {
            panic!("expected the click")
        };
        assert_eq!(ba.user.as_ref().unwrap().id.value(), "U2");
        assert_eq!(ba.trigger_id.value(), "333.444.def");
        let action = &ba.actions.as_ref().unwrap()[0];
        assert_eq!(action.action_id.value(), "approve");
        assert_eq!(action.value.as_deref(), Some("req-42"));
        assert_eq!(
            action.action_ts.as_ref().unwrap().value(),
            "1700000001.123456"
        );
        match &ba.container {
            SlackInteractionActionContainer::Message(m) => {
                assert_eq!(m.message_ts.value(), "1700000000.000100");
                assert_eq!(m.channel_id.as_ref().unwrap().value(), "C1");
            }
            other => panic!("expected a message container, got {other:?}"),
        }
        assert_eq!(
            ba.response_url.as_ref().unwrap().value().as_str(),
            standin.response_url("click-1")
        );
        let (ack, _) = standin
            .wait_ack(&click_id, WAIT)
            .await
            .expect("the click was acked");
        assert_eq!(ack, json!({"envelope_id": click_id}));
        assert_eq!(standin.acks().len(), 2);
        assert!(standin.other_frames().is_empty());
        assert_eq!(standin.connections(), 1);
        assert_eq!(standin.calls_to("apps.connections.open").len(), 1);
        assert_eq!(
            standin.calls_to("apps.connections.open")[0].auth.as_deref(),
            Some("xapp-1-standin")
        );
        listener.shutdown().await;
    }

    #[tokio::test]
    async fn a_redelivered_click_arrives_again_with_the_same_trigger_id_and_action_ts() {
        let standin = SlackStandin::start().await;
        let (listener, mut rx) = listen(&standin).await;
        let click = block_action(
            "reject",
            "req-7",
            "U5",
            "C2",
            "1700000000.000300",
            "1700000002.000001",
            &standin.response_url("r"),
            "555.666.ghi",
        );
        let id = standin.send_block_action(click).await;
        standin.redeliver(&id).await;
        let mut keys = Vec::new();
        for _ in 0..2 {
            let Seen::Click(ba) = next_seen(&mut rx).await else {
                panic!("expected clicks")
            };
            let action = &ba.actions.as_ref().unwrap()[0];
            keys.push((
                ba.trigger_id.value().clone(),
                action.action_ts.as_ref().unwrap().value().clone(),
            ));
        }
        assert_eq!(keys[0], keys[1]);
        assert!(
            standin.wait_acks(&id, 2, WAIT).await,
            "both deliveries acked"
        );
        listener.shutdown().await;
    }

    #[tokio::test]
    async fn after_the_standin_closes_the_socket_slack_morphism_reconnects_and_still_receives() {
        let standin = SlackStandin::start().await;
        let (listener, mut rx) = listen(&standin).await;
        assert!(standin.wait_connections(1, WAIT).await);
        assert!(standin.disconnect());
        assert!(
            standin.wait_connections(2, WAIT).await,
            "slack-morphism reconnected"
        );
        assert_eq!(standin.calls_to("apps.connections.open").len(), 2);
        let fields = slash_command_fields("/db", "status", "U1", "C1", "9.9.9", "http://x/");
        let id = standin.send_slash_command(&fields).await;
        assert!(matches!(next_seen(&mut rx).await, Seen::Command(_)));
        assert!(standin.wait_ack(&id, WAIT).await.is_some());
        listener.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_closes_the_socket_and_stops_serving_promptly() {
        let standin = SlackStandin::start().await;
        let (listener, _rx) = listen(&standin).await;
        assert!(standin.wait_connections(1, WAIT).await);
        let api = standin.api_url();
        let started = Instant::now();
        standin.shutdown().await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(
            standin.wait_until(WAIT, |st| st.socket.is_none()).await,
            "the socket closed"
        );
        let refused = reqwest::Client::new()
            .post(format!("{api}/auth.test"))
            .send()
            .await;
        assert!(refused.is_err(), "still serving: {refused:?}");
        listener.shutdown().await;
    }

    #[tokio::test]
    async fn an_envelope_without_accepts_response_payload_is_not_delivered_to_the_callback() {
        // The reason every envelope carries the field: slack-morphism rejects a frame without it
        // (and still acks it), so an ack alone proves nothing.
        let standin = SlackStandin::start().await;
        let (listener, mut rx) = listen(&standin).await;
        assert!(standin.wait_connections(1, WAIT).await);
        let fields = slash_command_fields("/db", "status", "U1", "C1", "1.2.3", "http://x/");
        let good = standin.send_slash_command(&fields).await;
        assert!(matches!(next_seen(&mut rx).await, Seen::Command(_)));
        assert!(standin.wait_ack(&good, WAIT).await.is_some());

        // Strip the field by hand and push the frame.
        let mut frame = standin.envelope(&good).unwrap();
        frame
            .as_object_mut()
            .unwrap()
            .remove("accepts_response_payload");
        frame["envelope_id"] = json!("stripped-1");
        let tx = standin.inner.state().socket.clone().unwrap().1;
        tx.send(WsOut::Text(frame.to_string())).unwrap();
        assert!(standin.wait_acks("stripped-1", 1, WAIT).await);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err(),
            "the stripped envelope reached the callback"
        );
        listener.shutdown().await;
    }

    // ----- HTTP mode: signing and the form bodies, checked by slack-morphism's verifier -----

    #[test]
    fn the_documented_signing_example_reproduces() {
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            sign(secret, "1531420618", body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
        assert_ne!(
            sign(secret, "1531420619", body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
        // Slack's own body is exactly the form encoding of its fields, so form_encode matches
        // Slack's escaping byte for byte.
        let fields: Vec<(String, String)> = serde_urlencoded::from_str(body).unwrap();
        assert_eq!(fields[7], ("command".into(), "/webhook-collect".into()));
        assert_eq!(form_encode(&fields), body);
    }

    fn unauthorized(
        _err: Box<dyn std::error::Error + Send + Sync + 'static>,
        _client: Arc<SlackHyperClient>,
        _states: SlackClientEventsUserState,
    ) -> HttpStatusCode {
        HttpStatusCode::UNAUTHORIZED
    }

    async fn on_http_command(
        Extension(ev): Extension<SlackCommandEvent>,
    ) -> axum::Json<SlackCommandEventResponse> {
        axum::Json(SlackCommandEventResponse::new(
            SlackMessageContent::new().with_text(format!(
                "{} {} by {} in {}",
                ev.command.value(),
                ev.text.unwrap_or_default(),
                ev.user_id.value(),
                ev.channel_id.value()
            )),
        ))
    }

    async fn on_http_interaction(Extension(ev): Extension<SlackInteractionEvent>) -> String {
        match ev {
            SlackInteractionEvent::BlockActions(ba) => {
                let a = &ba.actions.unwrap()[0];
                format!(
                    "{}={} by {}",
                    a.action_id.value(),
                    a.value.clone().unwrap_or_default(),
                    ba.user.unwrap().id.value()
                )
            }
            other => format!("unexpected {other:?}"),
        }
    }

    use axum::Extension;

    #[tokio::test]
    async fn signed_form_bodies_pass_slack_morphisms_axum_verifier_and_forged_ones_do_not() {
        let standin = SlackStandin::start().await;
        let secret = "standin-signing-secret";
        let env: Arc<SlackHyperListenerEnvironment> = Arc::new(
            SlackClientEventsListenerEnvironment::new(client(&standin))
                .with_error_handler(unauthorized),
        );
        let listener = SlackEventsAxumListener::<SlackHyperHttpsConnector>::new(env);
        let signing: SlackSigningSecret = secret.to_string().into();
        let app = Router::new()
            .route(
                "/slack/command",
                post(on_http_command).layer(
                    listener
                        .events_layer(&signing)
                        .with_event_extractor(SlackEventsExtractors::command_event()),
                ),
            )
            .route(
                "/slack/interaction",
                post(on_http_interaction).layer(
                    listener
                        .events_layer(&signing)
                        .with_event_extractor(SlackEventsExtractors::interaction_event()),
                ),
            );
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", tcp.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(tcp, app).await });
        const FORM: &str = "application/x-www-form-urlencoded";

        let body = slash_command_form(
            "/db",
            "rollback x",
            "U1",
            "C1",
            "1.2.3",
            &standin.response_url("c"),
        );
        let r = post_signed(&format!("{base}/slack/command"), secret, &body, FORM).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["text"], "/db rollback x by U1 in C1");

        let click = block_action(
            "approve",
            "req-42",
            "U2",
            "C1",
            "1700000000.000100",
            "1700000001.000002",
            &standin.response_url("i"),
            "4.5.6",
        );
        let form = block_action_form(&click);
        assert!(form.starts_with("payload=%7B%22"), "{form}");
        let decoded: Vec<(String, String)> = serde_urlencoded::from_str(&form).unwrap();
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].0, "payload");
        assert_eq!(serde_json::from_str::<Value>(&decoded[0].1).unwrap(), click);
        let r = post_signed(&format!("{base}/slack/interaction"), secret, &form, FORM).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "approve=req-42 by U2");

        // Forged: right timestamp, signature over another body.
        let now = now_timestamp();
        let forged = sign(secret, &now, "token=other");
        let r =
            post_signed_with(&format!("{base}/slack/command"), &body, FORM, &now, &forged).await;
        assert_eq!(r.status(), 401);
        // Wrong secret.
        let r = post_signed(
            &format!("{base}/slack/command"),
            "not-the-secret",
            &body,
            FORM,
        )
        .await;
        assert_eq!(r.status(), 401);
        // Stale: correctly signed, ten minutes old.
        let old = (now.parse::<u64>().unwrap() - 600).to_string();
        let r = post_signed_with(
            &format!("{base}/slack/command"),
            &body,
            FORM,
            &old,
            &sign(secret, &old, &body),
        )
        .await;
        assert_eq!(r.status(), 401);
        server.abort();
    }
}
