//! The Discord adapter (serenity): gateway (default) or HTTP interactions, embeds and
//! components, and the `/db` command registration.
//!
//! - [`interactions`]: payloads to events, acks, the signed `POST /discord/interactions`;
//! - [`gateway`]: the websocket (serenity's client) feeding the same events;
//! - [`transport`]: the REST calls and the error mapping onto [`DeliveryError`];
//! - [`http`]: serenity's REST client (gateway URL lookup, registration);
//! - [`register`]: `dualkey discord register` and autocomplete answers.
//!
//! Answers to an interaction use its token (15 minutes): a command's first answer edits the
//! deferred response, later ones (and every answer to a click) are follow-ups, ephemeral when
//! the reply is. Replies are rendered by [`render`] (embeds, components). Cards and audit lines
//! are channel messages posted and edited with the bot token, which never expires, so a long
//! operation keeps editing one message. Discord has no ephemeral message outside an
//! interaction: [`Outbound::ephemeral`] sends a direct message.

pub mod gateway;
pub mod http;
pub mod interactions;
pub mod register;
pub mod render;
pub mod transport;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::{json, Value};
use serenity::interactions_endpoint::Verifier;
use tokio::sync::watch;

use crate::adapters::{Adapter, DeliveryError, Inbound, Outbound};
use crate::config::DiscordSettings;
use crate::core::event::{InboundEvent, Platform};
use crate::core::reply::{Reply, Visibility};

use interactions::ReplyHandle;
use transport::Transport;

/// How Discord reaches dualkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The websocket gateway dualkey opens; no public URL.
    Gateway,
    /// Discord POSTs signed interactions to `/discord/interactions`.
    Http,
}

/// How long an interaction token is valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// How long after its ack an interaction's webhook may still answer "unknown" (the ack, an
/// HTTP response, may not have reached Discord yet when the first answer goes out).
const ACK_SETTLE: Duration = Duration::from_secs(3);

/// An interaction acked by this process, until its token expires.
struct Acked {
    at: Instant,
    /// Whether the deferred response was edited already (later answers are follow-ups).
    original_done: bool,
}

/// Acked interactions by id, and their ids in the order they were acked.
type AckedLog = (HashMap<String, Acked>, VecDeque<(Instant, String)>);

/// The Discord adapter. Holds its token as a secret; it has no `Debug`.
pub struct DiscordAdapter {
    mode: Mode,
    transport: Transport,
    api_base_url: String,
    token: SecretString,
    application_id: Option<u64>,
    /// `discord.guild_id`: when set, interactions from any other server (or a DM) are refused.
    guild_id: Option<String>,
    verifier: Option<Verifier>,
    /// Interactions acked by this process, and their ids oldest first (expired ones are
    /// dropped from the front: each ack costs O(1), not a walk over every live token).
    acked: Mutex<AckedLog>,
}

fn token_from_env(var: &str) -> anyhow::Result<SecretString> {
    let value = std::env::var(var).map_err(|_| {
        anyhow::anyhow!("the Discord bot token is missing: set the environment variable {var}")
    })?;
    let value = value.trim().to_string();
    if value.is_empty() {
        anyhow::bail!("the Discord bot token is missing: the environment variable {var} is empty");
    }
    if value.starts_with("Bot ") || value.chars().any(char::is_whitespace) {
        anyhow::bail!("the environment variable {var} must hold the bot token alone (without `Bot ` or spaces)");
    }
    Ok(SecretString::from(value))
}

impl DiscordAdapter {
    /// Builds the adapter from `[discord]`: the bot token from the environment variable it
    /// names (both modes: messages are posted with it), and in HTTP mode the public key.
    pub fn from_settings(s: &DiscordSettings) -> anyhow::Result<DiscordAdapter> {
        let mode = match s.mode.as_str() {
            "gateway" => Mode::Gateway,
            "http" => Mode::Http,
            other => anyhow::bail!("discord.mode must be \"gateway\" or \"http\", not `{other}`"),
        };
        let token = token_from_env(&s.bot_token_env)?;
        let verifier = match mode {
            Mode::Http => Some(interactions::verifier(&s.public_key)?),
            Mode::Gateway => None,
        };
        let application_id = match s.application_id.trim() {
            "" => None,
            id => Some(
                id.parse::<u64>()
                    .ok()
                    .context("discord.application_id must be the application's numeric id")?,
            ),
        };
        let transport =
            Transport::new(&s.api_base_url, token.clone()).context("discord.api_base_url")?;
        Ok(DiscordAdapter {
            mode,
            transport,
            api_base_url: s.api_base_url.trim_end_matches('/').to_string(),
            token,
            application_id,
            guild_id: Some(s.guild_id.trim().to_string()).filter(|g| !g.is_empty()),
            verifier,
            acked: Mutex::new(Default::default()),
        })
    }

    /// Whether an interaction from `guild` (`None`: a DM) is served: always without
    /// `discord.guild_id`, otherwise only from that server. A bot someone else invites to their
    /// server must not post approval cards (plans, warnings) there.
    pub fn serves_guild(&self, guild: Option<&str>) -> bool {
        match &self.guild_id {
            None => true,
            Some(ours) => guild == Some(ours.as_str()),
        }
    }

    /// The REST calls.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Remembers that `event`'s interaction was acked (now), for its answers.
    pub fn note_acked(&self, event: &InboundEvent) {
        let mut g = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *g;
        let now = Instant::now();
        while let Some((at, _)) = order.front() {
            if now.duration_since(*at) < TOKEN_LIFETIME {
                break;
            }
            if let Some((at, id)) = order.pop_front() {
                // Only if it was not acked again since (a newer entry is further back).
                if map.get(&id).is_some_and(|a| a.at == at) {
                    map.remove(&id);
                }
            }
        }
        map.insert(
            event.delivery_id.clone(),
            Acked {
                at: now,
                original_done: false,
            },
        );
        order.push_back((now, event.delivery_id.clone()));
    }

