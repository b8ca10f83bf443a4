//! Rehearsals around the engine (issue 22): queued with a deploy request in `auto` mode,
//! superseded by a newer one, shown on the card (running, passed, failed as the first danger
//! line), `require_rehearsal` gating approval by the exact set, and `rehearse [ENV]`. The first
//! tests record the rehearsal's end through the store port, as the runner does; the last one
//! runs the real engine end to end on a PostgreSQL target.

use std::path::Path;

use dualkey::clock::Clock as _;
use dualkey::config::RehearsalMode;
use dualkey::core::reply::{Body, Card, Severity};
use dualkey::store::{RehearsalEnd, RehearsalRow};

use crate::both_backends;
use crate::support::{spawn_app, Backend, TestApp};
use crate::taskflow::{Db, COMMENTS, INIT, LEGACY, PRIORITY};

/// A bot whose production has `names` pending, with `[deploy]` edited by `deploy`.
async fn setup(
    names: &[&str],
    deploy: impl FnOnce(&mut dualkey::config::DeploySettings),
) -> (Db, TestApp) {
    let db = crate::taskflow::setup("rehflow", names, "").await;
    let app = db.app.with_settings(|s| deploy(&mut s.deploy));
    (db, app)
}

/// Every rehearsal row of production, oldest first.
async fn rows(app: &TestApp) -> Vec<RehearsalRow> {
    let mut all = Vec::new();
    for state in [
        "queued",
        "running",
        "passed",
        "failed",
        "superseded",
        "error",
    ] {
        all.extend(app.core.store.rehearsals_in(state).await.unwrap());
    }
    all.sort_by_key(|r| (r.created_at, r.id.clone()));
    all
}

/// Starts the rehearsal and ends it as the runner would.
async fn end(app: &TestApp, id: &str, state: &str, summary: &str, error: Option<&str>) {
    let now = app.clock.now_ms();
    let mut tx = app.core.store.begin().await.unwrap();
    tx.start_rehearsal(id, "test-runner", now).await.unwrap();
    let end = RehearsalEnd {
        state: state.into(),
        summary: Some(summary.into()),
        outcome_json: Some("{}".into()),
        error: error.map(str::to_string),
    };
    assert!(tx.finish_rehearsal(id, &end, now).await.unwrap());
    tx.commit().await.unwrap();
}

/// The card of request `id`.
async fn card(app: &TestApp, id: &str) -> Card {
    match app.core.request_card(id).await.unwrap().body {
        Body::Card(c) => c,
        other => panic!("not a card: {other:?}"),
    }
}

/// The rehearsal row a request queued.
async fn row_of(app: &TestApp, request: &str) -> RehearsalRow {
    rows(app)
        .await
        .into_iter()
        .find(|r| r.request_id.as_deref() == Some(request))
        .expect("the deploy request queued a rehearsal")
}

#[tokio::test]
async fn require_rehearsal_gates_approval_on_a_passed_rehearsal_of_exactly_the_set() {
    let (db, app) = setup(&[INIT, PRIORITY], |d| {
        d.rehearsal = Some(RehearsalMode::Auto);
        d.require_rehearsal = true;
    })
    .await;
    let first = app.cmd("alice", "deploy").await;
    assert!(first.contains("[approve:"), "{first}");
    let r1 = app.last_request().await;
    let refused = app.click("bob", &format!("approve:{r1}")).await;
    assert!(
        refused.contains("passed rehearsal of exactly these migrations")
            && refused.contains("rehearse production"),
        "{refused}"
    );
    assert!(app.core.store.votes(&r1).await.unwrap().is_empty());
    let tail = app.core.store.audit_tail(5).await.unwrap();
    assert!(
        tail.iter()
            .any(|e| e.action == "vote.refused" && e.details.contains("rehearsal")),
        "the refusal is audited: {tail:?}"
    );
    let row1 = row_of(&app, &r1).await;
    end(
        &app,
        &row1.id,
        "passed",
        "Rehearsed on backup b1: 2 migrations in 1 s",
        None,
    )
    .await;

    // The same migrations with a different script are a different set.
    let sql = db.migrations.join(PRIORITY).join("migration.sql");
    let mut text = std::fs::read_to_string(&sql).unwrap();
    text.push_str("\n-- edited after the rehearsal\n");
    std::fs::write(&sql, text).unwrap();
    app.cmd("alice", "deploy").await;
    let r2 = app.last_request().await;
    assert_ne!(r1, r2);
    assert_ne!(row_of(&app, &r2).await.set_digest, row1.set_digest);
    let refused = app.click("bob", &format!("approve:{r2}")).await;
    assert!(refused.contains("passed rehearsal"), "{refused}");

    let ok = app.click("bob", &format!("approve:{r1}")).await;
    assert!(ok.contains("Approved"), "{ok}");
}

