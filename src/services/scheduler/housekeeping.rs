//! Housekeeping jobs that run every few seconds to every hour: request expiry, recovering cron
//! runs a stopped process left unfinished (and stale operations and drills on PostgreSQL), and
//! store pruning.

use chrono::TimeZone as _;
use serde_json::json;

use super::shared::{
    alert, enqueue, report_channels, run_lease, JOB_BACKUP, JOB_BACKUP_RETRY, RUN_LEASE_MS,
};
use super::Scheduler;
use crate::core::audit::NewAudit;
use crate::services::backups::schedule::show;
use crate::services::worker::Worker;
use crate::store::Backend;

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
}
