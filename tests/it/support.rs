//! Shared helpers for the integration tests: fresh PostgreSQL databases on the local server.

use sqlx::{Connection, PgConnection};

/// Base URL of the PostgreSQL server used by tests (no database name), from
/// `DUALKEY_TEST_PG` or the local default `postgres://postgres@127.0.0.1:5432`.
pub fn pg_base() -> String {
    std::env::var("DUALKEY_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database created for one test; dropped (with force) when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// Creates a new, empty database with a unique name on the test server.
    pub async fn create(prefix: &str) -> TestDb {
        let name = format!("dk_{}_{}", prefix, uuid::Uuid::new_v4().simple());
        let name = name[..name.len().min(63)].to_string();
        let mut admin = PgConnection::connect(&format!("{}/postgres", pg_base()))
            .await
            .expect("connect to the test PostgreSQL server (DUALKEY_TEST_PG, else 127.0.0.1:5432; scripts/test sets one up)");
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("create test database");
        TestDb {
            url: format!("{}/{}", pg_base(), name),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let base = pg_base();
        // Best effort, on a separate thread so it works from inside and outside a runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&format!("{base}/postgres")).await {
                    // With it, the scratch databases a drill or a rehearsal of it may have left
                    // (a test that kills the bot mid-rehearsal, or ends while one runs).
                    for db in [
                        name.clone(),
                        format!("{name}_dualkey_drill"),
                        format!("{name}_dualkey_rehearsal"),
                    ] {
                        let _ = sqlx::raw_sql(&format!(
                            "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
                        ))
                        .execute(&mut admin)
                        .await;
                    }
                }
            })
        })
        .join();
    }
}

// ---------------------------------------------------------------------------------------------
// In-process app: a real store (SQLite file or fresh PostgreSQL database), the real core and
// worker, a manual clock, and a responder that captures replies.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dualkey::adapters::memory::{MemoryAdapter, Said};
use dualkey::clock::{Clock, ManualClock};
use dualkey::config::Settings;
use dualkey::core::context::Core;
use dualkey::core::event::{Actor, ChannelRef, EventKind, InboundEvent, Platform};
use dualkey::core::ports::Responder;
use dualkey::core::reply::Reply;

/// Which store backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one test per store backend from an `async fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_sqlite() {
                super::$name($crate::support::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_postgres() {
                super::$name($crate::support::Backend::Postgres).await
            }
        }
    };
}

/// The example project's migrations folder, which every environment of [`test_config`] uses
/// (a migrations folder must exist); tests with their own folder replace the line
/// `migrations_dir = "{FIXTURE_MIGRATIONS}"`.
pub const FIXTURE_MIGRATIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/taskflow/prisma/migrations"
);

/// Points the `production` environment of a [`test_config`] text at a test's own target: the
/// database URL from the environment variable `var`, `{dir}/migrations` and `{dir}/backups`
/// (`dir` is a path, or the literal `{dir}` that [`spawn_app_with`] fills in), plus `extra` lines.
pub fn own_production(t: &str, var: &str, dir: &str, extra: &str) -> String {
    t.replacen(
        &format!("migrations_dir = \"{FIXTURE_MIGRATIONS}\""),
        &format!("migrations_dir = \"{dir}/migrations\""),
        1,
    )
    .replacen(
        "database_url_env = \"DK_TEST_UNUSED_URL\"",
        &format!("database_url_env = \"{var}\"\nbackup_dir = \"{dir}/backups\"\n{extra}"),
        1,
    )
}

