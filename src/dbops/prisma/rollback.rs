//! dualkey's `down` rollback strategy (not a Prisma command).
//!
//! To roll back migration M: take M's applied row (finished, not rolled back) and every applied row
//! that started after it, by `started_at` (the order they were applied), and undo them newest
//! first. Each needs a `down.sql` in its folder, else the rollback is refused. Under Prisma's
//! advisory lock, in ONE transaction, each `down.sql` runs (as one simple-protocol query) and then
//! its row gets `rolled_back_at = now()`; either everything is undone or nothing is. Afterwards
//! the rows read as rolled back, so `prisma migrate status` says up to date (Prisma's quirk) while
//! `deploy` (dualkey's or the real CLI) applies those migrations again.
//!
//! Refusals, before anything runs: no migrations table, M not applied, a `down.sql` missing,
//! failed rows present (the next deploy would be refused with P3009), a `down.sql` that ends the
//! transaction itself (`COMMIT`, `ROLLBACK`, `END`, `ABORT`, `PREPARE TRANSACTION` as a statement,
//! read with `sqlscan`'s lexer), or the plan changed since it was approved (fingerprint).
//!
//! Limits: `down.sql` runs inside a transaction block, so statements that cannot (e.g.
//! `CREATE INDEX CONCURRENTLY`) fail and roll everything back. Procedures and `DO` blocks cannot
//! commit inside a transaction block either. Should a transaction end still slip through the
//! lexer, it is detected right after that `down.sql` ran and reported as an error; what it
//! committed then stays committed.
//!
//! # Lock timeouts
//!
//! [`rollback_down_with`] sets `lock_timeout`/`statement_timeout` for the transaction (the
//! deploy's `[deploy]` options): a `down.sql` that runs out of `lock_timeout` (55P03) or loses a
//! deadlock (40P01) rolls the whole transaction back, so nothing was rolled back, and the rollback
//! is tried again after the backoff, `lock_retries` times.
//!
//! # When dualkey dies (SIGKILL, OOM, node loss) during a `down` rollback
//!
//! Everything (each `down.sql` and each `rolled_back_at`) happens inside one explicit
//! transaction that only dualkey's own `COMMIT` ends, on a connection with
//! `client_connection_check_interval` (see `table`):
//!
//! * killed before the `COMMIT` (while a `down.sql` runs, or between steps): the transaction dies
//!   with the session. PostgreSQL cancels a running statement within about a second (without the
//!   check, supported from PostgreSQL 14, it finishes the statement first, then finds the client
//!   gone and rolls back). Schema and rows are exactly as before: every migration is still
//!   applied. What to do: check `status`, request the rollback again.
//! * killed after the `COMMIT`: the rollback is complete; only dualkey's record of the step is
//!   missing (the operation reads `interrupted`). `status` shows the migrations as rolled back
//!   (pending again).

use super::error::{PrismaError, RollbackRefusal};
use super::migrations::{list_migrations, MigrationsFolder};
use super::observer::ProgressObserver;
use super::outcome::DeployOptions;
use super::table::{render_script_error, run_script, MigrationRow, Target};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Connection;
use std::path::Path;
use std::time::Instant;

/// One migration to undo.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackStep {
    /// The migration.
    pub migration: String,
    /// Id of the applied row that will be marked rolled back.
    pub row_id: String,
    /// When it was applied (row `started_at`).
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Whether the migration has a local folder.
    pub local: bool,
    /// The `down.sql` text (UTF-8-lossy), `None` when missing.
    pub down_sql: Option<String>,
}

impl RollbackStep {
    /// Whether this step can run.
    pub fn has_down_sql(&self) -> bool {
        self.down_sql.is_some()
    }
}

/// The rollback plan: what would be undone, newest first, and what blocks it.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackPlan {
    /// The migration the operator asked to roll back.
    pub target: String,
    /// Migrations to undo, newest first (the target is last).
    pub steps: Vec<RollbackStep>,
    /// Failed rows in the database (they block the rollback).
    pub failed_migrations: Vec<String>,
    /// Fingerprint of the plan (see [`RollbackPlan::fingerprint`]).
    pub fingerprint: String,
}

