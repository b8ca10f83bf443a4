//! The runbook through chat, on a real PostgreSQL target: deploy with its pre-deploy backup,
//! rollback (down and restore strategies), restore, resolve, emergency, refusals. The state store
//! is SQLite here; the store conformance suite covers PostgreSQL.

use std::path::Path;

use crate::support::TestDb;
use crate::taskflow::{copy_migration, Db, COMMENTS, INIT, LEGACY, PRIORITY, TASKFLOW};

async fn setup(names: &[&str]) -> Db {
    setup_with(names, "").await
}

/// Like [`setup`], with extra keys for `[environments.production]`.
async fn setup_with(names: &[&str], extra: &str) -> Db {
    crate::taskflow::setup("taskflow", names, extra).await
}

impl Db {
    async fn seed(&self) {
        self.exec(&std::fs::read_to_string(Path::new(TASKFLOW).join("seed.sql")).unwrap())
            .await;
    }

    async fn task_checksum(&self) -> String {
        self.sql(
            "SELECT md5(string_agg(t::text, ',' ORDER BY id)) || ':' || count(*) FROM \"Task\" t",
        )
        .await
        .unwrap()
    }

    async fn steps(&self, op: &str) -> Vec<(String, String)> {
        self.app
            .core
            .store
            .steps(op)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.name, s.state))
            .collect()
    }
}

#[tokio::test]
async fn deploy_takes_a_verified_pre_deploy_backup_then_applies_like_prisma() {
    let db = setup(&[INIT, PRIORITY]).await;
    let op = db.approved("deploy").await;
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
    assert_eq!(
        db.steps(&op.id).await,
        vec![
            ("safety backup".into(), "succeeded".into()),
            ("apply migrations".into(), "succeeded".into())
        ]
    );
    assert_eq!(db.applied().await, vec![INIT, PRIORITY]);
    let backups = db.app.core.store.list_backups("production").await.unwrap();
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0].kind, "pre-deploy");
    assert_eq!(backups[0].state, "ok");
    assert!(backups[0].verified_at.is_some() && Path::new(&backups[0].path).exists());
    assert_eq!(
        backups[0].migrations_json, "[]",
        "nothing was applied when the pre-deploy backup ran"
    );
    let actions = db.app.audit_actions().await;
    for a in [
        "backup.started",
        "backup.finished",
        "migration.apply.started",
        "migration.apply.finished",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
    let status = db.app.cmd("carol", "status").await;
    assert!(
        status.contains("pending: none") && status.contains("2 applied"),
        "{status}"
    );
    let again = db.app.cmd("alice", "deploy").await;
    assert!(again.contains("nothing to deploy"), "{again}");
}

#[tokio::test]
async fn backup_then_restore_round_trips_the_data_and_restarts_the_app() {
    let db = setup(&[INIT, PRIORITY]).await;
    db.approved("deploy").await;
    db.seed().await;
    let before = db.task_checksum().await;
    let r = db.app.cmd("alice", "backup before the cleanup").await;
    assert!(r.contains("Operation"), "{r}");
    db.app.drain_worker().await;
    let b = db
        .app
        .core
        .store
        .list_backups("production")
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.kind == "manual")
        .expect("manual backup");
    assert_eq!(b.state, "ok");
    assert_eq!(b.note.as_deref(), Some("before the cleanup"));
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&b.migrations_json).unwrap(),
        vec![INIT, PRIORITY]
    );
    db.exec("DELETE FROM \"Task\" WHERE id % 2 = 0; UPDATE \"Task\" SET title = 'changed'")
        .await;
    assert_ne!(db.task_checksum().await, before);
    let listing = db.app.cmd("carol", "backups").await;
    assert!(
        listing.contains(&b.id) && listing.contains("manual"),
        "{listing}"
    );
    let op = db.approved(&format!("restore {}", b.id)).await;
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
    assert_eq!(
        db.task_checksum().await,
        before,
        "restore must bring back exactly the backed-up rows"
    );
    assert_eq!(db.app.marker_lines(), vec!["stop", "start"]);
    let kinds: Vec<String> = db
        .app
        .core
        .store
        .list_backups("production")
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.kind)
        .collect();
    assert!(
        kinds.contains(&"pre-restore".to_string()),
        "a safety backup comes first: {kinds:?}"
    );
}

