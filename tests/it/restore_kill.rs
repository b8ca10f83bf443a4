//! A restore is all or nothing and restores byte for byte what was approved: the file is opened
//! once and hashed while it streams, dualkey alone commits, and a dualkey SIGKILLed in the middle
//! of a restore (the real binary, a database big enough for the restore to take seconds) leaves
//! the database exactly as it was.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dualkey::dbops::backup::{
    dump, restore, restore_with, BackupKind, RestoreError, RestoreOptions,
};
use sqlx::Connection;

use crate::backup_common::*;
use crate::support::TestDb;

async fn scalar(url: &str, sql: &str) -> Option<String> {
    let mut c = connect(url).await;
    sqlx::query_scalar::<_, Option<String>>(sql)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

/// The property the protocol rests on: psql without `--single-transaction` does not commit an
/// open transaction when its input ends; the transaction dies with the session.
#[tokio::test]
async fn end_of_input_without_commit_rolls_back() {
    let db = TestDb::create("rk_eof").await;
    let mut child = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "BEGIN READ WRITE",
            "-f",
            "-",
        ])
        .arg(&db.url)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n")
        .unwrap();
    // stdin dropped: end of input, no COMMIT.
    assert!(child.wait().unwrap().success());
    assert_eq!(scalar(&db.url, "SELECT to_regclass('t')::text").await, None);
}

/// A database with `items` and `notes`, a dump of it (what is approved), then a change.
struct Swap {
    db: TestDb,
    _dir: tempfile::TempDir,
    approved: PathBuf,
    approved_sha: String,
    other: PathBuf,
    items_approved: Option<(i64, String)>,
    items_other: Option<(i64, String)>,
}

impl Swap {
    async fn new(prefix: &str) -> Swap {
        let db = TestDb::create(prefix).await;
        seed(&db.url, 2_000).await;
        let dir = tempfile::tempdir().unwrap();
        let a = dump(&request(&db.url, dir.path(), BackupKind::Manual), |_| {})
            .await
            .unwrap();
        let items_approved = fingerprint(&db.url, "items").await;
        exec(
            &db.url,
            "UPDATE items SET name = 'other dump' WHERE id <= 1000",
        )
        .await;
        // Dump file names have a one-second resolution.
        let b = dump(
            &request(&db.url, dir.path(), BackupKind::PreRestore),
            |_| {},
        )
        .await
        .unwrap();
        let items_other = fingerprint(&db.url, "items").await;
        assert_ne!(items_approved, items_other);
        // The database now: neither dump.
        exec(
            &db.url,
            "DELETE FROM notes; UPDATE items SET qty = -1; CREATE TABLE later (id int PRIMARY KEY);",
        )
        .await;
        Swap {
            db,
            _dir: dir,
            approved: a.path,
            approved_sha: a.sha256,
            other: b.path,
            items_approved,
            items_other,
        }
    }

    async fn state(&self) -> (Option<(i64, String)>, Option<(i64, String)>, bool) {
        (
            fingerprint(&self.db.url, "items").await,
            fingerprint(&self.db.url, "notes").await,
            fingerprint(&self.db.url, "later").await.is_some(),
        )
    }
}

#[tokio::test]
async fn a_backup_changed_in_place_after_it_was_opened_is_refused_and_nothing_is_committed() {
    let s = Swap::new("rk_inplace").await;
    let before = s.state().await;
    let other = std::fs::read(&s.other).unwrap();
    // Overwrites the same inode (the handle dualkey holds) with another valid dump.
    let hook = |p: &Path| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(p)
            .unwrap();
        f.write_all(&other).unwrap();
        f.sync_all().unwrap();
    };
    let opts = RestoreOptions {
        expected_sha256: Some(&s.approved_sha),
        after_open: Some(&hook),
        ..RestoreOptions::default()
    };

    let err = restore_with(&s.db.url, &s.approved, &opts)
        .await
        .unwrap_err();

    let RestoreError::ChecksumMismatch {
        expected, actual, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(expected, &s.approved_sha);
    assert_eq!(
        actual,
        &dualkey::dbops::backup::sha256_file(&s.other)
            .await
            .unwrap()
            .1
    );
    let text = err.to_string();
    assert!(
        text.contains("changed since it was approved") && text.contains("nothing was committed"),
        "{text}"
    );
    assert_eq!(s.state().await, before, "the database must be unchanged");
    // Overwriting bytes in the middle, keeping the size, is caught the same way.
    std::fs::copy(&s.other, &s.approved).unwrap();
    let sha_now = dualkey::dbops::backup::sha256_file(&s.approved)
        .await
        .unwrap()
        .1;
    let flip = |p: &Path| {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        let len = f.metadata().unwrap().len();
        f.write_all_at(b"\0\0\0\0", len / 2).unwrap();
    };
    let opts = RestoreOptions {
        expected_sha256: Some(&sha_now),
        after_open: Some(&flip),
        ..RestoreOptions::default()
    };
    let err = restore_with(&s.db.url, &s.approved, &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            RestoreError::ChecksumMismatch { .. }
                | RestoreError::Failed {
                    tool: "pg_restore",
                    ..
                }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("nothing was"), "{err}");
    assert_eq!(s.state().await, before, "the database must be unchanged");
}

