//! Planning in two halves: [`gather`] reads the facts a plan depends on (async I/O: the target's
//! migration status, the staging guard's, the migrations folder, the rollback plan, the backup
//! catalog and files with their SHA-256, the write counters, the database URL and the clock);
//! [`plan_from`] decides from those [`PlanFacts`] alone. It is pure (no `.await`, no file,
//! network, environment or clock read): the same facts always give the same plan, refusal,
//! warnings and fingerprint, and its tests build facts by hand.
//!
//! `gather` reads only what the plan can use: it asks the same pure questions `plan_from` asks
//! ([`deploy_refusal`], [`rollback_uses_down`], [`newest_migration`]) to skip reads whose result
//! could not change the answer (the staging guard of a deploy refused for a failed migration, the
//! backups of a rollback that runs `down.sql`). A failed read that the plan may still refuse
//! before needing is kept in the facts as an `Err`, so refusals come in the same order as when
//! reading and deciding were interleaved.

mod app;
mod backup;
mod deploy;
mod emergency;
mod locks;
mod resolve;
mod restore;
mod rollback;

use chrono::{DateTime, Utc};

use crate::config::EnvironmentSettings;
use crate::core::human;
use crate::core::operation::{OperationKind, Plan, StepAction};
use crate::core::ports::Reads;
use crate::core::reply::Warning;
use crate::dbops::backup::ToolsCheck;
use crate::dbops::prisma;
use crate::services::environment::{database_url, env_settings, gather_tools, StepError};
use crate::services::pending::PendingReview;
use crate::services::runbook::source::{
    ends_like_a_complete_plain_dump, RestoreSource, PLAIN_DUMP_TRAILER,
};

pub use deploy::deploy_refusal;
pub use emergency::newest_migration;
pub(crate) use locks::{columns_on_target, connect, read_live};
pub use locks::{
    flagged_on_large_tables, lock_warnings, tables_to_size, LiveFacts, ReviewedScripts,
};
pub use rollback::{
    rollback_before, rollback_candidate, rollback_exact, rollback_first_started, rollback_uses_down,
};

/// Everything a plan of one kind in one environment depends on, read by [`gather`].
#[derive(Debug, Clone)]
pub struct PlanFacts {
    /// The environment's settings (app commands, migrations folder, staging guard).
    pub settings: EnvironmentSettings,
    /// The clock when the facts were read (ms): backup ages on the card.
    pub now: i64,
    /// What the kind needs beyond the settings.
    pub kind: KindFacts,
    /// The versions of `pg_dump`, `pg_restore` and `psql` and of the server, for every kind
    /// whose plan backs up or restores (`None`: not read, for `app stop|start`).
    pub tools: Option<ToolsCheck>,
}

/// The facts of each operation kind.
#[derive(Debug, Clone)]
pub enum KindFacts {
    /// `app stop` / `app start`: the settings hold the commands.
    App,
    /// `backup`: the database URL is set (checked while gathering).
    Backup,
    /// `deploy`.
    Deploy(DeployFacts),
    /// `rollback MIGRATION`.
    Rollback(RollbackFacts),
    /// `restore BACKUP`.
    Restore(RestoreFacts),
    /// `resolve MIGRATION applied|rolled-back`: the migration status.
    Resolve(StatusFacts),
    /// `emergency`.
    Emergency(EmergencyFacts),
}

/// What a plan uses of the migration status.
#[derive(Debug, Clone, Default)]
pub struct StatusFacts {
    /// Names applied (finished, not rolled back).
    pub applied: Vec<String>,
    /// Local names with no row.
    pub pending: Vec<String>,
    /// Failed rows' names, oldest first (one per row).
    pub failed: Vec<String>,
    /// What the next deploy would apply, in order.
    pub deploy_would_apply: Vec<String>,
    /// Every migration of the report.
    pub migrations: Vec<MigrationFacts>,
}

/// One migration of the status.
#[derive(Debug, Clone)]
pub struct MigrationFacts {
    /// The migration name.
    pub name: String,
    /// Its state.
    pub state: prisma::MigrationState,
    /// `started_at` of the applied row (or of the newest row when none is applied).
    pub started_at: Option<DateTime<Utc>>,
}

impl From<&prisma::StatusReport> for StatusFacts {
    fn from(st: &prisma::StatusReport) -> StatusFacts {
        StatusFacts {
            applied: st.applied.clone(),
            pending: st.pending.clone(),
            failed: st.failed.iter().map(|f| f.name.clone()).collect(),
            deploy_would_apply: st.deploy_would_apply.clone(),
            migrations: st
                .migrations
                .iter()
                .map(|m| MigrationFacts {
                    name: m.name.clone(),
                    state: m.state,
                    started_at: m.started_at,
                })
                .collect(),
        }
    }
}

