//! Recovering operations a dead process left `running`: their backups marked failed, partial
//! dump files removed, the operations and their steps marked `interrupted`, and the alerts.

use std::time::Duration;

use serde_json::json;

use crate::core::audit::NewAudit;
use crate::core::context::Core;
use crate::core::dispatch::kind_name;
use crate::core::event::ChannelRef;
use crate::core::reply::Reply;
use crate::services::backups::take::fail_interrupted;
use crate::store::{OperationRow, Tx};

/// Marks failed the backups left `running`, which never finished: no file, no ok entry. At a
/// SQLite start-up (`stale_before` is `None`) all of them; on PostgreSQL the ones the dead
/// replica's `stale` operations were taking.
pub(super) async fn fail_running_backups(
    core: &Core,
    tx: &mut Box<dyn Tx>,
    stale_before: Option<i64>,
    stale: &[OperationRow],
) -> anyhow::Result<()> {
    for b in tx.running_backups().await? {
        let dead = stale_before.is_none()
            || stale
                .iter()
                .any(|o| b.operation_id.as_deref() == Some(o.id.as_str()));
        if dead {
            fail_interrupted(core, tx, b).await?;
        }
    }
    Ok(())
}

/// Removes the partial dump files a stopped process left in every environment's backup folder.
pub(super) fn remove_partial_backups(core: &Core) {
    for (name, e) in &core.settings.environments {
        let dir = e.backup_dir.join(name);
        if let Ok(removed) = crate::dbops::backup::cleanup_partials(&dir, Duration::ZERO) {
            for p in removed {
                tracing::warn!(path = %p.display(), "removed a partial backup left by a stopped process");
            }
        }
    }
}

/// Marks the `stale` operations (and their current steps) `interrupted`, audited.
pub(super) async fn mark_interrupted(
    core: &Core,
    tx: &mut Box<dyn Tx>,
    stale: &[OperationRow],
    now: i64,
) -> anyhow::Result<()> {
    for op in stale {
        tx.transition_operation(
            &op.id,
            crate::core::operation::OperationState::Running,
            crate::core::operation::OperationState::Interrupted,
            Some("dualkey stopped while this operation ran; it was not resumed"),
            now,
        )
        .await?;
        if let Some(k) = op.current_step {
            tx.finish_step(
                &op.id,
                k,
                "interrupted",
                "dualkey stopped during this step",
                now,
            )
            .await?;
        }
        core.audit_tx(tx, NewAudit::system("operation.interrupted", Some(&op.env), json!({"operation": op.id, "kind": kind_name(&op.kind_json), "step": op.current_step.map(|k| k + 1)}))).await?;
    }
    Ok(())
}

/// Alerts about each interrupted operation, to the channel it came from and to the report
/// channels, and refreshes its card.
pub(super) async fn report_interrupted(core: &Core, stale: &[OperationRow]) -> anyhow::Result<()> {
    for op in stale {
        let step = op
            .current_step
            .map(|k| format!(" in step {}", k + 1))
            .unwrap_or_default();
        let text = format!(
            "Operation {} ({} in {}) was interrupted{step}: dualkey stopped while it ran. It will not be resumed or re-run; check the environment (`status`), then request it again if still needed.",
            op.id,
            kind_name(&op.kind_json),
            op.env
        );
        // An alert: to the channel the operation came from and to the report channels.
        let origin = serde_json::from_str::<ChannelRef>(&op.channel_json).ok();
        let channels = core.channels_for(origin.as_ref(), crate::config::Route::Report, &op.env);
        for channel in &channels {
            core.post(channel, &Reply::public(text.clone())).await?;
        }
        core.refresh_operation_card(op).await?;
    }
    Ok(())
}
