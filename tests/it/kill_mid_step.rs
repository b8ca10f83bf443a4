//! SIGKILL of the real binary in the middle of an all-or-nothing step on the target database
//! (issue 11, item 1): the database must be exactly old afterwards, and the next start must
//! report the operation `interrupted`.
//!
//! The pause point is a lock, not a sleep: the test holds advisory lock [`PAUSE_KEY`], and the
//! script under test waits for it between two changes. The test kills dualkey once PostgreSQL
//! shows dualkey's session waiting on that lock, waits a bounded time for the server to end
//! that session, and only then releases the lock. Without `client_connection_check_interval`
//! the orphaned statement would resume there and commit its changes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use crate::support::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_dualkey");
const TASKFLOW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/taskflow");
const INIT: &str = "20250101000000_init";
const HALF: &str = "20250120000000_half";

/// The advisory lock the scripts under test wait for while the test holds it.
const PAUSE_KEY: i64 = 1_100_011;

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    target: TestDb,
    var: String,
    migrations: PathBuf,
}

/// A config with a SQLite store and a production environment on a fresh target database whose
/// migrations folder holds INIT and a migration that creates "Half", waits at the pause point,
/// then creates "Other".
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let target = TestDb::create("kill").await;
    let var = format!("DK_TEST_URL_{}", uuid::Uuid::new_v4().simple());
    let url = format!("sqlite://{}/data/dualkey.db", dir.path().display());
    let marker = dir.path().join("marker.log");
    let text = crate::support::own_production(
        &crate::support::test_config(&url, &marker, 1, 0),
        &var,
        &dir.path().display().to_string(),
        "",
    );
    let config = dir.path().join("dualkey.toml");
    std::fs::write(&config, text).unwrap();
    let migrations = dir.path().join("migrations");
    let src = Path::new(TASKFLOW).join("prisma/migrations");
    std::fs::create_dir_all(migrations.join(INIT)).unwrap();
    std::fs::copy(
        src.join("migration_lock.toml"),
        migrations.join("migration_lock.toml"),
    )
    .unwrap();
    for f in ["migration.sql", "down.sql"] {
        std::fs::copy(src.join(INIT).join(f), migrations.join(INIT).join(f)).unwrap();
    }
    std::fs::create_dir_all(migrations.join(HALF)).unwrap();
    std::fs::write(
        migrations.join(HALF).join("migration.sql"),
        format!(
            "CREATE TABLE \"Half\" (\"id\" INTEGER);\nSELECT pg_advisory_lock_shared({PAUSE_KEY});\nCREATE TABLE \"Other\" (\"id\" INTEGER);\n"
        ),
    )
    .unwrap();
    std::fs::write(
        migrations.join(HALF).join("down.sql"),
        format!(
            "DROP TABLE \"Other\";\nSELECT pg_advisory_lock_shared({PAUSE_KEY});\nDROP TABLE \"Half\";\n"
        ),
    )
    .unwrap();
    Setup {
        dir,
        config,
        target,
        var,
        migrations,
    }
}

impl Setup {
    /// `dualkey shell` as alice, in its own process group, stdout piped.
    fn spawn_shell(&self) -> std::process::Child {
        let mut cmd = Command::new(BIN);
        cmd.args(["shell", "--as", "alice", "--config"])
            .arg(&self.config)
            .env(&self.var, &self.target.url)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.spawn().unwrap()
    }

    /// One `dualkey shell` session that reads `input` to its end; returns stdout.
    fn run_shell(&self, input: &str) -> String {
        let env = [(self.var.as_str(), self.target.url.as_str())];
        crate::support::shell_session(
            &self.config,
            Some(self.dir.path()),
            "alice",
            input.as_bytes(),
            &env,
        )
        .0
    }

    async fn conn(&self) -> PgConnection {
        PgConnection::connect(&self.target.url).await.unwrap()
    }

    async fn scalar(&self, sql: &str) -> Option<String> {
        let mut c = self.conn().await;
        sqlx::query_scalar::<_, Option<String>>(sql)
            .fetch_optional(&mut c)
            .await
            .unwrap()
            .flatten()
    }

    async fn exists(&self, table: &str) -> bool {
        self.scalar(&format!("SELECT to_regclass('public.\"{table}\"')::text"))
            .await
            .is_some()
    }

