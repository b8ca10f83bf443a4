//! The review of the pending migrations a deploy would apply (checksums, data-loss warnings,
//! missing `down.sql`, the lock review of each script), and the staging guard's check of what
//! staging has not applied yet.

use crate::config::EnvironmentSettings;
use crate::core::ports::Reads;
use crate::core::reply::Warning;
use crate::dbops;
use crate::dbops::lockreview::{review_script_with, KnownColumns, ScriptReview};
use crate::dbops::prisma;
use crate::services::environment::{env_settings, migration_status, StepError};

/// One danger warning per data-loss statement in each (migration, SQL) pair.
pub(crate) fn warnings_for(sql_by_migration: &[(String, String)]) -> Vec<Warning> {
    let mut out = Vec::new();
    for (name, sql) in sql_by_migration {
        for w in dbops::sqlscan::scan(sql) {
            out.push(Warning::danger(format!("{name}: {w}")));
        }
    }
    out
}

/// What a deploy would run, read from the migrations folder: per pending migration its
/// checksum, its data-loss warnings, whether it ships a `down.sql`, and its lock review. Shared
/// by the deploy plan and the safety checklist. Checksums and reviews come from the same bytes
/// (one read of each `migration.sql`), so the card reviews exactly what the plan pins.
#[derive(Debug, Clone)]
pub struct PendingReview {
    /// (migration, checksum of migration.sql).
    pub checksums: Vec<(String, String)>,
    /// `migration: DROP TABLE "Post"`-style warnings.
    pub data_loss: Vec<String>,
    /// Pending migrations without a `down.sql`.
    pub no_down: Vec<String>,
    /// (migration, the lock review of its `migration.sql`), in the order a deploy applies them;
    /// a script that could not be read has none.
    pub locks: Vec<(String, ScriptReview)>,
}

/// The server version a script is reviewed for when the status did not report one: the oldest
/// PostgreSQL the review knows, whose rules are the most cautious.
pub const UNKNOWN_SERVER_VERSION: u32 = 0;

/// Reviews the migrations `st` says a deploy would apply (the lock review for the server
/// version the status read).
pub fn review_pending(
    e: &EnvironmentSettings,
    st: &prisma::StatusReport,
) -> Result<PendingReview, StepError> {
    review_pending_with(e, st, &KnownColumns::new())
}

/// [`review_pending`], the lock review knowing the current types of the target's columns (a
/// widening `ALTER COLUMN ... TYPE` is then catalog-only). Reads the folder again: checksums and
/// reviews always come from one read.
pub fn review_pending_with(
    e: &EnvironmentSettings,
    st: &prisma::StatusReport,
    known: &KnownColumns,
) -> Result<PendingReview, StepError> {
    let folder = prisma::list_migrations(&e.migrations_dir);
    let mut review = PendingReview {
        checksums: Vec::new(),
        data_loss: Vec::new(),
        no_down: Vec::new(),
        locks: Vec::new(),
    };
    let server = st.server_version_num.unwrap_or(UNKNOWN_SERVER_VERSION);
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
            review
                .locks
                .push((m.clone(), review_script_with(sql, server, known)));
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
    reads: Reads<'_>,
    e: &EnvironmentSettings,
    pending: &[String],
) -> Result<Vec<String>, StepError> {
    let Some(staging) = &e.require_staging else {
        return Ok(Vec::new());
    };
    let se = env_settings(reads, staging)?;
    let sst = migration_status(se)
        .await
        .map_err(|err| StepError(format!("staging guard: {staging}: {err}")))?;
    Ok(pending
        .iter()
        .filter(|m| !sst.applied.contains(m))
        .cloned()
        .collect())
}
