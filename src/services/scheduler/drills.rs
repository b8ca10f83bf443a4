//! The restore drill job: each environment's newest verified backup restored into a scratch
//! database and checked ([`drill_env`]), the drill report, and the recovery of drills a stopped
//! process left `running`.

use std::path::PathBuf;

use chrono::DateTime;
use chrono_tz::Tz;
use serde_json::json;

use super::shared::{
    alert, drill_lease, public_report, report_channels, Posts, RUN_LEASE_MS, RUN_RENEW,
};
use super::Scheduler;
use crate::core::audit::NewAudit;
use crate::core::context::Core;
use crate::core::human;
use crate::core::reply::{Report, Section, Table, Warning};
use crate::dbops::backup::{self as bk};
use crate::services::backups::health::newest_verified;
use crate::services::backups::schedule::show;
use crate::services::environment::protected_urls;
use crate::store::{Backend, BackupRow, DrillRow};

/// How many of the largest tables a drill counts.
pub const DRILL_TABLES: usize = 5;

impl Scheduler {
    /// Drills left `running` by a stopped process are marked failed and their scratch databases
    /// dropped: at a SQLite start-up all of them; on a PostgreSQL store those whose
    /// `drill:<id>` lease (renewed while a drill runs) expired, checked every 10 s. The scratch
    /// database of an environment with no drill running is dropped when `at_startup`.
    pub async fn recover_drills(&self, now: i64, at_startup: bool) -> anyhow::Result<()> {
        let protected = protected_urls(&self.core.settings);
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

    /// A restore drill of the newest verified backup of every environment.
    pub(super) async fn drills(&self, slot: &DateTime<Tz>) -> Posts {
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
    let e = crate::services::environment::env_settings(core.reads(), env).map_err(|e| e.0)?;
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
        &protected_urls(&core.settings),
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
    let Ok(Some(b)) = newest_verified(core.reads(), env).await else {
        return Ok(None);
    };
    let mut d = start_drill(core, env, holder, &b).await?;
    let t0 = std::time::Instant::now();
    let result = drill_renewed(core, env, holder, &b, &drill_lease(&d.id)).await;
    d.duration_ms = Some(t0.elapsed().as_millis() as i64);
    finish_drill(core, d, &b, result).await
}

/// Takes the drill's lease and records it `running` (audited `drill.started`); the drill
/// marked failed, and why, when either fails.
async fn start_drill(
    core: &Core,
    env: &str,
    holder: &str,
    b: &BackupRow,
) -> Result<DrillRow, (DrillRow, String)> {
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
    Ok(d)
}

/// Runs the drill of backup `b`, renewing the drill's `lease` every [`RUN_RENEW`] meanwhile.
async fn drill_renewed(
    core: &Core,
    env: &str,
    holder: &str,
    b: &BackupRow,
    lease: &str,
) -> Result<bk::DrillOutcome, String> {
    let renew = async {
        loop {
            tokio::time::sleep(RUN_RENEW).await;
            let now = core.clock.now_ms();
            if let Err(e) = core.store.try_lease(lease, holder, now, RUN_LEASE_MS).await {
                tracing::warn!(error = %e, "renewing the drill's lease failed");
            }
        }
    };
    tokio::select! {
        r = run_drill(core, env, b) => r,
        () = renew => unreachable!("the renewal never ends"),
    }
}

/// Records how drill `d` of backup `b` ended (`drill.finished` or `drill.failed`).
#[allow(clippy::type_complexity)]
async fn finish_drill(
    core: &Core,
    mut d: DrillRow,
    b: &BackupRow,
    result: Result<bk::DrillOutcome, String>,
) -> Result<Option<(DrillRow, bk::DrillOutcome)>, (DrillRow, String)> {
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
