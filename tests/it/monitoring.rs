//! Monitoring windows (SPEC section 7): reminders with a real HTTP health probe (a local axum
//! server whose status flips from 200 to 500), the failure posted between reminders, the
//! `monitor-ok` and `monitor-rollback` buttons, a restart in the middle of a window, two cores on
//! one PostgreSQL store, and the windows a real deploy and `monitor` open. Time is the manual
//! clock: `monitoring::tick` is called directly, as the scheduler would.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use dualkey::clock::Clock;
use dualkey::core::context::Core;
use dualkey::services::monitoring::tick;

use crate::support::{spawn_app_with, Backend, TestApp};
use crate::taskflow::{INIT, PRIORITY};

const MIN: i64 = 60_000;

/// A health endpoint on 127.0.0.1:0 whose status the test sets.
struct Health {
    status: Arc<AtomicU16>,
    url: String,
}

impl Health {
    async fn start() -> Health {
        let status = Arc::new(AtomicU16::new(200));
        let s = status.clone();
        let app = axum::Router::new().route(
            "/health",
            axum::routing::get(move || {
                let s = s.clone();
                async move { StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap() }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Health {
            status,
            url: format!("http://{addr}/health"),
        }
    }

    fn set(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }
}

/// The production keys that point monitoring at `h` and show a log line.
fn monitored(h: &Health) -> String {
    format!(
        "health_url = \"{}\"\napp_logs = [\"echo\", \"GET /health served (log line)\"]\n",
        h.url
    )
}

/// An app (on `backend`) whose production environment is monitored through `h`.
async fn app(backend: Backend, h: &Health) -> TestApp {
    let extra = monitored(h);
    spawn_app_with(backend, 1, 0, |t| {
        t.replacen(
            "[environments.staging]",
            &format!("{extra}[environments.staging]"),
            1,
        )
    })
    .await
}

/// Ticks, then returns what reached the test channel.
async fn tick_posts(app: &TestApp) -> String {
    tick(&app.core).await.unwrap();
    posts(app).await
}

async fn posts(app: &TestApp) -> String {
    app.deliver_shell()
        .await
        .iter()
        .map(|s| s.reply().to_text())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The one open window.
async fn window(core: &Core) -> String {
    let open = core.store.open_windows().await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    open[0].id.clone()
}

fn count(actions: &[String], a: &str) -> usize {
    actions.iter().filter(|x| *x == a).count()
}

/// Outbox posts (any platform used here: the shell test channel) of reminder card `idx`.
async fn card_posts(core: &Core, window: &str, idx: i64) -> usize {
    let key = format!("monitor:{window}:{idx}");
    core.store
        .outbox_all("shell")
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.op == "post" && r.card_key.as_deref() == Some(key.as_str()))
        .count()
}

#[tokio::test]
async fn reminders_show_the_health_status_and_latency_and_the_last_one_closes_the_window() {
    let h = Health::start().await;
    let app = app(Backend::Sqlite, &h).await;
    let r = app.cmd("alice", "monitor").await;
    assert!(
        r.contains("Monitoring window w") && r.contains("+5m, +15m, +30m"),
        "{r}"
    );
    let w = window(&app.core).await;
    assert!(
        tick_posts(&app).await.is_empty(),
        "a healthy probe between reminders posts nothing"
    );

    app.clock.advance(5 * MIN);
    let first = tick_posts(&app).await;
    assert!(
        first.contains(&format!("reminder 1/3, window {w}")),
        "{first}"
    );
    assert!(
        first.contains("Health: HTTP 200 in ") && first.contains(" ms"),
        "{first}"
    );
    assert!(first.contains("Elapsed: 5m"), "{first}");
    assert!(first.contains("GET /health served (log line)"), "{first}");
    assert!(
        first.contains(&format!("[monitor-ok:{w}]"))
            && first.contains(&format!("[monitor-rollback:{w}]")),
        "{first}"
    );

    h.set(500);
    app.clock.advance(10 * MIN);
    // The reminder is due: its own probe shows the failure (no separate alert for it).
    let second = tick_posts(&app).await;
    assert!(second.contains("reminder 2/3"), "{second}");
    assert!(second.contains("Health: FAILING: HTTP 500 in "), "{second}");
    assert!(!second.contains("HTTP 200"), "{second}");

    h.set(200);
    app.clock.advance(15 * MIN);
    let last = tick_posts(&app).await;
    assert!(
        last.contains(&format!("final reminder 3/3, window {w} closed")),
        "{last}"
    );
    assert!(last.contains("HTTP 200"), "{last}");
    // The probe at opening, and one per reminder.
    assert!(last.contains("4 probe(s), 1 failed"), "{last}");
    assert!(
        !last.contains("[monitor-ok:"),
        "a closed window has no buttons: {last}"
    );
    let row = app.core.store.get_window(&w).await.unwrap().unwrap();
    assert_eq!(row.state, "closed");
    assert_eq!(row.close_reason.as_deref(), Some("last reminder"));

    app.clock.advance(60 * MIN);
    assert!(
        tick_posts(&app).await.is_empty(),
        "nothing after the window closed"
    );
    let actions = app.audit_actions().await;
    assert_eq!(count(&actions, "monitor.opened"), 1, "{actions:?}");
    assert_eq!(count(&actions, "monitor.reminder"), 3, "{actions:?}");
    assert_eq!(count(&actions, "monitor.closed"), 1, "{actions:?}");
    assert_eq!(count(&actions, "monitor.probe.failed"), 1, "{actions:?}");
    assert_eq!(count(&actions, "monitor.probe.recovered"), 1, "{actions:?}");
}

#[tokio::test]
async fn a_probe_that_fails_between_reminders_is_posted_at_once_and_once_per_streak() {
    let h = Health::start().await;
    let app = app(Backend::Sqlite, &h).await;
    app.cmd("alice", "monitor").await;
    let w = window(&app.core).await;
    tick_posts(&app).await;
    app.clock.advance(5 * MIN);
    assert!(tick_posts(&app).await.contains("reminder 1/3"));

    h.set(500);
    app.clock.advance(30_000);
    let alert = tick_posts(&app).await;
    assert!(
        alert.contains("Health probe of production FAILED")
            && alert.contains(&w)
            && alert.contains("HTTP 500 in "),
        "the failure is posted at the next probe, not at the next reminder: {alert}"
    );
    assert!(
        alert.contains(&format!("[monitor-ok:{w}]"))
            && alert.contains(&format!("[monitor-rollback:{w}]")),
        "the alert carries the window's buttons: {alert}"
    );
    for _ in 0..3 {
        app.clock.advance(30_000);
        let again = tick_posts(&app).await;
        assert!(again.is_empty(), "one post per failing streak: {again}");
    }
    h.set(200);
    app.clock.advance(30_000);
    let back = tick_posts(&app).await;
    assert!(
        back.contains("recovered") && back.contains("HTTP 200"),
        "{back}"
    );
    // Probes are spaced: a tick within 30 s of the last probe does not probe again.
    h.set(500);
    app.clock.advance(10_000);
    assert!(tick_posts(&app).await.is_empty());
    app.clock.advance(20_000);
    assert!(tick_posts(&app).await.contains("FAILED"));
    let actions = app.audit_actions().await;
    assert_eq!(count(&actions, "monitor.probe.failed"), 2, "{actions:?}");
    assert_eq!(count(&actions, "monitor.probe.recovered"), 1, "{actions:?}");
}

#[tokio::test]
async fn monitor_ok_ends_the_window_and_no_more_reminders_come() {
    let h = Health::start().await;
    let app = app(Backend::Sqlite, &h).await;
    app.cmd("alice", "monitor").await;
    let w = window(&app.core).await;
    app.clock.advance(5 * MIN);
    tick_posts(&app).await;

    let viewer = app.click("carol", &format!("monitor-ok:{w}")).await;
    assert!(viewer.contains("operator role"), "{viewer}");
    let bad = app.click("alice", "monitor-ok:w../../etc").await;
    assert!(bad.contains("not a monitoring window id"), "{bad}");
    let unknown = app.click("alice", "monitor-ok:w0000000000").await;
    assert!(unknown.contains("no monitoring window"), "{unknown}");

    let ok = app.click("alice", &format!("monitor-ok:{w}")).await;
    assert!(ok.contains("ended; no more reminders"), "{ok}");
    assert!(
        ok.contains("Ended by alice") && !ok.contains(&format!("[monitor-ok:{w}]")),
        "the reminder card is edited: {ok}"
    );
    let again = app.click("alice", &format!("monitor-ok:{w}")).await;
    assert!(again.contains("already closed"), "{again}");

    for _ in 0..4 {
        app.clock.advance(10 * MIN);
        let after = tick_posts(&app).await;
        assert!(after.is_empty(), "no reminder after monitor-ok: {after}");
    }
    let row = app.core.store.get_window(&w).await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.closed_by.as_deref()),
        ("closed", Some("alice"))
    );
    let actions = app.audit_actions().await;
    assert_eq!(count(&actions, "monitor.reminder"), 1, "{actions:?}");
    assert_eq!(count(&actions, "monitor.ok"), 1, "{actions:?}");
    assert_eq!(count(&actions, "monitor.ok.refused"), 2, "{actions:?}");
    assert!(actions.iter().any(|a| a == "action.refused"), "{actions:?}");
}

#[tokio::test]
async fn a_real_deploy_opens_a_window_and_monitor_rollback_asks_for_a_request_needing_a_second_person(
) {
    let h = Health::start().await;
    let db = crate::taskflow::setup("monitor", &[INIT, PRIORITY], &monitored(&h)).await;
    let op = db.approved("deploy").await;
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
    let w = window(&db.app.core).await;
    let row = db.app.core.store.get_window(&w).await.unwrap().unwrap();
    assert_eq!(row.kind, "deploy");
    assert_eq!(row.operation_id.as_deref(), Some(op.id.as_str()));
    assert_eq!(row.rollback_target.as_deref(), Some(PRIORITY));
    let opened = posts(&db.app).await;
    assert!(
        opened.contains(&format!("after deploy {}", op.id)) && opened.contains(&w),
        "{opened}"
    );

    db.app.clock.advance(5 * MIN);
    let card = tick_posts(&db.app).await;
    assert!(
        card.contains(&format!("Changed: deploy {}, asked by alice", op.id))
            && card.contains(&format!("Migrations: {INIT}, {PRIORITY}"))
            && card.contains("HTTP 200"),
        "{card}"
    );
    assert!(card.contains(&format!("[monitor-rollback:{w}]")), "{card}");

    let asked = db
        .app
        .click("alice", &format!("monitor-rollback:{w}"))
        .await;
    assert!(
        asked.contains("recorded") && asked.contains("[approve:"),
        "{asked}"
    );
    let req = db
        .app
        .core
        .store
        .get_request(&db.app.last_request().await)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(req.state, "pending");
    assert!(
        req.kind_json.contains("rollback") && req.kind_json.contains(PRIORITY),
        "{}",
        req.kind_json
    );
    let own = db.app.click("alice", &format!("approve:{}", req.id)).await;
    assert!(own.contains("Vote not counted"), "{own}");
    let second = db.app.click("bob", &format!("approve:{}", req.id)).await;
    assert!(second.contains("Approved"), "{second}");
    let actions = db.app.audit_actions().await;
    assert!(
        actions.iter().any(|a| a == "monitor.rollback"),
        "{actions:?}"
    );
    assert!(actions.iter().any(|a| a == "vote.refused"), "{actions:?}");

    // The approved rollback runs and opens its own window, which supersedes the deploy's and
    // offers no rollback of its own.
    db.app.drain_worker().await;
    let rb = db
        .app
        .core
        .store
        .operation_for_request(&req.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rb.state, "succeeded", "{:?}", rb.error);
    assert_eq!(db.applied().await, vec![INIT]);
    let w2 = window(&db.app.core).await;
    assert_ne!(w2, w);
    let row2 = db.app.core.store.get_window(&w2).await.unwrap().unwrap();
    assert_eq!(
        (
            row2.kind.as_str(),
            row2.operation_id.as_deref(),
            row2.rollback_target.as_deref()
        ),
        ("rollback", Some(rb.id.as_str()), None)
    );
    let old = db.app.core.store.get_window(&w).await.unwrap().unwrap();
    assert_eq!(old.close_reason, Some(format!("superseded by {w2}")));
    posts(&db.app).await;
    db.app.clock.advance(5 * MIN);
    let card = tick_posts(&db.app).await;
    assert!(
        card.contains(&format!("window {w2}"))
            && card.contains(&format!("[monitor-ok:{w2}]"))
            && !card.contains("[monitor-rollback:"),
        "{card}"
    );
    let refused = db
        .app
        .click("alice", &format!("monitor-rollback:{w2}"))
        .await;
    assert!(
        refused.contains("no migration of it to roll back"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_window_loses_no_reminder_and_marks_the_late_one() {
    let h = Health::start().await;
    let first = app(Backend::Sqlite, &h).await;
    first.cmd("alice", "monitor").await;
    let w = window(&first.core).await;
    first.clock.advance(5 * MIN);
    assert!(tick_posts(&first).await.contains("reminder 1/3"));
    let opened_at = first
        .core
        .store
        .get_window(&w)
        .await
        .unwrap()
        .unwrap()
        .opened_at;

    // dualkey stops; 15 more minutes pass; a new process opens the same store file.
    let settings = (*first.core.settings).clone();
    let url = settings.store.url.clone();
    first.clock.advance(15 * MIN);
    let store = dualkey::store::open(&url).await.unwrap();
    let second = TestApp {
        core: Arc::new(Core::new(
            settings,
            store,
            first.clock.clone() as Arc<dyn Clock>,
            Arc::new(dualkey::services::facts::RunbookFacts),
        )),
        clock: first.clock.clone(),
        dir: tempfile::tempdir().unwrap(),
        marker: first.marker.clone(),
        db: None,
    };
    let late = tick_posts(&second).await;
    let tz = second.core.settings.schedule.tz();
    let due = dualkey::core::window::hhmm(opened_at + 15 * MIN, tz);
    let now = dualkey::core::window::hhmm(second.clock.now_ms(), tz);
    assert!(late.contains("reminder 2/3"), "{late}");
    assert!(
        late.contains(&format!("late: due {due}, posted {now}")),
        "{late}"
    );
    assert!(!late.contains("reminder 1/3"), "{late}");
    for _ in 0..3 {
        assert!(tick_posts(&second).await.is_empty(), "posted twice");
        assert!(tick_posts(&first).await.is_empty(), "posted twice");
    }
    second.clock.advance(10 * MIN);
    let last = tick_posts(&second).await;
    assert!(
        last.contains("final reminder 3/3") && !last.contains("late:"),
        "{last}"
    );
    for idx in 0..3 {
        assert_eq!(card_posts(&second.core, &w, idx).await, 1, "reminder {idx}");
    }
    let actions = second.audit_actions().await;
    assert_eq!(count(&actions, "monitor.reminder"), 3, "{actions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_cores_on_one_postgres_store_post_each_reminder_once() {
    let h = Health::start().await;
    let a = app(Backend::Postgres, &h).await;
    let store = dualkey::store::open(&a.core.settings.store.url)
        .await
        .unwrap();
    let b = Arc::new(Core::new(
        (*a.core.settings).clone(),
        store,
        a.clock.clone() as Arc<dyn Clock>,
        Arc::new(dualkey::services::facts::RunbookFacts),
    ));
    a.cmd("alice", "monitor").await;
    let w = window(&a.core).await;
    let both = || async {
        for _ in 0..3 {
            let (x, y) = tokio::join!(tick(&a.core), tick(&b));
            x.unwrap();
            y.unwrap();
        }
    };
    both().await;
    a.clock.advance(5 * MIN);
    both().await;
    h.set(500);
    a.clock.advance(30_000);
    both().await;
    a.clock.advance(10 * MIN);
    both().await;
    a.clock.advance(15 * MIN);
    both().await;
    for idx in 0..3 {
        assert_eq!(card_posts(&a.core, &w, idx).await, 1, "reminder {idx}");
    }
    let failures = a
        .core
        .store
        .outbox_all("shell")
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.payload.contains("FAILED"))
        .count();
    assert_eq!(failures, 1, "one failure post per streak");
    let actions = a.audit_actions().await;
    assert_eq!(count(&actions, "monitor.reminder"), 3, "{actions:?}");
    assert_eq!(count(&actions, "monitor.closed"), 1, "{actions:?}");
    assert!(dualkey::core::audit::verify_chain(a.core.store.as_ref())
        .await
        .unwrap()
        .is_ok());
}

#[tokio::test]
async fn monitor_parses_strictly_and_status_shows_the_window() {
    let h = Health::start().await;
    let app = app(Backend::Sqlite, &h).await;
    for bad in [
        "monitor 0",
        "monitor 1441",
        "monitor 30m",
        "monitor production 10 extra",
        "monitor nowhere",
        "monitor -5",
    ] {
        let r = app.cmd("alice", bad).await;
        assert!(
            r.contains("usage: /db monitor [ENV] [MINUTES]"),
            "{bad}: {r}"
        );
    }
    assert!(app.core.store.open_windows().await.unwrap().is_empty());
    let viewer = app.cmd("carol", "monitor").await;
    assert!(viewer.contains("operator role"), "{viewer}");

    let r = app.cmd("alice", "monitor staging 10").await;
    assert!(r.contains("+5m, +10m;"), "{r}");
    let w = window(&app.core).await;
    let reminders = app.core.store.reminders(&w).await.unwrap();
    assert_eq!(reminders.len(), 2);
    let status = app.cmd("carol", "status staging").await;
    assert!(
        status.contains(&format!("monitoring: {w} (opened by alice)"))
            && status.contains("next reminder 1/2"),
        "{status}"
    );
    let prod = app.cmd("carol", "status production").await;
    assert!(prod.contains("monitoring: no window open"), "{prod}");
    // A new window in the same environment supersedes the old one.
    app.cmd("alice", "monitor staging").await;
    let open = app.core.store.open_windows().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_ne!(open[0].id, w);
    let old = app.core.store.get_window(&w).await.unwrap().unwrap();
    assert_eq!(
        old.close_reason,
        Some(format!("superseded by {}", open[0].id))
    );
}

#[tokio::test]
async fn an_unreachable_health_url_is_shown_as_the_error_and_posted_at_once() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let h = Health {
        status: Arc::new(AtomicU16::new(200)),
        url: format!("http://127.0.0.1:{port}/health"),
    };
    let app = app(Backend::Sqlite, &h).await;
    app.cmd("alice", "monitor production 5").await;
    let alert = tick_posts(&app).await;
    assert!(
        alert.contains("Health probe of production FAILED") && alert.contains("connection failed"),
        "{alert}"
    );
    app.clock.advance(5 * MIN);
    let last = tick_posts(&app).await;
    assert!(
        last.contains("final reminder 1/1") && last.contains("Health: FAILING: error after"),
        "{last}"
    );
    assert!(last.contains("2 probe(s), 2 failed"), "{last}");
}

/// An app on sqlite whose two environments' `app_logs` print 5 MB and a last line, then never
/// end (like `kubectl logs -f`). Argv from the test's own config.
async fn app_with_endless_logs() -> TestApp {
    let line = "app_status = [\"echo\", \"backend running\"]";
    let logs =
        "app_logs = [\"sh\", \"-c\", \"yes line | head -c 5000000; echo tail-marker; sleep 30\"]";
    spawn_app_with(Backend::Sqlite, 1, 0, |t| {
        t.replace(line, &format!("{line}\n{logs}"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_app_logs_show_their_last_lines_and_slow_windows_do_not_wait_for_each_other() {
    let app = app_with_endless_logs().await;
    app.cmd("alice", "monitor production 5").await;
    app.cmd("alice", "monitor staging 5").await;
    assert_eq!(app.core.store.open_windows().await.unwrap().len(), 2);
    posts(&app).await;
    app.clock.advance(5 * MIN);
    let start = std::time::Instant::now();
    let cards = tick_posts(&app).await;
    let took = start.elapsed();
    // Each window's logs run for the 10 s timeout; one after the other that was 20 s.
    assert!(
        took < std::time::Duration::from_secs(16),
        "the windows ran one after the other: {took:?}"
    );
    for env in ["production", "staging"] {
        assert!(
            cards.contains(&format!("Monitoring {env}: final reminder 1/1")),
            "{cards}"
        );
    }
    assert_eq!(cards.matches("tail-marker").count(), 2, "{cards}");
    // stderr is read at the same time (no longer appended after 5 MB of stdout); how it
    // interleaves with stdout still in the pipe depends on the reads, so it is checked in
    // `app_logs_are_read_into_a_bounded_ring_and_kept_at_the_timeout`.
    assert_eq!(cards.matches("(stopped after 10 s)").count(), 2, "{cards}");
    assert!(!cards.contains("app_logs failed"), "{cards}");
    assert!(app.core.store.open_windows().await.unwrap().is_empty());
}

#[tokio::test]
async fn app_logs_are_read_into_a_bounded_ring_and_kept_at_the_timeout() {
    let argv: Vec<String> = [
        "sh",
        "-c",
        "yes line | head -c 5000000; echo tail-marker; sleep 30",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let start = std::time::Instant::now();
    let c = dualkey::dbops::app::capture(&argv, std::time::Duration::from_millis(1500), 64 * 1024)
        .await
        .unwrap();
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    assert!(c.timed_out);
    assert_eq!(c.code, None);
    assert_eq!(c.lines.last().map(String::as_str), Some("tail-marker"));
    let bytes: usize = c.lines.iter().map(|l| l.len() + 1).sum();
    assert!(bytes <= 64 * 1024, "{bytes} bytes kept");
    assert!(
        c.lines.len() > 1000,
        "the last 64 KiB of lines: {}",
        c.lines.len()
    );
    // A command that ends keeps its exit code and both streams.
    let argv: Vec<String> = ["sh", "-c", "echo out; echo err >&2; exit 3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let c = dualkey::dbops::app::capture(&argv, std::time::Duration::from_secs(5), 1024)
        .await
        .unwrap();
    assert!(!c.timed_out);
    assert_eq!(c.code, Some(3));
    let mut lines = c.lines.clone();
    lines.sort();
    assert_eq!(lines, vec!["err".to_string(), "out".to_string()]);
}

#[tokio::test]
async fn unsorted_reminders_that_slip_past_the_check_still_close_on_the_latest() {
    let h = Health::start().await;
    let first = app(Backend::Sqlite, &h).await;
    // The config check refuses ["30m", "5m"] (tests/it/config_rules.rs); settings built another
    // way still must not close the window at the earliest reminder.
    let mut settings = (*first.core.settings).clone();
    settings.monitoring.reminders = vec![
        dualkey::config::HumanDuration(std::time::Duration::from_secs(30 * 60)),
        dualkey::config::HumanDuration(std::time::Duration::from_secs(5 * 60)),
    ];
    let store = dualkey::store::open(&settings.store.url).await.unwrap();
    let app = TestApp {
        core: Arc::new(Core::new(
            settings,
            store,
            first.clock.clone() as Arc<dyn Clock>,
            Arc::new(dualkey::services::facts::RunbookFacts),
        )),
        clock: first.clock.clone(),
        dir: tempfile::tempdir().unwrap(),
        marker: first.marker.clone(),
        db: None,
    };
    let r = app.cmd("alice", "monitor").await;
    assert!(r.contains("+5m, +30m"), "{r}");
    let w = window(&app.core).await;
    app.clock.advance(5 * MIN);
    let first_card = tick_posts(&app).await;
    assert!(first_card.contains("reminder 1/2"), "{first_card}");
    assert!(!first_card.contains("closed"), "{first_card}");
    assert_eq!(
        app.core.store.get_window(&w).await.unwrap().unwrap().state,
        "open"
    );
    app.clock.advance(25 * MIN);
    let last = tick_posts(&app).await;
    assert!(last.contains("final reminder 2/2"), "{last}");
    assert_eq!(
        app.core.store.get_window(&w).await.unwrap().unwrap().state,
        "closed"
    );
}

#[tokio::test]
async fn a_late_reminder_states_only_its_times_and_cards_use_the_schedule_time_zone() {
    let h = Health::start().await;
    let extra = monitored(&h);
    let app = spawn_app_with(Backend::Sqlite, 1, 0, |t| {
        t.replacen(
            "[environments.staging]",
            &format!("{extra}[environments.staging]"),
            1,
        ) + "[schedule]\ntimezone = \"Asia/Tokyo\"\n"
    })
    .await;
    let tokyo = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .with_timezone(&chrono_tz::Asia::Tokyo)
            .format("%H:%M JST")
            .to_string()
    };
    app.cmd("alice", "monitor").await;
    let w = window(&app.core).await;
    let opened = app
        .core
        .store
        .get_window(&w)
        .await
        .unwrap()
        .unwrap()
        .opened_at;
    // dualkey is up the whole time; the tick simply comes 2 minutes after the first reminder.
    app.clock.advance(7 * MIN);
    let card = tick_posts(&app).await;
    assert!(card.contains("reminder 1/3"), "{card}");
    assert!(
        card.contains(&format!(
            "late: due {}, posted {}",
            tokyo(opened + 5 * MIN),
            tokyo(opened + 7 * MIN)
        )),
        "{card}"
    );
    assert!(!card.contains("not running"), "{card}");
    assert!(
        card.contains(&format!(
            "Next reminder: {} (+15m)",
            tokyo(opened + 15 * MIN)
        )),
        "{card}"
    );
    let status = app.cmd("carol", "status production").await;
    assert!(status.contains(&tokyo(opened + 15 * MIN)), "{status}");
    app.click("alice", &format!("monitor-ok:{w}")).await;
    let note = format!("Ended by alice at {}", tokyo(opened + 7 * MIN));
    let edited = app
        .core
        .store
        .outbox_all("shell")
        .await
        .unwrap()
        .into_iter()
        .any(|r| r.payload.contains(&note));
    assert!(edited, "the cards are edited with {note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_windows_opened_at_once_on_postgres_leave_one_open() {
    use dualkey::core::window::{open_window_tx, NewWindow};
    let h = Health::start().await;
    let a = app(Backend::Postgres, &h).await;
    let store = dualkey::store::open(&a.core.settings.store.url)
        .await
        .unwrap();
    let b = Arc::new(Core::new(
        (*a.core.settings).clone(),
        store,
        a.clock.clone() as Arc<dyn Clock>,
        Arc::new(dualkey::services::facts::RunbookFacts),
    ));
    let new = |who: &str| NewWindow {
        env: "production".into(),
        opened_by: who.into(),
        account: None,
        operation_id: None,
        kind: "manual".into(),
        migrations: vec![],
        rollback_target: None,
        channel: None,
        minutes: Some(30),
    };
    for older in [false, true] {
        if older {
            a.cmd("alice", "monitor").await;
        }
        // A's transaction opens a window and stays open while B's opens one too.
        let mut ta = a.core.store.begin().await.unwrap();
        let wa = open_window_tx(&a.core, &mut ta, new("alice"))
            .await
            .unwrap();
        let b2 = b.clone();
        let nb = new("bob");
        let jb = tokio::spawn(async move {
            let mut tb = b2.store.begin().await.unwrap();
            let w = open_window_tx(&b2, &mut tb, nb).await.unwrap();
            tb.commit().await.unwrap();
            w
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        ta.commit().await.unwrap();
        let wb = jb.await.unwrap();
        let open = a.core.store.open_windows().await.unwrap();
        assert_eq!(open.len(), 1, "older window {older}: {open:?}");
        assert_eq!(open[0].id, wb.id);
        let closed = a.core.store.get_window(&wa.id).await.unwrap().unwrap();
        assert_eq!(closed.state, "closed");
        assert_eq!(
            closed.close_reason,
            Some(format!("superseded by {}", wb.id))
        );
        // Ends it for the next round.
        a.clock.advance(60 * MIN);
        tick(&a.core).await.unwrap();
        assert!(a.core.store.open_windows().await.unwrap().is_empty());
    }
}
