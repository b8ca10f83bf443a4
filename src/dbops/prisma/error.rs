//! Errors of the native Prisma Migrate: Prisma's own coded errors (`P30xx`, `P1002`) with their
//! exact texts, dualkey's rollback refusals, and faults (connection, SQL, files).
//!
//! Security: no variant ever carries the target database URL. Connection errors keep only the
//! driver's message (which names neither the password nor the URL); the Prisma texts that would
//! name host and port (`P1002`) are rendered without them.

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// The Prisma error codes this module can raise, as printed by the Prisma CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PrismaCode {
    /// The database server was reached but timed out (here: the advisory lock wait).
    P1002,
    /// The database schema is not empty (deploy without `_prisma_migrations`).
    P3005,
    /// The migration is already recorded as applied (`resolve --applied`).
    P3008,
    /// Failed migrations found in the target database (deploy refuses).
    P3009,
    /// The migration was never applied (`resolve --rolled-back`).
    P3011,
    /// The migration is not in a failed state (`resolve --rolled-back`).
    P3012,
    /// A migration folder has no readable `migration.sql`.
    P3015,
    /// The migration to mark applied does not exist locally (`resolve --applied`).
    P3017,
    /// A migration script failed to apply (deploy).
    P3018,
    /// `migration_lock.toml` names another provider.
    P3019,
}

impl PrismaCode {
    /// The code as Prisma prints it, e.g. `"P3009"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PrismaCode::P1002 => "P1002",
            PrismaCode::P3005 => "P3005",
            PrismaCode::P3008 => "P3008",
            PrismaCode::P3009 => "P3009",
            PrismaCode::P3011 => "P3011",
            PrismaCode::P3012 => "P3012",
            PrismaCode::P3015 => "P3015",
            PrismaCode::P3017 => "P3017",
            PrismaCode::P3018 => "P3018",
            PrismaCode::P3019 => "P3019",
        }
    }
}

impl fmt::Display for PrismaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Prisma user-facing error: the code and Prisma's exact message text
/// (from `user_facing_errors::schema_engine`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct PrismaUserError {
    /// The Prisma error code.
    pub code: PrismaCode,
    /// The message, byte for byte as Prisma words it.
    pub message: String,
}

const RESOLVE_LINK: &str = "https://pris.ly/d/migrate-resolve";

impl PrismaUserError {
    /// What the Prisma CLI writes on stderr for this error: `Error: <code>\n\n<message>\n`, plus
    /// the newline `console.error` appends (so the text ends with a blank line, as in the goldens).
    pub fn cli_stderr(&self) -> String {
        format!("Error: {}\n\n{}\n\n", self.code, self.message)
    }

    /// P1002 for the advisory-lock timeout. Prisma's text names the server's host and port; dualkey
    /// leaves them out so that nothing from the database URL reaches a message.
    pub fn advisory_lock_timeout() -> Self {
        PrismaUserError {
            code: PrismaCode::P1002,
            message: "The database server was reached but timed out. Please try again.\n\n\
                      Context: Timed out trying to acquire a postgres advisory lock (SELECT pg_advisory_lock(72707369)). \
                      Elapsed: 10000ms. See https://pris.ly/d/migrate-advisory-locking for details."
                .to_string(),
        }
    }

    /// P3005: `_prisma_migrations` is missing and the schema has other tables.
    pub fn schema_not_empty() -> Self {
        PrismaUserError {
            code: PrismaCode::P3005,
            message: "The database schema is not empty. Read more about how to baseline an existing production database: https://pris.ly/d/migrate-baseline".to_string(),
        }
    }

    /// P3008: `resolve --applied` on a migration that has a finished row.
    pub fn already_applied(name: &str) -> Self {
        PrismaUserError {
            code: PrismaCode::P3008,
            message: format!(
                "The migration `{name}` is already recorded as applied in the database."
            ),
        }
    }

    /// P3009: deploy refuses because failed rows exist; `details` has one line per failed row,
    /// each ending in `\n`.
    pub fn found_failed_migrations(details: &str) -> Self {
        PrismaUserError {
            code: PrismaCode::P3009,
            message: format!(
                "migrate found failed migrations in the target database, new migrations will not be applied. Read more about how to resolve migration issues in a production database: {RESOLVE_LINK}\n{details}"
            ),
        }
    }

    /// P3011: `resolve --rolled-back` on a name with no row.
    pub fn cannot_roll_back_unapplied(name: &str) -> Self {
        PrismaUserError {
            code: PrismaCode::P3011,
            message: format!(
                "Migration `{name}` cannot be rolled back because it was never applied to the database. Hint: did you pass in the whole migration name? (example: \"20201207184859_initial_migration\")"
            ),
        }
    }

