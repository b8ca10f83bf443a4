//! A stand-in for Discord's servers on 127.0.0.1, speaking Discord's wire format, for the
//! Discord adapter's integration tests.
//!
//! One [`DiscordStandin`] serves, on one port:
//! - the REST API under `/api/v10/...`, the paths serenity's `Http` calls once it is built with
//!   `proxy(base_url)` (see `dualkey::adapters::discord::http::client`): the gateway URL lookup,
//!   channel messages (post, edit), interaction callbacks, the interaction webhooks (edit the
//!   original response, follow-ups, edit a follow-up) and the bulk command registration (global
//!   and per guild). Every call is recorded; failures (429 with `retry_after`, global 429, 500,
//!   401, 404, ...) can be programmed per route with [`DiscordStandin::fail_next`];
//! - the gateway websocket at `/gateway` (the URL `GET /api/v10/gateway` hands out): HELLO on
//!   connect, IDENTIFY → READY, RESUME → replay + RESUMED, heartbeats → ACK, and dispatches
//!   (`INTERACTION_CREATE`) pushed by the test with a sequence number.
//!
//! Interactions the stand-in should know about (to accept their callbacks and webhook calls) are
//! the ones sent over the gateway with [`DiscordStandin::send_interaction`], or, in HTTP
//! interactions mode (where the test POSTs the interaction to the bot itself), the ones handed
//! to [`DiscordStandin::note_interaction`] first. A callback or webhook call for an unknown
//! interaction is answered as Discord answers it: 404 `Unknown interaction` / `Unknown Webhook`.
//!
//! The payload builders ([`command_interaction`], [`component_interaction`],
//! [`autocomplete_interaction`], [`ping`]) produce interactions with every field serenity 0.12.5
//! requires; [`sign`] / [`post_signed`] sign HTTP-mode requests with Ed25519 as Discord does.
//!
//! The tests at the bottom drive the stand-in with serenity itself (REST and gateway client),
//! the crate the adapter uses against the real Discord.

#![allow(dead_code)] // The stand-in's API is wider than what its own tests use.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The application (and bot user) id the stand-in uses; bots' user ids equal their app id.
pub const APP_ID: u64 = 1_100_000_000_000_000_001;
pub const BOT_USER_ID: u64 = APP_ID;
pub const BOT_NAME: &str = "dualkey";
/// The guild the fixtures use unless told otherwise.
pub const GUILD_ID: u64 = 1_100_000_000_000_000_100;
/// The bot's own (managed) role in [`GUILD_ID`].
pub const BOT_ROLE_ID: u64 = 1_100_000_000_000_000_101;
/// The permissions of @everyone in [`GUILD_ID`]: Discord's default for a new server (View
/// Channels, Send Messages, Embed Links, Read Message History, ...).
pub const EVERYONE_PERMISSIONS: &str = "1071698660929";
/// The permissions of the bot's role: View Channel, Send Messages, Embed Links, Read Message
/// History (what an invite link asking for those grants).
pub const BOT_ROLE_PERMISSIONS: &str = "84992";
/// The id of the registered `/db` command in interaction payloads.
pub const COMMAND_ID: u64 = 1_100_000_000_000_000_200;
pub const COMMAND_NAME: &str = "db";
/// Bot token the tests hand to serenity (any `Bot <non-empty>` is accepted).
pub const BOT_TOKEN: &str = "standin-bot-token";

/// RFC 8032 §7.1 TEST 1: secret key, public key, and the signature of the empty message.
pub const RFC8032_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
pub const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
pub const RFC8032_SIGNATURE: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

/// `attachment_size_limit` Discord puts in interactions (10 MiB, a guild without boosts).
pub const ATTACHMENT_SIZE_LIMIT: u64 = 10 * 1024 * 1024;
/// `app_permissions` in interactions (a bot with the usual text permissions).
pub const APP_PERMISSIONS: &str = "2248473465835073";

/// How long `send_*` waits for an identified gateway connection before giving up.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
const DEFAULT_HEARTBEAT_MS: u64 = 41_250;
const FIRST_SNOWFLAKE: u64 = 1_300_000_000_000_000_000;

/// One REST call as the stand-in received it.
#[derive(Clone, Debug)]
pub struct Call {
    /// `GET`, `POST`, `PATCH`, `PUT`, `DELETE`.
    pub method: String,
    /// The path after `/api/v10`, e.g. `/channels/222/messages`.
    pub path: String,
    pub query: Option<String>,
    /// Every request header, names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The `Authorization` header as sent, e.g. `Bot standin-bot-token`.
    pub auth: Option<String>,
    /// The body as JSON (`Null` when empty; a JSON string when it was not JSON).
    pub body: Value,
    /// The status the stand-in answered with.
    pub status: u16,
    /// The programmed failure this call was answered with; `None` when served normally.
    pub failure: Option<Failure>,
    pub at: Instant,
}

impl Call {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A failure to answer the next call(s) of a route with, see [`DiscordStandin::fail_next`].
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// HTTP 429 with `Retry-After` (whole seconds, rounded up), `X-RateLimit-Scope: user` and
    /// the body `{"message":"You are being rate limited.","retry_after":<secs>,"global":false,"code":0}`.
    RateLimited { retry_after: f64 },
    /// The same with `"global": true`, `X-RateLimit-Global: true`, `X-RateLimit-Scope: global`.
    GlobalRateLimited { retry_after: f64 },
    /// HTTP 500 `{"message":"500: Internal Server Error","code":0}`.
    ServerError,
    /// HTTP 502 with a text body, as Discord's edge answers when the API is down.
    BadGateway,
    /// HTTP 401 `{"message":"401: Unauthorized","code":0}`.
    Unauthorized,
    /// HTTP 404 `{"message":"Unknown Message","code":10008}`.
    NotFound,
    /// Any status with `{"code":code,"message":message}`.
    Status {
        status: u16,
        code: i64,
        message: String,
    },
}

/// One IDENTIFY a gateway client sent.
#[derive(Clone, Debug)]
pub struct Identify {
    /// `d.token` as sent (serenity sends `Bot <token>`).
    pub token: String,
    pub intents: u64,
    /// The whole frame.
    pub frame: Value,
    pub connection: usize,
}

/// One RESUME a gateway client sent.
#[derive(Clone, Debug)]
pub struct Resume {
    pub token: String,
    pub session_id: String,
    pub seq: u64,
    /// Whether the stand-in resumed it (known session) or answered INVALID_SESSION.
    pub accepted: bool,
    pub connection: usize,
}

#[derive(Debug)]
enum WsOut {
    Text(String),
    Close(u16),
}

/// A message as the stand-in keeps it.
#[derive(Clone, Debug)]
struct Stored {
    channel: u64,
    id: u64,
    /// The Message object as Discord would return it now.
    message: Value,
    /// The interaction token that created it (original response or follow-up), if any.
    token: Option<String>,
}

/// What the stand-in knows of an interaction.
#[derive(Clone, Debug)]
struct Known {
    interaction: Value,
    token: String,
    application_id: u64,
    channel: u64,
    kind: u64,
    /// For component interactions: the id of the message the component is on.
    component_message: Option<u64>,
    acknowledged: bool,
    /// The `@original` response message (command interactions).
    original: Option<u64>,
}

struct Session {
    id: String,
    seq: u64,
    /// Every dispatch of the session, for replay on RESUME.
    log: Vec<(u64, String)>,
}

#[derive(Default)]
struct Store {
    calls: Vec<Call>,
    messages: Vec<Stored>,
    /// (message id, PATCH body) for every successful edit, in order.
    edits: Vec<(u64, Value)>,
    /// Failure queues by route key ("METHOD /prefix" or "/prefix"), in insertion order.
    failures: Vec<(String, VecDeque<Failure>)>,
    interactions: HashMap<u64, Known>,
    expired_tokens: Vec<String>,
    /// Registered commands: global (None) or per guild.
    commands: HashMap<Option<u64>, Vec<Value>>,
    /// DM channels opened with `POST /users/@me/channels`: user id → channel id.
    dms: HashMap<u64, u64>,
    /// Bot tokens Discord no longer accepts (reset or revoked): every call with one gets 401.
    revoked_tokens: Vec<String>,
    /// Guild channels the bot cannot see: `GET /channels/{id}` answers 403 Missing Access.
    hidden_channels: Vec<u64>,
    /// `permission_overwrites` of guild channels (none unless set).
    overwrites: HashMap<u64, Vec<Value>>,
    // gateway
    socket: Option<(usize, mpsc::UnboundedSender<WsOut>)>,
    session: Option<Session>,
    identifies: Vec<Identify>,
    resumes: Vec<Resume>,
    gateway_queries: Vec<Option<String>>,
    other_frames: Vec<String>,
    dispatched: Vec<Value>,
}

struct Inner {
    port: u16,
    state: Mutex<Store>,
    snowflakes: AtomicU64,
    connections: AtomicUsize,
    heartbeats: AtomicUsize,
    heartbeat_interval_ms: AtomicU64,
    ack_heartbeats: AtomicBool,
    /// Bumped on every change waiters care about.
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

