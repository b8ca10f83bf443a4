//! The scheduler's alerts: the backup-age check (opened once when an environment's newest
//! verified backup is too old, resolved once when a fresh one exists) and an alert of one job
//! audited and queued in one transaction.

use serde_json::json;

use super::shared::{alert, enqueue, report_channels};
use super::Scheduler;
use crate::core::audit::NewAudit;
use crate::core::context::Core;
use crate::core::event::ChannelRef;
use crate::core::human;
use crate::core::reply::{Card, Reply, Style};
use crate::services::backups::health::{backup_line, newest_verified};
use crate::services::backups::schedule::next_backup_text;
use crate::store::{BackupRow, Tx};

impl Scheduler {
    /// Opens or closes the backup-age alert of every environment with scheduled backups.
    pub(super) async fn backup_age(&self, now: i64) -> anyhow::Result<()> {
        let core = &self.core;
        let max = core.settings.schedule.max_backup_age.0.as_millis() as i64;
        for (env, e) in &core.settings.environments {
            if !e.scheduled_backups {
                continue;
            }
            self.backup_age_of(env, max, now).await?;
        }
        Ok(())
    }

    /// The backup-age check of `env` (`max` in ms): the alert raised (posted once) when its
    /// newest verified backup, or the time since none was seen, is older; resolved (posted
    /// once) when a verified backup is young again.
    async fn backup_age_of(&self, env: &str, max: i64, now: i64) -> anyhow::Result<()> {
        let core = &self.core;
        let newest = newest_verified(core.reads(), env).await?;
        let name = format!("backup-age:{env}");
        // With no verified backup, the age counts from when a check first saw none: a row
        // kept in the store, so a restart does not reset it.
        let none_since = format!("backup-none-since:{env}");
        let limit = crate::config::format_duration(core.settings.schedule.max_backup_age.0);
        let channels = report_channels(core, [env]);
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
                        format!(
                            "next scheduled backup: {}",
                            next_backup_text(core.reads(), env)
                        ),
                    ],
                );
                enqueue(core, &mut tx, &channels, &reply).await?;
            }
        } else if let Some(b) = newest.as_ref() {
            // Only a verified young backup resolves the alert; with none it stays open.
            if !tx.clear_alert(&name).await? {
                tx.commit().await?;
                return Ok(());
            }
            resolve_backup_age(core, &mut tx, env, &limit, b, &channels, now).await?;
        }
        tx.commit().await?;
        core.outbox_wake.notify_one();
        Ok(())
    }

    /// Audits `schedule.alert` for `env` and queues `reply` to its report channels, in one
    /// transaction.
    pub(super) async fn post_alert(
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
}

/// Audits the backup-age alert of `env` resolved by backup `b` and queues the resolved card.
async fn resolve_backup_age(
    core: &Core,
    tx: &mut Box<dyn Tx>,
    env: &str,
    limit: &str,
    b: &BackupRow,
    channels: &[ChannelRef],
    now: i64,
) -> anyhow::Result<()> {
    let text = format!(
        "RESOLVED: {env} has a verified backup younger than {limit} again: {}",
        backup_line(b, now)
    );
    core.audit_tx(
        tx,
        NewAudit::system(
            "schedule.alert_resolved",
            Some(env),
            json!({"alert": "backup-age", "backup": b.id}),
        ),
    )
    .await?;
    let mut c = Card::new(format!("Resolved: backups of {env}"), Style::Success);
    c.lines = vec![text];
    enqueue(core, tx, channels, &Reply::card(c)).await?;
    Ok(())
}
