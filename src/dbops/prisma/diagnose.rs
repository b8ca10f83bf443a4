//! Prisma's `diagnoseMigrationHistory` (with `optInToShadowDatabase: false`, so no drift check),
//! as a pure function of the migrations folder and the `_prisma_migrations` rows.
//!
//! Rules copied from `schema-engine/commands/src/commands/diagnose_migration_history.rs`:
//! * P3019 first (lock-file provider).
//! * Each local migration is compared with the **first** row of the same name in any state
//!   (failed, rolled back or finished): no row → unapplied; a row whose checksum does not match →
//!   edited (a missing `migration.sql` here is P3015).
//! * Each row, one entry per row (so duplicates are possible): failed when neither finished nor
//!   rolled back; unpersisted when no local folder has its name.
//! * History: (unapplied, unpersisted) = (∅,∅) → none; (x,∅) → databaseIsBehind;
//!   (∅,x) → migrationsDirectoryIsBehind; (x,y) → historiesDiverge with the last common migration
//!   being the local migration just before the first unapplied one (`null` if that is the first).
//!
//! The types serialise to the same JSON as Prisma's `DiagnoseMigrationHistoryOutput`, which the
//! CLI prints under `DEBUG=prisma:migrate:status`.

use super::checksum::script_matches_checksum;
use super::error::PrismaUserError;
use super::migrations::MigrationsFolder;
use super::table::MigrationRow;
use serde::{Deserialize, Serialize};

/// How the local history and the database history relate (Prisma's `HistoryDiagnostic`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "diagnostic")]
pub enum HistoryDiagnostic {
    /// Local migrations that have no row at all.
    #[serde(rename = "databaseIsBehind")]
    DatabaseIsBehind {
        /// The local migrations without a row, in folder order.
        #[serde(rename = "unappliedMigrationNames")]
        unapplied_migration_names: Vec<String>,
    },
    /// Rows whose migration has no local folder.
    #[serde(rename = "migrationsDirectoryIsBehind")]
    MigrationsDirectoryIsBehind {
        /// One name per such row, in `started_at` order.
        #[serde(rename = "unpersistedMigrationNames")]
        unpersisted_migration_names: Vec<String>,
    },
    /// Both of the above.
    #[serde(rename = "historiesDiverge")]
    HistoriesDiverge {
        /// The local migration before the first unapplied one; `None` prints as `null`.
        #[serde(rename = "lastCommonMigrationName")]
        last_common_migration_name: Option<String>,
        /// One name per row without a local folder.
        #[serde(rename = "unpersistedMigrationNames")]
        unpersisted_migration_names: Vec<String>,
        /// Local migrations without a row.
        #[serde(rename = "unappliedMigrationNames")]
        unapplied_migration_names: Vec<String>,
    },
}

/// Prisma's `DiagnoseMigrationHistoryOutput` (without the shadow-database fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiagnoseOutput {
    /// Local migrations whose first row has another checksum (never printed by `migrate status`).
    pub edited_migration_names: Vec<String>,
    /// One name per failed row, in `started_at` order.
    pub failed_migration_names: Vec<String>,
    /// Whether `_prisma_migrations` exists.
    pub has_migrations_table: bool,
    /// The history diagnostic, `None` when in sync.
    pub history: Option<HistoryDiagnostic>,
}

/// Runs Prisma's diagnosis. `rows` is `None` when the table does not exist.
pub fn diagnose(
    folder: &MigrationsFolder,
    rows: Option<&[MigrationRow]>,
) -> Result<DiagnoseOutput, PrismaUserError> {
    folder.check_provider()?;
    let has_migrations_table = rows.is_some();
    let rows = rows.unwrap_or(&[]);

    let mut unapplied: Vec<(usize, String)> = Vec::new();
    let mut edited = Vec::new();
    for (index, local) in folder.migrations.iter().enumerate() {
        match rows.iter().find(|r| r.migration_name == local.name) {
            Some(row) => {
                let script = local.script_or_p3015()?;
                if !script_matches_checksum(script, &row.checksum) {
                    edited.push(row.migration_name.clone());
                }
            }
            None => unapplied.push((index, local.name.clone())),
        }
    }

    let mut failed = Vec::new();
    let mut unpersisted = Vec::new();
    for row in rows {
        if row.is_failed() {
            failed.push(row.migration_name.clone());
        }
        if folder.get(&row.migration_name).is_none() {
            unpersisted.push(row.migration_name.clone());
        }
    }

    let history = match (unapplied.is_empty(), unpersisted.is_empty()) {
        (true, true) => None,
        (false, true) => Some(HistoryDiagnostic::DatabaseIsBehind {
            unapplied_migration_names: unapplied.into_iter().map(|(_, n)| n).collect(),
        }),
        (true, false) => Some(HistoryDiagnostic::MigrationsDirectoryIsBehind {
            unpersisted_migration_names: unpersisted,
        }),
        (false, false) => {
            let first = unapplied[0].0;
            Some(HistoryDiagnostic::HistoriesDiverge {
                last_common_migration_name: (first > 0)
                    .then(|| folder.migrations[first - 1].name.clone()),
                unpersisted_migration_names: unpersisted,
                unapplied_migration_names: unapplied.into_iter().map(|(_, n)| n).collect(),
            })
        }
    };

    Ok(DiagnoseOutput {
        edited_migration_names: edited,
        failed_migration_names: failed,
        has_migrations_table,
        history,
    })
}
