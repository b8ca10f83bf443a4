//! The rehearsal runner: runs the rehearsals the core queued (a deploy request in `auto` mode,
//! or `rehearse [ENV]`) off the interaction path, one per environment under the store lease
//! `rehearsal:<env>` (renewed while it runs, so with several replicas on a PostgreSQL store only
//! one runs an environment's rehearsal).
//!
//! - A rehearsal row moves `queued -> running -> passed | failed | error`; a newer one of the
//!   same environment marks it `superseded`, which the runner sees within a second (it polls the
//!   row) and cancels the engine: the scratch database is dropped and nothing is recorded.
//! - At start, for every environment whose lease this process takes (every one on a SQLite
//!   store: one process), rows left `running` by a stopped process become `error`
//!   ("interrupted by a restart") and the scratch database a killed rehearsal left is dropped,
//!   as drills are.
//! - The figures (per migration: time, tables rewritten, error) are audited as
//!   `rehearsal.finished`, stored with the row (the summary line the card shows, and the
//!   outcome as JSON), and the request's card is refreshed; a `rehearse` without a request gets
//!   its result posted where it was asked.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::engine::{self, RehearsalOutcome};
use crate::core::approval::RequestState;
use crate::core::audit::NewAudit;
use crate::core::context::Core;
use crate::core::event::ChannelRef;
use crate::core::notify::enqueue_posts;
use crate::core::ports::Backend;
use crate::core::reply::Reply;
use crate::store::{RehearsalEnd, RehearsalRow};

/// How long a rehearsal lease lasts without renewal.
const LEASE_MS: i64 = 60_000;
/// How often a running rehearsal looks at its row (superseded?) and at the stop signal.
const POLL: Duration = Duration::from_secs(1);
/// Polls between lease renewals.
const RENEW_EVERY: u32 = 10;
/// How often the loop looks for queued rehearsals without a wake-up.
const TICK: Duration = Duration::from_secs(5);

/// The lease an environment's rehearsal runs under.
pub fn lease_name(env: &str) -> String {
    format!("rehearsal:{env}")
}

