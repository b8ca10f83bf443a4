//! Outbox delivery: messages written to the store (audit lines, cards and their edits, reports,
//! interruption notices) are delivered to chat afterwards, retried with exponential backoff,
//! honouring a platform's `Retry-After`. Nothing is lost while chat is down; a message that can
//! never be delivered is kept with its error, and logged.
//!
//! **Lanes.** Each channel is a lane. Lanes are delivered concurrently, with at most one call in
//! flight per lane; inside a lane rows go in (priority, id) order: cards, their edits and
//! ephemeral answers first, then other messages, then audit lines and reports (see
//! [`crate::store::OutboxKind`]). A 429 or a failure holds back only its own lane (a global 429
//! on Discord answers every lane of the platform with a 429, so it holds them all). The
//! per-channel budget of a platform is learned from its 429s: each one widens the spacing kept
//! between two calls in a lane, each success narrows it a little.
//!
//! **Digests.** When [`DIGEST_MIN`] or more audit lines wait at the head of a lane, they go out as
//! one message (each event's line, in order, as many as fit in one message of the platform),
//! closed by the chain head line of its last event; every line records the message that
//! carried it (`outbox.carried_by`, `carrier_message`).
//!
//! Cards are posted and edited by key (`request:<id>`): a posted card's message id is recorded
//! per channel, and an edit is sent only when no newer edit of the same card waits in the same
//! channel, so progress ticks that stacked up behind a 429 collapse into the newest. A card that
//! cannot be posted (the bot is not in the channel) is reported to its requester at once, and
//! later edits of that copy are not sent.
//!
//! Here: passes over the lanes and the outbox task; `lanes` holds the lane state and the lease,
//! `deliver` the delivery of one row, `digest` the digests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::core::context::Core;

mod deliver;
mod digest;
mod lanes;

use deliver::{deliver_row, Sent};
use digest::{digest_run, send_digest};
use lanes::Lane;

pub use lanes::Lease;

pub use crate::adapters::{DeliveryError, Outbound};

/// Backoff after `attempts` failures: 1 s, 2 s, 4 s ... capped at 5 minutes.
pub fn backoff(attempts: i64) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 8) as u32).min(Duration::from_secs(300))
}

/// Audit lines waiting at the head of a lane from which on they go out as one digest.
pub const DIGEST_MIN: usize = 3;
/// Rows of a lane read at a time (a digest holds at most this many lines).
const LANE_READ: i64 = 200;
/// Longest a lane whose head waits for its retry is left alone before it is read again.
const HELD_RECHECK_MS: i64 = 5_000;
/// Longest [`deliver_due`] waits for another pass to finish a lane it wants to deliver.
const CLAIM_WAIT: Duration = Duration::from_secs(5);
/// Longest the last delivery at shutdown may take.
const LAST_PASS: Duration = Duration::from_secs(10);

/// Delivers what is due for one adapter, once: every lane with something due, concurrently,
/// until it is empty or held back. Returns how many messages were delivered.
///
/// A lane is delivered by one pass at a time in this process (the outbox task, and the shell
/// flushing what its last line queued); across processes the `outbox` lease does that.
pub async fn deliver_due(core: &Core, out: &dyn Outbound) -> anyhow::Result<usize> {
    deliver_due_leased(core, out, None).await
}

