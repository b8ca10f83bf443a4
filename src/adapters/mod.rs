//! `adapters` talk: the only place platform payloads and SDK types appear. Every adapter meets
//! one contract, after errbot's backend contract:
//!
//! - **inbound**: it verifies a platform payload (signature, replay window), turns it into a
//!   neutral [`InboundEvent`] and hands it to [`Inbound::submit`], which starts a task that
//!   records the delivery id (dedupe) and then dispatches, and returns at once, so the adapter
//!   acks the platform before any I/O ("ack first");
//! - **outbound** ([`Outbound`]): post to a channel, edit a message, an ephemeral message to one
//!   person, and a reply through the platform's response handle of an event; cards and reports
//!   are rendered natively where the platform can, as [`Reply::to_text`] elsewhere;
//! - **lifecycle** ([`Adapter::run`]): run until shutdown, reconnecting with backoff;
//! - **routes** ([`Adapter::routes`]): the HTTP routes it mounts on the server (Slack's HTTP
//!   mode endpoints), if any.
//!
//! Adapters: [`slack`], [`shell`] (the local terminal) and [`memory`] (in-memory, for tests:
//! push an event, pop what was said).

pub mod discord;
pub mod memory;
pub mod shell;
pub mod slack;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::context::Core;
use crate::core::dispatch::already_received;
use crate::core::event::{EventKind, InboundEvent, Platform};
use crate::core::ports::Responder;
use crate::core::reply::{Reply, Visibility};

/// Requests refused for a bad, missing or stale signature since start, per platform (Slack,
/// Discord); shown in `/metrics` as `dualkey_signature_failures_total`. They are logged and
/// counted, not written to the audit trail: an unsigned request must change nothing, and anyone
/// on the internet can send them.
static SIGNATURE_FAILURES: [std::sync::atomic::AtomicU64; 2] = [
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
];

fn platform_slot(p: Platform) -> Option<usize> {
    match p {
        Platform::Slack => Some(0),
        Platform::Discord => Some(1),
        Platform::Shell => None,
    }
}

