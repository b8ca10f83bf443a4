//! One try at applying one migration, for `deploy`: Prisma's order (`INSERT`, the script,
//! `finished_at`, each autocommit) or, under timeouts, the row and the script in one transaction;
//! the lock timeout told apart from a failure; the sessions a waiting script waits for. The
//! rules are in `deploy`'s module docs.

use super::error::{PrismaError, PrismaUserError};
use super::outcome::DeployOptions;
use super::table::{render_script_error, run_script, Target};
use crate::dbops::lockreview::review_script;
use crate::dbops::sessions::{blocking_sessions, lock_holders, SessionInfo};
use crate::dbops::sqlscan::transaction_ends;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The connection a deploy applies with, and how.
pub(super) struct Run<'a> {
    pub(super) target: &'a mut Target,
    /// For the second connection that watches a waiting script (see [`run_watched`]).
    pub(super) database_url: &'a str,
    pub(super) options: DeployOptions,
    /// `server_version_num`, for the lock review.
    pub(super) server_version: u32,
}

/// One migration to apply.
pub(super) struct Job<'a> {
    pub(super) name: &'a str,
    pub(super) script: &'a str,
    pub(super) checksum: &'a str,
}

/// How one try ended.
pub(super) enum Attempt {
    /// Applied and recorded as finished.
    Applied,
    /// Failed: the row is failed with `logs` set, as Prisma leaves it.
    Failed(PrismaUserError),
    /// Ran out of `lock_timeout` (or lost a deadlock): nothing written; the sessions it waited
    /// for.
    LockTimeout(Vec<SessionInfo>),
    /// PostgreSQL refused to run the script in a transaction block: nothing written (only
    /// returned by [`attempt_in_transaction`]).
    NotInTransaction,
}

/// One try: Prisma's order exactly ([`attempt_like_prisma`]) without timeouts or for a script
/// that cannot run in a transaction, else the row and the script in one transaction
/// ([`attempt_in_transaction`]).
pub(super) async fn attempt(run: &mut Run<'_>, job: &Job<'_>) -> Result<Attempt, PrismaError> {
    if run.options.is_prisma() {
        return attempt_like_prisma(run, job).await;
    }
    // A script with its own COMMIT/ROLLBACK would end dualkey's transaction half way.
    let transactional = review_script(job.script, run.server_version).transactional
        && transaction_ends(job.script).is_empty();
    if transactional {
        match attempt_in_transaction(run, job).await? {
            // PostgreSQL refused to run it in a transaction block after all (a form the review
            // does not know: `DETACH PARTITION ... CONCURRENTLY`, a `CALL` that commits):
            // nothing was written; run it as Prisma would.
            Attempt::NotInTransaction => attempt_outside_transaction(run, job).await,
            other => Ok(other),
        }
    } else {
        attempt_outside_transaction(run, job).await
    }
}

/// A script that cannot run in a transaction block, in Prisma's order under `statement_timeout`
/// only: its waits are not bounded by `lock_timeout`, because a lock timeout in the later phases
/// of `CREATE INDEX CONCURRENTLY` (which waits for older transactions, never blocking the app)
/// would leave an INVALID index and a failed migration where Prisma would simply have waited.
async fn attempt_outside_transaction(
    run: &mut Run<'_>,
    job: &Job<'_>,
) -> Result<Attempt, PrismaError> {
    let only_statement = DeployOptions {
        lock_timeout: None,
        ..run.options
    };
    let set = format!(
        "SET lock_timeout = 0; {}",
        timeouts_sql(&only_statement, "SET")
    );
    run_script(&mut run.target.conn, &set)
        .await
        .map_err(PrismaError::db("setting the migration's timeouts"))?;
    attempt_like_prisma(run, job).await
}

/// Prisma's order: `INSERT` (autocommit), the script, then `applied_steps_count` and
/// `finished_at`, or `logs` on failure. A lock timeout here is a failure like any other: a
/// script that cannot run in a transaction (`CREATE INDEX CONCURRENTLY`) may have left something
/// behind (an INVALID index), so "nothing applied" cannot be promised.
async fn attempt_like_prisma(run: &mut Run<'_>, job: &Job<'_>) -> Result<Attempt, PrismaError> {
    let id = uuid::Uuid::new_v4().to_string();
    let target = &mut *run.target;
    record_start(target, &id, job.checksum, job.name, Utc::now()).await?;
    match run_script(&mut target.conn, job.script).await {
        Ok(_) => {
            record_finished(target, &id).await?;
            Ok(Attempt::Applied)
        }
        Err(err @ sqlx::Error::Database(_)) => {
            let error = p3018(job, &err);
            record_failure(target, &id, &error.message).await?;
            Ok(Attempt::Failed(error))
        }
        Err(err) => Err(PrismaError::db("running a migration script")(err)),
    }
}

