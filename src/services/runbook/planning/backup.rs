//! Planning a manual `backup`: one step, no warnings, nothing fingerprinted beyond the kind.

use crate::core::operation::{OperationKind, Plan};
use crate::dbops::backup::BackupKind;
use crate::services::environment::StepError;
use crate::services::runbook::step_builders::backup_step;

/// The plan of `backup` (with its note for the catalog).
pub(super) fn plan_backup(
    kind: &OperationKind,
    env: &str,
    note: &Option<String>,
) -> Result<Plan, StepError> {
    Ok(Plan::new(
        kind,
        env,
        format!("back up {env}"),
        vec![backup_step(BackupKind::Manual, note.clone())],
        vec![],
        vec![],
    ))
}