/// Runs queued rehearsals until `stop` turns true, then cancels the running ones and waits for
/// them (their rows end as `error`, their scratch databases dropped by the engine).
pub async fn run(core: Arc<Core>, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    if let Err(e) = recover(&core).await {
        tracing::error!(
            error = format!("{e:#}"),
            "could not recover interrupted rehearsals"
        );
    }
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut busy: HashSet<String> = HashSet::new();
    while !*stop.borrow() {
        if let Err(e) = recover_orphans(&core, &busy).await {
            tracing::error!(error = format!("{e:#}"), "recovering orphaned rehearsals");
        }
        if let Err(e) = start_due(&core, &stop, &mut tasks, &mut busy).await {
            tracing::error!(error = format!("{e:#}"), "rehearsal runner");
        }
        tokio::select! {
            _ = core.rehearsal_wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => {}
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                match done {
                    Ok(env) => { busy.remove(&env); }
                    Err(e) => {
                        tracing::error!(error = %e, "a rehearsal task panicked");
                        busy.clear();
                    }
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Logs how the runner's task ended, when it did not end well (it never stops start-up or
/// shutdown).
pub fn log_end(joined: Result<anyhow::Result<()>, tokio::task::JoinError>) {
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = format!("{e:#}"), "rehearsal runner stopped"),
        Err(e) => tracing::error!(error = %e, "rehearsal runner panicked"),
    }
}

/// On a PostgreSQL store (several replicas), while running: a rehearsal left `running` by a
/// replica that died after this one started is recovered once its lease has run out (this
/// process gets the environment's lease while running none of its rehearsals): marked `error`,
/// its scratch database dropped. A live replica renews its lease, so its rehearsal is never
/// taken for dead. (A SQLite store is one process: [`recover`] at start covers it.)
async fn recover_orphans(core: &Arc<Core>, busy: &HashSet<String>) -> anyhow::Result<()> {
    if core.store.backend() != Backend::Postgres {
        return Ok(());
    }
    let holder = core.lease_holder("rehearsal");
    let mut seen: HashSet<String> = HashSet::new();
    for row in core.store.rehearsals_in("running").await? {
        if busy.contains(&row.env) || !seen.insert(row.env.clone()) {
            continue;
        }
        let now = core.clock.now_ms();
        if !core
            .store
            .try_lease(&lease_name(&row.env), &holder, now, LEASE_MS)
            .await?
        {
            continue;
        }
        interrupt_left(core, &row.env).await?;
        drop_left(core, &row.env).await?;
    }
    Ok(())
}

/// Starts the oldest queued rehearsal of every environment that has none running here and
/// whose lease this process gets.
async fn start_due(
    core: &Arc<Core>,
    stop: &watch::Receiver<bool>,
    tasks: &mut JoinSet<String>,
    busy: &mut HashSet<String>,
) -> anyhow::Result<()> {
    let holder = core.lease_holder("rehearsal");
    for row in core.store.rehearsals_in("queued").await? {
        if busy.contains(&row.env) {
            continue;
        }
        let now = core.clock.now_ms();
        if !core
            .store
            .try_lease(&lease_name(&row.env), &holder, now, LEASE_MS)
            .await?
        {
            continue;
        }
        busy.insert(row.env.clone());
        let (core, stop) = (core.clone(), stop.clone());
        tasks.spawn(async move {
            let env = row.env.clone();
            if let Err(e) = run_one(&core, row, stop).await {
                tracing::error!(env = %env, error = format!("{e:#}"), "rehearsal failed to run");
            }
            env
        });
    }
    Ok(())
}

/// Runs one rehearsal: start (audited), the engine under a poll that cancels it when the row
/// is superseded or dualkey stops, then the end (stored, audited, card refreshed or posted).
async fn run_one(
    core: &Arc<Core>,
    row: RehearsalRow,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let holder = core.lease_holder("rehearsal");
    let mut tx = core.store.begin().await?;
    if !tx
        .start_rehearsal(&row.id, &holder, core.clock.now_ms())
        .await?
    {
        return Ok(());
    }
    let pinned = row.pinned();
    let names: Vec<&str> = pinned.iter().map(|(m, _)| m.as_str()).collect();
    let details = json!({"rehearsal": row.id, "request": row.request_id, "migrations": names});
    core.audit_tx(
        &mut tx,
        NewAudit::system("rehearsal.started", Some(&row.env), details),
    )
    .await?;
    tx.commit().await?;
    core.outbox_wake.notify_one();
    refresh(core, &row).await;
    let result = watch_engine(core, &row, stop).await;
    finish(core, &row, result).await
}

/// Runs the engine, polling the row every second: when it is no longer `running` (superseded)
/// or dualkey stops, the engine is told to stop. Renews the lease meanwhile.
async fn watch_engine(
    core: &Arc<Core>,
    row: &RehearsalRow,
    stop: watch::Receiver<bool>,
) -> Result<RehearsalOutcome, String> {
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let pinned = row.pinned();
    let run = engine::rehearse(core, &row.env, &pinned, cancel_rx);
    tokio::pin!(run);
    let holder = core.lease_holder("rehearsal");
    let mut polls = 0u32;
    loop {
        tokio::select! {
            r = &mut run => return r.map_err(|e| e.to_string()),
            _ = tokio::time::sleep(POLL) => {}
        }
        polls += 1;
        let gone = match core.store.get_rehearsal(&row.id).await {
            Ok(Some(r)) => r.state != "running",
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the rehearsal row");
                false
            }
        };
        if gone || *stop.borrow() {
            let _ = cancel_tx.send(true);
        }
        if polls.is_multiple_of(RENEW_EVERY) {
            let now = core.clock.now_ms();
            let _ = core
                .store
                .try_lease(&lease_name(&row.env), &holder, now, LEASE_MS)
                .await;
        }
    }
}

/// How a rehearsal ended, from the engine's result.
fn end_of(result: &Result<RehearsalOutcome, String>, now: i64) -> RehearsalEnd {
    match result {
        Ok(o) => RehearsalEnd {
            state: if o.passed() { "passed" } else { "failed" }.into(),
            summary: Some(o.summary(now)),
            outcome_json: serde_json::to_string(o).ok(),
            error: o
                .migrations
                .iter()
                .find_map(|m| m.error.as_ref().map(|e| format!("{}: {e}", m.name))),
        },
        Err(e) => RehearsalEnd {
            state: "error".into(),
            error: Some(e.clone()),
            ..Default::default()
        },
    }
}

/// The audit details of a finished rehearsal: its figures per migration.
fn figures(
    row: &RehearsalRow,
    end: &RehearsalEnd,
    result: &Result<RehearsalOutcome, String>,
) -> serde_json::Value {
    let migrations: Vec<serde_json::Value> = match result {
        Ok(o) => o
            .migrations
            .iter()
            .map(|m| json!({"name": m.name, "ms": m.duration_ms, "rewrote": m.rewrote, "locks": m.locks, "error": m.error}))
            .collect(),
        Err(_) => Vec::new(),
    };
    let backup = result.as_ref().ok().map(|o| json!({"id": o.backup_id, "fresh": o.fresh_backup, "restore_ms": o.restore_ms, "largest_table": o.largest_table}));
    json!({"rehearsal": row.id, "request": row.request_id, "set": &row.set_digest[..12.min(row.set_digest.len())], "state": end.state, "summary": end.summary, "error": end.error, "backup": backup, "total_ms": result.as_ref().ok().map(|o| o.total_ms), "migrations": migrations})
}

/// Records the end (only while the row is still `running`: a superseded one records nothing),
/// audits it, and refreshes the card or posts the result where `rehearse` was asked.
async fn finish(
    core: &Arc<Core>,
    row: &RehearsalRow,
    result: Result<RehearsalOutcome, String>,
) -> anyhow::Result<()> {
    let now = core.clock.now_ms();
    let end = end_of(&result, now);
    let mut tx = core.store.begin().await?;
    if !tx.finish_rehearsal(&row.id, &end, now).await? {
        tracing::info!(rehearsal = %row.id, "rehearsal superseded; its result is not kept");
        return Ok(());
    }
    let details = figures(row, &end, &result);
    core.audit_tx(
        &mut tx,
        NewAudit::system("rehearsal.finished", Some(&row.env), details),
    )
    .await?;
    if let (None, Some(ch)) = (&row.request_id, &row.channel_json) {
        let channel: ChannelRef = serde_json::from_str(ch)?;
        let text = result_text(row, &end);
        let payload = serde_json::to_string(&Reply::public(text))?;
        enqueue_posts(tx.as_mut(), &[channel], &payload, None, now).await?;
    }
    tx.commit().await?;
    core.outbox_wake.notify_one();
    refresh(core, row).await;
    Ok(())
}

/// The message `rehearse` gets when its rehearsal ends.
pub fn result_text(row: &RehearsalRow, end: &RehearsalEnd) -> String {
    let head = match end.state.as_str() {
        "passed" => format!("Rehearsal {} in {} passed.", row.id, row.env),
        "failed" => format!(
            "Rehearsal {} in {} FAILED: {}",
            row.id,
            row.env,
            end.error.as_deref().unwrap_or("a migration failed")
        ),
        _ => format!(
            "Rehearsal {} in {} could not run: {}",
            row.id,
            row.env,
            end.error.as_deref().unwrap_or("unknown error")
        ),
    };
    match &end.summary {
        Some(s) => format!("{head}\n{s}"),
        None => head,
    }
}

/// Refreshes the cards that show the rehearsal: its request's, and every other pending request
/// of its environment (a request with the same set shows it too); a failure is logged.
async fn refresh(core: &Core, row: &RehearsalRow) {
    let mut ids: Vec<String> = row.request_id.iter().cloned().collect();
    match core
        .store
        .list_requests(Some(RequestState::Pending), 100)
        .await
    {
        Ok(pending) => ids.extend(
            pending
                .into_iter()
                .filter(|r| r.env == row.env && Some(&r.id) != row.request_id.as_ref())
                .map(|r| r.id),
        ),
        Err(e) => tracing::warn!(error = %e, "could not list the pending requests"),
    }
    for id in ids {
        if let Err(e) = core.refresh_request_card(&id).await {
            tracing::warn!(request = %id, error = format!("{e:#}"), "could not refresh the card");
        }
    }
}

/// At start: for every environment whose rehearsal lease this process gets, rehearsals left
/// `running` become `error` (audited, cards refreshed) and a leftover scratch database is
/// dropped. A SQLite store has one process (a lock file enforces it): there every environment
/// is recovered, so that a killed predecessor's unexpired lease does not keep its leftovers.
pub async fn recover(core: &Arc<Core>) -> anyhow::Result<()> {
    let holder = core.lease_holder("rehearsal");
    let envs: Vec<String> = core.settings.environments.keys().cloned().collect();
    // On SQLite one process owns the store, so whatever is left `running` at start is this
    // store's dead process's, even while its lease has not expired yet (a restart within a
    // minute); on PostgreSQL a live lease may be another replica's rehearsal in progress.
    let single_process = core.store.backend() == Backend::Sqlite;
    for env in envs {
        let now = core.clock.now_ms();
        let leased = core
            .store
            .try_lease(&lease_name(&env), &holder, now, LEASE_MS)
            .await?;
        if !leased && !single_process {
            continue;
        }
        interrupt_left(core, &env).await?;
        drop_left(core, &env).await?;
    }
    Ok(())
}

/// Drops the scratch database a stopped rehearsal of `env` left (audited); an unreachable target
/// is only logged (`status` and `doctor` report it).
async fn drop_left(core: &Arc<Core>, env: &str) -> anyhow::Result<()> {
    match engine::drop_leftover(core, env).await {
        Ok(true) => {
            tracing::warn!(env = %env, "dropped a rehearsal database left by a stopped rehearsal");
            let details = json!({"scratch": crate::dbops::backup::REHEARSAL_SUFFIX});
            core.audit(NewAudit::system(
                "rehearsal.stale_dropped",
                Some(env),
                details,
            ))
            .await?;
        }
        Ok(false) => {}
        // An unreachable target is reported by `status` and `doctor`, not at every start.
        Err(e) => {
            tracing::debug!(env = %env, error = %e, "could not check for a leftover rehearsal database")
        }
    }
    Ok(())
}

/// Marks the rehearsals of `env` left `running` (by a process that stopped) as `error`
/// ("interrupted by a restart"), audited as `rehearsal.interrupted`, and refreshes their cards.
/// The caller holds the environment's rehearsal lease. Returns how many there were.
pub async fn interrupt_left(core: &Arc<Core>, env: &str) -> anyhow::Result<usize> {
    let mut tx = core.store.begin().await?;
    let left = tx
        .interrupt_rehearsals(env, "interrupted by a restart", core.clock.now_ms())
        .await?;
    for r in &left {
        let details = json!({"rehearsal": r.id, "request": r.request_id});
        core.audit_tx(
            &mut tx,
            NewAudit::system("rehearsal.interrupted", Some(env), details),
        )
        .await?;
    }
    tx.commit().await?;
    for r in &left {
        refresh(core, r).await;
    }
    Ok(left.len())
}
