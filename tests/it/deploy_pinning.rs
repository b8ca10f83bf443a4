//! Deploy runs byte for byte what was approved (issue 11, item 2): the plan pins each pending
//! migration's checksum, a `migration.sql` edited after approval stops the deploy before anything
//! is applied (the audit names both checksums), and every applied migration's audit events carry
//! its checksum.
//!
//! The race is made deterministic with a pause point that is part of the real flow: the
//! environment's `pg_bin_dir` holds a `pg_dump` that edits the second migration's script and then
//! runs the real `pg_dump`, so the edit happens exactly during the pre-deploy backup, after the
//! approval and after the worker rechecked the plan's fingerprint.

use std::path::{Path, PathBuf};

use dualkey::core::operation::{PlannedStep, StepAction};
use dualkey::dbops::prisma::{self, NoProgress, PrismaError};

use crate::taskflow::{copy_migration, Db, COMMENTS, INIT, PRIORITY};

/// What the fake `pg_dump` appends to the second migration's script.
const EDIT: &str = "\nCREATE TABLE \"Sneaky\" (\"id\" INTEGER);\n";

/// A test app whose production environment points at a fresh target database and a migrations
/// folder holding `names`; `extra` is added to `[environments.production]`.
async fn setup(names: &[&str], extra: &str) -> Db {
    crate::taskflow::setup("pin", names, extra).await
}

impl Db {
    fn script(&self, name: &str) -> PathBuf {
        self.migrations.join(name).join("migration.sql")
    }

    fn checksum(&self, name: &str) -> String {
        let bytes = std::fs::read(self.script(name)).unwrap();
        prisma::render_checksum(&String::from_utf8(bytes).unwrap())
    }

    /// The audit events with this action, details parsed, oldest first.
    async fn audit(&self, action: &str) -> Vec<serde_json::Value> {
        self.app
            .core
            .store
            .audit_tail(500)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.action == action)
            .map(|e| serde_json::from_str(&e.details).unwrap())
            .collect()
    }
}

/// The first executable called `tool` on PATH (the real PostgreSQL client).
fn real_tool(tool: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} not on PATH"))
}