/// The facts of a deploy.
#[derive(Debug, Clone)]
pub struct DeployFacts {
    /// The target's migration status.
    pub status: StatusFacts,
    /// The pending migrations the `require_staging` environment lacks, or why that could not
    /// be read. `None`: not read, because [`deploy_refusal`] refuses the deploy anyway.
    pub missing_on_staging: Option<Result<Vec<String>, StepError>>,
    /// The review of the scripts the deploy would run (checksums, data loss, `down.sql`, locks).
    /// `None` like `missing_on_staging`.
    pub review: Option<Result<PendingReview, StepError>>,
    /// The sizes of the tables the scripts lock and the long transactions on the target, for
    /// the lock review (not pinned). `None` when not read (refused first, or no review).
    pub live: Option<Box<LiveFacts>>,
}

/// A backup a plan would restore, with what its card says about it.
#[derive(Debug, Clone)]
pub struct SourceFacts {
    /// The backup (its SHA-256 checked while gathering).
    pub source: RestoreSource,
    /// About how many rows were written since it was taken (write counters then and now), or
    /// `unknown (why)`.
    pub writes_since: String,
    /// For an external `.sql` file: whether it ends with pg_dump's completion line (a catalog
    /// entry is a verified custom-format dump: `true`).
    pub complete_dump: bool,
}

/// The facts of a restore.
#[derive(Debug, Clone)]
pub struct RestoreFacts {
    /// What is restored.
    pub source: SourceFacts,
    /// The migrations applied now, or why they could not be read (the card says so; the plan
    /// is still made).
    pub applied: Result<Vec<String>, StepError>,
}

/// The facts of a rollback.
#[derive(Debug, Clone)]
pub struct RollbackFacts {
    /// What a `down.sql` rollback would undo, and what blocks it.
    pub plan: prisma::RollbackPlan,
    /// Read only when the rollback restores a backup instead ([`rollback_uses_down`] is
    /// `Ok(false)`).
    pub by_restore: Option<RollbackRestoreFacts>,
    /// Only when it runs `down.sql` ([`rollback_uses_down`] is `Ok(true)`): the lock review of
    /// each `down.sql`, newest first (labelled `MIGRATION down.sql`), and what the target looks
    /// like now (not pinned).
    pub locks: Option<(ReviewedScripts, Box<LiveFacts>)>,
}

/// What a rollback by restore needs.
#[derive(Debug, Clone)]
pub struct RollbackRestoreFacts {
    /// The migrations applied now.
    pub applied: Vec<String>,
    /// The newest verified backup taken before the migration whose applied migrations are
    /// exactly those before it (see [`rollback_exact`]).
    pub exact: Option<SourceFacts>,
    /// Only looked for without an `exact` one: the newest verified backup taken before the
    /// migration (see [`rollback_candidate`]).
    pub newest: Option<SourceFacts>,
}

/// The facts of an emergency.
#[derive(Debug, Clone)]
pub struct EmergencyFacts {
    /// The target's migration status.
    pub status: StatusFacts,
    /// The newest verified backup taken before the newest migration; not looked for when there
    /// is no applied migration ([`newest_migration`] is `None`).
    pub backup: Option<SourceFacts>,
}

// ---------------------------------------------------------------------------------------------
// Gathering (I/O)
// ---------------------------------------------------------------------------------------------

/// Reads everything the plan of `kind` in `env` depends on. Fails where reading fails before
/// anything could be decided (the environment, the database URL, the migration status, the
/// rollback plan, a restore source that is missing or changed, the catalog).
pub async fn gather(
    reads: Reads<'_>,
    kind: &OperationKind,
    env: &str,
) -> Result<PlanFacts, StepError> {
    let e = env_settings(reads, env)?;
    let now = reads.clock.now_ms();
    // The server's version when a status read below already has it (no second connection).
    let (kind, server) = match kind {
        OperationKind::AppStop | OperationKind::AppStart => (KindFacts::App, None),
        OperationKind::Backup { .. } => {
            database_url(e)?;
            (KindFacts::Backup, None)
        }
        OperationKind::Deploy => deploy::gather_deploy(reads, env, e).await?,
        OperationKind::Rollback {
            migration,
            strategy,
        } => rollback::gather_rollback(reads, env, e, migration, *strategy, now).await?,
        OperationKind::Restore { backup } => restore::gather_restore(reads, env, e, backup).await?,
        OperationKind::Resolve { .. } => resolve::gather_resolve(e).await?,
        OperationKind::Emergency => emergency::gather_emergency(reads, env, e).await?,
    };
    let tools = match kind {
        KindFacts::App => None,
        _ => Some(gather_tools(e, server).await),
    };
    Ok(PlanFacts {
        settings: e.clone(),
        now,
        kind,
        tools,
    })
}