    fn snowflake(&self) -> u64 {
        FIRST_SNOWFLAKE + self.snowflakes.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn take_failure(&self, method: &str, path: &str) -> Option<Failure> {
        let mut st = self.state();
        for (key, queue) in st.failures.iter_mut() {
            if queue.is_empty() {
                continue;
            }
            let (want_method, prefix) = match key.split_once(' ') {
                Some((m, p)) => (Some(m), p),
                None => (None, key.as_str()),
            };
            if want_method.is_some_and(|m| !m.eq_ignore_ascii_case(method)) {
                continue;
            }
            if path.starts_with(prefix) {
                return queue.pop_front();
            }
        }
        None
    }
}

/// The stand-in Discord server. Stops serving when dropped or on [`DiscordStandin::shutdown`].
pub struct DiscordStandin {
    addr: SocketAddr,
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl DiscordStandin {
    /// Binds 127.0.0.1:0 and serves in a tokio task; HELLO asks for heartbeats every 41.25 s.
    pub async fn start() -> DiscordStandin {
        Self::start_with_heartbeat(DEFAULT_HEARTBEAT_MS).await
    }

    /// Like [`DiscordStandin::start`], with HELLO's `heartbeat_interval` in milliseconds.
    pub async fn start_with_heartbeat(heartbeat_interval_ms: u64) -> DiscordStandin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Discord stand-in on 127.0.0.1:0");
        let addr = listener.local_addr().expect("stand-in local address");
        let (stop, stop_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            port: addr.port(),
            state: Mutex::new(Store::default()),
            snowflakes: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            heartbeats: AtomicUsize::new(0),
            heartbeat_interval_ms: AtomicU64::new(heartbeat_interval_ms),
            ack_heartbeats: AtomicBool::new(true),
            changes: watch::channel(0).0,
            shutdown: stop_rx.clone(),
        });
        let app = Router::new()
            .route("/api/v10/{*rest}", any(rest))
            .route("/gateway", get(gateway))
            .with_state(inner.clone());
        let mut graceful = stop_rx;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = graceful.wait_for(|stopped| *stopped).await;
                })
                .await;
        });
        DiscordStandin {
            addr,
            inner,
            stop,
            server: Mutex::new(Some(server)),
        }
    }

    /// Stops serving: closes the gateway socket and waits (briefly) for the server task.
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

    /// `http://127.0.0.1:PORT`, the value for `discord.api_base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:PORT/gateway`, what `GET /api/v10/gateway` answers.
    pub fn gateway_url(&self) -> String {
        format!("ws://{}/gateway", self.addr)
    }

    // ----- REST -----

    /// Every REST call so far, failed ones included, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.state().calls.clone()
    }

    /// The calls whose path (after `/api/v10`) starts with `path_prefix`.
    pub fn calls_to(&self, path_prefix: &str) -> Vec<Call> {
        self.inner
            .state()
            .calls
            .iter()
            .filter(|c| c.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }

    /// The messages of a channel as `(id, current Message object)`, in post order; original
    /// responses and follow-ups of interactions in that channel included.
    pub fn messages_in(&self, channel: u64) -> Vec<(u64, Value)> {
        self.inner
            .state()
            .messages
            .iter()
            .filter(|m| m.channel == channel)
            .map(|m| (m.id, m.message.clone()))
            .collect()
    }

    /// The current Message object (content, embeds, components, flags, ...) of a message.
    pub fn message(&self, channel: u64, id: u64) -> Option<Value> {
        self.inner
            .state()
            .messages
            .iter()
            .find(|m| m.channel == channel && m.id == id)
            .map(|m| m.message.clone())
    }

    /// The bodies of the successful edits of a message (channel PATCH, webhook PATCH, or a
    /// type-7 UPDATE_MESSAGE callback's `data`), in order.
    pub fn edits_of(&self, id: u64) -> Vec<Value> {
        self.inner
            .state()
            .edits
            .iter()
            .filter(|(m, _)| *m == id)
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// The callbacks (`POST /interactions/{id}/{token}/callback`) for an interaction, failed
    /// and refused ones included; `body` is the response (`{"type":5,...}`).
    pub fn interaction_responses(&self, interaction_id: u64) -> Vec<Call> {
        let prefix = format!("/interactions/{interaction_id}/");
        self.calls_to(&prefix)
    }

    /// The calls to an interaction's webhook (`/webhooks/{app}/{token}...`): edits of the
    /// original response, follow-ups, edits of follow-ups.
    pub fn webhook_calls(&self, token: &str) -> Vec<Call> {
        self.inner
            .state()
            .calls
            .iter()
            .filter(|c| {
                let segs: Vec<&str> = c.path.split('/').collect();
                segs.get(1) == Some(&"webhooks") && segs.get(3) == Some(&token)
            })
            .cloned()
            .collect()
    }

    /// The `@original` response message of an interaction, as `(channel, id, message)`.
    pub fn original_response(&self, interaction_id: u64) -> Option<(u64, u64, Value)> {
        let st = self.inner.state();
        let known = st.interactions.get(&interaction_id)?;
        let id = known.original.or(known.component_message)?;
        st.messages
            .iter()
            .find(|m| m.id == id)
            .map(|m| (m.channel, m.id, m.message.clone()))
    }

    /// The DM channel the bot opened with a user (`POST /users/@me/channels`), if any.
    pub fn dm_channel(&self, user_id: u64) -> Option<u64> {
        self.inner.state().dms.get(&user_id).copied()
    }

    /// The messages sent to a user in a DM, as `(id, current Message object)`.
    pub fn dms_to(&self, user_id: u64) -> Vec<(u64, Value)> {
        match self.dm_channel(user_id) {
            Some(c) => self.messages_in(c),
            None => Vec::new(),
        }
    }

    /// The commands registered by the last bulk overwrite: global (`None`) or for a guild.
    pub fn commands(&self, guild: Option<u64>) -> Vec<Value> {
        self.inner
            .state()
            .commands
            .get(&guild)
            .cloned()
            .unwrap_or_default()
    }

    /// Answers the next `n` calls of a route with `failure` instead of serving them. Failed
    /// calls are recorded (with `Call::failure` set) and change nothing. `route` is a path
    /// prefix after `/api/v10` (`/channels/222/messages`, `/webhooks/`), optionally preceded by a
    /// method: `"PATCH /channels/222/messages/"`. Queues are consulted in the order they were
    /// first programmed.
    pub fn fail_next(&self, route: &str, n: usize, failure: Failure) {
        let mut st = self.inner.state();
        let idx = match st.failures.iter().position(|(k, _)| k == route) {
            Some(i) => i,
            None => {
                st.failures.push((route.to_string(), VecDeque::new()));
                st.failures.len() - 1
            }
        };
        st.failures[idx].1.extend(std::iter::repeat_n(failure, n));
    }

    /// Makes Discord refuse the bot token `token` from now on (401 on every call), as after a
    /// token reset.
    pub fn revoke_token(&self, token: &str) {
        self.inner.state().revoked_tokens.push(token.to_string());
    }

    /// Hides `channel` from the bot: `GET /channels/{id}` answers 403 `Missing Access` (50001),
    /// as for a channel whose permissions do not let the bot view it.
    pub fn hide_channel(&self, channel: u64) {
        self.inner.state().hidden_channels.push(channel);
    }

    /// Sets the `permission_overwrites` of guild channel `channel` (see [`overwrite`]).
    pub fn set_overwrites(&self, channel: u64, overwrites: Vec<Value>) {
        self.inner.state().overwrites.insert(channel, overwrites);
    }

    /// Makes an interaction token expire, as Discord does after 15 minutes: its webhook calls
    /// get 401 `Invalid Webhook Token` (50027) and its callback 404 `Unknown interaction`.
    pub fn expire_token(&self, token: &str) {
        self.inner.state().expired_tokens.push(token.to_string());
    }

    /// Tells the stand-in about an interaction the test delivers itself (HTTP interactions
    /// mode), so its callback and webhook calls are accepted. `send_interaction` does this too.
    pub fn note_interaction(&self, interaction: &Value) {
        let id = snowflake_of(&interaction["id"]).expect("interaction id");
        let token = interaction["token"]
            .as_str()
            .expect("interaction token")
            .to_string();
        let kind = interaction["type"].as_u64().unwrap_or(0);
        let channel = snowflake_of(&interaction["channel_id"]).unwrap_or(0);
        let application_id = snowflake_of(&interaction["application_id"]).unwrap_or(APP_ID);
        let component_message = if kind == 3 {
            snowflake_of(&interaction["message"]["id"])
        } else {
            None
        };
        self.inner.state().interactions.insert(
            id,
            Known {
                interaction: interaction.clone(),
                token,
                application_id,
                channel,
                kind,
                component_message,
                acknowledged: false,
                original: None,
            },
        );
    }

    /// Posts a message as the bot, without going through the API (e.g. the card a click refers
    /// to). Returns its id.
    pub fn seed_message(&self, channel: u64, body: &Value) -> u64 {
        let id = self.inner.snowflake();
        let message = message_json(id, channel, body, None);
        self.inner.state().messages.push(Stored {
            channel,
            id,
            message,
            token: None,
        });
        id
    }

    // ----- Gateway -----

    /// How many gateway connections have been opened so far.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` connections have been opened and one is identified or resumed
    /// (ready for dispatches) now.
    pub async fn wait_connections(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| st.socket.is_some() && self.connections() >= n)
            .await
    }

    /// Every IDENTIFY so far.
    pub fn identifies(&self) -> Vec<Identify> {
        self.inner.state().identifies.clone()
    }

    /// Every RESUME so far.
    pub fn resumes(&self) -> Vec<Resume> {
        self.inner.state().resumes.clone()
    }

    /// Heartbeats (op 1) received so far.
    pub fn heartbeats(&self) -> usize {
        self.inner.heartbeats.load(Ordering::SeqCst)
    }

    /// Stop (or resume) answering heartbeats with op 11, to make a client see a zombie link.
    pub fn ack_heartbeats(&self, on: bool) {
        self.inner.ack_heartbeats.store(on, Ordering::SeqCst);
    }

    /// The query strings gateway clients connected with (serenity: `v=10`).
    pub fn gateway_queries(&self) -> Vec<Option<String>> {
        self.inner.state().gateway_queries.clone()
    }

    /// The current session id, if a client identified.
    pub fn session_id(&self) -> Option<String> {
        self.inner.state().session.as_ref().map(|s| s.id.clone())
    }

    /// Every dispatch sent (READY, RESUMED, INTERACTION_CREATE, ...), frames in order.
    pub fn dispatched(&self) -> Vec<Value> {
        self.inner.state().dispatched.clone()
    }

    /// Frames from the client that were not IDENTIFY, RESUME or heartbeats.
    pub fn other_frames(&self) -> Vec<String> {
        self.inner.state().other_frames.clone()
    }

    /// Sends `INTERACTION_CREATE` with `interaction` to the identified connection (waiting up to
    /// 5 s for one), and remembers the interaction (see [`DiscordStandin::note_interaction`]).
    /// Returns the sequence number.
    pub async fn send_interaction(&self, interaction: Value) -> u64 {
        self.note_interaction(&interaction);
        self.dispatch("INTERACTION_CREATE", interaction).await
    }

    /// Sends a dispatch (op 0) `t` with data `d`; returns its sequence number.
    pub async fn dispatch(&self, t: &str, d: Value) -> u64 {
        let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
        loop {
            let mut changes = self.inner.changes.subscribe();
            {
                let mut st = self.inner.state();
                if let Some((_, tx)) = st.socket.clone() {
                    let (seq, text) = push_dispatch(&mut st, t, d.clone());
                    if tx.send(WsOut::Text(text)).is_err() {
                        // The connection is gone; the event stays in the session log and is
                        // replayed if the client resumes, as Discord does.
                        st.socket = None;
                    }
                    drop(st);
                    self.inner.bump();
                    return seq;
                }
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                panic!(
                    "Discord stand-in: no identified gateway client within {CONNECT_WAIT:?} \
                     to send {t}"
                );
            }
        }
    }

    /// Logs an `INTERACTION_CREATE` in the session without sending it, as if the connection had
    /// lost it: a client that resumes gets it replayed (Discord's buffering during a drop).
    /// Remembers the interaction. Returns the sequence number.
    pub fn queue_interaction(&self, interaction: Value) -> u64 {
        self.note_interaction(&interaction);
        let mut st = self.inner.state();
        assert!(st.session.is_some(), "queue_interaction: no session yet");
        push_dispatch(&mut st, "INTERACTION_CREATE", interaction).0
    }

    /// Closes the current gateway socket (close code 4000, "unknown error": resumable), as
    /// Discord does when it drops a connection. Returns whether a socket was open. Later sends
    /// wait for the client to come back.
    pub fn disconnect(&self) -> bool {
        self.disconnect_with(4000)
    }

    /// Closes the current gateway socket with a close code (e.g. 4009 session timed out, which
    /// makes serenity forget the session and identify again).
    pub fn disconnect_with(&self, code: u16) -> bool {
        let socket = self.inner.state().socket.take();
        self.inner.bump();
        match socket {
            Some((_, tx)) => tx.send(WsOut::Close(code)).is_ok(),
            None => false,
        }
    }

    /// Sends op 9 INVALID_SESSION (`d` = `resumable`) on the current socket; with `false` the
    /// session is forgotten, so only a new IDENTIFY works.
    pub fn invalid_session(&self, resumable: bool) -> bool {
        let mut st = self.inner.state();
        if !resumable {
            st.session = None;
        }
        let sent = match st.socket.take() {
            Some((_, tx)) => tx
                .send(WsOut::Text(json!({"op": 9, "d": resumable}).to_string()))
                .is_ok(),
            None => false,
        };
        drop(st);
        self.inner.bump();
        sent
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

    /// Waits until at least `n` REST calls start with `path_prefix`.
    pub async fn wait_calls(&self, path_prefix: &str, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| {
            st.calls
                .iter()
                .filter(|c| c.path.starts_with(path_prefix))
                .count()
                >= n
        })
        .await
    }
}

impl Drop for DiscordStandin {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(handle) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            handle.abort();
        }
    }
}

fn push_dispatch(st: &mut Store, t: &str, d: Value) -> (u64, String) {
    let frame = match st.session.as_mut() {
        Some(session) => {
            session.seq += 1;
            let frame = json!({"op": 0, "s": session.seq, "t": t, "d": d});
            session.log.push((session.seq, frame.to_string()));
            frame
        }
        None => json!({"op": 0, "s": 1, "t": t, "d": d}),
    };
    let seq = frame["s"].as_u64().unwrap_or(0);
    let text = frame.to_string();
    st.dispatched.push(frame);
    (seq, text)
}