    /// P3012: `resolve --rolled-back` when every row of the name is finished.
    pub fn cannot_roll_back_succeeded(name: &str) -> Self {
        PrismaUserError {
            code: PrismaCode::P3012,
            message: format!(
                "Migration `{name}` cannot be rolled back because it is not in a failed state."
            ),
        }
    }

    /// P3015: a migration folder without a readable `migration.sql`. `path` is what Prisma prints
    /// (the file name relative to the migration folder, `migration.sql`).
    pub fn migration_file_not_found(path: &str) -> Self {
        PrismaUserError {
            code: PrismaCode::P3015,
            message: format!(
                "Could not find the migration file at {path}. Please delete the directory or restore the migration file."
            ),
        }
    }

    /// P3017: `resolve --applied` on a name that is not a local migration with a readable script.
    pub fn migration_to_mark_applied_not_found(name: &str) -> Self {
        PrismaUserError {
            code: PrismaCode::P3017,
            message: format!(
                "The migration {name} could not be found. Please make sure that the migration exists, and that you included the whole name of the directory. (example: \"20201207184859_initial_migration\")"
            ),
        }
    }

    /// P3018: a migration script failed; `database_error` is rendered like the native engine's.
    pub fn apply_migration_failed(
        name: &str,
        database_error_code: &str,
        database_error: &str,
    ) -> Self {
        PrismaUserError {
            code: PrismaCode::P3018,
            message: format!(
                "A migration failed to apply. New migrations cannot be applied before the error is recovered from. Read more about how to resolve migration issues in a production database: {RESOLVE_LINK}\n\nMigration name: {name}\n\nDatabase error code: {database_error_code}\n\nDatabase error:\n{database_error}\n"
            ),
        }
    }

    /// P3019: `migration_lock.toml` names `lock_provider`, the schema says `schema_provider`.
    pub fn provider_switched(schema_provider: &str, lock_provider: &str) -> Self {
        PrismaUserError {
            code: PrismaCode::P3019,
            message: format!(
                "The datasource provider `{schema_provider}` specified in your schema does not match the one specified in the migration_lock.toml, `{lock_provider}`. Please remove your current migration directory and start a new migration history with prisma migrate dev. Read more: https://pris.ly/d/migrate-provider-switch"
            ),
        }
    }
}

/// Why dualkey refuses a `down`-strategy rollback. Each message says the way forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum RollbackRefusal {
    /// The database has no `_prisma_migrations` table.
    #[error("the database has no _prisma_migrations table: nothing was applied by Prisma Migrate, so there is nothing to roll back")]
    NoMigrationsTable,
    /// The migration has no finished, not-rolled-back row.
    #[error("migration `{migration}` is not applied (no finished, not-rolled-back row in _prisma_migrations), so it cannot be rolled back")]
    NotApplied {
        /// The requested migration.
        migration: String,
    },
    /// Some migrations to undo have no `down.sql` in their folder (or no folder at all).
    #[error("rollback refused: no down.sql for {}; write a reversing migration and deploy it instead (or roll back with the restore strategy)", .migrations.join(", "))]
    MissingDownSql {
        /// The migrations to undo that lack `down.sql`, newest first.
        migrations: Vec<String>,
    },
    /// A `down.sql` ends the transaction itself (`COMMIT`, `ROLLBACK`, `END`, `ABORT`,
    /// `PREPARE TRANSACTION`): what ran before it would be committed whatever happened after, so
    /// the rollback would no longer be all or nothing.
    #[error("rollback refused: {} ends the transaction itself; dualkey runs every down.sql inside one transaction and commits it once at the end. Remove those statements (BEGIN may stay), or roll back with the restore strategy", .statements.join(", "))]
    DownSqlEndsTransaction {
        /// `<migration>/down.sql line N: COMMIT`, newest migration first.
        statements: Vec<String>,
    },
    /// Failed rows exist; the deploy after the rollback would be refused with P3009.
    #[error("rollback refused: failed migration(s) {} must be resolved first (/db resolve <name> rolled-back or applied)", .migrations.join(", "))]
    FailedMigrationsPresent {
        /// Names of the failed rows, oldest first.
        migrations: Vec<String>,
    },
    /// The plan recomputed under the lock differs from the approved one.
    #[error("rollback stopped before its first step: the plan changed since it was approved (approved {expected}, now {actual})")]
    PlanChanged {
        /// The fingerprint the caller approved.
        expected: String,
        /// The fingerprint recomputed under the lock.
        actual: String,
    },
}

