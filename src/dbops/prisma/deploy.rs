//! `prisma migrate deploy`, with the engine's order of checks and its exact writes
//! (`apply_migrations.rs`, `sql_migration_persistence.rs`):
//!
//! 1. P3019 (lock-file provider);
//! 2. advisory lock 72707369 (10 s, P1002);
//! 3. initialize: if `_prisma_migrations` is missing, P3005 when the schema has other tables
//!    (PostGIS tables ignored), else `CREATE TABLE`;
//! 4. load rows; P3009 when any row is failed (one line per failed row, chrono `Display`
//!    timestamps, logs never appended because Prisma's read discards them);
//! 5. pending = local migrations with **no row that is not rolled back**, in folder order (so a
//!    rolled-back migration is applied again; checksums, ordering and database-only rows are not
//!    checked);
//! 6. per migration: P3015 if its script is unreadable; `INSERT (id, checksum, started_at,
//!    migration_name)`; the script as ONE simple-protocol query (one implicit transaction, so a
//!    failing script leaves nothing behind); on success `applied_steps_count + 1` then
//!    `finished_at`; on failure `logs` = the P3018 text and stop. Each bookkeeping write is its own
//!    autocommit statement.
//!
//! Deviation, on purpose: if a script leaves the session inside an aborted explicit transaction
//! (`BEGIN; …` then an error), dualkey issues `ROLLBACK` so the failure can still be recorded;
//! the native engine would fail to write `logs`.
//!
//! # Lock timeouts: a migration is applied whole or not at all
//!
//! [`deploy`] (and [`deploy_prisma_cli`]) do exactly the above. [`deploy_pinned`] with
//! [`DeployOptions`] that set a timeout (dualkey's deploy step: `[deploy] lock_timeout`,
//! `statement_timeout`, `lock_retries`) applies each migration whose script can run in a
//! transaction (the lock review says so and it has no `COMMIT`/`ROLLBACK` of its own) as ONE
//! transaction: `BEGIN; SET LOCAL lock_timeout …; SET LOCAL statement_timeout …; INSERT` the row;
//! the script (one simple query); `applied_steps_count + 1`; `finished_at`; `COMMIT`. The row
//! and the script commit together or not at all; the committed row is the one Prisma writes.
//!
//! * Lock timeout (SQLSTATE 55P03), or a deadlock PostgreSQL resolved against the migration
//!   (40P01): `ROLLBACK`. Nothing was written, not even the row. A
//!   [`DeployEvent::LockWait`] names the sessions it waited for (a second connection asks
//!   `pg_blocking_pids` of the waiting backend while the script runs), then after
//!   [`DeployOptions::backoff`] it is tried again, up to `lock_retries` more times. After the
//!   last try the deploy stops with [`DeployStopReason::LockTimeout`]: the migration is still
//!   pending, there is nothing to resolve.
//! * PostgreSQL refuses the script inside a transaction block after all (25001, 2D000: a form
//!   the review does not know, such as `DETACH PARTITION ... CONCURRENTLY` or a procedure that
//!   commits): `ROLLBACK` (nothing written), then the script runs as in the next point.
//! * Any other error (a `statement_timeout` included): `ROLLBACK`, then the row Prisma leaves
//!   for a failed script (its `started_at`, `logs` = P3018, written autocommit), so the next
//!   deploy stops with P3009 as today.
//! * A script that cannot run in a transaction (`CREATE INDEX CONCURRENTLY`, its own
//!   `COMMIT`): Prisma's order above, under `statement_timeout` only, with `lock_timeout` off.
//!   Such a script may leave something behind when cut short (a lock timeout in the later
//!   phases of `CREATE INDEX CONCURRENTLY`, which waits for older transactions without blocking
//!   the app, leaves an INVALID index), so it waits for its locks as Prisma would; an error is a
//!   failure like any other (P3018 row, no retry).