/// The write estimate and the completeness check of a backup a plan would restore.
pub(super) async fn gather_source(source: RestoreSource, e: &EnvironmentSettings) -> SourceFacts {
    let writes_since = source.write_estimate(e).await;
    let complete_dump = source.catalog || ends_like_a_complete_plain_dump(&source.path);
    SourceFacts {
        source,
        writes_since,
        complete_dump,
    }
}

// ---------------------------------------------------------------------------------------------
// Planning (pure)
// ---------------------------------------------------------------------------------------------

impl SourceFacts {
    /// The card lines every restoring plan shows: what the restore un-applies, then the data
    /// loss with the write estimate, and for an external file that may be cut short, that.
    pub(super) fn warnings(
        &self,
        env: &str,
        applied_now: &Result<Vec<String>, StepError>,
        now: i64,
    ) -> Vec<Warning> {
        let src = &self.source;
        let mut w = vec![
            Warning::caution(src.unapply_warning(applied_now)),
            Warning::danger(format!(
                "everything written to {env} since {} was taken ({} ago) is lost; rows written since: {}",
                src.label,
                human::age(now - src.taken_at),
                self.writes_since
            )),
        ];
        if !src.catalog && !self.complete_dump {
            w.push(Warning::danger(format!(
                "{} does not end with pg_dump's `{PLAIN_DUMP_TRAILER}` line: it may be truncated (a killed `pg_dump > file`) or hand-written, and a truncated file restores only what it holds. Read its end before approving",
                src.label
            )));
        }
        w
    }
}

pub(super) fn mismatch(kind: &OperationKind) -> StepError {
    StepError(format!(
        "internal error: the facts gathered do not fit a {} plan",
        kind.name()
    ))
}

pub(super) fn not_gathered(what: &str) -> StepError {
    StepError(format!("internal error: {what} was not read"))
}

/// The plan of `kind` in `env` from `facts`: steps, warnings (with severities), the
/// fingerprinted facts, or the refusal. Pure. Every plan that restores and cannot stop the app
/// says so on the card.
pub fn plan_from(kind: &OperationKind, env: &str, facts: &PlanFacts) -> Result<Plan, StepError> {
    let mut p = plan_kind(kind, env, facts)?;
    if let Some(refusal) = tools_refusal(kind, env, &p, facts.tools.as_ref()) {
        return Err(refusal);
    }
    let restores = p
        .steps
        .iter()
        .any(|s| matches!(s.action, StepAction::Restore { .. }));
    if restores {
        // Warnings are not part of the fingerprint, so adding one here changes nothing else.
        p.warnings
            .extend(RestoreSource::app_warning(&facts.settings, env).map(Warning::caution));
    }
    Ok(p)
}

/// Why a plan that backs up or restores is refused before anyone approves: a tool that is
/// missing, cannot be run, or is of a major older than the server's (it would fail only after
/// the approvals, at the safety backup or the restore).
pub fn tools_refusal(
    kind: &OperationKind,
    env: &str,
    plan: &Plan,
    tools: Option<&ToolsCheck>,
) -> Option<StepError> {
    let has = |f: fn(&StepAction) -> bool| plan.steps.iter().any(|s| f(&s.action));
    let restores = has(|a| matches!(a, StepAction::Restore { .. }));
    if !restores && !has(|a| matches!(a, StepAction::Backup { .. })) {
        return None;
    }
    // A backup runs pg_dump and pg_restore (to verify); psql matters only to a restore, as in
    // the check before every backup (`services::backups::take::take_backup`).
    let mut tools = tools?.clone();
    if !restores {
        tools.tools.retain(|t| t.tool != "psql");
    }
    let problem = tools.problem(env)?;
    Some(StepError(format!(
        "refused before approval: the PostgreSQL client tools cannot handle the server of {env}, so this {} would fail only when it runs, after any approvals. {problem}",
        kind.name()
    )))
}

