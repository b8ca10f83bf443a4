//! Restore drills on a real database: the newest verified backup restored into
//! `<db>_dualkey_drill`, `_prisma_migrations` checked against the catalog, the largest tables
//! counted, the scratch database dropped, the target untouched, the result recorded and
//! reported; a failing drill is an alert and still drops its scratch database.

use sqlx::Connection;

use dualkey::services::scheduler::Scheduler;

use crate::scheduler::{reports, set_clock, setup, tick_at, utc};
use crate::support::{pg_base, Backend};

async fn databases_like(pattern: &str) -> Vec<String> {
    let mut c = sqlx::PgConnection::connect(&format!("{}/postgres", pg_base()))
        .await
        .unwrap();
    sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
        .bind(pattern)
        .fetch_all(&mut c)
        .await
        .unwrap()
}

async fn target_sql(url: &str, sql: &str) -> String {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar::<_, String>(sql)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

async fn target_exec(url: &str, sql: &str) {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
}

/// What the drill must never change: every row of the app's tables and of `_prisma_migrations`.
const TARGET_STATE: &str = r#"SELECT concat_ws('|',
    (SELECT string_agg(id || ':' || email, ',' ORDER BY id) FROM "User"),
    (SELECT string_agg(id || ':' || title, ',' ORDER BY id) FROM "Task"),
    (SELECT string_agg(migration_name || ':' || checksum || ':' || coalesce(finished_at::text, '-'), ',' ORDER BY migration_name) FROM _prisma_migrations))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_drill_restores_into_a_scratch_database_and_leaves_the_target_untouched() {
    let s = setup(
        Backend::Sqlite,
        "backup_cron = \"0 2 * * *\"\nrestore_drill_cron = \"0 4 * * *\"",
        "",
    )
    .await;
    let app = &s.app;
    let url = s.target.url.clone();
    target_exec(
        &url,
        r#"INSERT INTO "User" (email, name) SELECT 'u' || g || '@x', 'U' FROM generate_series(1, 40) g;
           INSERT INTO "Project" (name) VALUES ('p');
           INSERT INTO "Task" (title, "projectId", "ownerId") SELECT 't' || g, 1, 1 FROM generate_series(1, 25) g;"#,
    )
    .await;
    set_clock(app, utc(2026, 6, 1, 1, 0));
    let sched = Scheduler::new(app.core.clone());
    tick_at(app, &sched, utc(2026, 6, 1, 2, 0)).await;
    let backup = app
        .core
        .store
        .list_backups("production")
        .await
        .unwrap()
        .remove(0);
    assert_eq!(backup.state, "ok");
    // Written after the backup: a restore into the target would lose it.
    target_exec(
        &url,
        r#"INSERT INTO "User" (email, name) VALUES ('after@x', 'A')"#,
    )
    .await;
    let before = target_sql(&url, TARGET_STATE).await;
    let scratch = format!("{}_dualkey_drill", s.target.name);

    tick_at(app, &sched, utc(2026, 6, 1, 4, 0)).await;

    assert_eq!(
        target_sql(&url, TARGET_STATE).await,
        before,
        "target changed"
    );
    assert!(before.contains("after@x"));
    assert!(
        databases_like(&scratch).await.is_empty(),
        "scratch database left behind"
    );
    let drills = app.core.store.drills("production").await.unwrap();
    assert_eq!(drills.len(), 1, "{drills:?}");
    let d = &drills[0];
    assert_eq!(
        (d.state.as_str(), d.backup_id.as_str()),
        ("ok", backup.id.as_str())
    );
    assert!(d.restore_ms.is_some());
    let details: dualkey::dbops::backup::DrillOutcome =
        serde_json::from_str(d.details_json.as_deref().unwrap()).unwrap();
    assert_eq!(details.migrations, [crate::taskflow::INIT]);
    // Counted in the restored copy: 40 users (not 41), 25 tasks.
    assert!(
        details
            .largest_tables
            .contains(&("public.User".to_string(), 40)),
        "{details:?}"
    );
    assert!(details
        .largest_tables
        .contains(&("public.Task".to_string(), 25)));
    assert!(details.largest_tables.len() <= 5);

    let texts = reports(&app.core).await;
    let report = texts
        .iter()
        .find(|t| t.starts_with("Restore drill report"))
        .unwrap_or_else(|| panic!("{texts:#?}"));
    for want in [
        "production: ok",
        backup.id.as_str(),
        "restore time: ",
        "1 in the restored _prisma_migrations, as the catalog recorded",
        "public.User",
        "40",
    ] {
        assert!(report.contains(want), "missing {want:?}: {report}");
    }
    let actions = app.audit_actions().await;
    for a in ["drill.started", "drill.finished"] {
        assert!(actions.contains(&a.to_string()), "{actions:?}");
    }
    // `backups` shows the drill next to the backup.
    let listing = app.cmd("alice", "backups").await;
    assert!(
        listing.contains("ok ") && listing.contains("restored in"),
        "{listing}"
    );
}

