//! The runbook: what each operation kind plans and what each step does. `run_step` executes one
//! [`StepAction`] through `dbops`.
//!
//! Planning has two halves (module [`planning`]). [`planning::gather`] does all the I/O a plan
//! depends on: the migration status (and the staging guard's), the pending scripts with their
//! checksums, the rollback plan, the restore source with its SHA-256 check, the write counters
//! for the data-loss estimate, the database URL and the clock. [`planning::plan_from`] is pure:
//! it turns those [`planning::PlanFacts`] into the steps, warnings, refusals and the facts that
//! are fingerprinted, so the fingerprint changes when what was read changes. [`plan`] is the two
//! in a row, shared by the dispatcher and the worker.
//!
//! Every destructive plan starts with a safety backup; a failed backup stops the operation
//! before anything else runs. Names from chat were validated by the parser and are checked
//! again here against what exists (migration folders, database rows, catalog entries, files).

pub mod planning;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::json;

use crate::config::EnvironmentSettings;
use crate::core::audit::NewAudit;
use crate::core::dispatch::Core;
use crate::core::operation::{OperationKind, Plan, PlannedStep, StepAction};
use crate::core::reply::Warning;
use crate::dbops;
use crate::dbops::backup::{self as bk, BackupKind};
use crate::dbops::prisma;
use crate::services::backups::health::*;
use crate::services::backups::take::*;
use crate::services::environment::*;
use crate::store::{BackupRow, OperationRow};

fn backup_step(kind: BackupKind, note: Option<String>) -> PlannedStep {
    let name = match kind {
        BackupKind::Manual | BackupKind::Scheduled => "backup".to_string(),
        _ => "safety backup".to_string(),
    };
    PlannedStep::new(
        name,
        format!(
            "pg_dump -Fc ({}), verified by pg_restore as it is written; nothing else runs if it fails",
            kind.as_str()
        ),
        StepAction::Backup {
            kind: kind.as_str().into(),
            note,
        },
    )
}

/// The step that stops (or starts) the app, `None` when the environment has no such command.
fn app_step(e: &EnvironmentSettings, stop: bool) -> Option<PlannedStep> {
    if stop {
        let argv = e.app_stop.as_ref()?;
        Some(PlannedStep::new(
            "stop app",
            argv.join(" "),
            StepAction::AppStop,
        ))
    } else {
        let argv = e.app_start.as_ref()?;
        Some(PlannedStep::new(
            "start app",
            argv.join(" "),
            StepAction::AppStart,
        ))
    }
}

/// The app stop (or start) command, or a refusal that says it is not set and what to do
/// instead.
fn app_command<'a>(
    e: &'a EnvironmentSettings,
    env: &str,
    stop: bool,
) -> Result<&'a Vec<String>, StepError> {
    let (key, argv) = if stop {
        ("app_stop", &e.app_stop)
    } else {
        ("app_start", &e.app_start)
    };
    argv.as_ref().ok_or_else(|| {
        StepError(format!(
            "environments.{env}.{key} is not set, so dualkey does not stop or start the app in {env}. Use your platform's own tools (kubectl, the PaaS console), or set app_stop and app_start in the config."
        ))
    })
}

/// Where a restore reads from.
#[derive(Debug, Clone)]
pub struct RestoreSource {
    /// Catalog id or external file name.
    pub label: String,
    /// The file.
    pub path: PathBuf,
    /// Expected SHA-256: the catalog's, or (external files) the one read when the plan was made.
    pub sha256: Option<String>,
    /// True for a catalog entry (a custom-format dump), false for an external `.sql` file.
    pub catalog: bool,
    /// When it was taken (ms).
    pub taken_at: i64,
    /// The migrations applied in the backup (the catalog's record); `None` for an external file.
    pub migrations: Option<Vec<String>>,
    /// The target's write counters recorded with the backup (JSON), when there are any.
    pub write_stats_json: Option<String>,
}