//! # Byte for byte: what was approved is what runs
//!
//! The folder is read once, before the lock is taken ([`list_migrations`]): each `migration.sql`
//! is held in memory, and that one in-memory text is both what [`render_checksum`] hashes (the
//! checksum recorded in `_prisma_migrations` and reported in [`DeployEvent`]s) and what is sent to
//! PostgreSQL. The file is never read again, so an edit after the read cannot slip in between
//! the hash and the run. (A script with invalid UTF-8 is decoded with U+FFFD like Prisma does;
//! the decoded text is what is hashed and run.)
//!
//! [`deploy_pinned`] takes the (name, checksum) list the approvers saw. Under the lock, after
//! Prisma's preconditions and before its first write (not even `CREATE TABLE _prisma_migrations`
//! when it is missing), it compares that list with the pending migrations and the checksums of
//! the scripts it holds: any difference (a script edited, a migration added, gone or reordered)
//! is [`PrismaError::PlanChanged`], with both lists, and nothing is written.
//!
//! # When dualkey dies (SIGKILL, OOM, node loss) during a deploy
//!
//! The connection sets `client_connection_check_interval` (see `table`), so a statement still
//! running for a dead client is cancelled within about a second instead of running to the end and
//! committing. Point by point, for the migration being applied:
//!
//! * with [`DeployOptions`] that set a timeout (dualkey's deploy step), a script applied in one
//!   transaction with its row: the transaction dies with the connection, whatever point it had
//!   reached before `COMMIT`. No row, no change: the migration is still pending, nothing to
//!   resolve; deploy again. After `COMMIT` it is applied.
//! * otherwise (Prisma's order: [`deploy`], or a script that cannot run in a transaction):
//!   * before its `INSERT`: nothing of it was written; it is still pending.
//!   * after the `INSERT`, while the script runs: PostgreSQL cancels the script within ~1 s of
//!     the death and rolls its implicit transaction back. The row stays as Prisma leaves a killed
//!     `prisma migrate deploy`: started, not finished, `logs` NULL, so `status` reports the
//!     migration failed and the next deploy stops with P3009. The schema is exactly as before
//!     the script. What to do: `resolve <name> rolled-back`, then deploy again.
//!   * after the script committed and before `finished_at` was written (one round trip): the
//!     script's changes are in, the row still reads failed. What to do: look at the schema; if
//!     the migration's changes are there, `resolve <name> applied`, else
//!     `resolve <name> rolled-back` and deploy again.
//!   * after `finished_at`: applied; the migrations after it are pending.
//!
//! A script that commits by itself (`BEGIN; …; COMMIT;` pieces) commits those pieces whatever
//! happens later; only the piece running at the death is rolled back.

use super::apply::{attempt, Attempt, Job, Run};
use super::checksum::render_checksum;
use super::error::{DeployPlanChanged, PrismaError, PrismaUserError};
use super::migrations::{list_migrations, LocalMigration, MigrationsFolder};
use super::observer::ProgressObserver;
use super::outcome::{DeployOptions, DeployOutcome, DeployStop, DeployStopReason};
use super::render::{render_deploy, PrismaCliOutput};
use super::table::{MigrationRow, Target};
use crate::dbops::sessions::SessionInfo;
use serde::Serialize;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

/// Progress of a deploy, one migration at a time.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DeployEvent {
    /// About to apply: nothing has been written for this migration yet. An observer error here
    /// stops the deploy before this migration.
    Starting {
        /// The migration.
        migration: String,
        /// 1-based position among the pending migrations.
        index: usize,
        /// Number of pending migrations.
        total: usize,
        /// Checksum that will be recorded.
        checksum: String,
    },
    /// Applied and recorded as finished. An observer error stops before the next migration.
    Applied {
        /// The migration.
        migration: String,
        /// Wall time of the script.
        duration_ms: u64,
        /// Checksum of the script that ran (the one recorded in `_prisma_migrations`).
        checksum: String,
    },
    /// A try ran out of `lock_timeout`: rolled back, nothing written; the next try follows after
    /// `retry_in_ms`. An observer error here stops the deploy with nothing of this migration
    /// applied.
    LockWait {
        /// The migration.
        migration: String,
        /// The try that timed out (1-based).
        attempt: u32,
        /// How many tries there are in all.
        tries: u32,
        /// The pause before the next try.
        retry_in_ms: u64,
        /// The sessions it waited for.
        holders: Vec<SessionInfo>,
    },
    /// The script failed; its row is left failed with `logs` set, and the deploy stops.
    Failed {
        /// The migration.
        migration: String,
        /// The P3018 (or P3015) error.
        error: PrismaUserError,
        /// Checksum of the script that failed; `None` when it could not be read (P3015).
        checksum: Option<String>,
    },
}

