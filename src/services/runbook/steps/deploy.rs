//! The deploy step: applies exactly the approved migrations (pinned by checksum), each one
//! audited before and after it runs.

use std::sync::Arc;

use secrecy::ExposeSecret;
use serde_json::json;

use crate::config::EnvironmentSettings;
use crate::core::context::Core;
use crate::core::operation::PinnedMigration;
use crate::dbops::prisma;
use crate::services::environment::{database_url, StepError};
use crate::services::runbook::steps::audit::AuditObserver;
use crate::store::OperationRow;

/// `StepAction::Deploy`: applies the pinned migrations; refuses a step planned without
/// checksums, and audits a refusal when the scripts changed since approval.
pub(crate) async fn deploy(
    core: &Arc<Core>,
    op: &OperationRow,
    e: &EnvironmentSettings,
    migrations: &[String],
    pinned: &[PinnedMigration],
) -> Result<String, StepError> {
    let url = database_url(e)?;
    // Apply exactly what was approved, byte for byte: the deploy compares these
    // (name, checksum) pairs with the scripts it read itself, under the lock and before
    // its first write, so a migration added or a migration.sql edited since approval
    // (during the pre-deploy backup, say) stops it with nothing applied.
    let approved: Vec<(String, String)> = pinned
        .iter()
        .map(|p| (p.migration.clone(), p.checksum.clone()))
        .collect();
    let names: Vec<&String> = pinned.iter().map(|p| &p.migration).collect();
    if pinned.is_empty() || names != migrations.iter().collect::<Vec<_>>() {
        return Err(StepError(format!(
            "this deploy of {} was approved without the checksums of its scripts (planned by an older dualkey); nothing was applied. Request the deploy again so the scripts are pinned.",
            migrations.join(", ")
        )));
    }
    let mut observer = AuditObserver {
        core: core.clone(),
        env: op.env.clone(),
        op_id: op.id.clone(),
    };
    let result = prisma::deploy_pinned(
        url.expose_secret(),
        &e.migrations_dir,
        &approved,
        &mut observer,
    )
    .await;
    let out = match result {
        Ok(out) => out,
        Err(prisma::PrismaError::PlanChanged(changed)) => {
            let pairs = |v: &[(String, String)]| {
                v.iter()
                    .map(|(m, sum)| json!({"migration": m, "checksum": sum}))
                    .collect::<Vec<_>>()
            };
            observer
                .write(
                    "migration.apply.refused",
                    json!({"operation": op.id, "reason": changed.differences(), "approved": pairs(&changed.approved), "found": pairs(&changed.found)}),
                )
                .await
                .map_err(StepError)?;
            return Err(StepError(changed.to_string()));
        }
        Err(err) => return Err(StepError(err.to_string())),
    };
    match &out.stopped {
        None if out.applied.is_empty() => Ok("no pending migrations to apply".into()),
        None => Ok(format!("applied {}", out.applied.join(", "))),
        Some(stop) => Err(StepError(format!(
            "applied [{}], then {} failed: {}",
            out.applied.join(", "),
            stop.migration,
            stop.prisma_error()
                .map(|e| e.message.clone())
                .unwrap_or_else(|| stop.cli_stderr())
        ))),
    }
}