/// The newest verdict on a set decides: a set that passed once and failed on a later rehearsal
/// (duplicates arrived since) cannot be approved on the old pass.
#[tokio::test]
async fn a_later_failed_rehearsal_of_the_same_set_blocks_approval_again() {
    let (_db, app) = setup(&[INIT, PRIORITY], |d| {
        d.rehearsal = Some(RehearsalMode::Auto);
        d.require_rehearsal = true;
    })
    .await;
    app.cmd("alice", "deploy").await;
    let r1 = app.last_request().await;
    let row1 = row_of(&app, &r1).await;
    end(&app, &row1.id, "passed", "Rehearsed on backup b1", None).await;
    app.clock.advance(60_000);
    let queued = app.cmd("alice", "rehearse").await;
    assert!(queued.contains("queued"), "{queued}");
    let later = rows(&app).await.pop().unwrap();
    assert_eq!(later.set_digest, row1.set_digest);
    app.clock.advance(60_000);
    end(
        &app,
        &later.id,
        "failed",
        "Rehearsal FAILED on backup b2",
        Some("could not create unique index"),
    )
    .await;
    let refused = app.click("bob", &format!("approve:{r1}")).await;
    assert!(refused.contains("passed rehearsal"), "{refused}");
    assert!(app.core.store.votes(&r1).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_new_deploy_request_or_rehearse_supersedes_the_running_rehearsal() {
    let (_db, app) = setup(&[INIT, PRIORITY], |d| {
        d.rehearsal = Some(RehearsalMode::Auto)
    })
    .await;
    app.cmd("alice", "deploy").await;
    let r1 = app.last_request().await;
    let first = row_of(&app, &r1).await;
    assert_eq!(first.state, "queued");
    let mut tx = app.core.store.begin().await.unwrap();
    assert!(tx
        .start_rehearsal(&first.id, "test-runner", app.clock.now_ms())
        .await
        .unwrap());
    tx.commit().await.unwrap();

    app.cmd("alice", "deploy").await;
    let r2 = app.last_request().await;
    let second = row_of(&app, &r2).await;
    let first = app
        .core
        .store
        .get_rehearsal(&first.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.state, "superseded");
    assert_eq!(second.state, "queued");
    assert_eq!(second.set_digest, first.set_digest);
    // A superseded rehearsal's end is not recorded.
    let mut tx = app.core.store.begin().await.unwrap();
    let late = RehearsalEnd {
        state: "passed".into(),
        ..Default::default()
    };
    assert!(!tx.finish_rehearsal(&first.id, &late, 0).await.unwrap());
    drop(tx);

    let reply = app.cmd("alice", "rehearse").await;
    assert!(reply.contains("queued in production"), "{reply}");
    let all = rows(&app).await;
    let last = all.last().unwrap();
    assert_eq!(last.request_id, None);
    assert_eq!(last.state, "queued");
    assert!(last.channel_json.is_some());
    let second = app
        .core
        .store
        .get_rehearsal(&second.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.state, "superseded");
    let actions = app.audit_actions().await;
    assert_eq!(
        actions.iter().filter(|a| *a == "rehearsal.queued").count(),
        3,
        "{actions:?}"
    );

    // A viewer may not, and neither may anyone when rehearsals are off.
    let viewer = app.cmd("carol", "rehearse").await;
    assert!(viewer.contains("operator role"), "{viewer}");
    let off = app.with_settings(|s| s.deploy.rehearsal = Some(RehearsalMode::Off));
    let reply = off.cmd("alice", "rehearse").await;
    assert!(reply.contains("Rehearsals are off"), "{reply}");
    assert_eq!(rows(&app).await.len(), 3);
}

#[tokio::test]
async fn on_request_mode_queues_nothing_with_the_deploy_request() {
    let (_db, app) = setup(&[INIT], |d| d.rehearsal = Some(RehearsalMode::OnRequest)).await;
    app.cmd("alice", "deploy").await;
    assert!(rows(&app).await.is_empty());
    let c = card(&app, &app.last_request().await).await;
    assert!(!c.lines.iter().any(|l| l.contains("Rehearsal")), "{c:?}");
}

#[tokio::test]
async fn the_card_shows_the_running_rehearsal_then_its_result_and_a_failure_first() {
    let (_db, app) = setup(&[INIT, PRIORITY, COMMENTS, LEGACY], |d| {
        d.rehearsal = Some(RehearsalMode::Auto)
    })
    .await;
    let posted = app.cmd("alice", "deploy").await;
    assert!(posted.contains("running on a restored copy"), "{posted}");
    let r1 = app.last_request().await;
    let row = row_of(&app, &r1).await;
    let summary =
        "Rehearsed on backup b0123456789 (2 h old, 1.5M rows in Task): 4 migrations in 41 s";
    end(&app, &row.id, "passed", summary, None).await;
    app.core.refresh_request_card(&r1).await.unwrap();
    let edited: String = app
        .deliver_shell()
        .await
        .iter()
        .map(|s| s.reply().to_text())
        .collect();
    assert!(edited.contains(summary), "{edited}");
    assert!(!edited.contains("running on a restored copy"), "{edited}");

    app.cmd("alice", "deploy").await;
    let r2 = app.last_request().await;
    let row = row_of(&app, &r2).await;
    let error = "20250301000000_drop_legacy_flag: could not create unique index \"Task_uid_key\"";
    end(
        &app,
        &row.id,
        "failed",
        "Rehearsed on backup b0123456789: failed",
        Some(error),
    )
    .await;
    let c = card(&app, &r2).await;
    let first = c.warnings.first().expect("warnings");
    assert_eq!(first.severity, Severity::Danger, "{c:?}");
    assert!(
        first.text.starts_with("Rehearsal FAILED") && first.text.contains(error),
        "{c:?}"
    );
    // Approving asks for confirmation, quoting the rehearsal's failure.
    let confirm = c.buttons[0].confirm.as_ref().expect("a confirmation");
    assert!(confirm.text.contains("Rehearsal FAILED"), "{confirm:?}");
    // The plan's own danger line (DROP COLUMN) is still there, after it.
    assert!(
        c.warnings[1..]
            .iter()
            .any(|w| w.severity == Severity::Danger),
        "{c:?}"
    );
}

#[tokio::test]
async fn status_shows_the_rehearsal_of_the_pending_set() {
    let (_db, app) = setup(&[INIT], |d| d.rehearsal = Some(RehearsalMode::OnRequest)).await;
    let before = app.cmd("carol", "status").await;
    assert!(before.contains("not rehearsed"), "{before}");
    app.cmd("alice", "rehearse").await;
    let row = rows(&app).await.pop().unwrap();
    end(
        &app,
        &row.id,
        "passed",
        "Rehearsed on backup bX: 1 migration in 1 s",
        None,
    )
    .await;
    let after = app.cmd("carol", "status").await;
    assert!(
        after.contains(&format!("{} passed", row.id)) && after.contains("1 migration in 1 s"),
        "{after}"
    );
}

/// Runs the rehearsal runner until the rehearsal `pick` finds has ended (at most 150 s).
async fn run_until_ended(
    app: &TestApp,
    pick: impl Fn(&[RehearsalRow]) -> Option<RehearsalRow>,
) -> RehearsalRow {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runner = tokio::spawn(dualkey::services::rehearsal::runner::run(
        app.core.clone(),
        stop_rx,
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(150);
    let row = loop {
        let r = pick(&rows(app).await).expect("the rehearsal row");
        if !r.is_active() {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rehearsal did not end: {r:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    stop_tx.send(true).unwrap();
    runner.await.unwrap().unwrap();
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rehearse_runs_off_the_interaction_path_and_posts_its_result_where_it_was_asked() {
    let (_db, app) = setup(&[INIT], |d| d.rehearsal = Some(RehearsalMode::OnRequest)).await;
    let reply = app.cmd("alice", "rehearse").await;
    assert!(reply.contains("queued in production"), "{reply}");
    let row = run_until_ended(&app, |all| all.last().cloned()).await;
    assert!(row.runner.is_some() && row.finished_at.is_some(), "{row:?}");
    let posted: String = app
        .deliver_shell()
        .await
        .iter()
        .map(|s| s.reply().to_text())
        .collect();
    assert!(
        posted.contains(&format!("Rehearsal {} in production", row.id)),
        "{posted}"
    );
    let actions = app.audit_actions().await;
    for a in [
        "rehearsal.queued",
        "rehearsal.started",
        "rehearsal.finished",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a}: {actions:?}");
    }
}

/// Adds a migration that puts a unique index over `Task.title`.
fn unique_title_migration(dir: &Path) -> &'static str {
    let name = "20250401000000_unique_task_title";
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("migration.sql"),
        "CREATE UNIQUE INDEX \"Task_title_key\" ON \"Task\"(\"title\");\n",
    )
    .unwrap();
    name
}

/// End to end with the real engine (helper `rehearsal-engine`'s; on this branch before the
/// merge the engine is a stub and this test fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_that_fails_on_real_data_is_the_cards_first_danger_line_and_the_target_is_untouched(
) {
    let (db, app) = setup(&[INIT], |d| d.rehearsal = Some(RehearsalMode::Auto)).await;
    // Deployed without a rehearsal first (nothing real to rehearse on yet).
    let ready = app.with_settings(|s| s.deploy.rehearsal = Some(RehearsalMode::Off));
    let posted = ready.cmd("alice", "deploy").await;
    assert!(posted.contains("[approve:"), "{posted}");
    let id = ready.last_request().await;
    ready.click("bob", &format!("approve:{id}")).await;
    ready.drain_worker().await;
    assert_eq!(db.applied().await, vec![INIT.to_string()]);
    db.exec(
        "INSERT INTO \"User\" (email, name) VALUES ('a@example.com', 'A'); \
         INSERT INTO \"Project\" (name) VALUES ('P'); \
         INSERT INTO \"Task\" (title, \"projectId\", \"ownerId\") \
         SELECT 'same title', p.id, u.id FROM \"User\" u, \"Project\" p, generate_series(1, 2);",
    )
    .await;
    ready.cmd("alice", "backup").await;
    ready.drain_worker().await;

    let name = unique_title_migration(&db.migrations);
    app.cmd("alice", "deploy").await;
    let req = app.last_request().await;
    let row = run_until_ended(&app, |all| {
        all.iter()
            .find(|r| r.request_id.as_deref() == Some(req.as_str()))
            .cloned()
    })
    .await;
    assert_eq!(row.state, "failed", "{row:?}");
    let c = card(&app, &req).await;
    let first = c.warnings.first().expect("warnings");
    assert_eq!(first.severity, Severity::Danger, "{c:?}");
    assert!(
        first.text.contains("Rehearsal FAILED") && first.text.contains(name),
        "{c:?}"
    );
    let actions = app.audit_actions().await;
    assert!(
        actions.iter().any(|a| a == "rehearsal.started"),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a == "rehearsal.finished"),
        "{actions:?}"
    );
    // The target is untouched: nothing applied, no index.
    assert_eq!(db.applied().await, vec![INIT.to_string()]);
    assert_eq!(
        db.sql("SELECT count(*)::text FROM pg_indexes WHERE indexname = 'Task_title_key'")
            .await
            .as_deref(),
        Some("0")
    );
}

fn row(id: &str, env: &str, digest: &str, at: i64) -> RehearsalRow {
    RehearsalRow {
        id: id.into(),
        env: env.into(),
        request_id: None,
        set_digest: digest.into(),
        pinned_json: r#"[["20250101000000_init","abc"]]"#.into(),
        state: "queued".into(),
        requested_by: "alice".into(),
        channel_json: None,
        runner: None,
        created_at: at,
        started_at: None,
        finished_at: None,
        summary: None,
        outcome_json: None,
        error: None,
    }
}

async fn the_store_queues_supersedes_finishes_and_interrupts_rehearsals(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    let store = app.core.store.clone();
    let mut tx = store.begin().await.unwrap();
    assert!(tx
        .queue_rehearsal(&row("h1", "production", "d1", 1))
        .await
        .unwrap()
        .is_empty());
    assert!(tx
        .queue_rehearsal(&row("h9", "staging", "d1", 1))
        .await
        .unwrap()
        .is_empty());
    assert!(tx.start_rehearsal("h1", "r", 2).await.unwrap());
    assert!(
        !tx.start_rehearsal("h1", "r", 2).await.unwrap(),
        "started once"
    );
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let gone = tx
        .queue_rehearsal(&row("h2", "production", "d1", 3))
        .await
        .unwrap();
    assert_eq!(
        gone,
        vec!["h1".to_string()],
        "the running one of the env only"
    );
    let passed = RehearsalEnd {
        state: "passed".into(),
        summary: Some("ok".into()),
        ..Default::default()
    };
    assert!(!tx.finish_rehearsal("h1", &passed, 4).await.unwrap());
    assert!(tx.start_rehearsal("h2", "r", 4).await.unwrap());
    assert!(!tx.passed_rehearsal("production", "d1").await.unwrap());
    assert!(tx.finish_rehearsal("h2", &passed, 5).await.unwrap());
    assert!(tx.passed_rehearsal("production", "d1").await.unwrap());
    assert!(!tx.passed_rehearsal("production", "d2").await.unwrap());
    assert!(!tx.passed_rehearsal("staging", "d1").await.unwrap());
    tx.commit().await.unwrap();
    let latest = store
        .latest_rehearsal("production", "d1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (latest.id.as_str(), latest.state.as_str()),
        ("h2", "passed")
    );
    assert_eq!(latest.summary.as_deref(), Some("ok"));
    assert_eq!(
        latest.pinned(),
        vec![("20250101000000_init".to_string(), "abc".to_string())]
    );
    assert_eq!(
        store.get_rehearsal("h1").await.unwrap().unwrap().state,
        "superseded"
    );
    assert!(store
        .latest_rehearsal("production", "d2")
        .await
        .unwrap()
        .is_none());

    // A rehearsal left running by a stopped process ends as an error at the next start.
    let mut tx = store.begin().await.unwrap();
    tx.start_rehearsal("h9", "dead", 6).await.unwrap();
    tx.commit().await.unwrap();
    let n = dualkey::services::rehearsal::runner::interrupt_left(&app.core, "staging")
        .await
        .unwrap();
    assert_eq!(n, 1);
    let h9 = store.get_rehearsal("h9").await.unwrap().unwrap();
    assert_eq!(h9.state, "error");
    assert_eq!(h9.error.as_deref(), Some("interrupted by a restart"));
    assert!(app
        .audit_actions()
        .await
        .contains(&"rehearsal.interrupted".to_string()));
    assert!(store.rehearsals_in("running").await.unwrap().is_empty());
}
both_backends!(the_store_queues_supersedes_finishes_and_interrupts_rehearsals);

/// On a PostgreSQL store a replica that dies mid-rehearsal leaves its row `running` and its
/// lease live; a running replica recovers it once the lease has run out (not before: a live
/// replica renews it), without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_rehearsal_orphaned_by_a_dead_replica_is_recovered_when_its_lease_runs_out() {
    use dualkey::services::rehearsal::runner;
    let app = spawn_app(Backend::Postgres, 1, 0).await;
    let store = app.core.store.clone();
    let now = app.clock.now_ms();
    let mut tx = store.begin().await.unwrap();
    tx.queue_rehearsal(&row("horphan01", "production", "d1", now))
        .await
        .unwrap();
    assert!(tx
        .start_rehearsal("horphan01", "rehearsal@dead", now)
        .await
        .unwrap());
    tx.commit().await.unwrap();
    assert!(store
        .try_lease(
            &runner::lease_name("production"),
            "rehearsal@dead",
            now,
            60_000
        )
        .await
        .unwrap());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner::run(app.core.clone(), stop));
    let state = |id: &'static str| {
        let store = store.clone();
        async move { store.get_rehearsal(id).await.unwrap().unwrap().state }
    };
    // The dead replica's lease is live: the row is left alone.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    app.core.rehearsal_wake.notify_one();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(state("horphan01").await, "running");
    // Its lease runs out: the next tick recovers it.
    app.clock.advance(61_000);
    app.core.rehearsal_wake.notify_one();
    let mut recovered = false;
    for _ in 0..50 {
        if state("horphan01").await == "error" {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();
    assert!(recovered, "the orphaned rehearsal was not recovered");
    let r = store.get_rehearsal("horphan01").await.unwrap().unwrap();
    assert_eq!(r.error.as_deref(), Some("interrupted by a restart"));
}