/// A `pg_bin_dir` whose `pg_dump` first appends [`EDIT`] to `script`, then runs the real one
/// (but answers `--version`, which planning asks to check the tools against the server, without
/// editing); `pg_restore` and `psql` are the real ones.
fn editing_pg_bin(dir: &Path, script: &Path) -> PathBuf {
    let bin = dir.join("editing-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let edit_file = dir.join("edit.sql");
    std::fs::write(&edit_file, EDIT).unwrap();
    let pg_dump = bin.join("pg_dump");
    // argv only: every path is passed as a quoted literal written by the test itself.
    std::fs::write(
        &pg_dump,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && exec '{real}' --version\ncat '{}' >> '{}'\nexec '{real}' \"$@\"\n",
            edit_file.display(),
            script.display(),
            real = real_tool("pg_dump").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &pg_dump,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for tool in ["pg_restore", "psql"] {
        std::os::unix::fs::symlink(real_tool(tool), bin.join(tool)).unwrap();
    }
    bin
}

#[tokio::test]
async fn a_migration_edited_during_the_pre_deploy_backup_stops_the_deploy_before_anything_is_applied(
) {
    // pg_bin_dir must exist when the config is read and hold the tools when the deploy is
    // planned (planning checks their versions); its pg_dump edits only when it dumps.
    let bin_parent = tempfile::tempdir().unwrap();
    let bin = bin_parent.path().join("editing-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let db = setup(
        &[INIT, PRIORITY, COMMENTS],
        &format!("pg_bin_dir = \"{}\"", bin.display()),
    )
    .await;
    editing_pg_bin(bin_parent.path(), &db.script(PRIORITY));
    let approved_sum = db.checksum(PRIORITY);

    let card = db.app.cmd("alice", "deploy").await;
    assert!(card.contains("[approve:"), "{card}");
    let id = db.app.last_request().await;
    // Planned with the original scripts; the backup step will edit the second one.
    let r = db.app.click("bob", &format!("approve:{id}")).await;
    assert!(r.contains("Approved"), "{r}");
    db.app.drain_worker().await;
    let op = db
        .app
        .core
        .store
        .operation_for_request(&id)
        .await
        .unwrap()
        .unwrap();

    let found_sum = db.checksum(PRIORITY);
    assert!(
        std::fs::read_to_string(db.script(PRIORITY))
            .unwrap()
            .ends_with(EDIT),
        "the pause point must have edited the script"
    );
    assert_ne!(approved_sum, found_sum);

    // The operation failed at the deploy step, after a good backup, naming both checksums.
    assert_eq!(op.state, "failed", "{:?}", op.error);
    let error = op.error.clone().unwrap();
    assert!(
        error.contains(&approved_sum) && error.contains(&found_sum) && error.contains(PRIORITY),
        "the failure must name the migration and both checksums: {error}"
    );
    assert!(error.contains("Nothing was applied"), "{error}");
    let steps: Vec<(String, String)> = db
        .app
        .core
        .store
        .steps(&op.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.state))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("safety backup".to_string(), "succeeded".to_string()),
            ("apply migrations".to_string(), "failed".to_string())
        ]
    );

    // Nothing was applied: not the first migration (unchanged, and before the edited one), not
    // the edited one, and no bookkeeping either.
    assert_eq!(
        db.sql("SELECT to_regclass('_prisma_migrations')::text")
            .await,
        None,
        "a refused deploy writes nothing, not even the migrations table"
    );
    for table in ["User", "Task", "Sneaky", "Comment"] {
        assert_eq!(
            db.sql(&format!("SELECT to_regclass('public.\"{table}\"')::text"))
                .await,
            None,
            "table {table} must not exist"
        );
    }
    assert!(db.audit("migration.apply.started").await.is_empty());

    // The audit names both checksums.
    let refused = db.audit("migration.apply.refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    let r = &refused[0];
    assert_eq!(r["operation"], op.id.as_str());
    assert_eq!(r["approved"][1]["migration"], PRIORITY);
    assert_eq!(r["approved"][1]["checksum"], approved_sum.as_str());
    assert_eq!(r["found"][1]["migration"], PRIORITY);
    assert_eq!(r["found"][1]["checksum"], found_sum.as_str());
    assert_eq!(
        r["approved"][0]["checksum"], r["found"][0]["checksum"],
        "the first migration is unchanged"
    );
    let finished = db.audit("step.finished").await;
    let last = finished.last().unwrap();
    let output = last["output"].as_str().unwrap();
    assert!(
        output.contains(&approved_sum) && output.contains(&found_sum),
        "{output}"
    );
}

#[tokio::test]
async fn applied_migrations_record_their_checksums_in_the_audit_and_the_table() {
    let db = setup(&[INIT, PRIORITY], "").await;
    let op = db.approved("deploy").await;
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
    for (i, name) in [INIT, PRIORITY].into_iter().enumerate() {
        let sum = db.checksum(name);
        for action in ["migration.apply.started", "migration.apply.finished"] {
            let ev = &db.audit(action).await[i];
            assert_eq!(ev["migration"], name, "{action}: {ev}");
            assert_eq!(ev["checksum"], sum.as_str(), "{action}: {ev}");
            assert_eq!(ev["operation"], op.id.as_str());
        }
        assert_eq!(
            db.sql(&format!(
                "SELECT checksum FROM _prisma_migrations WHERE migration_name = '{name}'"
            ))
            .await
            .as_deref(),
            Some(sum.as_str()),
            "the recorded checksum is the checksum of the script that ran"
        );
    }
    // The approved plan pinned those same checksums.
    let plan: dualkey::core::operation::Plan = serde_json::from_str(&op.plan_json).unwrap();
    let pinned = plan
        .steps
        .iter()
        .find_map(|s| match &s.action {
            StepAction::Deploy { pinned, .. } => Some(pinned.clone()),
            _ => None,
        })
        .expect("a deploy step");
    let pairs: Vec<(String, String)> = pinned
        .into_iter()
        .map(|p| (p.migration, p.checksum))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (INIT.to_string(), db.checksum(INIT)),
            (PRIORITY.to_string(), db.checksum(PRIORITY))
        ]
    );
}