#[tokio::test]
async fn an_external_sql_file_without_pg_dumps_last_line_is_flagged_on_the_card() {
    let db = setup(&[INIT]).await;
    let dir = db.app.dir.path().join("backups/production");
    std::fs::create_dir_all(&dir).unwrap();
    // A `pg_dump > file` killed between two statements: valid SQL, but not all of the database.
    std::fs::write(dir.join("cut.sql"), "CREATE TABLE kept (id int);\n").unwrap();
    std::fs::write(
        dir.join("whole.sql"),
        "CREATE TABLE kept (id int);\n\n--\n-- PostgreSQL database dump complete\n--\n\n",
    )
    .unwrap();
    let cut = db.app.cmd("alice", "restore cut.sql").await;
    assert!(
        cut.contains("does not end with pg_dump's") && cut.contains("truncated"),
        "{cut}"
    );
    let whole = db.app.cmd("alice", "restore whole.sql").await;
    assert!(
        whole.contains("approve:") && !whole.contains("does not end with pg_dump's"),
        "{whole}"
    );
}

#[tokio::test]
async fn a_restore_that_fails_half_way_changes_nothing_and_starts_the_app_again() {
    let db = setup(&[INIT, PRIORITY]).await;
    db.approved("deploy").await;
    db.seed().await;
    let before = db.task_checksum().await;
    let dir = db.app.dir.path().join("backups/production");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("broken_dump.sql"),
        "DROP TABLE \"Task\" CASCADE;\nCREATE TABLE half_done (id int);\nSELECT 1/0;\n",
    )
    .unwrap();
    let listing = db.app.cmd("carol", "backups").await;
    assert!(
        listing.contains("broken_dump.sql") && listing.contains("external"),
        "{listing}"
    );
    let op = db.approved("restore broken_dump.sql").await;
    assert_eq!(op.state, "failed");
    assert!(
        op.error.as_deref().unwrap_or("").contains("restore"),
        "{:?}",
        op.error
    );
    assert_eq!(
        db.task_checksum().await,
        before,
        "the database must be unchanged"
    );
    assert_eq!(db.sql("SELECT to_regclass('half_done')::text").await, None);
    assert_eq!(
        db.app.marker_lines(),
        vec!["stop", "start"],
        "the app is started again after a failed restore"
    );
    let steps = db.steps(&op.id).await;
    assert_eq!(
        steps.last().unwrap(),
        &("start app".to_string(), "succeeded".to_string()),
        "{steps:?}"
    );
}

#[tokio::test]
async fn rollback_with_down_sql_unapplies_newest_first_and_deploy_reapplies() {
    let db = setup(&[INIT, PRIORITY, COMMENTS]).await;
    db.approved("deploy").await;
    db.seed().await;
    let card = db.app.cmd("alice", &format!("rollback {PRIORITY}")).await;
    assert!(
        card.contains("DropColumn") || card.contains("DROP COLUMN") || card.contains("drop"),
        "data-loss warning expected: {card}"
    );
    let id = db.app.last_request().await;
    db.app.click("bob", &format!("approve:{id}")).await;
    db.app.drain_worker().await;
    let op = db
        .app
        .core
        .store
        .operation_for_request(&id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
    assert_eq!(db.applied().await, vec![INIT]);
    assert_eq!(
        db.sql("SELECT to_regclass('\"Comment\"')::text").await,
        None
    );
    let has_priority = db.sql("SELECT column_name::text FROM information_schema.columns WHERE table_name = 'Task' AND column_name = 'priority'").await;
    assert_eq!(has_priority, None);
    let audit: Vec<String> = db
        .app
        .core
        .store
        .audit_tail(200)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "migration.down.finished")
        .map(|e| e.details)
        .collect();
    assert_eq!(audit.len(), 2);
    assert!(
        audit[0].contains(COMMENTS) && audit[1].contains(PRIORITY),
        "newest first: {audit:?}"
    );
    let status = db.app.cmd("carol", "status").await;
    assert!(
        status.contains(&format!("deploy would apply: {PRIORITY}, {COMMENTS}")),
        "{status}"
    );
    let op = db.approved("deploy").await;
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
    assert_eq!(db.applied().await, vec![INIT, PRIORITY, COMMENTS]);
}

