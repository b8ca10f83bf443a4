//! The scheduler: every periodic job of dualkey, in one place (SPEC section 7).
//!
//! Two kinds of jobs:
//!
//! - **Housekeeping, by interval**: request expiry (every second), the monitoring tick
//!   ([`crate::services::monitoring::tick`], every 5 s), the backup-age check (every minute), stale-operation
//!   recovery (every 10 s, PostgreSQL stores only: on SQLite the one process recovers at start),
//!   and store pruning (hourly). Each runs under a store lease named after it, so with several
//!   replicas on a PostgreSQL store only one replica runs it.
//! - **Cron jobs**: the nightly backup (`schedule.backup_cron`) and the optional restore drill
//!   (`schedule.restore_drill_cron`), both in `schedule.timezone`. Each run is a *slot*: the job
//!   name and the instant it was scheduled for. A process takes a slot by inserting it into
//!   `schedule_runs` (primary key: job + slot) in the same transaction as the run's start event,
//!   so two replicas, or one process restarted, never run a slot twice; the lease only keeps the
//!   replicas from racing for it.
//!
//! Time is injected: every "now" is `core.clock`, and [`Scheduler::tick`] runs what is due at a
//! given instant, so tests drive the schedule without sleeping. [`Scheduler::run`] ticks every
//! second.
//!
//! Decisions:
//!
//! - **Daylight saving time** is croner's: a job whose wall-clock time falls into the gap of a
//!   spring-forward day (02:30 in Europe/Berlin on the last Sunday of March) runs at the first
//!   instant after the gap (03:00 CEST), once; in the repeated hour of a fall-back day a
//!   fixed-time job runs once, at the first of the two instants.
//! - **A missed backup** (its slot passed before this process started, and dualkey ran this
//!   schedule before: a run of it is recorded in the store) runs once at start-up when it is
//!   still the same day in the schedule's time zone, and its report says it ran late ("ran late:
//!   missed 02:00 while dualkey was down"). An older missed run is skipped and audited as
//!   `schedule.run.skipped`; on a fresh install (no run recorded yet) nothing was missed, and
//!   the first run is the next one on time. Missed drills are not
//!   made up; the next one runs on time.
//! - **A run killed mid-way** (its `schedule_runs` row never finished) is finished as
//!   `interrupted` by [`Scheduler::recover_runs`]: at a SQLite start-up, or on PostgreSQL once
//!   the run's `run:<job>:<slot>` lease (renewed every 10 s while it runs) expired. It is
//!   audited, alerted, its orphaned scheduled backups are failed, and a nightly backup
//!   interrupted the same day is made up once (as job [`JOB_BACKUP_RETRY`]).
//! - **A failing job** (error or panic) is logged; the loop goes on with the others.
//! - **Retention** runs after the nightly backups for every environment whose backup succeeded
//!   and for every environment without scheduled backups (whose manual backups still age); never
//!   for an environment whose backup just failed, so a bad night deletes nothing. Manual backups
//!   (`backup`, `dualkey backup`) still apply retention right after they finish, as before.
//! - **Backup age**: an environment with scheduled backups whose newest verified backup is older
//!   than `schedule.max_backup_age` opens an alert (posted once, kept in the store) and closes it
//!   (posted once) when a fresh backup exists. With no verified backup at all, the age counts
//!   from when a check first saw none (kept in the store, so a restart does not reset it), and
//!   only a verified backup resolves the alert.
//! - **Audit**: cron runs (start and end), backups, retention deletions, alerts and drills are
//!   audit events; housekeeping jobs that run every few seconds are audited by what they do
//!   (each expired request, each recovered operation, pruned rows), not by each tick.

use crate::services::backups::health::*;
use crate::services::backups::schedule::*;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone as _};
use chrono_tz::Tz;
use serde_json::json;
use tokio::sync::watch;

use crate::config::Route;
use crate::core::audit::NewAudit;
use crate::core::dispatch::Core;
use crate::core::event::ChannelRef;
use crate::core::human;
use crate::core::reply::{Body, Card, Reply, Report, Section, Style, Table, Visibility, Warning};
use crate::dbops::backup::{self as bk, BackupKind};
use crate::services::worker::Worker;
use crate::store::{Backend, BackupRow, DrillRow, NewOutbox, Tx};

/// The nightly backup's job name (in `schedule_runs` and audit events).
pub const JOB_BACKUP: &str = "backup";
/// The restore drill's job name.
pub const JOB_DRILL: &str = "restore-drill";
/// How many of the largest tables a drill counts.
pub const DRILL_TABLES: usize = 5;

/// Housekeeping jobs: (name, interval in ms).
const INTERVALS: [(&str, i64); 5] = [
    ("expire-requests", 1_000),
    ("monitoring", 5_000),
    ("recover-stale", 10_000),
    ("backup-age", 60_000),
    ("prune", 3_600_000),
];

/// The job name of a nightly backup made up after its run was interrupted (a separate row in
/// `schedule_runs`, so it is made up once).
pub const JOB_BACKUP_RETRY: &str = "backup-retry";

/// A run in progress renews the lease `run:<job>:<slot>` every [`RUN_RENEW`] for this long; on
/// a PostgreSQL store an unfinished run whose lease expired was left by a stopped replica.
pub const RUN_LEASE_MS: i64 = 60_000;
const RUN_RENEW: Duration = Duration::from_secs(10);