/// A snowflake as a JSON string or number.
pub fn snowflake_of(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

// ----- REST handlers -----

enum Reply {
    Json(StatusCode, Value),
    Empty(StatusCode),
}

fn discord_error(status: StatusCode, code: i64, message: &str) -> Reply {
    Reply::Json(status, json!({"message": message, "code": code}))
}

fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

/// The bot's user object.
pub fn bot_user() -> Value {
    json!({
        "id": BOT_USER_ID.to_string(),
        "username": BOT_NAME,
        "discriminator": "0",
        "global_name": null,
        "avatar": null,
        "bot": true,
        "public_flags": 0,
    })
}

/// A permission overwrite: `kind` 0 for a role, 1 for a member; `allow` and `deny` are bit sets.
pub fn overwrite(id: u64, kind: u8, allow: u64, deny: u64) -> Value {
    json!({"id": id.to_string(), "type": kind, "allow": allow.to_string(), "deny": deny.to_string()})
}

/// A text channel of [`GUILD_ID`] as `GET /channels/{id}` returns it.
fn guild_channel(channel: u64, overwrites: Vec<Value>) -> Value {
    json!({
        "id": channel.to_string(),
        "type": 0,
        "guild_id": GUILD_ID.to_string(),
        "position": 0,
        "permission_overwrites": overwrites,
        "name": format!("channel-{channel}"),
        "topic": null,
        "nsfw": false,
        "last_message_id": null,
        "rate_limit_per_user": 0,
        "parent_id": null,
        "flags": 0,
    })
}

/// A role object.
fn role(id: u64, name: &str, permissions: &str, managed: bool) -> Value {
    json!({
        "id": id.to_string(),
        "name": name,
        "color": 0,
        "hoist": false,
        "icon": null,
        "unicode_emoji": null,
        "position": if managed { 1 } else { 0 },
        "permissions": permissions,
        "managed": managed,
        "mentionable": false,
        "flags": 0,
    })
}

/// [`GUILD_ID`] as `GET /guilds/{id}` returns it: @everyone (id = the guild's) and the bot's
/// managed role, owned by someone else.
fn guild_json() -> Value {
    json!({
        "id": GUILD_ID.to_string(),
        "name": "Stand-in",
        "icon": null,
        "splash": null,
        "discovery_splash": null,
        "owner_id": "300000000000000009",
        "afk_channel_id": null,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "roles": [
            role(GUILD_ID, "@everyone", EVERYONE_PERMISSIONS, false),
            role(BOT_ROLE_ID, BOT_NAME, BOT_ROLE_PERMISSIONS, true),
        ],
        "emojis": [],
        "features": [],
        "mfa_level": 0,
        "application_id": null,
        "system_channel_id": null,
        "system_channel_flags": 0,
        "rules_channel_id": null,
        "vanity_url_code": null,
        "description": null,
        "banner": null,
        "premium_tier": 0,
        "preferred_locale": "en-US",
        "public_updates_channel_id": null,
        "nsfw_level": 0,
        "premium_progress_bar_enabled": false,
    })
}

/// A Message object as Discord returns it, from a create/edit body.
fn message_json(id: u64, channel: u64, body: &Value, webhook: Option<u64>) -> Value {
    let mut m = json!({
        "id": id.to_string(),
        "channel_id": channel.to_string(),
        "author": bot_user(),
        "content": "",
        "timestamp": now_iso(),
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "components": [],
        "pinned": false,
        "type": 0,
        "flags": 0,
    });
    if let Some(app) = webhook {
        m["webhook_id"] = json!(app.to_string());
        m["application_id"] = json!(app.to_string());
    }
    apply_edit(&mut m, body);
    m
}

/// Applies the fields of a create/edit body to a Message object (absent fields keep their
/// value, as in Discord's PATCH).
fn apply_edit(m: &mut Value, body: &Value) {
    for key in ["content", "components", "flags", "tts"] {
        if let Some(v) = body.get(key) {
            m[key] = if v.is_null() {
                match key {
                    "content" => json!(""),
                    "components" => json!([]),
                    "flags" => json!(0),
                    _ => json!(false),
                }
            } else {
                v.clone()
            };
        }
    }
    if let Some(embeds) = body.get("embeds") {
        let embeds = embeds
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| {
                        let mut e = e.clone();
                        if let Value::Object(map) = &mut e {
                            map.entry("type").or_insert(json!("rich"));
                        }
                        e
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        m["embeds"] = Value::Array(embeds);
    }
    // A message that only had its content replaced still carries an `embed` given singly.
    if let Some(embed) = body.get("embed").filter(|e| e.is_object()) {
        let mut e = embed.clone();
        e["type"] = json!("rich");
        m["embeds"] = json!([e]);
    }
}

fn is_edit_body_valid(body: &Value) -> Result<(), Reply> {
    if !body.is_object() {
        return Err(discord_error(
            StatusCode::BAD_REQUEST,
            50109,
            "The request body contains invalid JSON.",
        ));
    }
    if let Some(content) = body.get("content").and_then(Value::as_str) {
        if content.chars().count() > 2000 {
            return Err(discord_error(
                StatusCode::BAD_REQUEST,
                50035,
                "Invalid Form Body (content: Must be 2000 or fewer in length.)",
            ));
        }
    }
    if let Some(embeds) = body.get("embeds").and_then(Value::as_array) {
        if embeds.len() > 10 {
            return Err(discord_error(
                StatusCode::BAD_REQUEST,
                50035,
                "Invalid Form Body (embeds: Must be 10 or fewer in length.)",
            ));
        }
    }
    if let Some(rows) = body.get("components").and_then(Value::as_array) {
        if rows.len() > 5 {
            return Err(discord_error(
                StatusCode::BAD_REQUEST,
                50035,
                "Invalid Form Body (components: Must be 5 or fewer in length.)",
            ));
        }
    }
    Ok(())
}

async fn rest(
    State(inner): State<Arc<Inner>>,
    method: Method,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let path = format!("/{}", rest.trim_end_matches('/'));
    let body_json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let header_list = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();

    let failure = inner.take_failure(method.as_str(), &path);
    let reply = match &failure {
        Some(f) => failure_reply(f),
        None => {
            let r = serve(&inner, &method, &path, auth.as_deref(), &body_json);
            match r {
                Reply::Json(status, v) => json_response(status, &v),
                Reply::Empty(status) => status.into_response(),
            }
        }
    };
    inner.state().calls.push(Call {
        method: method.as_str().to_string(),
        path,
        query,
        headers: header_list,
        auth,
        body: body_json,
        status: reply.status().as_u16(),
        failure,
        at,
    });
    inner.bump();
    reply
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn failure_reply(failure: &Failure) -> Response {
    let rate_limited = |retry_after: f64, global: bool| {
        let body = json!({
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": global,
            "code": 0,
        });
        let mut resp = json_response(StatusCode::TOO_MANY_REQUESTS, &body);
        let h = resp.headers_mut();
        let secs = retry_after.ceil().max(0.0) as u64;
        h.insert(header::RETRY_AFTER, secs.to_string().parse().unwrap());
        h.insert("x-ratelimit-limit", "5".parse().unwrap());
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        h.insert(
            "x-ratelimit-reset-after",
            format!("{retry_after:.3}").parse().unwrap(),
        );
        h.insert("x-ratelimit-bucket", "standin".parse().unwrap());
        h.insert(
            "x-ratelimit-scope",
            if global { "global" } else { "user" }.parse().unwrap(),
        );
        if global {
            h.insert("x-ratelimit-global", "true".parse().unwrap());
        }
        resp
    };
    match failure {
        Failure::RateLimited { retry_after } => rate_limited(*retry_after, false),
        Failure::GlobalRateLimited { retry_after } => rate_limited(*retry_after, true),
        Failure::ServerError => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"message": "500: Internal Server Error", "code": 0}),
        ),
        Failure::BadGateway => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/plain")],
            "error code: 502",
        )
            .into_response(),
        Failure::Unauthorized => json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"message": "401: Unauthorized", "code": 0}),
        ),
        Failure::NotFound => json_response(
            StatusCode::NOT_FOUND,
            &json!({"message": "Unknown Message", "code": 10008}),
        ),
        Failure::Status {
            status,
            code,
            message,
        } => json_response(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &json!({"message": message, "code": code}),
        ),
    }
}

fn bot_auth_ok(auth: Option<&str>) -> bool {
    auth.and_then(|a| a.strip_prefix("Bot "))
        .is_some_and(|t| !t.trim().is_empty())
}

fn parse_id(s: &str) -> Option<u64> {
    s.parse().ok()
}

