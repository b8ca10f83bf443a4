//! `status`: Prisma's diagnosis plus what Prisma's status hides, as one serialisable report for
//! `/db status`, and the `prisma migrate status` rendering for `--format prisma`.
//!
//! Beyond Prisma the report says, per migration: applied, pending, failed, rolled back and due to
//! be re-applied by the next deploy, edited after apply, only in the database; plus the exact list
//! the next `deploy` would apply and the divergence details.

use super::checksum::script_matches_checksum;
use super::diagnose::{diagnose, DiagnoseOutput, HistoryDiagnostic};
use super::error::{PrismaError, PrismaUserError};
use super::migrations::{list_migrations, MigrationsFolder};
use super::render::{render_status, PrismaCliOutput};
use super::table::{MigrationRow, Target};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::Path;

/// State of one migration, from all its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    /// It has a finished, not-rolled-back row.
    Applied,
    /// Local, and no row at all.
    Pending,
    /// It has a row that is neither finished nor rolled back (deploy refuses with P3009).
    Failed,
    /// Every row is rolled back: `prisma migrate status` calls this up to date, but the next
    /// deploy applies it again.
    RolledBack,
}

/// One migration in the report: every local folder, then every name found only in the database.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationStatus {
    /// The migration name.
    pub name: String,
    /// Its state.
    pub state: MigrationState,
    /// Whether a local folder exists (false: only in the database).
    pub local: bool,
    /// Whether the folder has a `down.sql`.
    pub has_down_sql: bool,
    /// Whether the local `migration.sql` no longer matches the checksum recorded when it was
    /// applied (compared with the applied row, or with the first row when none is applied).
    pub edited_after_apply: bool,
    /// Whether the local folder has no readable `migration.sql`.
    pub missing_script: bool,
    /// Whether the next deploy would apply it (local, and no row that is not rolled back).
    pub deploy_would_apply: bool,
    /// `started_at` of the applied row (or of the newest row when none is applied).
    pub started_at: Option<DateTime<Utc>>,
    /// `finished_at` of the applied row.
    pub finished_at: Option<DateTime<Utc>>,
    /// `rolled_back_at` of the newest rolled-back row.
    pub rolled_back_at: Option<DateTime<Utc>>,
    /// How many rows the migration has (attempts, resolves).
    pub rows: usize,
}

/// A divergence between the local and the database history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// The last migration both histories share, if any.
    pub last_common: Option<String>,
    /// Local migrations never recorded in the database.
    pub not_in_database: Vec<String>,
    /// Database rows without a local folder.
    pub not_in_folder: Vec<String>,
}

/// A failed row.
#[derive(Debug, Clone, Serialize)]
pub struct FailedMigration {
    /// The migration name.
    pub name: String,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// The error text recorded by the deploy (opaque; may contain ANSI codes from Prisma).
    pub logs: Option<String>,
}

/// The full migration status of one target database.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// PostgreSQL version of the target (`15.20`), from the connection's startup parameters.
    pub server_version: Option<String>,
    /// The same as `server_version_num` (150020 for 15.20).
    pub server_version_num: Option<u32>,
    /// Whether `_prisma_migrations` exists.
    pub has_migrations_table: bool,
    /// Number of local migration folders.
    pub local_count: usize,
    /// Every migration: local ones in Prisma's order, then database-only ones by `started_at`.
    pub migrations: Vec<MigrationStatus>,
    /// Names applied (finished, not rolled back).
    pub applied: Vec<String>,
    /// Local names with no row.
    pub pending: Vec<String>,
    /// Failed rows, oldest first (one entry per row).
    pub failed: Vec<FailedMigration>,
    /// Names whose rows are all rolled back; the next deploy applies the local ones again.
    pub rolled_back: Vec<String>,
    /// Names whose local script changed after it was applied.
    pub edited_after_apply: Vec<String>,
    /// Names found only in the database.
    pub only_in_database: Vec<String>,
    /// What the next `deploy` would apply, in order.
    pub deploy_would_apply: Vec<String>,
    /// Local folders without a readable `migration.sql`.
    pub missing_script: Vec<String>,
    /// Set when both histories have entries the other lacks.
    pub diverged: Option<Divergence>,
    /// Prisma's own diagnosis (`None` when Prisma would stop with an error instead).
    pub prisma_diagnosis: Option<DiagnoseOutput>,
    /// The error `prisma migrate status` would stop with (P3019, P3015).
    pub prisma_error: Option<PrismaUserError>,
    /// `prisma migrate status`'s exit code: 0 only when it says "Database schema is up to date!".
    pub prisma_exit_code: i32,
    /// The first local migration name (used by one of Prisma's texts).
    #[serde(skip)]
    first_local: Option<String>,
}

