//! The nightly backup job: a scheduled backup of every environment with `scheduled_backups`,
//! retention after each good one (and for environments without a schedule), an alert per
//! failure, and the report with what was kept and the size trend.

use std::collections::BTreeSet;

use chrono::DateTime;
use chrono_tz::Tz;
use serde_json::json;

use super::shared::{alert, public_report, report_channels, Posts};
use super::Scheduler;
use crate::core::human;
use crate::core::reply::{Report, Section, Warning};
use crate::dbops::backup::BackupKind;
use crate::services::backups::health::{backup_line, first_healthy};
use crate::services::backups::schedule::show;
use crate::store::BackupRow;

impl Scheduler {
    /// The nightly backup of every environment with `scheduled_backups`, then retention, then
    /// the report (to every scheduled environment's report channels) and an alert per failure
    /// (to that environment's). Returns the outcome and what to post where.
    pub(super) async fn nightly_backups(&self, slot: &DateTime<Tz>, late: Option<&str>) -> Posts {
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
            sections.push(self.backup_env(env, &note, slot, &mut failed).await);
        }
        self.retention_unscheduled().await;
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

    /// The scheduled backup of `env` and its report section: on success what was taken and what
    /// retention deleted; on failure the error, the last good backup and the alert (`env` is
    /// added to `failed`); then the backups kept.
    async fn backup_env(
        &self,
        env: &str,
        note: &str,
        slot: &DateTime<Tz>,
        failed: &mut Vec<String>,
    ) -> Section {
        let core = &self.core;
        let before = core.store.list_backups(env).await.unwrap_or_default();
        let last_good = first_healthy(core.reads(), &before).await.cloned();
        let result = crate::services::backups::take::take_backup(
            core,
            env,
            BackupKind::Scheduled,
            Some("schedule"),
            Some(note.to_string()),
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
                backup_fields(&b, &mut section);
                self.retention_fields(env, &before, &mut section).await;
            }
            Err(err) => {
                failed.push(env.to_string());
                self.backup_failed(env, slot, &err.0, last_good.as_ref(), now, &mut section)
                    .await;
            }
        }
        self.stats_fields(env, &mut section).await;
        section
    }

    /// A failed scheduled backup: its fields and warning in the report, and its alert audited
    /// and queued (a warning in the report when that fails).
    async fn backup_failed(
        &self,
        env: &str,
        slot: &DateTime<Tz>,
        err: &str,
        last_good: Option<&BackupRow>,
        now: i64,
        section: &mut Section,
    ) {
        let last = last_good
            .map(|b| backup_line(b, now))
            .unwrap_or_else(|| "none verified".into());
        section.fields.push(("error".into(), err.to_string()));
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
                format!("error: {err}"),
                format!("last good backup: {last}"),
                format!("slot: {}", show(slot)),
            ],
        );
        // The alert is queued with its audit row, so a kill after this point
        // loses neither.
        let details = json!({"alert": "backup-failed", "error": err, "last_good": last_good.map(|b| b.id.clone())});
        if let Err(e) = self.post_alert(env, details, &reply).await {
            tracing::error!(env = %env, error = format!("{e:#}"), "recording the alert failed");
            section.warnings.push(Warning::danger(format!(
                "the alert could not be recorded: {e:#}"
            )));
        }
    }

    /// Environments without a schedule still age out their manual backups.
    async fn retention_unscheduled(&self) {
        let core = &self.core;
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
}

/// What a good scheduled backup took: id and file, size, duration, verification.
fn backup_fields(b: &BackupRow, section: &mut Section) {
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
}
