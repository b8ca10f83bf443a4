//! `dbops::backup::dump` and `restore` against a real PostgreSQL: round trips, and dumps that fail,
//! are killed or are cancelled leaving no file behind.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dualkey::dbops::backup::{
    self, dump, parse_dump_file_name, restore, verify, BackupKind, DumpError, DumpFormat,
    DumpRequest,
};

use crate::backup_common::*;
use crate::support::TestDb;

#[tokio::test]
async fn a_dump_restores_the_data_exactly_even_over_a_database_changed_since() {
    let db = TestDb::create("bk_round").await;
    seed(&db.url, 5_000).await;
    let items_before = fingerprint(&db.url, "items").await.unwrap();
    let notes_before = fingerprint(&db.url, "notes").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = url_with_password(&db.url);

    let out = dump(&request(&url, dir.path(), BackupKind::Manual), |_| {})
        .await
        .unwrap();

    // Name, place, size, checksum and metadata are what the catalog needs.
    assert_eq!(out.path, dir.path().join("test").join(&out.file_name));
    let parsed = parse_dump_file_name(&out.file_name).unwrap();
    assert_eq!(parsed.database, db.name);
    assert_eq!(parsed.kind, BackupKind::Manual);
    assert_eq!(parsed.started_at.timestamp(), out.started_at.timestamp());
    assert_eq!(out.database, db.name);
    assert_eq!(out.env, "test");
    let bytes = std::fs::read(&out.path).unwrap();
    assert_eq!(out.size_bytes, bytes.len() as u64);
    assert_eq!(
        out.sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );
    assert!(bytes.starts_with(b"PGDMP"));
    assert_eq!(
        std::fs::metadata(&out.path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        all_files(dir.path()),
        vec![PathBuf::from("test").join(&out.file_name)]
    );
    let v = verify(&out.path, Some(&out.sha256), None).await.unwrap();
    assert!(v.toc_entries >= 4, "{v:?}");

    // Change the database after the backup as a later migration and later writes would: rows, a
    // column, a dropped table, a new table with a foreign key to a restored one, an enum, a
    // function, and an extension.
    exec(
        &db.url,
        "UPDATE items SET name = 'changed' WHERE id % 3 = 0;
         DELETE FROM items WHERE id > 4000 AND id NOT IN (SELECT item_id FROM notes);
         INSERT INTO items (id, name) VALUES (999999, 'new');
         ALTER TABLE items ADD COLUMN extra int DEFAULT 7;
         DROP TABLE notes;
         CREATE TYPE \"Mood\" AS ENUM ('ok', 'bad');
         CREATE TABLE \"Comment\" (id serial PRIMARY KEY, item_id bigint REFERENCES items(id), mood \"Mood\");
         INSERT INTO \"Comment\" (item_id, mood) VALUES (1, 'ok');
         CREATE FUNCTION later_fn() RETURNS int LANGUAGE sql AS 'SELECT 1';
         CREATE EXTENSION IF NOT EXISTS pgcrypto;",
    )
    .await;
    assert_ne!(fingerprint(&db.url, "items").await.unwrap(), items_before);

    let r = restore(&url, &out.path, None).await.unwrap();
    assert_eq!(r.format, DumpFormat::Custom);
    assert_eq!(fingerprint(&db.url, "items").await.unwrap(), items_before);
    assert_eq!(fingerprint(&db.url, "notes").await.unwrap(), notes_before);
    assert!(!columns(&db.url, "items")
        .await
        .contains(&"extra".to_string()));
    assert_eq!(fingerprint(&db.url, "\"Comment\"").await, None);
    let mut c = connect(&db.url).await;
    let (mood, func, ext): (bool, bool, bool) = sqlx::query_as(
        "SELECT to_regtype('\"Mood\"') IS NOT NULL, to_regproc('later_fn') IS NOT NULL,
                EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgcrypto')",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(
        (mood, func, ext),
        (false, false, true),
        "objects created after the backup"
    );

    // And into an empty database.
    let empty = TestDb::create("bk_round_empty").await;
    restore(&empty.url, &out.path, None).await.unwrap();
    assert_eq!(
        fingerprint(&empty.url, "items").await.unwrap(),
        items_before
    );
    assert_eq!(
        fingerprint(&empty.url, "notes").await.unwrap(),
        notes_before
    );
}

#[tokio::test]
async fn two_dumps_in_the_same_second_get_different_names() {
    let db = TestDb::create("bk_twice").await;
    seed(&db.url, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(&db.url, dir.path(), BackupKind::Scheduled);
    let (a, b) = tokio::join!(dump(&req, |_| {}), dump(&req, |_| {}));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.file_name, b.file_name);
    assert_eq!(all_files(dir.path()).len(), 2);
}

#[tokio::test]
async fn a_dump_of_a_database_that_does_not_exist_fails_and_leaves_no_file() {
    let db = TestDb::create("bk_nodb").await;
    let missing = url_with_password(&format!("{}_missing", db.url));
    let dir = tempfile::tempdir().unwrap();

    let err = dump(&request(&missing, dir.path(), BackupKind::Manual), |_| {})
        .await
        .unwrap_err();

    let DumpError::Failed { status, stderr } = &err else {
        panic!("expected Failed, got {err:?}")
    };
    assert_eq!(status, "exit code 1");
    assert!(stderr.contains("does not exist"), "{stderr}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(FAKE_PASSWORD), "{shown}");
    assert_eq!(all_files(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://postgres:{FAKE_PASSWORD}@127.0.0.1:99999/x");
    let err = dump(&request(&url, dir.path(), BackupKind::Manual), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, DumpError::Url(_)), "{err:?}");
    let req = request(&url, dir.path(), BackupKind::Manual);
    assert!(!format!("{req:?}").contains(FAKE_PASSWORD));
    assert!(!format!("{err} {err:?}").contains(FAKE_PASSWORD));

    let req = DumpRequest {
        env: "../escape",
        ..request("postgres://u@h/db", dir.path(), BackupKind::Manual)
    };
    let err = dump(&req, |_| {}).await.unwrap_err();
    assert!(matches!(err, DumpError::InvalidEnv(_)), "{err:?}");

    let bin = tempfile::tempdir().unwrap();
    let req = DumpRequest {
        pg_bin_dir: Some(bin.path()),
        ..request("postgres://u@h/db", dir.path(), BackupKind::Manual)
    };
    let err = dump(&req, |_| {}).await.unwrap_err();
    assert!(matches!(err, DumpError::ToolNotFound(_)), "{err:?}");
    assert_eq!(all_files(dir.path()), Vec::<PathBuf>::new());
}

/// Waits until a `.partial` with some bytes shows up in `dir/test` while polling `fut`; panics if
/// the dump finishes first.
async fn wait_for_partial<
    F: std::future::Future<Output = Result<backup::DumpOutcome, DumpError>> + Unpin,
>(
    dir: &Path,
    fut: &mut F,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::select! {
            r = &mut *fut => panic!("the dump ended before it could be interrupted: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        let partial = all_files(dir)
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(".dump.partial"));
        if let Some(p) = partial {
            if std::fs::metadata(dir.join(p))
                .map(|m| m.len() > 0)
                .unwrap_or(false)
            {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no partial file appeared"
        );
    }
}

/// The pids of our own `pg_dump` children whose command line mentions `needle`.
fn our_pg_dumps(needle: &str) -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(after) = stat.rsplit_once(") ").map(|(_, a)| a) else {
            continue;
        };
        let ppid = after.split_whitespace().nth(1).unwrap_or("");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if ppid == me && stat.contains("(pg_dump)") && cmdline.contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test]
async fn a_cancelled_dump_leaves_no_file_and_no_pg_dump() {
    let db = TestDb::create("bk_cancel").await;
    seed_big(&db.url, 200_000).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(&db.url, dir.path(), BackupKind::Scheduled);
    let mut fut = Box::pin(dump(&req, |_| {}));
    wait_for_partial(dir.path(), &mut fut).await;
    assert_eq!(our_pg_dumps(&db.name).len(), 1);

    drop(fut);

    assert_eq!(all_files(dir.path()), Vec::<PathBuf>::new());
    // kill_on_drop: the child goes away too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !our_pg_dumps(&db.name).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pg_dump still running after cancel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_pg_dump_killed_mid_way_leaves_no_file() {
    let db = TestDb::create("bk_kill").await;
    seed_big(&db.url, 200_000).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(&db.url, dir.path(), BackupKind::Scheduled);
    let mut fut = Box::pin(dump(&req, |_| {}));
    wait_for_partial(dir.path(), &mut fut).await;
    let pids = our_pg_dumps(&db.name);
    assert_eq!(pids.len(), 1);
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pids[0], libc::SIGKILL) }, 0);

    let err = fut.await.unwrap_err();

    assert!(
        matches!(&err, DumpError::Failed { status, .. } if status == "killed by signal 9"),
        "{err:?}"
    );
    assert_eq!(all_files(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_dump_whose_server_connection_is_killed_leaves_no_file() {
    let db = TestDb::create("bk_term").await;
    seed_big(&db.url, 200_000).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(&db.url, dir.path(), BackupKind::Scheduled);
    let mut fut = Box::pin(dump(&req, |_| {}));
    wait_for_partial(dir.path(), &mut fut).await;
    let admin = format!("{}/postgres", crate::support::pg_base());
    let mut c = connect(&admin).await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&db.name)
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert!(killed.contains(&true));

    let err = fut.await.unwrap_err();

    assert!(
        matches!(&err, DumpError::Failed { status, .. } if status == "exit code 1"),
        "{err:?}"
    );
    assert_eq!(all_files(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_pg_dump_that_dies_after_writing_leaves_no_file() {
    // A stand-in pg_dump that writes 3 MB and then kills itself.
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("pg_dump");
    std::fs::write(
        &fake,
        "#!/bin/sh\nhead -c 3000000 /dev/zero\necho 'pg_dump: error: boom' >&2\nkill -9 $$\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let req = DumpRequest {
        pg_bin_dir: Some(bin.path()),
        ..request(
            "postgres://u:pw@127.0.0.1/db",
            dir.path(),
            BackupKind::PreDeploy,
        )
    };

    let err = dump(&req, |_| {}).await.unwrap_err();

    let DumpError::Failed { status, stderr } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(status, "killed by signal 9");
    assert!(stderr.contains("boom"), "{stderr}");
    assert_eq!(all_files(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn progress_is_reported_about_once_a_second_while_the_dump_runs() {
    // A stand-in pg_dump that writes 1 MB every 300 ms for about 3.5 s.
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("pg_dump");
    std::fs::write(&fake, "#!/bin/sh\nprintf PGDMP\nfor i in 1 2 3 4 5 6 7 8 9 10 11 12; do head -c 1048576 /dev/zero; sleep 0.3; done\n")
        .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let req = DumpRequest {
        pg_bin_dir: Some(bin.path()),
        ..request("postgres://u@127.0.0.1/db", dir.path(), BackupKind::Manual)
    };
    let mut seen = Vec::new();

    let out = dump(&req, |p| seen.push(p)).await.unwrap();

    assert_eq!(out.size_bytes, 5 + 12 * 1048576);
    let secs = out.duration.as_secs_f64();
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(
        seen.len() as f64 <= secs + 1.0,
        "{} reports in {secs} s",
        seen.len()
    );
    for w in seen.windows(2) {
        assert!(w[1].bytes_written >= w[0].bytes_written);
        assert!(
            w[1].elapsed >= w[0].elapsed + Duration::from_millis(900),
            "{w:?}"
        );
    }
    assert!(seen.last().unwrap().bytes_written > 0);
    assert!(seen.last().unwrap().bytes_written < out.size_bytes + 1);
}

#[test]
fn the_backup_futures_can_be_spawned() {
    fn assert_send<T: Send + 'static>(_: T) {}
    assert_send(async {
        let dir = std::path::PathBuf::from("/nonexistent");
        let req = request("postgres://u@h/db", &dir, BackupKind::Manual);
        let _ = dump(&req, |_| {}).await;
        let _ = verify(&dir, None, None).await;
        let _ = restore("postgres://u@h/db", &dir, None).await;
    });
}
