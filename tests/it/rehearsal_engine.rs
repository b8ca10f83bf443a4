//! The rehearsal engine on a real PostgreSQL 15: the pending migrations applied to a restored
//! copy of a backup in `<db>_dualkey_rehearsal`, measured per migration (duration, tables
//! rewritten, locks), the failure of a migration on real data reported with its statement, the
//! scratch database dropped however it ends (a cancel too, and a leftover at the next start of
//! the real binary), and the target never touched.

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::Connection;

use dualkey::dbops::backup::BackupKind;
use dualkey::dbops::prisma::render_checksum;
use dualkey::services::backups::take::take_backup;
use dualkey::services::rehearsal::engine::{drop_leftover, rehearse};

use crate::scheduler::{setup, Sched};
use crate::support::{bin_setup, own_production, pg_base, Backend, TestDb, BIN};

async fn admin() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&format!("{}/postgres", pg_base()))
        .await
        .unwrap()
}

async fn exists(db: &str) -> bool {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(db)
        .fetch_one(&mut admin().await)
        .await
        .unwrap();
    n == 1
}

async fn exec(url: &str, sql: &str) {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
}

/// Everything a rehearsal must leave as it was in the target: rows, columns, indexes and the
/// migration history.
async fn target_state(url: &str) -> String {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(
        r#"SELECT concat_ws('|',
            (SELECT count(*) FROM "User"), (SELECT count(*) FROM "Task"), (SELECT count(*) FROM "Project"),
            (SELECT string_agg(table_name || '.' || column_name, ',' ORDER BY table_name, column_name) FROM information_schema.columns WHERE table_schema = 'public'),
            (SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public'),
            (SELECT string_agg(migration_name || ':' || checksum || ':' || coalesce(finished_at::text, '-'), ',' ORDER BY migration_name) FROM _prisma_migrations))"#,
    )
    .fetch_one(&mut c)
    .await
    .unwrap()
}

/// Writes migration `name` with `sql` into the environment's folder; its (name, checksum).
fn add_migration(s: &Sched, name: &str, sql: &str) -> (String, String) {
    let dir = s.app.dir.path().join("migrations").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("migration.sql"), sql).unwrap();
    (name.to_string(), render_checksum(sql))
}

const DATA: &str = r#"INSERT INTO "User" (email, name) SELECT 'u' || g || '@x', 'U' FROM generate_series(1, 40) g;
    INSERT INTO "Project" (name) VALUES ('p');
    INSERT INTO "Task" (title, "projectId", "ownerId") SELECT 't' || (g % 10), 1, 1 FROM generate_series(1, 25) g;"#;

fn no_cancel() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(tx);
    rx
}