fn plan_kind(kind: &OperationKind, env: &str, facts: &PlanFacts) -> Result<Plan, StepError> {
    let e = &facts.settings;
    let now = facts.now;
    match (kind, &facts.kind) {
        (OperationKind::AppStop, KindFacts::App) => app::plan_app(kind, env, e, true),
        (OperationKind::AppStart, KindFacts::App) => app::plan_app(kind, env, e, false),
        (OperationKind::Backup { note }, KindFacts::Backup) => backup::plan_backup(kind, env, note),
        (OperationKind::Deploy, KindFacts::Deploy(d)) => deploy::plan_deploy(kind, env, e, d, now),
        (
            OperationKind::Rollback {
                migration,
                strategy,
            },
            KindFacts::Rollback(r),
        ) => rollback::plan_rollback(kind, env, e, migration, *strategy, r, now),
        (OperationKind::Restore { .. }, KindFacts::Restore(r)) => {
            restore::plan_restore(kind, env, e, r, now)
        }
        (OperationKind::Resolve { migration, applied }, KindFacts::Resolve(st)) => {
            resolve::plan_resolve(kind, env, migration, *applied, st)
        }
        (OperationKind::Emergency, KindFacts::Emergency(em)) => {
            emergency::plan_emergency(kind, env, e, em, now)
        }
        _ => Err(mismatch(kind)),
    }
}

#[cfg(test)]
mod tests {
    //! `plan_from` on facts built by hand: no database, no files, no clock.

    use super::*;
    use crate::core::operation::RollbackStrategy;
    use crate::core::reply::Severity;
    use crate::dbops::backup::PgVersion;
    use std::path::PathBuf;

    const NOW: i64 = 1_700_000_000_000;
    const HOUR: i64 = 3_600_000;

    fn settings(extra: &str) -> EnvironmentSettings {
        toml::from_str(&format!(
            "database_url_env = \"PLAN_TEST_URL\"\nmigrations_dir = \"prisma/migrations\"\n{extra}"
        ))
        .expect("settings parse")
    }