/// `BEGIN`, `SET LOCAL` the timeouts, the `INSERT`, the script, `applied_steps_count`,
/// `finished_at`, `COMMIT`: the row and the script commit together or not at all. On a lock
/// timeout, `ROLLBACK`: nothing written. On another error, `ROLLBACK`, then the row Prisma leaves
/// for a failed script (same `started_at`, `logs` = P3018, autocommit as Prisma writes it).
async fn attempt_in_transaction(run: &mut Run<'_>, job: &Job<'_>) -> Result<Attempt, PrismaError> {
    let id = uuid::Uuid::new_v4().to_string();
    let started_at = Utc::now();
    let url = run.database_url;
    let target = &mut *run.target;
    run_script(&mut target.conn, "BEGIN")
        .await
        .map_err(PrismaError::db("starting the migration's transaction"))?;
    let mut holders = Vec::new();
    let result: Result<(), (bool, sqlx::Error)> = async {
        let set = timeouts_sql(&run.options, "SET LOCAL");
        let bookkeeping = |e| (false, e);
        run_script(&mut target.conn, &set)
            .await
            .map_err(bookkeeping)?;
        insert_row(&mut target.conn, &id, job.checksum, job.name, started_at)
            .await
            .map_err(bookkeeping)?;
        let (ran, seen) = run_watched(&mut target.conn, job.script, url).await;
        holders = seen;
        ran.map_err(|e| (true, e))?;
        finish_row(&mut target.conn, &id)
            .await
            .map_err(bookkeeping)?;
        // A deferred constraint fails here: the script's failure, as in Prisma's implicit COMMIT.
        run_script(&mut target.conn, "COMMIT")
            .await
            .map_err(|e| (true, e))?;
        Ok(())
    }
    .await;
    let Err((in_script, err)) = result else {
        return Ok(Attempt::Applied);
    };
    run_script(&mut target.conn, "ROLLBACK")
        .await
        .map_err(PrismaError::db("rolling back the migration's transaction"))?;
    if in_script && refused_in_transaction(&err) {
        return Ok(Attempt::NotInTransaction);
    }
    if is_lock_timeout(&err) {
        if holders.is_empty() {
            // Not seen while it waited (a very short lock_timeout): whoever still holds a lock
            // on the tables the review names.
            holders = holders_of_tables(target, job.script, run.server_version).await;
        }
        return Ok(Attempt::LockTimeout(holders));
    }
    if !in_script || !matches!(err, sqlx::Error::Database(_)) {
        return Err(PrismaError::db("applying a migration")(err));
    }
    let error = p3018(job, &err);
    record_start(target, &id, job.checksum, job.name, started_at).await?;
    record_failure(target, &id, &error.message).await?;
    Ok(Attempt::Failed(error))
}

/// The sessions holding a lock on a table the lock review finds in `script` (none when it
/// names none, or on any error: this only enriches a message).
async fn holders_of_tables(
    target: &mut Target,
    script: &str,
    server_version: u32,
) -> Vec<SessionInfo> {
    let mut tables: Vec<String> = review_script(script, server_version)
        .statements
        .iter()
        .flat_map(|s| s.tables.iter().map(|t| t.regclass()))
        .collect();
    tables.sort();
    tables.dedup();
    if tables.is_empty() {
        return Vec::new();
    }
    lock_holders(&mut target.conn, &tables)
        .await
        .unwrap_or_default()
}

/// P3018 for a script's database error.
fn p3018(job: &Job<'_>, err: &sqlx::Error) -> PrismaUserError {
    let (code, text) = render_script_error(job.script, err);
    PrismaUserError::apply_migration_failed(job.name, &code, &text)
}

/// SQLSTATE 55P03 `lock_not_available` (`lock_timeout` ran out) or 40P01 `deadlock_detected`
/// (PostgreSQL chose the migration as the victim): either way the transaction rolled back whole,
/// and a later try may get its locks.
fn is_lock_timeout(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "55P03" || c == "40P01")
}

/// SQLSTATE 25001 `active_sql_transaction` ("cannot run inside a transaction block") or 2D000
/// `invalid_transaction_termination` (a procedure's `COMMIT`): the script cannot run inside
/// dualkey's transaction.
fn refused_in_transaction(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "25001" || c == "2D000")
}

/// `SET [LOCAL] lock_timeout = '…ms'; SET [LOCAL] statement_timeout = '…ms'`, each when set.
pub(super) fn timeouts_sql(options: &DeployOptions, set: &str) -> String {
    let mut out = String::new();
    for (name, value) in [
        ("lock_timeout", options.lock_timeout),
        ("statement_timeout", options.statement_timeout),
    ] {
        if let Some(d) = value {
            out.push_str(&format!("{set} {name} = '{}ms'; ", d.as_millis()));
        }
    }
    out
}