/// Three migrations rehearsed on a fresh backup (the newest one is older than
/// `rehearsal_max_backup_age`): each listed with its duration, the volatile-default column
/// rewrites Task, the index rewrites nothing, the slow column add shows its ACCESS EXCLUSIVE
/// lock; the scratch database is gone and the target's history unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rehearsal_measures_each_migration_and_leaves_nothing_behind() {
    let s = setup(Backend::Sqlite, "", "").await;
    let core = &s.app.core;
    exec(&s.target.url, DATA).await;
    let old = take_backup(core, "production", BackupKind::Manual, None, None, None)
        .await
        .unwrap();
    // 25 h later: older than the default 24 h, so the rehearsal takes its own.
    s.app.clock.advance(25 * 3600 * 1000);
    let pinned = vec![
        add_migration(
            &s,
            "20250201000000_add_uid",
            "-- AlterTable\nALTER TABLE \"Task\" ADD COLUMN \"uid\" UUID NOT NULL DEFAULT gen_random_uuid();\n",
        ),
        add_migration(
            &s,
            "20250202000000_title_idx",
            "-- CreateIndex\nCREATE INDEX \"Task_title_idx\" ON \"Task\"(\"title\");\n",
        ),
        add_migration(
            &s,
            "20250203000000_nick",
            "ALTER TABLE \"User\" ADD COLUMN \"nick\" TEXT;\nSELECT pg_sleep(0.5);\n",
        ),
    ];
    let before = target_state(&s.target.url).await;
    let scratch = format!("{}_dualkey_rehearsal", s.target.name);

    let o = rehearse(core, "production", &pinned, no_cancel())
        .await
        .unwrap();

    assert!(o.passed(), "{o:#?}");
    assert!(o.fresh_backup, "{o:#?}");
    assert_ne!(o.backup_id, old.id);
    assert_eq!(o.pinned, pinned);
    let names: Vec<&str> = o.migrations.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        pinned.iter().map(|p| p.0.as_str()).collect::<Vec<_>>()
    );
    assert_eq!(o.migrations[0].rewrote, ["public.Task"], "{o:#?}");
    assert!(o.migrations[1].rewrote.is_empty(), "{o:#?}");
    assert!(o.migrations[2].rewrote.is_empty(), "{o:#?}");
    assert!(o.migrations[2].duration_ms >= 500, "{o:#?}");
    assert!(
        o.migrations[2]
            .locks
            .contains(&"ACCESS EXCLUSIVE on public.User".to_string()),
        "{o:#?}"
    );
    assert!(o.migrations.iter().all(|m| m.error.is_none()));
    let largest = o.largest_table.clone().unwrap();
    assert!(
        [
            ("public.User".to_string(), 40),
            ("public.Task".to_string(), 25)
        ]
        .contains(&largest),
        "{largest:?}"
    );
    assert!(o.restore_ms > 0 && o.total_ms >= o.restore_ms);
    let summary = o.summary(core.clock.now_ms());
    assert!(
        summary.starts_with(&format!("Rehearsed on backup {} (", o.backup_id)),
        "{summary}"
    );
    assert!(summary.contains(": 3 migrations in "), "{summary}");
    assert!(
        summary.contains("20250201000000_add_uid rewrote Task"),
        "{summary}"
    );
    assert!(!exists(&scratch).await, "scratch database left behind");
    assert_eq!(target_state(&s.target.url).await, before, "target changed");
    let kinds: Vec<(String, Option<String>)> = core
        .store
        .list_backups("production")
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.kind, b.note))
        .collect();
    assert!(
        kinds.contains(&("manual".into(), Some("taken for a deploy rehearsal".into()))),
        "{kinds:?}"
    );
}

/// A unique index over duplicate titles fails on the restored copy: the rehearsal did not pass,
/// the error names the duplicate key and the statement, the migrations after it never ran, the
/// recent backup was used, and the target and the server are as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_unique_index_over_duplicates_fails_the_rehearsal_and_the_target_is_untouched() {
    let s = setup(Backend::Sqlite, "", "").await;
    let core = &s.app.core;
    exec(&s.target.url, DATA).await;
    let b = take_backup(core, "production", BackupKind::Manual, None, None, None)
        .await
        .unwrap();
    let pinned = vec![
        add_migration(
            &s,
            "20250201000000_slug",
            "ALTER TABLE \"Project\" ADD COLUMN \"slug\" TEXT;\n",
        ),
        add_migration(
            &s,
            "20250202000000_uniq",
            "-- AlterTable\nALTER TABLE \"Task\" ADD COLUMN \"note\" TEXT;\n\n-- CreateIndex\nCREATE UNIQUE INDEX \"Task_title_key\" ON \"Task\"(\"title\");\n",
        ),
        add_migration(
            &s,
            "20250203000000_after",
            "ALTER TABLE \"User\" ADD COLUMN \"nick\" TEXT;\n",
        ),
    ];
    let before = target_state(&s.target.url).await;
    let scratch = format!("{}_dualkey_rehearsal", s.target.name);

    let o = rehearse(core, "production", &pinned, no_cancel())
        .await
        .unwrap();

    assert!(!o.passed(), "{o:#?}");
    assert!(!o.fresh_backup);
    assert_eq!(o.backup_id, b.id);
    assert_eq!(o.migrations.len(), 2, "{o:#?}");
    assert_eq!(o.migrations[0].error, None);
    let failed = &o.migrations[1];
    let error = failed.error.as_deref().unwrap();
    assert!(
        error.contains("could not create unique index \"Task_title_key\""),
        "{error}"
    );
    assert!(error.contains("is duplicated"), "{error}");
    assert_eq!(
        failed.statement.as_deref(),
        Some("CREATE UNIQUE INDEX \"Task_title_key\" ON \"Task\"(\"title\")")
    );
    let summary = o.summary(core.clock.now_ms());
    assert!(
        summary.starts_with(&format!("Rehearsal FAILED on backup {}", b.id)),
        "{summary}"
    );
    assert!(
        summary.contains("20250202000000_uniq failed: ERROR: could not create unique index"),
        "{summary}"
    );
    assert!(
        summary.contains("(statement: CREATE UNIQUE INDEX"),
        "{summary}"
    );
    assert!(!exists(&scratch).await, "scratch database left behind");
    assert_eq!(target_state(&s.target.url).await, before, "target changed");
}