impl RollbackPlan {
    /// Names to undo, newest first.
    pub fn names(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.migration.as_str()).collect()
    }

    /// Steps without a `down.sql`, newest first.
    pub fn missing_down_sql(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|s| !s.has_down_sql())
            .map(|s| s.migration.as_str())
            .collect()
    }

    /// Why this plan cannot run, if it cannot.
    pub fn refusal(&self) -> Option<RollbackRefusal> {
        if !self.failed_migrations.is_empty() {
            return Some(RollbackRefusal::FailedMigrationsPresent {
                migrations: self.failed_migrations.clone(),
            });
        }
        let missing = self.missing_down_sql();
        if !missing.is_empty() {
            return Some(RollbackRefusal::MissingDownSql {
                migrations: missing.into_iter().map(String::from).collect(),
            });
        }
        let ends: Vec<String> = self
            .steps
            .iter()
            .flat_map(|s| {
                let sql = s.down_sql.as_deref().unwrap_or_default();
                crate::dbops::sqlscan::transaction_ends(sql)
                    .into_iter()
                    .map(move |e| {
                        format!("{}/down.sql line {}: {}", s.migration, e.line, e.statement)
                    })
            })
            .collect();
        if !ends.is_empty() {
            return Some(RollbackRefusal::DownSqlEndsTransaction { statements: ends });
        }
        None
    }

    /// SHA-256 (hex) over the target, each step's row id, name, `started_at` and `down.sql`
    /// checksum, and the failed rows: it changes when anything the approvers saw changes.
    pub fn fingerprint(&self) -> String {
        compute_fingerprint(&self.target, &self.steps, &self.failed_migrations)
    }
}

fn compute_fingerprint(target: &str, steps: &[RollbackStep], failed: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(b"dualkey-rollback-down-v1\n");
    h.update(target.as_bytes());
    h.update(b"\n");
    for s in steps {
        let down = s
            .down_sql
            .as_deref()
            .map(super::checksum::render_checksum)
            .unwrap_or_else(|| "-".into());
        h.update(
            format!(
                "{}\t{}\t{}\t{}\n",
                s.row_id,
                s.migration,
                s.started_at.to_rfc3339(),
                down
            )
            .as_bytes(),
        );
    }
    for f in failed {
        h.update(format!("failed\t{f}\n").as_bytes());
    }
    hex::encode(h.finalize())
}

/// Computes the plan from a folder listing and the rows (`None`: no table). Reads `down.sql` files.
pub fn compute_rollback_plan(
    folder: &MigrationsFolder,
    rows: Option<&[MigrationRow]>,
    migration: &str,
) -> Result<RollbackPlan, PrismaError> {
    let rows = rows.ok_or(RollbackRefusal::NoMigrationsTable)?;
    let applied: Vec<&MigrationRow> = rows.iter().filter(|r| r.is_applied()).collect();
    let idx = applied
        .iter()
        .rposition(|r| r.migration_name == migration)
        .ok_or_else(|| RollbackRefusal::NotApplied {
            migration: migration.to_string(),
        })?;
    let mut steps = Vec::new();
    for row in applied[idx..].iter().rev() {
        let local = folder.get(&row.migration_name);
        let down_sql = match local {
            Some(l) => l.read_down_sql()?,
            None => None,
        };
        steps.push(RollbackStep {
            migration: row.migration_name.clone(),
            row_id: row.id.clone(),
            started_at: row.started_at,
            finished_at: row.finished_at,
            local: local.is_some(),
            down_sql,
        });
    }
    let failed_migrations: Vec<String> = rows
        .iter()
        .filter(|r| r.is_failed())
        .map(|r| r.migration_name.clone())
        .collect();
    let fingerprint = compute_fingerprint(migration, &steps, &failed_migrations);
    Ok(RollbackPlan {
        target: migration.to_string(),
        steps,
        failed_migrations,
        fingerprint,
    })
}

/// Computes the rollback plan against the target database (no lock, no writes), for showing the
/// plan, its SQL and its data-loss warnings before approval. A plan that cannot run is still
/// returned; see [`RollbackPlan::refusal`].
#[tracing::instrument(skip_all, fields(migration = %migration))]
pub async fn plan_rollback(
    database_url: &str,
    migrations_dir: &Path,
    migration: &str,
) -> Result<RollbackPlan, PrismaError> {
    let folder = list_migrations(migrations_dir);
    let mut target = Target::connect(database_url).await?;
    let rows = target.load_rows().await;
    target.close().await;
    compute_rollback_plan(&folder, rows?.as_deref(), migration)
}