#[tokio::test]
async fn a_deploy_step_without_pinned_checksums_is_refused_and_applies_nothing() {
    let db = setup(&[INIT], "").await;
    let op = db.approved("deploy").await;
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
    copy_migration(PRIORITY, &db.migrations);
    // A step as stored by a dualkey that did not pin checksums yet.
    let old: StepAction = serde_json::from_str(&format!(
        r#"{{"action":"deploy","migrations":["{PRIORITY}"]}}"#
    ))
    .unwrap();
    let step = PlannedStep::new("apply migrations", PRIORITY, old);
    let err = dualkey::services::runbook::run_step(&db.app.core, &op, &step)
        .await
        .unwrap_err();
    assert!(
        err.0.contains("without the checksums") && err.0.contains("nothing was applied"),
        "{err}"
    );
    assert_eq!(
        db.sql(&format!(
            "SELECT migration_name FROM _prisma_migrations WHERE migration_name = '{PRIORITY}'"
        ))
        .await,
        None
    );
}

#[tokio::test]
async fn deploy_pinned_refuses_any_difference_before_its_first_write() {
    let db = setup(&[INIT, PRIORITY, COMMENTS], "").await;
    let url = db.target.url.clone();
    let pins = |names: &[&str]| -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| (n.to_string(), db.checksum(n)))
            .collect()
    };
    let approved = pins(&[INIT, PRIORITY, COMMENTS]);

    // The second script edited: refused with both checksums, nothing written.
    std::fs::write(
        db.script(PRIORITY),
        format!(
            "{}{EDIT}",
            std::fs::read_to_string(db.script(PRIORITY)).unwrap()
        ),
    )
    .unwrap();
    let err = prisma::deploy_pinned(
        &url,
        &db.migrations,
        &approved,
        Default::default(),
        &mut NoProgress,
    )
    .await
    .unwrap_err();
    let PrismaError::PlanChanged(changed) = &err else {
        panic!("expected PlanChanged, got {err}")
    };
    assert_eq!(changed.found[1].1, db.checksum(PRIORITY));
    let text = err.to_string();
    assert!(
        text.contains(&approved[1].1) && text.contains(&db.checksum(PRIORITY)),
        "{text}"
    );
    assert_eq!(
        db.sql("SELECT to_regclass('_prisma_migrations')::text")
            .await,
        None
    );

    // A migration that was not approved: refused.
    let err = prisma::deploy_pinned(
        &url,
        &db.migrations,
        &pins(&[INIT, PRIORITY]),
        Default::default(),
        &mut NoProgress,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("{COMMENTS} is pending but was not approved")),
        "{err}"
    );

    // Exactly what is there now: applied, each row with the checksum of the script that ran.
    let now = pins(&[INIT, PRIORITY, COMMENTS]);
    let out = prisma::deploy_pinned(
        &url,
        &db.migrations,
        &now,
        Default::default(),
        &mut NoProgress,
    )
    .await
    .unwrap();
    assert!(out.is_success());
    assert_eq!(
        db.sql(&format!(
            "SELECT checksum FROM _prisma_migrations WHERE migration_name = '{PRIORITY}'"
        ))
        .await
        .as_deref(),
        Some(now[1].1.as_str())
    );
    assert!(db
        .sql("SELECT to_regclass('public.\"Sneaky\"')::text")
        .await
        .is_some());

    // Approved migrations that are no longer pending: refused.
    let err = prisma::deploy_pinned(
        &url,
        &db.migrations,
        &now,
        Default::default(),
        &mut NoProgress,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no longer pending"), "{err}");
}