    /// Whether this answer should edit the deferred response (the first ephemeral answer to
    /// a command); marks it done.
    fn take_original(&self, id: &str) -> bool {
        let mut g = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        match g.0.get_mut(id) {
            Some(a) if !a.original_done => {
                a.original_done = true;
                true
            }
            Some(_) => false,
            // Not acked by this process (a restart in between): a follow-up is safe either way.
            None => false,
        }
    }

    fn acked_at(&self, id: &str) -> Option<Instant> {
        let g = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        g.0.get(id).map(|a| a.at)
    }

    /// Runs a webhook call; while the ack may still be on its way (an HTTP-mode ack is the
    /// response, sent as the event is submitted), Discord's "unknown interaction / webhook"
    /// (404) is retried for up to [`ACK_SETTLE`].
    async fn webhook_call<F, Fut>(&self, id: &str, call: F) -> Result<(), DeliveryError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), DeliveryError>>,
    {
        loop {
            match call().await {
                Err(DeliveryError::Permanent(m))
                    if m.contains("HTTP 404")
                        && self.acked_at(id).is_some_and(|t| t.elapsed() < ACK_SETTLE) =>
                {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
                other => return other,
            }
        }
    }

    /// The serenity REST client for the gateway (same base URL and token).
    pub fn serenity_http(&self) -> serenity::http::Http {
        use secrecy::ExposeSecret;
        http::client(
            &self.api_base_url,
            self.token.expose_secret(),
            self.application_id,
        )
    }
}

#[async_trait]
impl Outbound for DiscordAdapter {
    fn platform(&self) -> Platform {
        Platform::Discord
    }

    /// Text goes in `content`, escaped, at most 2,000 characters.
    fn fits_one_message(&self, text: &str) -> bool {
        render::escape(text).chars().count() <= render::CONTENT
    }

    async fn post(&self, channel: &str, reply: &Reply) -> Result<String, DeliveryError> {
        self.transport
            .post_message(channel, &render::edit(reply))
            .await
    }

    async fn edit(
        &self,
        channel: &str,
        message_id: &str,
        reply: &Reply,
    ) -> Result<(), DeliveryError> {
        self.transport
            .edit_message(channel, message_id, &render::edit(reply))
            .await
    }

    /// Discord cannot show a message to one person outside an interaction, so this sends a
    /// direct message to `user` (never a channel message: refusals and reports are not for
    /// everyone). `channel` is named in the message.
    async fn ephemeral(
        &self,
        channel: &str,
        user: &str,
        reply: &Reply,
    ) -> Result<(), DeliveryError> {
        let mut body = render::edit(reply);
        if let Some(Value::String(text)) = body.get_mut("content") {
            if !text.is_empty() {
                let shown = format!("(about <#{channel}>) {text}");
                *text = render::truncate(&shown, render::CONTENT);
            }
        }
        self.transport.direct_message(user, &body).await.map(|_| ())
    }

    /// Through the interaction's token: a command's first ephemeral answer edits the deferred
    /// response; every other answer is a follow-up (ephemeral when the reply is). A public
    /// reply goes to the channel as a bot message (a follow-up to an ephemeral deferral could
    /// not be public), and the deferred response then says where it went.
    async fn respond(&self, ev: &InboundEvent, reply: &Reply) -> Result<(), DeliveryError> {
        let ephemeral = reply.visibility == Visibility::Ephemeral;
        let Some(handle) = ev.reply_to.as_deref().and_then(ReplyHandle::decode) else {
            return match reply.visibility {
                Visibility::Ephemeral => {
                    self.ephemeral(&ev.channel.id, &ev.actor.account, reply)
                        .await
                }
                Visibility::InChannel => self.post(&ev.channel.id, reply).await.map(|_| ()),
            };
        };
        let id = ev.delivery_id.as_str();
        if !ephemeral {
            self.post(&ev.channel.id, reply).await?;
            if handle.command && self.take_original(id) {
                let note = json!({"content": "Posted in the channel.", "components": [], "allowed_mentions": {"parse": []}});
                let _ = self
                    .webhook_call(id, || {
                        self.transport
                            .edit_original(&handle.application_id, &handle.token, &note)
                    })
                    .await;
            }
            return Ok(());
        }
        if handle.command && self.take_original(id) {
            let body = render::edit(reply);
            let result = self
                .webhook_call(id, || {
                    self.transport
                        .edit_original(&handle.application_id, &handle.token, &body)
                })
                .await;
            if result.is_ok() {
                return Ok(());
            }
            // A retry of this answer (or the next one) goes out as a follow-up.
            tracing::debug!("discord: editing the deferred response failed; trying a follow-up");
        }
        // `render::message` sets the ephemeral flag of an ephemeral reply.
        let body = render::message(reply);
        self.webhook_call(id, || {
            self.transport
                .followup(&handle.application_id, &handle.token, &body)
        })
        .await
    }
}

#[async_trait]
impl Adapter for DiscordAdapter {
    /// HTTP mode only: `POST /discord/interactions`.
    fn routes(self: Arc<Self>, inbound: Inbound) -> Option<axum::Router> {
        match (self.mode, self.verifier.clone()) {
            (Mode::Http, Some(v)) => Some(interactions::routes(inbound, self.clone(), v)),
            _ => None,
        }
    }

    async fn run(
        self: Arc<Self>,
        inbound: Inbound,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        match self.mode {
            Mode::Gateway => gateway::run(self, inbound, shutdown).await,
            Mode::Http => {
                let _ = shutdown.wait_for(|v| *v).await;
                Ok(())
            }
        }
    }
}
