//! Planning a rollback: by `down.sql` when nothing blocks it (or when asked), else by restoring
//! the newest verified backup taken before the migration, preferably one with exactly the
//! migrations before it. The pure questions here are shared by gathering and planning.

use std::collections::BTreeSet;

use secrecy::ExposeSecret;

use crate::config::EnvironmentSettings;
use crate::core::human;
use crate::core::operation::{OperationKind, Plan, PlannedStep, RollbackStrategy, StepAction};
use crate::core::ports::Reads;
use crate::core::reply::Warning;
use crate::dbops::backup::BackupKind;
use crate::dbops::lockreview::{review_script_with, KnownColumns, ScriptReview};
use crate::dbops::prisma;
use crate::services::backups::health::backup_migrations;
use crate::services::environment::{database_url, migration_status, StepError};
use crate::services::pending::{warnings_for, UNKNOWN_SERVER_VERSION};
use crate::services::runbook::planning::locks::{
    columns_on_target, connect, lock_warnings, read_live,
};
use crate::services::runbook::planning::{
    gather_source, not_gathered, KindFacts, LiveFacts, RollbackFacts, RollbackRestoreFacts,
};
use crate::services::runbook::source::{newest_backup, RestoreSource};
use crate::services::runbook::step_builders::backup_step;
use crate::store::BackupRow;

/// The facts of a rollback of `migration` (and the server version when it was read): its
/// rollback plan, the lock review of the `down.sql` files only when it runs them, and the
/// backups only when it restores one.
pub(super) async fn gather_rollback(
    reads: Reads<'_>,
    env: &str,
    e: &EnvironmentSettings,
    migration: &str,
    strategy: Option<RollbackStrategy>,
    now: i64,
) -> Result<(KindFacts, Option<u32>), StepError> {
    let url = database_url(e)?;
    let rp = prisma::plan_rollback(url.expose_secret(), &e.migrations_dir, migration)
        .await
        .map_err(|err| StepError(format!("cannot plan the rollback of {migration}: {err}")))?;
    let uses_down = rollback_uses_down(env, migration, &rp, strategy);
    let by_restore = if matches!(uses_down, Ok(false)) {
        Some(gather_rollback_restore(reads, env, e, migration, &rp, now).await?)
    } else {
        None
    };
    let (locks, server) = if matches!(uses_down, Ok(true)) {
        let (scripts, live, server) = gather_down_locks(reads, e, &rp).await;
        (Some((scripts, Box::new(live))), server)
    } else {
        (None, None)
    };
    Ok((
        KindFacts::Rollback(RollbackFacts {
            plan: rp,
            by_restore,
            locks,
        }),
        server,
    ))
}

/// The lock review of each `down.sql` a rollback would run (newest first), for the target's
/// server version, with the sizes and long transactions read on the same connection.
async fn gather_down_locks(
    reads: Reads<'_>,
    e: &EnvironmentSettings,
    rp: &prisma::RollbackPlan,
) -> (Vec<(String, ScriptReview)>, LiveFacts, Option<u32>) {
    let mut target = connect(e).await;
    let server = target
        .as_ref()
        .ok()
        .and_then(|t| t.conn.server_version_num());
    let version = server.unwrap_or(UNKNOWN_SERVER_VERSION);
    let mut scripts = down_reviews(rp, version, &KnownColumns::new());
    if let Some(known) = columns_on_target(&mut target, &scripts).await {
        scripts = down_reviews(rp, version, &known);
    }
    let live = read_live(target, &reads.settings.deploy, &scripts).await;
    (scripts, live, server)
}

/// `(MIGRATION down.sql, review)` for each step of `rp` that has a `down.sql`, in its order,
/// knowing the `known` column types of the target.
pub fn down_reviews(
    rp: &prisma::RollbackPlan,
    server: u32,
    known: &KnownColumns,
) -> Vec<(String, ScriptReview)> {
    rp.steps
        .iter()
        .filter_map(|s| {
            let sql = s.down_sql.as_deref()?;
            Some((
                format!("{} down.sql", s.migration),
                review_script_with(sql, server, known),
            ))
        })
        .collect()
}