/// A cancel while a migration runs stops the rehearsal and drops its scratch database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_rehearsal_drops_its_scratch_database() {
    let s = setup(Backend::Sqlite, "", "").await;
    let core = s.app.core.clone();
    let pinned = vec![add_migration(
        &s,
        "20250201000000_slow",
        "ALTER TABLE \"User\" ADD COLUMN \"nick\" TEXT;\nSELECT pg_sleep(60);\n",
    )];
    let before = target_state(&s.target.url).await;
    let scratch = format!("{}_dualkey_rehearsal", s.target.name);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(async move { rehearse(&core, "production", &pinned, rx).await });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()",
        )
        .bind(&scratch)
        .fetch_one(&mut admin().await)
        .await
        .unwrap();
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the migration never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(exists(&scratch).await);
    let t0 = Instant::now();
    tx.send(true).unwrap();
    let err = run.await.unwrap().unwrap_err();
    assert!(err.0.contains("cancelled"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(15));
    assert!(!exists(&scratch).await, "scratch database left behind");
    assert_eq!(target_state(&s.target.url).await, before, "target changed");
    // Nothing is left for the next start to drop.
    assert!(!drop_leftover(&s.app.core, "production").await.unwrap());
}

/// The scratch database a killed rehearsal leaves (made here by hand, as a SIGKILL mid-rehearsal
/// would leave it) is dropped when the real binary starts; the target stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_rehearsal_database_is_dropped_at_the_next_start() {
    let target = TestDb::create("rehl").await;
    let scratch = format!("{}_dualkey_rehearsal", target.name);
    create_marked_scratch(&scratch).await;
    let var = format!("DK_TEST_URL_{}", uuid::Uuid::new_v4().simple());
    let setup = bin_setup(|t| own_production(&t, &var, "{dir}", ""));
    let dir = setup.dir.path().display().to_string();
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("{dir}", &dir);
    std::fs::write(&setup.config, text).unwrap();
    std::fs::create_dir_all(Path::new(&dir).join("migrations")).unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&setup.config)
        .env(&var, &target.url)
        .env("DUALKEY_SERVER_LISTEN", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while exists(&scratch).await && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(alive, "dualkey serve exited");
    assert!(
        !exists(&scratch).await,
        "the leftover was not dropped at start"
    );
    assert!(exists(&target.name).await, "the target is gone");
}

