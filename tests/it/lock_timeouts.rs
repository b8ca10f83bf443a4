//! Lock timeouts never leave a half migration, and no deploy runs behind a dump (issue 22, part
//! 3), on the real PostgreSQL: a session holding a lock on the table makes the deploy retry and
//! fail naming it, with `_prisma_migrations` and the table exactly as before; once it commits,
//! the deploy applies and the real Prisma CLI agrees (and writes the same rows itself). A
//! `pg_dump` session on the target holds the deploy step back until it ends.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dualkey::config::HumanDuration;
use dualkey::dbops::prisma::{
    self, DeployEvent, DeployOptions, DeployStopReason, NoProgress, ProgressObserver,
};
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::prisma_helpers::*;
use crate::support::TestDb;
use crate::taskflow::{copy_migration, Db, INIT, PRIORITY};

const BLOG: [&str; 3] = [
    "20240101000000_init",
    "20240102000000_add_post",
    "20240103000000_add_tag",
];
const NAME: &str = "20240104000000_user_name";
const NAME_SQL: &str = "-- AlterTable\nALTER TABLE \"User\" ADD COLUMN \"name\" TEXT;\n";

/// 1 s lock timeout, 2 retries, 100 ms between tries.
fn short() -> DeployOptions {
    DeployOptions {
        lock_timeout: Some(Duration::from_secs(1)),
        statement_timeout: None,
        lock_retries: 2,
        backoff: |_| Duration::from_millis(100),
        refuse_under_dump: false,
    }
}

/// A session in an open transaction that read `table`: it holds ACCESS SHARE until it ends.
async fn blocker(url: &str, table: &str) -> (PgConnection, i32) {
    let mut c = PgConnection::connect(url).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut c)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("BEGIN; SELECT count(*) FROM \"{table}\";"))
        .execute(&mut c)
        .await
        .unwrap();
    (c, pid)
}

/// The columns of `table`, in order.
async fn columns(url: &str, table: &str) -> Vec<String> {
    let mut c = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut c)
    .await
    .unwrap()
}

/// `(pending, checksum)` pairs for `deploy_pinned`.
fn pins(dir: &std::path::Path, names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| {
            let sql = std::fs::read_to_string(dir.join(n).join("migration.sql")).unwrap();
            (n.to_string(), prisma::render_checksum(&sql))
        })
        .collect()
}

/// Collects every deploy event.
struct Events(Vec<DeployEvent>);

#[async_trait::async_trait]
impl ProgressObserver<DeployEvent> for Events {
    async fn on_event(&mut self, e: &DeployEvent) -> Result<(), String> {
        self.0.push(e.clone());
        Ok(())
    }
}

#[tokio::test]
async fn a_held_lock_makes_the_deploy_retry_then_fail_naming_the_blocker_with_nothing_applied() {
    let db = TestDb::create("locktimeout").await;
    let url = &db.url;
    let p = Project::from_fixture("prisma/blog");
    let dir = p.migrations();
    let out = prisma::deploy(url, &dir, &mut NoProgress).await.unwrap();
    assert_eq!(out.applied, BLOG);
    p.add(NAME, NAME_SQL);
    let rows_before = table_dump(url).await.unwrap();
    let columns_before = columns(url, "User").await;

    let (mut held, blocker_pid) = blocker(url, "User").await;
    let mut events = Events(Vec::new());
    let started = Instant::now();
    let out = prisma::deploy_pinned(url, &dir, &pins(&dir, &[NAME]), short(), &mut events)
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(out.applied.is_empty(), "{out:?}");
    let stop = out.stopped.as_ref().expect("the deploy must stop");
    assert_eq!(stop.migration, NAME);
    let DeployStopReason::LockTimeout { tries, holders, .. } = &stop.reason else {
        panic!("expected a lock timeout, got {stop:?}")
    };
    assert_eq!(*tries, 3, "1 try + 2 retries");
    assert!(
        took >= Duration::from_secs(3),
        "three tries of 1 s each: {took:?}"
    );
    assert!(
        holders.iter().any(|h| h.pid == blocker_pid),
        "the blocker {blocker_pid} must be named: {holders:?}"
    );
    let text = stop.message();
    for part in [
        format!("pid {blocker_pid}"),
        "idle in transaction".to_string(),
        "nothing to resolve".to_string(),
        "Nothing of it was applied".to_string(),
        "SELECT count(*)".to_string(),
    ] {
        assert!(text.contains(&part), "{part:?} missing from: {text}");
    }
    let waits: Vec<u32> = events
        .0
        .iter()
        .filter_map(|e| match e {
            DeployEvent::LockWait {
                attempt, holders, ..
            } => {
                assert!(holders.iter().any(|h| h.pid == blocker_pid), "{holders:?}");
                Some(*attempt)
            }
            _ => None,
        })
        .collect();
    assert_eq!(waits, vec![1, 2], "one LockWait per retry");
    assert!(!events
        .0
        .iter()
        .any(|e| matches!(e, DeployEvent::Failed { .. } | DeployEvent::Applied { .. })));
    // Exactly as before: no row for it, the table untouched; nothing to resolve.
    assert_eq!(table_dump(url).await.unwrap(), rows_before);
    assert_eq!(columns(url, "User").await, columns_before);
    let report = prisma::status(url, &dir).await.unwrap();
    assert!(report.failed.is_empty(), "{report:#?}");
    assert_eq!(report.deploy_would_apply, vec![NAME]);

    // The blocker commits: the same approved deploy applies cleanly.
    sqlx::raw_sql("COMMIT").execute(&mut held).await.unwrap();
    held.close().await.unwrap();
    let out = prisma::deploy_pinned(url, &dir, &pins(&dir, &[NAME]), short(), &mut NoProgress)
        .await
        .unwrap();
    assert!(out.is_success(), "{out:?}");
    assert_eq!(out.applied, vec![NAME]);
    assert!(columns(url, "User").await.contains(&"name".to_string()));
    let report = prisma::status(url, &dir).await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_rows_like_the_real_cli(&p, url).await;
}

