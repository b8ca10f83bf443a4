//! Outbox delivery: messages written to the store (audit lines, cards and their edits, reports,
//! interruption notices) are delivered to chat afterwards, in order per channel, retried with
//! exponential backoff, honouring a platform's `Retry-After`. Nothing is lost while chat is
//! down; a message that can never be delivered is kept with its error, and logged.
//!
//! Cards are posted and edited by key (`request:<id>`): a posted card's message id is recorded
//! per channel, and an edit is sent only when no newer edit of the same card waits in the same
//! channel, so progress ticks that stacked up behind a 429 collapse into the newest.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::core::dispatch::Core;
use crate::core::reply::Reply;
use crate::store::OutboxRow;

pub use crate::adapters::{DeliveryError, Outbound};

/// Backoff after `attempts` failures: 1 s, 2 s, 4 s ... capped at 5 minutes.
pub fn backoff(attempts: i64) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 8) as u32).min(Duration::from_secs(300))
}

/// Delivers what is due for one adapter, once. Returns how many messages were delivered.
///
/// Passes run one at a time in this process (the outbox task, and the shell flushing what its
/// last line queued), so no row is sent twice; across processes the `outbox` lease does that.
pub async fn deliver_due(core: &Core, out: &dyn Outbound) -> anyhow::Result<usize> {
    deliver_due_leased(core, out, None).await
}

/// [`deliver_due`] for the holder of the `outbox` lease: the lease is renewed before each
/// message, and the pass stops when it was lost (a slow pass must not let a second replica
/// deliver the same rows).
pub async fn deliver_due_leased(
    core: &Core,
    out: &dyn Outbound,
    holder: Option<&str>,
) -> anyhow::Result<usize> {
    static ONE_PASS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _pass = ONE_PASS.lock().await;
    let now = core.clock.now_ms();
    let rows = core
        .store
        .outbox_due(out.platform().as_str(), now, 100)
        .await?;
    let mut blocked: HashSet<String> = HashSet::new();
    let mut delivered = 0;
    for row in rows {
        if let Some(me) = holder {
            if !core
                .store
                .try_lease("outbox", me, core.clock.now_ms(), LEASE_MS)
                .await?
            {
                tracing::warn!("outbox lease lost during a pass; another replica delivers");
                break;
            }
        }
        if blocked.contains(&row.channel) {
            continue; // keep per-channel order: an earlier message of this channel is waiting
        }
        let reply: Reply = match serde_json::from_str(&row.payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(outbox = row.id, error = %e, "unreadable outbox payload kept undelivered");
                core.store
                    .outbox_retry(row.id, i64::MAX, &format!("unreadable payload: {e}"))
                    .await?;
                continue;
            }
        };
        if row.op == "edit" && core.store.outbox_edit_superseded(&row).await? {
            // A newer edit of this card waits in this channel: this one is skipped.
            core.store
                .outbox_delivered(row.id, core.clock.now_ms())
                .await?;
            continue;
        }
        let reply = match &row.card_key {
            Some(key) => fresh_card(core, key, reply).await,
            None => reply,
        };
        let result = send(core, out, &row, &reply).await;
        match result {
            Ok(()) => {
                core.store
                    .outbox_delivered(row.id, core.clock.now_ms())
                    .await?;
                delivered += 1;
            }
            Err(e) => {
                blocked.insert(row.channel.clone());
                let next = match &e {
                    DeliveryError::RateLimited(after) => {
                        core.clock.now_ms() + after.as_millis() as i64
                    }
                    DeliveryError::Transient(_) => {
                        core.clock.now_ms() + backoff(row.attempts).as_millis() as i64
                    }
                    DeliveryError::Permanent(_) => i64::MAX,
                };
                tracing::warn!(outbox = row.id, platform = %row.platform, channel = %row.channel, error = %e, "chat delivery failed");
                core.store
                    .outbox_retry(row.id, next, &e.to_string())
                    .await?;
            }
        }
    }
    Ok(delivered)
}