/// On a PostgreSQL store a leftover is dropped only when no other dualkey holds the rehearsal's
/// lease: a live rehearsal elsewhere keeps its scratch database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehearsal_alive_on_another_replica_keeps_its_scratch_database() {
    let s = setup(Backend::Postgres, "", "").await;
    let core = &s.app.core;
    let scratch = format!("{}_dualkey_rehearsal", s.target.name);
    create_marked_scratch(&scratch).await;
    let lease = dualkey::services::rehearsal::engine::lease_name("production");
    let now = core.clock.now_ms();
    assert!(core
        .store
        .try_lease(&lease, "rehearsal@other-replica", now, 60_000)
        .await
        .unwrap());
    assert!(!drop_leftover(core, "production").await.unwrap());
    assert!(
        exists(&scratch).await,
        "a live rehearsal's database was dropped"
    );
    s.app.clock.advance(61_000);
    assert!(drop_leftover(core, "production").await.unwrap());
    assert!(!exists(&scratch).await, "the leftover was not dropped");
    assert!(!drop_leftover(core, "production").await.unwrap());
}

/// The newest backup predates a deploy (as a pre-deploy backup does): the migrations the target
/// applied since are applied to the copy first, unmeasured, and the pinned ones are rehearsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_applied_since_the_backup_are_caught_up_first() {
    let s = setup(Backend::Sqlite, "", "").await;
    let core = &s.app.core;
    exec(&s.target.url, DATA).await;
    let b = take_backup(core, "production", BackupKind::Manual, None, None, None)
        .await
        .unwrap();
    add_migration(
        &s,
        "20250201000000_slug",
        "ALTER TABLE \"Project\" ADD COLUMN \"slug\" TEXT;\n",
    );
    let dir = s.app.dir.path().join("migrations");
    dualkey::dbops::prisma::deploy(&s.target.url, &dir, &mut dualkey::dbops::prisma::NoProgress)
        .await
        .unwrap();
    let pinned = vec![add_migration(
        &s,
        "20250202000000_slug_idx",
        "CREATE INDEX \"Project_slug_idx\" ON \"Project\"(\"slug\");\n",
    )];
    let before = target_state(&s.target.url).await;

    let o = rehearse(core, "production", &pinned, no_cancel())
        .await
        .unwrap();

    assert!(o.passed(), "{o:#?}");
    assert_eq!(o.backup_id, b.id);
    assert_eq!(o.caught_up, ["20250201000000_slug"]);
    assert_eq!(o.migrations.len(), 1);
    assert_eq!(o.migrations[0].name, "20250202000000_slug_idx");
    let summary = o.summary(core.clock.now_ms());
    assert!(
        summary.contains("1 migration since it applied first"),
        "{summary}"
    );
    assert_eq!(target_state(&s.target.url).await, before, "target changed");
}

/// The values of a one-column query on the SQLite store the real binary writes.
async fn store_rows(store: &Path, sql: &str) -> Vec<String> {
    let url = format!("sqlite://{}", store.display());
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
}

/// The real binary (`dualkey shell --as alice`, stdin kept open) in its own process group.
fn spawn_shell(config: &Path, var: &str, url: &str) -> std::process::Child {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["shell", "--as", "alice", "--config"])
        .arg(config)
        .env(var, url)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn().unwrap()
}