/// Progress of a `down` rollback. Events before the commit are provisional: if anything fails
/// later, the whole transaction is rolled back.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RollbackEvent {
    /// About to run this `down.sql`. An observer error here rolls everything back.
    Starting {
        /// The migration.
        migration: String,
        /// 1-based position (newest first).
        index: usize,
        /// Number of steps.
        total: usize,
    },
    /// `down.sql` ran and the row was marked (not yet committed). An observer error rolls back.
    Ran {
        /// The migration.
        migration: String,
        /// Wall time of the script.
        duration_ms: u64,
    },
    /// `down.sql` failed; everything is being rolled back.
    Failed {
        /// The migration.
        migration: String,
        /// The PostgreSQL error.
        error: String,
    },
}

/// A committed rollback.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackOutcome {
    /// The migration the operator asked to roll back.
    pub target: String,
    /// Migrations undone, newest first.
    pub rolled_back: Vec<String>,
    /// Ids of the rows marked rolled back, same order.
    pub row_ids: Vec<String>,
    /// Fingerprint of the plan that ran.
    pub fingerprint: String,
}

/// Runs the `down` rollback of `migration` (see the module docs). With `expected_fingerprint`,
/// stops before the first step when the plan recomputed under the lock differs from it.
#[tracing::instrument(skip_all, fields(migration = %migration))]
pub async fn rollback_down<O>(
    database_url: &str,
    migrations_dir: &Path,
    migration: &str,
    expected_fingerprint: Option<&str>,
    observer: &mut O,
) -> Result<RollbackOutcome, PrismaError>
where
    O: ProgressObserver<RollbackEvent> + ?Sized,
{
    let plain = DeployOptions::default();
    let at = (migration, expected_fingerprint);
    rollback_down_with(database_url, migrations_dir, at, plain, observer).await
}

/// [`rollback_down`] under `options`' `lock_timeout` and `statement_timeout` (set for the
/// rollback's one transaction). A `down.sql` that runs out of `lock_timeout`, or loses a
/// deadlock, rolls the whole transaction back (nothing was rolled back) and is tried again after
/// `options.backoff`, up to `options.lock_retries` more times; then its
/// [`PrismaError::DownScriptFailed`] (SQLSTATE 55P03 or 40P01) is returned.
pub async fn rollback_down_with<O>(
    database_url: &str,
    migrations_dir: &Path,
    (migration, expected_fingerprint): (&str, Option<&str>),
    options: DeployOptions,
    observer: &mut O,
) -> Result<RollbackOutcome, PrismaError>
where
    O: ProgressObserver<RollbackEvent> + ?Sized,
{
    let mut tries = 0u32;
    loop {
        tries += 1;
        let mut target = Target::connect(database_url).await?;
        let at = (migration, expected_fingerprint);
        let result = rollback_locked(&mut target, migrations_dir, at, &options, observer).await;
        target.close().await;
        match result {
            Err(PrismaError::DownScriptFailed {
                ref database_error_code,
                ..
            }) if (database_error_code == "55P03" || database_error_code == "40P01")
                && tries <= options.lock_retries =>
            {
                tokio::time::sleep((options.backoff)(tries)).await;
            }
            other => return other,
        }
    }
}

/// Under the advisory lock: the plan recomputed and checked, then every step in one transaction
/// that only dualkey's `COMMIT` ends.
async fn rollback_locked<O>(
    target: &mut Target,
    migrations_dir: &Path,
    (migration, expected_fingerprint): (&str, Option<&str>),
    options: &DeployOptions,
    observer: &mut O,
) -> Result<RollbackOutcome, PrismaError>
where
    O: ProgressObserver<RollbackEvent> + ?Sized,
{
    target.acquire_lock().await?;
    let folder = list_migrations(migrations_dir);
    let rows = target.load_rows().await?;
    let plan = compute_rollback_plan(&folder, rows.as_deref(), migration)?;
    check_plan(&plan, expected_fingerprint)?;
    let total = plan.steps.len();
    let mut tx = target
        .conn
        .begin()
        .await
        .map_err(PrismaError::db("starting the rollback transaction"))?;
    // The transaction's id: a script that ended the transaction block leaves the session in
    // another one (each later statement gets a new id), which the check after each script
    // sees. (`now() <> statement_timestamp()` cannot tell: under the extended protocol the
    // two differ even in autocommit.)
    let xid: i64 = sqlx::query_scalar("SELECT txid_current()")
        .fetch_one(&mut *tx)
        .await
        .map_err(PrismaError::db("starting the rollback transaction"))?;
    let timeouts = super::apply::timeouts_sql(options, "SET LOCAL");
    if !timeouts.is_empty() {
        run_script(&mut tx, &timeouts)
            .await
            .map_err(PrismaError::db("setting the rollback's timeouts"))?;
    }
    for (i, step) in plan.steps.iter().enumerate() {
        run_down_step(&mut tx, xid, step, i + 1, total, observer).await?;
    }
    tx.commit()
        .await
        .map_err(PrismaError::db("committing the rollback"))?;
    Ok(RollbackOutcome {
        target: plan.target.clone(),
        rolled_back: plan.steps.iter().map(|s| s.migration.clone()).collect(),
        row_ids: plan.steps.iter().map(|s| s.row_id.clone()).collect(),
        fingerprint: plan.fingerprint.clone(),
    })
}