fn run_lease(job: &str, slot: i64) -> String {
    format!("run:{job}:{slot}")
}

fn drill_lease(id: &str) -> String {
    format!("drill:{id}")
}

/// The database URLs of every configured environment (a drill's scratch database must be none
/// of them).
fn env_urls(core: &Core) -> Vec<String> {
    use secrecy::ExposeSecret as _;
    core.settings
        .environments
        .values()
        .filter_map(|e| e.database_url().ok())
        .map(|u| u.expose_secret().to_string())
        .collect()
}

/// A lease for a cron job covers the time it takes to start it; the slot row is what makes a
/// run happen once.
const CRON_LEASE_MS: i64 = 60_000;

/// Runs every periodic job; see the module docs.
pub struct Scheduler {
    core: Arc<Core>,
    holder: String,
    started_at: i64,
    /// When each housekeeping job last ran here.
    last: Mutex<HashMap<&'static str, i64>>,
    /// The newest slot of each cron job this process has seen taken (by itself or another
    /// replica), so a taken slot costs no store write per tick.
    seen: Mutex<HashMap<&'static str, i64>>,
    /// Nightly backup slots whose run was interrupted, to be made up by the cron loop.
    make_up: Mutex<Vec<DateTime<Tz>>>,
}

/// A cron job's outcome and the messages it posts, each with its channels.
type Posts = (String, Vec<(Vec<ChannelRef>, Reply)>);

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
async fn guarded(job: &str, f: impl std::future::Future<Output = anyhow::Result<()>>) {
    match CatchUnwind(Box::pin(f)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(job, error = format!("{e:#}"), "scheduled job failed"),
        Err(p) => tracing::error!(job, panic = %p, "scheduled job panicked; the scheduler goes on"),
    }
}

fn public_report(r: Report) -> Reply {
    Reply {
        visibility: Visibility::InChannel,
        body: Body::Report(r),
    }
}

fn alert(title: String, lines: Vec<String>) -> Reply {
    let mut c = Card::new(title, Style::Danger);
    c.lines = lines;
    Reply::card(c)
}

/// Queues `reply` for `channels` inside `tx` (so it is posted exactly when the transaction
/// commits).
async fn enqueue(
    core: &Core,
    tx: &mut Box<dyn Tx>,
    channels: &[ChannelRef],
    reply: &Reply,
) -> anyhow::Result<()> {
    let payload = serde_json::to_string(reply)?;
    for c in channels {
        tx.enqueue_outbox(
            &NewOutbox {
                platform: c.platform.as_str().into(),
                channel: c.id.clone(),
                op: "post".into(),
                message_id: None,
                payload: payload.clone(),
                card_key: None,
            },
            core.clock.now_ms(),
        )
        .await?;
    }
    Ok(())
}

