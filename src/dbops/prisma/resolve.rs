//! `prisma migrate resolve --applied | --rolled-back <name>`, with the engine's preconditions,
//! order of checks and writes (`mark_migration_applied.rs`, `mark_migration_rolled_back.rs`).
//!
//! `--rolled-back` is only for a *failed* migration and is not a down-migration: it never looks
//! at the folder or the lock file, and it only sets `rolled_back_at` on failed rows.
//!
//! `--applied` records a migration as applied without running it: P3019, lock, P3017, create the
//! table if missing (baseline), P3008, mark the name's failed rows rolled back, insert the row
//! (`logs = ''`, `started_at = finished_at`, `applied_steps_count = 0`, checksum of the file).
//!
//! Deviation, on purpose: the native engine writes each of these as its own autocommit statement;
//! dualkey writes them in ONE transaction (same statements, same rows), committed by its own
//! `COMMIT` after the last one. So a resolve is all or nothing, also when dualkey dies:
//!
//! * killed before the `COMMIT` (while creating the table, marking the failed rows, or inserting
//!   the applied row): the session dies, PostgreSQL rolls the transaction back (a statement still
//!   running is cancelled within `client_connection_check_interval`, see `table`). The table reads
//!   exactly as before: the migration is still failed (or still pending for a baseline). What to
//!   do: request the resolve again.
//! * killed after the `COMMIT`: the resolve is complete; only dualkey's own record of the step is
//!   missing (the operation reads `interrupted`). `status` shows the result.
//!
//! With the native engine's autocommit writes, a death between marking the failed row rolled back
//! and inserting the applied row would leave the migration *pending*, and the next deploy would
//! run its script again on a database that already has it.

use super::checksum::render_checksum;
use super::error::{PrismaError, PrismaUserError};
use super::migrations::list_migrations;
use super::outcome::ResolveAction;
use super::render::{render_resolve, PrismaCliOutput};
use super::table::{run_script, Target};
use chrono::Utc;
use serde::Serialize;
use std::path::Path;

/// What a resolve wrote, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolveOutcome {
    /// The migration.
    pub migration: String,
    /// The action.
    pub action: ResolveAction,
    /// Whether `_prisma_migrations` was created (baseline through `--applied`).
    pub created_table: bool,
    /// Ids of the failed rows now marked rolled back.
    pub rows_marked_rolled_back: Vec<String>,
    /// Id of the row inserted by `--applied`.
    pub inserted_row_id: Option<String>,
}

/// Runs `resolve` against the target database, under Prisma's advisory lock.
pub async fn resolve(
    database_url: &str,
    migrations_dir: &Path,
    migration: &str,
    action: ResolveAction,
) -> Result<ResolveOutcome, PrismaError> {
    match action {
        ResolveAction::Applied => resolve_applied(database_url, migrations_dir, migration).await,
        ResolveAction::RolledBack => resolve_rolled_back(database_url, migration).await,
    }
}

