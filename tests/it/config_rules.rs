//! Configuration that cannot lie, end to end: optional app commands (`app ...` says they are not
//! set, restoring plans keep the app running and say so), `dualkey config check` naming each
//! refused key, card labels for every request and operation state, and `cancel` of an unknown
//! request id.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{spawn_app_with, Backend, TestApp, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_dualkey");

/// The test config without any app command in production.
fn without_app_commands(t: String) -> String {
    let mut in_production = false;
    t.lines()
        .filter(|l| {
            if l.starts_with('[') {
                in_production = *l == "[environments.production]";
            }
            !(in_production && l.starts_with("app_"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The card of a request as the shell shows it.
async fn card(app: &TestApp, id: &str) -> String {
    app.core.request_card(id).await.unwrap().to_text()
}

#[tokio::test]
async fn without_app_commands_app_says_so_and_no_request_is_created() {
    let app = spawn_app_with(Backend::Sqlite, 1, 0, without_app_commands).await;
    for (text, key) in [("app stop", "app_stop"), ("app start", "app_start")] {
        let r = app.cmd("alice", text).await;
        assert!(
            r.contains(&format!("environments.production.{key} is not set"))
                && r.contains("does not stop or start the app in production")
                && r.contains("set app_stop and app_start"),
            "{text}: {r}"
        );
        assert!(!r.contains("[approve:"), "{text}: {r}");
    }
    assert!(
        app.core
            .store
            .list_requests(None, 10)
            .await
            .unwrap()
            .is_empty(),
        "no approval request for a command that is not configured"
    );
    assert!(app.core.store.active_operations().await.unwrap().is_empty());
    let refused = app
        .audit_actions()
        .await
        .into_iter()
        .filter(|a| a == "request.refused")
        .count();
    assert_eq!(refused, 2);
    let r = app.cmd("carol", "app status").await;
    assert!(
        r.contains("environments.production.app_status is not set"),
        "{r}"
    );
    // Staging keeps its commands.
    let r = app.cmd("carol", "app status staging").await;
    assert!(r.contains("app: backend running"), "{r}");
    assert!(app.marker_lines().is_empty());
}

/// The lines of a card that name a plan step (`  2. stop app: ...`).
fn step_lines(card: &str) -> Vec<String> {
    card.lines()
        .filter(|l| {
            l.starts_with("  ")
                && l.trim_start()
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn restoring_plans_without_app_commands_keep_the_app_running_and_say_so() {
    let target = TestDb::create("noapp").await;
    let var = format!("DK_TEST_URL_{}", uuid::Uuid::new_v4().simple());
    // Each test names its own variable; nextest runs every test in its own process.
    std::env::set_var(&var, &target.url);
    let app = spawn_app_with(Backend::Sqlite, 1, 0, |t| {
        without_app_commands(t.replacen(
            "database_url_env = \"DK_TEST_UNUSED_URL\"",
            &format!("database_url_env = \"{var}\"\nbackup_dir = \"{{dir}}/backups\""),
            1,
        ))
    })
    .await;
    // A backup of the empty database, then every migration of the example project.
    app.cmd("alice", "backup").await;
    app.drain_worker().await;
    let backup = app.core.store.list_backups("production").await.unwrap()[0].clone();
    assert_eq!(backup.state, "ok", "{:?}", backup.error);
    app.cmd("alice", "deploy").await;
    let id = app.last_request().await;
    assert!(app
        .click("bob", &format!("approve:{id}"))
        .await
        .contains("Approved"));
    app.drain_worker().await;
    let deployed = app
        .core
        .store
        .operation_for_request(&id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deployed.state, "succeeded", "{:?}", deployed.error);

    // Restore, rollback by restore and emergency: no app step, and the warning on the card.
    for text in [
        format!("restore {}", backup.id),
        "rollback 20250101000000_init --strategy restore".to_string(),
        "emergency".to_string(),
    ] {
        let r = app.cmd("alice", &text).await;
        assert!(r.contains("[approve:"), "{text}: {r}");
        let steps = step_lines(&r);
        assert!(
            steps.iter().any(|l| l.contains("restore")),
            "{text}: {steps:?}"
        );
        assert!(
            !steps
                .iter()
                .any(|l| l.contains("stop app") || l.contains("start app")),
            "{text} must not stop or start the app: {r}"
        );
        assert!(
            r.contains("WARNING: the app keeps running during the restore: environments.production.app_stop/app_start are not set"),
            "{text}: {r}"
        );
        let id = app.last_request().await;
        app.cmd("alice", &format!("cancel {id}")).await;
    }

    // The restore runs without them.
    app.cmd("alice", &format!("restore {}", backup.id)).await;
    let id = app.last_request().await;
    app.click("bob", &format!("approve:{id}")).await;
    app.drain_worker().await;
    let op = app
        .core
        .store
        .operation_for_request(&id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
    let steps: Vec<String> = app
        .core
        .store
        .steps(&op.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(steps, vec!["safety backup", "restore"]);
    assert!(app.marker_lines().is_empty());
}

#[tokio::test]
async fn config_check_refuses_each_config_that_would_lie_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/data/dualkey.db", dir.path().display());
    let base = crate::support::test_config(&url, &dir.path().join("marker.log"), 1, 0);
    let cases: Vec<(String, &str)> = vec![
        // bob is the only approver besides alice; dave (operator) has alice and bob.
        (
            base.replace("required = 1", "required = 2"),
            "approvals.required",
        ),
        (
            base.replace("ttl = \"15m\"", "ttl = \"106751991167d\""),
            "approvals.ttl",
        ),
        (
            base.clone() + "[schedule]\ntimezone = \"Europe/Berln\"\n",
            "schedule.timezone",
        ),
        (
            base.replacen(crate::support::FIXTURE_MIGRATIONS, "prisma/migratoins", 1),
            "environments.production.migrations_dir",
        ),
        (
            base.replacen("app_start = [", "# app_start = [", 1),
            "environments.production.app_start",
        ),
        (
            base.clone() + "[monitoring]\nreminders = [\"30m\", \"5m\"]\n",
            "monitoring.reminders",
        ),
        (
            base.clone() + "[monitoring]\nreminders = [\"5m\", \"15m\", \"15m\"]\n",
            "monitoring.reminders",
        ),
    ];
    // Every row is checked before failing, so one run names every rule that does not hold.
    let mut wrong = Vec::new();
    for (text, key) in cases {
        let config = dir.path().join("dualkey.toml");
        std::fs::write(&config, &text).unwrap();
        let out = Command::new(BIN)
            .args(["config", "check", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(2) || !err.contains(&format!("key `{key}`")) {
            wrong.push(format!("{key}: exit {:?}: {err}", out.status.code()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let name = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).to_string();
    let config = dir.path().join("dualkey.toml");
    std::fs::write(&config, without_app_commands(base)).unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", name(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("warning: environments.production: app_stop/app_start are not set"),
        "{said}"
    );
}

#[tokio::test]
async fn cards_label_each_request_and_operation_state() {
    let app = spawn_app_with(Backend::Sqlite, 1, 0, |t| {
        // A pause point: the stop command says it started, then waits for `go`.
        t.replacen(
            "app_stop = [\"sh\", \"-c\", \"",
            "app_stop = [\"sh\", \"-c\", \"touch '{dir}/started'; while [ ! -e '{dir}/go' ]; do sleep 0.02; done; ",
            1,
        )
    })
    .await;
    let dir = app.dir.path().to_path_buf();
    // Every state is checked before failing, so one run names every wrong label.
    let mut wrong = Vec::new();

    app.cmd("alice", "app stop").await;
    let pending = app.last_request().await;
    let c = card(&app, &pending).await;
    expect(&mut wrong, &c, "== [pending] Request");

    app.click("bob", &format!("deny:{pending}")).await;
    let c = card(&app, &pending).await;
    expect(&mut wrong, &c, "== [denied] Request");
    expect(&mut wrong, &c, "Votes: bob denied");

    app.cmd("alice", "app stop").await;
    let cancelled = app.last_request().await;
    app.cmd("alice", &format!("cancel {cancelled}")).await;
    let c = card(&app, &cancelled).await;
    expect(&mut wrong, &c, "== [cancelled] Request");

    app.cmd("alice", "app stop").await;
    let expired = app.last_request().await;
    app.clock.advance(16 * 60 * 1000);
    let c = card(&app, &expired).await;
    expect(&mut wrong, &c, "== [expired] Request");

    app.cmd("alice", "app stop").await;
    let approved = app.last_request().await;
    app.click("bob", &format!("approve:{approved}")).await;
    let c = card(&app, &approved).await;
    expect(&mut wrong, &c, "== [queued] Request");
    expect(&mut wrong, &c, "Votes: bob approved");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker =
        tokio::spawn(dualkey::services::worker::Worker::new(app.core.clone()).run(stop_rx));
    wait_for(|| dir.join("started").exists()).await;
    let c = card(&app, &approved).await;
    expect(&mut wrong, &c, "== [running] Request");
    std::fs::write(dir.join("go"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dualkey::services::worker::Worker::idle(&app.core)
        .await
        .unwrap()
    {
        assert!(Instant::now() < deadline, "the operation did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send(true).unwrap();
    worker.await.unwrap();
    let c = card(&app, &approved).await;
    expect(&mut wrong, &c, "== [succeeded] Request");

    // `app start` needs no approval: its own operation card.
    app.cmd("alice", "app start").await;
    let op = app.core.store.active_operations().await.unwrap()[0].clone();
    let c = app.core.operation_card(&op.id).await.unwrap().to_text();
    expect(&mut wrong, &c, "== [queued] Operation");
    app.drain_worker().await;
    let c = app.core.operation_card(&op.id).await.unwrap().to_text();
    expect(&mut wrong, &c, "== [succeeded] Operation");
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

/// Records `card` as wrong unless it holds `want` (its label is at the start).
fn expect(wrong: &mut Vec<String>, card: &str, want: &str) {
    if !card.contains(want) {
        wrong.push(format!("expected `{want}` in:\n{card}"));
    }
}

/// Waits until `cond` holds (at most 20 s): a pause point reached by another process.
async fn wait_for(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "the pause point was never reached"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn cancel_of_an_unknown_request_id_says_there_is_no_such_request() {
    let app = spawn_app_with(Backend::Sqlite, 1, 0, |t| t).await;
    let r = app.cmd("alice", "cancel rdeadbeef00").await;
    assert!(
        r.contains("There is no request `rdeadbeef00`; `approvals` lists the open ones"),
        "{r}"
    );
    assert!(!r.contains("is not a request id"), "{r}");
    let r = app.click("bob", "approve:rdeadbeef00").await;
    assert!(r.contains("there is no request `rdeadbeef00`"), "{r}");
    // Not an id at all: still a usage error.
    let r = app.cmd("alice", "cancel r12").await;
    assert!(r.contains("is not a request id"), "{r}");
}