fn report_channels<'a>(core: &Core, envs: impl IntoIterator<Item = &'a str>) -> Vec<ChannelRef> {
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

impl Scheduler {
    /// A scheduler for `core`, started now (by `core.clock`).
    pub fn new(core: Arc<Core>) -> Scheduler {
        let holder = core.lease_holder("scheduler");
        let started_at = core.clock.now_ms();
        Scheduler {
            core,
            holder,
            started_at,
            last: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            make_up: Mutex::new(Vec::new()),
        }
    }

    /// Start-up work: cron runs a stopped process left unfinished are finished as `interrupted`
    /// ([`Scheduler::recover_runs`]); drills left `running` by a stopped process are marked
    /// failed, and the scratch databases they left are dropped (when drills are configured and
    /// no other replica holds the drill lease; [`Scheduler::recover_drills`]). On a PostgreSQL
    /// store a drill counts as stopped only when its `drill:<id>` lease expired, so a replica
    /// starting never drops another replica's drill in progress.
    pub async fn startup(&self) {
        let now = self.core.clock.now_ms();
        guarded("recover-runs", self.recover_runs(now)).await;
        if self.core.settings.schedule.restore_drill_cron.is_none() {
            return;
        }
        match self
            .core
            .store
            .try_lease(JOB_DRILL, &self.holder, now, CRON_LEASE_MS)
            .await
        {
            Ok(true) => {}
            _ => return,
        }
        if let Err(e) = self.recover_drills(now, true).await {
            tracing::error!(error = format!("{e:#}"), "recovering stopped drills failed");
        }
    }

    /// Drills left `running` by a stopped process are marked failed and their scratch databases
    /// dropped: at a SQLite start-up all of them; on a PostgreSQL store those whose
    /// `drill:<id>` lease (renewed while a drill runs) expired, checked every 10 s. The scratch
    /// database of an environment with no drill running is dropped when `at_startup`.
    pub async fn recover_drills(&self, now: i64, at_startup: bool) -> anyhow::Result<()> {
        let protected = env_urls(&self.core);
        let envs: Vec<String> = self.core.settings.environments.keys().cloned().collect();
        for name in &envs {
            let drills = self.core.store.drills(name).await?;
            let mut busy = false;
            let mut stopped = false;
            for d in drills.iter().filter(|d| d.state == "running") {
                let dead = match self.core.store.backend() {
                    Backend::Sqlite => at_startup,
                    // Taken by a checker name, so this process's own live drill is not dead.
                    Backend::Postgres => {
                        self.core
                            .store
                            .try_lease(
                                &drill_lease(&d.id),
                                &self.core.lease_holder("drill-check"),
                                now,
                                RUN_LEASE_MS,
                            )
                            .await?
                    }
                };
                if !dead {
                    busy = true;
                    continue;
                }
                stopped = true;
                let mut d = d.clone();
                d.state = "failed".into();
                d.error = Some("dualkey stopped during this drill".into());
                let _ = save_drill(
                    &self.core,
                    &d,
                    "drill.failed",
                    json!({"drill": d.id, "backup": d.backup_id, "error": "interrupted"}),
                )
                .await;
            }
            if busy || !(at_startup || stopped) {
                continue;
            }
            let Some(url) = self
                .core
                .settings
                .environments
                .get(name)
                .and_then(|e| e.database_url().ok())
            else {
                continue;
            };
            use secrecy::ExposeSecret as _;
            let database = bk::database_name(url.expose_secret()).unwrap_or_default();
            match bk::drop_stale(url.expose_secret(), &protected).await {
                Ok(true) => {
                    tracing::warn!(env = %name, "dropped a drill database left by a stopped drill");
                    let _ = self
                        .core
                        .audit(NewAudit::system(
                            "drill.stale_dropped",
                            Some(name),
                            json!({"database": format!("{database}{}", bk::DRILL_SUFFIX)}),
                        ))
                        .await;
                }
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(env = %name, error = %err, "could not check for a stale drill database")
                }
            }
        }
        Ok(())
    }

    /// Cron runs left unfinished by a stopped process (all of them at a SQLite start-up; on a
    /// PostgreSQL store those whose `run:<job>:<slot>` lease expired) are finished as
    /// `interrupted`: audited, the scheduled backups they left `running` marked failed, an alert
    /// posted in the same transaction, and a nightly backup interrupted today made up once by
    /// the cron loop.
    pub async fn recover_runs(&self, now: i64) -> anyhow::Result<()> {
        let core = &self.core;
        let tz = core.settings.schedule.tz();
        for (job, slot, holder, started) in core.store.unfinished_runs().await? {
            if holder == self.holder {
                continue;
            }
            if core.store.backend() == Backend::Postgres
                && !core
                    .store
                    .try_lease(&run_lease(&job, slot), &self.holder, now, RUN_LEASE_MS)
                    .await?
            {
                continue;
            }
            let Some(slot_t) = tz.timestamp_millis_opt(slot).single() else {
                continue;
            };
            let backup_job = job == JOB_BACKUP || job == JOB_BACKUP_RETRY;
            let mut tx = core.store.begin().await?;
            if !tx.interrupt_run(&job, slot, "interrupted", now).await? {
                continue;
            }
            let mut failed = Vec::new();
            if backup_job {
                // Scheduled backups have no operation, so the worker's recovery does not see
                // them on PostgreSQL: the run they belong to is what died.
                for mut b in tx.running_backups().await? {
                    if b.operation_id.is_none() && b.kind == "scheduled" && b.started_at >= started
                    {
                        b.state = "failed".into();
                        b.error = Some("dualkey stopped while this backup ran".into());
                        tx.put_backup(&b).await?;
                        core.audit_tx(
                            &mut tx,
                            NewAudit::system(
                                "backup.failed",
                                Some(&b.env),
                                json!({"backup": b.id, "error": "interrupted"}),
                            ),
                        )
                        .await?;
                        failed.push(b.id.clone());
                    }
                }
            }
            let today = tz
                .timestamp_millis_opt(now)
                .single()
                .map(|t| t.date_naive());
            let make_up = job == JOB_BACKUP && today == Some(slot_t.date_naive());
            let what = if backup_job {
                "the scheduled backup"
            } else {
                "the restore drill"
            };
            let detail = format!(
                "{what} run of {} was interrupted: dualkey stopped during it (holder {holder})",
                show(&slot_t)
            );
            core.audit_tx(
                &mut tx,
                NewAudit::system(
                    "schedule.run.interrupted",
                    None,
                    json!({"job": job, "slot": show(&slot_t), "holder": holder, "backups_failed": failed}),
                ),
            )
            .await?;
            core.audit_tx(
                &mut tx,
                NewAudit::system(
                    "schedule.alert",
                    None,
                    json!({"alert": "run-interrupted", "job": job, "slot": show(&slot_t), "detail": detail}),
                ),
            )
            .await?;
            let mut lines = vec![detail];
            if !failed.is_empty() {
                lines.push(format!("marked failed: {}", failed.join(", ")));
            }
            lines.push(if make_up {
                "the backup is made up now, once".into()
            } else {
                "it is not made up; the next run is on time".into()
            });
            let envs: Vec<&str> = core
                .settings
                .environments
                .iter()
                .filter(|(_, e)| !backup_job || e.scheduled_backups)
                .map(|(n, _)| n.as_str())
                .collect();
            let reply = alert(
                format!("ALERT: {what} of {} was interrupted", show(&slot_t)),
                lines,
            );
            enqueue(core, &mut tx, &report_channels(core, envs), &reply).await?;
            tx.commit().await?;
            core.outbox_wake.notify_one();
            if make_up {
                self.make_up
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(slot_t);
            }
        }
        Ok(())
    }

    /// Runs what is due now (by `core.clock`).
    pub async fn run_due(&self) {
        self.tick(self.core.clock.now_ms()).await
    }

    /// Runs every job due at `now` (ms): housekeeping whose interval passed, then cron slots
    /// not yet taken. Errors are logged; one failing job does not stop the others.
    pub async fn tick(&self, now: i64) {
        self.tick_housekeeping(now).await;
        self.tick_cron(now).await;
    }

    /// The housekeeping jobs whose interval passed at `now`.
    pub async fn tick_housekeeping(&self, now: i64) {
        for (name, every) in INTERVALS {
            let due = {
                let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
                let l = last.entry(name).or_insert(i64::MIN);
                if *l == i64::MIN || now - *l >= every {
                    *l = now;
                    true
                } else {
                    false
                }
            };
            if !due {
                continue;
            }
            let ttl = (every * 3).max(30_000);
            match self
                .core
                .store
                .try_lease(name, &self.holder, now, ttl)
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(job = name, error = %e, "taking the job's lease failed");
                    continue;
                }
            }
            guarded(name, self.housekeeping(name, now)).await;
        }
    }

    /// The cron slots at or before `now` that no process took yet.
    pub async fn tick_cron(&self, now: i64) {
        let s = &self.core.settings.schedule;
        let pending: Vec<DateTime<Tz>> =
            std::mem::take(&mut *self.make_up.lock().unwrap_or_else(|p| p.into_inner()));
        for slot_t in pending {
            let late = format!(
                "made up: the {} run was interrupted while dualkey stopped",
                slot_t.format("%H:%M")
            );
            guarded(
                JOB_BACKUP_RETRY,
                self.run_slot(JOB_BACKUP, JOB_BACKUP_RETRY, &slot_t, Some(late), now),
            )
            .await;
        }
        guarded(
            JOB_BACKUP,
            self.cron(JOB_BACKUP, &s.backup_schedule(), true, now),
        )
        .await;
        if let Some(drill) = s.drill_schedule() {
            guarded(JOB_DRILL, self.cron(JOB_DRILL, &drill, false, now)).await;
        }
    }

    async fn housekeeping(&self, name: &str, now: i64) -> anyhow::Result<()> {
        let core = &self.core;
        match name {
            "expire-requests" => {
                core.expire_requests().await?;
            }
            "monitoring" => crate::services::monitoring::tick(core).await?,
            // On SQLite the one process recovers at start-up (`Application::build`).
            "recover-stale" if core.store.backend() == Backend::Postgres => {
                Worker::recover_interrupted(core, false).await?;
                self.recover_runs(now).await?;
                if core.settings.schedule.restore_drill_cron.is_some() {
                    self.recover_drills(now, false).await?;
                }
            }
            "backup-age" => self.backup_age(now).await?,
            "prune" => {
                // Platforms redeliver within minutes, so day-old dedupe keys and week-old
                // delivered messages are no longer needed.
                let n = core
                    .store
                    .prune(now - 86_400_000, now - 7 * 86_400_000)
                    .await?;
                if n > 0 {
                    core.audit(NewAudit::system("store.pruned", None, json!({"rows": n})))
                        .await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn mark_seen(&self, job: &'static str, slot: i64) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job, slot);
    }

    /// Takes and runs the slot of cron job `job` at or before `now`, if no process took it.
    async fn cron(
        &self,
        job: &'static str,
        cron: &croner::Cron,
        make_up: bool,
        now: i64,
    ) -> anyhow::Result<()> {
        let tz = self.core.settings.schedule.tz();
        let Some(slot_t) = previous_slot(cron, tz, now) else {
            return Ok(());
        };
        let slot = slot_t.timestamp_millis();
        {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.get(job).is_some_and(|s| *s >= slot) {
                return Ok(());
            }
        }
        let mut late = None;
        if slot < self.started_at {
            // Missed while this process was not running.
            let before = self.core.store.last_run(job).await?;
            if before.is_some_and(|b| b >= slot) {
                self.mark_seen(job, slot);
                return Ok(());
            }
            let today = tz
                .timestamp_millis_opt(now)
                .single()
                .map(|t| t.date_naive());
            if before.is_none() {
                // Before dualkey ever ran this schedule (a fresh install): nothing was missed.
                self.mark_seen(job, slot);
                return Ok(());
            }
            let reason = if !make_up {
                Some("missed while dualkey was not running; this job is not made up")
            } else if today != Some(slot_t.date_naive()) {
                Some("missed on an earlier day")
            } else {
                None
            };
            if let Some(reason) = reason {
                // Skipped, not made up: recorded once so every replica and restart agrees.
                let mut tx = self.core.store.begin().await?;
                if tx.claim_run(job, slot, &self.holder, true, now).await? {
                    tx.finish_run(job, slot, "skipped", now).await?;
                    self.core
                        .audit_tx(
                            &mut tx,
                            NewAudit::system(
                                "schedule.run.skipped",
                                None,
                                json!({"job": job, "slot": show(&slot_t), "reason": reason}),
                            ),
                        )
                        .await?;
                }
                tx.commit().await?;
                self.mark_seen(job, slot);
                return Ok(());
            }
            late = Some(format!(
                "ran late: missed {} while dualkey was down",
                slot_t.format("%H:%M")
            ));
        }
        self.run_slot(job, job, &slot_t, late, now).await
    }

    /// Takes slot `slot_t` of `job` under the name `key` in `schedule_runs` (the job's own name,
    /// or [`JOB_BACKUP_RETRY`] for a make-up) and runs it, renewing its run lease meanwhile.
    async fn run_slot(
        &self,
        job: &'static str,
        key: &str,
        slot_t: &DateTime<Tz>,
        late: Option<String>,
        now: i64,
    ) -> anyhow::Result<()> {
        let slot = slot_t.timestamp_millis();
        if !self
            .core
            .store
            .try_lease(job, &self.holder, now, CRON_LEASE_MS)
            .await?
        {
            return Ok(());
        }
        // Taken before the slot row, so no replica sees the row without its live lease.
        let lease = run_lease(key, slot);
        if !self
            .core
            .store
            .try_lease(&lease, &self.holder, now, RUN_LEASE_MS)
            .await?
        {
            return Ok(());
        }
        let mut tx = self.core.store.begin().await?;
        if !tx
            .claim_run(key, slot, &self.holder, late.is_some(), now)
            .await?
        {
            drop(tx);
            if key == job {
                self.mark_seen(job, slot);
            }
            return Ok(());
        }
        self.core
            .audit_tx(
                &mut tx,
                NewAudit::system(
                    "schedule.run.started",
                    None,
                    json!({"job": key, "slot": show(slot_t), "late": late, "holder": self.holder}),
                ),
            )
            .await?;
        tx.commit().await?;
        if key == job {
            self.mark_seen(job, slot);
        }
        let work = async {
            match job {
                JOB_BACKUP => self.nightly_backups(slot_t, late.as_deref()).await,
                _ => self.drills(slot_t).await,
            }
        };
        let renew = async {
            loop {
                tokio::time::sleep(RUN_RENEW).await;
                let now = self.core.clock.now_ms();
                if let Err(e) = self
                    .core
                    .store
                    .try_lease(&lease, &self.holder, now, RUN_LEASE_MS)
                    .await
                {
                    tracing::warn!(job, error = %e, "renewing the run's lease failed");
                }
            }
        };
        let (outcome, posts) = tokio::select! {
            r = work => r,
            () = renew => unreachable!("the renewal never ends"),
        };
        let mut tx = self.core.store.begin().await?;
        let end = self.core.clock.now_ms();
        tx.finish_run(key, slot, &outcome, end).await?;
        self.core
            .audit_tx(
                &mut tx,
                NewAudit::system(
                    "schedule.run.finished",
                    None,
                    json!({"job": key, "slot": show(slot_t), "outcome": outcome}),
                ),
            )
            .await?;
        for (channels, r) in &posts {
            enqueue(&self.core, &mut tx, channels, r).await?;
        }
        tx.commit().await?;
        self.core.outbox_wake.notify_one();
        Ok(())
    }

    /// The nightly backup of every environment with `scheduled_backups`, then retention, then
    /// the report (to every scheduled environment's report channels) and an alert per failure
    /// (to that environment's). Returns the outcome and what to post where.
    async fn nightly_backups(&self, slot: &DateTime<Tz>, late: Option<&str>) -> Posts {
        let core = &self.core;
        let scheduled: BTreeSet<String> = core
            .settings
            .environments
            .iter()
            .filter(|(_, e)| e.scheduled_backups)
            .map(|(n, _)| n.clone())
            .collect();
        let mut sections = Vec::new();
        let mut failed = Vec::new();
        let note = match late {
            Some(l) => format!("scheduled backup of {} ({l})", show(slot)),
            None => format!("scheduled backup of {}", show(slot)),
        };
        for env in &scheduled {
            let before = core.store.list_backups(env).await.unwrap_or_default();
            let last_good = first_healthy(core, &before).await.cloned();
            let result = crate::services::backups::take::take_backup(
                core,
                env,
                BackupKind::Scheduled,
                Some("schedule"),
                Some(note.clone()),
                None,
            )
            .await;
            let mut section = Section {
                heading: Some(format!(
                    "{env}: {}",
                    if result.is_ok() { "ok" } else { "FAILED" }
                )),
                ..Section::default()
            };
            let now = core.clock.now_ms();
            match result {
                Ok(b) => {
                    section.fields.push((
                        "backup".into(),
                        format!("{} ({})", b.id, b.path.rsplit('/').next().unwrap_or("")),
                    ));
                    section.fields.push((
                        "size".into(),
                        human::bytes(b.size_bytes.unwrap_or(0) as u64),
                    ));
                    section
                        .fields
                        .push(("duration".into(), human::span(b.duration_ms.unwrap_or(0))));
                    section.fields.push((
                        "verification".into(),
                        format!(
                            "verified: pg_restore read all {} archive entries, SHA-256 {}",
                            b.toc_entries.unwrap_or(0),
                            b.sha256
                                .as_deref()
                                .map(|s| &s[..12.min(s.len())])
                                .unwrap_or("?")
                        ),
                    ));
                    self.retention_fields(env, &before, &mut section).await;
                }
                Err(err) => {
                    failed.push(env.to_string());
                    let last = last_good
                        .as_ref()
                        .map(|b| backup_line(b, now))
                        .unwrap_or_else(|| "none verified".into());
                    section.fields.push(("error".into(), err.0.clone()));
                    section
                        .fields
                        .push(("last good backup".into(), last.clone()));
                    section.warnings.push(Warning::danger(format!(
                        "the scheduled backup of {env} failed; retention did not run"
                    )));
                    let title = format!("ALERT: the scheduled backup of {env} failed");
                    let reply = alert(
                        title,
                        vec![
                            format!("error: {}", err.0),
                            format!("last good backup: {last}"),
                            format!("slot: {}", show(slot)),
                        ],
                    );
                    // The alert is queued with its audit row, so a kill after this point
                    // loses neither.
                    let details = json!({"alert": "backup-failed", "error": err.0, "last_good": last_good.as_ref().map(|b| b.id.clone())});
                    if let Err(e) = self.post_alert(env, details, &reply).await {
                        tracing::error!(env = %env, error = format!("{e:#}"), "recording the alert failed");
                        section.warnings.push(Warning::danger(format!(
                            "the alert could not be recorded: {e:#}"
                        )));
                    }
                }
            }
            self.stats_fields(env, &mut section).await;
            sections.push(section);
        }
        // Environments without a schedule still age out their manual backups.
        let unscheduled: Vec<String> = core
            .settings
            .environments
            .iter()
            .filter(|(_, e)| !e.scheduled_backups)
            .map(|(n, _)| n.clone())
            .collect();
        for env in &unscheduled {
            if let Err(e) = crate::services::backups::take::apply_retention(core, env).await {
                tracing::warn!(env = %env, error = %e, "retention failed");
            }
        }
        let title = match late {
            Some(l) => format!("Scheduled backup report, {} ({l})", show(slot)),
            None => format!("Scheduled backup report, {}", show(slot)),
        };
        let outcome = if failed.is_empty() {
            format!("ok ({} environments)", scheduled.len())
        } else {
            format!("failed: {}", failed.join(", "))
        };
        if sections.is_empty() {
            sections.push(Section {
                lines: vec!["no environment has scheduled_backups = true".into()],
                ..Section::default()
            });
        }
        let all = vec![(
            report_channels(core, scheduled.iter().map(String::as_str)),
            public_report(Report {
                title,
                sections,
                buttons: vec![],
            }),
        )];
        (outcome, all)
    }

    /// Audits `schedule.alert` for `env` and queues `reply` to its report channels, in one
    /// transaction.
    async fn post_alert(
        &self,
        env: &str,
        details: serde_json::Value,
        reply: &Reply,
    ) -> anyhow::Result<()> {
        let core = &self.core;
        let mut tx = core.store.begin().await?;
        core.audit_tx(
            &mut tx,
            NewAudit::system("schedule.alert", Some(env), details),
        )
        .await?;
        enqueue(core, &mut tx, &report_channels(core, [env]), reply).await?;
        tx.commit().await?;
        core.outbox_wake.notify_one();
        Ok(())
    }

    /// Applies retention after a good backup and says what it deleted.
    async fn retention_fields(&self, env: &str, before: &[BackupRow], section: &mut Section) {
        let now = self.core.clock.now_ms();
        match crate::services::backups::take::apply_retention(&self.core, env).await {
            Ok(ids) if ids.is_empty() => section
                .fields
                .push(("retention deleted".into(), "nothing".into())),
            Ok(ids) => {
                let gone: Vec<String> = ids
                    .iter()
                    .map(|id| match before.iter().find(|b| &b.id == id) {
                        Some(b) => backup_line(b, now),
                        None => id.clone(),
                    })
                    .collect();
                section
                    .fields
                    .push(("retention deleted".into(), gone.join("; ")));
            }
            Err(e) => {
                section
                    .fields
                    .push(("retention".into(), format!("failed: {}", e.0)));
                section
                    .warnings
                    .push(Warning::caution(format!("retention failed: {}", e.0)));
            }
        }
    }

    /// Backups kept (count, oldest, newest, total size) and the size trend of the last 7.
    async fn stats_fields(&self, env: &str, section: &mut Section) {
        let now = self.core.clock.now_ms();
        let all = self.core.store.list_backups(env).await.unwrap_or_default();
        let kept: Vec<&BackupRow> = all
            .iter()
            .filter(|b| b.state == "ok" && b.deleted_at.is_none())
            .collect();
        let total: i64 = kept.iter().map(|b| b.size_bytes.unwrap_or(0)).sum();
        section.fields.push((
            "backups kept".into(),
            format!("{}, {} in total", kept.len(), human::bytes(total as u64)),
        ));
        if let (Some(newest), Some(oldest)) = (kept.first(), kept.last()) {
            section
                .fields
                .push(("newest".into(), backup_line(newest, now)));
            section
                .fields
                .push(("oldest".into(), backup_line(oldest, now)));
        }
        let last7: Vec<&BackupRow> = kept.iter().take(7).rev().copied().collect();
        if !last7.is_empty() {
            let sizes: Vec<String> = last7
                .iter()
                .map(|b| human::bytes(b.size_bytes.unwrap_or(0) as u64))
                .collect();
            let (first, last) = (
                last7[0].size_bytes.unwrap_or(0),
                last7[last7.len() - 1].size_bytes.unwrap_or(0),
            );
            let change = if first > 0 && last7.len() > 1 {
                format!(" ({:+.1}%)", (last - first) as f64 * 100.0 / first as f64)
            } else {
                String::new()
            };
            section.fields.push((
                format!("size trend (last {})", last7.len()),
                format!("{}{change}", sizes.join(" -> ")),
            ));
        }
    }

    /// Opens or closes the backup-age alert of every environment with scheduled backups.
    async fn backup_age(&self, now: i64) -> anyhow::Result<()> {
        let core = &self.core;
        let max = core.settings.schedule.max_backup_age.0.as_millis() as i64;
        for (env, e) in &core.settings.environments {
            if !e.scheduled_backups {
                continue;
            }
            let newest = newest_verified(core, env).await?;
            let name = format!("backup-age:{env}");
            // With no verified backup, the age counts from when a check first saw none: a row
            // kept in the store, so a restart does not reset it.
            let none_since = format!("backup-none-since:{env}");
            let limit = crate::config::format_duration(core.settings.schedule.max_backup_age.0);
            let channels = report_channels(core, [env.as_str()]);
            let mut tx = core.store.begin().await?;
            let since = match &newest {
                Some(b) => {
                    tx.clear_alert(&none_since).await?;
                    b.started_at
                }
                None => {
                    tx.raise_alert(&none_since, "no verified backup seen", now)
                        .await?;
                    tx.commit().await?;
                    tx = core.store.begin().await?;
                    core.store.alert_since(&none_since).await?.unwrap_or(now)
                }
            };
            if now - since > max {
                let detail = match &newest {
                    Some(b) => format!(
                        "the newest verified backup of {env} is {} old (limit {limit}): {}",
                        human::age(now - b.started_at),
                        backup_line(b, now)
                    ),
                    None => format!(
                        "{env} has no verified backup, none for {} (limit {limit})",
                        human::age(now - since)
                    ),
                };
                if tx.raise_alert(&name, &detail, now).await? {
                    core.audit_tx(
                        &mut tx,
                        NewAudit::system(
                            "schedule.alert",
                            Some(env),
                            json!({"alert": "backup-age", "detail": detail}),
                        ),
                    )
                    .await?;
                    let reply = alert(
                        format!("ALERT: backups of {env} are too old"),
                        vec![
                            detail,
                            format!("next scheduled backup: {}", next_backup_text(core, env)),
                        ],
                    );
                    enqueue(core, &mut tx, &channels, &reply).await?;
                }
            } else if let Some(b) = newest.as_ref() {
                // Only a verified young backup resolves the alert; with none it stays open.
                if !tx.clear_alert(&name).await? {
                    tx.commit().await?;
                    continue;
                }
                let text = format!(
                    "RESOLVED: {env} has a verified backup younger than {limit} again: {}",
                    backup_line(b, now)
                );
                core.audit_tx(
                    &mut tx,
                    NewAudit::system(
                        "schedule.alert_resolved",
                        Some(env),
                        json!({"alert": "backup-age", "backup": b.id}),
                    ),
                )
                .await?;
                let mut c = Card::new(format!("Resolved: backups of {env}"), Style::Success);
                c.lines = vec![text];
                enqueue(core, &mut tx, &channels, &Reply::card(c)).await?;
            }
            tx.commit().await?;
            core.outbox_wake.notify_one();
        }
        Ok(())
    }

    /// A restore drill of the newest verified backup of every environment.
    async fn drills(&self, slot: &DateTime<Tz>) -> Posts {
        let core = &self.core;
        let mut sections = Vec::new();
        let mut replies = Vec::new();
        let mut failed = Vec::new();
        let envs: Vec<String> = core.settings.environments.keys().cloned().collect();
        for env in &envs {
            let mut section = Section {
                heading: Some(env.clone()),
                ..Section::default()
            };
            match drill_env(core, env, &self.holder).await {
                Ok(None) => section
                    .lines
                    .push("skipped: no verified backup to restore".into()),
                Ok(Some((d, outcome))) => {
                    section.heading = Some(format!("{env}: ok"));
                    section.fields.push(("backup".into(), d.backup_id.clone()));
                    section
                        .fields
                        .push(("restore time".into(), human::span(outcome.restore_ms)));
                    section.fields.push((
                        "migrations".into(),
                        format!(
                            "{} in the restored _prisma_migrations, as the catalog recorded",
                            outcome.migrations.len()
                        ),
                    ));
                    section.fields.push((
                        "scratch database".into(),
                        format!("{} (dropped)", outcome.scratch),
                    ));
                    section.table = Some(Table {
                        columns: vec!["largest tables".into(), "rows".into()],
                        rows: outcome
                            .largest_tables
                            .iter()
                            .map(|(t, n)| vec![t.clone(), n.to_string()])
                            .collect(),
                    });
                }
                Err((d, err)) => {
                    failed.push(env.clone());
                    section.heading = Some(format!("{env}: FAILED"));
                    section.fields.push(("backup".into(), d.backup_id.clone()));
                    section.fields.push(("error".into(), err.clone()));
                    section.warnings.push(Warning::danger(format!(
                        "the restore drill of {env} failed"
                    )));
                    replies.push((
                        report_channels(core, [env.as_str()]),
                        alert(
                            format!("ALERT: the restore drill of {env} failed"),
                            vec![format!("backup: {}", d.backup_id), format!("error: {err}")],
                        ),
                    ));
                }
            }
            sections.push(section);
        }
        let mut all = vec![(
            report_channels(core, envs.iter().map(String::as_str)),
            public_report(Report {
                title: format!("Restore drill report, {}", show(slot)),
                sections,
                buttons: vec![],
            }),
        )];
        all.extend(replies);
        let outcome = if failed.is_empty() {
            "ok".to_string()
        } else {
            format!("failed: {}", failed.join(", "))
        };
        (outcome, all)
    }
}

async fn save_drill(
    core: &Core,
    d: &DrillRow,
    action: &str,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    let r: anyhow::Result<()> = async {
        let mut tx = core.store.begin().await?;
        tx.put_drill(d).await?;
        core.audit_tx(&mut tx, NewAudit::system(action, Some(&d.env), details))
            .await?;
        tx.commit().await?;
        core.outbox_wake.notify_one();
        Ok(())
    }
    .await;
    if let Err(e) = &r {
        tracing::error!(error = format!("{e:#}"), "recording the drill failed");
    }
    r
}

async fn run_drill(core: &Core, env: &str, b: &BackupRow) -> Result<bk::DrillOutcome, String> {
    use secrecy::ExposeSecret as _;
    let e = crate::services::environment::env_settings(core, env).map_err(|e| e.0)?;
    let url = crate::services::environment::database_url(e).map_err(|e| e.0)?;
    let path = PathBuf::from(&b.path);
    let migrations = crate::services::backups::health::backup_migrations(b);
    let pg_bin_dir = e.pg_bin_dir.clone();
    bk::drill(
        url.expose_secret(),
        &path,
        b.sha256.as_deref().unwrap_or(""),
        &migrations,
        pg_bin_dir.as_deref(),
        DRILL_TABLES,
        &env_urls(core),
    )
    .await
    .map_err(|e| e.to_string())
}

/// Drills the newest verified backup of `env`: `Ok(None)` when there is none, the recorded drill
/// and what it found, or the recorded drill and why it failed.
#[allow(clippy::type_complexity)]
pub async fn drill_env(
    core: &Core,
    env: &str,
    holder: &str,
) -> Result<Option<(DrillRow, bk::DrillOutcome)>, (DrillRow, String)> {
    let Ok(Some(b)) = newest_verified(core, env).await else {
        return Ok(None);
    };
    let started = core.clock.now_ms();
    let mut d = DrillRow {
        id: human::new_id('d'),
        backup_id: b.id.clone(),
        env: env.into(),
        state: "running".into(),
        started_at: started,
        duration_ms: None,
        restore_ms: None,
        details_json: None,
        error: None,
    };
    // The drill's lease, renewed while it runs, tells another replica it is alive; taken
    // before its row exists.
    let lease = drill_lease(&d.id);
    let recorded = match core
        .store
        .try_lease(&lease, holder, started, RUN_LEASE_MS)
        .await
    {
        Ok(true) => {
            save_drill(
                core,
                &d,
                "drill.started",
                json!({"drill": d.id, "backup": b.id}),
            )
            .await
        }
        Ok(false) => Err(anyhow::anyhow!("the drill's lease is held elsewhere")),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = recorded {
        // No `running` row, no drill: nothing could find or clean up after it.
        d.state = "failed".into();
        let err = format!("the drill did not start: recording it failed: {e:#}");
        d.error = Some(err.clone());
        return Err((d, err));
    }
    let t0 = std::time::Instant::now();
    let renew = async {
        loop {
            tokio::time::sleep(RUN_RENEW).await;
            let now = core.clock.now_ms();
            if let Err(e) = core
                .store
                .try_lease(&lease, holder, now, RUN_LEASE_MS)
                .await
            {
                tracing::warn!(error = %e, "renewing the drill's lease failed");
            }
        }
    };
    let result = tokio::select! {
        r = run_drill(core, env, &b) => r,
        () = renew => unreachable!("the renewal never ends"),
    };
    d.duration_ms = Some(t0.elapsed().as_millis() as i64);
    match result {
        Ok(outcome) => {
            d.state = "ok".into();
            d.restore_ms = Some(outcome.restore_ms);
            d.details_json = serde_json::to_string(&outcome).ok();
            let _ = save_drill(
                core,
                &d,
                "drill.finished",
                json!({"drill": d.id, "backup": b.id, "restore_ms": outcome.restore_ms, "migrations": outcome.migrations.len(), "largest_tables": outcome.largest_tables}),
            )
            .await;
            Ok(Some((d, outcome)))
        }
        Err(err) => {
            let err = crate::core::audit::redact(&err);
            d.state = "failed".into();
            d.error = Some(err.clone());
            let _ = save_drill(
                core,
                &d,
                "drill.failed",
                json!({"drill": d.id, "backup": b.id, "error": err}),
            )
            .await;
            Err((d, err))
        }
    }
}

impl Scheduler {
    /// Runs [`Scheduler::startup`], then ticks every second until `shutdown` turns true.
    /// Housekeeping and cron jobs tick in two loops, so a long nightly backup or drill never
    /// holds up request expiry or the monitoring reminders. A cron job in progress finishes
    /// before this returns.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        self.startup().await;
        tokio::join!(
            self.every_second(shutdown.clone(), false),
            self.every_second(shutdown, true)
        );
    }

    async fn every_second(&self, mut stop: watch::Receiver<bool>, cron: bool) {
        loop {
            if *stop.borrow() {
                break;
            }
            let now = self.core.clock.now_ms();
            if cron {
                self.tick_cron(now).await;
            } else {
                self.tick_housekeeping(now).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => {}
            }
        }
    }
}
