//! Restarts of the real `dualkey serve` binary on a PostgreSQL store (issue 19, item 3): a
//! graceful stop releases every lease the process held, so the next process delivers a card at
//! once; a killed process's leases still expire and are taken over.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::{Connection as _, PgConnection, Row as _};

use crate::slack_harness::{db_command, slack_section, FORM, SECRET};
use crate::slack_standin::{form_encode, post_signed, SlackStandin};
use crate::support::{test_config, TestDb, BIN};

/// A `dualkey serve` child, killed and reaped when dropped; its log collects in `log`.
struct Serve {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Starts `dualkey serve --config CONFIG` on a free port and returns once it listens.
    fn start(config: &std::path::Path) -> Serve {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .env("DUALKEY_SERVER_LISTEN", "127.0.0.1:0")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(String::new()));
        let addr = loop {
            let mut line = String::new();
            let n = stderr.read_line(&mut line).unwrap();
            log.lock().unwrap().push_str(&line);
            assert!(
                n > 0,
                "serve exited before listening: {}",
                log.lock().unwrap()
            );
            if let Some(pos) = line.find("listen=") {
                break line[pos + 7..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string();
            }
        };
        // Keep reading the log so the server never blocks on a full pipe.
        let sink = log.clone();
        std::thread::spawn(move || loop {
            let mut line = String::new();
            match stderr.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => sink.lock().unwrap().push_str(&line),
            }
        });
        Serve {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends `signal` and waits (10 s at most) for the process to end; its exit code.
    async fn stop(&mut self, signal: i32) -> Option<i32> {
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "serve did not stop: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A PostgreSQL store, a stand-in Slack in HTTP mode and the config file for both.
async fn setup(tag: &str) -> (TestDb, SlackStandin, tempfile::TempDir, std::path::PathBuf) {
    let db = TestDb::create("restart").await;
    let standin = SlackStandin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = test_config(&db.url, &dir.path().join("marker.log"), 1, 0);
    text.push_str(&slack_section(&standin, "http", tag));
    let config = dir.path().join("dualkey.toml");
    std::fs::write(&config, text).unwrap();
    (db, standin, dir, config)
}

/// The lease rows of the store: `(name, holder, until)`.
async fn leases(db: &TestDb) -> Vec<(String, String, i64)> {
    let mut c = PgConnection::connect(&db.url).await.unwrap();
    let rows = sqlx::query("SELECT name, holder, until FROM leases ORDER BY name")
        .fetch_all(&mut c)
        .await
        .unwrap();
    rows.iter()
        .map(|r| (r.get("name"), r.get("holder"), r.get("until")))
        .collect()
}

/// Waits until the running process holds the outbox lease and the per-second scheduler job's.
async fn wait_for_leases(db: &TestDb, serve: &Serve) -> Vec<(String, String, i64)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = leases(db).await;
        let names: Vec<&str> = held.iter().map(|(n, _, _)| n.as_str()).collect();
        if names.contains(&"outbox") && names.contains(&"expire-requests") {
            return held;
        }
        assert!(
            Instant::now() < deadline,
            "the leases were never taken: {held:?}\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `/db app stop` signed to `serve` and returns how long until its card reached the
/// approvals channel of `standin` (`None` after `wait`).
async fn card_latency(
    serve: &Serve,
    standin: &SlackStandin,
    trigger: &str,
    wait: Duration,
) -> Option<Duration> {
    let cards_before = standin.messages_in("C0APPROVALS").len();
    let started = Instant::now();
    let body = form_encode(&db_command(standin, "U0ALICE", "app stop", trigger));
    let r = post_signed(
        &format!("{}/slack/commands", serve.base),
        SECRET,
        &body,
        FORM,
    )
    .await;
    assert_eq!(r.status(), 200, "{}", serve.log());
    while started.elapsed() < wait {
        if standin.messages_in("C0APPROVALS").len() > cards_before {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sigterm_the_next_process_posts_a_card_within_three_seconds_of_its_start() {
    let (db, standin, _dir, config) = setup("RESTART_TERM").await;
    let mut first = Serve::start(&config);
    let held = wait_for_leases(&db, &first).await;
    let holders: Vec<&str> = held.iter().map(|(_, h, _)| h.as_str()).collect();
    assert!(
        holders
            .iter()
            .any(|h| h.starts_with("scheduler@") || h.starts_with("outbox@")),
        "{held:?}"
    );
    assert_eq!(first.stop(libc::SIGTERM).await, Some(0), "{}", first.log());
    let left = leases(&db).await;
    assert!(
        left.is_empty(),
        "a graceful stop releases every lease it held; left: {left:?}\n{}",
        first.log()
    );
    assert!(first.log().contains("leases released"), "{}", first.log());

    let second = Serve::start(&config);
    let took = card_latency(&second, &standin, "1.2.restart", Duration::from_secs(10)).await;
    let took = took.unwrap_or_else(|| panic!("no card within 10 s: {}", second.log()));
    eprintln!("card after a SIGTERM restart: {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "the card took {took:?} after the restart\n{}",
        second.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sigkill_the_next_process_takes_the_leases_over_once_they_expire() {
    let (db, standin, _dir, config) = setup("RESTART_KILL").await;
    let mut first = Serve::start(&config);
    wait_for_leases(&db, &first).await;
    assert_eq!(
        first.stop(libc::SIGKILL).await,
        None,
        "killed by the signal"
    );
    let left = leases(&db).await;
    let outbox = left
        .iter()
        .find(|(n, _, _)| n == "outbox")
        .unwrap_or_else(|| panic!("a killed process releases nothing: {left:?}"))
        .clone();

    let second = Serve::start(&config);
    let took = card_latency(&second, &standin, "3.4.restart", Duration::from_secs(30)).await;
    let took = took.unwrap_or_else(|| panic!("no card within 30 s: {}", second.log()));
    eprintln!("card after a SIGKILL restart (leases left to expire): {took:?}");
    // The card waited for the dead process's outbox lease (15 s from its last renewal), and
    // no longer than that plus a few delivery passes.
    let now_ms = chrono::Utc::now().timestamp_millis();
    assert!(
        outbox.2 <= now_ms,
        "the dead lease had expired when the card came"
    );
    assert!(
        took < Duration::from_secs(20),
        "the card came {took:?} after the request\n{}",
        second.log()
    );
    let now = leases(&db).await;
    let taken = now.iter().find(|(n, _, _)| n == "outbox").unwrap();
    assert_ne!(
        taken.1, outbox.1,
        "the new process holds the outbox lease now"
    );
}

async fn releasing_leases_frees_exactly_the_owners_leases_for_others(b: crate::support::Backend) {
    let app = crate::support::spawn_app(b, 1, 0).await;
    let s = &app.core.store;
    let me = "42_42-0000abcd";
    for (name, holder) in [
        ("outbox", format!("outbox@{me}")),
        ("expire-requests", format!("scheduler@{me}")),
        ("drill:d1", format!("drill-check@{me}")),
        ("run:backup:1", me.to_string()),
        ("monitoring", "scheduler@142_42-0000abcd".to_string()),
        ("prune", "scheduler@42x42-0000abcd".to_string()),
    ] {
        assert!(s.try_lease(name, &holder, 1_000, 60_000).await.unwrap());
    }
    let mut tx = s.begin().await.unwrap();
    assert_eq!(tx.release_leases(me).await.unwrap(), 4);
    tx.commit().await.unwrap();
    for name in ["outbox", "expire-requests", "drill:d1", "run:backup:1"] {
        assert!(
            s.try_lease(name, "successor", 2_000, 60_000).await.unwrap(),
            "{name} is free at once, long before it would expire"
        );
    }
    for name in ["monitoring", "prune"] {
        assert!(
            !s.try_lease(name, "successor", 2_000, 60_000).await.unwrap(),
            "{name} belongs to another process (a look-alike name, or one that `_` as a LIKE wildcard would match) and stays held"
        );
    }
    // Released in a transaction that rolls back: nothing was released.
    let mut tx = s.begin().await.unwrap();
    assert_eq!(tx.release_leases("successor").await.unwrap(), 4);
    drop(tx);
    assert!(!s.try_lease("outbox", "third", 3_000, 60_000).await.unwrap());
}
crate::both_backends!(releasing_leases_frees_exactly_the_owners_leases_for_others);
