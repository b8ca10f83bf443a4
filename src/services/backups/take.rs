//! Taking a backup: the tools check, `pg_dump` through `dbops`, the catalog row, the audit lines,
//! and the retention that follows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::json;

use crate::core::audit::NewAudit;
use crate::core::context::Core;
use crate::core::human;
use crate::dbops;
use crate::dbops::backup::{self as bk, BackupKind};
use crate::dbops::prisma;
use crate::services::backups::health::*;
use crate::services::environment::{database_url, env_settings, StepError};
use crate::store::{BackupRow, OperationRow, Tx};

/// What keeps the environment's tools from backing up its server (`server_version_num` when
/// a status read had it). Scheduled backups have no plan that refused them before: the problem
/// is named here, before pg_dump fails with its own version mismatch. A backup runs pg_dump
/// and (to verify it) pg_restore; psql is for restores only.
pub async fn backup_tools_problem(
    e: &crate::config::EnvironmentSettings,
    env: &str,
    server: Option<u32>,
) -> Option<String> {
    let mut tools = crate::services::environment::gather_tools(e, server).await;
    tools.tools.retain(|t| t.tool != "psql");
    tools.problem(env)
}

/// Takes a verified backup of `env` and records it in the catalog: a `running` entry first
/// (audited), then `ok` with size, SHA-256, the migrations applied at the time and the
/// verification, or `failed` (and no file). Progress edits the operation's card about every
/// two seconds. Retention is not applied here: the scheduler applies it after the nightly
/// backups, and manual backups apply it after they finish ([`take_manual_backup`]).
#[tracing::instrument(skip_all, fields(env = %env, kind = kind.as_str()))]
pub async fn take_backup(
    core: &Arc<Core>,
    env: &str,
    kind: BackupKind,
    requested_by: Option<&str>,
    note: Option<String>,
    op: Option<&OperationRow>,
) -> Result<BackupRow, StepError> {
    let e = env_settings(core.reads(), env)?;
    let url = database_url(e)?;
    let applied = applied_with_usable_tools(e, env, url.expose_secret()).await?;
    let database =
        bk::database_name(url.expose_secret()).map_err(|err| StepError(err.to_string()))?;
    let write_stats = write_stats_before_dump(url.expose_secret()).await;
    let mut row = BackupRow {
        id: human::new_id('b'),
        env: env.into(),
        kind: kind.as_str().into(),
        state: "running".into(),
        path: String::new(),
        database_name: database,
        size_bytes: None,
        sha256: None,
        started_at: core.clock.now_ms(),
        duration_ms: None,
        requested_by: requested_by.map(str::to_string),
        note,
        migrations_json: serde_json::to_string(&applied).expect("names serialize"),
        verified_at: None,
        verify_error: None,
        toc_entries: None,
        operation_id: op.map(|o| o.id.clone()),
        error: None,
        deleted_at: None,
        file_mtime_ms: None,
        write_stats_json: write_stats,
    };
    save_backup(
        core,
        &row,
        "backup.started",
        json!({"backup": row.id, "kind": row.kind, "operation": row.operation_id}),
    )
    .await?;
    let (dumped, began) =
        dump_with_progress(core, e, env, kind, url.expose_secret(), op, &row.id).await;
    let out = match dumped {
        Ok(o) => o,
        Err(err) => return Err(record_failed_dump(core, &mut row, env, began, err).await),
    };
    record_dump(core, &mut row, env, &out, applied.len()).await?;
    Ok(row)
}

/// The migrations applied now, once the status read shows the database reachable and the
/// tools can back up its server; else why no backup is taken.
async fn applied_with_usable_tools(
    e: &crate::config::EnvironmentSettings,
    env: &str,
    url: &str,
) -> Result<Vec<String>, StepError> {
    let (applied, server) = match prisma::status(url, &e.migrations_dir).await {
        Ok(st) => (st.applied, st.server_version_num),
        Err(err) => {
            return Err(StepError(format!(
                "database unreachable, no backup taken: {err}"
            )))
        }
    };
    if let Some(problem) = backup_tools_problem(e, env, server).await {
        return Err(StepError(format!("no backup taken: {problem}")));
    }
    Ok(applied)
}

/// The write counters just before the dump starts (JSON): plans that restore this backup
/// estimate the rows written since from them. Best effort: without them (NULL) the card says
/// unknown.
async fn write_stats_before_dump(url: &str) -> Option<String> {
    match dbops::stats::read(url).await {
        Ok(s) => serde_json::to_string(&s).ok(),
        Err(err) => {
            tracing::warn!(error = %err, "backup goes on without write counters");
            None
        }
    }
}