/// How soon, and how often, the second connection asks what a running script waits for.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// Runs `script` on `conn`; while it runs, a second connection (opened after [`WATCH_EVERY`],
/// so a quick script never opens it) records the sessions it waits for
/// ([`blocking_sessions`]). Returns the script's result and the last sessions seen blocking it.
async fn run_watched(
    conn: &mut sqlx::PgConnection,
    script: &str,
    database_url: &str,
) -> (Result<(), sqlx::Error>, Vec<SessionInfo>) {
    let Ok(pid) = sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
    else {
        return (run_script(conn, script).await.map(|_| ()), Vec::new());
    };
    let mut seen = Vec::new();
    let watch = async {
        tokio::time::sleep(WATCH_EVERY).await;
        let Ok(mut watcher) = Target::connect(database_url).await else {
            return std::future::pending::<()>().await;
        };
        loop {
            if let Ok(now) = blocking_sessions(&mut watcher.conn, pid).await {
                if !now.is_empty() {
                    seen = now;
                }
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
    };
    let result = tokio::select! {
        r = run_script(conn, script) => r.map(|_| ()),
        () = watch => Ok(()),
    };
    (result, seen)
}

/// `INSERT (id, checksum, started_at, migration_name)`, before the script runs.
async fn record_start(
    target: &mut Target,
    id: &str,
    checksum: &str,
    name: &str,
    started_at: DateTime<Utc>,
) -> Result<(), PrismaError> {
    insert_row(&mut target.conn, id, checksum, name, started_at)
        .await
        .map_err(PrismaError::db("recording the migration start"))
}

/// Prisma's `INSERT` of a migration's row.
async fn insert_row(
    conn: &mut sqlx::PgConnection,
    id: &str,
    checksum: &str,
    name: &str,
    started_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"INSERT INTO "_prisma_migrations" ("id", "checksum", "started_at", "migration_name") VALUES ($1, $2, $3, $4)"#,
    )
    .bind(id)
    .bind(checksum)
    .bind(started_at)
    .bind(name)
    .execute(conn)
    .await
    .map(|_| ())
}

/// `applied_steps_count + 1`, then `finished_at`, each its own statement.
async fn record_finished(target: &mut Target, id: &str) -> Result<(), PrismaError> {
    finish_row(&mut target.conn, id)
        .await
        .map_err(PrismaError::db("recording the migration as finished"))
}

/// Prisma's two `UPDATE`s of a finished migration's row.
async fn finish_row(conn: &mut sqlx::PgConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(r#"UPDATE "_prisma_migrations" SET "applied_steps_count" = ("applied_steps_count" + $1) WHERE "id" = $2"#)
        .bind(1i32)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(r#"UPDATE "_prisma_migrations" SET "finished_at" = $1 WHERE "id" = $2"#)
        .bind(Utc::now())
        .bind(id)
        .execute(conn)
        .await
        .map(|_| ())
}

/// `UPDATE … SET logs = $1`, after rolling back an explicit transaction the script left aborted.
async fn record_failure(target: &mut Target, id: &str, logs: &str) -> Result<(), PrismaError> {
    async fn update(
        conn: &mut sqlx::PgConnection,
        id: &str,
        logs: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(r#"UPDATE "_prisma_migrations" SET "logs" = $1 WHERE "id" = $2"#)
            .bind(logs)
            .bind(id)
            .execute(conn)
            .await
            .map(|_| ())
    }
    match update(&mut target.conn, id, logs).await {
        Ok(()) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("25P02") => {
            run_script(&mut target.conn, "ROLLBACK")
                .await
                .map_err(PrismaError::db(
                    "rolling back the failed script's transaction",
                ))?;
            update(&mut target.conn, id, logs)
                .await
                .map_err(PrismaError::db("recording the migration failure"))
        }
        Err(e) => Err(PrismaError::db("recording the migration failure")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_set_only_when_configured() {
        let none = DeployOptions::default();
        assert_eq!(timeouts_sql(&none, "SET LOCAL"), "");
        let both = DeployOptions {
            lock_timeout: Some(Duration::from_secs(5)),
            statement_timeout: Some(Duration::from_secs(600)),
            ..DeployOptions::default()
        };
        assert_eq!(
            timeouts_sql(&both, "SET LOCAL"),
            "SET LOCAL lock_timeout = '5000ms'; SET LOCAL statement_timeout = '600000ms'; "
        );
        assert!(!both.is_prisma() && none.is_prisma());
    }
}