/// A drill whose restored history differs from the catalog's record fails: an alert, a failed
/// drill recorded, the scratch database dropped all the same. A scratch database left by a
/// crashed drill is dropped at start-up, and its drill marked failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_drill_is_an_alert_and_drops_its_scratch_database() {
    let s = setup(
        Backend::Sqlite,
        "backup_cron = \"0 2 * * *\"\nrestore_drill_cron = \"0 4 * * *\"",
        "",
    )
    .await;
    let app = &s.app;
    let scratch = format!("{}_dualkey_drill", s.target.name);
    // Left by a drill that crashed: its database (with dualkey's mark) and its `running` record.
    create_marked(&s.target.url, &scratch).await;
    let crashed = dualkey::store::DrillRow {
        id: "d000000001".into(),
        backup_id: "b000000001".into(),
        env: "production".into(),
        state: "running".into(),
        started_at: utc(2026, 5, 31, 4, 0),
        duration_ms: None,
        restore_ms: None,
        details_json: None,
        error: None,
    };
    let mut tx = app.core.store.begin().await.unwrap();
    tx.put_drill(&crashed).await.unwrap();
    tx.commit().await.unwrap();
    set_clock(app, utc(2026, 6, 1, 1, 0));
    let sched = Scheduler::new(app.core.clone());
    sched.startup().await;
    assert!(databases_like(&scratch).await.is_empty());
    assert!(app
        .audit_actions()
        .await
        .contains(&"drill.stale_dropped".to_string()));
    let left = app.core.store.drills("production").await.unwrap();
    assert_eq!(
        (left[0].state.as_str(), left[0].error.as_deref()),
        ("failed", Some("dualkey stopped during this drill"))
    );

    tick_at(app, &sched, utc(2026, 6, 1, 2, 0)).await;
    let mut backup = app
        .core
        .store
        .list_backups("production")
        .await
        .unwrap()
        .remove(0);
    // The catalog says a second migration was applied when it was taken.
    backup.migrations_json =
        serde_json::to_string(&[crate::taskflow::INIT, crate::taskflow::PRIORITY]).unwrap();
    let mut tx = app.core.store.begin().await.unwrap();
    tx.put_backup(&backup).await.unwrap();
    tx.commit().await.unwrap();
    let before = target_sql(&s.target.url, TARGET_STATE).await;

    tick_at(app, &sched, utc(2026, 6, 1, 4, 0)).await;

    assert!(databases_like(&scratch).await.is_empty());
    assert_eq!(target_sql(&s.target.url, TARGET_STATE).await, before);
    let d = &app.core.store.drills("production").await.unwrap()[0];
    assert_ne!(d.id, crashed.id);
    assert_eq!(d.state, "failed");
    let err = d.error.clone().unwrap();
    assert!(err.contains(crate::taskflow::PRIORITY), "{err}");
    let texts = reports(&app.core).await;
    let alert = texts
        .iter()
        .find(|t| t.contains("ALERT: the restore drill of production failed"))
        .unwrap_or_else(|| panic!("{texts:#?}"));
    assert!(
        alert.contains(&backup.id) && alert.contains("_prisma_migrations"),
        "{alert}"
    );
    assert!(app
        .audit_actions()
        .await
        .contains(&"drill.failed".to_string()));
    let listing = app.cmd("alice", "backups").await;
    assert!(listing.contains("FAILED"), "{listing}");
}