impl StatusReport {
    /// What `prisma migrate status` prints from `N migrations found` onward, and its exit code.
    pub fn render_prisma(&self) -> PrismaCliOutput {
        let diagnosis = match (&self.prisma_diagnosis, &self.prisma_error) {
            (_, Some(e)) => Err(e.clone()),
            (Some(d), None) => Ok(d.clone()),
            (None, None) => unreachable!("a report has a diagnosis or an error"),
        };
        render_status(self.local_count, self.first_local.as_deref(), &diagnosis)
    }

    /// True when nothing needs attention: nothing pending, failed, rolled back, edited, only in the
    /// database or diverged, and Prisma would report up to date.
    pub fn is_clean(&self) -> bool {
        self.prisma_exit_code == 0
            && self.pending.is_empty()
            && self.failed.is_empty()
            && self.rolled_back.is_empty()
            && self.edited_after_apply.is_empty()
            && self.only_in_database.is_empty()
            && self.missing_script.is_empty()
            && self.diverged.is_none()
    }
}

/// Builds the report from a folder listing and the rows (`None`: no table). Pure.
pub fn build_status_report(
    folder: &MigrationsFolder,
    rows: Option<&[MigrationRow]>,
) -> StatusReport {
    let diagnosis = diagnose(folder, rows);
    let all_rows = rows.unwrap_or(&[]);
    let migrations = migration_entries(folder, all_rows);

    let names = |pred: &dyn Fn(&MigrationStatus) -> bool| -> Vec<String> {
        migrations
            .iter()
            .filter(|m| pred(m))
            .map(|m| m.name.clone())
            .collect()
    };
    let applied = names(&|m| m.state == MigrationState::Applied);
    let pending = names(&|m| m.state == MigrationState::Pending);
    let rolled_back = names(&|m| m.state == MigrationState::RolledBack);
    let edited_after_apply = names(&|m| m.edited_after_apply);
    let only_in_database = names(&|m| !m.local);
    let deploy_would_apply = names(&|m| m.deploy_would_apply);
    let missing_script = names(&|m| m.missing_script);
    let failed = failed_migrations(all_rows);

    let diverged = divergence(&diagnosis);

    let first_local = folder.migrations.first().map(|m| m.name.clone());
    let (prisma_diagnosis, prisma_error) = match diagnosis {
        Ok(d) => (Some(d), None),
        Err(e) => (None, Some(e)),
    };
    let mut report = StatusReport {
        server_version: None,
        server_version_num: None,
        has_migrations_table: rows.is_some(),
        local_count: folder.migrations.len(),
        migrations,
        applied,
        pending,
        failed,
        rolled_back,
        edited_after_apply,
        only_in_database,
        deploy_would_apply,
        missing_script,
        diverged,
        prisma_diagnosis,
        prisma_error,
        prisma_exit_code: 1,
        first_local,
    };
    report.prisma_exit_code = report.render_prisma().exit_code;
    report
}

/// One entry per local migration in folder order, then one per migration known only to the
/// database, in row order.
fn migration_entries(folder: &MigrationsFolder, all_rows: &[MigrationRow]) -> Vec<MigrationStatus> {
    let rows_of = |name: &str| -> Vec<&MigrationRow> {
        all_rows
            .iter()
            .filter(|r| r.migration_name == name)
            .collect()
    };

    let mut migrations = Vec::new();
    for local in &folder.migrations {
        let rs = rows_of(&local.name);
        migrations.push(entry(&local.name, &rs, Some(local)));
    }
    let mut seen = std::collections::HashSet::new();
    for row in all_rows {
        if folder.get(&row.migration_name).is_none() && seen.insert(row.migration_name.as_str()) {
            let rs = rows_of(&row.migration_name);
            migrations.push(entry(&row.migration_name, &rs, None));
        }
    }
    migrations
}

