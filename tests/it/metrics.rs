//! `/metrics` after a scripted Slack session (HTTP mode against the stand-in Slack, a real
//! PostgreSQL target for the backup and the drill), scraped over HTTP and read with a real
//! Prometheus text parser (`prometheus-parse`): the families, labels and values the session
//! must have produced.

use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value};

use crate::backup_common::seed;
use crate::slack_harness::{click, eventually, nth_request, response_to, start, Running, WAIT};
use crate::slack_standin::{Failure, SlackStandin};
use crate::support::{own_production, TestDb};

/// The sample `name` whose labels are exactly `labels`.
fn sample<'a>(s: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    s.samples.iter().find(|x| {
        x.metric == name
            && x.labels.len() == labels.len()
            && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
    })
}

/// A counter's or gauge's value; fails naming the series when it is absent or of another type.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(s, name, labels).map(|x| &x.value) {
        Some(Value::Counter(v) | Value::Gauge(v)) => *v,
        other => panic!("{name}{labels:?}: {other:?}"),
    }
}

/// A histogram's observation count (its `+Inf` bucket); fails when it is absent.
fn observations(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(s, name, labels).map(|x| &x.value) {
        Some(Value::Histogram(buckets)) => buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map(|b| b.count)
            .unwrap_or_else(|| panic!("{name}{labels:?} has no +Inf bucket: {buckets:?}")),
        other => panic!("{name}{labels:?}: {other:?}"),
    }
}