/// Applies the pending migrations exactly as `prisma migrate deploy` would.
///
/// `Err` means nothing was applied (P3019, P1002, P3005, P3009, cannot connect) or a fault cut
/// the run short (then the events already reported what was done). Script failures are in
/// [`DeployOutcome::stopped`].
pub async fn deploy<O>(
    database_url: &str,
    migrations_dir: &Path,
    observer: &mut O,
) -> Result<DeployOutcome, PrismaError>
where
    O: ProgressObserver<DeployEvent> + ?Sized,
{
    let prisma = DeployOptions::default();
    deploy_inner(database_url, migrations_dir, None, prisma, observer).await
}

/// Like [`deploy`], but applies only what was approved: `approved` is the list of pending
/// migrations the approvers saw, in order, each with the checksum of its `migration.sql`
/// ([`render_checksum`]). When the pending migrations or the checksums of the scripts this deploy
/// read differ from it, returns [`PrismaError::PlanChanged`] before writing anything.
///
/// `options` set the timeouts and retries (see the module docs); [`DeployOptions::default`] is
/// Prisma's behaviour exactly.
pub async fn deploy_pinned<O>(
    database_url: &str,
    migrations_dir: &Path,
    approved: &[(String, String)],
    options: DeployOptions,
    observer: &mut O,
) -> Result<DeployOutcome, PrismaError>
where
    O: ProgressObserver<DeployEvent> + ?Sized,
{
    deploy_inner(
        database_url,
        migrations_dir,
        Some(approved),
        options,
        observer,
    )
    .await
}

#[tracing::instrument(skip_all, fields(pinned = approved.is_some()))]
async fn deploy_inner<O>(
    database_url: &str,
    migrations_dir: &Path,
    approved: Option<&[(String, String)]>,
    options: DeployOptions,
    observer: &mut O,
) -> Result<DeployOutcome, PrismaError>
where
    O: ProgressObserver<DeployEvent> + ?Sized,
{
    // The only read of the folder: the scripts hashed below are the scripts run below.
    let folder = list_migrations(migrations_dir);
    folder.check_provider()?;
    let mut target = Target::connect(database_url).await?;
    let server_version = target.conn.server_version_num().unwrap_or(0);
    let mut run = Run {
        target: &mut target,
        database_url,
        options,
        server_version,
    };
    let result = deploy_locked(&mut run, &folder, approved, observer).await;
    target.close().await;
    result
}