/// A card as the store has it now, with the queued reply's progress line: edits queued by
/// racing writers (a vote and the worker, two replicas) may carry older states, and the newest
/// queued edit is the only one sent, so it is rendered again here. Falls back to the queued
/// reply when the card cannot be rendered (an unknown key, a store hiccup).
async fn fresh_card(core: &Core, key: &str, queued: Reply) -> Reply {
    match core.render_card(key).await {
        Ok(Some(mut fresh)) => {
            if let (crate::core::reply::Body::Card(f), crate::core::reply::Body::Card(q)) =
                (&mut fresh.body, &queued.body)
            {
                // A progress line belongs to a running operation only.
                if f.state == Some(crate::core::reply::CardState::Running) {
                    f.progress = q.progress.clone();
                }
            }
            fresh
        }
        Ok(None) => queued,
        Err(e) => {
            tracing::warn!(
                card = key,
                error = format!("{e:#}"),
                "card not re-rendered; sending the queued state"
            );
            queued
        }
    }
}

/// Sends one row: a post (recording a card's message id), an edit of a known message, or an
/// edit of a card copy whose post never got a message id, which is posted anew instead.
async fn send(
    core: &Core,
    out: &dyn Outbound,
    row: &OutboxRow,
    reply: &Reply,
) -> Result<(), DeliveryError> {
    let message_id = match (&row.message_id, &row.card_key) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(key)) if row.op == "edit" => core
            .store
            .card_messages(key)
            .await
            .map_err(|e| DeliveryError::Transient(format!("reading the card's message: {e}")))?
            .into_iter()
            .find(|(p, c, _)| *p == row.platform && *c == row.channel)
            .and_then(|(_, _, m)| m),
        _ => None,
    };
    match (row.op.as_str(), message_id) {
        ("edit", Some(id)) => out.edit(&row.channel, &id, reply).await,
        _ => {
            let id = out.post(&row.channel, reply).await?;
            if let Some(key) = &row.card_key {
                // The message exists now: retrying the post would duplicate it, so the id is
                // recorded with a few quick retries, and only then given up (the next edit of
                // this copy would then post it again).
                let mut tries = 0;
                loop {
                    match core
                        .store
                        .set_card_message(key, &row.platform, &row.channel, &id)
                        .await
                    {
                        Ok(()) => break,
                        Err(e) if tries >= 3 => {
                            return Err(DeliveryError::Permanent(format!(
                                "posted as {id}, but recording the message id failed: {e}"
                            )))
                        }
                        Err(_) => {
                            tries += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(200 * tries)).await;
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

/// How long the outbox lease lasts without renewal.
pub const LEASE_MS: i64 = 15_000;

/// Delivers for every adapter until `shutdown`; woken by `core.outbox_wake` and every 500 ms.
/// With several replicas on one store, only the holder of the `outbox` lease delivers, so a
/// message is posted once and in order.
pub async fn run(
    core: Arc<Core>,
    outs: Vec<Arc<dyn Outbound>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let me = core.lease_holder("outbox");
    loop {
        // SQLite stores have one process (a lock file enforces it): no lease needed, and a
        // killed predecessor's lease must not delay delivery.
        let holder = core.store.backend() == crate::store::Backend::Sqlite
            || match core
                .store
                .try_lease("outbox", &me, core.clock.now_ms(), LEASE_MS)
                .await
            {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %e, "outbox lease check failed");
                    false
                }
            };
        if holder {
            for out in &outs {
                let lease =
                    (core.store.backend() != crate::store::Backend::Sqlite).then_some(me.as_str());
                if let Err(e) = deliver_due_leased(&core, out.as_ref(), lease).await {
                    tracing::error!(error = format!("{e:#}"), "outbox pass failed");
                }
            }
        }
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = core.outbox_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(
            backoff(40),
            Duration::from_secs(256).min(Duration::from_secs(300))
        );
    }
}