/// Serves one REST route (the ones the adapter uses), answering as Discord does.
fn serve(inner: &Inner, method: &Method, path: &str, auth: Option<&str>, body: &Value) -> Reply {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let unauthorized = || discord_error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
    let not_found = || discord_error(StatusCode::NOT_FOUND, 0, "404: Not Found");
    let revoked = auth
        .and_then(|a| a.strip_prefix("Bot "))
        .is_some_and(|t| inner.state().revoked_tokens.iter().any(|r| r == t));
    if revoked {
        return unauthorized();
    }
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["channels", channel]) => {
            if !bot_auth_ok(auth) {
                return unauthorized();
            }
            let Some(channel) = parse_id(channel) else {
                return discord_error(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
            };
            let st = inner.state();
            if st.hidden_channels.contains(&channel) {
                return discord_error(StatusCode::FORBIDDEN, 50001, "Missing Access");
            }
            let overwrites = st.overwrites.get(&channel).cloned().unwrap_or_default();
            Reply::Json(StatusCode::OK, guild_channel(channel, overwrites))
        }
        ("GET", ["guilds", guild]) => {
            if !bot_auth_ok(auth) {
                return unauthorized();
            }
            if parse_id(guild) != Some(GUILD_ID) {
                return discord_error(StatusCode::NOT_FOUND, 10004, "Unknown Guild");
            }
            Reply::Json(StatusCode::OK, guild_json())
        }
        ("GET", ["guilds", guild, "members", user_id]) => {
            if !bot_auth_ok(auth) {
                return unauthorized();
            }
            if parse_id(guild) != Some(GUILD_ID) {
                return discord_error(StatusCode::NOT_FOUND, 10004, "Unknown Guild");
            }
            let Some(user_id) = parse_id(user_id) else {
                return discord_error(StatusCode::NOT_FOUND, 10013, "Unknown User");
            };
            let mut m = member(user_id);
            if user_id == BOT_USER_ID {
                m["user"] = bot_user();
                m["roles"] = json!([BOT_ROLE_ID.to_string()]);
            }
            if let Some(map) = m.as_object_mut() {
                // Only interactions carry the member's permissions.
                map.remove("permissions");
            }
            Reply::Json(StatusCode::OK, m)
        }
        ("GET", ["gateway"]) => Reply::Json(
            StatusCode::OK,
            json!({"url": format!("ws://127.0.0.1:{}/gateway", inner.port)}),
        ),
        ("GET", ["gateway", "bot"]) => {
            if !bot_auth_ok(auth) {
                return unauthorized();
            }
            Reply::Json(
                StatusCode::OK,
                json!({
                    "url": format!("ws://127.0.0.1:{}/gateway", inner.port),
                    "shards": 1,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 999,
                        "reset_after": 14_400_000,
                        "max_concurrency": 1,
                    },
                }),
            )
        }
        ("POST", ["users", "@me", "channels"]) => {
            if !bot_auth_ok(auth) {
                return unauthorized();
            }
            let Some(user_id) = snowflake_of(&body["recipient_id"]) else {
                return discord_error(
                    StatusCode::BAD_REQUEST,
                    50035,
                    "Invalid Form Body (recipient_id)",
                );
            };
            let mut st = inner.state();
            let channel = match st.dms.get(&user_id) {
                Some(c) => *c,
                None => {
                    let c = inner.snowflake();
                    st.dms.insert(user_id, c);
                    c
                }
            };
            Reply::Json(
                StatusCode::OK,
                json!({
                    "id": channel.to_string(),
                    "type": 1,
                    "last_message_id": null,
                    "flags": 0,
                    "recipients": [user(user_id)],
                }),
            )
        }
        ("GET", ["users", "@me"]) => {
            if !bot_auth_ok(auth) {
                return unauthorized();
            }
            Reply::Json(StatusCode::OK, bot_user())
        }
        ("POST", ["channels", channel, "messages"]) => {
            if !bot_auth_ok(auth) {
                return unauthorized();
            }
            let Some(channel) = parse_id(channel) else {
                return discord_error(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
            };
            if let Err(r) = is_edit_body_valid(body) {
                return r;
            }
            let empty = |k: &str| match body.get(k) {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s.is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                Some(_) => false,
            };
            if empty("content") && empty("embeds") && empty("components") && empty("embed") {
                return discord_error(
                    StatusCode::BAD_REQUEST,
                    50006,
                    "Cannot send an empty message",
                );
            }
            let id = inner.snowflake();
            let message = message_json(id, channel, body, None);
            inner.state().messages.push(Stored {
                channel,
                id,
                message: message.clone(),
                token: None,
            });
            Reply::Json(StatusCode::OK, message)
        }
        ("PATCH", ["channels", channel, "messages", mid]) => {
            if !bot_auth_ok(auth) {
                return unauthorized();
            }
            if let Err(r) = is_edit_body_valid(body) {
                return r;
            }
            let (Some(channel), Some(mid)) = (parse_id(channel), parse_id(mid)) else {
                return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            };
            edit_stored(inner, |m| m.channel == channel && m.id == mid, body)
        }
        ("GET", ["channels", channel, "messages", mid]) => {
            if !bot_auth_ok(auth) {
                return unauthorized();
            }
            let (Some(channel), Some(mid)) = (parse_id(channel), parse_id(mid)) else {
                return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            };
            let st = inner.state();
            match st
                .messages
                .iter()
                .find(|m| m.channel == channel && m.id == mid)
            {
                Some(m) => Reply::Json(StatusCode::OK, m.message.clone()),
                None => discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message"),
            }
        }
        ("POST", ["interactions", id, token, "callback"]) => {
            let Some(id) = parse_id(id) else {
                return discord_error(StatusCode::NOT_FOUND, 10062, "Unknown interaction");
            };
            callback(inner, id, token, body)
        }
        (m, ["webhooks", app, token, rest @ ..]) if m == "POST" || m == "PATCH" || m == "GET" => {
            webhook(inner, method, app, token, rest, body)
        }
        ("PUT", ["applications", app, "commands"]) => {
            if !bot_auth_ok(auth) {
                return unauthorized();
            }
            overwrite_commands(inner, app, None, body)
        }
        ("PUT", ["applications", app, "guilds", guild, "commands"]) => {
            if !bot_auth_ok(auth) {
                return unauthorized();
            }
            let Some(guild) = parse_id(guild) else {
                return discord_error(StatusCode::NOT_FOUND, 10004, "Unknown Guild");
            };
            overwrite_commands(inner, app, Some(guild), body)
        }
        ("GET", ["applications", app, "commands"]) => {
            if !bot_auth_ok(auth) {
                return unauthorized();
            }
            if parse_id(app) != Some(APP_ID) {
                return discord_error(StatusCode::NOT_FOUND, 10002, "Unknown Application");
            }
            let list = inner
                .state()
                .commands
                .get(&None)
                .cloned()
                .unwrap_or_default();
            Reply::Json(StatusCode::OK, Value::Array(list))
        }
        ("GET", ["applications", app, "guilds", guild, "commands"]) => {
            if !bot_auth_ok(auth) {
                return unauthorized();
            }
            if parse_id(app) != Some(APP_ID) {
                return discord_error(StatusCode::NOT_FOUND, 10002, "Unknown Application");
            }
            let list = inner
                .state()
                .commands
                .get(&parse_id(guild))
                .cloned()
                .unwrap_or_default();
            Reply::Json(StatusCode::OK, Value::Array(list))
        }
        _ => not_found(),
    }
}

fn edit_stored(inner: &Inner, which: impl Fn(&Stored) -> bool, body: &Value) -> Reply {
    let mut st = inner.state();
    let Some(slot) = st.messages.iter_mut().find(|m| which(m)) else {
        return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
    };
    apply_edit(&mut slot.message, body);
    slot.message["edited_timestamp"] = json!(now_iso());
    let (id, message) = (slot.id, slot.message.clone());
    st.edits.push((id, body.clone()));
    Reply::Json(StatusCode::OK, message)
}

fn callback(inner: &Inner, id: u64, token: &str, body: &Value) -> Reply {
    let unknown = || discord_error(StatusCode::NOT_FOUND, 10062, "Unknown interaction");
    let mut st = inner.state();
    if st.expired_tokens.iter().any(|t| t == token) {
        return unknown();
    }
    let Some(known) = st.interactions.get(&id).cloned() else {
        return unknown();
    };
    if known.token != token {
        return unknown();
    }
    if known.acknowledged {
        return discord_error(
            StatusCode::BAD_REQUEST,
            40060,
            "Interaction has already been acknowledged.",
        );
    }
    let Some(kind) = body.get("type").and_then(Value::as_u64) else {
        return discord_error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body (type)");
    };
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    let data = if data.is_null() { json!({}) } else { data };
    if let Err(r) = is_edit_body_valid(&data) {
        return r;
    }
    let mut original = known.original;
    match kind {
        // PONG, and the autocomplete result: nothing to keep but the call.
        1 | 8 | 9 => {}
        // CHANNEL_MESSAGE_WITH_SOURCE / DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: the original
        // response appears in the channel (deferred: empty, "thinking", flag LOADING 128).
        4 | 5 => {
            let mut fields = data.clone();
            if kind == 5 {
                let flags = data.get("flags").and_then(Value::as_u64).unwrap_or(0);
                fields = json!({"content": "", "flags": flags | 128});
            }
            let mid = inner.snowflake();
            let mut message = message_json(mid, known.channel, &fields, Some(known.application_id));
            message["type"] = json!(if known.kind == 2 { 20 } else { 0 });
            message["interaction_metadata"] = json!({
                "id": id.to_string(),
                "type": known.kind,
                "user": known.interaction.get("member").and_then(|m| m.get("user")).or(known.interaction.get("user")).cloned().unwrap_or(Value::Null),
                "authorizing_integration_owners": {},
            });
            st.messages.push(Stored {
                channel: known.channel,
                id: mid,
                message,
                token: Some(token.to_string()),
            });
            original = Some(mid);
        }
        // DEFERRED_UPDATE_MESSAGE: only for components; nothing visible.
        6 => {
            if known.kind != 3 {
                return discord_error(
                    StatusCode::BAD_REQUEST,
                    40004,
                    "Interaction response type 6 is only valid for component interactions",
                );
            }
        }
        // UPDATE_MESSAGE: edits the message the component is on.
        7 => {
            let Some(mid) = known.component_message else {
                return discord_error(
                    StatusCode::BAD_REQUEST,
                    40004,
                    "Interaction response type 7 is only valid for component interactions",
                );
            };
            if let Some(slot) = st.messages.iter_mut().find(|m| m.id == mid) {
                apply_edit(&mut slot.message, &data);
                slot.message["edited_timestamp"] = json!(now_iso());
                st.edits.push((mid, data.clone()));
            }
        }
        _ => {
            return discord_error(
                StatusCode::BAD_REQUEST,
                50035,
                "Invalid Form Body (type: Value is not a valid interaction callback type)",
            )
        }
    }
    if let Some(k) = st.interactions.get_mut(&id) {
        k.acknowledged = true;
        k.original = original;
    }
    Reply::Empty(StatusCode::NO_CONTENT)
}

fn webhook(
    inner: &Inner,
    method: &Method,
    app: &str,
    token: &str,
    rest: &[&str],
    body: &Value,
) -> Reply {
    let unknown_webhook = || discord_error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
    let mut st = inner.state();
    if st.expired_tokens.iter().any(|t| t == token) {
        return discord_error(StatusCode::UNAUTHORIZED, 50027, "Invalid Webhook Token");
    }
    let Some((iid, known)) = st
        .interactions
        .iter()
        .find(|(_, k)| k.token == token)
        .map(|(i, k)| (*i, k.clone()))
    else {
        return unknown_webhook();
    };
    if parse_id(app) != Some(known.application_id) {
        return unknown_webhook();
    }
    if method != Method::GET {
        if let Err(r) = is_edit_body_valid(body) {
            return r;
        }
    }
    match (method.as_str(), rest) {
        // A follow-up message.
        ("POST", []) => {
            let mid = inner.snowflake();
            let mut message = message_json(mid, known.channel, body, Some(known.application_id));
            message["type"] = json!(if known.kind == 2 { 20 } else { 19 });
            st.messages.push(Stored {
                channel: known.channel,
                id: mid,
                message: message.clone(),
                token: Some(token.to_string()),
            });
            Reply::Json(StatusCode::OK, message)
        }
        (m, ["messages", "@original"]) => {
            // The original response: the deferred/sent reply of a command, or the message a
            // component is on. In HTTP mode the initial response went back in the HTTP answer,
            // so an edit of a noted interaction's original creates it here the first time.
            let target = known.original.or(known.component_message);
            let target = match target {
                Some(mid) => mid,
                None if m == "PATCH" => {
                    let mid = inner.snowflake();
                    let mut message =
                        message_json(mid, known.channel, &json!({}), Some(known.application_id));
                    message["type"] = json!(20);
                    st.messages.push(Stored {
                        channel: known.channel,
                        id: mid,
                        message,
                        token: Some(token.to_string()),
                    });
                    if let Some(k) = st.interactions.get_mut(&iid) {
                        k.original = Some(mid);
                        k.acknowledged = true;
                    }
                    mid
                }
                None => return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message"),
            };
            drop(st);
            if m == "GET" {
                let st = inner.state();
                return match st.messages.iter().find(|s| s.id == target) {
                    Some(s) => Reply::Json(StatusCode::OK, s.message.clone()),
                    None => discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message"),
                };
            }
            if m != "PATCH" {
                return discord_error(StatusCode::METHOD_NOT_ALLOWED, 0, "405: Method Not Allowed");
            }
            let reply = edit_stored(inner, |s| s.id == target, body);
            // An edit of a deferred response ends its "thinking" state.
            let mut st = inner.state();
            if let Some(slot) = st.messages.iter_mut().find(|s| s.id == target) {
                let flags = slot.message["flags"].as_u64().unwrap_or(0);
                slot.message["flags"] = json!(flags & !128);
            }
            reply
        }
        ("PATCH", ["messages", mid]) => {
            let Some(mid) = parse_id(mid) else {
                return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            };
            drop(st);
            let token = token.to_string();
            edit_stored(
                inner,
                |s| s.id == mid && s.token.as_deref() == Some(token.as_str()),
                body,
            )
        }
        _ => discord_error(StatusCode::NOT_FOUND, 0, "404: Not Found"),
    }
}