/// The real Prisma CLI sees the database up to date, and its own deploy of the same folder on a
/// fresh database writes the same rows (every column Prisma sets, timestamps as set/unset, with
/// `started_at <= finished_at`).
async fn assert_rows_like_the_real_cli(p: &Project, url: &str) {
    let cli = match ensure_prisma_cli() {
        Ok(dir) => dir,
        Err(reason) if which("npm").is_none() => {
            println!("skipped the real Prisma CLI: {reason}");
            return;
        }
        Err(reason) => panic!("cannot install the Prisma CLI: {reason}"),
    };
    write_prisma_project(p.root(), &cli);
    let real = run_prisma(p.root(), url, &["migrate", "status"]).await;
    assert_eq!(real.code, 0, "{}\n{}", real.stdout, real.stderr);
    assert!(
        real.stdout.contains("Database schema is up to date!"),
        "{}",
        real.stdout
    );
    let real = run_prisma(p.root(), url, &["migrate", "deploy"]).await;
    assert_eq!(real.code, 0, "{}", real.stderr);
    assert!(
        real.stdout.contains("No pending migrations to apply."),
        "{}",
        real.stdout
    );
    let fresh = TestDb::create("locktimeout_cli").await;
    let real = run_prisma(p.root(), &fresh.url, &["migrate", "deploy"]).await;
    assert_eq!(real.code, 0, "{}", real.stderr);
    assert_eq!(
        table_dump(url).await.unwrap(),
        table_dump(&fresh.url).await.unwrap()
    );
    for u in [url, fresh.url.as_str()] {
        assert!(
            query_bool(
                u,
                "SELECT bool_and(started_at <= finished_at AND applied_steps_count = 1 AND logs IS NULL AND rolled_back_at IS NULL AND length(id) = 36) FROM _prisma_migrations"
            )
            .await
        );
    }
}