    fn facts(settings: EnvironmentSettings, kind: KindFacts) -> PlanFacts {
        PlanFacts {
            settings,
            now: NOW,
            kind,
            tools: None,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn status(applied: &[&str], pending: &[&str], failed: &[&str]) -> StatusFacts {
        let mut migrations = Vec::new();
        for (i, m) in applied.iter().enumerate() {
            migrations.push(MigrationFacts {
                name: m.to_string(),
                state: prisma::MigrationState::Applied,
                started_at: DateTime::from_timestamp_millis(NOW - 10 * HOUR + i as i64 * HOUR),
            });
        }
        for m in pending {
            migrations.push(MigrationFacts {
                name: m.to_string(),
                state: prisma::MigrationState::Pending,
                started_at: None,
            });
        }
        StatusFacts {
            applied: names(applied),
            pending: names(pending),
            failed: names(failed),
            deploy_would_apply: names(pending),
            migrations,
        }
    }

    fn deploy_facts(
        st: StatusFacts,
        staging: Result<Vec<String>, StepError>,
        review: PendingReview,
    ) -> KindFacts {
        KindFacts::Deploy(DeployFacts {
            status: st,
            missing_on_staging: Some(staging),
            review: Some(Ok(review)),
            live: None,
        })
    }

    fn review(checksums: &[(&str, &str)], data_loss: &[&str], no_down: &[&str]) -> PendingReview {
        PendingReview {
            checksums: checksums
                .iter()
                .map(|(m, s)| (m.to_string(), s.to_string()))
                .collect(),
            data_loss: names(data_loss),
            no_down: names(no_down),
            locks: vec![],
        }
    }

    fn catalog_source(id: &str, taken_at: i64, migrations: &[&str]) -> SourceFacts {
        SourceFacts {
            source: RestoreSource {
                label: id.into(),
                path: PathBuf::from(format!("/backups/{id}.dump")),
                sha256: Some(format!("sha-of-{id}")),
                catalog: true,
                taken_at,
                migrations: Some(names(migrations)),
                write_stats_json: None,
            },
            writes_since: "about 12 rows (public.Task: 12 = 12 inserted)".into(),
            complete_dump: true,
        }
    }

    fn rollback_plan(target: &str, undo: &[(&str, Option<&str>)]) -> prisma::RollbackPlan {
        prisma::RollbackPlan {
            target: target.into(),
            steps: undo
                .iter()
                .enumerate()
                .map(|(i, (m, down))| prisma::RollbackStep {
                    migration: m.to_string(),
                    row_id: format!("row{i}"),
                    started_at: DateTime::from_timestamp_millis(NOW - HOUR * (i as i64 + 1))
                        .unwrap(),
                    finished_at: None,
                    local: true,
                    down_sql: down.map(str::to_string),
                })
                .collect(),
            failed_migrations: vec![],
            fingerprint: "fp-1".into(),
        }
    }

    fn rollback_kind(migration: &str, strategy: Option<RollbackStrategy>) -> OperationKind {
        OperationKind::Rollback {
            migration: migration.into(),
            strategy,
        }
    }

    #[test]
    fn deploy_is_refused_with_a_failed_migration() {
        let f = facts(
            settings(""),
            KindFacts::Deploy(DeployFacts {
                status: status(&["m1"], &["m2"], &["m1b"]),
                // Not read: the refusal comes first.
                missing_on_staging: None,
                review: None,
                live: None,
            }),
        );
        let err = plan_from(&OperationKind::Deploy, "production", &f).unwrap_err();
        assert_eq!(
            err.0,
            "production has a failed migration (m1b); deploy would stop with P3009. Resolve it first: `resolve m1b rolled-back` or `resolve m1b applied`, or `emergency`."
        );
    }

    #[test]
    fn nothing_to_deploy_is_refused() {
        let f = facts(
            settings(""),
            KindFacts::Deploy(DeployFacts {
                status: status(&["m1"], &[], &[]),
                missing_on_staging: None,
                review: None,
                live: None,
            }),
        );
        let err = plan_from(&OperationKind::Deploy, "production", &f).unwrap_err();
        assert_eq!(
            err.0,
            "nothing to deploy: production has every migration of prisma/migrations applied"
        );
    }

    #[test]
    fn staging_guard_refuses_what_staging_lacks_and_passes_its_read_error_on() {
        let e = settings("require_staging = \"staging\"");
        let st = status(&["m1"], &["m2", "m3"], &[]);
        let f = facts(
            e.clone(),
            deploy_facts(st.clone(), Ok(names(&["m3"])), review(&[], &[], &[])),
        );
        let err = plan_from(&OperationKind::Deploy, "production", &f).unwrap_err();
        assert_eq!(
            err.0,
            "staging guard: m3 not deployed to staging yet; deploy there first (require_staging = \"staging\")"
        );
        let f = facts(
            e,
            deploy_facts(
                st,
                Err(StepError("staging guard: staging: unreachable".into())),
                review(&[], &[], &[]),
            ),
        );
        let err = plan_from(&OperationKind::Deploy, "production", &f).unwrap_err();
        assert_eq!(err.0, "staging guard: staging: unreachable");
    }

    #[test]
    fn deploy_pins_checksums_and_warns_data_loss_as_danger() {
        let st = status(&["m1"], &["m2", "m3"], &[]);
        let rv = review(
            &[("m2", "aaa"), ("m3", "bbb")],
            &["m3: DROP TABLE \"Post\""],
            &["m2", "m3"],
        );
        let f = facts(settings(""), deploy_facts(st.clone(), Ok(vec![]), rv));
        let p = plan_from(&OperationKind::Deploy, "production", &f).unwrap();
        assert_eq!(p.summary, "deploy 2 migration(s) to production");
        assert_eq!(p.steps.len(), 2);
        assert!(
            matches!(&p.steps[0].action, StepAction::Backup { kind, .. } if kind == "pre-deploy")
        );
        let StepAction::Deploy { migrations, pinned } = &p.steps[1].action else {
            panic!("second step is not the deploy: {:?}", p.steps[1].action);
        };
        assert_eq!(migrations, &names(&["m2", "m3"]));
        let pins: Vec<(&str, &str)> = pinned
            .iter()
            .map(|p| (p.migration.as_str(), p.checksum.as_str()))
            .collect();
        assert_eq!(pins, vec![("m2", "aaa"), ("m3", "bbb")]);
        assert_eq!(
            p.facts,
            vec![
                "applied: m1".to_string(),
                "pending m2 checksum aaa".into(),
                "pending m3 checksum bbb".into()
            ]
        );
        assert_eq!(p.warnings.len(), 2);
        assert_eq!(p.warnings[0].severity, Severity::Danger);
        assert_eq!(p.warnings[0].text, "m3: DROP TABLE \"Post\"");
        assert_eq!(p.warnings[1].severity, Severity::Caution);
        assert_eq!(
            p.warnings[1].text,
            "no down.sql (rollback would need a restore): m2, m3"
        );
        // Same facts, same plan; an edited script changes the fingerprint.
        let again = plan_from(&OperationKind::Deploy, "production", &f).unwrap();
        assert_eq!(again.fingerprint, p.fingerprint);
        let edited = facts(
            settings(""),
            deploy_facts(
                st,
                Ok(vec![]),
                review(&[("m2", "aaa"), ("m3", "ccc")], &[], &[]),
            ),
        );
        let edited = plan_from(&OperationKind::Deploy, "production", &edited).unwrap();
        assert_ne!(edited.fingerprint, p.fingerprint);
    }

    #[test]
    fn table_sizes_reach_the_card_but_not_the_fingerprint() {
        use crate::dbops::lockreview::{
            Effect, LockLevel, ScriptReview, StatementReview, TableRef,
        };
        use crate::dbops::sessions::TableSize;
        let mut rv = review(&[("m2", "aaa")], &[], &[]);
        rv.locks = vec![(
            "m2".into(),
            ScriptReview {
                statements: vec![StatementReview {
                    sql: "CREATE INDEX \"Task_title_idx\" ON \"Task\"(\"title\")".into(),
                    line: 1,
                    lock: Some(LockLevel::Share),
                    tables: vec![TableRef {
                        schema: None,
                        name: "Task".into(),
                    }],
                    effect: Effect::Scan,
                    rule: "create-index",
                    doc: "CREATE INDEX",
                    safer: Some("CREATE INDEX CONCURRENTLY".into()),
                }],
                transactional: true,
                parse_error: None,
            },
        )];
        let with = |rows: u64| {
            facts(
                settings(""),
                KindFacts::Deploy(DeployFacts {
                    status: status(&["m1"], &["m2"], &[]),
                    missing_on_staging: Some(Ok(vec![])),
                    review: Some(Ok(rv.clone())),
                    live: Some(Box::new(LiveFacts {
                        sizes: Ok(vec![TableSize {
                            table: "\"Task\"".into(),
                            rows: Some(rows),
                            bytes: rows * 100,
                            stats_at: None,
                        }]),
                        long_transactions: Ok(vec![]),
                        thresholds: Default::default(),
                    })),
                }),
            )
        };
        let small = plan_from(&OperationKind::Deploy, "production", &with(100)).unwrap();
        let big = plan_from(&OperationKind::Deploy, "production", &with(2_000_000)).unwrap();
        let lock_line = |p: &Plan| {
            p.warnings
                .iter()
                .find(|w| w.text.starts_with("m2 line 1:"))
                .cloned()
                .unwrap_or_else(|| panic!("no lock review line: {:?}", p.warnings))
        };
        assert_eq!(lock_line(&small).severity, Severity::Info);
        assert!(lock_line(&small).text.contains("(about 100 rows, 9.8 kB)"));
        assert_eq!(lock_line(&big).severity, Severity::Caution);
        assert!(lock_line(&big).text.contains("(about 2.0M rows, 191 MB)"));
        // A table that grew while the request waited does not make the vote stale.
        assert_eq!(small.facts, big.facts);
        assert_eq!(small.fingerprint, big.fingerprint);
    }

    #[test]
    fn rollback_uses_down_sql_when_nothing_blocks_it() {
        let rp = rollback_plan(
            "m2",
            &[
                ("m3", Some("DROP TABLE \"Tag\";")),
                ("m2", Some("SELECT 1;")),
            ],
        );
        let f = facts(
            settings(""),
            KindFacts::Rollback(RollbackFacts {
                plan: rp,
                by_restore: None,
                locks: None,
            }),
        );
        let p = plan_from(&rollback_kind("m2", None), "production", &f).unwrap();
        assert_eq!(
            p.summary,
            "roll back 2 migration(s) in production with down.sql: m3, m2"
        );
        assert!(
            matches!(&p.steps[1].action, StepAction::RollbackDown { migration, fingerprint } if migration == "m2" && fingerprint == "fp-1")
        );
        assert_eq!(p.facts, vec!["rollback plan fp-1".to_string()]);
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.warnings[0].severity, Severity::Danger);
        assert!(p.warnings[0].text.starts_with("m3: "), "{:?}", p.warnings);
    }

    #[test]
    fn rollback_with_down_asked_but_missing_is_refused_and_not_applied_too() {
        let rp = rollback_plan("m2", &[("m2", None)]);
        let f = facts(
            settings(""),
            KindFacts::Rollback(RollbackFacts {
                plan: rp.clone(),
                by_restore: None,
                locks: None,
            }),
        );
        let err = plan_from(
            &rollback_kind("m2", Some(RollbackStrategy::Down)),
            "production",
            &f,
        )
        .unwrap_err();
        assert!(
            err.0.starts_with(
                "cannot roll back m2 with down.sql: rollback refused: no down.sql for m2"
            ),
            "{err}"
        );
        assert_eq!(rollback_uses_down("production", "m2", &rp, None), Ok(false));
        let none = rollback_plan("m9", &[]);
        assert_eq!(
            rollback_uses_down("production", "m9", &none, None)
                .unwrap_err()
                .0,
            "m9 is not applied in production; there is nothing to roll back"
        );
    }

    #[test]
    fn rollback_restores_the_exact_backup_else_the_newest_and_says_what_more_it_undoes() {
        let rp = rollback_plan("m3", &[("m3", None)]);
        let applied = names(&["m1", "m2", "m3"]);
        let exact = catalog_source("b-exact", NOW - 5 * HOUR, &["m1", "m2"]);
        let older = catalog_source("b-old", NOW - 9 * HOUR, &["m1"]);
        let kind = rollback_kind("m3", None);
        let with = |exact: Option<SourceFacts>, newest: Option<SourceFacts>| {
            facts(
                settings("app_stop = [\"stop\"]\napp_start = [\"start\"]"),
                KindFacts::Rollback(RollbackFacts {
                    plan: rp.clone(),
                    by_restore: Some(RollbackRestoreFacts {
                        applied: applied.clone(),
                        exact,
                        newest,
                    }),
                    locks: None,
                }),
            )
        };

        let p = plan_from(&kind, "production", &with(Some(exact), None)).unwrap();
        assert_eq!(
            p.summary,
            "roll back m3 in production by restoring b-exact (taken 5h ago)"
        );
        let steps: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            steps,
            vec!["safety backup", "stop app", "restore", "start app"]
        );
        assert!(
            p.steps[3].always,
            "the app is started again after a failed restore"
        );
        assert!(
            matches!(&p.steps[2].action, StepAction::Restore { backup, sha256 } if backup == "b-exact" && sha256.as_deref() == Some("sha-of-b-exact"))
        );
        assert_eq!(
            p.facts,
            vec![
                "rollback plan fp-1".to_string(),
                "backup b-exact sha256 sha-of-b-exact".into(),
                "applied: m1,m2,m3".into()
            ]
        );
        let w: Vec<(Severity, &str)> = p
            .warnings
            .iter()
            .map(|w| (w.severity, w.text.as_str()))
            .collect();
        assert_eq!(
            w,
            vec![
                (Severity::Caution, "restoring b-exact un-applies 1 migration(s), newest first: m3"),
                (Severity::Danger, "everything written to production since b-exact was taken (5h ago) is lost; rows written since: about 12 rows (public.Task: 12 = 12 inserted)"),
            ]
        );

        // Only an older backup: the card says first that it undoes m2 as well.
        let p = plan_from(&kind, "production", &with(None, Some(older))).unwrap();
        assert_eq!(p.warnings[0].severity, Severity::Danger);
        assert_eq!(
            p.warnings[0].text,
            "no verified backup has exactly the migrations before m3: restoring b-old also undoes the earlier 1 migration(s) m2, not only m3"
        );

        // No backup at all: refused, with the way forward.
        let err = plan_from(&kind, "production", &with(None, None)).unwrap_err();
        assert!(
            err.0.starts_with(
                "no safe rollback for m3 in production: rollback refused: no down.sql for m3"
            ),
            "{err}"
        );
    }