#[tokio::test]
async fn a_backup_renamed_over_after_it_was_opened_is_never_read() {
    let s = Swap::new("rk_rename").await;
    let hook = |p: &Path| std::fs::rename(&s.other, p).unwrap();
    let opts = RestoreOptions {
        expected_sha256: Some(&s.approved_sha),
        after_open: Some(&hook),
        ..RestoreOptions::default()
    };

    let out = restore_with(&s.db.url, &s.approved, &opts).await.unwrap();

    // What was restored is byte for byte the approved dump, not the file now at the path.
    assert_eq!(out.sha256, s.approved_sha);
    let now = s.state().await;
    assert_eq!(now.0, s.items_approved);
    assert_ne!(now.0, s.items_other);
    assert!(!now.2, "the table created after the backup is gone");
}

#[tokio::test]
async fn a_backup_whose_hash_differs_from_the_start_is_refused_and_nothing_is_committed() {
    let s = Swap::new("rk_differs").await;
    let before = s.state().await;
    let wrong = "ab".repeat(32);
    let opts = RestoreOptions {
        expected_sha256: Some(&wrong),
        ..RestoreOptions::default()
    };

    let err = restore_with(&s.db.url, &s.approved, &opts)
        .await
        .unwrap_err();

    assert!(
        matches!(&err, RestoreError::ChecksumMismatch { actual, .. } if *actual == s.approved_sha),
        "{err:?}"
    );
    assert_eq!(s.state().await, before, "the database must be unchanged");
    // The right hash, in upper case, restores.
    let upper = s.approved_sha.to_uppercase();
    let opts = RestoreOptions {
        expected_sha256: Some(&upper),
        ..RestoreOptions::default()
    };
    restore_with(&s.db.url, &s.approved, &opts).await.unwrap();
    assert_eq!(s.state().await.0, s.items_approved);
}