/// The failed rows.
fn failed_migrations(all_rows: &[MigrationRow]) -> Vec<FailedMigration> {
    all_rows
        .iter()
        .filter(|r| r.is_failed())
        .map(|r| FailedMigration {
            name: r.migration_name.clone(),
            started_at: r.started_at,
            logs: r.logs.clone(),
        })
        .collect()
}

/// The divergence Prisma's diagnosis found, if any.
fn divergence(diagnosis: &Result<DiagnoseOutput, PrismaUserError>) -> Option<Divergence> {
    match diagnosis {
        Ok(DiagnoseOutput {
            history:
                Some(HistoryDiagnostic::HistoriesDiverge {
                    last_common_migration_name,
                    unpersisted_migration_names,
                    unapplied_migration_names,
                }),
            ..
        }) => Some(Divergence {
            last_common: last_common_migration_name.clone(),
            not_in_database: unapplied_migration_names.clone(),
            not_in_folder: unpersisted_migration_names.clone(),
        }),
        _ => None,
    }
}

fn entry(
    name: &str,
    rows: &[&MigrationRow],
    local: Option<&super::migrations::LocalMigration>,
) -> MigrationStatus {
    let applied_row = rows.iter().rev().find(|r| r.is_applied()).copied();
    let state = if rows.iter().any(|r| r.is_failed()) {
        MigrationState::Failed
    } else if applied_row.is_some() {
        MigrationState::Applied
    } else if !rows.is_empty() {
        MigrationState::RolledBack
    } else {
        MigrationState::Pending
    };
    let script = local.and_then(|l| l.script.as_deref());
    let compare_row = applied_row.or_else(|| rows.first().copied());
    let edited_after_apply = match (script, compare_row) {
        (Some(s), Some(r)) => !script_matches_checksum(s, &r.checksum),
        _ => false,
    };
    MigrationStatus {
        name: name.to_string(),
        state,
        local: local.is_some(),
        has_down_sql: local.map(|l| l.has_down_sql).unwrap_or(false),
        edited_after_apply,
        missing_script: local.is_some() && script.is_none(),
        deploy_would_apply: local.is_some() && !rows.iter().any(|r| r.rolled_back_at.is_none()),
        started_at: applied_row
            .or_else(|| rows.last().copied())
            .map(|r| r.started_at),
        finished_at: applied_row.and_then(|r| r.finished_at),
        rolled_back_at: rows.iter().rev().find_map(|r| r.rolled_back_at),
        rows: rows.len(),
    }
}

/// Reads the folder and the target's `_prisma_migrations` (no lock, no writes) and builds the
/// report. Prisma's own errors (P3019, P3015) are inside the report; `Err` is only for faults
/// (cannot connect, SQL error).
#[tracing::instrument(skip_all)]
pub async fn status(
    database_url: &str,
    migrations_dir: &Path,
) -> Result<StatusReport, PrismaError> {
    let folder = list_migrations(migrations_dir);
    let mut target = Target::connect(database_url).await?;
    let rows = target.load_rows().await;
    // From the connection's startup parameters: no extra round trip.
    let num = target.conn.server_version_num();
    target.close().await;
    let rows = rows?;
    let mut report = build_status_report(&folder, rows.as_deref());
    report.server_version = num.map(version_text);
    report.server_version_num = num;
    Ok(report)
}

/// `server_version_num` in words: 150020 is `15.20`, 90624 is `9.6.24`.
fn version_text(n: u32) -> String {
    if n >= 100_000 {
        format!("{}.{}", n / 10_000, n % 10_000)
    } else {
        format!("{}.{}.{}", n / 10_000, n / 100 % 100, n % 100)
    }
}

/// The target's `server_version_num`, from the startup parameters of a fresh connection.
pub async fn server_version_num(database_url: &str) -> Result<u32, PrismaError> {
    let target = Target::connect(database_url).await?;
    let num = target.conn.server_version_num();
    target.close().await;
    num.ok_or_else(|| {
        PrismaError::Connect(sqlx::Error::Protocol(
            "the server did not report server_version".into(),
        ))
    })
}

/// `prisma migrate status` in one call: the output to print and the exit code to return. A fault
/// (cannot connect, …) is rendered as `Error: …` on stderr with exit 1.
pub async fn status_prisma_cli(database_url: &str, migrations_dir: &Path) -> PrismaCliOutput {
    match status(database_url, migrations_dir).await {
        Ok(report) => report.render_prisma(),
        Err(e) => PrismaCliOutput::error(String::new(), &e),
    }
}