/// Runs the verified dump; with an operation, its card shows the progress about every two
/// seconds. Returns the result and when the dump began.
async fn dump_with_progress(
    core: &Arc<Core>,
    e: &crate::config::EnvironmentSettings,
    env: &str,
    kind: BackupKind,
    url: &str,
    op: Option<&OperationRow>,
    id: &str,
) -> (Result<bk::DumpOutcome, bk::DumpError>, std::time::Instant) {
    let latest = Arc::new(std::sync::Mutex::new(None::<bk::DumpProgress>));
    let reporter = op.cloned().map(|op| {
        let (core, latest, id) = (core.clone(), latest.clone(), id.to_string());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let p = *latest.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(p) = p {
                    let line = format!(
                        "backup {id}: {} written, {}s elapsed",
                        human::bytes(p.bytes_written),
                        p.elapsed.as_secs()
                    );
                    let _ = core.show_progress(&op, &line).await;
                }
            }
        })
    });
    let req = bk::DumpRequest {
        database_url: url,
        backup_dir: &e.backup_dir,
        env,
        kind,
        pg_bin_dir: e.pg_bin_dir.as_deref(),
    };
    let sink = latest.clone();
    let began = std::time::Instant::now();
    let dumped = bk::dump_verified(&req, move |p| {
        *sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(p)
    })
    .await;
    if let Some(r) = reporter {
        r.abort();
    }
    (dumped, began)
}

/// Records a dump that failed (no file kept) as `failed`, audited; returns the step's error,
/// or the failure to record it.
async fn record_failed_dump(
    core: &Core,
    row: &mut BackupRow,
    env: &str,
    began: std::time::Instant,
    err: bk::DumpError,
) -> StepError {
    row.state = "failed".into();
    row.error = Some(err.to_string());
    if let bk::DumpError::Unverified(why) = &err {
        row.verify_error = Some(why.clone());
    }
    row.duration_ms = Some(core.clock.now_ms() - row.started_at);
    crate::core::meter::backup(env, began.elapsed(), None);
    if let Err(save_err) = save_backup(
        core,
        row,
        "backup.failed",
        json!({"backup": row.id, "error": err.to_string()}),
    )
    .await
    {
        return save_err;
    }
    StepError(format!("backup failed, no file kept: {err}"))
}

/// Records the dump's file, size, SHA-256 and duration, then `ok` with the verification
/// (audited with `applied` migrations counted), or, for a dump not verified as written, removes
/// the file and records `failed`.
async fn record_dump(
    core: &Core,
    row: &mut BackupRow,
    env: &str,
    out: &bk::DumpOutcome,
    applied: usize,
) -> Result<(), StepError> {
    row.path = out.path.display().to_string();
    row.size_bytes = Some(out.size_bytes as i64);
    row.sha256 = Some(out.sha256.clone());
    row.duration_ms = Some(out.duration.as_millis() as i64);
    // The SHA-256 was computed, and pg_restore read the archive to the end, while the dump was
    // written (bk::dump_verified): nothing is read again. A dump that failed verification was not
    // kept and ended in the `Err` arm of `take_backup`; the `Err` arm below is a safety net.
    match out.toc_entries.ok_or("not verified as written") {
        Ok(toc_entries) => {
            row.state = "ok".into();
            row.verified_at = Some(core.clock.now_ms());
            row.file_mtime_ms = std::fs::metadata(&out.path)
                .ok()
                .and_then(|m| m.modified().ok())
                .map(|t| chrono::DateTime::<chrono::Utc>::from(t).timestamp_millis());
            row.toc_entries = Some(toc_entries as i64);
            crate::core::meter::backup(env, out.duration, Some(out.size_bytes));
            save_backup(core, row, "backup.finished", json!({"backup": row.id, "file": out.file_name, "bytes": out.size_bytes, "sha256": out.sha256, "toc_entries": toc_entries, "migrations": applied})).await?;
        }
        Err(err) => {
            let _ = std::fs::remove_file(&out.path);
            crate::core::meter::backup(env, out.duration, None);
            row.state = "failed".into();
            row.verify_error = Some(err.to_string());
            row.error = Some(format!("verification failed: {err}"));
            save_backup(
                core,
                row,
                "backup.failed",
                json!({"backup": row.id, "error": row.error}),
            )
            .await?;
            return Err(StepError(format!(
                "backup {} failed verification and was removed: {err}",
                row.id
            )));
        }
    }
    Ok(())
}

