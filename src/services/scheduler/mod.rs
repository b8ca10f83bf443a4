//! The scheduler: every periodic job of dualkey (SPEC section 7). This file holds the
//! [`Scheduler`], its two loops and the dispatch of jobs; each job lives in a file of its own.
//!
//! - `nightly_backups.rs`: the nightly backup, retention and its report;
//! - `drills.rs`: restore drills ([`drill_env`]) and recovering drills a stopped process left;
//! - `alerts.rs`: the backup-age alert and the alert of a failed backup;
//! - `housekeeping.rs`: request expiry, recovering interrupted runs, store pruning;
//! - `monitoring_tick.rs`: the monitoring windows' tick;
//! - `slots.rs`: taking a cron slot once, making up or skipping a missed one;
//! - `shared.rs`: job and lease names and the helpers two jobs use.
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

mod alerts;
mod drills;
mod housekeeping;
mod monitoring_tick;
mod nightly_backups;
mod shared;
mod slots;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::DateTime;
use chrono_tz::Tz;
use tokio::sync::watch;

use crate::core::context::Core;
use crate::store::Backend;
use shared::{guarded, CRON_LEASE_MS};

pub use drills::{drill_env, DRILL_TABLES};
pub use shared::{JOB_BACKUP, JOB_BACKUP_RETRY, JOB_DRILL, RUN_LEASE_MS};

/// Housekeeping jobs: (name, interval in ms).
const INTERVALS: [(&str, i64); 5] = [
    ("expire-requests", 1_000),
    ("monitoring", 5_000),
    ("recover-stale", 10_000),
    ("backup-age", 60_000),
    ("prune", 3_600_000),
];

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
        // In the background: an unreachable database must not delay the scheduler.
        tokio::spawn(drills::recover_rehearsals(self.core.clone()));
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

    /// Runs housekeeping job `name` (one of [`INTERVALS`]).
    async fn housekeeping(&self, name: &str, now: i64) -> anyhow::Result<()> {
        let core = &self.core;
        match name {
            "expire-requests" => self.expire_requests().await?,
            "monitoring" => self.monitoring_tick().await?,
            // On SQLite the one process recovers at start-up (`Application::build`).
            "recover-stale" if core.store.backend() == Backend::Postgres => {
                self.recover_stale(now).await?
            }
            "backup-age" => self.backup_age(now).await?,
            "prune" => self.prune(now).await?,
            _ => {}
        }
        Ok(())
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