/// Whether a rollback runs `down.sql` (`Ok(true)`) or restores a backup (`Ok(false)`), or why
/// it is refused before that matters (not applied; `down` asked for but blocked). Without a
/// strategy, `down.sql` when nothing blocks it.
pub fn rollback_uses_down(
    env: &str,
    migration: &str,
    rp: &prisma::RollbackPlan,
    strategy: Option<RollbackStrategy>,
) -> Result<bool, StepError> {
    if rp.steps.is_empty() {
        return Err(StepError(format!(
            "{migration} is not applied in {env}; there is nothing to roll back"
        )));
    }
    let down_refusal = rp.refusal();
    match strategy {
        Some(RollbackStrategy::Down) => match down_refusal {
            Some(r) => Err(StepError(format!(
                "cannot roll back {migration} with down.sql: {r}"
            ))),
            None => Ok(true),
        },
        Some(RollbackStrategy::Restore) => Ok(false),
        None => Ok(down_refusal.is_none()),
    }
}

/// When the first migration a rollback undoes was applied (ms); `now` without one.
pub fn rollback_first_started(rp: &prisma::RollbackPlan, now: i64) -> i64 {
    rp.steps
        .iter()
        .map(|s| s.started_at.timestamp_millis())
        .min()
        .unwrap_or(now)
}

/// The applied migrations a rollback keeps: those applied now that it does not undo.
pub fn rollback_before(applied: &[String], rp: &prisma::RollbackPlan) -> BTreeSet<String> {
    let undone = rp.names();
    applied
        .iter()
        .filter(|m| !undone.contains(&m.as_str()))
        .cloned()
        .collect()
}

/// A backup a rollback of `migration` may restore: taken no later than the first migration it
/// undoes, without `migration` applied.
pub fn rollback_candidate(b: &BackupRow, migration: &str, first_started: i64) -> bool {
    !backup_migrations(b).iter().any(|m| m == migration) && b.started_at <= first_started
}

/// The preferred candidate: its applied migrations are exactly those before `migration`, so
/// the restore un-applies `migration` and the later ones and nothing else.
pub fn rollback_exact(
    b: &BackupRow,
    migration: &str,
    first_started: i64,
    before: &BTreeSet<String>,
) -> bool {
    rollback_candidate(b, migration, first_started)
        && &backup_migrations(b).into_iter().collect::<BTreeSet<_>>() == before
}

/// The applied migrations and the backup candidates of a rollback by restore.
pub(super) async fn gather_rollback_restore(
    reads: Reads<'_>,
    env: &str,
    e: &EnvironmentSettings,
    migration: &str,
    rp: &prisma::RollbackPlan,
    now: i64,
) -> Result<RollbackRestoreFacts, StepError> {
    let applied = migration_status(e).await?.applied;
    let first_started = rollback_first_started(rp, now);
    let before = rollback_before(&applied, rp);
    let exact = newest_backup(reads, env, |b| {
        rollback_exact(b, migration, first_started, &before)
    })
    .await?;
    let newest = match exact {
        Some(_) => None,
        None => {
            newest_backup(reads, env, |b| {
                rollback_candidate(b, migration, first_started)
            })
            .await?
        }
    };
    let source = |b: Option<BackupRow>| async move {
        match b {
            Some(b) => Some(gather_source(RestoreSource::from_row(&b), e).await),
            None => None,
        }
    };
    Ok(RollbackRestoreFacts {
        applied,
        exact: source(exact).await,
        newest: source(newest).await,
    })
}

/// The plan of a rollback of `migration`: `down.sql` or a restore, or why neither is safe.
pub(super) fn plan_rollback(
    kind: &OperationKind,
    env: &str,
    e: &EnvironmentSettings,
    migration: &str,
    strategy: Option<RollbackStrategy>,
    r: &RollbackFacts,
    now: i64,
) -> Result<Plan, StepError> {
    let rp = &r.plan;
    let use_down = rollback_uses_down(env, migration, rp, strategy)?;
    let names = rp.names().join(", ");
    if use_down {
        let mut p = plan_rollback_down(kind, env, migration, rp, &names);
        // Not pinned: sizes and sessions change while the request waits (see `locks`).
        if let Some((scripts, live)) = &r.locks {
            p.warnings.extend(lock_warnings(scripts, live, now));
        }
        return Ok(p);
    }
    plan_rollback_by_restore(kind, env, e, migration, r, &names, now)
}