/// A manual backup (`backup`, `dualkey backup`), then retention: manual backups age out like
/// scheduled ones, and an environment without scheduled backups has no nightly run to do it.
pub async fn take_manual_backup(
    core: &Arc<Core>,
    env: &str,
    requested_by: &str,
    note: Option<String>,
    op: Option<&OperationRow>,
) -> Result<BackupRow, StepError> {
    let b = take_backup(core, env, BackupKind::Manual, Some(requested_by), note, op).await?;
    if let Err(err) = apply_retention(core, env).await {
        tracing::warn!(error = %err, "retention failed");
    }
    Ok(b)
}

pub async fn save_backup(
    core: &Core,
    row: &BackupRow,
    action: &str,
    details: serde_json::Value,
) -> Result<(), StepError> {
    let f = async {
        let mut tx = core.store.begin().await?;
        tx.put_backup(row).await?;
        core.audit_tx(
            &mut tx,
            NewAudit {
                operator: row.requested_by.clone(),
                account: None,
                env: Some(row.env.clone()),
                action: action.into(),
                details,
            },
        )
        .await?;
        tx.commit().await?;
        Ok::<_, crate::store::StoreError>(())
    };
    f.await
        .map_err(|e| StepError(format!("recording the backup failed: {e}")))
}

/// Deletes scheduled and manual backups older than `retention_days`, keeping the newest
/// `min_keep` verified ones; each deletion is audited. Returns the deleted ids.
#[tracing::instrument(skip(core))]
pub async fn apply_retention(core: &Core, env: &str) -> Result<Vec<String>, StepError> {
    let e = env_settings(core.reads(), env)?;
    let all = core
        .store
        .list_backups(env)
        .await
        .map_err(|e| StepError(e.to_string()))?;
    let live: Vec<&BackupRow> = all
        .iter()
        .filter(|b| b.state == "ok" && b.deleted_at.is_none())
        .collect();
    let mut entries: Vec<bk::RetentionEntry<String>> = Vec::with_capacity(live.len());
    for b in &live {
        entries.push(bk::RetentionEntry {
            id: b.id.clone(),
            kind: backup_kind(&b.kind),
            created_at: chrono::DateTime::from_timestamp_millis(b.started_at).unwrap_or_default(),
            // Only a healthy file (there, same size, same SHA-256 as verified) protects others.
            verified: backup_health_hashed(core.store.as_ref(), b).await == "ok",
            exists: Path::new(&b.path).exists(),
        });
    }
    let now = chrono::DateTime::from_timestamp_millis(core.clock.now_ms()).unwrap_or_default();
    let policy = bk::RetentionPolicy {
        retention_days: e.retention_days,
        min_keep: e.min_keep as usize,
    };
    let doomed = bk::select_for_deletion(&entries, now, policy);
    for id in &doomed {
        let Some(b) = live.iter().find(|b| &b.id == id) else {
            continue;
        };
        let results = bk::delete_backup_files(&[PathBuf::from(&b.path)]);
        let ok = results.iter().all(|r| r.is_ok());
        let mut row = (*b).clone();
        if ok {
            row.deleted_at = Some(core.clock.now_ms());
        }
        save_backup(
            core,
            &row,
            if ok {
                "retention.deleted"
            } else {
                "retention.delete_failed"
            },
            json!({"backup": b.id, "path": b.path, "kind": b.kind}),
        )
        .await?;
    }
    Ok(doomed)
}

pub fn backup_kind(s: &str) -> BackupKind {
    s.parse().unwrap_or(BackupKind::Manual)
}

/// Marks failed, in `tx`, a backup a stopped process left `running` (it never finished: no file,
/// no ok entry), with its `backup.failed` audit line.
pub async fn fail_interrupted(
    core: &Core,
    tx: &mut Box<dyn Tx>,
    mut b: BackupRow,
) -> crate::store::StoreResult<()> {
    b.state = "failed".into();
    b.error = Some("dualkey stopped while this backup ran".into());
    tx.put_backup(&b).await?;
    core.audit_tx(
        tx,
        NewAudit::system(
            "backup.failed",
            Some(&b.env),
            json!({"backup": b.id, "error": "interrupted"}),
        ),
    )
    .await?;
    Ok(())
}
