//! What two or more of the scheduler's jobs share: the job and lease names, running a job so
//! that its error or panic is only logged, and queueing a report or an alert to its channels.

use std::time::Duration;

use crate::config::Route;
use crate::core::context::Core;
use crate::core::event::ChannelRef;
use crate::core::notify::enqueue_posts;
use crate::core::reply::{Body, Card, Reply, Report, Style, Visibility};
use crate::store::Tx;

/// The nightly backup's job name (in `schedule_runs` and audit events).
pub const JOB_BACKUP: &str = "backup";
/// The restore drill's job name.
pub const JOB_DRILL: &str = "restore-drill";

/// The job name of a nightly backup made up after its run was interrupted (a separate row in
/// `schedule_runs`, so it is made up once).
pub const JOB_BACKUP_RETRY: &str = "backup-retry";

/// A run in progress renews the lease `run:<job>:<slot>` every `RUN_RENEW` for this long; on
/// a PostgreSQL store an unfinished run whose lease expired was left by a stopped replica.
pub const RUN_LEASE_MS: i64 = 60_000;
pub(super) const RUN_RENEW: Duration = Duration::from_secs(10);

pub(super) fn run_lease(job: &str, slot: i64) -> String {
    format!("run:{job}:{slot}")
}

pub(super) fn drill_lease(id: &str) -> String {
    format!("drill:{id}")
}

/// A lease for a cron job covers the time it takes to start it; the slot row is what makes a
/// run happen once.
pub(super) const CRON_LEASE_MS: i64 = 60_000;

/// A cron job's outcome and the messages it posts, each with its channels.
pub(super) type Posts = (String, Vec<(Vec<ChannelRef>, Reply)>);

/// Polls a job's future and turns a panic inside it into an error, so one job's bug is logged
/// and the scheduler loop (expiry, reminders, backups) keeps running.
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(p) => std::task::Poll::Ready(Err(p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into()))),
        }
    }
}

/// Runs one job: its error or panic is logged, never passed on.
pub(super) async fn guarded(job: &str, f: impl std::future::Future<Output = anyhow::Result<()>>) {
    match CatchUnwind(Box::pin(f)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(job, error = format!("{e:#}"), "scheduled job failed"),
        Err(p) => tracing::error!(job, panic = %p, "scheduled job panicked; the scheduler goes on"),
    }
}

pub(super) fn public_report(r: Report) -> Reply {
    Reply {
        visibility: Visibility::InChannel,
        body: Body::Report(r),
    }
}

pub(super) fn alert(title: String, lines: Vec<String>) -> Reply {
    let mut c = Card::new(title, Style::Danger);
    c.lines = lines;
    Reply::card(c)
}

/// Queues `reply` for `channels` inside `tx` (so it is posted exactly when the transaction
/// commits).
pub(super) async fn enqueue(
    core: &Core,
    tx: &mut Box<dyn Tx>,
    channels: &[ChannelRef],
    reply: &Reply,
) -> anyhow::Result<()> {
    let payload = serde_json::to_string(reply)?;
    enqueue_posts(tx.as_mut(), channels, &payload, None, core.clock.now_ms()).await?;
    Ok(())
}

pub(super) fn report_channels<'a>(
    core: &Core,
    envs: impl IntoIterator<Item = &'a str>,
) -> Vec<ChannelRef> {
    let mut out: Vec<ChannelRef> = Vec::new();
    for env in envs {
        for c in core.channels_for(None, Route::Report, env) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}