/// [`deliver_due`] for the holder of the `outbox` lease: the lease is renewed (at most once a
/// second) before each message, and a lane stops when it was lost (a slow pass must not let a
/// second replica deliver the same rows).
pub async fn deliver_due_leased(
    core: &Core,
    out: &dyn Outbound,
    holder: Option<&str>,
) -> anyhow::Result<usize> {
    let lease = holder.map(Lease::new);
    let lanes = core
        .store
        .outbox_lanes(out.platform().as_str(), core.clock.now_ms())
        .await?;
    let drains: Vec<Drain<'_>> = lanes
        .iter()
        .map(|ch| {
            Box::pin(async {
                // Another pass (the outbox task) may be delivering this lane right now (busy;
                // a hold is not waited for, `now` = MAX): wait
                // for it, so a caller such as the shell sees its messages out before it goes
                // on (a bounded wait: that pass may be draining a long backlog).
                let end = Instant::now() + CLAIM_WAIT;
                while Lane::busy_or_held(core, out.platform().as_str(), ch, i64::MAX)
                    && Instant::now() < end
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                drain_lane(core, out, ch, lease.as_ref(), None).await
            }) as Drain<'_>
        })
        .collect();
    let mut delivered = 0;
    let mut failed = None;
    for r in join_all(drains).await {
        match r {
            Ok(n) => delivered += n,
            Err(e) => failed = Some(e),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(delivered),
    }
}

type Drain<'a> = Pin<Box<dyn Future<Output = anyhow::Result<usize>> + Send + 'a>>;

/// Runs `futs` concurrently on this task; their results in order.
async fn join_all<T>(mut futs: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut done: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, d) in futs.iter_mut().zip(done.iter_mut()) {
            if d.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *d = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

/// Delivers one lane until it is empty, held back, the lease is lost or `stop` turns true:
/// one call at a time, the head of the lane first (a digest when audit lines pile up).
async fn drain_lane(
    core: &Core,
    out: &dyn Outbound,
    channel: &str,
    lease: Option<&Lease>,
    stop: Option<&watch::Receiver<bool>>,
) -> anyhow::Result<usize> {
    let platform = out.platform().as_str();
    let Some(lane) = Lane::claim(core, platform, channel) else {
        return Ok(0);
    };
    let mut delivered = 0;
    loop {
        if stop.is_some_and(|s| *s.borrow()) {
            break;
        }
        if let Some(l) = lease {
            if !l.held(core).await? {
                tracing::warn!("outbox lease lost during a pass; another replica delivers");
                break;
            }
        }
        let now = core.clock.now_ms();
        if lane.held_until() > now {
            break;
        }
        let rows = core.store.outbox_lane(platform, channel, LANE_READ).await?;
        let Some(head) = rows.first() else { break };
        if head.next_attempt_at > now {
            // The head waits for its retry, and the lane with it. Held here too, so the outbox
            // task does not start this lane again and again meanwhile (after a restart only the
            // rows know of the hold); at most HELD_RECHECK_MS, so a card queued behind a long
            // backoff is looked at again soon.
            lane.hold(head.next_attempt_at.min(now + HELD_RECHECK_MS));
            break;
        }
        let unit = digest_run(&rows, now);
        let sent = if unit.len() >= DIGEST_MIN {
            send_digest(core, out, &lane, unit).await?
        } else {
            deliver_row(core, out, &lane, head).await?
        };
        match sent {
            Sent::Delivered(n) => delivered += n,
            Sent::Skipped => {}
            Sent::HeldBack => break,
        }
    }
    Ok(delivered)
}

/// How long the outbox lease lasts without renewal.
pub const LEASE_MS: i64 = 15_000;

/// Delivers for every adapter until `shutdown`; woken by `core.outbox_wake`, by a lane that
/// finished, and every 500 ms. Each lane with something due gets its own task (at most one
/// per lane), so a slow or rate-limited channel never delays another. With several replicas on
/// one store, only the holder of the `outbox` lease delivers, so a message is posted once and
/// in order. At shutdown the lanes finish the call in flight.
pub async fn run(
    core: Arc<Core>,
    outs: Vec<Arc<dyn Outbound>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let me = core.lease_holder("outbox");
    // SQLite stores have one process (a lock file enforces it): no lease needed, and a killed
    // predecessor's lease must not delay delivery.
    let sqlite = core.store.backend() == crate::store::Backend::Sqlite;
    let lease = (!sqlite).then(|| Arc::new(Lease::new(&me)));
    let mut lanes = tokio::task::JoinSet::new();
    loop {
        let holder = match &lease {
            None => true,
            Some(l) => l.held(&core).await.unwrap_or_else(|e| {
                tracing::error!(error = format!("{e:#}"), "outbox lease check failed");
                false
            }),
        };
        if holder {
            for out in &outs {
                start_lanes(&core, out, lease.as_ref(), &shutdown, &mut lanes).await;
            }
        }
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = core.outbox_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => {}
            Some(_) = lanes.join_next(), if !lanes.is_empty() => {}
        }
    }
    while lanes.join_next().await.is_some() {}
    // A last delivery of what was queued while the process stopped (an interruption notice,
    // the audit lines of the last requests), bounded so a slow platform cannot hold the stop.
    let held = match &lease {
        None => true,
        Some(l) => l.held(&core).await.unwrap_or(false),
    };
    if held {
        for out in &outs {
            let last = deliver_due_leased(&core, out.as_ref(), lease.as_ref().map(|_| me.as_str()));
            match tokio::time::timeout(LAST_PASS, last).await {
                Ok(Err(e)) => tracing::warn!(error = format!("{e:#}"), "last outbox pass failed"),
                Err(_) => tracing::warn!("last outbox pass cut short at shutdown; the rest is delivered by the next process"),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Starts a task for every lane of `out` with something due that no task delivers and no
/// 429 holds back.
async fn start_lanes(
    core: &Arc<Core>,
    out: &Arc<dyn Outbound>,
    lease: Option<&Arc<Lease>>,
    shutdown: &watch::Receiver<bool>,
    lanes: &mut tokio::task::JoinSet<()>,
) {
    let platform = out.platform().as_str();
    let now = core.clock.now_ms();
    let due = match core.store.outbox_lanes(platform, now).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "reading the outbox lanes failed");
            return;
        }
    };
    for channel in due {
        if Lane::busy_or_held(core, platform, &channel, now) {
            continue;
        }
        let (core, out, lease, stop) =
            (core.clone(), out.clone(), lease.cloned(), shutdown.clone());
        lanes.spawn(async move {
            if let Err(e) =
                drain_lane(&core, out.as_ref(), &channel, lease.as_deref(), Some(&stop)).await
            {
                tracing::error!(error = format!("{e:#}"), channel = %channel, "outbox lane failed");
            }
        });
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