#[tokio::test]
async fn a_plain_file_that_commits_or_rolls_back_itself_commits_nothing() {
    let db = TestDb::create("rk_txn").await;
    seed(&db.url, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let items = fingerprint(&db.url, "items").await;
    for (n, script) in [
        // With `psql --single-transaction` (the old way), `early` stayed although the restore failed.
        "CREATE TABLE early (id int);\nCOMMIT;\nSELECT 1/0;\n",
        "CREATE TABLE early (id int);\nCOMMIT;\nCREATE TABLE late (id int);\n",
        "CREATE TABLE early (id int);\nEND;\nCREATE TABLE late (id int);\n",
        "BEGIN;\nCREATE TABLE early (id int);\nCOMMIT;\n",
        "CREATE TABLE early (id int);\nROLLBACK;\nCREATE TABLE late (id int);\n",
        "CREATE TABLE early (id int);\nROLLBACK;\nSELECT 1;\n",
        // Ends inside COPY data: dualkey's COMMIT would be read as data.
        "CREATE TABLE early (t text);\nCOPY early FROM stdin;\nrow\n",
        "CREATE TABLE early (id int);\nSELECT 1",
    ]
    .iter()
    .enumerate()
    {
        let file = dir.path().join(format!("txn{n}.sql"));
        std::fs::write(&file, script).unwrap();

        let err = restore(&db.url, &file, None).await.unwrap_err();

        assert!(err.to_string().contains("nothing was"), "{script}: {err}");
        assert_eq!(
            scalar(&db.url, "SELECT to_regclass('early')::text").await,
            None,
            "{script}: {err}"
        );
        assert_eq!(
            scalar(&db.url, "SELECT to_regclass('late')::text").await,
            None
        );
        assert_eq!(fingerprint(&db.url, "items").await, items, "{script}");
    }
}

/// A plain `.sql` file rewritten after approval (after its one open) to end dualkey's
/// transaction, turn read-only off and commit on its own never reaches psql: it is spooled and
/// hashed first. Without the spool, `pwned` was committed before the hash at the end was compared.
#[tokio::test]
async fn a_plain_file_rewritten_after_approval_to_commit_on_its_own_never_reaches_psql() {
    let db = TestDb::create("rk_spool").await;
    seed(&db.url, 10).await;
    let items = fingerprint(&db.url, "items").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("approved.sql");
    std::fs::write(&file, "CREATE TABLE approved_only (id int);\n").unwrap();
    let (_, approved_sha) = dualkey::dbops::backup::sha256_file(&file).await.unwrap();
    // It starts like the approved file: its first bytes were read before the rewrite. The
    // padding (more than the pipe and the feeder's buffer hold) makes the feed end only after
    // psql has read, and so run, the statements before it.
    let mut evil =
        "CREATE TABLE t0 (id int);\nROLLBACK;\nSET default_transaction_read_only = off;\nCREATE TABLE pwned (id int);\n"
            .to_string();
    evil.push_str(&"-- padding padding padding padding padding padding padding\n".repeat(250_000));
    let rewrite = |p: &Path| {
        // In place, through the same inode the restore already holds open.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(p)
            .unwrap();
        f.write_all(evil.as_bytes()).unwrap();
    };
    let opts = RestoreOptions {
        expected_sha256: Some(&approved_sha),
        after_open: Some(&rewrite),
        ..RestoreOptions::default()
    };

    let err = restore_with(&db.url, &file, &opts).await.unwrap_err();

    assert!(
        matches!(&err, RestoreError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(
        scalar(&db.url, "SELECT to_regclass('pwned')::text").await,
        None,
        "a byte of the rewritten file reached psql"
    );
    assert_eq!(
        scalar(&db.url, "SELECT to_regclass('approved_only')::text").await,
        None
    );
    assert_eq!(fingerprint(&db.url, "items").await, items);
}

#[tokio::test]
async fn a_dump_with_large_objects_restores_in_one_transaction() {
    let src = TestDb::create("rk_lo_src").await;
    seed(&src.url, 100).await;
    exec(
        &src.url,
        "CREATE TABLE docs (id int PRIMARY KEY, blob oid);
         INSERT INTO docs VALUES (1, lo_from_bytea(0, 'hello large object'::bytea));",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dump(&request(&src.url, dir.path(), BackupKind::Manual), |_| {})
        .await
        .unwrap();
    let dst = TestDb::create("rk_lo_dst").await;
    let opts = RestoreOptions {
        expected_sha256: Some(&out.sha256),
        ..RestoreOptions::default()
    };
    let r = restore_with(&dst.url, &out.path, &opts).await.unwrap();
    assert_eq!(r.sha256, out.sha256);
    assert_eq!(
        scalar(
            &dst.url,
            "SELECT convert_from(lo_get(blob), 'UTF8') FROM docs WHERE id = 1"
        )
        .await
        .as_deref(),
        Some("hello large object")
    );
    assert_eq!(
        fingerprint(&dst.url, "items").await,
        fingerprint(&src.url, "items").await
    );
}

// ---------------------------------------------------------------------------------------------
// SIGKILL of the real binary in the middle of a restore.

const BIN: &str = env!("CARGO_BIN_EXE_dualkey");
const ROWS: i64 = 2_000_000;
const EXTRA: i64 = 100_000;

/// What the target looks like: rows in `big`, its primary key and index there, and whether the
/// table created after the backup exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    rows: i64,
    pkey: bool,
    index: bool,
    after_backup: bool,
}

async fn shape(url: &str) -> Shape {
    let mut c = connect(url).await;
    let row: (bool, bool, bool, bool) = sqlx::query_as(
        "SELECT to_regclass('public.big') IS NOT NULL,
                to_regclass('public.big_pkey') IS NOT NULL,
                to_regclass('public.big_payload_idx') IS NOT NULL,
                to_regclass('public.after_backup') IS NOT NULL",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    // -1: the table itself is gone.
    let rows = match row.0 {
        false => -1,
        true => sqlx::query_scalar("SELECT count(*) FROM big")
            .fetch_one(&mut c)
            .await
            .unwrap(),
    };
    Shape {
        rows,
        pkey: row.1,
        index: row.2,
        after_backup: row.3,
    }
}

/// Sessions on `db` other than ours, by application name.
async fn sessions(admin: &mut sqlx::PgConnection, db: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT coalesce(application_name, ''), coalesce(query, '') FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(db)
    .fetch_all(admin)
    .await
    .unwrap()
}

/// The live children of `pid`: (pid, command name).
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = stat[stat.find('(').unwrap() + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 2..].split(' ').collect();
        if rest.get(1).and_then(|s| s.parse::<u32>().ok()) == Some(pid) {
            out.push((p, comm));
        }
    }
    out
}

/// Whether process `pid` still runs (a zombie does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let close = stat.rfind(')').unwrap();
            !matches!(stat[close + 2..].chars().next(), Some('Z' | 'X'))
        }
    }
}