/// A pinned deploy refused before writing anything: the pending migrations, or the checksums of
/// their scripts as the deploy read them, are not the ones that were approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("deploy stopped before applying anything: the migrations are not the ones approved ({}). Nothing was applied; request the deploy again to review what is in the folder now", self.differences().join("; "))]
pub struct DeployPlanChanged {
    /// (migration, checksum) as approved, in order.
    pub approved: Vec<(String, String)>,
    /// (migration, checksum of the script this deploy read and would have run), pending now,
    /// in order. An unreadable script has an empty checksum.
    pub found: Vec<(String, String)>,
}

impl DeployPlanChanged {
    /// One line per difference, naming both checksums where a script changed.
    pub fn differences(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, sum) in &self.approved {
            match self.found.iter().find(|(n, _)| n == name) {
                Some((_, found)) if found != sum => out.push(format!(
                    "{name}/migration.sql changed since approval: approved checksum {sum}, found {}",
                    if found.is_empty() { "an unreadable file" } else { found }
                )),
                Some(_) => {}
                None => out.push(format!("{name} was approved but is no longer pending")),
            }
        }
        for (name, sum) in &self.found {
            if !self.approved.iter().any(|(n, _)| n == name) {
                out.push(format!(
                    "{name} is pending but was not approved (checksum {sum})"
                ));
            }
        }
        if out.is_empty() {
            let names = |v: &[(String, String)]| {
                v.iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push(format!(
                "the order changed: approved {}, found {}",
                names(&self.approved),
                names(&self.found)
            ));
        }
        out
    }
}

/// Every error of `dualkey::dbops::prisma`.
///
/// [`PrismaError::User`] is what Prisma itself would report (render it with
/// [`PrismaError::cli_stderr`]); [`PrismaError::Engine`] is a non-coded Prisma engine error;
/// [`PrismaError::Rollback`] and [`PrismaError::DownScriptFailed`] are dualkey's `down` strategy;
/// the rest are faults (connection, SQL, files, an observer that stopped the work).
#[derive(Debug, thiserror::Error)]
pub enum PrismaError {
    /// A Prisma-coded user error with Prisma's exact message.
    #[error(transparent)]
    User(#[from] PrismaUserError),
    /// A non-coded error that Prisma reports as `Error: <message>` (e.g. the invariant violation of
    /// `resolve --rolled-back` without a migrations table).
    #[error("{0}")]
    Engine(String),
    /// dualkey refuses the rollback.
    #[error(transparent)]
    Rollback(#[from] RollbackRefusal),
    /// A pinned deploy found other migrations or scripts than the approved ones; nothing was
    /// written.
    #[error(transparent)]
    PlanChanged(#[from] DeployPlanChanged),
    /// A `down.sql` failed; the whole rollback transaction was rolled back, nothing changed.
    #[error("down.sql of `{migration}` failed, nothing was rolled back (SQLSTATE {database_error_code}): {database_error}")]
    DownScriptFailed {
        /// The migration whose `down.sql` failed.
        migration: String,
        /// The SQLSTATE, or `none`.
        database_error_code: String,
        /// The PostgreSQL error, rendered like Prisma renders script errors.
        database_error: String,
    },
    /// A `pg_dump` runs on the target ([`super::DeployOptions::refuse_under_dump`]); nothing
    /// was written.
    #[error("a pg_dump runs on the target ({}); nothing was applied", .0.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("; "))]
    DumpRunning(Vec<crate::dbops::sessions::SessionInfo>),
    /// The progress observer asked to stop.
    #[error("stopped by the caller: {0}")]
    Aborted(String),
    /// Could not connect to the target database (the URL is never part of the message).
    #[error("could not connect to the target database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A statement on an established connection failed.
    #[error("database error while {context}: {source}")]
    Database {
        /// What dualkey was doing.
        context: &'static str,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
    /// Reading the migrations folder failed.
    #[error("could not read {}: {source}", .path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl PrismaError {
    /// The Prisma code, when this is a Prisma-coded user error.
    pub fn code(&self) -> Option<PrismaCode> {
        match self {
            PrismaError::User(e) => Some(e.code),
            _ => None,
        }
    }

    /// True for errors that are the user's to fix (Prisma-coded errors, engine invariant errors,
    /// rollback refusals, a failing `down.sql`), false for faults (connection, SQL, IO, observer).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            PrismaError::User(_)
                | PrismaError::Engine(_)
                | PrismaError::Rollback(_)
                | PrismaError::PlanChanged(_)
                | PrismaError::DownScriptFailed { .. }
        )
    }

    /// What the Prisma CLI would print on stderr for this error: `Error: <code>\n\n<message>\n\n`
    /// for coded errors, `Error: <message>\n` otherwise.
    pub fn cli_stderr(&self) -> String {
        match self {
            PrismaError::User(e) => e.cli_stderr(),
            other => format!("Error: {other}\n"),
        }
    }

    pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> PrismaError {
        move |source| PrismaError::Database { context, source }
    }
}
