//! The worker: claims queued operations and runs them step by step, off the interaction path.
//! Before the first step it recomputes the plan and stops if the fingerprint changed. Every step
//! is written to the store and the audit trail before and after it runs. Operations found
//! `running` at start-up (SQLite) or with a stale heartbeat (PostgreSQL replicas) are marked
//! `interrupted` and reported (the phases in `recovery.rs`); they are never resumed or re-run
//! by themselves.

mod recovery;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::core::audit::redact;
use crate::core::audit::NewAudit;
use crate::core::context::Core;
use crate::core::dispatch::kind_name;
use crate::core::event::ChannelRef;
use crate::core::meter;
use crate::core::operation::{OperationKind, Plan, PlannedStep, StepAction};
use crate::core::window;
use crate::services::runbook;
use crate::store::{Backend, OperationRow};

use recovery::{
    fail_running_backups, mark_interrupted, remove_partial_backups, report_interrupted,
};

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
        let stale = tx.running_operations(stale_before).await?;
        fail_running_backups(core, &mut tx, stale_before, &stale).await?;
        if stale_before.is_none() {
            remove_partial_backups(core);
        }
        mark_interrupted(core, &mut tx, &stale, now).await?;
        tx.commit().await?;
        report_interrupted(core, &stale).await?;
        Ok(stale)
    }

    /// Runs until `shutdown` turns true; waits for operations in progress before returning.
    /// Periodic jobs (request expiry, store pruning, stale-operation recovery) are the
    /// scheduler's ([`crate::services::scheduler`]).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut running: JoinSet<()> = JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            while let Some(done) = running.try_join_next() {
                log_panic(done);
            }
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
            tokio::select! {
                _ = self.core.worker_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                Some(done) = running.join_next(), if !running.is_empty() => log_panic(done),
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

/// An operation task that panicked stays `running` in the store; interruption recovery (the
/// next start, or a stale heartbeat on PostgreSQL) reports it.
fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "an operation task panicked; it is left for interruption recovery");
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// Decrements `in_flight` and stops the heartbeat however `run_operation` ends (panics too).
struct InFlight {
    core: Arc<Core>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.heartbeat.abort();
        self.core
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tracing::instrument(skip_all, fields(operation = %op.id, env = %op.env))]
async fn run_operation(core: Arc<Core>, worker: String, op: OperationRow) {
    let lost = Arc::new(AtomicBool::new(false));
    let (hb_core, hb_id, hb_worker, hb_lost) =
        (core.clone(), op.id.clone(), worker.clone(), lost.clone());
    let heartbeat = tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let now = hb_core.clock.now_ms();
            match hb_core.store.heartbeat(&hb_id, &hb_worker, now).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!("this worker no longer owns the operation (marked interrupted elsewhere); stopping after the current step");
                    hb_lost.store(true, Ordering::SeqCst);
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    });
    let _guard = InFlight {
        core: core.clone(),
        heartbeat,
    };
    let run = Run {
        core: &core,
        op: &op,
        worker: &worker,
        lost: &lost,
        started: std::time::Instant::now(),
    };
    if let Err(e) = run.execute().await {
        tracing::error!(error = format!("{e:#}"), "operation bookkeeping failed");
        // Best effort: never leave it running forever.
        let _ = run
            .finish(
                "failed",
                Some("internal error; see dualkey's log"),
                json!({"operation": op.id, "reason": "internal error"}),
            )
            .await;
    }
    if let Err(e) = core.refresh_operation_card(&op).await {
        tracing::warn!(error = format!("{e:#}"), "card refresh failed");
    }
}

/// One operation being run by this worker.
struct Run<'a> {
    core: &'a Arc<Core>,
    op: &'a OperationRow,
    worker: &'a str,
    lost: &'a AtomicBool,
    /// When this worker took it (for `dualkey_operation_duration_seconds`).
    started: std::time::Instant,
}

/// Outcome of a bookkeeping write that must precede or follow a step.
enum Booked {
    Done,
    /// Another replica took the operation over (marked it interrupted): stop now.
    NotOwner,
}