/// A safety backup, then the `down.sql` files newest first; the scripts' data-loss warnings.
fn plan_rollback_down(
    kind: &OperationKind,
    env: &str,
    migration: &str,
    rp: &prisma::RollbackPlan,
    names: &str,
) -> Plan {
    let scripts: Vec<(String, String)> = rp
        .steps
        .iter()
        .map(|s| (s.migration.clone(), s.down_sql.clone().unwrap_or_default()))
        .collect();
    Plan::new(
        kind,
        env,
        format!("roll back {} migration(s) in {env} with down.sql: {names}", rp.steps.len()),
        vec![
            backup_step(BackupKind::PreRollback, None),
            PlannedStep::new("run down.sql", format!("newest first, each in one transaction with its _prisma_migrations row: {names}"), StepAction::RollbackDown { migration: migration.into(), fingerprint: rp.fingerprint.clone() }),
        ],
        warnings_for(&scripts),
        vec![format!("rollback plan {}", rp.fingerprint)],
    )
}

/// Restores the exact backup, else the newest candidate (saying first what more it undoes);
/// refused when there is none.
fn plan_rollback_by_restore(
    kind: &OperationKind,
    env: &str,
    e: &EnvironmentSettings,
    migration: &str,
    r: &RollbackFacts,
    names: &str,
    now: i64,
) -> Result<Plan, StepError> {
    let rp = &r.plan;
    let by = r
        .by_restore
        .as_ref()
        .ok_or_else(|| not_gathered("the backups of the rollback by restore"))?;
    // A candidate predates MIGRATION. Preferred: the newest whose applied migrations are exactly
    // those before MIGRATION, so the restore un-applies MIGRATION and the later ones and nothing
    // else; only without one, the newest candidate (which may undo earlier migrations too).
    let applied = &by.applied;
    let before = rollback_before(applied, rp);
    let Some(sf) = by.exact.as_ref().or(by.newest.as_ref()) else {
        return Err(no_safe_rollback(env, migration, rp));
    };
    let src = &sf.source;
    let then = src.migrations.clone().unwrap_or_default();
    let detail = format!("backup {} (applied then: {})", src.label, then.len());
    let mut warnings = Vec::new();
    // First on the card: the restore takes away more than the rollback asked for.
    warnings.extend(undoes_earlier(
        migration, applied, &before, &then, &src.label, names,
    ));
    let pinned_facts = vec![
        format!("rollback plan {}", rp.fingerprint),
        src.fact(),
        format!("applied: {}", applied.join(",")),
    ];
    warnings.extend(sf.warnings(env, &Ok(applied.clone()), now));
    Ok(Plan::new(
        kind,
        env,
        format!(
            "roll back {migration} in {env} by restoring {} (taken {} ago)",
            src.label,
            human::age(now - src.taken_at)
        ),
        src.steps(e, BackupKind::PreRollback, detail, vec![], vec![]),
        warnings,
        pinned_facts,
    ))
}

/// The refusal when no verified backup predates `migration` and `down.sql` cannot (or was not
/// asked to) run: the way forward is a reversing migration.
fn no_safe_rollback(env: &str, migration: &str, rp: &prisma::RollbackPlan) -> StepError {
    let why = rp
        .refusal()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "a restore was asked for".into());
    StepError(format!(
        "no safe rollback for {migration} in {env}: {why}, and no verified backup was taken before it. Way forward: write a reversing migration (a new folder such as prisma/migrations/<timestamp>_rollback_<feature>/migration.sql that undoes it) and run `deploy`."
    ))
}

/// The danger warning when the backup lacks migrations applied before `migration` (`before`)
/// that are applied now: restoring it undoes those too. `None` when it undoes nothing earlier.
fn undoes_earlier(
    migration: &str,
    applied: &[String],
    before: &BTreeSet<String>,
    then: &[String],
    label: &str,
    names: &str,
) -> Option<Warning> {
    let earlier: Vec<&str> = applied
        .iter()
        .rev()
        .filter(|m| before.contains(*m) && !then.contains(*m))
        .map(String::as_str)
        .collect();
    if earlier.is_empty() {
        return None;
    }
    Some(Warning::danger(format!(
        "no verified backup has exactly the migrations before {migration}: restoring {} also undoes the earlier {} migration(s) {}, not only {names}",
        label,
        earlier.len(),
        earlier.join(", ")
    )))
}
