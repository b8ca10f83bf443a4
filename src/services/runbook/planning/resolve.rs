//! Planning `resolve MIGRATION applied|rolled-back`: refused where Prisma would refuse it,
//! worded as Prisma words it; else a safety backup and the bookkeeping step.

use crate::config::EnvironmentSettings;
use crate::core::operation::{OperationKind, Plan, PlannedStep, StepAction};
use crate::dbops::backup::BackupKind;
use crate::dbops::prisma;
use crate::services::environment::{migration_status, StepError};
use crate::services::runbook::planning::{KindFacts, MigrationFacts, StatusFacts};
use crate::services::runbook::step_builders::backup_step;

/// The facts of a resolve (and the server version its status read had): the migration status.
pub(super) async fn gather_resolve(
    e: &EnvironmentSettings,
) -> Result<(KindFacts, Option<u32>), StepError> {
    let st = migration_status(e).await?;
    let server = st.server_version_num;
    Ok((KindFacts::Resolve(StatusFacts::from(&st)), server))
}

/// The plan of a resolve of `migration` as applied (`applied`) or rolled back.
pub(super) fn plan_resolve(
    kind: &OperationKind,
    env: &str,
    migration: &String,
    applied: bool,
    st: &StatusFacts,
) -> Result<Plan, StepError> {
    resolve_refusal(migration, applied, st)?;
    let how = if applied { "applied" } else { "rolled-back" };
    Ok(Plan::new(
        kind,
        env,
        format!("mark {migration} as {how} in {env}"),
        vec![
            backup_step(BackupKind::PreRollback, None),
            PlannedStep::new(format!("resolve --{how}"), format!("prisma migrate resolve --{how} {migration} (bookkeeping only; no SQL of the migration runs)"), StepAction::Resolve { migration: migration.clone(), applied }),
        ],
        vec![],
        vec![format!("applied: {}", st.applied.join(",")), format!("failed: {}", st.failed.join(","))],
    ))
}

/// Prisma's refusal of this resolve: marking applied what is applied, or rolling back what is
/// not applied or did not fail.
fn resolve_refusal(migration: &String, applied: bool, st: &StatusFacts) -> Result<(), StepError> {
    let rows: Vec<&MigrationFacts> = st
        .migrations
        .iter()
        .filter(|m| &m.name == migration)
        .collect();
    if applied {
        if st.applied.contains(migration) {
            return Err(prisma_refusal(prisma::PrismaUserError::already_applied(
                migration,
            )));
        }
    } else {
        if rows.is_empty()
            || rows
                .iter()
                .all(|m| m.state == prisma::MigrationState::Pending)
        {
            return Err(prisma_refusal(
                prisma::PrismaUserError::cannot_roll_back_unapplied(migration),
            ));
        }
        if !st.failed.iter().any(|f| f == migration) {
            return Err(prisma_refusal(
                prisma::PrismaUserError::cannot_roll_back_succeeded(migration),
            ));
        }
    }
    Ok(())
}

/// A Prisma precondition refused before anything runs, worded exactly as Prisma words it.
fn prisma_refusal(e: prisma::PrismaUserError) -> StepError {
    StepError(format!("{}: {}", e.code, e.message))
}
