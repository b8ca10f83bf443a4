//! The Slack adapter (slack-morphism): Socket Mode (default) or HTTP mode, Block Kit cards,
//! messages through `chat.postMessage`, `chat.update`, `chat.postEphemeral` and `response_url`.
//!
//! - [`transport`]: the Web API calls and the error mapping onto [`DeliveryError`];
//! - [`inbound`]: payloads to events, ack first, and the signed HTTP-mode endpoints;
//! - [`render`]: replies as Block Kit.

pub mod inbound;
pub mod manifest;
pub mod render;
pub mod transport;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use slack_morphism::prelude::*;
use tokio::sync::watch;

use crate::adapters::{stopped, Adapter, DeliveryError, Inbound, Outbound, MAX_BACKOFF};
use crate::config::SlackSettings;
use crate::core::event::{InboundEvent, Platform};
use crate::core::reply::{Reply, Visibility};

use transport::Transport;

/// How long a new Socket Mode connection may take to say `hello` before it is retried.
const HELLO_WAIT: Duration = Duration::from_secs(5);

/// How Slack reaches dualkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A websocket dualkey opens (`apps.connections.open`); no public URL.
    Socket,
    /// Slack POSTs signed requests to `/slack/commands` and `/slack/interactions`.
    Http,
}

/// The Slack adapter. Holds its tokens as secrets; it has no `Debug`.
pub struct SlackAdapter {
    mode: Mode,
    transport: Transport,
    app_token: Option<SecretString>,
    signing_secret: Option<SecretString>,
    connected_once: Arc<AtomicBool>,
}

fn secret_from_env(var: &str, what: &str, prefix: Option<&str>) -> anyhow::Result<SecretString> {
    let value = std::env::var(var).map_err(|_| {
        anyhow::anyhow!("the Slack {what} is missing: set the environment variable {var}")
    })?;
    let value = value.trim().to_string();
    if value.is_empty() {
        anyhow::bail!("the Slack {what} is missing: the environment variable {var} is empty");
    }
    if let Some(p) = prefix {
        if !value.starts_with(p) {
            anyhow::bail!("the environment variable {var} does not hold a Slack {what} (it should start with `{p}`)");
        }
    }
    Ok(SecretString::from(value))
}