impl RestoreSource {
    /// A catalog entry as a restore source.
    fn from_row(b: &BackupRow) -> RestoreSource {
        RestoreSource {
            label: b.id.clone(),
            path: PathBuf::from(&b.path),
            sha256: b.sha256.clone(),
            catalog: true,
            taken_at: b.started_at,
            migrations: Some(backup_migrations(b)),
            write_stats_json: b.write_stats_json.clone(),
        }
    }

    /// The steps of every plan that restores this backup: a safety backup, stop the app,
    /// `before`, the restore (single transaction), `after`, and starting the app again (also
    /// after a failed restore). Without `app_stop`/`app_start` the app steps are left out and
    /// [`RestoreSource::app_warning`] goes on the card.
    fn steps(
        &self,
        e: &EnvironmentSettings,
        safety: BackupKind,
        detail: String,
        before: Vec<PlannedStep>,
        after: Vec<PlannedStep>,
    ) -> Vec<PlannedStep> {
        let mut steps = vec![backup_step(safety, None)];
        steps.extend(app_step(e, true));
        steps.extend(before);
        steps.push(PlannedStep::new(
            "restore",
            detail,
            StepAction::Restore {
                backup: self.label.clone(),
                sha256: self.sha256.clone(),
            },
        ));
        steps.extend(after);
        steps.extend(app_step(e, false).map(PlannedStep::always));
        steps
    }

    /// The warning of every restoring plan in an environment where dualkey may not stop the
    /// app; `None` when it may.
    fn app_warning(e: &EnvironmentSettings, env: &str) -> Option<String> {
        (!e.controls_app()).then(|| format!(
            "the app keeps running during the restore: environments.{env}.app_stop/app_start are not set, so dualkey does not stop it. Stop its writes yourself first, or they may fail or be lost while the restore runs"
        ))
    }

    /// The migrations restoring this backup un-applies: those applied now minus those applied
    /// in the backup, newest first. `None` for an external file (no record of its migrations).
    pub fn unapplies(&self, applied_now: &[String]) -> Option<Vec<String>> {
        let then = self.migrations.as_ref()?;
        Some(
            applied_now
                .iter()
                .rev()
                .filter(|m| !then.contains(m))
                .cloned()
                .collect(),
        )
    }