struct Bot {
    dir: tempfile::TempDir,
    config: PathBuf,
    var: String,
    url: String,
}

impl Bot {
    fn new(url: &str) -> Bot {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker.log");
        let store = format!("sqlite://{}/data/dualkey.db", dir.path().display());
        let migrations = dir.path().join("migrations");
        std::fs::create_dir_all(&migrations).unwrap();
        std::fs::copy(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/taskflow/prisma/migrations/migration_lock.toml"
            ),
            migrations.join("migration_lock.toml"),
        )
        .unwrap();
        let var = format!("DK_KILL_URL_{}", uuid::Uuid::new_v4().simple());
        let d = dir.path().display();
        let text = crate::support::own_production(
            &crate::support::test_config(&store, &marker, 1, 0),
            &var,
            &d.to_string(),
            "",
        );
        let config = dir.path().join("dualkey.toml");
        std::fs::write(&config, text).unwrap();
        Bot {
            dir,
            config,
            var,
            url: url.to_string(),
        }
    }

    fn command(&self, who: &str) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(["shell", "--as", who, "--config"])
            .arg(&self.config)
            .env(&self.var, &self.url)
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd
    }

    /// Runs one shell session to its end (it waits for the operations it started).
    fn run(&self, who: &str, input: &str) -> String {
        let mut child = self.command(who).spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into()
    }

    /// Alice asks for a restore of `backup` and Bob approves it, in a shell that stays open:
    /// returns it (its stdin still open) and the request id.
    fn start_restore(
        &self,
        backup: &str,
    ) -> (std::process::Child, std::process::ChildStdin, String) {
        use std::io::BufRead;
        let mut child = self.command("alice").spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("/db restore {backup}\n").as_bytes())
            .unwrap();
        stdin.flush().unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = String::new();
        let id = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("no approval card: {seen}"))
                .unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if let Some(pos) = line.find("[approve:") {
                break line[pos + 9..pos + 19].to_string();
            }
        };
        stdin
            .write_all(format!("as bob\nclick approve:{id}\n").as_bytes())
            .unwrap();
        stdin.flush().unwrap();
        // Keep reading so the shell never blocks on a full stdout pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        (child, stdin, id)
    }

    async fn op_state(&self, request: &str) -> (String, Option<String>) {
        let url = format!("sqlite://{}/data/dualkey.db", self.dir.path().display());
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_as("SELECT state, error FROM operations WHERE request_id = ?")
            .bind(request)
            .fetch_one(&mut c)
            .await
            .unwrap()
    }
}

/// Where in the restore to kill dualkey.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// As soon as the restore's psql session is there (dropping the old schema).
    SessionOpen,
    /// While `big`'s rows are being copied in, a good part of them loaded.
    MidCopy,
    /// After the data, while the primary key or the index is being built.
    BuildingIndexes,
}