impl Run<'_> {
    /// Retries a bookkeeping transaction a few times (a busy SQLite file, a PostgreSQL
    /// failover) before giving up.
    async fn book(
        &self,
        what: &str,
        idx: i64,
        step: &PlannedStep,
        state: Option<(&str, &str)>,
    ) -> anyhow::Result<Booked> {
        let mut last = None;
        for attempt in 0..4u64 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 * attempt)).await;
            }
            let r: anyhow::Result<Booked> = async {
                let now = self.core.clock.now_ms();
                let mut tx = self.core.store.begin().await?;
                if !tx.owns_operation(&self.op.id, self.worker).await? {
                    return Ok(Booked::NotOwner);
                }
                let details = match state {
                    None => {
                        tx.start_step(&self.op.id, idx, &step.name, now).await?;
                        json!({"operation": self.op.id, "step": idx + 1, "name": step.name, "detail": step.detail})
                    }
                    Some((outcome, output)) => {
                        tx.finish_step(&self.op.id, idx, outcome, output, now).await?;
                        json!({"operation": self.op.id, "step": idx + 1, "name": step.name, "outcome": outcome, "output": output})
                    }
                };
                self.core.audit_tx(&mut tx, NewAudit::system(what, Some(&self.op.env), details)).await?;
                tx.commit().await?;
                Ok(Booked::Done)
            }
            .await;
            match r {
                Ok(b) => return Ok(b),
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), attempt, "step bookkeeping failed");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Moves the operation to a final state, only while this worker owns it.
    async fn finish(
        &self,
        to: &str,
        error: Option<&str>,
        details: serde_json::Value,
    ) -> anyhow::Result<()> {
        let now = self.core.clock.now_ms();
        let mut tx = self.core.store.begin().await?;
        if !tx.owns_operation(&self.op.id, self.worker).await? {
            tracing::error!(
                to,
                "operation was taken over before it finished; its final state stays as recorded"
            );
            return Ok(());
        }
        let error = error.map(redact);
        tx.transition_operation(
            &self.op.id,
            crate::core::operation::OperationState::Running,
            to.parse()?,
            error.as_deref(),
            now,
        )
        .await?;
        self.core
            .audit_tx(
                &mut tx,
                NewAudit::system(&format!("operation.{to}"), Some(&self.op.env), details),
            )
            .await?;
        if to == "succeeded" {
            // A deploy, rollback, restore or emergency that succeeded opens a monitoring window
            // in the same transaction: it exists exactly when the success does.
            self.open_monitoring(&mut tx).await?;
        }
        tx.commit().await?;
        let kind = serde_json::from_str::<OperationKind>(&self.op.kind_json);
        meter::operation(
            kind.map_or("unknown", |k| k.name()),
            to,
            self.started.elapsed(),
        );
        self.core.outbox_wake.notify_one();
        Ok(())
    }

    /// Opens the monitoring window of a successful change (see
    /// [`crate::core::window::open_window_tx`]); nothing for kinds that change no
    /// schema or data.
    async fn open_monitoring(&self, tx: &mut Box<dyn crate::store::Tx>) -> anyhow::Result<()> {
        let kind: OperationKind = serde_json::from_str(&self.op.kind_json)?;
        let plan: Plan = serde_json::from_str(&self.op.plan_json)?;
        let Some((kind, migrations, rollback_target)) = window::change_of(&kind, &plan) else {
            return Ok(());
        };
        window::open_window_tx(
            self.core,
            tx,
            window::NewWindow {
                env: self.op.env.clone(),
                opened_by: "system".into(),
                account: None,
                operation_id: Some(self.op.id.clone()),
                kind,
                migrations,
                rollback_target,
                channel: serde_json::from_str::<ChannelRef>(&self.op.channel_json).ok(),
                minutes: None,
            },
        )
        .await?;
        Ok(())
    }

    async fn execute(&self) -> anyhow::Result<()> {
        let op = self.op;
        let kind: OperationKind = serde_json::from_str(&op.kind_json)?;
        let approved: Plan = serde_json::from_str(&op.plan_json)?;
        let plan = match self.recheck_plan(&kind, &approved).await {
            Ok(p) => p,
            Err((reason, details)) => return self.finish("failed", Some(&reason), details).await,
        };
        let failure = match self.run_steps(&plan).await {
            StepsEnded::Stop => return Ok(()),
            StepsEnded::Ran(failure) => failure,
        };
        if let Some(reason) = failure {
            return self
                .finish(
                    "failed",
                    Some(&reason),
                    json!({"operation": op.id, "reason": reason}),
                )
                .await;
        }
        self.finish(
            "succeeded",
            None,
            json!({"operation": op.id, "kind": kind.name(), "steps": plan.steps.len()}),
        )
        .await
    }

    /// The plan recomputed before the first step, or why nothing runs (the reason and the audit
    /// details of the failure): it could not be recomputed, or its fingerprint changed.
    async fn recheck_plan(
        &self,
        kind: &OperationKind,
        approved: &Plan,
    ) -> Result<Plan, (String, serde_json::Value)> {
        let (core, op) = (self.core, self.op);
        let plan = match runbook::plan(core.reads(), kind, &op.env).await {
            Ok(p) => p,
            Err(e) => {
                let reason = format!(
                    "could not recompute the plan before the first step, nothing was run: {e}"
                );
                let details = json!({"operation": op.id, "reason": reason});
                return Err((reason, details));
            }
        };
        if plan.fingerprint != op.fingerprint {
            let reason = format!(
                "the plan changed since it was approved ({}); nothing was run. Request it again to review the new plan.",
                approved.diff(&plan)
            );
            let details = json!({"operation": op.id, "reason": "plan fingerprint changed", "approved": approved.short_fingerprint(), "now": plan.short_fingerprint()});
            return Err((reason, details));
        }
        Ok(plan)
    }

    /// Runs the plan's steps in order. After a failure, nothing runs except `always` steps
    /// that undo an earlier step (start the app again only if this operation stopped it). A
    /// failed safety backup therefore stops everything.
    async fn run_steps(&self, plan: &Plan) -> StepsEnded {
        let (core, op) = (self.core, self.op);
        let mut failure: Option<String> = None;
        let mut app_stopped = false;
        for (idx, step) in plan.steps.iter().enumerate() {
            let k = idx as i64;
            let undo = step.always && matches!(step.action, StepAction::AppStart) && app_stopped;
            if failure.is_some() && !undo {
                continue;
            }
            if self.lost.load(Ordering::SeqCst) {
                tracing::error!("ownership lost; no further step runs here");
                return StepsEnded::Stop;
            }
            match self.book("step.started", k, step, None).await {
                Ok(Booked::Done) => {}
                Ok(Booked::NotOwner) => return StepsEnded::Stop,
                Err(e) => {
                    // Never run a step whose start could not be audited.
                    failure.get_or_insert_with(|| {
                        format!(
                            "step {} ({}) not started: the state store failed: {e:#}",
                            idx + 1,
                            step.name
                        )
                    });
                    continue;
                }
            }
            if let Err(e) = core.refresh_operation_card(op).await {
                tracing::warn!(error = format!("{e:#}"), "card refresh failed");
            }
            if matches!(step.action, StepAction::AppStop) {
                app_stopped = true;
            }
            if let Booked::NotOwner = self.run_step(idx, step, &mut failure).await {
                return StepsEnded::Stop;
            }
        }
        StepsEnded::Ran(failure)
    }

    /// Runs one step whose start was recorded, then records how it ended; the first failure
    /// goes into `failure`. `NotOwner` when another replica took the operation over.
    async fn run_step(
        &self,
        idx: usize,
        step: &PlannedStep,
        failure: &mut Option<String>,
    ) -> Booked {
        let (core, op) = (self.core, self.op);
        let k = idx as i64;
        let began = std::time::Instant::now();
        let result = runbook::run_step(core, op, step).await;
        let (outcome, output) = match &result {
            Ok(out) => ("succeeded", redact(out)),
            Err(e) => ("failed", redact(&e.0)),
        };
        meter::step(step.action.name(), outcome, began.elapsed());
        if result.is_err() {
            failure.get_or_insert_with(|| {
                format!("step {} ({}) failed: {output}", idx + 1, step.name)
            });
        }
        match self
            .book("step.finished", k, step, Some((outcome, &output)))
            .await
        {
            Ok(Booked::Done) => {}
            Ok(Booked::NotOwner) => return Booked::NotOwner,
            Err(e) => {
                failure.get_or_insert_with(|| {
                    format!(
                        "step {} ({}) ran ({outcome}) but could not be recorded: {e:#}",
                        idx + 1,
                        step.name
                    )
                });
            }
        }
        Booked::Done
    }
}

/// How the steps of an operation ended.
enum StepsEnded {
    /// This worker no longer owns the operation: stop without a final state.
    Stop,
    /// Every step that should run ran; the first failure, if any.
    Ran(Option<String>),
}
