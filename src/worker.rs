//! The worker: claims queued operations and runs them step by step, off the interaction path.
//! Before the first step it recomputes the plan and stops if the fingerprint changed. Every step
//! is written to the store and the audit trail before and after it runs. Operations found
//! `running` at start-up (SQLite) or with a stale heartbeat (PostgreSQL replicas) are marked
//! `interrupted` and reported; they are never resumed or re-run by themselves.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::core::audit::NewAudit;
use crate::core::dispatch::{kind_name, Core};
use crate::core::event::ChannelRef;
use crate::core::operation::{OperationKind, Plan};
use crate::core::reply::Reply;
use crate::runbook;
use crate::store::{Backend, OperationRow};

/// How often a running operation's heartbeat is refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A PostgreSQL replica whose heartbeat is older than this is considered dead.
pub const LEASE: Duration = Duration::from_secs(30);

/// Claims and runs operations.
pub struct Worker {
    core: Arc<Core>,
    id: String,
}

impl Worker {
    /// A worker with a unique id (host + process + random).
    pub fn new(core: Arc<Core>) -> Worker {
        let id = format!(
            "{}-{}-{:06x}",
            hostname(),
            std::process::id(),
            rand::random::<u32>() & 0xff_ffff
        );
        Worker { core, id }
    }

    /// Marks operations left `running` by a dead process as `interrupted`, audits and reports
    /// them. On SQLite (one process per store) every running operation is stale at start-up; on
    /// PostgreSQL only those whose heartbeat is older than [`LEASE`].
    pub async fn recover_interrupted(
        core: &Core,
        at_startup: bool,
    ) -> anyhow::Result<Vec<OperationRow>> {
        let now = core.clock.now_ms();
        let stale_before = match (core.store.backend(), at_startup) {
            (Backend::Sqlite, true) => None,
            _ => Some(now - LEASE.as_millis() as i64),
        };
        let mut tx = core.store.begin().await?;
        if stale_before.is_none() {
            // Backups left `running` by a killed process never finished: no file, no ok entry.
            for mut b in tx.running_backups().await? {
                b.state = "failed".into();
                b.error = Some("dualkey stopped while this backup ran".into());
                tx.put_backup(&b).await?;
                core.audit_tx(
                    &mut tx,
                    NewAudit::system(
                        "backup.failed",
                        Some(&b.env),
                        json!({"backup": b.id, "error": "interrupted"}),
                    ),
                )
                .await?;
            }
            for (name, e) in &core.settings.environments {
                let dir = e.backup_dir.join(name);
                if let Ok(removed) = crate::dbops::backup::cleanup_partials(&dir, Duration::ZERO) {
                    for p in removed {
                        tracing::warn!(path = %p.display(), "removed a partial backup left by a stopped process");
                    }
                }
            }
        }
        let stale = tx.running_operations(stale_before).await?;
        for op in &stale {
            tx.transition_operation(
                &op.id,
                "running",
                "interrupted",
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
            core.audit_tx(&mut tx, NewAudit::system("operation.interrupted", Some(&op.env), json!({"operation": op.id, "kind": kind_name(&op.kind_json), "step": op.current_step.map(|k| k + 1)}))).await?;
        }
        tx.commit().await?;
        for op in &stale {
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
            if let Ok(channel) = serde_json::from_str::<ChannelRef>(&op.channel_json) {
                core.post(&channel, &Reply::public(text)).await?;
            }
            core.refresh_operation_card(op).await?;
        }
        Ok(stale)
    }

    /// Runs until `shutdown` turns true; waits for operations in progress before returning.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut running: JoinSet<()> = JoinSet::new();
        let mut ticks = 0u64;
        loop {
            if *shutdown.borrow() {
                break;
            }
            while running.try_join_next().is_some() {}
            match self.claim().await {
                Ok(Some(op)) => {
                    self.core
                        .in_flight
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let core = self.core.clone();
                    let wid = self.id.clone();
                    running.spawn(async move { run_operation(core, wid, op).await });
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = format!("{e:#}"), "claiming an operation failed"),
            }
            ticks += 1;
            if let Err(e) = self.core.expire_requests().await {
                tracing::error!(error = format!("{e:#}"), "expiring requests failed");
            }
            if self.core.store.backend() == Backend::Postgres && ticks.is_multiple_of(10) {
                if let Err(e) = Worker::recover_interrupted(&self.core, false).await {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "recovering stale operations failed"
                    );
                }
            }
            tokio::select! {
                _ = self.core.worker_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = running.join_next(), if !running.is_empty() => {}
                _ = shutdown.changed() => {}
            }
        }
        if !running.is_empty() {
            tracing::info!(
                count = running.len(),
                "waiting for running operations to finish"
            );
        }
        while running.join_next().await.is_some() {}
    }

    async fn claim(&self) -> anyhow::Result<Option<OperationRow>> {
        let now = self.core.clock.now_ms();
        let mut tx = self.core.store.begin().await?;
        let Some(op) = tx.claim_operation(&self.id, now).await? else {
            return Ok(None);
        };
        self.core
            .audit_tx(&mut tx, NewAudit::system("operation.started", Some(&op.env), json!({"operation": op.id, "kind": kind_name(&op.kind_json), "worker": self.id})))
            .await?;
        tx.commit().await?;
        Ok(Some(op))
    }

    /// True when no operation is queued or running (used by the shell to know when it is done).
    pub async fn idle(core: &Core) -> anyhow::Result<bool> {
        Ok(
            core.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0
                && core.store.active_operations().await?.is_empty(),
        )
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "host".into())
}