    /// The card line that names what the restore un-applies (and brings back: migrations
    /// applied in the backup but not now). `applied_now` is `Err(why)` when the status could not
    /// be read.
    fn unapply_warning(&self, applied_now: &Result<Vec<String>, StepError>) -> String {
        let applied_now = match applied_now {
            Ok(a) => a.as_slice(),
            Err(why) => {
                return format!(
                    "restoring {} un-applies unknown migrations: {why}",
                    self.label
                )
            }
        };
        let (Some(gone), Some(then)) = (self.unapplies(applied_now), &self.migrations) else {
            return format!(
                "restoring {} un-applies unknown migrations: an external file has no catalog record of them ({} applied now)",
                self.label,
                applied_now.len()
            );
        };
        let mut line = if gone.is_empty() {
            format!("restoring {} un-applies no migration", self.label)
        } else {
            format!(
                "restoring {} un-applies {} migration(s), newest first: {}",
                self.label,
                gone.len(),
                gone.join(", ")
            )
        };
        let back: Vec<&String> = then.iter().filter(|m| !applied_now.contains(m)).collect();
        if !back.is_empty() {
            line.push_str(&format!(
                "; it brings back {} migration(s) applied in the backup but not now: {}",
                back.len(),
                back.iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        line
    }

    /// About how many rows were written since the backup, naming the most written tables, or
    /// `unknown (why)`.
    /// I/O: reads the target's write counters now (see [`planning::gather`]).
    async fn write_estimate(&self, e: &EnvironmentSettings) -> String {
        const UNKNOWN_OLD: &str = "unknown (backup taken before dualkey recorded write counters, or they could not be read when it was taken)";
        if !self.catalog {
            return "unknown (an external file: dualkey recorded no write counters with it)".into();
        }
        let Some(json) = &self.write_stats_json else {
            return UNKNOWN_OLD.into();
        };
        let Ok(then) = serde_json::from_str::<dbops::stats::WriteStats>(json) else {
            return "unknown (the write counters recorded with the backup are unreadable)".into();
        };
        let current = match database_url(e) {
            Ok(url) => dbops::stats::read(url.expose_secret()).await,
            Err(err) => return format!("unknown ({err})"),
        };
        match current {
            Ok(current) => dbops::stats::estimate(&then, &current).describe(3),
            Err(err) => format!("unknown ({err})"),
        }
    }

    /// The plan fact that pins the backup's content.
    fn fact(&self) -> String {
        format!(
            "backup {} sha256 {}",
            self.label,
            self.sha256.clone().unwrap_or_default()
        )
    }
}

/// The last line `pg_dump` writes to a plain SQL dump that it finished.
const PLAIN_DUMP_TRAILER: &str = "-- PostgreSQL database dump complete";

/// Whether a plain `.sql` file ends with pg_dump's completion line (its last 4 KiB are read).
fn ends_like_a_complete_plain_dump(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let tail = (|| -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(4096)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(buf)
    })();
    tail.is_ok_and(|t| String::from_utf8_lossy(&t).contains(PLAIN_DUMP_TRAILER))
}

/// Finds a restorable backup by catalog id or external `.sql` file name; refuses missing,
/// changed, failed or unverified ones.
pub async fn restore_source(
    core: &Core,
    env: &str,
    name: &str,
) -> Result<RestoreSource, StepError> {
    let e = env_settings(core, env)?;
    if name.ends_with(".sql") {
        let dir = e.backup_dir.join(env);
        let found = bk::list_external(&dir)
            .map_err(|err| StepError(format!("cannot list {}: {err}", dir.display())))?
            .into_iter()
            .find(|x| x.file_name == name)
            .ok_or_else(|| {
                StepError(format!(
                    "there is no external backup `{name}` in {}; `backups` lists them",
                    dir.display()
                ))
            })?;
        // Pin the reviewed content: the SHA-256 is part of the plan's facts, so a file replaced
        // after approval changes the fingerprint.
        let (_, sha) = bk::sha256_file(&found.path)
            .await
            .map_err(|err| StepError(format!("cannot read {name}: {err}")))?;
        return Ok(RestoreSource {
            label: name.into(),
            path: found.path,
            sha256: Some(sha),
            catalog: false,
            taken_at: found.modified.timestamp_millis(),
            migrations: None,
            write_stats_json: None,
        });
    }
    let b = core
        .store
        .get_backup(name)
        .await
        .map_err(|err| StepError(err.to_string()))?
        .filter(|b| b.env == env)
        .ok_or_else(|| {
            StepError(format!(
                "there is no backup `{name}` in {env}; `backups` lists them"
            ))
        })?;
    let state = match backup_health(&b) {
        "ok" | BACKUP_TOUCHED if is_intact(&b).await => "ok",
        "ok" | BACKUP_TOUCHED => "changed (its SHA-256 differs from the catalog)",
        other => other,
    };
    if state != "ok" {
        return Err(StepError(format!(
            "backup {name} is {state} and cannot be restored"
        )));
    }
    Ok(RestoreSource::from_row(&b))
}

/// The file of the backup a restore step names, with the catalog's SHA-256 (external `.sql`
/// files have none; their approved hash is in the step). Cheap: catalog and file system only;
/// the content is checked while it streams into the restore.
async fn restore_file(
    core: &Core,
    env: &str,
    name: &str,
) -> Result<(PathBuf, Option<String>), StepError> {
    if name.ends_with(".sql") {
        let e = env_settings(core, env)?;
        let dir = e.backup_dir.join(env);
        let found = bk::list_external(&dir)
            .map_err(|err| StepError(format!("cannot list {}: {err}", dir.display())))?
            .into_iter()
            .find(|x| x.file_name == name)
            .ok_or_else(|| {
                StepError(format!(
                    "external backup {name} is no longer in {}; nothing was restored",
                    dir.display()
                ))
            })?;
        return Ok((found.path, None));
    }
    let b = core
        .store
        .get_backup(name)
        .await
        .map_err(|err| StepError(err.to_string()))?
        .filter(|b| b.env == env)
        .ok_or_else(|| StepError(format!("there is no backup `{name}` in {env}")))?;
    match backup_health(&b) {
        // Size or modification time differ: the streaming SHA-256 check decides.
        "ok" | "changed" | BACKUP_TOUCHED => Ok((PathBuf::from(&b.path), b.sha256.clone())),
        state => Err(StepError(format!(
            "backup {name} is {state} and cannot be restored; nothing was restored"
        ))),
    }
}

/// The newest healthy, verified backup of `env` that satisfies `pred`; a missing file, or one
/// whose SHA-256 changed, is never offered.
async fn newest_backup(
    core: &Core,
    env: &str,
    pred: impl Fn(&BackupRow) -> bool,
) -> Result<Option<BackupRow>, StepError> {
    let all = core
        .store
        .list_backups(env)
        .await
        .map_err(|e| StepError(e.to_string()))?;
    for b in all {
        if matches!(backup_health(&b), "ok" | BACKUP_TOUCHED) && pred(&b) && is_intact(&b).await {
            return Ok(Some(b));
        }
    }
    Ok(None)
}

fn warnings_for(sql_by_migration: &[(String, String)]) -> Vec<Warning> {
    let mut out = Vec::new();
    for (name, sql) in sql_by_migration {
        for w in dbops::sqlscan::scan(sql) {
            out.push(Warning::danger(format!("{name}: {w}")));
        }
    }
    out
}

/// What a deploy would run, read from the migrations folder: per pending migration its
/// checksum, its data-loss warnings, and whether it ships a `down.sql`. Shared by the deploy
/// plan and the safety checklist.
#[derive(Debug, Clone)]
pub struct PendingReview {
    /// (migration, checksum of migration.sql).
    pub checksums: Vec<(String, String)>,
    /// `migration: DROP TABLE "Post"`-style warnings.
    pub data_loss: Vec<String>,
    /// Pending migrations without a `down.sql`.
    pub no_down: Vec<String>,
}

/// Reviews the migrations `st` says a deploy would apply.
pub fn review_pending(
    e: &EnvironmentSettings,
    st: &prisma::StatusReport,
) -> Result<PendingReview, StepError> {
    let folder = prisma::list_migrations(&e.migrations_dir);
    let mut review = PendingReview {
        checksums: Vec::new(),
        data_loss: Vec::new(),
        no_down: Vec::new(),
    };
    for m in &st.deploy_would_apply {
        let lm = folder
            .get(m)
            .ok_or_else(|| StepError(format!("migration {m} vanished from the folder")))?;
        review
            .checksums
            .push((m.clone(), lm.checksum().unwrap_or_default()));
        if let Some(sql) = &lm.script {
            review.data_loss.extend(
                dbops::sqlscan::scan(sql)
                    .into_iter()
                    .map(|w| format!("{m}: {w}")),
            );
        }
        if !lm.has_down_sql {
            review.no_down.push(m.clone());
        }
    }
    Ok(review)
}

/// The `pending` migrations that `e`'s `require_staging` environment has not applied yet (empty
/// without a staging guard).
pub async fn missing_on_staging(
    core: &Core,
    e: &EnvironmentSettings,
    pending: &[String],
) -> Result<Vec<String>, StepError> {
    let Some(staging) = &e.require_staging else {
        return Ok(Vec::new());
    };
    let se = env_settings(core, staging)?;
    let sst = migration_status(se)
        .await
        .map_err(|err| StepError(format!("staging guard: {staging}: {err}")))?;
    Ok(pending
        .iter()
        .filter(|m| !sst.applied.contains(m))
        .cloned()
        .collect())
}

/// A Prisma precondition refused before anything runs, worded exactly as Prisma words it.
fn prisma_refusal(e: prisma::PrismaUserError) -> StepError {
    StepError(format!("{}: {}", e.code, e.message))
}

/// Computes the plan of `kind` in `env` from current facts: [`planning::gather`] reads them,
/// [`planning::plan_from`] decides. The dispatcher (through [`RunbookFacts`]) and the worker
/// (recomputing before the first step) both come here.
#[tracing::instrument(skip_all, fields(kind = kind.name(), env = %env))]
pub async fn plan(core: &Core, kind: &OperationKind, env: &str) -> Result<Plan, StepError> {
    let facts = planning::gather(core, kind, env).await?;
    planning::plan_from(kind, env, &facts)
}

/// Runs one step; returns a short summary of what happened.
#[tracing::instrument(skip_all, fields(operation = %op.id, env = %op.env, step = %step.name))]
pub async fn run_step(
    core: &Arc<Core>,
    op: &OperationRow,
    step: &PlannedStep,
) -> Result<String, StepError> {
    let e = env_settings(core, &op.env)?;
    let timeout = Duration::from_secs(e.app_timeout_secs);
    match &step.action {
        StepAction::AppStop => run_app(app_command(e, &op.env, true)?, timeout).await,
        StepAction::AppStart => run_app(app_command(e, &op.env, false)?, timeout).await,
        StepAction::Backup { kind, note } => {
            let b = match backup_kind(kind) {
                BackupKind::Manual => {
                    take_manual_backup(core, &op.env, &op.requester, note.clone(), Some(op)).await?
                }
                k => {
                    take_backup(
                        core,
                        &op.env,
                        k,
                        Some(&op.requester),
                        note.clone(),
                        Some(op),
                    )
                    .await?
                }
            };
            Ok(format!(
                "backup {} ({} bytes, verified)",
                b.id,
                b.size_bytes.unwrap_or(0)
            ))
        }
        StepAction::Deploy { migrations, pinned } => {
            let url = database_url(e)?;
            // Apply exactly what was approved, byte for byte: the deploy compares these
            // (name, checksum) pairs with the scripts it read itself, under the lock and before
            // its first write, so a migration added or a migration.sql edited since approval
            // (during the pre-deploy backup, say) stops it with nothing applied.
            let approved: Vec<(String, String)> = pinned
                .iter()
                .map(|p| (p.migration.clone(), p.checksum.clone()))
                .collect();
            let names: Vec<&String> = pinned.iter().map(|p| &p.migration).collect();
            if pinned.is_empty() || names != migrations.iter().collect::<Vec<_>>() {
                return Err(StepError(format!(
                    "this deploy of {} was approved without the checksums of its scripts (planned by an older dualkey); nothing was applied. Request the deploy again so the scripts are pinned.",
                    migrations.join(", ")
                )));
            }
            let mut observer = AuditObserver {
                core: core.clone(),
                env: op.env.clone(),
                op_id: op.id.clone(),
            };
            let result = prisma::deploy_pinned(
                url.expose_secret(),
                &e.migrations_dir,
                &approved,
                &mut observer,
            )
            .await;
            let out = match result {
                Ok(out) => out,
                Err(prisma::PrismaError::PlanChanged(changed)) => {
                    let pairs = |v: &[(String, String)]| {
                        v.iter()
                            .map(|(m, sum)| json!({"migration": m, "checksum": sum}))
                            .collect::<Vec<_>>()
                    };
                    observer
                        .write(
                            "migration.apply.refused",
                            json!({"operation": op.id, "reason": changed.differences(), "approved": pairs(&changed.approved), "found": pairs(&changed.found)}),
                        )
                        .await
                        .map_err(StepError)?;
                    return Err(StepError(changed.to_string()));
                }
                Err(err) => return Err(StepError(err.to_string())),
            };
            match &out.stopped {
                None if out.applied.is_empty() => Ok("no pending migrations to apply".into()),
                None => Ok(format!("applied {}", out.applied.join(", "))),
                Some(stop) => Err(StepError(format!(
                    "applied [{}], then {} failed: {}",
                    out.applied.join(", "),
                    stop.migration,
                    stop.prisma_error()
                        .map(|e| e.message.clone())
                        .unwrap_or_else(|| stop.cli_stderr())
                ))),
            }
        }
        StepAction::RollbackDown {
            migration,
            fingerprint,
        } => {
            let url = database_url(e)?;
            let mut observer = AuditObserver {
                core: core.clone(),
                env: op.env.clone(),
                op_id: op.id.clone(),
            };
            let out = prisma::rollback_down(
                url.expose_secret(),
                &e.migrations_dir,
                migration,
                Some(fingerprint),
                &mut observer,
            )
            .await
            .map_err(|err| StepError(format!("rollback failed and changed nothing: {err}")))?;
            Ok(format!(
                "un-applied {} (newest first)",
                out.rolled_back.join(", ")
            ))
        }
        StepAction::Restore { backup, sha256 } => {
            // Cheap checks only (catalog entry, file present); the content is checked once, by
            // hashing the bytes while they stream into the restore: the transaction commits only
            // if they are exactly the approved ones (see dbops::backup::restore).
            let (path, catalog_sha) = restore_file(core, &op.env, backup).await?;
            let Some(expected) = sha256.clone().or(catalog_sha) else {
                return Err(StepError(format!(
                    "backup {backup} has no recorded SHA-256, so its content cannot be checked; nothing was restored"
                )));
            };
            let url = database_url(e)?;
            let opts = bk::RestoreOptions {
                pg_bin_dir: e.pg_bin_dir.as_deref(),
                expected_sha256: Some(&expected),
                ..bk::RestoreOptions::default()
            };
            let out = bk::restore_with(url.expose_secret(), &path, &opts)
                .await
                .map_err(|err| match err {
                    bk::RestoreError::ChecksumMismatch { expected, actual, .. } => StepError(format!(
                        "backup {backup} changed since it was approved (SHA-256 now {actual}, approved {expected}); nothing was committed, the database is unchanged"
                    )),
                    // These say themselves what state the database is in.
                    err @ (bk::RestoreError::Failed { .. }
                    | bk::RestoreError::Incomplete(_)
                    | bk::RestoreError::CommitUnconfirmed(_)) => {
                        StepError(format!("restore of {backup} failed: {err}"))
                    }
                    err => StepError(format!(
                        "restore of {backup} failed; nothing was committed, the database is unchanged: {err}"
                    )),
                })?;
            Ok(format!(
                "restored {backup} in {:.1}s ({} bytes, SHA-256 {} checked while streaming)",
                out.duration.as_secs_f64(),
                out.size_bytes,
                &out.sha256[..12]
            ))
        }
        StepAction::Resolve { migration, applied } => {
            let url = database_url(e)?;
            let action = if *applied {
                prisma::ResolveAction::Applied
            } else {
                prisma::ResolveAction::RolledBack
            };
            prisma::resolve(url.expose_secret(), &e.migrations_dir, migration, action)
                .await
                .map_err(|err| StepError(err.to_string()))?;
            Ok(format!(
                "{migration} marked as {}",
                if *applied { "applied" } else { "rolled back" }
            ))
        }
        StepAction::ClearFailed => {
            let st = migration_status(e).await?;
            let url = database_url(e)?;
            let mut names: Vec<String> = st.failed.iter().map(|f| f.name.clone()).collect();
            names.dedup();
            for n in &names {
                prisma::resolve_rolled_back(url.expose_secret(), n)
                    .await
                    .map_err(|err| StepError(err.to_string()))?;
            }
            Ok(if names.is_empty() {
                "no failed migration rows".into()
            } else {
                format!("marked rolled back: {}", names.join(", "))
            })
        }
        StepAction::Assess => {
            let st = migration_status(e).await?;
            let mut parts = vec![format!(
                "{} applied, pending [{}], failed [{}]",
                st.applied.len(),
                st.pending.join(", "),
                st.failed
                    .iter()
                    .map(|f| f.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            )];
            if let Ok(n) = table_count(e).await {
                parts.push(format!("{n} tables in the public schema"));
            }
            if let Some(logs) = &e.app_logs {
                if let Ok(o) = dbops::app::run(logs, timeout).await {
                    parts.push(format!("app logs: {}", dbops::app::tail_of(&o.tail, 300)));
                }
            }
            Ok(parts.join("; "))
        }
    }
}

/// Writes each migration applied or un-applied inside a step to the audit trail as it happens
/// (before and after). An audit failure stops the step: nothing runs unaudited.
struct AuditObserver {
    core: Arc<Core>,
    env: String,
    op_id: String,
}

impl AuditObserver {
    async fn write(&self, action: &str, details: serde_json::Value) -> Result<(), String> {
        self.core
            .audit(NewAudit::system(action, Some(&self.env), details))
            .await
            .map(|_| ())
            .map_err(|e| format!("audit write failed: {e}"))
    }
}

#[async_trait::async_trait]
impl prisma::ProgressObserver<prisma::DeployEvent> for AuditObserver {
    async fn on_event(&mut self, ev: &prisma::DeployEvent) -> Result<(), String> {
        let op = &self.op_id;
        match ev {
            // A pinned deploy checked every script against the approved checksums before this
            // event; each event names the checksum of the script it is about.
            prisma::DeployEvent::Starting { migration, index, total, checksum } => self.write("migration.apply.started", json!({"operation": op, "migration": migration, "index": index, "total": total, "checksum": checksum})).await,
            prisma::DeployEvent::Applied { migration, duration_ms, checksum } => self.write("migration.apply.finished", json!({"operation": op, "migration": migration, "ms": duration_ms, "checksum": checksum})).await,
            prisma::DeployEvent::Failed { migration, error, checksum } => self.write("migration.apply.failed", json!({"operation": op, "migration": migration, "error": error.message, "checksum": checksum})).await,
        }
    }
}

#[async_trait::async_trait]
impl prisma::ProgressObserver<prisma::RollbackEvent> for AuditObserver {
    async fn on_event(&mut self, ev: &prisma::RollbackEvent) -> Result<(), String> {
        let op = &self.op_id;
        match ev {
            prisma::RollbackEvent::Starting { migration, index, total } => self.write("migration.down.started", json!({"operation": op, "migration": migration, "index": index, "total": total})).await,
            prisma::RollbackEvent::Ran { migration, duration_ms } => self.write("migration.down.finished", json!({"operation": op, "migration": migration, "ms": duration_ms})).await,
            prisma::RollbackEvent::Failed { migration, error } => self.write("migration.down.failed", json!({"operation": op, "migration": migration, "error": error})).await,
        }
    }
}

async fn table_count(e: &EnvironmentSettings) -> Result<i64, StepError> {
    use sqlx::Connection;
    let url = database_url(e)?;
    let opts = dbops::prisma::connect_options(url.expose_secret())
        .map_err(|err| StepError(err.to_string()))?;
    let mut c = sqlx::PgConnection::connect_with(&opts)
        .await
        .map_err(|_| StepError("database unreachable".into()))?;
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
            .fetch_one(&mut c)
            .await
            .map_err(|err| StepError(err.to_string()))?;
    Ok(n)
}

/// Runs an app command; a non-zero exit is a failure.
pub async fn run_app(argv: &[String], timeout: Duration) -> Result<String, StepError> {
    match dbops::app::run(argv, timeout).await {
        Ok(out) if out.ok() => Ok(if out.tail.is_empty() {
            "exit 0".into()
        } else {
            format!("exit 0: {}", out.tail)
        }),
        Ok(out) => Err(StepError(format!(
            "`{}` exited with {}: {}",
            argv.join(" "),
            out.code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "a signal".into()),
            out.tail
        ))),
        Err(e) => Err(StepError(e.to_string())),
    }
}
