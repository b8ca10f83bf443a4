//! The deploy step: applies exactly the approved migrations (pinned by checksum), each one
//! audited before and after it runs, under `[deploy] lock_timeout`/`statement_timeout` with
//! `lock_retries` tries after a lock timeout, and never while a `pg_dump` runs on the target.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde_json::json;

use crate::config::{format_duration, EnvironmentSettings};
use crate::core::context::Core;
use crate::core::operation::PinnedMigration;
use crate::dbops::prisma;
use crate::dbops::sessions::dump_sessions;
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
    let settings = &core.settings.deploy;
    let options = crate::services::environment::deploy_options(settings);
    let deadline = Instant::now() + settings.dump_wait.0;
    // Waits for dumps, then deploys; the deploy checks again under Prisma's advisory lock,
    // before its first write, and a dump that started in between sends it back to waiting.
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        wait_for_dumps(core, op, &observer, url.expose_secret(), left).await?;
        match prisma::deploy_pinned(
            url.expose_secret(),
            &e.migrations_dir,
            &approved,
            options,
            &mut observer,
        )
        .await
        {
            Err(prisma::PrismaError::DumpRunning(_)) if Instant::now() < deadline => continue,
            other => break other,
        }
    };
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
    summary(&out)
}

/// The step's result: what was applied, and where and why it stopped.
fn summary(out: &prisma::DeployOutcome) -> Result<String, StepError> {
    match &out.stopped {
        None if out.applied.is_empty() => Ok("no pending migrations to apply".into()),
        None => Ok(format!("applied {}", out.applied.join(", "))),
        Some(
            stop @ prisma::DeployStop {
                reason: prisma::DeployStopReason::LockTimeout { .. },
                ..
            },
        ) => Err(StepError(format!(
            "applied [{}], then {}",
            out.applied.join(", "),
            stop.message()
        ))),
        Some(stop) => Err(StepError(format!(
            "applied [{}], then {} failed: {}",
            out.applied.join(", "),
            stop.migration,
            stop.message()
        ))),
    }
}

/// How often the target is asked for `pg_dump` sessions while a deploy waits.
const DUMP_POLL: Duration = Duration::from_millis(250);

/// A dump seen for less than this is not announced: the pre-deploy backup's own session may
/// still be listed for a moment after its `pg_dump` exited.
const DUMP_GRACE: Duration = Duration::from_secs(1);

/// Waits, up to `wait`, until no `pg_dump` session (dualkey's scheduled backup, or anyone's)
/// runs on the target, saying so on the card and in the audit trail once; fails with nothing
/// applied when one still runs after `wait`.
async fn wait_for_dumps(
    core: &Arc<Core>,
    op: &OperationRow,
    audit: &AuditObserver,
    url: &str,
    wait: Duration,
) -> Result<(), StepError> {
    let fault = |e: String| {
        StepError(format!(
            "could not check the target for a running pg_dump: {e}; nothing was applied"
        ))
    };
    let mut target = prisma::Target::connect(url)
        .await
        .map_err(|e| fault(e.to_string()))?;
    let begun = Instant::now();
    let mut announced = false;
    let result = loop {
        let dumps = match dump_sessions(&mut target.conn).await {
            Ok(d) => d,
            Err(e) => break Err(fault(e.to_string())),
        };
        if dumps.is_empty() {
            break Ok(());
        }
        let names: Vec<String> = dumps.iter().map(ToString::to_string).collect();
        let waited = begun.elapsed();
        if waited >= wait {
            break Err(StepError(format!(
                "a pg_dump still runs on the target after waiting {}: {}. Nothing was applied; request the deploy again once it is done (or raise [deploy] dump_wait)",
                format_duration(wait),
                names.join("; ")
            )));
        }
        if !announced && waited >= DUMP_GRACE.min(wait) {
            announced = true;
            let pids: Vec<String> = dumps.iter().map(|d| d.pid.to_string()).collect();
            let line = format!(
                "waiting for pg_dump (pid {}) to finish before applying migrations (up to {})",
                pids.join(", "),
                format_duration(wait)
            );
            let _ = core.show_progress(op, &line).await;
            let details = json!({"operation": op.id, "dumps": dumps, "wait_s": wait.as_secs()});
            if let Err(e) = audit.write("deploy.waiting_for_dump", details).await {
                break Err(StepError(e));
            }
        }
        tokio::time::sleep(DUMP_POLL).await;
    };
    target.close().await;
    result
}