#[tracing::instrument(skip_all, fields(operation = %op.id, env = %op.env))]
async fn run_operation(core: Arc<Core>, worker: String, op: OperationRow) {
    let hb_core = core.clone();
    let (hb_id, hb_worker) = (op.id.clone(), worker.clone());
    let heartbeat = tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let now = hb_core.clock.now_ms();
            if let Err(e) = hb_core.store.heartbeat(&hb_id, &hb_worker, now).await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    });
    if let Err(e) = execute(&core, &op).await {
        tracing::error!(error = format!("{e:#}"), "operation bookkeeping failed");
        // Best effort: never leave it running forever.
        if let Ok(mut tx) = core.store.begin().await {
            let now = core.clock.now_ms();
            let _ = tx
                .transition_operation(
                    &op.id,
                    "running",
                    "failed",
                    Some("internal error; see dualkey's log"),
                    now,
                )
                .await;
            let _ = core
                .audit_tx(
                    &mut tx,
                    NewAudit::system(
                        "operation.failed",
                        Some(&op.env),
                        json!({"operation": op.id, "reason": "internal error"}),
                    ),
                )
                .await;
            let _ = tx.commit().await;
        }
    }
    heartbeat.abort();
    if let Err(e) = core.refresh_operation_card(&op).await {
        tracing::warn!(error = format!("{e:#}"), "card refresh failed");
    }
    core.in_flight
        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
}

async fn finish(
    core: &Core,
    op: &OperationRow,
    to: &str,
    error: Option<&str>,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    let now = core.clock.now_ms();
    let mut tx = core.store.begin().await?;
    tx.transition_operation(&op.id, "running", to, error, now)
        .await?;
    core.audit_tx(
        &mut tx,
        NewAudit::system(&format!("operation.{to}"), Some(&op.env), details),
    )
    .await?;
    tx.commit().await?;
    core.outbox_wake.notify_one();
    Ok(())
}

async fn execute(core: &Arc<Core>, op: &OperationRow) -> anyhow::Result<()> {
    let kind: OperationKind = serde_json::from_str(&op.kind_json)?;
    let approved: Plan = serde_json::from_str(&op.plan_json)?;
    let plan = match runbook::plan(core, &kind, &op.env).await {
        Ok(p) => p,
        Err(e) => {
            let reason =
                format!("could not recompute the plan before the first step, nothing was run: {e}");
            return finish(
                core,
                op,
                "failed",
                Some(&reason),
                json!({"operation": op.id, "reason": reason}),
            )
            .await;
        }
    };
    if plan.fingerprint != op.fingerprint {
        let reason = format!(
            "the plan changed since it was approved ({}); nothing was run. Request it again to review the new plan.",
            approved.diff(&plan)
        );
        return finish(core, op, "failed", Some(&reason), json!({"operation": op.id, "reason": "plan fingerprint changed", "approved": approved.short_fingerprint(), "now": plan.short_fingerprint()})).await;
    }
    // After a failure only `always` steps run (starting the app again after a failed restore).
    let mut failure: Option<String> = None;
    for (idx, step) in plan.steps.iter().enumerate() {
        if failure.is_some() && !step.always {
            continue;
        }
        let k = idx as i64;
        let now = core.clock.now_ms();
        let mut tx = core.store.begin().await?;
        tx.start_step(&op.id, k, &step.name, now).await?;
        core.audit_tx(&mut tx, NewAudit::system("step.started", Some(&op.env), json!({"operation": op.id, "step": idx + 1, "name": step.name, "detail": step.detail}))).await?;
        tx.commit().await?;
        core.refresh_operation_card(op).await?;
        let result = runbook::run_step(core, op, step).await;
        let now = core.clock.now_ms();
        let (state, output) = match &result {
            Ok(out) => ("succeeded", out.clone()),
            Err(e) => ("failed", e.0.clone()),
        };
        let mut tx = core.store.begin().await?;
        tx.finish_step(&op.id, k, state, &output, now).await?;
        core.audit_tx(&mut tx, NewAudit::system("step.finished", Some(&op.env), json!({"operation": op.id, "step": idx + 1, "name": step.name, "outcome": state, "output": output}))).await?;
        tx.commit().await?;
        if let Err(e) = result {
            failure
                .get_or_insert_with(|| format!("step {} ({}) failed: {}", idx + 1, step.name, e.0));
        }
    }
    if let Some(reason) = failure {
        return finish(
            core,
            op,
            "failed",
            Some(&reason),
            json!({"operation": op.id, "reason": reason}),
        )
        .await;
    }
    finish(
        core,
        op,
        "succeeded",
        None,
        json!({"operation": op.id, "kind": kind.name(), "steps": plan.steps.len()}),
    )
    .await
}