/// A config for tests. `marker` collects one line per app command run.
pub fn test_config(
    store_url: &str,
    marker: &std::path::Path,
    required: u32,
    extra_approvers: usize,
) -> String {
    let m = marker.display();
    let mut s = format!(
        r#"
default_environment = "production"
[store]
url = "{store_url}"
[approvals]
required = {required}
ttl = "15m"
[[operators]]
id = "alice"
slack = "U0ALICE"
discord = "300000000000000001"
roles = ["operator", "approver"]
[[operators]]
id = "bob"
slack = "U0BOB"
discord = "300000000000000002"
roles = ["approver"]
[[operators]]
id = "carol"
slack = "U0CAROL"
roles = ["viewer"]
[[operators]]
id = "dave"
roles = ["operator"]
[environments.production]
database_url_env = "DK_TEST_UNUSED_URL"
migrations_dir = "{FIXTURE_MIGRATIONS}"
app_stop = ["sh", "-c", "echo stop >> '{m}'"]
app_start = ["sh", "-c", "echo start >> '{m}'"]
app_status = ["echo", "backend running"]
[environments.staging]
database_url_env = "DK_TEST_UNUSED_URL"
migrations_dir = "{FIXTURE_MIGRATIONS}"
app_stop = ["sh", "-c", "echo stop-staging >> '{m}'"]
app_start = ["sh", "-c", "echo start-staging >> '{m}'"]
app_status = ["echo", "backend running"]
"#
    );
    for i in 0..extra_approvers {
        s.push_str(&format!(
            "[[operators]]\nid = \"approver{i}\"\nroles = [\"approver\"]\n"
        ));
    }
    s
}

/// An in-process dualkey with a manual clock.
pub struct TestApp {
    pub core: Arc<Core>,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    pub marker: PathBuf,
    pub db: Option<TestDb>,
}

/// Builds a [`TestApp`] on `backend` with `required` votes and extra approvers.
pub async fn spawn_app(backend: Backend, required: u32, extra_approvers: usize) -> TestApp {
    spawn_app_with(backend, required, extra_approvers, |t| t).await
}

/// Like [`spawn_app`], with a function that edits the config text first (`{dir}` in it is the
/// test's temporary folder, which holds an empty `migrations` folder for tests that fill their
/// own) and a clock starting at the real time.
pub async fn spawn_app_with(
    backend: Backend,
    required: u32,
    extra_approvers: usize,
    edit: impl Fn(String) -> String,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker.log");
    std::fs::create_dir_all(dir.path().join("migrations")).unwrap();
    let (url, db) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}/state/dualkey.db", dir.path().display()),
            None,
        ),
        Backend::Postgres => {
            let db = TestDb::create("store").await;
            (db.url.clone(), Some(db))
        }
    };
    let text = edit(test_config(&url, &marker, required, extra_approvers))
        .replace("{dir}", &dir.path().display().to_string());
    let settings = Settings::from_toml(&text, std::path::Path::new("test.toml"))
        .expect("test config is valid");
    let store = dualkey::store::open(&url).await.expect("open store");
    let clock = Arc::new(ManualClock::new(chrono::Utc::now().timestamp_millis()));
    let core = Arc::new(Core::new(
        settings,
        store,
        clock.clone() as Arc<dyn Clock>,
        Arc::new(dualkey::services::facts::RunbookFacts),
    ));
    TestApp {
        core,
        clock,
        dir,
        marker,
        db,
    }
}

/// Captures replies.
#[derive(Default)]
pub struct Capture {
    pub replies: Mutex<Vec<Reply>>,
}

#[async_trait]
impl Responder for Capture {
    async fn respond(&self, reply: Reply) -> anyhow::Result<()> {
        self.replies.lock().unwrap().push(reply);
        Ok(())
    }
}

impl Capture {
    /// All reply texts joined.
    pub fn text(&self) -> String {
        self.replies
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.to_text())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// An actor from `platform:account` or a shell operator name.
pub fn actor(who: &str) -> Actor {
    let (platform, account) = match who.split_once(':') {
        Some(("slack", a)) => (Platform::Slack, a),
        Some(("discord", a)) => (Platform::Discord, a),
        _ => (Platform::Shell, who),
    };
    Actor {
        platform,
        account: account.into(),
        display: who.into(),
    }
}

impl TestApp {
    /// Sends an event as `who`; returns the captured replies as text, then what the event
    /// queued for the test channel (its card), delivered through an in-memory adapter.
    pub async fn send(&self, who: &str, kind: EventKind) -> String {
        // Every event is a millisecond after the previous one, so "newest" is well defined.
        self.clock.advance(1);
        let cap = Capture::default();
        // What earlier events and the worker queued is not this event's answer.
        self.deliver_shell().await;
        let ev = InboundEvent::new(
            uuid::Uuid::new_v4().to_string(),
            actor(who),
            ChannelRef {
                platform: Platform::Shell,
                id: "test".into(),
            },
            kind,
        );
        self.core.handle(ev, &cap).await;
        let mut text = cap.text();
        for said in self.deliver_shell().await {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&said.reply().to_text());
        }
        text
    }