    #[test]
    fn restore_without_app_commands_warns_that_the_app_keeps_running() {
        let mut external = catalog_source("dump.sql", NOW - 2 * HOUR, &[]);
        external.source.catalog = false;
        external.source.migrations = None;
        external.complete_dump = false;
        external.writes_since =
            "unknown (an external file: dualkey recorded no write counters with it)".into();
        let f = facts(
            settings(""),
            KindFacts::Restore(RestoreFacts {
                source: external,
                applied: Err(StepError("cannot read the migration status: down".into())),
            }),
        );
        let kind = OperationKind::Restore {
            backup: "dump.sql".into(),
        };
        let p = plan_from(&kind, "production", &f).unwrap();
        let steps: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(steps, vec!["safety backup", "restore"]);
        // The status could not be read: only the backup is pinned.
        assert_eq!(
            p.facts,
            vec!["backup dump.sql sha256 sha-of-dump.sql".to_string()]
        );
        let texts: Vec<(Severity, &str)> = p
            .warnings
            .iter()
            .map(|w| (w.severity, w.text.as_str()))
            .collect();
        assert_eq!(texts.len(), 4, "{texts:?}");
        assert_eq!(
            texts[0],
            (
                Severity::Caution,
                "restoring dump.sql un-applies unknown migrations: cannot read the migration status: down"
            )
        );
        assert_eq!(texts[1].0, Severity::Danger);
        assert!(texts[2]
            .1
            .starts_with("dump.sql does not end with pg_dump's"));
        assert_eq!(texts[2].0, Severity::Danger);
        assert_eq!(texts[3].0, Severity::Caution);
        assert!(texts[3]
            .1
            .starts_with("the app keeps running during the restore"));
    }

