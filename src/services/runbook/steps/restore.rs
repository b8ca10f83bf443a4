//! The restore step: streams the approved backup into the database in one transaction, checking
//! its SHA-256 on the way.

use secrecy::ExposeSecret;

use crate::config::EnvironmentSettings;
use crate::core::context::Core;
use crate::dbops::backup as bk;
use crate::services::environment::{database_url, StepError};
use crate::services::runbook::source::restore_file;
use crate::store::OperationRow;

/// `StepAction::Restore`: restores `backup` if its content is still the approved one
/// (`sha256`, else the catalog's).
pub(crate) async fn restore(
    core: &Core,
    op: &OperationRow,
    e: &EnvironmentSettings,
    backup: &str,
    sha256: &Option<String>,
) -> Result<String, StepError> {
    // Cheap checks only (catalog entry, file present); the content is checked once, by
    // hashing the bytes while they stream into the restore: the transaction commits only
    // if they are exactly the approved ones (see dbops::backup::restore).
    let (path, catalog_sha) = restore_file(core.reads(), &op.env, backup).await?;
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