    /// Delivers what waits in the outbox for the shell platform (the test channel) through an
    /// in-memory adapter and returns it.
    pub async fn deliver_shell(&self) -> Vec<Said> {
        let mem = MemoryAdapter::new(Platform::Shell);
        dualkey::outbox::deliver_due(&self.core, mem.as_ref())
            .await
            .unwrap();
        mem.drain()
    }

    /// `/db <text>` as `who`.
    pub async fn cmd(&self, who: &str, text: &str) -> String {
        self.send(who, EventKind::Command { text: text.into() })
            .await
    }

    /// A button click as `who`.
    pub async fn click(&self, who: &str, id: &str) -> String {
        self.send(
            who,
            EventKind::Action {
                action_id: id.into(),
            },
        )
        .await
    }

    /// The request id on the newest request.
    pub async fn last_request(&self) -> String {
        self.core
            .store
            .list_requests(None, 1)
            .await
            .unwrap()
            .remove(0)
            .id
    }

    /// The same app (store, clock, marker) with edited settings, as after a config change.
    pub fn with_settings(&self, edit: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = (*self.core.settings).clone();
        edit(&mut settings);
        let mut core = Core::new(
            settings,
            self.core.store.clone(),
            self.core.clock.clone(),
            self.core.facts.clone(),
        );
        core.worker_wake = self.core.worker_wake.clone();
        core.outbox_wake = self.core.outbox_wake.clone();
        core.in_flight = self.core.in_flight.clone();
        TestApp {
            core: Arc::new(core),
            clock: self.clock.clone(),
            dir: tempfile::tempdir().unwrap(),
            marker: self.marker.clone(),
            db: None,
        }
    }

    /// The actions of the last 200 audit events, oldest first.
    pub async fn audit_actions(&self) -> Vec<String> {
        self.core
            .store
            .audit_tail(200)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect()
    }

    /// Lines in the marker file (one per app command run).
    pub fn marker_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.marker)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Runs the worker until no operation is queued or running (at most 30 s).
    pub async fn drain_worker(&self) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let w = tokio::spawn(dualkey::services::worker::Worker::new(self.core.clone()).run(rx));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if dualkey::services::worker::Worker::idle(&self.core)
                .await
                .unwrap()
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "operations did not finish in 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tx.send(true).unwrap();
        w.await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The real binary, driven through `dualkey shell`.

/// The `dualkey` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_dualkey");

/// A folder holding a [`test_config`] (SQLite store in `data/`) for the real binary.
pub struct BinSetup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub marker: PathBuf,
}

/// A [`BinSetup`] whose config text is `edit`ed first.
pub fn bin_setup(edit: impl Fn(String) -> String) -> BinSetup {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker.log");
    let url = format!("sqlite://{}/data/dualkey.db", dir.path().display());
    let text = edit(test_config(&url, &marker, 1, 0));
    let config = dir.path().join("dualkey.toml");
    std::fs::write(&config, text).unwrap();
    BinSetup {
        dir,
        config,
        marker,
    }
}

/// One `dualkey shell --as WHO --config CONFIG` session (in `dir` when given, with `env` added)
/// that reads `input` to its end: its stdout, stderr and exit code.
pub fn shell_session(
    config: &std::path::Path,
    dir: Option<&std::path::Path>,
    who: &str,
    input: &[u8],
    env: &[(&str, &str)],
) -> (String, String, Option<i32>) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(BIN);
    cmd.args(["shell", "--as", who, "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
        out.status.code(),
    )
}
