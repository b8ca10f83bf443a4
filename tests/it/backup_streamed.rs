//! Backups verified while they are written (`dbops::backup::dump_verified`, used by every backup
//! dualkey takes): `pg_restore` reads the very bytes written to the file, from a pipe, and the file
//! is not read again afterwards. A verifier that fails, dies early or sees damaged bytes leaves no
//! file and no `ok` catalog entry; a slow one only slows the dump down.
//!
//! The verifier is driven through `pg_bin_dir`: a folder with the real `pg_dump` and a small
//! wrapper `pg_restore` that logs its arguments and then runs the real one (or fails, or damages
//! what it passes on).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use dualkey::dbops::backup::{dump_verified, locate, BackupKind, DumpError, DumpRequest};

use crate::backup_common::*;
use crate::support::{spawn_app_with, Backend, TestApp, TestDb};

/// A `pg_bin_dir` with the real `pg_dump` and a wrapper `pg_restore`. Every call of the wrapper
/// appends its arguments to `calls.log`; `--list FILE` runs the real `pg_restore`; any other call
/// runs `stream_body` (shell, with the real tool in `$REAL` and the arguments in `$@`).
fn fake_bin(stream_body: &str) -> tempfile::TempDir {
    let bin = tempfile::tempdir().unwrap();
    let real_dump = locate("pg_dump", None).unwrap();
    let real_restore = locate("pg_restore", None).unwrap();
    std::os::unix::fs::symlink(&real_dump, bin.path().join("pg_dump")).unwrap();
    let script = format!(
        "#!/bin/sh\nREAL='{}'\ncase \"$1\" in --version) exec \"$REAL\" \"$@\" ;; esac\necho \"$*\" >> '{}'\ncase \"$1\" in --list) exec \"$REAL\" \"$@\" ;; esac\n{stream_body}\n",
        real_restore.display(),
        bin.path().join("calls.log").display()
    );
    let wrapper = bin.path().join("pg_restore");
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// The wrapper's calls, one argument string each.
fn calls(bin: &Path) -> Vec<String> {
    std::fs::read_to_string(bin.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Passes 256 KiB through, drops the next 4 KiB, passes the rest: a damaged stream. `dd` with
/// `iflag=fullblock` reads exactly what it passes on (unlike `head` on a pipe).
const DAMAGE: &str = "{ dd bs=65536 count=4 iflag=fullblock 2>/dev/null; dd bs=4096 count=1 iflag=fullblock of=/dev/null 2>/dev/null; cat; } | \"$REAL\" \"$@\"";

fn request_in<'a>(url: &'a str, dir: &'a Path, bin: &'a Path) -> DumpRequest<'a> {
    DumpRequest {
        pg_bin_dir: Some(bin),
        ..request(url, dir, BackupKind::Manual)
    }
}

/// A target with about 4 MB of incompressible text: several MiB of dump, many chunks.
async fn target(prefix: &str) -> TestDb {
    let db = TestDb::create(prefix).await;
    seed(&db.url, 1_000).await;
    seed_big(&db.url, 20_000).await;
    db
}

#[tokio::test]
async fn the_verifier_reads_the_stream_and_the_file_is_not_read_again() {
    let db = target("bk_stream").await;
    let bin = fake_bin("exec \"$REAL\" \"$@\"");
    let dir = tempfile::tempdir().unwrap();

    let out = dump_verified(&request_in(&db.url, dir.path(), bin.path()), |_| {})
        .await
        .unwrap();

    // One pg_restore read the archive from its stdin (no file operand), SQL to nowhere; the only
    // one given the file lists its table of contents (the header, not the data).
    let partial = format!("{}.partial", out.path.display());
    assert_eq!(
        calls(bin.path()),
        vec!["--file=-".to_string(), format!("--list {partial}")]
    );
    let listed = std::process::Command::new(locate("pg_restore", None).unwrap())
        .arg("--list")
        .arg(&out.path)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .count();
    assert!(listed >= 6, "{listed}");
    assert_eq!(out.toc_entries, Some(listed));
    let bytes = std::fs::read(&out.path).unwrap();
    assert!(bytes.len() > 2 << 20, "{} bytes", bytes.len());
    assert_eq!(
        out.sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );
    assert_eq!(
        all_files(dir.path()),
        vec![PathBuf::from("test").join(&out.file_name)]
    );
}

#[tokio::test]
async fn a_stream_damaged_on_its_way_to_the_verifier_fails_the_dump_and_leaves_no_file() {
    let db = target("bk_damaged").await;
    let bin = fake_bin(DAMAGE);
    let dir = tempfile::tempdir().unwrap();

    let err = dump_verified(&request_in(&db.url, dir.path(), bin.path()), |_| {})
        .await
        .unwrap_err();

    let DumpError::Unverified(why) = &err else {
        panic!("{err:?}")
    };
    assert!(why.contains("pg_restore could not read it"), "{why}");
    assert!(err.to_string().contains("not kept"), "{err}");
    assert_eq!(all_files(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_verifier_that_dies_without_reading_fails_the_dump_without_blocking_it() {
    let db = target("bk_vdies").await;
    let bin = fake_bin("echo 'pg_restore: error: verifier gave up' >&2\nexit 1");
    let dir = tempfile::tempdir().unwrap();

    let err = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        dump_verified(&request_in(&db.url, dir.path(), bin.path()), |_| {}),
    )
    .await
    .expect("a dead verifier must not block the dump")
    .unwrap_err();

    let DumpError::Unverified(why) = &err else {
        panic!("{err:?}")
    };
    assert!(
        why.contains("exit code 1") && why.contains("verifier gave up"),
        "{why}"
    );
    assert_eq!(all_files(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_verifier_that_starts_late_only_slows_the_dump_down() {
    // The dump (about 20 MiB) fills the pipe and the feed queue (17 MiB together) while the
    // verifier sleeps; the copy waits for it instead of failing or dropping bytes.
    let db = TestDb::create("bk_vslow").await;
    seed_big(&db.url, 200_000).await;
    let bin = fake_bin("sleep 2\nexec \"$REAL\" \"$@\"");
    let dir = tempfile::tempdir().unwrap();

    let out = dump_verified(&request_in(&db.url, dir.path(), bin.path()), |_| {})
        .await
        .unwrap();

    assert!(out.size_bytes > 18 << 20, "{} bytes", out.size_bytes);
    assert!(out.toc_entries.unwrap() >= 3);
    assert_eq!(std::fs::metadata(&out.path).unwrap().len(), out.size_bytes);
}

/// An app whose `production` environment targets `db` with `pg_bin_dir = bin`.
async fn app_with_bin(db: &TestDb, bin: &Path) -> TestApp {
    let var = format!("DK_TEST_URL_{}", uuid::Uuid::new_v4().simple());
    // Each test names its own variable; nextest runs every test in its own process.
    std::env::set_var(&var, &db.url);
    let app = spawn_app_with(Backend::Sqlite, 1, 0, |t| {
        crate::support::own_production(
            &t,
            &var,
            "{dir}",
            &format!("pg_bin_dir = \"{}\"", bin.display()),
        )
    })
    .await;
    std::fs::create_dir_all(app.dir.path().join("migrations")).unwrap();
    app
}

#[tokio::test]
async fn a_backup_whose_verifier_fails_mid_stream_is_failed_in_the_catalog_and_leaves_no_file() {
    let db = target("bk_vcat").await;
    let bin = fake_bin(DAMAGE);
    let app = app_with_bin(&db, bin.path()).await;

    let err = dualkey::services::backups::take::take_backup(
        &app.core,
        "production",
        BackupKind::Manual,
        Some("alice"),
        None,
        None,
    )
    .await
    .unwrap_err();

    assert!(err.0.contains("failed verification"), "{err}");
    let rows = app.core.store.list_backups("production").await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].state, "failed");
    assert!(rows[0].verify_error.is_some(), "{:?}", rows[0]);
    assert_eq!(rows[0].verified_at, None);
    assert_eq!(
        all_files(&app.dir.path().join("backups")),
        Vec::<PathBuf>::new()
    );
    // The verifier was fed the stream: no pg_restore ever got the file to read.
    assert_eq!(calls(bin.path()), vec!["--file=-".to_string()]);
    let audit = app.audit_actions().await;
    assert!(audit.contains(&"backup.failed".to_string()), "{audit:?}");
    assert!(!audit.contains(&"backup.finished".to_string()), "{audit:?}");
}

#[tokio::test]
async fn a_backup_verified_on_the_stream_is_ok_with_its_table_of_contents() {
    let db = target("bk_vok").await;
    let bin = fake_bin("exec \"$REAL\" \"$@\"");
    let app = app_with_bin(&db, bin.path()).await;

    let row = dualkey::services::backups::take::take_backup(
        &app.core,
        "production",
        BackupKind::Manual,
        Some("alice"),
        None,
        None,
    )
    .await
    .unwrap();

    assert_eq!(row.state, "ok");
    assert!(row.verified_at.is_some());
    assert!(row.toc_entries.unwrap() >= 6, "{row:?}");
    assert_eq!(calls(bin.path()).len(), 2, "{:?}", calls(bin.path()));
    assert_eq!(calls(bin.path())[0], "--file=-");
    assert_eq!(
        dualkey::services::backups::health::backup_health(&row),
        "ok",
        "a fresh backup is healthy"
    );
}

/// The pids of this process's children named `name` (as in `/proc/PID/stat`).
fn our_children(name: &str) -> Vec<i32> {
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
        let Some((head, after)) = stat.rsplit_once(") ") else {
            continue;
        };
        let ppid = after.split_whitespace().nth(1).unwrap_or("");
        if ppid == me && head.ends_with(&format!("({name}")) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test]
async fn a_cancelled_verified_dump_takes_both_children_and_its_file_with_it() {
    let db = TestDb::create("bk_vcancel").await;
    seed_big(&db.url, 200_000).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(&db.url, dir.path(), BackupKind::Manual);
    let mut fut = Box::pin(dump_verified(&req, |_| {}));
    // Poll the dump until its .partial holds some bytes.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        tokio::select! {
            r = &mut fut => panic!("the dump ended before it could be cancelled: {r:?}"),
            _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
        }
        let started = all_files(dir.path()).into_iter().any(|p| {
            p.to_string_lossy().ends_with(".partial")
                && std::fs::metadata(dir.path().join(&p)).is_ok_and(|m| m.len() > 0)
        });
        if started {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no partial file");
    }
    assert_eq!(our_children("pg_dump").len(), 1);
    assert_eq!(our_children("pg_restore").len(), 1, "the verifier runs");

    drop(fut);

    assert_eq!(all_files(dir.path()), Vec::<PathBuf>::new());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(our_children("pg_dump").is_empty() && our_children("pg_restore").is_empty()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a child outlived the cancelled dump"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
