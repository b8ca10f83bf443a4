//! Cron slots: which slot of a cron job is due, a missed slot made up or skipped, and a slot
//! taken once (its `schedule_runs` row), run under its renewed run lease and finished.

use chrono::{DateTime, TimeZone as _};
use chrono_tz::Tz;
use serde_json::json;

use super::shared::{
    enqueue, run_lease, Posts, CRON_LEASE_MS, JOB_BACKUP, RUN_LEASE_MS, RUN_RENEW,
};
use super::Scheduler;
use crate::core::audit::NewAudit;
use crate::core::event::ChannelRef;
use crate::core::reply::Reply;
use crate::services::backups::schedule::{previous_slot, show};

impl Scheduler {
    fn mark_seen(&self, job: &'static str, slot: i64) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job, slot);
    }

    /// Takes and runs the slot of cron job `job` at or before `now`, if no process took it.
    pub(super) async fn cron(
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
    pub(super) async fn run_slot(
        &self,
        job: &'static str,
        key: &str,
        slot_t: &DateTime<Tz>,
        late: Option<String>,
        now: i64,
    ) -> anyhow::Result<()> {
        let Some(lease) = self
            .claim_slot(job, key, slot_t, late.as_deref(), now)
            .await?
        else {
            return Ok(());
        };
        let (outcome, posts) = self.run_renewed(job, slot_t, late.as_deref(), &lease).await;
        self.finish_slot(key, slot_t, &outcome, &posts).await
    }

    /// Takes the job's lease, the run lease and the slot row (audited `schedule.run.started`);
    /// the run lease's name, or `None` when another process has the slot.
    async fn claim_slot(
        &self,
        job: &'static str,
        key: &str,
        slot_t: &DateTime<Tz>,
        late: Option<&str>,
        now: i64,
    ) -> anyhow::Result<Option<String>> {
        let slot = slot_t.timestamp_millis();
        if !self
            .core
            .store
            .try_lease(job, &self.holder, now, CRON_LEASE_MS)
            .await?
        {
            return Ok(None);
        }
        // Taken before the slot row, so no replica sees the row without its live lease.
        let lease = run_lease(key, slot);
        if !self
            .core
            .store
            .try_lease(&lease, &self.holder, now, RUN_LEASE_MS)
            .await?
        {
            return Ok(None);
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
            return Ok(None);
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
        Ok(Some(lease))
    }

    /// Runs the job of a taken slot, renewing its run lease every [`RUN_RENEW`] meanwhile.
    async fn run_renewed(
        &self,
        job: &'static str,
        slot_t: &DateTime<Tz>,
        late: Option<&str>,
        lease: &str,
    ) -> Posts {
        let work = async {
            match job {
                JOB_BACKUP => self.nightly_backups(slot_t, late).await,
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
                    .try_lease(lease, &self.holder, now, RUN_LEASE_MS)
                    .await
                {
                    tracing::warn!(job, error = %e, "renewing the run's lease failed");
                }
            }
        };
        tokio::select! {
            r = work => r,
            () = renew => unreachable!("the renewal never ends"),
        }
    }

    /// Finishes the slot row with `outcome` (audited `schedule.run.finished`) and queues the
    /// run's posts, in one transaction.
    async fn finish_slot(
        &self,
        key: &str,
        slot_t: &DateTime<Tz>,
        outcome: &str,
        posts: &[(Vec<ChannelRef>, Reply)],
    ) -> anyhow::Result<()> {
        let slot = slot_t.timestamp_millis();
        let mut tx = self.core.store.begin().await?;
        let end = self.core.clock.now_ms();
        tx.finish_run(key, slot, outcome, end).await?;
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
        for (channels, r) in posts {
            enqueue(&self.core, &mut tx, channels, r).await?;
        }
        tx.commit().await?;
        self.core.outbox_wake.notify_one();
        Ok(())
    }
}
