//! The backup step: a manual backup (with retention) or a safety backup before a change.

use std::sync::Arc;

use crate::core::context::Core;
use crate::dbops::backup::BackupKind;
use crate::services::backups::take::{backup_kind, take_backup, take_manual_backup};
use crate::services::environment::StepError;
use crate::store::OperationRow;

/// `StepAction::Backup`: takes a verified backup of the operation's environment.
pub(crate) async fn backup(
    core: &Arc<Core>,
    op: &OperationRow,
    kind: &str,
    note: &Option<String>,
) -> Result<String, StepError> {
    let b = match backup_kind(kind) {
        BackupKind::Manual => {
            take_manual_backup(core, &op.env, &op.requester, note.clone(), Some(op)).await?
        }
        k => {
            take_backup(
                core,
                &op.env,
                k,
                Some(&op.requester),
                note.clone(),
                Some(op),
            )
            .await?
        }
    };
    Ok(format!(
        "backup {} ({} bytes, verified)",
        b.id,
        b.size_bytes.unwrap_or(0)
    ))
}