/// Waits (at most `secs`) until `cond` holds; whether it did.
async fn wait_for<F, Fut>(secs: u64, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/db rehearse production` typed into the real binary; SIGKILL while the pending migration
/// runs on the scratch database (its pg_sleep seen in pg_stat_activity there). The scratch
/// database outlives the kill; the next start of the binary drops it, marks the rehearsal
/// interrupted (row and audit), and the target's history and schema are as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehearsal_killed_mid_run_leaves_no_scratch_database_after_the_next_start() {
    use std::io::Write;
    const INIT: &str = "20250101000000_init";
    let target = TestDb::create("rehk").await;
    let scratch = format!("{}_dualkey_rehearsal", target.name);
    let var = format!("DK_TEST_URL_{}", uuid::Uuid::new_v4().simple());
    let setup = bin_setup(|t| own_production(&t, &var, "{dir}", ""));
    let dir = setup.dir.path().to_path_buf();
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("{dir}", &dir.display().to_string());
    std::fs::write(&setup.config, text).unwrap();
    let migrations = dir.join("migrations");
    let fixture = Path::new(crate::support::FIXTURE_MIGRATIONS);
    std::fs::create_dir_all(migrations.join(INIT)).unwrap();
    for f in ["migration_lock.toml", "20250101000000_init/migration.sql"] {
        std::fs::copy(fixture.join(f), migrations.join(f)).unwrap();
    }
    let mut quiet = dualkey::dbops::prisma::NoProgress;
    dualkey::dbops::prisma::deploy(&target.url, &migrations, &mut quiet)
        .await
        .unwrap();
    exec(&target.url, DATA).await;
    let slow = migrations.join("20250201000000_slow");
    std::fs::create_dir_all(&slow).unwrap();
    std::fs::write(
        slow.join("migration.sql"),
        "ALTER TABLE \"User\" ADD COLUMN \"nick\" TEXT;\nSELECT pg_sleep(25);\n",
    )
    .unwrap();
    let before = target_state(&target.url).await;
    let t0 = Instant::now();

    let mut first = spawn_shell(&setup.config, &var, &target.url);
    let stdin = first.stdin.as_mut().unwrap();
    stdin.write_all(b"/db rehearse production\n").unwrap();
    stdin.flush().unwrap();
    let sleeping = || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE '%pg_sleep(25)%' AND pid <> pg_backend_pid()",
        )
        .bind(&scratch)
        .fetch_one(&mut admin().await)
        .await
        .unwrap();
        n > 0
    };
    let running = wait_for(20, sleeping).await;
    let alive = first.try_wait().unwrap().is_none();
    unsafe { libc::kill(-(first.id() as i32), libc::SIGKILL) };
    first.wait().unwrap();
    assert!(alive, "dualkey shell exited before the kill");
    assert!(running, "the migration never ran on the scratch database");
    assert!(
        exists(&scratch).await,
        "the scratch database is gone right after the kill: it did not happen mid-run"
    );
    let store = dir.join("data/dualkey.db");
    let states = store_rows(&store, "SELECT state FROM rehearsals").await;
    assert_eq!(states, ["running"], "the kill did not happen mid-run");

    let mut second = spawn_shell(&setup.config, &var, &target.url);
    let dropped = wait_for(15, || async { !exists(&scratch).await }).await;
    let interrupted = wait_for(5, || async {
        store_rows(
            &store,
            "SELECT state || ': ' || coalesce(error, '') FROM rehearsals",
        )
        .await
            == ["error: interrupted by a restart"]
    })
    .await;
    let alive = second.try_wait().unwrap().is_none();
    drop(second.stdin.take());
    let _ = second.kill();
    let _ = second.wait();
    assert!(alive, "the second dualkey shell exited");
    let leases = store_rows(
        &store,
        "SELECT name || ' held by ' || holder || ' until ' || until FROM leases WHERE name LIKE 'rehearsal%'",
    )
    .await;
    assert!(
        dropped,
        "the killed rehearsal's scratch database was not dropped at the next start (leases: {leases:?})"
    );
    assert!(
        interrupted,
        "{:?}",
        store_rows(
            &store,
            "SELECT state || ': ' || coalesce(error, '') FROM rehearsals"
        )
        .await
    );
    let actions = store_rows(
        &store,
        "SELECT action FROM audit_events WHERE action LIKE 'rehearsal.%' ORDER BY seq",
    )
    .await;
    assert_eq!(
        actions,
        [
            "rehearsal.queued",
            "rehearsal.started",
            "rehearsal.interrupted",
            "rehearsal.stale_dropped"
        ],
        "{actions:?}"
    );
    assert_eq!(target_state(&target.url).await, before, "target changed");
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
}

/// A scratch database as dualkey creates it: with its mark (an unmarked one is never dropped).
async fn create_marked_scratch(scratch: &str) {
    let mut conn = admin().await;
    sqlx::raw_sql(&format!("CREATE DATABASE \"{scratch}\""))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "COMMENT ON DATABASE \"{scratch}\" IS '{} (rehearsal); dropped by dualkey'",
        dualkey::dbops::backup::SCRATCH_MARK
    ))
    .execute(&mut conn)
    .await
    .unwrap();
}