fn overwrite_commands(inner: &Inner, app: &str, guild: Option<u64>, body: &Value) -> Reply {
    if parse_id(app) != Some(APP_ID) {
        return discord_error(StatusCode::NOT_FOUND, 10002, "Unknown Application");
    }
    let Some(list) = body.as_array() else {
        return discord_error(
            StatusCode::BAD_REQUEST,
            50035,
            "Invalid Form Body (expected an array of commands)",
        );
    };
    let mut out = Vec::new();
    for cmd in list {
        let name = cmd.get("name").and_then(Value::as_str).unwrap_or("");
        let valid_name = !name.is_empty()
            && name.chars().count() <= 32
            && name
                .chars()
                .all(|c| c.is_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        let kind = cmd.get("type").and_then(Value::as_u64).unwrap_or(1);
        let description = cmd.get("description").and_then(Value::as_str).unwrap_or("");
        if !valid_name
            || (kind == 1 && (description.is_empty() || description.chars().count() > 100))
        {
            return discord_error(
                StatusCode::BAD_REQUEST,
                50035,
                &format!("Invalid Form Body (command {name:?}: name or description)"),
            );
        }
        let mut c = cmd.clone();
        let map = c.as_object_mut().expect("a command object");
        map.insert("id".into(), json!(inner.snowflake().to_string()));
        map.insert("application_id".into(), json!(APP_ID.to_string()));
        map.insert("version".into(), json!(inner.snowflake().to_string()));
        map.insert("type".into(), json!(kind));
        map.entry("options").or_insert(json!([]));
        map.entry("default_member_permissions")
            .or_insert(Value::Null);
        map.entry("nsfw").or_insert(json!(false));
        if let Some(g) = guild {
            map.insert("guild_id".into(), json!(g.to_string()));
        }
        out.push(c);
    }
    inner.state().commands.insert(guild, out.clone());
    Reply::Json(StatusCode::OK, Value::Array(out))
}

// ----- Gateway -----

async fn gateway(
    State(inner): State<Arc<Inner>>,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    inner.state().gateway_queries.push(query);
    ws.on_upgrade(move |socket| serve_gateway(inner, socket))
}

async fn serve_gateway(inner: Arc<Inner>, mut socket: WebSocket) {
    let interval = inner.heartbeat_interval_ms.load(Ordering::SeqCst);
    let hello = json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": interval}});
    if socket
        .send(WsMessage::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let conn = inner.connections.fetch_add(1, Ordering::SeqCst) + 1;
    inner.bump();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut shutdown = inner.shutdown.clone();
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(WsOut::Text(text)) => {
                    if socket.send(WsMessage::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(WsOut::Close(code)) => {
                    let _ = socket
                        .send(WsMessage::Close(Some(CloseFrame { code, reason: "stand-in".into() })))
                        .await;
                    break;
                }
                None => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    for reply in on_gateway_frame(&inner, conn, &tx, text.as_str()) {
                        if socket.send(WsMessage::Text(reply.into())).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = shutdown.changed() => {
                let _ = socket.send(WsMessage::Close(None)).await;
                break;
            }
        }
    }
    {
        let mut st = inner.state();
        if matches!(&st.socket, Some((current, _)) if *current == conn) {
            st.socket = None;
        }
    }
    inner.bump();
}

/// Handles one client frame; returns frames to send back, in order. An accepted IDENTIFY or
/// RESUME makes this connection the one dispatches go to.
fn on_gateway_frame(
    inner: &Inner,
    conn: usize,
    tx: &mpsc::UnboundedSender<WsOut>,
    text: &str,
) -> Vec<String> {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        inner.state().other_frames.push(text.to_string());
        return Vec::new();
    };
    let op = frame["op"].as_u64();
    let mut out = Vec::new();
    match op {
        Some(1) => {
            inner.heartbeats.fetch_add(1, Ordering::SeqCst);
            if inner.ack_heartbeats.load(Ordering::SeqCst) {
                out.push(json!({"op": 11, "s": null, "t": null, "d": null}).to_string());
            }
        }
        Some(2) => {
            let d = &frame["d"];
            let token = d["token"].as_str().unwrap_or("").to_string();
            let mut st = inner.state();
            st.identifies.push(Identify {
                token: token.clone(),
                intents: d["intents"].as_u64().unwrap_or(0),
                frame: frame.clone(),
                connection: conn,
            });
            let token_ok = !token
                .strip_prefix("Bot ")
                .unwrap_or(&token)
                .trim()
                .is_empty();
            if !token_ok {
                let _ = tx.send(WsOut::Close(4004));
            } else {
                st.session = Some(Session {
                    id: uuid::Uuid::new_v4().simple().to_string(),
                    seq: 0,
                    log: Vec::new(),
                });
                let ready = json!({
                    "v": 10,
                    "user": {
                        "id": BOT_USER_ID.to_string(),
                        "username": BOT_NAME,
                        "discriminator": "0",
                        "global_name": null,
                        "avatar": null,
                        "bot": true,
                        "verified": true,
                        "mfa_enabled": false,
                        "email": null,
                        "flags": 0,
                    },
                    "guilds": [],
                    "session_id": st.session.as_ref().map(|s| s.id.clone()),
                    "resume_gateway_url": format!("ws://127.0.0.1:{}/gateway", inner.port),
                    "shard": d.get("shard").cloned().unwrap_or(json!([0, 1])),
                    "application": {"id": APP_ID.to_string(), "flags": 0},
                });
                let (_, text) = push_dispatch(&mut st, "READY", ready);
                out.push(text);
                st.socket = Some((conn, tx.clone()));
            }
            drop(st);
            inner.bump();
        }
        Some(6) => {
            let d = &frame["d"];
            let session_id = d["session_id"].as_str().unwrap_or("").to_string();
            let seq = d["seq"].as_u64().unwrap_or(0);
            let mut st = inner.state();
            let accepted = st.session.as_ref().is_some_and(|s| s.id == session_id);
            st.resumes.push(Resume {
                token: d["token"].as_str().unwrap_or("").to_string(),
                session_id,
                seq,
                accepted,
                connection: conn,
            });
            if accepted {
                let replay: Vec<String> = st
                    .session
                    .as_ref()
                    .map(|s| {
                        s.log
                            .iter()
                            .filter(|(n, _)| *n > seq)
                            .map(|(_, t)| t.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                out.extend(replay);
                let (_, text) = push_dispatch(&mut st, "RESUMED", json!({}));
                out.push(text);
                st.socket = Some((conn, tx.clone()));
            } else {
                out.push(json!({"op": 9, "s": null, "t": null, "d": false}).to_string());
            }
            drop(st);
            inner.bump();
        }
        _ => inner.state().other_frames.push(text.to_string()),
    }
    out
}

// ----- Interaction payloads -----

/// A user object for a Discord account.
pub fn user(user_id: u64) -> Value {
    json!({
        "id": user_id.to_string(),
        "username": format!("user{user_id}"),
        "discriminator": "0",
        "global_name": format!("User {user_id}"),
        "avatar": null,
        "public_flags": 0,
    })
}

/// A guild member object (what guild interactions carry instead of `user`).
pub fn member(user_id: u64) -> Value {
    json!({
        "user": user(user_id),
        "nick": null,
        "avatar": null,
        "roles": [],
        "joined_at": "2024-01-01T00:00:00.000000+00:00",
        "premium_since": null,
        "deaf": false,
        "mute": false,
        "flags": 0,
        "pending": false,
        "permissions": "2248473465835073",
        "communication_disabled_until": null,
        "unusual_dm_activity_until": null,
    })
}

/// The option type Discord gives a value: string 3, integer 4, boolean 5, number 10.
fn option_type(v: &Value) -> u64 {
    match v {
        Value::Bool(_) => 5,
        Value::Number(n) if n.is_i64() || n.is_u64() => 4,
        Value::Number(_) => 10,
        _ => 3,
    }
}

fn typed_options(options: &[(&str, Value)]) -> Vec<Value> {
    options
        .iter()
        .map(|(name, value)| json!({"name": name, "type": option_type(value), "value": value}))
        .collect()
}

/// The parts every interaction shares. `guild_id: Some(g)` puts `member` (with `user` inside)
/// and `guild_id`; `None` is a DM with the bot (`user`).
#[allow(clippy::too_many_arguments)]
pub fn interaction(
    kind: u64,
    id: u64,
    token: &str,
    app_id: u64,
    guild_id: Option<u64>,
    channel_id: u64,
    user_id: u64,
    data: Value,
) -> Value {
    let mut v = json!({
        "id": id.to_string(),
        "application_id": app_id.to_string(),
        "type": kind,
        "data": data,
        "channel_id": channel_id.to_string(),
        "channel": {
            "id": channel_id.to_string(),
            "type": if guild_id.is_some() { 0 } else { 1 },
            "name": format!("chan-{channel_id}"),
        },
        "token": token,
        "version": 1,
        "app_permissions": APP_PERMISSIONS,
        "locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
    });
    match guild_id {
        Some(g) => {
            v["guild_id"] = json!(g.to_string());
            v["guild_locale"] = json!("en-US");
            v["member"] = member(user_id);
            v["authorizing_integration_owners"] = json!({"0": g.to_string()});
            v["context"] = json!(0);
            v["channel"]["guild_id"] = json!(g.to_string());
        }
        None => {
            v["user"] = user(user_id);
            v["authorizing_integration_owners"] = json!({"0": "0"});
            v["context"] = json!(1);
        }
    }
    v
}

/// An APPLICATION_COMMAND (type 2) for `/db <subcommand> <options>`. `subcommand` empty puts
/// the options at the top level.
#[allow(clippy::too_many_arguments)]
pub fn command_interaction(
    id: u64,
    token: &str,
    app_id: u64,
    guild_id: Option<u64>,
    channel_id: u64,
    user_id: u64,
    subcommand: &str,
    options: &[(&str, Value)],
) -> Value {
    let opts = typed_options(options);
    let options = if subcommand.is_empty() {
        opts
    } else {
        vec![json!({"type": 1, "name": subcommand, "options": opts})]
    };
    let mut data = json!({
        "id": COMMAND_ID.to_string(),
        "name": COMMAND_NAME,
        "type": 1,
        "options": options,
    });
    if let Some(g) = guild_id {
        data["guild_id"] = json!(g.to_string());
    }
    interaction(2, id, token, app_id, guild_id, channel_id, user_id, data)
}

/// An APPLICATION_COMMAND_AUTOCOMPLETE (type 4): like [`command_interaction`], plus the option
/// being typed, `focused` with the partial text `partial`.
#[allow(clippy::too_many_arguments)]
pub fn autocomplete_interaction(
    id: u64,
    token: &str,
    app_id: u64,
    guild_id: Option<u64>,
    channel_id: u64,
    user_id: u64,
    subcommand: &str,
    options: &[(&str, Value)],
    focused: &str,
    partial: &str,
) -> Value {
    let mut v = command_interaction(
        id, token, app_id, guild_id, channel_id, user_id, subcommand, options,
    );
    v["type"] = json!(4);
    let focused_opt = json!({"name": focused, "type": 3, "value": partial, "focused": true});
    let list = if subcommand.is_empty() {
        v["data"]["options"].as_array_mut()
    } else {
        v["data"]["options"][0]["options"].as_array_mut()
    };
    list.expect("options array").push(focused_opt);
    v
}

/// A MESSAGE_COMPONENT (type 3): a click on the button `custom_id` of `message` (a Message
/// object, e.g. from [`DiscordStandin::message`]); the channel is the message's.
pub fn component_interaction(
    id: u64,
    token: &str,
    app_id: u64,
    guild_id: Option<u64>,
    user_id: u64,
    custom_id: &str,
    message: &Value,
) -> Value {
    let channel_id = snowflake_of(&message["channel_id"]).expect("the message's channel_id");
    let data = json!({"custom_id": custom_id, "component_type": 2});
    let mut v = interaction(3, id, token, app_id, guild_id, channel_id, user_id, data);
    v["message"] = message.clone();
    v
}

/// A PING (type 1), as Discord sends to check the endpoint.
pub fn ping() -> Value {
    json!({
        "id": "1100000000000000999",
        "application_id": APP_ID.to_string(),
        "type": 1,
        "token": "ping-token",
        "version": 1,
    })
}

// ----- Request signing (HTTP interactions mode) -----

fn signing_key(secret_hex: &str) -> SigningKey {
    let bytes: [u8; 32] = hex::decode(secret_hex)
        .expect("secret key hex")
        .try_into()
        .expect("a 32-byte Ed25519 secret key");
    SigningKey::from_bytes(&bytes)
}

/// The hex public key of a hex Ed25519 secret key (what goes in `discord.public_key`).
pub fn public_key_hex(secret_hex: &str) -> String {
    hex::encode(signing_key(secret_hex).verifying_key().to_bytes())
}

/// `X-Signature-Ed25519`: hex Ed25519 signature of `timestamp + body` with the secret key.
pub fn sign(secret_hex: &str, timestamp: &str, body: &str) -> String {
    let mut msg = Vec::with_capacity(timestamp.len() + body.len());
    msg.extend_from_slice(timestamp.as_bytes());
    msg.extend_from_slice(body.as_bytes());
    hex::encode(signing_key(secret_hex).sign(&msg).to_bytes())
}

/// The current Unix time in seconds, as Discord puts it in `X-Signature-Timestamp`.
pub fn now_timestamp() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        .to_string()
}

/// POSTs `body` signed as Discord signs it, with the timestamp now. Returns the status, the
/// response body and the time to the whole response.
pub async fn post_signed(url: &str, secret_hex: &str, body: &str) -> (u16, String, Duration) {
    let timestamp = now_timestamp();
    let signature = sign(secret_hex, &timestamp, body);
    post_signed_with(url, body, &timestamp, &signature).await
}

/// POSTs `body` with the given `X-Signature-Timestamp` and `X-Signature-Ed25519` (for negative
/// tests: tampered bodies, stale timestamps, wrong signatures).
pub async fn post_signed_with(
    url: &str,
    body: &str,
    timestamp: &str,
    signature: &str,
) -> (u16, String, Duration) {
    post_signed_using(&reqwest::Client::new(), url, body, timestamp, signature).await
}

/// [`post_signed_with`] on a given client (connection reuse, for benchmarks).
pub async fn post_signed_using(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    timestamp: &str,
    signature: &str,
) -> (u16, String, Duration) {
    let started = Instant::now();
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            "Discord-Interactions/1.0 (+https://discord.com)",
        )
        .header("x-signature-ed25519", signature)
        .header("x-signature-timestamp", timestamp)
        .body(body.to_string())
        .send()
        .await
        .expect("POST a signed interaction");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, text, started.elapsed())
}

// ----- Tests: the stand-in speaks Discord's format, as serenity (the real client) sees it -----

mod tests {
    use super::*;
    use dualkey::adapters::discord::http::client;
    use serenity::all::{
        ButtonStyle, ChannelId, Command, CommandDataOptionValue, CommandOptionType,
        CreateActionRow, CreateButton, CreateCommand, CreateCommandOption, CreateEmbed,
        CreateInteractionResponse, CreateInteractionResponseFollowup,
        CreateInteractionResponseMessage, CreateMessage, EditInteractionResponse, EditMessage,
        GuildId, Interaction, MessageId,
    };
    use serenity::http::HttpError;
    use serenity::interactions_endpoint::Verifier;

    const WAIT: Duration = Duration::from_secs(3);
    const CHANNEL: u64 = 222;

    fn http(standin: &DiscordStandin) -> serenity::http::Http {
        client(&standin.base_url(), BOT_TOKEN, Some(APP_ID))
    }

    fn card_row(request: &str) -> CreateActionRow {
        CreateActionRow::Buttons(vec![
            CreateButton::new(format!("approve:{request}"))
                .label("Approve")
                .style(ButtonStyle::Success),
            CreateButton::new(format!("deny:{request}"))
                .label("Deny")
                .style(ButtonStyle::Danger),
        ])
    }

    fn error_of(err: serenity::Error) -> serenity::http::ErrorResponse {
        match err {
            serenity::Error::Http(HttpError::UnsuccessfulRequest(e)) => e,
            other => panic!("expected an unsuccessful request, got {other:?}"),
        }
    }

    #[test]
    fn every_fixture_parses_as_serenitys_interaction() {
        let cmd = command_interaction(
            11,
            "tok-1",
            APP_ID,
            Some(GUILD_ID),
            CHANNEL,
            501,
            "rollback",
            &[
                ("migration", json!("20240101_add_users")),
                ("env", json!("prod")),
            ],
        );
        let Interaction::Command(c) = serde_json::from_value::<Interaction>(cmd).unwrap() else {
            panic!("a command interaction")
        };
        assert_eq!(c.id.get(), 11);
        assert_eq!(c.token, "tok-1");
        assert_eq!(c.user.id.get(), 501, "member.user fills user in guilds");
        assert_eq!(c.guild_id, Some(GuildId::new(GUILD_ID)));
        assert_eq!(c.channel_id.get(), CHANNEL);
        assert_eq!(c.data.name, "db");
        assert_eq!(c.data.options.len(), 1);
        assert_eq!(c.data.options[0].name, "rollback");
        let CommandDataOptionValue::SubCommand(sub) = &c.data.options[0].value else {
            panic!("a subcommand")
        };
        assert_eq!(sub[0].name, "migration");
        assert_eq!(
            sub[0].value,
            CommandDataOptionValue::String("20240101_add_users".into())
        );
        assert_eq!(sub[1].name, "env");

        // Typed options: integer, boolean, number; no subcommand; a DM.
        let typed = command_interaction(
            12,
            "tok-2",
            APP_ID,
            None,
            333,
            502,
            "",
            &[("n", json!(3)), ("yes", json!(true)), ("x", json!(1.5))],
        );
        let Interaction::Command(c) = serde_json::from_value::<Interaction>(typed).unwrap() else {
            panic!("a command interaction")
        };
        assert_eq!(c.user.id.get(), 502);
        assert!(c.member.is_none());
        assert_eq!(c.data.options[0].value, CommandDataOptionValue::Integer(3));
        assert_eq!(
            c.data.options[1].value,
            CommandDataOptionValue::Boolean(true)
        );
        assert_eq!(c.data.options[2].value, CommandDataOptionValue::Number(1.5));

        let auto = autocomplete_interaction(
            13,
            "tok-3",
            APP_ID,
            Some(GUILD_ID),
            CHANNEL,
            501,
            "rollback",
            &[("env", json!("prod"))],
            "migration",
            "2024",
        );
        let Interaction::Autocomplete(a) = serde_json::from_value::<Interaction>(auto).unwrap()
        else {
            panic!("an autocomplete interaction")
        };
        let focused = a.data.autocomplete().expect("a focused option");
        assert_eq!(focused.name, "migration");
        assert_eq!(focused.value, "2024");

        let standin_msg = message_json(
            900,
            CHANNEL,
            &json!({"content": "card", "components": [{"type": 1, "components": [
                {"type": 2, "style": 3, "custom_id": "approve:r1", "label": "Approve"}]}]}),
            None,
        );
        let click = component_interaction(
            14,
            "tok-4",
            APP_ID,
            Some(GUILD_ID),
            503,
            "approve:r1",
            &standin_msg,
        );
        let Interaction::Component(k) = serde_json::from_value::<Interaction>(click).unwrap()
        else {
            panic!("a component interaction")
        };
        assert_eq!(k.data.custom_id, "approve:r1");
        assert_eq!(k.user.id.get(), 503);
        assert_eq!(k.message.id.get(), 900);
        assert_eq!(k.channel_id.get(), CHANNEL);
        assert_eq!(k.message.components.len(), 1);

        assert!(matches!(
            serde_json::from_value::<Interaction>(ping()).unwrap(),
            Interaction::Ping(_)
        ));

        // The fields the notes call required really are: without them serenity refuses.
        for field in [
            "attachment_size_limit",
            "entitlements",
            "locale",
            "version",
            "token",
        ] {
            let mut broken = command_interaction(15, "t", APP_ID, None, 1, 2, "status", &[]);
            broken.as_object_mut().unwrap().remove(field);
            assert!(
                serde_json::from_value::<Interaction>(broken).is_err(),
                "parsed without {field}"
            );
        }
    }

    #[test]
    fn rfc8032_test_1_and_our_signatures_verify_with_serenitys_verifier() {
        assert_eq!(public_key_hex(RFC8032_SECRET), RFC8032_PUBLIC);
        assert_eq!(sign(RFC8032_SECRET, "", ""), RFC8032_SIGNATURE);
        let verifier = Verifier::new(RFC8032_PUBLIC);
        assert!(verifier.verify(RFC8032_SIGNATURE, "", b"").is_ok());

        let body = ping().to_string();
        let sig = sign(RFC8032_SECRET, "1700000000", &body);
        assert!(verifier.verify(&sig, "1700000000", body.as_bytes()).is_ok());
        assert!(verifier
            .verify(&sig, "1700000001", body.as_bytes())
            .is_err());
        let tampered = body.replace("\"type\":1", "\"type\":2");
        assert_ne!(tampered, body);
        assert!(verifier
            .verify(&sig, "1700000000", tampered.as_bytes())
            .is_err());
        let mut bad = sig.clone().into_bytes();
        bad[0] = if bad[0] == b'0' { b'1' } else { b'0' };
        let bad = String::from_utf8(bad).unwrap();
        assert!(verifier
            .verify(&bad, "1700000000", body.as_bytes())
            .is_err());
    }

    #[tokio::test]
    async fn serenity_posts_a_card_edits_it_and_the_standin_keeps_history() {
        let standin = DiscordStandin::start().await;
        let http = http(&standin);
        let channel = ChannelId::new(CHANNEL);
        let posted = channel
            .send_message(
                &http,
                CreateMessage::new()
                    .content("Rollback requested")
                    .embed(CreateEmbed::new().title("Rollback").colour(0xF1C40F).field(
                        "Migration",
                        "20240101_add_users",
                        true,
                    ))
                    .components(vec![card_row("req-42")]),
            )
            .await
            .expect("POST /channels/222/messages against the stand-in");
        assert_eq!(posted.channel_id, channel);
        assert_eq!(posted.content, "Rollback requested");
        assert_eq!(posted.author.id.get(), BOT_USER_ID);
        assert!(posted.author.bot);
        assert_eq!(posted.embeds[0].title.as_deref(), Some("Rollback"));
        assert_eq!(posted.embeds[0].fields[0].name, "Migration");
        assert_eq!(posted.components.len(), 1);
        assert_eq!(posted.components[0].components.len(), 2);

        let edited = channel
            .edit_message(
                &http,
                posted.id,
                EditMessage::new()
                    .content("Approved by <@502>")
                    .components(vec![]),
            )
            .await
            .expect("PATCH the card");
        assert_eq!(edited.id, posted.id);
        assert_eq!(edited.content, "Approved by <@502>");
        assert!(edited.components.is_empty());
        assert!(edited.edited_timestamp.is_some());
        assert_eq!(edited.embeds.len(), 1, "an edit without embeds keeps them");

        let id = posted.id.get();
        let msgs = standin.messages_in(CHANNEL);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].0, id);
        assert_eq!(
            standin.message(CHANNEL, id).unwrap()["content"],
            "Approved by <@502>"
        );
        let edits = standin.edits_of(id);
        assert_eq!(edits.len(), 1);
        assert_eq!(edits[0]["content"], "Approved by <@502>");

        let calls = standin.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].method, "POST");
        assert_eq!(calls[0].path, "/channels/222/messages");
        assert_eq!(calls[1].method, "PATCH");
        assert_eq!(calls[1].path, format!("/channels/222/messages/{id}"));
        for c in &calls {
            assert_eq!(c.auth.as_deref(), Some("Bot standin-bot-token"));
            assert_eq!(c.header("content-type"), Some("application/json"));
            assert_eq!(c.status, 200);
        }
        let row = &calls[0].body["components"][0];
        assert_eq!(row["type"], 1);
        assert_eq!(row["components"][0]["custom_id"], "approve:req-42");
        assert_eq!(row["components"][0]["style"], 3);
        assert_eq!(row["components"][1]["custom_id"], "deny:req-42");
        assert_eq!(row["components"][1]["style"], 4);

        // Editing an unknown message is Discord's 404 Unknown Message, and changes nothing.
        let err = channel
            .edit_message(&http, MessageId::new(42), EditMessage::new().content("x"))
            .await
            .expect_err("an unknown message");
        let e = error_of(err);
        assert_eq!(e.status_code.as_u16(), 404);
        assert_eq!(e.error.code, 10008);
        assert_eq!(standin.edits_of(42).len(), 0);
    }

    #[tokio::test]
    async fn programmed_failures_come_back_as_serenity_errors_with_discords_codes() {
        let standin = DiscordStandin::start().await;
        let http = http(&standin);
        let channel = ChannelId::new(CHANNEL);
        let line = || CreateMessage::new().content("audit line");

        standin.fail_next(
            "POST /channels/222/messages",
            1,
            Failure::RateLimited { retry_after: 0.25 },
        );
        standin.fail_next(
            "/channels/222/",
            1,
            Failure::GlobalRateLimited { retry_after: 1.5 },
        );
        standin.fail_next("/channels/222/messages", 2, Failure::ServerError);

        let e = error_of(channel.send_message(&http, line()).await.unwrap_err());
        assert_eq!(e.status_code.as_u16(), 429);
        assert_eq!(e.error.code, 0);
        assert_eq!(e.error.message, "You are being rate limited.");
        let e = error_of(channel.send_message(&http, line()).await.unwrap_err());
        assert_eq!(e.status_code.as_u16(), 429);
        for _ in 0..2 {
            let e = error_of(channel.send_message(&http, line()).await.unwrap_err());
            assert_eq!(e.status_code.as_u16(), 500);
            assert_eq!(e.error.code, 0);
        }
        assert!(
            standin.messages_in(CHANNEL).is_empty(),
            "failures store nothing"
        );
        channel
            .send_message(&http, line())
            .await
            .expect("the call after the failures");
        assert_eq!(standin.messages_in(CHANNEL).len(), 1);

        let calls = standin.calls_to("/channels/222/messages");
        let statuses: Vec<u16> = calls.iter().map(|c| c.status).collect();
        assert_eq!(statuses, [429, 429, 500, 500, 200]);
        assert_eq!(
            calls[0].failure,
            Some(Failure::RateLimited { retry_after: 0.25 })
        );
        assert_eq!(calls[0].body["content"], "audit line");
        assert!(calls[4].failure.is_none());

        // The raw 429 carries what Discord documents: header and body.
        standin.fail_next("/x", 1, Failure::GlobalRateLimited { retry_after: 0.25 });
        let r = reqwest::Client::new()
            .get(format!("{}/api/v10/x", standin.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(r.headers()["x-ratelimit-global"], "true");
        assert_eq!(r.headers()["x-ratelimit-scope"], "global");
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v,
            json!({"message": "You are being rate limited.", "retry_after": 0.25, "global": true, "code": 0})
        );

        // 401 without a bot token, and the programmed 401/404.
        let unauthed = client(&standin.base_url(), "", Some(APP_ID));
        let e = error_of(channel.send_message(&unauthed, line()).await.unwrap_err());
        assert_eq!(e.status_code.as_u16(), 401);
        standin.fail_next("/channels/", 1, Failure::Unauthorized);
        standin.fail_next("/channels/", 1, Failure::NotFound);
        assert_eq!(
            error_of(channel.send_message(&http, line()).await.unwrap_err())
                .status_code
                .as_u16(),
            401
        );
        let e = error_of(channel.send_message(&http, line()).await.unwrap_err());
        assert_eq!((e.status_code.as_u16(), e.error.code), (404, 10008));
    }

    fn db_command() -> CreateCommand {
        CreateCommand::new("db")
            .description("Database operations")
            .add_option(CreateCommandOption::new(
                CommandOptionType::SubCommand,
                "status",
                "Show DB status",
            ))
            .add_option(
                CreateCommandOption::new(
                    CommandOptionType::SubCommand,
                    "rollback",
                    "Roll back a migration",
                )
                .add_sub_option(
                    CreateCommandOption::new(CommandOptionType::String, "migration", "Migration")
                        .required(true)
                        .set_autocomplete(true),
                )
                .add_sub_option(
                    CreateCommandOption::new(CommandOptionType::String, "env", "Environment")
                        .add_string_choice("prod", "prod")
                        .add_string_choice("staging", "staging"),
                ),
            )
    }

    #[tokio::test]
    async fn serenity_registers_commands_globally_and_per_guild_and_reads_them_back() {
        let standin = DiscordStandin::start().await;
        let http = http(&standin);
        let global = Command::set_global_commands(&http, vec![db_command()])
            .await
            .expect("PUT /applications/{app}/commands");
        assert_eq!(global.len(), 1);
        assert_eq!(global[0].name, "db");
        assert_eq!(global[0].application_id.get(), APP_ID);
        assert_eq!(global[0].options.len(), 2);
        assert_eq!(global[0].options[1].options[0].name, "migration");
        assert!(global[0].options[1].options[0].required);
        assert!(global[0].options[1].options[0].autocomplete);
        assert_eq!(global[0].options[1].options[1].choices.len(), 2);
        assert!(global[0].guild_id.is_none());

        let guild = GuildId::new(GUILD_ID)
            .set_commands(&http, vec![db_command()])
            .await
            .expect("PUT /applications/{app}/guilds/{g}/commands");
        assert_eq!(guild[0].guild_id, Some(GuildId::new(GUILD_ID)));

        let read = Command::get_global_commands(&http).await.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].id, global[0].id);
        let read = GuildId::new(GUILD_ID).get_commands(&http).await.unwrap();
        assert_eq!(read[0].id, guild[0].id);

        // A bulk overwrite replaces the list.
        Command::set_global_commands(&http, vec![]).await.unwrap();
        assert!(standin.commands(None).is_empty());
        assert_eq!(standin.commands(Some(GUILD_ID)).len(), 1);
        let puts: Vec<_> = standin
            .calls_to("/applications/")
            .into_iter()
            .filter(|c| c.method == "PUT")
            .collect();
        assert_eq!(puts.len(), 3);
        assert_eq!(puts[0].path, format!("/applications/{APP_ID}/commands"));
        assert_eq!(
            puts[1].path,
            format!("/applications/{APP_ID}/guilds/{GUILD_ID}/commands")
        );
        assert_eq!(
            puts[0].body[0]["options"][1]["options"][0]["autocomplete"],
            true
        );

        // An invalid command name is refused as Discord refuses it.
        let bad = CreateCommand::new("Bad Name").description("x");
        let e = error_of(
            Command::set_global_commands(&http, vec![bad])
                .await
                .unwrap_err(),
        );
        assert_eq!((e.status_code.as_u16(), e.error.code), (400, 50035));
    }

    #[tokio::test]
    async fn interaction_responses_defer_edit_follow_up_and_expire_like_discord() {
        let standin = DiscordStandin::start().await;
        let http = http(&standin);
        let raw = command_interaction(
            31,
            "itok-31",
            APP_ID,
            Some(GUILD_ID),
            CHANNEL,
            501,
            "status",
            &[],
        );
        // Unknown until noted (or sent over the gateway).
        let Interaction::Command(cmd) = serde_json::from_value(raw.clone()).unwrap() else {
            panic!()
        };
        let e = error_of(cmd.defer_ephemeral(&http).await.unwrap_err());
        assert_eq!((e.status_code.as_u16(), e.error.code), (404, 10062));

        standin.note_interaction(&raw);
        cmd.defer_ephemeral(&http).await.expect("type 5 callback");
        let e = error_of(cmd.defer(&http).await.unwrap_err());
        assert_eq!((e.status_code.as_u16(), e.error.code), (400, 40060));
        let responses = standin.interaction_responses(31);
        let statuses: Vec<u16> = responses.iter().map(|c| c.status).collect();
        assert_eq!(
            statuses,
            [404, 204, 400],
            "unknown, deferred, already acknowledged"
        );
        assert_eq!(responses[1].path, "/interactions/31/itok-31/callback");
        assert_eq!(responses[1].body["type"], 5);
        assert_eq!(responses[1].body["data"]["flags"], 64);
        let (ch, original_id, original) = standin.original_response(31).unwrap();
        assert_eq!(ch, CHANNEL);
        assert_eq!(original["flags"], 64 | 128, "ephemeral and loading");

        let edited = cmd
            .edit_response(
                &http,
                EditInteractionResponse::new()
                    .content("Approved")
                    .components(vec![card_row("req-9")]),
            )
            .await
            .expect("PATCH @original");
        assert_eq!(edited.id.get(), original_id);
        assert_eq!(edited.content, "Approved");
        let (_, _, original) = standin.original_response(31).unwrap();
        assert_eq!(original["flags"], 64, "no longer loading");
        assert_eq!(
            original["components"][0]["components"][0]["custom_id"],
            "approve:req-9"
        );

        let follow = cmd
            .create_followup(
                &http,
                CreateInteractionResponseFollowup::new()
                    .content("step 1 done")
                    .ephemeral(true),
            )
            .await
            .expect("POST follow-up");
        assert_eq!(follow.content, "step 1 done");
        let follow2 = cmd
            .edit_followup(
                &http,
                follow.id,
                CreateInteractionResponseFollowup::new().content("step 1 done (3 s)"),
            )
            .await
            .expect("PATCH follow-up");
        assert_eq!(follow2.id, follow.id);
        assert_eq!(
            standin.edits_of(follow.id.get())[0]["content"],
            "step 1 done (3 s)"
        );
        let webhook = standin.webhook_calls("itok-31");
        let shape: Vec<(String, String)> = webhook
            .iter()
            .map(|c| (c.method.clone(), c.path.clone()))
            .collect();
        assert_eq!(
            shape,
            [
                (
                    "PATCH".to_string(),
                    format!("/webhooks/{APP_ID}/itok-31/messages/@original")
                ),
                ("POST".to_string(), format!("/webhooks/{APP_ID}/itok-31")),
                (
                    "PATCH".to_string(),
                    format!("/webhooks/{APP_ID}/itok-31/messages/{}", follow.id)
                ),
            ]
        );
        assert_eq!(standin.messages_in(CHANNEL).len(), 2);

        // After 15 minutes the token is dead: 50027 on the webhook.
        standin.expire_token("itok-31");
        let e = error_of(
            cmd.edit_response(&http, EditInteractionResponse::new().content("late"))
                .await
                .unwrap_err(),
        );
        assert_eq!((e.status_code.as_u16(), e.error.code), (401, 50027));
        // ... and the bot token still edits the channel message.
        ChannelId::new(CHANNEL)
            .edit_message(
                &http,
                MessageId::new(original_id),
                EditMessage::new().content("late"),
            )
            .await
            .expect("the channel message is editable with the bot token");
        assert_eq!(
            standin.message(CHANNEL, original_id).unwrap()["content"],
            "late"
        );
    }

    #[tokio::test]
    async fn a_direct_message_opens_one_dm_channel_per_user() {
        let standin = DiscordStandin::start().await;
        let http = http(&standin);
        let dm = serenity::all::UserId::new(501)
            .create_dm_channel(&http)
            .await
            .expect("POST /users/@me/channels");
        assert_eq!(dm.recipient.id.get(), 501);
        assert_eq!(standin.dm_channel(501), Some(dm.id.get()));
        dm.id
            .send_message(&http, CreateMessage::new().content("only for you"))
            .await
            .unwrap();
        let again = serenity::all::UserId::new(501)
            .create_dm_channel(&http)
            .await
            .unwrap();
        assert_eq!(again.id, dm.id, "the same DM channel");
        let dms = standin.dms_to(501);
        assert_eq!(dms.len(), 1);
        assert_eq!(dms[0].1["content"], "only for you");
        assert!(standin.dms_to(502).is_empty());
        assert_eq!(
            standin.calls_to("/users/@me/channels")[0].body,
            json!({"recipient_id": "501"})
        );
    }

    #[tokio::test]
    async fn a_click_is_answered_by_updating_the_card_it_is_on() {
        let standin = DiscordStandin::start().await;
        let http = http(&standin);
        let card = ChannelId::new(CHANNEL)
            .send_message(
                &http,
                CreateMessage::new()
                    .content("pending")
                    .components(vec![card_row("req-5")]),
            )
            .await
            .unwrap();
        let stored = standin.message(CHANNEL, card.id.get()).unwrap();
        let raw = component_interaction(
            41,
            "ctok",
            APP_ID,
            Some(GUILD_ID),
            502,
            "approve:req-5",
            &stored,
        );
        standin.note_interaction(&raw);
        let Interaction::Component(click) = serde_json::from_value(raw).unwrap() else {
            panic!()
        };
        click
            .create_response(
                &http,
                CreateInteractionResponse::UpdateMessage(
                    CreateInteractionResponseMessage::new()
                        .content("approved by <@502>")
                        .components(vec![]),
                ),
            )
            .await
            .expect("type 7 callback");
        let now = standin.message(CHANNEL, card.id.get()).unwrap();
        assert_eq!(now["content"], "approved by <@502>");
        assert_eq!(now["components"], json!([]));
        assert_eq!(standin.edits_of(card.id.get()).len(), 1);
        // Later edits of @original for a click edit the same card.
        click
            .edit_response(&http, EditInteractionResponse::new().content("done"))
            .await
            .expect("PATCH @original of a component interaction");
        assert_eq!(
            standin.message(CHANNEL, card.id.get()).unwrap()["content"],
            "done"
        );
        assert_eq!(standin.messages_in(CHANNEL).len(), 1);
    }

    // ----- Gateway -----

    #[tokio::test]
    async fn rendered_replies_are_accepted_by_the_standin_through_serenitys_http() {
        use dualkey::adapters::discord::render;
        use dualkey::core::reply::{Button, ButtonStyle, Card, CardState, Reply, Style};
        let standin = DiscordStandin::start().await;
        let http = http(&standin);
        let channel = ChannelId::new(CHANNEL);
        let mut card = Card::new("Request r1: deploy", Style::Pending);
        card.state = Some(CardState::Pending);
        card.fields = vec![("Environment".into(), "production".into())];
        card.buttons = vec![
            Button::new("approve:r1", "Approve", ButtonStyle::Primary),
            Button::new("deny:r1", "Deny", ButtonStyle::Danger),
        ];
        let posted = http
            .send_message(
                channel,
                vec![],
                &render::message(&Reply::card(card.clone())),
            )
            .await
            .expect("the rendered card is a valid message");
        assert_eq!(posted.embeds.len(), 1);
        assert_eq!(posted.embeds[0].colour.map(|c| c.0), Some(render::AMBER));
        assert_eq!(posted.components[0].components.len(), 2);
        card.state = Some(CardState::Succeeded);
        card.buttons.clear();
        let edited = http
            .edit_message(
                channel,
                posted.id,
                &render::edit(&Reply::card(card)),
                vec![],
            )
            .await
            .expect("the rendered edit");
        assert_eq!(edited.embeds[0].colour.map(|c| c.0), Some(render::GREEN));
        assert!(edited.components.is_empty());
        let stored = standin.message(CHANNEL, posted.id.get()).unwrap();
        assert_eq!(stored["components"], json!([]));
        assert!(stored["embeds"][0]["title"]
            .as_str()
            .unwrap()
            .contains("[succeeded]"));
        let body = &standin.calls()[0].body;
        assert_eq!(body["allowed_mentions"]["parse"], json!([]));
        // A long text reply stays within the 2000 the stand-in (and Discord) enforce.
        let text = http
            .send_message(
                channel,
                vec![],
                &render::message(&Reply::public("x".repeat(5000))),
            )
            .await
            .expect("a cut text reply");
        assert!(text.content.chars().count() <= 2000);
        // ... while the raw 5000 characters are refused, as Discord refuses them.
        let e = error_of(
            http.send_message(channel, vec![], &json!({"content": "x".repeat(5000)}))
                .await
                .unwrap_err(),
        );
        assert_eq!((e.status_code.as_u16(), e.error.code), (400, 50035));
    }

    #[derive(Debug)]
    enum Seen {
        Ready(String),
        Interaction(Box<Interaction>),
    }

    struct Forward(mpsc::UnboundedSender<Seen>);

    #[serenity::async_trait]
    impl serenity::prelude::EventHandler for Forward {
        async fn ready(
            &self,
            _ctx: serenity::prelude::Context,
            ready: serenity::model::gateway::Ready,
        ) {
            let _ = self.0.send(Seen::Ready(ready.session_id));
        }

        async fn interaction_create(
            &self,
            _ctx: serenity::prelude::Context,
            interaction: Interaction,
        ) {
            let _ = self.0.send(Seen::Interaction(Box::new(interaction)));
        }
    }

    struct Running {
        shards: Arc<serenity::gateway::ShardManager>,
        task: JoinHandle<()>,
    }

    impl Running {
        async fn stop(self) {
            self.shards.shutdown_all().await;
            let _ = tokio::time::timeout(WAIT, self.task).await;
        }
    }

    async fn connect(standin: &DiscordStandin) -> (Running, mpsc::UnboundedReceiver<Seen>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut client = serenity::all::ClientBuilder::new_with_http(
            http(standin),
            serenity::all::GatewayIntents::empty(),
        )
        .event_handler(Forward(tx))
        .await
        .expect("build serenity's Client against the stand-in");
        let shards = client.shard_manager.clone();
        let task = tokio::spawn(async move {
            let _ = client.start().await;
        });
        (Running { shards, task }, rx)
    }

    async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("serenity's handler ran in time")
            .expect("handler channel open")
    }

    #[tokio::test]
    async fn serenitys_gateway_client_identifies_receives_an_interaction_and_resumes_after_a_drop()
    {
        let standin = DiscordStandin::start().await;
        let (running, mut rx) = connect(&standin).await;
        let Seen::Ready(session) = next_seen(&mut rx).await else {
            panic!("READY first")
        };
        assert_eq!(Some(session.clone()), standin.session_id());
        let ids = standin.identifies();
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].token, format!("Bot {BOT_TOKEN}"));
        assert_eq!(ids[0].intents, 0);
        assert_eq!(standin.gateway_queries(), [Some("v=10".to_string())]);
        assert_eq!(standin.calls_to("/gateway")[0].path, "/gateway");

        let raw = command_interaction(
            51,
            "gtok-51",
            APP_ID,
            Some(GUILD_ID),
            CHANNEL,
            501,
            "rollback",
            &[("migration", json!("20240101_add_users"))],
        );
        let seq = standin.send_interaction(raw).await;
        assert_eq!(seq, 2, "READY was 1");
        let Seen::Interaction(i) = next_seen(&mut rx).await else {
            panic!("the interaction")
        };
        let Interaction::Command(cmd) = *i else {
            panic!("a command")
        };
        assert_eq!(cmd.id.get(), 51);
        assert_eq!(cmd.user.id.get(), 501);
        // serenity's own Http (application id from our builder) answers it at the stand-in.
        cmd.defer(&http(&standin)).await.unwrap();
        assert_eq!(standin.interaction_responses(51)[0].status, 204);

        // Drop the connection: serenity resumes its session and still receives.
        assert!(standin.disconnect());
        assert!(
            standin.wait_connections(2, Duration::from_secs(5)).await,
            "serenity came back"
        );
        let resumes = standin.resumes();
        assert_eq!(resumes.len(), 1, "a RESUME, not a new IDENTIFY");
        assert!(resumes[0].accepted);
        assert_eq!(resumes[0].session_id, session);
        assert_eq!(resumes[0].seq, 2);
        assert_eq!(standin.identifies().len(), 1);

        let click_on = message_json(77, CHANNEL, &json!({"content": "card"}), None);
        standin
            .send_interaction(component_interaction(
                52,
                "gtok-52",
                APP_ID,
                Some(GUILD_ID),
                502,
                "approve:r",
                &click_on,
            ))
            .await;
        let Seen::Interaction(i) = next_seen(&mut rx).await else {
            panic!("the click")
        };
        assert!(matches!(*i, Interaction::Component(ref c) if c.data.custom_id == "approve:r"));
        // Nothing was delivered twice.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err(),
            "an extra event"
        );
        running.stop().await;
    }

    #[tokio::test]
    async fn heartbeats_are_acked_and_a_forgotten_session_makes_serenity_identify_again() {
        let standin = DiscordStandin::start_with_heartbeat(100).await;
        let (running, mut rx) = connect(&standin).await;
        assert!(matches!(next_seen(&mut rx).await, Seen::Ready(_)));
        let deadline = Instant::now() + WAIT;
        while standin.heartbeats() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            standin.heartbeats() >= 2,
            "serenity heartbeats every 100 ms"
        );
        assert_eq!(standin.connections(), 1, "acked heartbeats keep the link");

        // INVALID_SESSION(false): serenity must IDENTIFY again (serenity waits up to 5 s
        // between shard boots).
        assert!(standin.invalid_session(false));
        let deadline = Instant::now() + Duration::from_secs(8);
        while standin.identifies().len() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(standin.identifies().len(), 2);
        assert!(matches!(next_seen(&mut rx).await, Seen::Ready(_)));
        running.stop().await;
    }

    #[tokio::test]
    async fn a_resume_replays_what_the_client_missed_exactly_once() {
        let standin = DiscordStandin::start().await;
        let (running, mut rx) = connect(&standin).await;
        assert!(matches!(next_seen(&mut rx).await, Seen::Ready(_)));
        // An event the client never got (sequence 2), then the link drops.
        let raw = command_interaction(61, "rtok", APP_ID, None, 333, 501, "status", &[]);
        assert_eq!(standin.queue_interaction(raw), 2);
        assert!(standin.disconnect());
        let Seen::Interaction(i) = next_seen(&mut rx).await else {
            panic!("the replayed interaction")
        };
        assert!(matches!(*i, Interaction::Command(ref c) if c.id.get() == 61));
        let resumes = standin.resumes();
        assert_eq!(resumes.len(), 1);
        assert_eq!(resumes[0].seq, 1, "serenity had seen READY only");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err(),
            "replayed twice"
        );
        let ts: Vec<Value> = standin
            .dispatched()
            .iter()
            .map(|f| f["t"].clone())
            .collect();
        assert_eq!(
            ts,
            [
                json!("READY"),
                json!("INTERACTION_CREATE"),
                json!("RESUMED")
            ]
        );
        running.stop().await;
    }

    #[tokio::test]
    async fn the_gateway_lookups_hand_out_the_standins_websocket_url() {
        let standin = DiscordStandin::start().await;
        let http = http(&standin);
        let gw = http.get_gateway().await.expect("GET /gateway");
        assert_eq!(gw.url, standin.gateway_url());
        let bot = http.get_bot_gateway().await.expect("GET /gateway/bot");
        assert_eq!(bot.shards, 1);
        assert_eq!(bot.session_start_limit.max_concurrency, 1);
        assert!(standin.resumes().is_empty());
        assert!(standin.session_id().is_none());
    }
}