#[tokio::test]
async fn other_failures_under_timeouts_leave_the_row_prisma_leaves() {
    let db = TestDb::create("locktimeout_fail").await;
    let url = &db.url;
    let p = Project::from_fixture("prisma/blog");
    let dir = p.migrations();
    prisma::deploy(url, &dir, &mut NoProgress).await.unwrap();
    // statement_timeout is a failure like any other, not a lock timeout: no retry.
    let slow = "20240104000000_slow";
    p.add(
        slow,
        "CREATE TABLE \"Slow\" (id int);\nSELECT pg_sleep(3);\n",
    );
    let options = DeployOptions {
        statement_timeout: Some(Duration::from_secs(1)),
        ..short()
    };
    let mut events = Events(Vec::new());
    let out = prisma::deploy_pinned(url, &dir, &pins(&dir, &[slow]), options, &mut events)
        .await
        .unwrap();
    let stop = out.stopped.expect("stopped");
    let DeployStopReason::ScriptFailed { error } = &stop.reason else {
        panic!("expected P3018, got {stop:?}")
    };
    assert!(
        error.message.contains("Database error code: 57014"),
        "{}",
        error.message
    );
    assert!(!events
        .0
        .iter()
        .any(|e| matches!(e, DeployEvent::LockWait { .. })));
    assert!(!table_exists(url, "Slow").await);
    let dump = table_dump(url).await.unwrap();
    assert_eq!(dump.len(), 4);
    assert_eq!(
        dump[3],
        format!("{slow}|{}|f|f|0|text", pins(&dir, &[slow])[0].1)
    );
    let err = prisma::deploy(url, &dir, &mut NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(prisma::PrismaCode::P3009));
    let real_started: DateTime<Utc> = {
        let mut c = PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar("SELECT started_at FROM _prisma_migrations WHERE migration_name = $1")
            .bind(slow)
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    assert!(real_started <= Utc::now());
}

/// A rollback's `down.sql` runs under the same `lock_timeout`: behind a held lock it is retried,
/// then fails having rolled back nothing (rows and columns as before); once the lock is gone the
/// same rollback runs.
#[tokio::test]
async fn a_rollback_behind_a_held_lock_retries_then_fails_having_rolled_back_nothing() {
    let db = TestDb::create("locktimeout_down").await;
    let url = &db.url;
    let p = Project::from_fixture("prisma/blog");
    let dir = p.migrations();
    prisma::deploy(url, &dir, &mut NoProgress).await.unwrap();
    p.add(NAME, NAME_SQL);
    p.add_down(NAME, "ALTER TABLE \"User\" DROP COLUMN \"name\";\n");
    prisma::deploy(url, &dir, &mut NoProgress).await.unwrap();
    let rows_before = table_dump(url).await.unwrap();
    let columns_before = columns(url, "User").await;
    assert!(columns_before.contains(&"name".to_string()));

    let (mut held, _pid) = blocker(url, "User").await;
    let target = NAME;
    let started = Instant::now();
    let err = prisma::rollback_down_with(url, &dir, (target, None), short(), &mut NoProgress)
        .await
        .unwrap_err();
    let took = started.elapsed();
    match &err {
        prisma::PrismaError::DownScriptFailed {
            database_error_code,
            ..
        } => assert_eq!(database_error_code, "55P03", "{err}"),
        other => panic!("expected the lock timeout, got {other}"),
    }
    // Three tries of 1 s each, with two pauses between them.
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert_eq!(table_dump(url).await.unwrap(), rows_before);
    assert_eq!(columns(url, "User").await, columns_before);

    sqlx::raw_sql("COMMIT").execute(&mut held).await.unwrap();
    let out = prisma::rollback_down_with(url, &dir, (target, None), short(), &mut NoProgress)
        .await
        .unwrap();
    assert_eq!(out.rolled_back, vec![NAME.to_string()]);
    assert!(!columns(url, "User").await.contains(&"name".to_string()));
}

/// A dump that starts between the step's wait and the deploy is seen again under Prisma's
/// advisory lock, before the first write: nothing is written, not even `_prisma_migrations`.
#[tokio::test]
async fn a_dump_running_when_the_deploy_takes_its_lock_stops_it_before_any_write() {
    let db = TestDb::create("locktimeout_dumplock").await;
    let url = &db.url;
    let p = Project::from_fixture("prisma/blog");
    let dir = p.migrations();
    let dump = fake_dump(url, 2).await;
    let options = DeployOptions {
        refuse_under_dump: true,
        ..short()
    };
    let err = prisma::deploy_pinned(url, &dir, &pins(&dir, &BLOG), options, &mut NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, prisma::PrismaError::DumpRunning(s) if s.iter().any(|s| s.application == "pg_dump")),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was applied"), "{err}");
    assert!(!table_exists(url, "_prisma_migrations").await);
    assert!(!table_exists(url, "User").await);
    dump.await.unwrap();
    let out = prisma::deploy_pinned(url, &dir, &pins(&dir, &BLOG), options, &mut NoProgress)
        .await
        .unwrap();
    assert_eq!(out.applied.len(), 3);
}

/// A session whose `application_name` is `pg_dump`, asleep for `secs`; returns when the target
/// lists it, and a task that ends with the time its sleep returned.
async fn fake_dump(url: &str, secs: u32) -> tokio::task::JoinHandle<DateTime<Utc>> {
    let options = prisma::connect_options(url)
        .unwrap()
        .application_name("pg_dump");
    let mut c = options.connect().await.unwrap();
    let task = tokio::spawn(async move {
        sqlx::query(&format!("SELECT pg_sleep({secs})"))
            .execute(&mut c)
            .await
            .unwrap();
        let ended = Utc::now();
        c.close().await.unwrap();
        ended
    });
    let mut watch = PgConnection::connect(url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' AND state = 'active' AND datname = current_database()",
        )
        .fetch_one(&mut watch)
        .await
        .unwrap();
        if n > 0 {
            return task;
        }
        assert!(Instant::now() < deadline, "the fake pg_dump never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The taskflow app with INIT applied, PRIORITY pending and `[deploy]` edited; the original app
/// (whose folder holds the migrations and backups) is returned to be kept alive.
async fn app_with(
    edit: impl FnOnce(&mut dualkey::config::DeploySettings),
) -> (Db, crate::support::TestApp) {
    let mut db = crate::taskflow::setup("lockflow", &[INIT], "").await;
    let op = db.approved("deploy").await;
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
    copy_migration(PRIORITY, &db.migrations);
    let edited = db.app.with_settings(|s| edit(&mut s.deploy));
    let original = std::mem::replace(&mut db.app, edited);
    (db, original)
}

/// When the deploy applied PRIORITY (its row's `started_at`).
async fn applied_at(db: &Db) -> Option<DateTime<Utc>> {
    let mut c = PgConnection::connect(&db.target.url).await.unwrap();
    sqlx::query_scalar("SELECT started_at FROM _prisma_migrations WHERE migration_name = $1")
        .bind(PRIORITY)
        .fetch_optional(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_deploy_requested_while_a_pg_dump_runs_starts_only_after_the_dump_ends() {
    let (db, _keep) = app_with(|d| d.dump_wait = HumanDuration(Duration::from_secs(60))).await;
    let dump = fake_dump(&db.target.url, 4).await;
    let op = db.approved("deploy").await;
    let dump_ended = dump.await.unwrap();
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
    let started = applied_at(&db).await.expect("PRIORITY applied");
    assert!(
        started >= dump_ended,
        "the migration started at {started}, before the dump ended at {dump_ended}"
    );
    let actions = db.app.audit_actions().await;
    assert!(
        actions.iter().any(|a| a == "deploy.waiting_for_dump"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn a_pg_dump_outlasting_dump_wait_fails_the_deploy_with_nothing_applied() {
    let (db, _keep) = app_with(|d| d.dump_wait = HumanDuration(Duration::from_secs(1))).await;
    let dump = fake_dump(&db.target.url, 6).await;
    let op = db.approved("deploy").await;
    assert_eq!(op.state, "failed");
    let error = op.error.unwrap_or_default();
    assert!(
        error.contains("pg_dump still runs") && error.contains("Nothing was applied"),
        "{error}"
    );
    assert_eq!(applied_at(&db).await, None);
    assert_eq!(db.applied().await, vec![INIT]);
    dump.await.unwrap();
}

#[tokio::test]
async fn through_the_worker_a_lock_timeout_fails_the_step_cleanly_and_a_new_request_applies() {
    let (db, _keep) = app_with(|d| {
        d.lock_timeout = HumanDuration(Duration::from_secs(1));
        d.lock_retries = 1;
    })
    .await;
    let (mut held, pid) = blocker(&db.target.url, "Task").await;
    let op = db.approved("deploy").await;
    assert_eq!(op.state, "failed");
    let error = op.error.unwrap_or_default();
    assert!(
        error.contains(&format!("pid {pid}")) && error.contains("nothing to resolve"),
        "{error}"
    );
    assert_eq!(applied_at(&db).await, None, "no row for it");
    let column = db
        .sql("SELECT column_name::text FROM information_schema.columns WHERE table_name = 'Task' AND column_name = 'priority'")
        .await;
    assert_eq!(column, None, "the table is as before");
    let actions = db.app.audit_actions().await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "migration.apply.lock_wait")
            .count(),
        1,
        "{actions:?}"
    );
    let status = db.app.cmd("carol", "status").await;
    assert!(status.contains("failed: none"), "{status}");
    sqlx::raw_sql("COMMIT").execute(&mut held).await.unwrap();
    let op = db.approved("deploy").await;
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
    assert_eq!(db.applied().await, vec![INIT, PRIORITY]);
}