    #[test]
    fn emergency_on_a_healthy_database_warns_first() {
        let st = status(&["m1", "m2", "m3"], &[], &[]);
        let backup = catalog_source("b1", NOW - 9 * HOUR - 30 * 60_000, &["m1"]);
        let f = facts(
            settings(""),
            KindFacts::Emergency(EmergencyFacts {
                status: st.clone(),
                backup: Some(backup.clone()),
            }),
        );
        let p = plan_from(&OperationKind::Emergency, "production", &f).unwrap();
        assert_eq!(p.warnings[0].severity, Severity::Danger);
        assert_eq!(
            p.warnings[0].text,
            "production looks healthy: no failed and no pending migration; this restore still undoes 2 applied migration(s) and every write since b1"
        );
        let steps: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            steps,
            vec![
                "safety backup",
                "assess",
                "restore",
                "clear failed migrations"
            ]
        );
        assert_eq!(p.facts[0], "newest migration m3");

        // A failed migration: no "looks healthy" line.
        let mut failing = st;
        failing.failed = names(&["m3"]);
        let f = facts(
            settings(""),
            KindFacts::Emergency(EmergencyFacts {
                status: failing,
                backup: Some(backup),
            }),
        );
        let p = plan_from(&OperationKind::Emergency, "production", &f).unwrap();
        assert!(p.warnings.iter().all(|w| !w.text.contains("looks healthy")));
        assert_eq!(p.warnings[0].severity, Severity::Caution);

