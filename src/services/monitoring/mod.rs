//! Post-deploy monitoring windows: reminders with health probes, `monitor-ok` and
//! `monitor-rollback`. Here: [`tick`] and [`status_line`]; `probes.rs` (health probes, `app_logs`),
//! `window.rs` (one window's tick), `reminders.rs` (reminder cards and the window's buttons).
//!
//! A window (opened by the worker after a successful deploy, rollback, restore or emergency, or
//! by `monitor`; see [`crate::core::window::open_window_tx`]) lives in the store with
//! one row per reminder. [`tick`], which the scheduler calls every few seconds under its lease,
//! posts what is due:
//!
//! - **Reminders.** Each due reminder becomes a card (elapsed time, what changed, the health
//!   probe of `environments.<env>.health_url`, the last lines of `app_logs`, and the
//!   `monitor-ok:<window>` / `monitor-rollback:<window>` buttons) for the origin channel and the
//!   report channels. The reminder is marked posted by a conditional update
//!   (`WHERE posted_at IS NULL`) in the same transaction as its outbox rows and audit event, so
//!   it is posted once even when two replicas tick at the same moment, and a reminder that came
//!   due while dualkey was down (or busy) is posted once at the next tick, marked late with its
//!   due and posted times. The latest reminder (by due time) closes the window with a summary.
//!   Times on cards are in `schedule.timezone`, with the zone's name.
//! - **Probes between reminders.** Every [`PROBE_EVERY_MS`] of clock time the window's health URL
//!   is probed (the probe is claimed in the store first, so one process probes). The first
//!   failure of a streak is posted at once, and a recovery line when it recovers.
//!
//! Probes and log commands run outside any transaction; a transaction only records their result.
//! The windows of a tick run at the same time, each within [`WINDOW_DEADLINE`], and a reminder's
//! probe and `app_logs` run at the same time too.

mod probes;
mod reminders;
mod window;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::Route;
use crate::core::context::Core;
use crate::core::event::ChannelRef;
use crate::core::human;
use crate::core::ports::Reads;
use crate::core::window::hhmm;
use crate::store::WindowRow;
use window::tick_window;

pub use probes::{probe, Probe};

/// How often an open window's health URL is probed between reminders (clock time).
pub const PROBE_EVERY_MS: i64 = 30_000;
/// How long a health probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `app_logs` may run.
pub const LOGS_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of `app_logs`' output is read back (its last lines).
pub const LOGS_KEEP_BYTES: usize = 64 * 1024;
/// The longest one window's part of a [`tick`] may take (probe, logs and store); the windows of
/// a tick run at the same time, so a slow one does not delay the others.
pub const WINDOW_DEADLINE: Duration = Duration::from_secs(30);
/// How many log lines a reminder shows (each cut to [`LOG_LINE_CHARS`]).
pub const LOG_LINES: usize = 10;
/// Longest log line shown.
pub const LOG_LINE_CHARS: usize = 200;
/// A reminder posted more than this after its due time is marked late.
pub const LATE_AFTER_MS: i64 = 60_000;

/// One pass of the monitoring job: posts the reminders and probe failures that are due. The
/// scheduler calls it under its lease; it is also safe to call from several processes at once.
pub async fn tick(core: &Arc<Core>) -> anyhow::Result<()> {
    let now = core.clock.now_ms();
    let mut set = tokio::task::JoinSet::new();
    for w in core.store.open_windows().await? {
        let core = core.clone();
        set.spawn(async move {
            match tokio::time::timeout(WINDOW_DEADLINE, tick_window(&core, &w, now)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(window = %w.id, error = format!("{e:#}"), "monitoring window tick failed")
                }
                // Dropped mid-way: its open transaction rolls back, and the next tick tries again.
                Err(_) => tracing::error!(
                    window = %w.id,
                    secs = WINDOW_DEADLINE.as_secs(),
                    "monitoring window tick did not finish in time"
                ),
            }
        });
    }
    while let Some(res) = set.join_next().await {
        if let Err(e) = res {
            tracing::error!(error = %e, "monitoring window task failed");
        }
    }
    Ok(())
}

fn health_url(core: &Core, env: &str) -> Option<String> {
    core.settings
        .environments
        .get(env)
        .and_then(|e| e.health_url.clone())
}

fn channels(core: &Core, w: &WindowRow) -> Vec<ChannelRef> {
    let origin = w
        .channel_json
        .as_deref()
        .and_then(|j| serde_json::from_str::<ChannelRef>(j).ok());
    core.channels_for(origin.as_ref(), Route::Report, &w.env)
}

/// The `status` line of an environment's active monitoring window: id, elapsed time and next
/// reminder; `None` when no window is open.
pub async fn status_line(reads: Reads<'_>, env: &str) -> anyhow::Result<Option<String>> {
    let now = reads.clock.now_ms();
    let Some(w) = reads
        .store
        .open_windows()
        .await?
        .into_iter()
        .rev()
        .find(|w| w.env == env)
    else {
        return Ok(None);
    };
    let reminders = reads.store.reminders(&w.id).await.context("reminders")?;
    let next = reminders
        .iter()
        .filter(|r| r.posted_at.is_none())
        .min_by_key(|r| (r.due_at, r.idx));
    let what = match &w.operation_id {
        Some(op) => format!("after {} {op}", w.kind),
        None => format!("opened by {}", w.opened_by),
    };
    let next = match next {
        Some(r) => format!(
            "next reminder {}/{} at {} (in {})",
            r.idx + 1,
            reminders.len(),
            hhmm(r.due_at, reads.settings.schedule.tz()),
            human::span(r.due_at - now)
        ),
        None => "no reminder left".into(),
    };
    let health = match &w.last_probe {
        Some(p) if w.failing == 1 => format!(", health FAILING: {p}"),
        Some(p) => format!(", health {p}"),
        None => String::new(),
    };
    Ok(Some(format!(
        "{} ({what}), open for {}, {next}{health}",
        w.id,
        human::age(now - w.opened_at)
    )))
}