/// Waits (up to `limit`) until `done` holds for what the store says.
async fn until<F, Fut>(what: &str, limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `app stop` asked by Alice, her own vote refused, Bob's approval; waits for the run.
async fn approved_app_stop(standin: &SlackStandin, run: &Running) {
    run.command("U0ALICE", "app stop", "m.stop").await;
    let req = nth_request(run, 1).await;
    eventually("the card in C0APPROVALS", WAIT, || {
        !standin.messages_in("C0APPROVALS").is_empty()
    })
    .await;
    let (ts, _) = standin.messages_in("C0APPROVALS").remove(0);
    let approve = format!("approve:{}", req.id);
    let vote = |user, at, hook| click(standin, &approve, user, &ts, at, hook);
    run.click_payload(&vote("U0ALICE", "1700000100.000001", "m.self"))
        .await;
    response_to(standin, "m.self").await;
    run.click_payload(&vote("U0BOB", "1700000101.000001", "m.bob"))
        .await;
    run.wait_marker("stop", "app stop ran").await;
    until("app stop succeeded", WAIT, || succeeded(run, 1)).await;
}

/// Whether `n` operations have succeeded.
async fn succeeded(run: &Running, n: usize) -> bool {
    let ops = run.core.store.recent_operations(10).await.unwrap();
    ops.iter().filter(|o| o.state == "succeeded").count() == n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_scripted_session_parse_as_prometheus_text_with_the_expected_values() {
    let target = TestDb::create("metrics").await;
    seed(&target.url, 300).await;
    let var = format!("DK_TEST_URL_{}", uuid::Uuid::new_v4().simple());
    std::env::set_var(&var, &target.url);
    let own = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(own.path().join("migrations")).unwrap();
    let dir = own.path().display().to_string();
    let standin = SlackStandin::start().await;
    let run = start(&standin, "http", "METRICS", |t| {
        own_production(&t, &var, &dir, "")
    })
    .await;

    run.command("U0ALICE", "status", "m.status").await;
    response_to(&standin, "m.status").await;
    run.command("U0ALICE", "frobnicate now", "m.bad").await;
    response_to(&standin, "m.bad").await;
    approved_app_stop(&standin, &run).await;
    run.command("U0ALICE", "backup production", "m.backup")
        .await;
    let r = &run;
    until("the backup succeeded", Duration::from_secs(60), || {
        succeeded(r, 2)
    })
    .await;
    let drilled =
        dualkey::services::scheduler::drill_env(&run.core, "production", "metrics-test").await;
    let drill_ok = matches!(drilled, Ok(Some(_)));
    assert!(
        drill_ok,
        "the drill of a fresh backup succeeds: {drilled:?}"
    );
    until("every Slack message sent", WAIT, || async move {
        r.outbox().await.iter().all(|r| r.delivered_at.is_some())
    })
    .await;
    // The next post (the audit line of `help`) is answered 429: its lane holds it back.
    standin.fail_next(
        "chat.postMessage",
        1,
        Failure::RateLimited {
            retry_after_secs: 120,
        },
    );
    run.command("U0ALICE", "help", "m.help").await;
    eventually("the 429", WAIT, || {
        standin
            .calls_to("chat.postMessage")
            .iter()
            .any(|c| c.failure.is_some())
    })
    .await;
    until("the 429 recorded", WAIT, || async move {
        r.outbox()
            .await
            .iter()
            .any(|r| r.delivered_at.is_none() && r.attempts > 0)
    })
    .await;

    let res = reqwest::get(format!("{}/metrics", run.base)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "text/plain; version=0.0.4"
    );
    let text = res.text().await.unwrap();
    let s = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let windows = run.core.store.open_windows().await.unwrap();
    run.stop().await;

    check_counters(&s, &text);
    check_histograms(&s);
    check_gauges(&s, drill_ok, windows.len());
    check_alert_rules_name_exposed_metrics(&s);
}

/// Every `dualkey_*` series deploy/prometheus/alerts.yml queries is one this scrape has (a
/// histogram's `_count`/`_sum`/`_bucket` by its family), so a renamed metric fails here
/// instead of silently never alerting.
fn check_alert_rules_name_exposed_metrics(s: &Scrape) {
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/alerts.yml"
    ))
    .unwrap();
    let mut named = std::collections::BTreeSet::new();
    for (i, _) in rules.match_indices("dualkey_") {
        let name: String = rules[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        named.insert(name);
    }
    assert!(
        named.len() >= 5,
        "alerts.yml names too few metrics: {named:?}"
    );
    for name in &named {
        let family = ["_count", "_sum", "_bucket"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(
            s.samples
                .iter()
                .any(|x| x.metric == *name || x.metric == family),
            "alerts.yml queries {name}, which /metrics does not expose"
        );
    }
}

fn check_counters(s: &Scrape, text: &str) {
    let commands = "dualkey_commands_total";
    for (command, outcome) in [
        ("status", "ok"),
        ("unknown", "rejected"),
        ("app", "ok"),
        ("backup", "ok"),
        ("help", "ok"),
    ] {
        let labels = [("command", command), ("outcome", outcome)];
        assert_eq!(value(s, commands, &labels), 1.0, "{labels:?} in\n{text}");
    }
    let votes = "dualkey_votes_total";
    assert_eq!(value(s, votes, &[("outcome", "approve")]), 1.0);
    assert_eq!(value(s, votes, &[("outcome", "refused")]), 1.0);
    assert!(sample(s, votes, &[("outcome", "deny")]).is_none());
    let deliveries = "dualkey_deliveries_total";
    assert!(value(s, deliveries, &[("platform", "slack"), ("outcome", "ok")]) >= 3.0);
    let limited = [("platform", "slack"), ("outcome", "rate_limited")];
    assert_eq!(value(s, deliveries, &limited), 1.0);
    let r429 = "dualkey_rate_limited_total";
    assert_eq!(value(s, r429, &[("platform", "slack")]), 1.0);
    assert_eq!(value(s, r429, &[("platform", "discord")]), 0.0);
    // The families kept from before, still counters with their labels.
    let sig = "dualkey_signature_failures_total";
    assert_eq!(value(s, sig, &[("platform", "slack")]), 0.0);
    let slow = "dualkey_http_slow_clients_total";
    for phase in ["head", "body", "answer", "evicted"] {
        assert!(value(s, slow, &[("phase", phase)]) >= 0.0);
    }
    assert!(value(s, "dualkey_audit_events_total", &[]) >= 10.0);
    for family in [commands, votes, deliveries, r429, sig, slow] {
        assert!(s.docs.contains_key(family), "HELP for {family}");
    }
}

fn check_histograms(s: &Scrape) {
    // Five slash commands and two clicks came in over Slack's HTTP mode and were acked.
    let ack = [("platform", "slack"), ("transport", "http")];
    assert_eq!(observations(s, "dualkey_ack_latency_seconds", &ack), 7.0);
    let op = "dualkey_operation_duration_seconds";
    for kind in ["app-stop", "backup"] {
        let labels = [("kind", kind), ("outcome", "succeeded")];
        assert_eq!(observations(s, op, &labels), 1.0, "{labels:?}");
    }
    let step = "dualkey_step_duration_seconds";
    for action in ["app-stop", "backup"] {
        let labels = [("action", action), ("outcome", "succeeded")];
        assert_eq!(observations(s, step, &labels), 1.0, "{labels:?}");
    }
    let env = [("env", "production")];
    let ok = [("env", "production"), ("outcome", "ok")];
    assert_eq!(observations(s, "dualkey_backup_duration_seconds", &ok), 1.0);
    assert_eq!(observations(s, "dualkey_backup_size_bytes", &env), 1.0);
    let size = sample(s, "dualkey_backup_size_bytes_sum", &env)
        .map(|x| match x.value {
            Value::Untyped(v) | Value::Counter(v) | Value::Gauge(v) => v,
            _ => 0.0,
        })
        .expect("the size histogram's sum");
    assert!(size > 1000.0, "a dump of 300 rows is over 1 kB: {size}");
    let approval = [("kind", "app-stop")];
    assert_eq!(
        observations(s, "dualkey_request_approval_seconds", &approval),
        1.0
    );
}

fn check_gauges(s: &Scrape, drill_ok: bool, open_windows: usize) {
    let age = value(
        s,
        "dualkey_backup_newest_verified_age_seconds",
        &[("env", "production")],
    );
    assert!((0.0..300.0).contains(&age), "backup age {age}");
    assert!(
        sample(
            s,
            "dualkey_backup_newest_verified_age_seconds",
            &[("env", "staging")]
        )
        .is_none(),
        "staging has no backup: no age"
    );
    let drill = value(s, "dualkey_drill_last_success", &[("env", "production")]);
    assert_eq!(drill, if drill_ok { 1.0 } else { 0.0 });
    let when = value(
        s,
        "dualkey_drill_last_timestamp_seconds",
        &[("env", "production")],
    );
    assert!(when > 1.7e9, "drill time {when}");
    let windows: f64 = ["production", "staging"]
        .iter()
        .map(|e| value(s, "dualkey_monitoring_windows_open", &[("env", e)]))
        .sum();
    assert_eq!(windows, open_windows as f64);
    // The lane the 429 holds back: its depth and the age of its oldest message.
    let lane = s
        .samples
        .iter()
        .find(|x| x.metric == "dualkey_outbox_lane_depth")
        .expect("a lane with a message waiting");
    assert_eq!(lane.labels.get("platform"), Some("slack"));
    assert!(matches!(lane.value, Value::Gauge(v) if v >= 1.0));
    let channel = lane.labels.get("channel").unwrap();
    let oldest = value(
        s,
        "dualkey_outbox_lane_oldest_age_seconds",
        &[("platform", "slack"), ("channel", channel)],
    );
    assert!((0.0..120.0).contains(&oldest), "oldest {oldest}");
    assert_eq!(value(s, "dualkey_requests", &[("state", "approved")]), 1.0);
    assert_eq!(
        value(s, "dualkey_operations", &[("state", "succeeded")]),
        2.0
    );
    assert_eq!(value(s, "dualkey_operations_in_flight", &[]), 0.0);
    assert!(s
        .docs
        .contains_key("dualkey_backup_newest_verified_age_seconds"));
}