/// `resolve --applied <migration>`.
#[tracing::instrument(skip_all, fields(migration = %migration))]
pub async fn resolve_applied(
    database_url: &str,
    migrations_dir: &Path,
    migration: &str,
) -> Result<ResolveOutcome, PrismaError> {
    let folder = list_migrations(migrations_dir);
    folder.check_provider()?;
    let mut target = Target::connect(database_url).await?;
    let result = async {
        target.acquire_lock().await?;
        let script = folder
            .get(migration)
            .and_then(|m| m.script.clone())
            .ok_or_else(|| PrismaUserError::migration_to_mark_applied_not_found(migration))?;
        // Reads first (a missing table is an error inside a transaction), then every write in
        // one transaction. Creating the table after the P3008 check changes nothing: without a
        // table there is no row to find.
        let (relevant, created_table) = match target.load_rows().await? {
            Some(rows) => (
                rows.into_iter()
                    .filter(|r| r.migration_name == migration)
                    .collect::<Vec<_>>(),
                false,
            ),
            None => (Vec::new(), true),
        };
        if relevant.iter().any(|r| r.finished_at.is_some()) {
            return Err(PrismaUserError::already_applied(migration).into());
        }
        begin(&mut target).await?;
        if created_table {
            target.create_migrations_table().await?;
        }
        let mut marked = Vec::new();
        for row in relevant.iter().filter(|r| r.is_failed()) {
            target.mark_rolled_back_by_id(&row.id).await?;
            marked.push(row.id.clone());
        }
        let id = uuid::Uuid::new_v4().to_string();
        let now = Utc::now();
        sqlx::query(
            r#"INSERT INTO "_prisma_migrations" ("id", "checksum", "logs", "started_at", "finished_at", "migration_name") VALUES ($1, $2, $3, $4, $5, $6)"#,
        )
        .bind(&id)
        .bind(render_checksum(&script))
        .bind("")
        .bind(now)
        .bind(now)
        .bind(migration)
        .execute(&mut target.conn)
        .await
        .map_err(PrismaError::db("recording the migration as applied"))?;
        commit(&mut target).await?;
        Ok(ResolveOutcome {
            migration: migration.to_string(),
            action: ResolveAction::Applied,
            created_table,
            rows_marked_rolled_back: marked,
            inserted_row_id: Some(id),
        })
    }
    .await;
    finish(target).await;
    result
}

/// `resolve --rolled-back <migration>`. Reads neither the folder nor the lock file, like Prisma.
#[tracing::instrument(skip_all, fields(migration = %migration))]
pub async fn resolve_rolled_back(
    database_url: &str,
    migration: &str,
) -> Result<ResolveOutcome, PrismaError> {
    let mut target = Target::connect(database_url).await?;
    let result = async {
        target.acquire_lock().await?;
        let rows = target.load_rows().await?.ok_or_else(|| {
            PrismaError::Engine(
                "Invariant violation: called markMigrationRolledBack on a database without migrations table."
                    .to_string(),
            )
        })?;
        let relevant: Vec<_> = rows
            .into_iter()
            .filter(|r| r.migration_name == migration)
            .collect();
        if relevant.is_empty() {
            return Err(PrismaUserError::cannot_roll_back_unapplied(migration).into());
        }
        if relevant.iter().all(|r| r.finished_at.is_some()) {
            return Err(PrismaUserError::cannot_roll_back_succeeded(migration).into());
        }
        begin(&mut target).await?;
        let mut marked = Vec::new();
        for row in relevant.iter().filter(|r| r.is_failed()) {
            target.mark_rolled_back_by_id(&row.id).await?;
            marked.push(row.id.clone());
        }
        commit(&mut target).await?;
        Ok(ResolveOutcome {
            migration: migration.to_string(),
            action: ResolveAction::RolledBack,
            created_table: false,
            rows_marked_rolled_back: marked,
            inserted_row_id: None,
        })
    }
    .await;
    finish(target).await;
    result
}

/// Opens the resolve's transaction (after the advisory lock, which is per session).
async fn begin(target: &mut Target) -> Result<(), PrismaError> {
    run_script(&mut target.conn, "BEGIN")
        .await
        .map(|_| ())
        .map_err(PrismaError::db("starting the resolve transaction"))
}

/// Commits the resolve's writes: the only way they become visible.
async fn commit(target: &mut Target) -> Result<(), PrismaError> {
    run_script(&mut target.conn, "COMMIT")
        .await
        .map(|_| ())
        .map_err(PrismaError::db("committing the resolve"))
}

/// Closes the connection. After a failure this is also the rollback: a transaction never
/// outlives its session. (No explicit `ROLLBACK`: after a lock timeout the connection still
/// has the abandoned lock request in flight, and a statement sent behind it would wait forever.)
async fn finish(target: Target) {
    target.close().await;
}

/// `prisma migrate resolve` in one call: what the CLI prints and its exit code.
pub async fn resolve_prisma_cli(
    database_url: &str,
    migrations_dir: &Path,
    migration: &str,
    action: ResolveAction,
) -> PrismaCliOutput {
    let result = resolve(database_url, migrations_dir, migration, action).await;
    render_resolve(migration, action, &result)
}