/// Waits for `moment` in the restore of `db` (polling `pg_stat_activity`, no fixed sleeps).
async fn wait_for(admin: &mut sqlx::PgConnection, db: &str, moment: Moment, deadline: Instant) {
    loop {
        assert!(
            Instant::now() < deadline,
            "the restore never reached {moment:?}"
        );
        let s = sessions(admin, db).await;
        let psql: Vec<&String> = s
            .iter()
            .filter(|(a, _)| a == "psql")
            .map(|(_, q)| q)
            .collect();
        let reached = match moment {
            Moment::SessionOpen => !psql.is_empty(),
            Moment::MidCopy => {
                let copied: Option<i64> = sqlx::query_scalar(
                    "SELECT max(p.tuples_processed) FROM pg_stat_progress_copy p
                     JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1 AND a.application_name = 'psql'",
                )
                .bind(db)
                .fetch_one(&mut *admin)
                .await
                .unwrap();
                copied.unwrap_or(0) > ROWS / 2
            }
            Moment::BuildingIndexes => psql.iter().any(|q| {
                q.contains("CREATE INDEX big_payload_idx") || q.contains("ADD CONSTRAINT big_pkey")
            }),
        };
        if reached {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_a_restore_leaves_the_database_exactly_old_or_exactly_new() {
    let t0 = Instant::now();
    let db = TestDb::create("rk_sigkill").await;
    exec(
        &db.url,
        &format!(
            "CREATE TABLE big (id int PRIMARY KEY, payload int NOT NULL);
             INSERT INTO big SELECT g, ((g::bigint * 7919) % 2000003)::int
               FROM generate_series(1, {ROWS}) g;
             CREATE INDEX big_payload_idx ON big (payload);"
        ),
    )
    .await;
    let new = Shape {
        rows: ROWS,
        pkey: true,
        index: true,
        after_backup: false,
    };
    assert_eq!(shape(&db.url).await, new);
    let bot = Bot::new(&db.url);
    let out = bot.run("alice", "/db backup before the kill test\n");
    let backup = {
        let url = format!("sqlite://{}/data/dualkey.db", bot.dir.path().display());
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let id: Option<String> =
            sqlx::query_scalar("SELECT id FROM backups WHERE kind = 'manual' AND state = 'ok'")
                .fetch_optional(&mut c)
                .await
                .unwrap();
        id.unwrap_or_else(|| panic!("no manual backup: {out}"))
    };
    // After the backup: more rows, a new table.
    exec(
        &db.url,
        &format!(
            "INSERT INTO big SELECT g, -g FROM generate_series({}, {}) g;
             CREATE TABLE after_backup (id int PRIMARY KEY); INSERT INTO after_backup VALUES (1);",
            ROWS + 1,
            ROWS + EXTRA
        ),
    )
    .await;
    let old = Shape {
        rows: ROWS + EXTRA,
        after_backup: true,
        ..new
    };
    assert_eq!(shape(&db.url).await, old);
    eprintln!("setup took {:?}", t0.elapsed());

    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", crate::support::pg_base()))
        .await
        .unwrap();
    // Every kill is checked the same way; the verdicts are collected so that a failure reports
    // all of them (the database before each kill, and after it).
    let mut seen = Vec::new();
    for moment in [
        Moment::SessionOpen,
        Moment::MidCopy,
        Moment::BuildingIndexes,
    ] {
        let t = Instant::now();
        let before = shape(&db.url).await;
        let (mut child, stdin, request) = bot.start_restore(&backup);
        wait_for(
            &mut admin,
            &db.name,
            moment,
            Instant::now() + Duration::from_secs(120),
        )
        .await;
        let kids = children(child.id());
        // SIGKILL dualkey alone, not its process group: its tools must die with it by themselves.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        drop(stdin);
        let names: Vec<&str> = kids.iter().map(|(_, c)| c.as_str()).collect();
        assert!(
            names.contains(&"psql"),
            "{moment:?}: children were {names:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = sessions(&mut admin, &db.name).await;
            let running: Vec<&(u32, String)> = kids.iter().filter(|(p, _)| alive(*p)).collect();
            if left.is_empty() && running.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{moment:?}: still there after the kill: sessions {left:?}, tools {running:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let now = shape(&db.url).await;
        eprintln!(
            "{moment:?}: killed after {:?}; database {now:?}",
            t.elapsed()
        );
        // The next start reports the operation interrupted, and never re-runs it.
        let status = bot.run("carol", "/db status\n");
        let reported = status.contains("interrupted in step 3")
            && bot.op_state(&request).await.0 == "interrupted";
        seen.push((moment, before, now, reported));
    }
    for (moment, before, now, reported) in &seen {
        assert!(
            *now == *before || *now == new,
            "{moment:?}: half a restore was committed: {now:?} (before the kill {before:?}, backup {new:?}); all kills: {seen:?}"
        );
        // dualkey never sent COMMIT at these moments, so nothing may have been committed.
        assert_eq!(*now, old, "{moment:?}: {seen:?}");
        assert!(reported, "{moment:?}: not reported interrupted: {seen:?}");
    }

    // Left alone, the same restore commits the backup exactly.
    let (mut child, stdin, request) = bot.start_restore(&backup);
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let (state, error) = bot.op_state(&request).await;
    assert_eq!(state, "succeeded", "{error:?}");
    assert_eq!(shape(&db.url).await, new);
    eprintln!("whole test took {:?}", t0.elapsed());
}

/// Through the runbook: the restore step passes the approved SHA-256, and a backup rewritten
/// after approval (here by the app-stop command, which runs between the plan check and the
/// restore) fails the streaming check; nothing is committed and the app is started again.
#[tokio::test]
async fn a_backup_rewritten_after_approval_fails_the_restore_step_and_nothing_is_committed() {
    let target = TestDb::create("rk_runbook").await;
    seed(&target.url, 500).await;
    let var = format!("DK_TEST_URL_{}", uuid::Uuid::new_v4().simple());
    std::env::set_var(&var, &target.url);
    let app = crate::support::spawn_app_with(crate::support::Backend::Sqlite, 1, 0, |t| {
        let t = crate::support::own_production(&t, &var, "{dir}", "");
        // The first app_stop (production's): also run {dir}/on_stop.sh.
        let pat = "app_stop = [\"sh\", \"-c\", \"";
        let stop = t.find(pat).unwrap() + pat.len();
        format!("{}sh '{{dir}}/on_stop.sh'; {}", &t[..stop], &t[stop..])
    })
    .await;
    let dir = app.dir.path().to_path_buf();
    std::fs::create_dir_all(dir.join("migrations")).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/taskflow/prisma/migrations/migration_lock.toml"
        ),
        dir.join("migrations/migration_lock.toml"),
    )
    .unwrap();
    std::fs::write(dir.join("on_stop.sh"), "true\n").unwrap();
    let backups = || async {
        let mut b = app.core.store.list_backups("production").await.unwrap();
        b.retain(|b| b.kind == "manual");
        b
    };
    app.cmd("alice", "backup first").await;
    app.drain_worker().await;
    exec(&target.url, "UPDATE items SET name = 'second'").await;
    app.cmd("alice", "backup second").await;
    app.drain_worker().await;
    let all = backups().await;
    let first = all
        .iter()
        .find(|b| b.note.as_deref() == Some("first"))
        .unwrap();
    let second = all
        .iter()
        .find(|b| b.note.as_deref() == Some("second"))
        .unwrap();
    exec(
        &target.url,
        "DELETE FROM notes; CREATE TABLE later (id int);",
    )
    .await;
    let before = (
        fingerprint(&target.url, "items").await,
        fingerprint(&target.url, "notes").await,
    );
    std::fs::write(
        dir.join("on_stop.sh"),
        format!("cp '{}' '{}'\n", second.path, first.path),
    )
    .unwrap();

    let card = app.cmd("alice", &format!("restore {}", first.id)).await;
    assert!(card.contains("[approve:"), "{card}");
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
    assert_eq!(op.state, "failed");
    let error = op.error.unwrap_or_default();
    let expected = format!(
        "backup {} changed since it was approved (SHA-256 now {}, approved {}); nothing was committed, the database is unchanged",
        first.id,
        second.sha256.as_deref().unwrap(),
        first.sha256.as_deref().unwrap()
    );
    assert!(error.contains(&expected), "{error}");
    assert_eq!(
        (
            fingerprint(&target.url, "items").await,
            fingerprint(&target.url, "notes").await,
        ),
        before
    );
    assert!(fingerprint(&target.url, "later").await.is_some());
    assert_eq!(app.marker_lines(), vec!["stop", "start"]);
}