/// The plan's refusal, or [`RollbackRefusal::PlanChanged`] when `expected_fingerprint` is given
/// and differs from the plan's.
fn check_plan(plan: &RollbackPlan, expected_fingerprint: Option<&str>) -> Result<(), PrismaError> {
    if let Some(refusal) = plan.refusal() {
        return Err(refusal.into());
    }
    if let Some(expected) = expected_fingerprint {
        if expected != plan.fingerprint {
            return Err(RollbackRefusal::PlanChanged {
                expected: expected.to_string(),
                actual: plan.fingerprint.clone(),
            }
            .into());
        }
    }
    Ok(())
}

/// One step inside the transaction: `Starting`, its `down.sql`, the check that the script did
/// not end the transaction (`xid`), the row marked rolled back, then `Ran`.
async fn run_down_step<O>(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    xid: i64,
    step: &RollbackStep,
    index: usize,
    total: usize,
    observer: &mut O,
) -> Result<(), PrismaError>
where
    O: ProgressObserver<RollbackEvent> + ?Sized,
{
    let down = step.down_sql.as_deref().unwrap_or_default();
    let starting = RollbackEvent::Starting {
        migration: step.migration.clone(),
        index,
        total,
    };
    observer
        .on_event(&starting)
        .await
        .map_err(PrismaError::Aborted)?;
    let started = Instant::now();
    if let Err(err) = run_script(tx, down).await {
        if !matches!(err, sqlx::Error::Database(_)) {
            return Err(PrismaError::db("running down.sql")(err));
        }
        let (code, text) = render_script_error(down, &err);
        let failed = RollbackEvent::Failed {
            migration: step.migration.clone(),
            error: text.clone(),
        };
        let _ = observer.on_event(&failed).await;
        return Err(PrismaError::DownScriptFailed {
            migration: step.migration.clone(),
            database_error_code: code,
            database_error: text,
        });
    }
    // A script that ran COMMIT/ROLLBACK itself left our transaction block: detect it.
    let now_xid: i64 = sqlx::query_scalar("SELECT txid_current()")
        .fetch_one(&mut **tx)
        .await
        .map_err(PrismaError::db("checking the rollback transaction"))?;
    if now_xid != xid {
        return Err(PrismaError::Engine(format!(
            "down.sql of `{}` ended the rollback transaction itself (COMMIT or ROLLBACK in the script); what it committed stays committed and no row was marked rolled back: check the database before anything else",
            step.migration
        )));
    }
    let updated = sqlx::query(
        r#"UPDATE "_prisma_migrations" SET "rolled_back_at" = $1 WHERE "id" = $2 AND "finished_at" IS NOT NULL AND "rolled_back_at" IS NULL"#,
    )
    .bind(Utc::now())
    .bind(&step.row_id)
    .execute(&mut **tx)
    .await
    .map_err(PrismaError::db("marking the migration rolled back"))?;
    if updated.rows_affected() != 1 {
        return Err(PrismaError::Aborted(format!(
            "the _prisma_migrations row of `{}` changed while its down.sql ran; everything was rolled back",
            step.migration
        )));
    }
    let ran = RollbackEvent::Ran {
        migration: step.migration.clone(),
        duration_ms: started.elapsed().as_millis() as u64,
    };
    observer
        .on_event(&ran)
        .await
        .map_err(PrismaError::Aborted)?;
    Ok(())
}
