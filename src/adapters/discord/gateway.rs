//! Gateway mode: serenity's client on the websocket Discord names at `GET {api_base_url}/api/
//! v10/gateway`, with no intents (interactions need none), until shutdown. serenity resumes or
//! re-identifies by itself when the connection drops; a client that stops (the gateway
//! unreachable, refused) is started again with backoff.
//!
//! Each `INTERACTION_CREATE` is read like an HTTP-mode interaction ([`interactions::parse`] of
//! the same JSON), acked through `POST /interactions/{id}/{token}/callback` before any store
//! I/O, then submitted. An interaction seen before (replayed after a resume) is neither acked
//! nor handled again; across restarts the store's dedupe by interaction id does the same.

use std::sync::Arc;
use std::time::Duration;

use serenity::all::{Context, EventHandler, GatewayIntents, Interaction, Ready, ResumedEvent};
use serenity::client::ClientBuilder;
use tokio::sync::watch;

use super::interactions::{self, Incoming};
use super::DiscordAdapter;
use crate::adapters::{stopped, Inbound, MAX_BACKOFF};
use crate::core::event::Platform;

struct Handler {
    adapter: Arc<DiscordAdapter>,
    inbound: Inbound,
    readies: watch::Sender<u64>,
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        tracing::info!(session = %ready.session_id, "discord: connected (gateway)");
        self.readies.send_modify(|n| *n += 1);
    }

    async fn resume(&self, _ctx: Context, _event: ResumedEvent) {
        tracing::info!("discord: gateway session resumed");
    }

    async fn interaction_create(&self, _ctx: Context, interaction: Interaction) {
        let incoming =
            match interactions::to_wire(&interaction).and_then(|v| interactions::parse(&v)) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(error = %e, "discord: unreadable interaction from the gateway");
                    return;
                }
            };
        accept(&self.adapter, &self.inbound, incoming).await;
    }
}

/// Acks an interaction from the gateway through the REST callback, then submits its event.
/// An ack that fails leaves the event unhandled: Discord shows the person that the command
/// failed, and nothing was done.
pub async fn accept(adapter: &DiscordAdapter, inbound: &Inbound, incoming: Incoming) {
    let began = std::time::Instant::now();
    let Some((id, token)) = incoming.id_and_token() else {
        return; // PING comes only over HTTP.
    };
    if !adapter.serves_guild(incoming.guild()) {
        tracing::warn!(guild = ?incoming.guild(), "discord: interaction from outside discord.guild_id refused");
        let answer = interactions::foreign_answer(&incoming);
        if let Err(e) = adapter
            .transport()
            .interaction_callback(&id, &token, &answer)
            .await
        {
            tracing::warn!(interaction = %id, error = %e, "discord: could not answer an interaction from another server");
        }
        return;
    }
    if inbound.first_sight_of(Platform::Discord, &id).is_err() {
        tracing::info!(interaction = %id, "discord: interaction delivered again; ignored");
        return;
    }
    let (ack, event) = interactions::respond_to(inbound, incoming).await;
    if let Err(e) = adapter
        .transport()
        .interaction_callback(&id, &token, &ack)
        .await
    {
        tracing::warn!(interaction = %id, error = %e, "discord: could not ack an interaction; not handled");
        return;
    }
    crate::core::meter::ack("discord", "gateway", began);
    if let Some(event) = event {
        adapter.note_acked(&event);
        drop(inbound.submit(event));
    }
}

/// Runs the gateway until `shutdown`.
pub async fn run(
    adapter: Arc<DiscordAdapter>,
    inbound: Inbound,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_secs(1);
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let http = adapter.serenity_http();
        // Asked here first: serenity falls back to the real gateway when the lookup fails,
        // which must not happen with a proxy or a stand-in as the base URL.
        let url = tokio::select! {
            r = http.get_gateway() => r.map(|g| g.url),
            _ = stopped(&mut shutdown) => return Ok(()),
        };
        match url {
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "discord: gateway URL lookup failed; retrying");
            }
            Ok(url) => {
                let (readies, mut ready_rx) = watch::channel(0u64);
                let handler = Handler {
                    adapter: adapter.clone(),
                    inbound: inbound.clone(),
                    readies,
                };
                let mut client = ClientBuilder::new_with_http(http, GatewayIntents::empty())
                    .event_handler(handler)
                    .await?;
                *client.ws_url.lock().await = url;
                let shards = client.shard_manager.clone();
                let ended = tokio::select! {
                    r = client.start() => Some(r),
                    _ = stopped(&mut shutdown) => None,
                };
                match ended {
                    None => {
                        shards.shutdown_all().await;
                        return Ok(());
                    }
                    Some(r) => {
                        if *ready_rx.borrow_and_update() > 0 {
                            backoff = Duration::from_secs(1);
                        }
                        match r {
                            Ok(()) => {
                                tracing::warn!(retry_in = ?backoff, "discord: gateway client stopped; reconnecting")
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, retry_in = ?backoff, "discord: gateway client failed; reconnecting")
                            }
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut shutdown) => return Ok(()),
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