    /// dualkey's session on the target waiting for the pause lock, if there is one.
    async fn paused_backend(&self) -> Option<i32> {
        let mut c = self.conn().await;
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'dualkey' AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
        )
        .bind(&self.target.name)
        .fetch_optional(&mut c)
        .await
        .unwrap()
    }

    async fn backend_alive(&self, pid: i32) -> bool {
        let mut c = self.conn().await;
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(&mut c)
            .await
            .unwrap()
            > 0
    }
}

/// Sends `request` as alice, reads the approval card's id from the shell's output, approves as
/// bob, and returns when dualkey's session waits at the pause point (killing nothing yet).
async fn request_and_pause(s: &Setup, child: &mut std::process::Child, request: &str) -> i32 {
    use std::io::{BufRead, BufReader};
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(format!("{request}\n").as_bytes()).unwrap();
    stdin.flush().unwrap();
    let stdout = child.stdout.take().unwrap();
    // The card is read on a thread so that a silent shell fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            seen.push_str(&line);
            seen.push('\n');
            // After the card, the loop keeps draining so the shell never blocks on a full pipe.
            if let Some(pos) = line.find("[approve:") {
                let _ = tx.send(Ok(line[pos + 9..pos + 19].to_string()));
            }
        }
        let _ = tx.send(Err(seen));
    });
    let id = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(id)) => id,
        other => panic!("no approval card for `{request}`: {other:?}"),
    };
    let stdin = child.stdin.as_mut().unwrap();
    stdin
        .write_all(format!("as bob\nclick approve:{id}\n").as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(pid) = s.paused_backend().await {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "dualkey never reached the pause point"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGKILLs the shell's process group, then waits (at most `grace`) for PostgreSQL to end the
/// dead bot's session; returns whether it did.
async fn kill_and_wait(
    s: &Setup,
    child: &mut std::process::Child,
    pid: i32,
    grace: Duration,
) -> bool {
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    child.wait().unwrap();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !s.backend_alive(pid).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Holds the pause lock, runs `request` through the real binary up to the pause point, SIGKILLs
/// the bot, releases the lock once the server ended the dead bot's session (or after 5 s), and
/// waits until that session is gone. Returns whether the server ended it by itself.
async fn kill_at_pause_point(s: &Setup, request: &str) -> bool {
    let mut pause = s.conn().await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(PAUSE_KEY)
        .execute(&mut pause)
        .await
        .unwrap();
    let mut child = s.spawn_shell();
    let backend = request_and_pause(s, &mut child, request).await;
    let ended = kill_and_wait(s, &mut child, backend, Duration::from_secs(5)).await;
    // If the server kept the dead bot's statement, it goes on now and reaches its end.
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(PAUSE_KEY)
        .execute(&mut pause)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.backend_alive(backend).await {
        assert!(
            Instant::now() < deadline,
            "the orphaned session never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ended
}

/// (finished, rolled back) of each `_prisma_migrations` row of `name`, oldest first.
async fn rows(s: &Setup, name: &str) -> Vec<(bool, bool)> {
    let mut c = s.conn().await;
    sqlx::query_as::<_, (bool, bool)>(
        "SELECT finished_at IS NOT NULL, rolled_back_at IS NOT NULL FROM _prisma_migrations WHERE migration_name = $1 ORDER BY started_at",
    )
    .bind(name)
    .fetch_all(&mut c)
    .await
    .unwrap()
}

/// The next start reports the operation interrupted in `step`.
fn assert_reported_interrupted(s: &Setup, step: usize) {
    let out = s.run_shell("/db status\n");
    assert!(
        out.contains(&format!("was interrupted in step {step}")),
        "the next start must report the operation interrupted in step {step}: {out}"
    );
}

/// Applies every migration of the folder in-process (the pause lock is free).
async fn deploy_all(s: &Setup) {
    let out = dualkey::dbops::prisma::deploy(
        &s.target.url,
        &s.migrations,
        &mut dualkey::dbops::prisma::NoProgress,
    )
    .await
    .unwrap();
    assert!(out.is_success(), "{out:?}");
}

#[tokio::test]
async fn a_bot_killed_while_a_migration_script_runs_leaves_that_migration_exactly_unapplied() {
    let s = setup().await;
    let ended = kill_at_pause_point(&s, "/db deploy").await;
    assert!(
        !s.exists("Half").await && !s.exists("Other").await,
        "the script of a dead bot must roll back, not commit (\"Half\": {}, \"Other\": {})",
        s.exists("Half").await,
        s.exists("Other").await
    );
    assert!(
        ended,
        "PostgreSQL must end the dead bot's statement by itself (client_connection_check_interval)"
    );
    // The migration before it was applied and finished; the killed one has no row at all: its
    // row and its script are one transaction (issue 22), which died with the bot. It is still
    // pending, with nothing to resolve.
    assert!(s.exists("Task").await);
    assert_eq!(rows(&s, INIT).await, vec![(true, false)]);
    assert_eq!(rows(&s, HALF).await, vec![]);
    assert_reported_interrupted(&s, 2);
    let status = s.run_shell("/db status\n");
    assert!(status.contains(HALF), "{status}");
}

#[tokio::test]
async fn a_bot_killed_while_a_down_script_runs_leaves_the_migration_exactly_applied() {
    let s = setup().await;
    deploy_all(&s).await;
    let ended = kill_at_pause_point(&s, &format!("/db rollback {HALF} --strategy down")).await;
    assert!(
        s.exists("Half").await && s.exists("Other").await,
        "down.sql of a dead bot must roll back (\"Half\": {}, \"Other\": {})",
        s.exists("Half").await,
        s.exists("Other").await
    );
    assert!(
        ended,
        "PostgreSQL must end the dead bot's statement by itself"
    );
    assert_eq!(rows(&s, HALF).await, vec![(true, false)], "still applied");
    assert_reported_interrupted(&s, 2);
}

#[tokio::test]
async fn a_bot_killed_in_the_middle_of_resolve_applied_leaves_the_bookkeeping_exactly_old() {
    let s = setup().await;
    std::fs::remove_dir_all(s.migrations.join(HALF)).unwrap();
    deploy_all(&s).await;
    std::fs::create_dir_all(s.migrations.join(HALF)).unwrap();
    std::fs::write(
        s.migrations.join(HALF).join("migration.sql"),
        "CREATE TABLE \"Half\" (\"id\" INTEGER);\n",
    )
    .unwrap();
    // HALF failed once (a row started, never finished); the operator made the change by hand
    // and resolves it as applied. The pause point sits between resolve's two writes (marking the
    // failed row rolled back, then inserting the applied row): a trigger on the INSERT.
    let mut c = s.conn().await;
    sqlx::raw_sql(&format!(
        "INSERT INTO _prisma_migrations (id, checksum, started_at, migration_name) VALUES ('00000000-0000-4000-8000-000000000001', 'x', now(), '{HALF}');
         CREATE TABLE \"Half\" (\"id\" INTEGER);
         CREATE FUNCTION dk_test_pause() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_advisory_xact_lock_shared({PAUSE_KEY}); RETURN NEW; END $$;
         CREATE TRIGGER dk_test_pause BEFORE INSERT ON _prisma_migrations FOR EACH ROW EXECUTE FUNCTION dk_test_pause();"
    ))
    .execute(&mut c)
    .await
    .unwrap();
    let ended = kill_at_pause_point(&s, &format!("/db resolve {HALF} applied")).await;
    assert_eq!(
        rows(&s, HALF).await,
        vec![(false, false)],
        "all or nothing: the failed row must not be marked rolled back without the applied row"
    );
    assert!(
        ended,
        "PostgreSQL must end the dead bot's statement by itself"
    );
    assert_reported_interrupted(&s, 2);
}

#[tokio::test]
async fn a_down_sql_that_commits_by_itself_is_refused_before_anything_runs() {
    let s = setup().await;
    deploy_all(&s).await;
    std::fs::write(
        s.migrations.join(HALF).join("down.sql"),
        "DROP TABLE \"Other\";\nCOMMIT;\nDROP TABLE \"Half\";\n",
    )
    .unwrap();
    let err = dualkey::dbops::prisma::rollback_down(
        &s.target.url,
        &s.migrations,
        HALF,
        None,
        &mut dualkey::dbops::prisma::NoProgress,
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("{HALF}/down.sql line 2: COMMIT")) && text.contains("refused"),
        "{text}"
    );
    assert!(
        s.exists("Other").await && s.exists("Half").await,
        "nothing of the down.sql may run"
    );
    assert_eq!(rows(&s, HALF).await, vec![(true, false)]);
}