/// On PostgreSQL a drill renews its lease while it runs; a drill whose replica was killed (its
/// lease expired) is found by the periodic check within seconds, marked failed and its scratch
/// database dropped, while a drill whose lease is alive is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_drill_on_postgres_is_found_by_the_periodic_check() {
    let s = setup(
        Backend::Postgres,
        "backup_cron = \"0 2 * * *\"\nrestore_drill_cron = \"0 4 * * *\"",
        "",
    )
    .await;
    let app = &s.app;
    let scratch = format!("{}_dualkey_drill", s.target.name);
    let now = utc(2026, 6, 1, 4, 10);
    set_clock(app, now);
    let sched = Scheduler::new(app.core.clone());
    sched.startup().await;
    let drill = |id: &str| dualkey::store::DrillRow {
        id: id.into(),
        backup_id: "b000000001".into(),
        env: "production".into(),
        state: "running".into(),
        started_at: now - 60_000,
        duration_ms: None,
        restore_ms: None,
        details_json: None,
        error: None,
    };
    // A live drill of another replica: its lease is renewed.
    assert!(app
        .core
        .store
        .try_lease("drill:d-alive", "scheduler-other", now, 60_000)
        .await
        .unwrap());
    let mut tx = app.core.store.begin().await.unwrap();
    tx.put_drill(&drill("d-alive")).await.unwrap();
    tx.commit().await.unwrap();
    tick_at(app, &sched, now + 20_000).await;
    assert_eq!(
        app.core.store.drills("production").await.unwrap()[0].state,
        "running"
    );
    // That replica is killed mid-drill: its scratch database stays, its lease runs out.
    create_marked(&s.target.url, &scratch).await;
    tick_at(app, &sched, now + 90_000).await;
    let d = &app.core.store.drills("production").await.unwrap()[0];
    assert_eq!(
        (d.state.as_str(), d.error.as_deref()),
        ("failed", Some("dualkey stopped during this drill"))
    );
    assert!(databases_like(&scratch).await.is_empty());
}

/// A scratch name that is another configured environment's database on the same server is
/// refused: no drill, and that database is neither dropped nor touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scratch_name_that_is_another_environments_database_is_refused() {
    let base = crate::support::pg_base();
    let s = setup(
        Backend::Sqlite,
        "backup_cron = \"0 2 * * *\"\nrestore_drill_cron = \"0 4 * * *\"",
        "",
    )
    .await;
    let app = &s.app;
    let scratch = format!("{}_dualkey_drill", s.target.name);
    target_exec(&s.target.url, &format!("CREATE DATABASE \"{scratch}\"")).await;
    let staging_url = format!("{base}/{scratch}");
    target_exec(
        &staging_url,
        "CREATE TABLE keep (v text); INSERT INTO keep VALUES ('staging data');",
    )
    .await;
    // `staging` is configured with the database the drill of `production` would use.
    std::env::set_var("DK_TEST_UNUSED_URL", &staging_url);
    set_clock(app, utc(2026, 6, 1, 1, 0));
    let sched = Scheduler::new(app.core.clone());
    sched.startup().await;
    tick_at(app, &sched, utc(2026, 6, 1, 2, 0)).await;
    tick_at(app, &sched, utc(2026, 6, 1, 4, 0)).await;
    assert_eq!(
        target_sql(&staging_url, "SELECT v FROM keep").await,
        "staging data"
    );
    let d = &app.core.store.drills("production").await.unwrap()[0];
    assert_eq!(d.state, "failed");
    assert!(
        d.error
            .as_deref()
            .unwrap_or("")
            .contains("database of a configured environment"),
        "{d:?}"
    );
    let mut c = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS \"{scratch}\" WITH (FORCE)"
    ))
    .execute(&mut c)
    .await
    .unwrap();
}

/// A scratch database as dualkey creates it: with its mark.
async fn create_marked(url: &str, scratch: &str) {
    target_exec(url, &format!("CREATE DATABASE \"{scratch}\"")).await;
    target_exec(
        url,
        &format!(
            "COMMENT ON DATABASE \"{scratch}\" IS '{} (drill); dropped by dualkey'",
            dualkey::dbops::backup::SCRATCH_MARK
        ),
    )
    .await;
}

/// A database that only has the scratch name (no dualkey mark) is someone else's: start-up
/// leaves it alone and a drill refuses to replace it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_the_scratch_name_but_no_mark_is_never_dropped() {
    let s = setup(
        Backend::Sqlite,
        "backup_cron = \"0 2 * * *\"\nrestore_drill_cron = \"0 4 * * *\"",
        "",
    )
    .await;
    let scratch = format!("{}_dualkey_drill", s.target.name);
    target_exec(&s.target.url, &format!("CREATE DATABASE \"{scratch}\"")).await;
    let url = dualkey::dbops::backup::url_for_database(&s.target.url, &scratch);
    target_exec(
        &url,
        "CREATE TABLE keep (v text); INSERT INTO keep VALUES ('mine');",
    )
    .await;
    let err = dualkey::dbops::backup::drop_stale(&s.target.url, &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("dualkey did not create"), "{err}");
    let sched = Scheduler::new(s.app.core.clone());
    sched.startup().await;
    assert_eq!(target_sql(&url, "SELECT v FROM keep").await, "mine");
    target_exec(
        &s.target.url,
        &format!("DROP DATABASE \"{scratch}\" WITH (FORCE)"),
    )
    .await;
}