/// Under the advisory lock: Prisma's preconditions, the approved list, the table if missing, then
/// each pending migration in folder order.
async fn deploy_locked<O>(
    run: &mut Run<'_>,
    folder: &MigrationsFolder,
    approved: Option<&[(String, String)]>,
    observer: &mut O,
) -> Result<DeployOutcome, PrismaError>
where
    O: ProgressObserver<DeployEvent> + ?Sized,
{
    let target = &mut *run.target;
    target.acquire_lock().await?;
    // Prisma's `initialize`, with its write (creating the table) deferred until the approved
    // list has been checked: a refused deploy writes nothing at all.
    let create_table = target.check_initialize_for_deploy().await?;
    let rows = if create_table {
        Vec::new()
    } else {
        target.load_rows().await?.unwrap_or_default()
    };
    check_no_failed_rows(&rows)?;
    let pending = pending_migrations(folder, &rows);
    if let Some(approved) = approved {
        check_approved(&pending, approved)?;
    }
    if run.options.refuse_under_dump && !pending.is_empty() {
        let dumps = crate::dbops::sessions::dump_sessions(&mut target.conn)
            .await
            .map_err(PrismaError::db("looking for a running pg_dump"))?;
        if !dumps.is_empty() {
            return Err(PrismaError::DumpRunning(dumps));
        }
    }
    if create_table {
        target.create_migrations_table().await?;
    }
    let total = pending.len();
    let next_names: Vec<String> = pending.iter().map(|m| m.name.clone()).collect();
    let mut outcome = DeployOutcome {
        migrations_found: folder.migrations.len(),
        applied: Vec::new(),
        stopped: None,
    };
    for (i, migration) in pending.into_iter().enumerate() {
        let at = Position {
            index: i + 1,
            total,
            next: next_names.get(i + 1),
        };
        if apply_migration(run, migration, at, &mut outcome, observer)
            .await?
            .is_break()
        {
            return Ok(outcome);
        }
    }
    Ok(outcome)
}

/// P3009 when any row is failed, one line per failed row.
fn check_no_failed_rows(rows: &[MigrationRow]) -> Result<(), PrismaError> {
    let failed: Vec<_> = rows.iter().filter(|r| r.is_failed()).collect();
    if !failed.is_empty() {
        let details: String = failed
            .iter()
            .map(|r| {
                format!(
                    "The `{}` migration started at {} failed\n",
                    r.migration_name, r.started_at
                )
            })
            .collect();
        return Err(PrismaUserError::found_failed_migrations(&details).into());
    }
    Ok(())
}

/// The local migrations with no row that is not rolled back, in folder order.
fn pending_migrations<'a>(
    folder: &'a MigrationsFolder,
    rows: &[MigrationRow],
) -> Vec<&'a LocalMigration> {
    folder
        .migrations
        .iter()
        .filter(|m| {
            !rows
                .iter()
                .any(|r| r.rolled_back_at.is_none() && r.migration_name == m.name)
        })
        .collect()
}

/// [`PrismaError::PlanChanged`] unless the pending migrations and their scripts' checksums are
/// exactly the approved ones.
fn check_approved(
    pending: &[&LocalMigration],
    approved: &[(String, String)],
) -> Result<(), PrismaError> {
    let found: Vec<(String, String)> = pending
        .iter()
        .map(|m| {
            let sum = m.script.as_deref().map(render_checksum).unwrap_or_default();
            (m.name.clone(), sum)
        })
        .collect();
    if found != approved {
        return Err(DeployPlanChanged {
            approved: approved.to_vec(),
            found,
        }
        .into());
    }
    Ok(())
}

/// Where a migration stands among the pending ones.
struct Position<'a> {
    /// 1-based.
    index: usize,
    /// Number of pending migrations.
    total: usize,
    /// The next pending migration, if any.
    next: Option<&'a String>,
}

