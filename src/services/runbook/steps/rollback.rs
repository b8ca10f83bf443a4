//! The rollback step: runs the `down.sql` files newest first, each one audited before and after
//! it runs.

use std::sync::Arc;

use secrecy::ExposeSecret;

use crate::config::EnvironmentSettings;
use crate::core::context::Core;
use crate::dbops::prisma;
use crate::services::environment::{database_url, StepError};
use crate::services::runbook::steps::audit::AuditObserver;
use crate::store::OperationRow;

/// `StepAction::RollbackDown`: un-applies down to `migration` if the rollback plan still has
/// the approved `fingerprint`.
pub(crate) async fn rollback_down(
    core: &Arc<Core>,
    op: &OperationRow,
    e: &EnvironmentSettings,
    migration: &str,
    fingerprint: &str,
) -> Result<String, StepError> {
    let url = database_url(e)?;
    let mut observer = AuditObserver {
        core: core.clone(),
        env: op.env.clone(),
        op_id: op.id.clone(),
    };
    // The deploy's timeouts and retries: a down.sql waiting behind a long transaction would hold
    // every query behind it as a migration would.
    let options = crate::services::environment::deploy_options(&core.settings.deploy);
    let out = prisma::rollback_down_with(
        url.expose_secret(),
        &e.migrations_dir,
        (migration, Some(fingerprint)),
        options,
        &mut observer,
    )
    .await
    .map_err(|err| StepError(format!("rollback failed and changed nothing: {err}")))?;
    Ok(format!(
        "un-applied {} (newest first)",
        out.rolled_back.join(", ")
    ))
}