#[tokio::test]
async fn rollback_without_down_sql_or_an_older_backup_is_refused_with_the_way_forward() {
    let db = setup(&[INIT, PRIORITY, COMMENTS, LEGACY]).await;
    // Deployed outside dualkey (say by `prisma migrate deploy` in CI): no backup predates it.
    let out = dualkey::dbops::prisma::deploy(
        &db.target.url,
        &db.migrations,
        &mut dualkey::dbops::prisma::NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(out.applied.len(), 4);
    let r = db.app.cmd("alice", &format!("rollback {COMMENTS}")).await;
    assert!(
        r.contains("no safe rollback") && r.contains("reversing migration") && r.contains("deploy"),
        "{r}"
    );
    assert!(
        r.contains(LEGACY),
        "the reply names the migration without down.sql: {r}"
    );
    let r = db
        .app
        .cmd(
            "alice",
            &format!("rollback {LEGACY} production --strategy down"),
        )
        .await;
    assert!(r.contains("down.sql"), "{r}");
    assert!(
        db.app
            .core
            .store
            .list_requests(None, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing was requested"
    );
}

#[tokio::test]
async fn rollback_by_restore_uses_the_newest_backup_taken_before_the_migration() {
    let db = setup(&[INIT, PRIORITY]).await;
    db.approved("deploy").await;
    db.seed().await;
    db.app.cmd("alice", "backup").await;
    db.app.drain_worker().await;
    let seeded = db.task_checksum().await;
    copy_migration(COMMENTS, &db.migrations);
    copy_migration(LEGACY, &db.migrations);
    db.approved("deploy").await;
    db.exec("INSERT INTO \"Comment\" (body, \"taskId\") VALUES ('hi', 1)")
        .await;
    let op = db.approved(&format!("rollback {COMMENTS}")).await;
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
    assert_eq!(db.applied().await, vec![INIT, PRIORITY]);
    assert_eq!(
        db.task_checksum().await.split(':').nth(1),
        seeded.split(':').nth(1)
    );
    assert_eq!(db.app.marker_lines(), vec!["stop", "start"]);
}

#[tokio::test]
async fn names_that_do_not_exist_and_hostile_strings_are_refused_before_anything_runs() {
    let db = setup(&[INIT]).await;
    for text in [
        "rollback 20990101000000_nope",
        "rollback ../20250101000000_init",
        "rollback 20250101000000_init;DROP",
        "resolve 20990101000000_nope applied",
        "resolve 20250101000000_init sideways",
        "restore b000000000",
        "restore ../../etc/passwd.sql",
        "restore nope",
        "rollback 20250101000000_init production --strategy sideways",
        "deploy nowhere",
    ] {
        let r = db.app.cmd("alice", text).await;
        assert!(!r.contains("[approve:"), "{text}: {r}");
        assert!(
            r.contains("usage") || r.contains("no backup") || r.contains("no migration"),
            "{text}: {r}"
        );
    }
    assert!(db
        .app
        .core
        .store
        .list_requests(None, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(db
        .app
        .core
        .store
        .list_backups("production")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        db.sql("SELECT to_regclass('_prisma_migrations')::text")
            .await,
        None,
        "the target was not touched"
    );
}

#[tokio::test]
async fn a_failed_deploy_is_reported_and_resolve_and_emergency_recover() {
    let db = setup(&[INIT, PRIORITY]).await;
    db.approved("deploy").await;
    db.seed().await;
    db.app.cmd("alice", "backup").await;
    db.app.drain_worker().await;
    let good = db.task_checksum().await;
    let bad = db.migrations.join("20250401000000_bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("migration.sql"),
        "UPDATE \"Task\" SET title = 'oops';\nSELECT * FROM does_not_exist;\n",
    )
    .unwrap();
    let op = db.approved("deploy").await;
    assert_eq!(op.state, "failed");
    assert!(op.error.unwrap().contains("20250401000000_bad"));
    assert_eq!(
        db.task_checksum().await,
        good,
        "the failed script ran as one transaction"
    );
    let status = db.app.cmd("carol", "status").await;
    assert!(status.contains("failed: 20250401000000_bad"), "{status}");
    let r = db.app.cmd("alice", "deploy").await;
    assert!(r.contains("P3009") || r.contains("failed migration"), "{r}");
    let checklist = db.app.cmd("carol", "checklist").await;
    assert!(
        checklist.contains("[ ] no failed migrations"),
        "{checklist}"
    );
    let op = db.approved("emergency").await;
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
    let names: Vec<String> = db.steps(&op.id).await.into_iter().map(|s| s.0).collect();
    assert_eq!(
        names,
        vec![
            "safety backup",
            "stop app",
            "assess",
            "restore",
            "clear failed migrations",
            "start app"
        ]
    );
    assert_eq!(db.task_checksum().await, good);
    let status = db.app.cmd("carol", "status").await;
    assert!(status.contains("failed: none"), "{status}");
    std::fs::write(
        bad.join("migration.sql"),
        "UPDATE \"Task\" SET done = true WHERE id = 1;\n",
    )
    .unwrap();
    let op = db.approved("deploy").await;
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
}

#[tokio::test]
async fn resolve_rolled_back_marks_a_failed_migration_like_prisma() {
    let db = setup(&[INIT]).await;
    db.approved("deploy").await;
    let bad = db.migrations.join("20250401000000_bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("migration.sql"), "SELECT * FROM does_not_exist;\n").unwrap();
    db.approved("deploy").await;
    let r = db
        .app
        .cmd("alice", &format!("resolve {INIT} rolled-back"))
        .await;
    assert!(r.contains("P3012"), "{r}");
    let op = db.approved("resolve 20250401000000_bad rolled-back").await;
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
    let rolled = db.sql("SELECT count(*)::text FROM _prisma_migrations WHERE migration_name = '20250401000000_bad' AND rolled_back_at IS NOT NULL").await;
    assert_eq!(rolled.as_deref(), Some("1"));
}

#[tokio::test]
async fn a_new_migration_after_approval_changes_the_plan_and_stops_the_deploy() {
    let db = setup(&[INIT]).await;
    db.app.cmd("alice", "deploy").await;
    let id = db.app.last_request().await;
    copy_migration(PRIORITY, &db.migrations);
    db.app.click("bob", &format!("approve:{id}")).await;
    db.app.drain_worker().await;
    let op = db
        .app
        .core
        .store
        .operation_for_request(&id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(op.state, "failed");
    assert!(op.error.unwrap().contains("plan changed"));
    assert_eq!(
        db.sql("SELECT to_regclass('_prisma_migrations')::text")
            .await,
        None,
        "nothing ran"
    );
}

#[tokio::test]
async fn an_unreachable_database_gets_a_clear_error_and_no_catalog_entry() {
    let db = setup(&[INIT]).await;
    let url = db.target.url.clone();
    let var = db.app.core.settings.environments["production"]
        .database_url_env
        .clone();
    // The test server's host:port (whatever DUALKEY_TEST_PG names) swapped for a closed port.
    let base = crate::support::pg_base();
    let host_port = base.rsplit('@').next().unwrap();
    let gone = url.replacen(host_port, "127.0.0.1:1", 1);
    assert_ne!(gone, url, "{url} does not contain {host_port}");
    std::env::set_var(&var, gone);
    let r = db.app.cmd("alice", "backup").await;
    db.app.drain_worker().await;
    let status = db.app.cmd("carol", "status").await;
    assert!(status.contains("UNREACHABLE"), "{status}");
    assert!(r.contains("Operation"), "the backup is queued: {r}");
    let op = db
        .app
        .core
        .store
        .recent_operations(1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(op.state, "failed");
    let error = op.error.unwrap_or_default();
    assert!(
        error.contains("database unreachable, no backup taken"),
        "{error}"
    );
    let backups = db.app.core.store.list_backups("production").await.unwrap();
    assert!(backups.is_empty(), "no catalog entry at all: {backups:?}");
    for text in [&status, &error] {
        assert!(
            !text.contains("postgres://") && !text.contains("127.0.0.1:1"),
            "no URL may leak: {text}"
        );
    }
}

#[tokio::test]
async fn a_failed_safety_backup_stops_the_deploy_and_leaves_no_file_and_no_ok_entry() {
    let fake = std::env::temp_dir().join(format!("dk-fakebin-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&fake).unwrap();
    let pg_dump = fake.join("pg_dump");
    // It answers `--version` (planning checks the tools against the server) and fails only when
    // it dumps; pg_restore and psql are the real ones.
    std::fs::write(&pg_dump, "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'pg_dump (PostgreSQL) 99.0'; exit 0; }\nprintf 'PGDMP-partial-garbage'\necho 'pg_dump: error: connection lost' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(
        &pg_dump,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for tool in ["pg_restore", "psql"] {
        let real = dualkey::dbops::backup::locate(tool, None).unwrap();
        std::os::unix::fs::symlink(real, fake.join(tool)).unwrap();
    }
    let db = setup_with(&[INIT], &format!("pg_bin_dir = \"{}\"", fake.display())).await;
    let op = db.approved("deploy").await;
    assert_eq!(op.state, "failed");
    assert!(
        op.error.as_deref().unwrap().contains("backup"),
        "{:?}",
        op.error
    );
    assert_eq!(
        db.steps(&op.id).await,
        vec![("safety backup".to_string(), "failed".to_string())],
        "nothing after the failed backup runs"
    );
    assert_eq!(
        db.sql("SELECT to_regclass('_prisma_migrations')::text")
            .await,
        None,
        "no migration was applied"
    );
    let backups = db.app.core.store.list_backups("production").await.unwrap();
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0].state, "failed");
    let dir = db.app.dir.path().join("backups/production");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "no file may stay behind: {left:?}");
    std::fs::remove_dir_all(&fake).unwrap();
}

#[tokio::test]
async fn a_backup_interrupted_by_a_crash_is_marked_failed_at_the_next_start() {
    let db = setup(&[INIT]).await;
    let dir = db.app.dir.path().join("backups/production");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("taskflow_20250101T000000Z_manual.dump.partial"),
        b"PGDMP half",
    )
    .unwrap();
    let row = dualkey::store::BackupRow {
        id: "b000000abc".into(),
        env: "production".into(),
        kind: "manual".into(),
        state: "running".into(),
        path: String::new(),
        database_name: "taskflow".into(),
        size_bytes: None,
        sha256: None,
        started_at: 1,
        duration_ms: None,
        requested_by: Some("alice".into()),
        note: None,
        migrations_json: "[]".into(),
        verified_at: None,
        verify_error: None,
        toc_entries: None,
        operation_id: None,
        error: None,
        deleted_at: None,
        file_mtime_ms: None,
        write_stats_json: None,
    };
    let mut tx = db.app.core.store.begin().await.unwrap();
    tx.put_backup(&row).await.unwrap();
    tx.commit().await.unwrap();
    dualkey::services::worker::Worker::recover_interrupted(&db.app.core, true)
        .await
        .unwrap();
    let b = db
        .app
        .core
        .store
        .get_backup("b000000abc")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.state, "failed");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "the .partial file is removed"
    );
}

#[tokio::test]
async fn a_missing_or_changed_backup_is_shown_as_such_and_never_offered_for_restore() {
    let db = setup(&[INIT, PRIORITY]).await;
    db.approved("deploy").await;
    db.seed().await;
    for _ in 0..2 {
        db.app.cmd("alice", "backup").await;
        db.app.drain_worker().await;
    }
    let manual: Vec<_> = db
        .app
        .core
        .store
        .list_backups("production")
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.kind == "manual")
        .collect();
    let (newer, older) = (&manual[0], &manual[1]);
    std::fs::remove_file(&newer.path).unwrap();
    let mut bytes = std::fs::read(&older.path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&older.path, &bytes).unwrap();
    let listing = db.app.cmd("carol", "backups").await;
    assert!(
        listing
            .lines()
            .any(|l| l.contains(&newer.id) && l.contains("missing")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.contains(&older.id) && l.contains("changed")),
        "{listing}"
    );
    for b in [newer, older] {
        let r = db.app.cmd("alice", &format!("restore {}", b.id)).await;
        assert!(
            !r.contains("[approve:") && r.contains("cannot be restored"),
            "{r}"
        );
    }
    // A change that keeps size and modification time passes the cheap listing check, but the
    // full SHA-256 check keeps it from being offered for a restore.
    let b = &db
        .app
        .core
        .store
        .list_backups("production")
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.kind == "pre-deploy")
        .unwrap();
    let mtime = std::fs::metadata(&b.path).unwrap().modified().unwrap();
    let original = std::fs::read(&b.path).unwrap();
    let mut sneaky = original.clone();
    let last = sneaky.len() - 1;
    sneaky[last] ^= 0x01;
    std::fs::write(&b.path, &sneaky).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&b.path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let listing = db.app.cmd("carol", "backups").await;
    assert!(
        listing
            .lines()
            .any(|l| l.contains(&b.id) && l.contains(" ok ")),
        "{listing}"
    );
    let r = db.app.cmd("alice", &format!("restore {}", b.id)).await;
    assert!(
        !r.contains("[approve:") && r.contains("SHA-256 differs"),
        "{r}"
    );
    let r = db
        .app
        .cmd(
            "alice",
            &format!("rollback {PRIORITY} production --strategy restore"),
        )
        .await;
    assert!(
        r.contains("no safe rollback"),
        "no intact backup predates the migration now: {r}"
    );
    std::fs::write(&b.path, &original).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&b.path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    // The pre-deploy backup (empty schema) is still intact and is what a restore-rollback may use.
    let r = db
        .app
        .cmd(
            "alice",
            &format!("rollback {PRIORITY} production --strategy restore"),
        )
        .await;
    let pre = db
        .app
        .core
        .store
        .list_backups("production")
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.kind == "pre-deploy")
        .unwrap();
    assert!(
        r.contains(&pre.id) && !r.contains(&newer.id) && !r.contains(&older.id),
        "{r}"
    );
}

#[tokio::test]
async fn retention_deletes_old_manual_backups_but_keeps_the_newest_verified_ones() {
    let db = setup(&[INIT]).await;
    db.approved("deploy").await;
    db.app.cmd("alice", "backup").await;
    db.app.drain_worker().await;
    let first = db
        .app
        .core
        .store
        .list_backups("production")
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.kind == "manual")
        .unwrap();
    db.app.clock.advance(8 * 86_400_000);
    for _ in 0..3 {
        db.app.cmd("alice", "backup").await;
        db.app.drain_worker().await;
    }
    let first = db
        .app
        .core
        .store
        .get_backup(&first.id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        first.deleted_at.is_some(),
        "older than 7 days and not among the newest 3"
    );
    assert!(!Path::new(&first.path).exists());
    let kept = db
        .app
        .core
        .store
        .list_backups("production")
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.deleted_at.is_none() && b.state == "ok")
        .count();
    assert_eq!(kept, 4, "3 manual + the pre-deploy backup");
    let audit = db.app.audit_actions().await;
    assert!(
        audit.contains(&"retention.deleted".to_string()),
        "{audit:?}"
    );
}

#[tokio::test]
async fn the_staging_guard_refuses_a_production_deploy_that_staging_has_not_seen() {
    let staging = TestDb::create("staging").await;
    let var = format!("DK_TEST_STAGING_{}", uuid::Uuid::new_v4().simple());
    std::env::set_var(&var, &staging.url);
    let db = setup_with(&[INIT], "require_staging = \"staging\"").await;
    let guarded = db.app.with_settings(|s| {
        let st = s.environments.get_mut("staging").unwrap();
        st.database_url_env = var.clone();
        st.migrations_dir = db.migrations.clone();
    });
    let r = guarded.cmd("alice", "deploy").await;
    assert!(r.contains("staging guard") && r.contains(INIT), "{r}");
    dualkey::dbops::prisma::deploy(
        &staging.url,
        &db.migrations,
        &mut dualkey::dbops::prisma::NoProgress,
    )
    .await
    .unwrap();
    let r = guarded.cmd("alice", "deploy").await;
    assert!(r.contains("[approve:"), "{r}");
}