/// Counts a request refused for its signature.
pub fn count_signature_failure(p: Platform) {
    if let Some(i) = platform_slot(p) {
        SIGNATURE_FAILURES[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Requests refused for their signature since start: `(platform, count)`.
pub fn signature_failures() -> Vec<(Platform, u64)> {
    [Platform::Slack, Platform::Discord]
        .into_iter()
        .filter_map(|p| {
            platform_slot(p).map(|i| {
                (
                    p,
                    SIGNATURE_FAILURES[i].load(std::sync::atomic::Ordering::Relaxed),
                )
            })
        })
        .collect()
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// HTTP 429: try again after this long.
    #[error("rate limited; retry after {0:?}")]
    RateLimited(Duration),
    /// Worth retrying (network, 5xx).
    #[error("{0}")]
    Transient(String),
    /// Will never succeed (unknown channel, bad token): kept with its error, not retried.
    #[error("{0}")]
    Permanent(String),
}

impl DeliveryError {
    /// Whether the platform said the bot cannot reach the channel: not a member of it, no
    /// access to it, or no such channel (Slack `not_in_channel`, `channel_not_found`,
    /// `is_archived`; Discord 50001 Missing Access, 50013 Missing Permissions, 10003 Unknown
    /// Channel). Someone has to invite the bot; retrying will not help.
    pub fn is_no_access(&self) -> bool {
        let DeliveryError::Permanent(text) = self else {
            return false;
        };
        [
            "not_in_channel",
            "channel_not_found",
            "is_archived",
            "(code 50001)",
            "(code 50013)",
            "(code 10003)",
        ]
        .iter()
        .any(|c| text.contains(c))
    }
}

/// The outbound half of an adapter: how dualkey speaks on one platform.
#[async_trait]
pub trait Outbound: Send + Sync {
    /// Which platform this speaks to.
    fn platform(&self) -> Platform;

    /// Whether plain text `text` fits in one message without being cut (digests of audit lines
    /// are filled up to this). The default is Discord's 2,000 characters.
    fn fits_one_message(&self, text: &str) -> bool {
        text.chars().count() <= 2000
    }

    /// Posts a message in a channel; returns the platform's message id (Slack `ts`).
    async fn post(&self, channel: &str, reply: &Reply) -> Result<String, DeliveryError>;

    /// Replaces a message's content.
    async fn edit(
        &self,
        channel: &str,
        message_id: &str,
        reply: &Reply,
    ) -> Result<(), DeliveryError>;

    /// A message only `user` sees, in `channel`.
    async fn ephemeral(
        &self,
        channel: &str,
        user: &str,
        reply: &Reply,
    ) -> Result<(), DeliveryError>;

    /// Answers the person who sent `ev`, through the platform's response handle when the event
    /// carries one (Slack `response_url`). The default posts ephemeral replies to the sender
    /// and public ones to the channel.
    async fn respond(&self, ev: &InboundEvent, reply: &Reply) -> Result<(), DeliveryError> {
        match reply.visibility {
            Visibility::Ephemeral => {
                self.ephemeral(&ev.channel.id, &ev.actor.account, reply)
                    .await
            }
            Visibility::InChannel => self.post(&ev.channel.id, reply).await.map(|_| ()),
        }
    }
}

/// A whole adapter: outbound, plus its lifecycle and routes.
#[async_trait]
pub trait Adapter: Outbound {
    /// The HTTP routes this adapter serves on `server.listen`, handing verified events to
    /// `inbound`. `None` when it serves none (Socket Mode, the shell).
    fn routes(self: Arc<Self>, _inbound: Inbound) -> Option<axum::Router> {
        None
    }

    /// Receives events until `shutdown` turns true, reconnecting with backoff when the
    /// platform's connection drops. Adapters that only serve routes return at shutdown.
    async fn run(
        self: Arc<Self>,
        inbound: Inbound,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let _ = inbound;
        let _ = shutdown.wait_for(|v| *v).await;
        Ok(())
    }
}

/// The longest wait between two connection attempts of an adapter's reconnect loop.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Resolves once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|v| *v).await;
}

/// What became of a submitted event (the value of [`Submitted`]'s task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// First delivery: dispatched (its answer went to the sender, its cards to the outbox).
    Dispatched,
    /// The same delivery was handled before; nothing was done.
    Duplicate,
    /// The delivery id could not be recorded (the store failed); nothing was done and the
    /// sender was told so.
    NotRecorded,
}

/// The task handling a submitted event: adapters that must ack within a deadline drop it, the
/// shell and tests await it.
#[derive(Debug)]
pub struct Submitted(pub tokio::task::JoinHandle<Handled>);

/// A delivery id waiting for the dedupe batch, with where to send the answer.
type DedupeJob = (InboundEvent, oneshot::Sender<Result<bool, String>>);

/// The inbound half of the contract: where adapters hand verified events. Cheap to clone.
///
/// Dedupe inserts are group-committed: a burst of events shares one store transaction (one
/// fsync on SQLite) instead of queueing for one commit each, so acks stay fast under load.
#[derive(Clone)]
pub struct Inbound {
    core: Arc<Core>,
    outs: Arc<Vec<Arc<dyn Outbound>>>,
    dedupe: mpsc::UnboundedSender<DedupeJob>,
    /// Events acked and being dispatched, so shutdown can let them finish.
    running: Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>,
}

/// Most delivery ids recorded in one transaction.
const DEDUPE_BATCH: usize = 256;

impl Inbound {
    /// An inbound handle answering through `outs` (one per platform). Starts the dedupe
    /// batcher task, which ends when the last clone is dropped.
    pub fn new(core: Arc<Core>, outs: Vec<Arc<dyn Outbound>>) -> Inbound {
        let (tx, mut rx) = mpsc::unbounded_channel::<DedupeJob>();
        let batch_core = core.clone();
        tokio::spawn(async move {
            let mut batch: Vec<DedupeJob> = Vec::new();
            while rx.recv_many(&mut batch, DEDUPE_BATCH).await > 0 {
                let evs: Vec<&InboundEvent> = batch.iter().map(|(ev, _)| ev).collect();
                let result = batch_core.first_deliveries(&evs).await;
                for (i, (_, answer)) in batch.drain(..).enumerate() {
                    let _ = answer.send(match &result {
                        Ok(firsts) => Ok(firsts[i]),
                        Err(e) => Err(format!("{e:#}")),
                    });
                }
            }
        });
        Inbound {
            core,
            outs: Arc::new(outs),
            dedupe: tx,
            running: Arc::new((
                std::sync::atomic::AtomicUsize::new(0),
                tokio::sync::Notify::new(),
            )),
        }
    }

    /// Waits (at most `limit`) until every accepted event has been dispatched: an event that
    /// was acked must not be cut off by a shutdown, since the platform will not send it again.
    /// True when none is left.
    pub async fn drain(&self, limit: Duration) -> bool {
        use std::sync::atomic::Ordering;
        let (count, done) = &*self.running;
        let wait = async {
            loop {
                let notified = done.notified();
                tokio::pin!(notified);
                // Registered before the check, so a count-down in between is not missed.
                notified.as_mut().enable();
                if count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// The core (for adapters that check identities before acking).
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Records `ev`'s delivery as seen by this process, without I/O, so an adapter can ack a
    /// repeated delivery for what it is before submitting anything: `Err` (with the request
    /// the first delivery created, when known yet) when this process accepted it before.
    /// Deliveries this process did not see are caught after the ack by the store's dedupe.
    pub fn first_sight(&self, ev: &InboundEvent) -> Result<(), Option<String>> {
        self.first_sight_of(ev.actor.platform, &ev.delivery_id)
    }

    /// [`Inbound::first_sight`] for a delivery known by its id before any event is made of it
    /// (the Discord gateway, which acks after building the event).
    pub fn first_sight_of(
        &self,
        platform: Platform,
        delivery_id: &str,
    ) -> Result<(), Option<String>> {
        let mut recent = self.core.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.first_sight(&Core::delivery_key_of(platform, delivery_id))
    }

    /// Starts handling `ev` in its own task and returns at once, without any I/O, so the
    /// adapter can ack right away. The task records the delivery id (group-committed with the
    /// other events of a burst) and dispatches only a first delivery: the same delivery handled
    /// twice acts once. Recording before the ack would put the ack behind the store's writes
    /// (on SQLite every audit event of earlier commands holds the one writer lock).
    pub fn submit(&self, ev: InboundEvent) -> Submitted {
        let core = self.core.clone();
        let out = self
            .outs
            .iter()
            .find(|o| o.platform() == ev.channel.platform)
            .cloned();
        let dedupe = self.dedupe.clone();
        let running = self.running.clone();
        running.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Submitted(tokio::spawn(async move {
            // Counted down even if the dispatcher panics.
            struct Done(Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0 .0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    self.0 .1.notify_waiters();
                }
            }
            let _done = Done(running);
            let responder = EventResponder { ev: &ev, out };
            let (answer, first) = oneshot::channel();
            let first = match dedupe.send((ev.clone(), answer)) {
                Ok(()) => first
                    .await
                    .unwrap_or_else(|_| Err("the dedupe task stopped".into())),
                Err(_) => Err("the dedupe task stopped".into()),
            };
            match first {
                Ok(true) => {
                    core.dispatch(ev.clone(), &responder).await;
                    Handled::Dispatched
                }
                Ok(false) => {
                    tracing::info!(delivery = %ev.delivery_id, "duplicate delivery ignored");
                    // Acked as new (another process, or before a restart, saw it first): the
                    // sender learns that nothing runs again. A repeated click stays silent.
                    if !matches!(ev.kind, EventKind::Action { .. }) {
                        let request = core.request_of_delivery(&ev);
                        let note = already_received(None, request.as_deref());
                        let _ = responder.respond(Reply::ephemeral(note)).await;
                    }
                    Handled::Duplicate
                }
                Err(e) => {
                    core.recent
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .forget(&Core::delivery_key(&ev));
                    tracing::error!(delivery = %ev.delivery_id, error = %e, "recording a delivery failed");
                    let _ = responder.respond(Reply::ephemeral(NOT_RECORDED)).await;
                    Handled::NotRecorded
                }
            }
        }))
    }
}

/// What the sender is told when the delivery could not be recorded.
pub const NOT_RECORDED: &str =
    "dualkey could not record this request (its state store failed); nothing was done. Try again in a moment.";

/// Answers one event through its platform's [`Outbound::respond`]; a failure is logged (the
/// state change and its audit event are already committed).
struct EventResponder<'a> {
    ev: &'a InboundEvent,
    out: Option<Arc<dyn Outbound>>,
}

#[async_trait]
impl Responder for EventResponder<'_> {
    async fn respond(&self, reply: Reply) -> anyhow::Result<()> {
        let Some(out) = &self.out else {
            tracing::warn!(
                platform = self.ev.channel.platform.as_str(),
                "no adapter to answer on; reply dropped: {}",
                reply.summary()
            );
            return Ok(());
        };
        // One retry after a rate limit or a transient failure, within the platform's window for
        // answering; beyond that the person sees nothing, and the log says so.
        for attempt in 0..2 {
            match out.respond(self.ev, &reply).await {
                Ok(()) => return Ok(()),
                Err(DeliveryError::RateLimited(d)) if attempt == 0 => {
                    tokio::time::sleep(d.min(Duration::from_secs(5))).await
                }
                Err(DeliveryError::Transient(_)) if attempt == 0 => {
                    tokio::time::sleep(Duration::from_millis(500)).await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reply to the sender failed: {}", reply.summary());
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_the_bot_cannot_reach_is_told_apart_from_other_failures() {
        let slack =
            |code: &str| DeliveryError::Permanent(format!("slack chat.postMessage: {code}"));
        assert!(slack("not_in_channel").is_no_access());
        assert!(slack("channel_not_found").is_no_access());
        assert!(!slack("invalid_auth").is_no_access());
        let discord = |status: u16, body: &str| {
            discord::transport::map_status(
                "create message",
                reqwest::StatusCode::from_u16(status).unwrap(),
                &reqwest::header::HeaderMap::new(),
                body,
            )
        };
        assert!(discord(403, r#"{"message":"Missing Access","code":50001}"#).is_no_access());
        assert!(discord(404, r#"{"message":"Unknown Channel","code":10003}"#).is_no_access());
        assert!(!discord(401, r#"{"message":"401: Unauthorized","code":0}"#).is_no_access());
        assert!(!discord(500, "").is_no_access(), "a 5xx is transient");
        assert!(!DeliveryError::RateLimited(Duration::from_secs(1)).is_no_access());
    }
}