impl SlackAdapter {
    /// Builds the adapter from `[slack]`, reading its tokens from the environment variables it
    /// names: the bot token (`xoxb-…`) always, the app token (`xapp-…`) in Socket Mode, the
    /// signing secret in HTTP mode.
    pub fn from_settings(s: &SlackSettings) -> anyhow::Result<SlackAdapter> {
        let mode = match s.mode.as_str() {
            "socket" => Mode::Socket,
            "http" => Mode::Http,
            other => anyhow::bail!("slack.mode must be \"socket\" or \"http\", not `{other}`"),
        };
        let bot = secret_from_env(&s.bot_token_env, "bot token", Some("xoxb-"))?;
        let app_token = match mode {
            Mode::Socket => Some(secret_from_env(
                &s.app_token_env,
                "app-level token (Socket Mode)",
                Some("xapp-"),
            )?),
            Mode::Http => None,
        };
        let signing_secret = match mode {
            Mode::Http => Some(secret_from_env(
                &s.signing_secret_env,
                "signing secret (HTTP mode)",
                None,
            )?),
            Mode::Socket => None,
        };
        let transport = Transport::new(&s.api_base_url, bot).context("slack.api_base_url")?;
        Ok(SlackAdapter {
            mode,
            transport,
            app_token,
            signing_secret,
            connected_once: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The mode from the settings.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Socket Mode until `shutdown`: a listener per attempt until one says `hello` (1 s
    /// doubling to 30 s between attempts); after that slack-morphism reconnects by itself.
    async fn run_socket(
        &self,
        inbound: Inbound,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let app_token = self
            .app_token
            .as_ref()
            .context("Socket Mode needs the app-level token")?;
        let mut backoff = Duration::from_secs(1);
        loop {
            let stop_now = *shutdown.borrow();
            if stop_now {
                return Ok(());
            }
            let (hello_tx, mut hello_rx) = watch::channel(0u64);
            let state = SocketState {
                inbound: inbound.clone(),
                hellos: Arc::new(hello_tx),
                connected_once: self.connected_once.clone(),
            };
            let env = Arc::new(
                SlackClientEventsListenerEnvironment::new(self.transport.client())
                    .with_error_handler(on_listener_error)
                    .with_user_state(state),
            );
            let callbacks = SlackSocketModeListenerCallbacks::new()
                .with_hello_events(on_hello)
                .with_command_events(on_command)
                .with_interaction_events(on_interaction);
            let listener = SlackClientSocketModeListener::new(
                &SlackClientSocketModeConfig::new().with_max_connections_count(1),
                env,
                callbacks,
            );
            let token = SlackApiToken::new(app_token.expose_secret().to_string().into());
            match listener.listen_for(&token).await {
                Err(e) => tracing::warn!(
                    error = %transport::map_error("apps.connections.open", &e),
                    "slack: could not register the app token"
                ),
                Ok(()) => {
                    listener.start().await;
                    let hello = tokio::select! {
                        r = tokio::time::timeout(HELLO_WAIT, async {
                            hello_rx.wait_for(|n| *n > 0).await.is_ok()
                        }) => r.unwrap_or(false),
                        _ = stopped(&mut shutdown) => {
                            listener.shutdown().await;
                            return Ok(());
                        }
                    };
                    if hello {
                        stopped(&mut shutdown).await;
                        listener.shutdown().await;
                        return Ok(());
                    }
                    listener.shutdown().await;
                }
            }
            tracing::warn!(
                retry_in = ?backoff,
                "slack: could not connect (socket mode); retrying"
            );
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped(&mut shutdown) => return Ok(()),
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// What the Socket Mode callbacks (plain `fn`s) get through slack-morphism's user state.
#[derive(Clone)]
struct SocketState {
    inbound: Inbound,
    hellos: Arc<watch::Sender<u64>>,
    connected_once: Arc<AtomicBool>,
}

async fn socket_state(states: &SlackClientEventsUserState) -> Option<SocketState> {
    states.read().await.get_user_state::<SocketState>().cloned()
}

async fn on_hello<E: Send + 'static>(
    _ev: E,
    _client: Arc<SlackHyperClient>,
    states: SlackClientEventsUserState,
) {
    if let Some(st) = socket_state(&states).await {
        if !st.connected_once.swap(true, Ordering::SeqCst) {
            tracing::info!("slack: connected (socket mode)");
        } else {
            tracing::debug!("slack: socket mode connection renewed");
        }
        st.hellos.send_modify(|n| *n += 1);
    }
}

async fn on_command(
    ev: SlackCommandEvent,
    _client: Arc<SlackHyperClient>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<SlackCommandEventResponse> {
    let failed = || {
        SlackCommandEventResponse::new(
            SlackMessageContent::new().with_text(crate::adapters::NOT_RECORDED.to_string()),
        )
        .with_response_type(SlackMessageResponseType::Ephemeral)
    };
    let began = std::time::Instant::now();
    let Some(st) = socket_state(&states).await else {
        return Ok(failed());
    };
    // In its own task, so that a panic inside becomes an error ack, not a dead listener.
    let ack = tokio::spawn(async move { inbound::accept_command(&st.inbound, &ev).await }).await;
    // slack-morphism sends the ack over the socket as soon as this returns.
    crate::core::meter::ack("slack", "socket", began);
    Ok(ack.unwrap_or_else(|e| {
        tracing::error!(error = %e, "slack: handling a command panicked");
        failed()
    }))
}

async fn on_interaction(
    ev: SlackInteractionEvent,
    _client: Arc<SlackHyperClient>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    let began = std::time::Instant::now();
    if let Some(st) = socket_state(&states).await {
        let done =
            tokio::spawn(async move { inbound::accept_interaction(&st.inbound, &ev).await }).await;
        crate::core::meter::ack("slack", "socket", began);
        if let Err(e) = done {
            tracing::error!(error = %e, "slack: handling an interaction panicked");
        }
    }
    Ok(())
}

/// slack-morphism's error handler: logs (without payloads, which carry tokens) and acks.
fn on_listener_error(
    err: Box<dyn std::error::Error + Send + Sync + 'static>,
    _client: Arc<SlackHyperClient>,
    _states: SlackClientEventsUserState,
) -> HttpStatusCode {
    let text = err.to_string();
    let text: String = text
        .split(". Body:")
        .next()
        .unwrap_or_default()
        .chars()
        .take(160)
        .collect();
    tracing::warn!(error = %text, "slack: socket mode listener error");
    HttpStatusCode::OK
}

#[async_trait]
impl Outbound for SlackAdapter {
    fn platform(&self) -> Platform {
        Platform::Slack
    }

    /// A text message becomes section blocks of 3,000 characters each (escaped); a digest keeps
    /// to four of them, well inside Slack's 50 blocks and 40,000 characters.
    fn fits_one_message(&self, text: &str) -> bool {
        render::escape(text).chars().count() <= render::DIGEST_TEXT
    }

    async fn post(&self, channel: &str, reply: &Reply) -> Result<String, DeliveryError> {
        self.transport
            .post_message(channel, render::message(reply))
            .await
    }

    async fn edit(
        &self,
        channel: &str,
        message_id: &str,
        reply: &Reply,
    ) -> Result<(), DeliveryError> {
        self.transport
            .update(channel, message_id, render::message(reply))
            .await
    }

    async fn ephemeral(
        &self,
        channel: &str,
        user: &str,
        reply: &Reply,
    ) -> Result<(), DeliveryError> {
        self.transport
            .post_ephemeral(channel, user, render::message(reply))
            .await
    }

    /// Through the event's `response_url` when it has one (a new message, ephemeral or in the
    /// channel, never replacing the card); else `chat.postEphemeral` / `chat.postMessage`.
    async fn respond(&self, ev: &InboundEvent, reply: &Reply) -> Result<(), DeliveryError> {
        let ephemeral = reply.visibility == Visibility::Ephemeral;
        match &ev.reply_to {
            Some(url) => {
                self.transport
                    .respond_url(url, render::message(reply), ephemeral)
                    .await
            }
            None if ephemeral => {
                self.ephemeral(&ev.channel.id, &ev.actor.account, reply)
                    .await
            }
            None => self.post(&ev.channel.id, reply).await.map(|_| ()),
        }
    }
}

#[async_trait]
impl Adapter for SlackAdapter {
    /// HTTP mode only: `POST /slack/commands` and `POST /slack/interactions`.
    fn routes(self: Arc<Self>, inbound: Inbound) -> Option<axum::Router> {
        match (self.mode, &self.signing_secret) {
            (Mode::Http, Some(secret)) => Some(inbound::routes(inbound, secret.clone())),
            _ => None,
        }
    }

    async fn run(
        self: Arc<Self>,
        inbound: Inbound,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        match self.mode {
            Mode::Socket => self.run_socket(inbound, shutdown).await,
            Mode::Http => {
                let _ = shutdown.wait_for(|v| *v).await;
                Ok(())
            }
        }
    }
}