/// Applies one migration: P3015, the `Starting` event, then the tries ([`attempt`]): `Applied`,
/// or the failed row and `Failed`, or, when every try ran out of `lock_timeout`,
/// [`DeployStopReason::LockTimeout`] with nothing written. `Break` when the deploy stops here
/// (`outcome.stopped` is set).
async fn apply_migration<O>(
    run: &mut Run<'_>,
    migration: &LocalMigration,
    at: Position<'_>,
    outcome: &mut DeployOutcome,
    observer: &mut O,
) -> Result<ControlFlow<()>, PrismaError>
where
    O: ProgressObserver<DeployEvent> + ?Sized,
{
    let stop = |reason| DeployStop {
        migration: migration.name.clone(),
        reason,
    };
    let script = match migration.script_or_p3015() {
        Ok(s) => s,
        Err(error) => {
            let event = DeployEvent::Failed {
                migration: migration.name.clone(),
                error: error.clone(),
                checksum: None,
            };
            let _ = observer.on_event(&event).await;
            outcome.stopped = Some(stop(DeployStopReason::ScriptUnreadable { error }));
            return Ok(ControlFlow::Break(()));
        }
    };
    // `script` is the in-memory text read once above: hashed here, run below.
    let checksum = render_checksum(script);
    let starting = DeployEvent::Starting {
        migration: migration.name.clone(),
        index: at.index,
        total: at.total,
        checksum: checksum.clone(),
    };
    if let Err(message) = observer.on_event(&starting).await {
        outcome.stopped = Some(stop(DeployStopReason::Observer { message }));
        return Ok(ControlFlow::Break(()));
    }
    let started = Instant::now();
    let job = Job {
        name: &migration.name,
        script,
        checksum: &checksum,
    };
    if let Err(reason) = apply_with_retries(run, &job, observer).await? {
        outcome.stopped = Some(stop(reason));
        return Ok(ControlFlow::Break(()));
    }
    outcome.applied.push(migration.name.clone());
    let event = DeployEvent::Applied {
        migration: migration.name.clone(),
        duration_ms: started.elapsed().as_millis() as u64,
        checksum: checksum.clone(),
    };
    if let Err(message) = observer.on_event(&event).await {
        if let Some(next) = at.next {
            outcome.stopped = Some(DeployStop {
                migration: next.clone(),
                reason: DeployStopReason::Observer { message },
            });
            return Ok(ControlFlow::Break(()));
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// The tries of one migration ([`attempt`]): `Ok(())` when applied, else why it stopped (a
/// failure, already reported as `Failed`; every try out of `lock_timeout`; the observer refusing
/// a `LockWait`).
async fn apply_with_retries<O>(
    run: &mut Run<'_>,
    job: &Job<'_>,
    observer: &mut O,
) -> Result<Result<(), DeployStopReason>, PrismaError>
where
    O: ProgressObserver<DeployEvent> + ?Sized,
{
    let mut tries = 0u32;
    loop {
        tries += 1;
        let holders = match attempt(run, job).await? {
            Attempt::Applied => return Ok(Ok(())),
            Attempt::Failed(error) => {
                let event = DeployEvent::Failed {
                    migration: job.name.to_string(),
                    error: error.clone(),
                    checksum: Some(job.checksum.to_string()),
                };
                let _ = observer.on_event(&event).await;
                return Ok(Err(DeployStopReason::ScriptFailed { error }));
            }
            Attempt::LockTimeout(holders) => holders,
            // `attempt` reruns such a script outside a transaction itself; should one come
            // back, nothing was written, so trying again is safe.
            Attempt::NotInTransaction => Vec::new(),
        };
        if tries > run.options.lock_retries {
            let lock_timeout = run.options.lock_timeout.unwrap_or_default();
            return Ok(Err(DeployStopReason::LockTimeout {
                tries,
                lock_timeout_ms: lock_timeout.as_millis() as u64,
                holders,
            }));
        }
        let pause = (run.options.backoff)(tries);
        let event = DeployEvent::LockWait {
            migration: job.name.to_string(),
            attempt: tries,
            tries: run.options.lock_retries + 1,
            retry_in_ms: pause.as_millis() as u64,
            holders,
        };
        if let Err(message) = observer.on_event(&event).await {
            return Ok(Err(DeployStopReason::Observer { message }));
        }
        tokio::time::sleep(pause).await;
    }
}

/// `prisma migrate deploy` in one call: deploys (without an observer) and renders what the CLI
/// prints, with its exit code.
pub async fn deploy_prisma_cli(database_url: &str, migrations_dir: &Path) -> PrismaCliOutput {
    let found = list_migrations(migrations_dir).migrations.len();
    let result = deploy(
        database_url,
        migrations_dir,
        &mut super::observer::NoProgress,
    )
    .await;
    render_deploy(found, &result)
}
