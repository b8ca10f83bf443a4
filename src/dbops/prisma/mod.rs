//! A native Rust copy of Prisma Migrate for PostgreSQL (no Node at run time): the migrations
//! folder, checksums, the `_prisma_migrations` table, `migrate status`, `migrate resolve`,
//! `migrate deploy`, plus dualkey's `down` rollback strategy.
//!
//! The facts copied here (rules, SQL, texts) are in `shared/notes/prisma.md`; the tests replay
//! the real CLI's golden outputs (`tests/fixtures/prisma-golden/`) and run the real CLI against
//! databases dualkey changed.
//!
//! # Entry points
//!
//! Every function takes the target database URL as `&str` (Prisma's `?schema=` is honoured; the
//! URL is never logged nor put in an error) and the migrations folder as `&Path`.
//!
//! | what | structured | Prisma CLI text |
//! |---|---|---|
//! | status | [`status`] → [`StatusReport`] | [`StatusReport::render_prisma`], [`status_prisma_cli`] |
//! | deploy | [`deploy`], [`deploy_pinned`] (approved checksums) → [`DeployOutcome`] (+ [`DeployEvent`]s) | [`render_deploy`], [`deploy_prisma_cli`] |
//! | resolve | [`resolve`] → [`ResolveOutcome`] | [`render_resolve`], [`resolve_prisma_cli`] |
//! | rollback (down) | [`plan_rollback`] → [`RollbackPlan`], [`rollback_down`] → [`RollbackOutcome`] | — |
//! | read only | [`list_migrations`], [`read_migrations_table`], [`diagnose`] | |
//!
//! # Layout
//!
//! * `error`: [`PrismaError`], [`PrismaUserError`] (code + Prisma's exact text), [`RollbackRefusal`].
//! * `collation`: Prisma's folder sort order (JavaScript `localeCompare`).
//! * `migrations`: folder listing, `migration_lock.toml` (P3019), `down.sql`.
//! * `checksum`: SHA-256 checksums with Prisma's three-way and legacy matching.
//! * `table`: `_prisma_migrations` reads and writes, the connection, the advisory lock.
//! * `diagnose`: Prisma's `diagnoseMigrationHistory`.
//! * `status`, `resolve`, `deploy` (one try at a migration in `apply`), `rollback`: the
//!   operations; `render`: the CLI texts;
//!   `outcome`: the deploy outcome and the resolve action they share with `render`;
//!   `observer`: progress callbacks.
//!
//! # Byte for byte, and all or nothing when dualkey dies
//!
//! * **Deploy** reads the folder once; the in-memory script is what is hashed and what is run.
//!   [`deploy_pinned`] refuses, before its first write, any pending list or script checksum other
//!   than the approved ones ([`DeployPlanChanged`] names both checksums).
//! * Every connection to the target sets `client_connection_check_interval` (PostgreSQL 14+), so
//!   a statement still running when dualkey is SIGKILLed is cancelled and rolled back within about
//!   a second instead of running to its end and committing.
//! * What a SIGKILL leaves, step by step, is in each operation's docs: `deploy` (the script being
//!   applied is rolled back; under dualkey's deploy step its row goes with it and it is simply
//!   still pending, under plain [`deploy`] its row reads failed as after a killed
//!   `prisma migrate deploy`: `resolve <name> rolled-back` then deploy again), `rollback` (one transaction that only
//!   dualkey's `COMMIT` ends: all migrations stay applied), `resolve` (one transaction: the
//!   bookkeeping is exactly old or exactly new).
//!
//! # Known differences from the real CLI
//!
//! * `resolve` writes its statements in one transaction (the CLI autocommits each), and `deploy`
//!   creates a missing `_prisma_migrations` after its checks rather than before them; the rows
//!   written are the same.
//! * dualkey's connections set `client_connection_check_interval`.
//! * P3018 (failed script) follows the native engine's text; the `DbError { … }` part is rebuilt
//!   from the driver's error fields, and `logs` holds the P3018 text without the span trace.
//! * P1002 (advisory lock timeout) omits host and port.
//! * Folder names with non-ASCII characters may sort differently (see `collation`).
//! * Output starts at the command's own text: the header lines are not printed, and blank lines
//!   are empty (Prisma 7 style).

mod apply;
mod checksum;
mod collation;
mod deploy;
mod diagnose;
mod error;
mod migrations;
mod observer;
mod outcome;
mod render;
mod resolve;
mod rollback;
mod status;
mod table;

pub use checksum::{render_checksum, render_checksum_legacy, script_matches_checksum};
pub use collation::compare_migration_names;
pub use deploy::{deploy, deploy_pinned, deploy_prisma_cli, DeployEvent};
pub use diagnose::{diagnose, DiagnoseOutput, HistoryDiagnostic};
pub use error::{DeployPlanChanged, PrismaCode, PrismaError, PrismaUserError, RollbackRefusal};
pub use migrations::{
    list_migrations, LocalMigration, MigrationsFolder, DOWN_SCRIPT, LOCK_FILE, MIGRATION_SCRIPT,
    POSTGRESQL_PROVIDER,
};
pub use observer::{NoProgress, ProgressObserver};
pub use outcome::{DeployOptions, DeployOutcome, DeployStop, DeployStopReason, ResolveAction};
pub use render::{
    migrations_found_line, render_deploy, render_resolve, render_status, PrismaCliOutput,
};
pub use resolve::{
    resolve, resolve_applied, resolve_prisma_cli, resolve_rolled_back, ResolveOutcome,
};
pub use rollback::{
    compute_rollback_plan, plan_rollback, rollback_down, rollback_down_with, RollbackEvent,
    RollbackOutcome, RollbackPlan, RollbackStep,
};
pub use status::{
    build_status_report, server_version_num, status, status_prisma_cli, Divergence,
    FailedMigration, MigrationState, MigrationStatus, StatusReport,
};
pub use table::{
    connect_options, read_migrations_table, MigrationRow, ADVISORY_LOCK_KEY, ADVISORY_LOCK_TIMEOUT,
    CREATE_MIGRATIONS_TABLE_SQL, IGNORED_TABLES, MIGRATIONS_TABLE, SELECT_MIGRATIONS_SQL,
};
pub(crate) use table::{quote_ident, Target};