        // Nothing applied: refused before a backup matters.
        let f = facts(
            settings(""),
            KindFacts::Emergency(EmergencyFacts {
                status: status(&[], &["m1"], &[]),
                backup: None,
            }),
        );
        let err = plan_from(&OperationKind::Emergency, "production", &f).unwrap_err();
        assert!(
            err.0.starts_with("production has no applied migrations"),
            "{err}"
        );
    }

    #[test]
    fn app_stop_without_a_command_is_refused_and_resolve_follows_prisma() {
        let f = facts(settings(""), KindFacts::App);
        let err = plan_from(&OperationKind::AppStop, "production", &f).unwrap_err();
        assert!(
            err.0
                .starts_with("environments.production.app_stop is not set"),
            "{err}"
        );
        let f = facts(
            settings(""),
            KindFacts::Resolve(status(&["m1"], &["m2"], &[])),
        );
        let kind = OperationKind::Resolve {
            migration: "m1".into(),
            applied: true,
        };
        let err = plan_from(&kind, "production", &f).unwrap_err();
        assert!(err.0.starts_with("P3008"), "{err}");
    }

    #[test]
    fn facts_of_another_kind_are_an_internal_error() {
        let f = facts(settings(""), KindFacts::Backup);
        let err = plan_from(&OperationKind::Deploy, "production", &f).unwrap_err();
        assert!(err.0.starts_with("internal error"), "{err}");
    }

    #[test]
    fn a_plan_that_backs_up_is_refused_when_pg_dump_is_older_than_the_server_and_app_plans_are_not()
    {
        use crate::dbops::backup::ToolProbe;
        let old = |tool: &'static str| ToolProbe {
            tool,
            path: Some(PathBuf::from(format!("/usr/lib/postgresql/15/bin/{tool}"))),
            version: Ok(PgVersion(150020)),
        };
        let check = ToolsCheck {
            server: Ok(PgVersion(180006)),
            tools: vec![old("pg_dump"), old("pg_restore"), old("psql")],
        };
        let mut f = facts(settings(""), KindFacts::Backup);
        f.tools = Some(check.clone());
        let kind = OperationKind::Backup { note: None };
        let err = plan_from(&kind, "production", &f).unwrap_err();
        assert!(
            err.0.starts_with("refused before approval: the PostgreSQL client tools cannot handle the server of production, so this backup would fail"),
            "{err}"
        );
        assert!(
            // A backup does not run psql: only the two tools it runs are named.
            err.0.contains("pg_dump 15.20 and pg_restore 15.20 in /usr/lib/postgresql/15/bin are older than the server of production (PostgreSQL 18.6)")
                && err.0.contains("Fix: set environments.production.pg_bin_dir to the bin folder of a PostgreSQL 18 client or newer"),
            "{err}"
        );
        // The same tools with a 15 server: the plan is made.
        f.tools = Some(ToolsCheck {
            server: Ok(PgVersion(150004)),
            ..check.clone()
        });
        assert!(plan_from(&kind, "production", &f).is_ok());
        // A plan that runs no tool is not refused for them.
        let mut app = facts(
            settings("app_stop = [\"stop\"]\napp_start = [\"start\"]"),
            KindFacts::App,
        );
        app.tools = Some(check);
        assert!(plan_from(&OperationKind::AppStop, "production", &app).is_ok());
    }
}
