//! The runbook: what each operation kind plans and what each step does. `run_step` executes one
//! [`StepAction`] through `dbops`.
//!
//! Planning has two halves (module [`planning`]). [`planning::gather`] does all the I/O a plan
//! depends on: the migration status (and the staging guard's), the pending scripts with their
//! checksums, the rollback plan, the restore source with its SHA-256 check, the write counters
//! for the data-loss estimate, the database URL and the clock. [`planning::plan_from`] is pure:
//! it turns those [`planning::PlanFacts`] into the steps, warnings, refusals and the facts that
//! are fingerprinted, so the fingerprint changes when what was read changes. [`plan`] is the two
//! in a row, shared by the dispatcher and the worker.
//!
//! Every destructive plan starts with a safety backup; a failed backup stops the operation
//! before anything else runs. Names from chat were validated by the parser and are checked
//! again here against what exists (migration folders, database rows, catalog entries, files).

pub mod planning;
mod source;
mod step_builders;
mod steps;

use std::sync::Arc;
use std::time::Duration;

use crate::core::context::Core;
use crate::core::operation::{OperationKind, Plan, PlannedStep, StepAction};
use crate::core::ports::Reads;
use crate::services::environment::{env_settings, StepError};
use crate::store::OperationRow;

pub use source::{restore_source, RestoreSource};
pub use steps::app::run_app;

/// Computes the plan of `kind` in `env` from current facts: [`planning::gather`] reads them,
/// [`planning::plan_from`] decides. The dispatcher (through [`RunbookFacts`](crate::services::facts::RunbookFacts)) and the worker
/// (recomputing before the first step) both come here.
#[tracing::instrument(skip_all, fields(kind = kind.name(), env = %env))]
pub async fn plan(reads: Reads<'_>, kind: &OperationKind, env: &str) -> Result<Plan, StepError> {
    let facts = planning::gather(reads, kind, env).await?;
    planning::plan_from(kind, env, &facts)
}

/// Runs one step; returns a short summary of what happened.
#[tracing::instrument(skip_all, fields(operation = %op.id, env = %op.env, step = %step.name))]
pub async fn run_step(
    core: &Arc<Core>,
    op: &OperationRow,
    step: &PlannedStep,
) -> Result<String, StepError> {
    let e = env_settings(core.reads(), &op.env)?;
    let timeout = Duration::from_secs(e.app_timeout_secs);
    match &step.action {
        StepAction::AppStop => steps::app::app_stop(e, &op.env, timeout).await,
        StepAction::AppStart => steps::app::app_start(e, &op.env, timeout).await,
        StepAction::Backup { kind, note } => steps::backup::backup(core, op, kind, note).await,
        StepAction::Deploy { migrations, pinned } => {
            steps::deploy::deploy(core, op, e, migrations, pinned).await
        }
        StepAction::RollbackDown {
            migration,
            fingerprint,
        } => steps::rollback::rollback_down(core, op, e, migration, fingerprint).await,
        StepAction::Restore { backup, sha256 } => {
            steps::restore::restore(core, op, e, backup, sha256).await
        }
        StepAction::Resolve { migration, applied } => {
            steps::resolve::resolve(e, migration, *applied).await
        }
        StepAction::ClearFailed => steps::resolve::clear_failed(e).await,
        StepAction::Assess => steps::checks::assess(e, timeout).await,
    }
}
