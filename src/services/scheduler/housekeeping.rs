//! Housekeeping jobs that run every few seconds to every hour: request expiry, recovering cron
//! runs a stopped process left unfinished (and stale operations and drills on PostgreSQL), and
//! store pruning.

use chrono::{DateTime, TimeZone as _};
use chrono_tz::Tz;
use serde_json::json;

use super::shared::{
    alert, enqueue, report_channels, run_lease, JOB_BACKUP, JOB_BACKUP_RETRY, RUN_LEASE_MS,
};
use super::Scheduler;
use crate::core::audit::NewAudit;
use crate::core::reply::Reply;
use crate::services::backups::schedule::show;
use crate::services::backups::take::fail_interrupted;
use crate::services::worker::Worker;
use crate::store::{Backend, Tx};

impl Scheduler {
    /// Expires the pending requests whose time ran out.
    pub(super) async fn expire_requests(&self) -> anyhow::Result<()> {
        self.core.expire_requests().await?;
        Ok(())
    }

    /// Recovers what a stopped replica left (PostgreSQL stores only): interrupted operations,
    /// unfinished cron runs and, when drills are configured, running drills.
    pub(super) async fn recover_stale(&self, now: i64) -> anyhow::Result<()> {
        let core = &self.core;
        Worker::recover_interrupted(core, false).await?;
        self.recover_runs(now).await?;
        if core.settings.schedule.restore_drill_cron.is_some() {
            self.recover_drills(now, false).await?;
        }
        Ok(())
    }

    /// Deletes old dedupe keys and delivered outbox rows, audited when it deleted any.
    pub(super) async fn prune(&self, now: i64) -> anyhow::Result<()> {
        let core = &self.core;
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
        Ok(())
    }

    /// Cron runs left unfinished by a stopped process (all of them at a SQLite start-up; on a
    /// PostgreSQL store those whose `run:<job>:<slot>` lease expired) are finished as
    /// `interrupted`: audited, the scheduled backups they left `running` marked failed, an alert
    /// posted in the same transaction, and a nightly backup interrupted today made up once by
    /// the cron loop.
    pub async fn recover_runs(&self, now: i64) -> anyhow::Result<()> {
        for (job, slot, holder, started) in self.core.store.unfinished_runs().await? {
            self.recover_run(&job, slot, &holder, started, now).await?;
        }
        Ok(())
    }

    /// Finishes one unfinished run of `job` as `interrupted` (unless this process holds it, or
    /// on PostgreSQL its run lease is still live): audited, its orphaned scheduled backups
    /// failed and the alert queued in one transaction; a nightly backup of today is made up.
    async fn recover_run(
        &self,
        job: &str,
        slot: i64,
        holder: &str,
        started: i64,
        now: i64,
    ) -> anyhow::Result<()> {
        let core = &self.core;
        let tz = core.settings.schedule.tz();
        if holder == self.holder {
            return Ok(());
        }
        if core.store.backend() == Backend::Postgres
            && !core
                .store
                .try_lease(&run_lease(job, slot), &self.holder, now, RUN_LEASE_MS)
                .await?
        {
            return Ok(());
        }
        let Some(slot_t) = tz.timestamp_millis_opt(slot).single() else {
            return Ok(());
        };
        let backup_job = job == JOB_BACKUP || job == JOB_BACKUP_RETRY;
        let mut tx = core.store.begin().await?;
        if !tx.interrupt_run(job, slot, "interrupted", now).await? {
            return Ok(());
        }
        let failed = if backup_job {
            self.fail_orphaned_backups(&mut tx, started).await?
        } else {
            Vec::new()
        };
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
        self.audit_interrupted(&mut tx, job, &slot_t, holder, &failed, &detail)
            .await?;
        let envs: Vec<&str> = core
            .settings
            .environments
            .iter()
            .filter(|(_, e)| !backup_job || e.scheduled_backups)
            .map(|(n, _)| n.as_str())
            .collect();
        let reply = interrupted_alert(what, &slot_t, detail, &failed, make_up);
        enqueue(core, &mut tx, &report_channels(core, envs), &reply).await?;
        tx.commit().await?;
        core.outbox_wake.notify_one();
        if make_up {
            self.make_up
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(slot_t);
        }
        Ok(())
    }

    /// Marks failed, in `tx`, the scheduled backups an interrupted run (started at `started`)
    /// left `running`, each audited; returns their ids.
    async fn fail_orphaned_backups(
        &self,
        tx: &mut Box<dyn Tx>,
        started: i64,
    ) -> anyhow::Result<Vec<String>> {
        let core = &self.core;
        let mut failed = Vec::new();
        // Scheduled backups have no operation, so the worker's recovery does not see
        // them on PostgreSQL: the run they belong to is what died.
        for b in tx.running_backups().await? {
            if b.operation_id.is_none() && b.kind == "scheduled" && b.started_at >= started {
                failed.push(b.id.clone());
                fail_interrupted(core, tx, b).await?;
            }
        }
        Ok(failed)
    }

    /// Audits an interrupted run (`schedule.run.interrupted`) and its alert (`schedule.alert`).
    async fn audit_interrupted(
        &self,
        tx: &mut Box<dyn Tx>,
        job: &str,
        slot_t: &DateTime<Tz>,
        holder: &str,
        failed: &[String],
        detail: &str,
    ) -> anyhow::Result<()> {
        let core = &self.core;
        core.audit_tx(
            tx,
            NewAudit::system(
                "schedule.run.interrupted",
                None,
                json!({"job": job, "slot": show(slot_t), "holder": holder, "backups_failed": failed}),
            ),
        )
        .await?;
        core.audit_tx(
            tx,
            NewAudit::system(
                "schedule.alert",
                None,
                json!({"alert": "run-interrupted", "job": job, "slot": show(slot_t), "detail": detail}),
            ),
        )
        .await?;
        Ok(())
    }
}

/// The alert of an interrupted run: what was interrupted, the backups marked failed, and
/// whether it is made up.
fn interrupted_alert(
    what: &str,
    slot_t: &DateTime<Tz>,
    detail: String,
    failed: &[String],
    make_up: bool,
) -> Reply {
    let mut lines = vec![detail];
    if !failed.is_empty() {
        lines.push(format!("marked failed: {}", failed.join(", ")));
    }
    lines.push(if make_up {
        "the backup is made up now, once".into()
    } else {
        "it is not made up; the next run is on time".into()
    });
    alert(
        format!("ALERT: {what} of {} was interrupted", show(slot_t)),
        lines,
    )
}
