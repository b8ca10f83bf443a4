//! Planning a deploy: the staging guard, the review of the pending scripts and the target's
//! table sizes and long transactions (for the lock review) are read only when the status alone
//! does not refuse it; the plan pins each script's checksum (never the sizes).

use crate::config::EnvironmentSettings;
use crate::core::operation::{OperationKind, PinnedMigration, Plan, PlannedStep, StepAction};
use crate::core::ports::Reads;
use crate::core::reply::Warning;
use crate::dbops::backup::BackupKind;
use crate::dbops::prisma;
use crate::services::environment::{migration_status, StepError};
use crate::services::pending::{
    missing_on_staging, review_pending, review_pending_with, PendingReview,
};
use crate::services::runbook::planning::locks::{
    columns_on_target, connect, lock_warnings, read_live,
};
use crate::services::runbook::planning::{
    not_gathered, DeployFacts, KindFacts, LiveFacts, StatusFacts,
};
use crate::services::runbook::step_builders::backup_step;

/// The facts of a deploy (and the server version its status read had).
pub(super) async fn gather_deploy(
    reads: Reads<'_>,
    env: &str,
    e: &EnvironmentSettings,
) -> Result<(KindFacts, Option<u32>), StepError> {
    let st = migration_status(e).await?;
    let server = st.server_version_num;
    let status = StatusFacts::from(&st);
    let (missing_on_staging, review, live) = if deploy_refusal(env, e, &status).is_none() {
        let (review, live) = review_with_target(reads, e, &st).await;
        (
            Some(missing_on_staging(reads, e, &st.deploy_would_apply).await),
            Some(review),
            live,
        )
    } else {
        (None, None, None)
    };
    Ok((
        KindFacts::Deploy(DeployFacts {
            status,
            missing_on_staging,
            review,
            live,
        }),
        server,
    ))
}

/// The review of the pending scripts, knowing the target's column types when they can be read,
/// and the target's sizes and long transactions, on one connection.
async fn review_with_target(
    reads: Reads<'_>,
    e: &EnvironmentSettings,
    st: &prisma::StatusReport,
) -> (Result<PendingReview, StepError>, Option<Box<LiveFacts>>) {
    let mut review = review_pending(e, st);
    let Ok(first) = &review else {
        return (review, None);
    };
    let mut target = connect(e).await;
    if let Some(known) = columns_on_target(&mut target, &first.locks).await {
        review = review_pending_with(e, st, &known);
    }
    let live = match &review {
        Ok(r) => Some(Box::new(
            read_live(target, &reads.settings.deploy, &r.locks).await,
        )),
        Err(_) => None,
    };
    (review, live)
}

/// Why a deploy is refused by the status alone: a failed migration (Prisma would stop with
/// P3009), or nothing to deploy.
pub fn deploy_refusal(env: &str, e: &EnvironmentSettings, st: &StatusFacts) -> Option<StepError> {
    if let Some(f) = st.failed.first() {
        return Some(StepError(format!(
            "{env} has a failed migration ({f}); deploy would stop with P3009. Resolve it first: `resolve {f} rolled-back` or `resolve {f} applied`, or `emergency`."
        )));
    }
    if st.deploy_would_apply.is_empty() {
        return Some(StepError(format!(
            "nothing to deploy: {env} has every migration of {} applied",
            e.migrations_dir.display()
        )));
    }
    None
}

/// The plan of a deploy: refused for a failed migration, nothing pending, or what staging
/// lacks; else a pre-deploy backup and the pinned migrations, with their data-loss warnings and
/// the lock review (sizes and long transactions as of `now`'s read).
pub(super) fn plan_deploy(
    kind: &OperationKind,
    env: &str,
    e: &EnvironmentSettings,
    d: &DeployFacts,
    now: i64,
) -> Result<Plan, StepError> {
    let st = &d.status;
    if let Some(refusal) = deploy_refusal(env, e, st) {
        return Err(refusal);
    }
    let missing = d
        .missing_on_staging
        .clone()
        .ok_or_else(|| not_gathered("the staging guard"))??;
    if !missing.is_empty() {
        let staging = e.require_staging.as_deref().unwrap_or_default();
        return Err(StepError(format!(
            "staging guard: {} not deployed to {staging} yet; deploy there first (require_staging = \"{staging}\")",
            missing.join(", ")
        )));
    }
    let review = d
        .review
        .clone()
        .ok_or_else(|| not_gathered("the review of the pending migrations"))??;
    let mut pinned_facts = vec![format!("applied: {}", st.applied.join(","))];
    pinned_facts.extend(
        review
            .checksums
            .iter()
            .map(|(m, sum)| format!("pending {m} checksum {sum}")),
    );
    let mut warnings: Vec<Warning> = review.data_loss.iter().map(Warning::danger).collect();
    if !review.no_down.is_empty() {
        warnings.push(Warning::caution(format!(
            "no down.sql (rollback would need a restore): {}",
            review.no_down.join(", ")
        )));
    }
    // Not pinned: sizes and sessions change while the request waits (see `locks`).
    if let Some(live) = &d.live {
        warnings.extend(lock_warnings(&review.locks, live, now));
    }
    Ok(Plan::new(
        kind,
        env,
        format!(
            "deploy {} migration(s) to {env}",
            st.deploy_would_apply.len()
        ),
        vec![
            backup_step(BackupKind::PreDeploy, None),
            PlannedStep::new(
                "apply migrations",
                st.deploy_would_apply.join(", "),
                StepAction::Deploy {
                    migrations: st.deploy_would_apply.clone(),
                    pinned: review
                        .checksums
                        .iter()
                        .map(|(m, sum)| PinnedMigration {
                            migration: m.clone(),
                            checksum: sum.clone(),
                        })
                        .collect(),
                },
            ),
        ],
        warnings,
        pinned_facts,
    ))
}
