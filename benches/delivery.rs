//! Benchmark of chat delivery under a queue of audit lines (issue 19, item 1), with the real
//! `dualkey serve` binary (release build, HTTP mode, SQLite store) against a stand-in Slack on
//! 127.0.0.1 that either
//! - **limits** `chat.postMessage` to one per second per channel, answering more with HTTP 429,
//!   `Retry-After: 1` and `{"ok":false,"error":"ratelimited"}` (Slack's documented limit), or
//! - **delays** every call by 150 ms (real API latency) with no rate limit.
//!
//! Each scenario: queue N audit lines (N signed `/db help` commands, each one audit event, all
//! recorded before going on), then request `app stop` and approve it, five times one after the
//! other, and time (medians)
//! 1. the request to its approval card in `approvals_channel` (target <= 2 s),
//! 2. the approving click to the card's outcome edit ("succeeded"), against the same with an
//!    empty queue (target <= 1.2x),
//! 3. from the first queued command to the last of the N lines in `audit_channel` (target
//!    <= 60 s; one message per line would take N seconds).
//!
//! Run: `cargo bench --bench delivery` (`-- --lines N`, default 1000).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use common::{free_port, now_secs, slack_config, spawn_bot, wait_http, Killed};

const SECRET: &str = "bench-signing-secret";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// One `chat.postMessage` per second per channel.
    Limited,
    /// Every call answered after 150 ms.
    Slow,
}

/// One call the stand-in answered.
struct Call {
    at: Instant,
    method: String,
    channel: String,
    text: String,
    /// The message's `ts`: the one answered for a post, the one edited for an update.
    ts: String,
    ok: bool,
}

#[derive(Clone)]
struct Standin {
    mode: Mode,
    calls: Arc<Mutex<Vec<Call>>>,
    last_post: Arc<Mutex<HashMap<String, Instant>>>,
    hooks: Arc<std::sync::atomic::AtomicUsize>,
    ts: Arc<std::sync::atomic::AtomicUsize>,
}

/// A message's full text: its section blocks, else its `text`.
fn text_of(body: &Value) -> String {
    let sections: Vec<&str> = body["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "section")
        .filter_map(|b| b["text"]["text"].as_str())
        .collect();
    let raw = if sections.is_empty() {
        body["text"].as_str().unwrap_or_default().to_string()
    } else {
        sections.join("\n")
    };
    let mut all = raw;
    // Buttons carry the request id (`approve:<id>`).
    for b in body["blocks"].as_array().into_iter().flatten() {
        for e in b["elements"].as_array().into_iter().flatten() {
            if let Some(a) = e["action_id"].as_str() {
                all.push_str(&format!("\n[{a}]"));
            }
        }
    }
    all
}

async fn api(State(s): State<Standin>, Path(method): Path<String>, body: Bytes) -> Response {
    if s.mode == Mode::Slow {
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let json: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
            .map(|f| Value::Object(f.into_iter().map(|(k, v)| (k, Value::String(v))).collect()))
            .unwrap_or(Value::Null)
    });
    let channel = json["channel"].as_str().unwrap_or_default().to_string();
    let now = Instant::now();
    let limited = s.mode == Mode::Limited && method == "chat.postMessage" && {
        let mut last = s.last_post.lock().unwrap();
        match last.get(&channel) {
            Some(t) if now.duration_since(*t) < Duration::from_secs(1) => true,
            _ => {
                last.insert(channel.clone(), now);
                false
            }
        }
    };
    let n = s.ts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    let ts = json["ts"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("1700000000.{n:06}"));
    s.calls.lock().unwrap().push(Call {
        at: now,
        method: method.clone(),
        channel: channel.clone(),
        text: text_of(&json),
        ts: ts.clone(),
        ok: !limited,
    });
    if limited {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            Json(json!({"ok": false, "error": "ratelimited"})),
        )
            .into_response();
    }
    Json(json!({"ok": true, "channel": channel, "ts": ts, "message_ts": ts, "message": {"ts": ts}}))
        .into_response()
}

async fn hook(State(s): State<Standin>) -> &'static str {
    if s.mode == Mode::Slow {
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    s.hooks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    "ok"
}

async fn start_standin(mode: Mode) -> (Standin, String) {
    let s = Standin {
        mode,
        calls: Default::default(),
        last_post: Default::default(),
        hooks: Default::default(),
        ts: Default::default(),
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let app = Router::new()
        .route("/api/{method}", post(api))
        .route("/hooks/{*rest}", post(hook))
        .with_state(s.clone());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (s, base)
}

impl Standin {
    /// The first successful call of `method` in `channel` after `since` whose text contains
    /// `needle`.
    fn find(
        &self,
        method: &str,
        channel: &str,
        needle: &str,
        since: Instant,
    ) -> Option<(Instant, String, String)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .find(|c| {
                c.ok && c.at >= since
                    && c.method == method
                    && c.channel == channel
                    && c.text.contains(needle)
            })
            .map(|c| (c.at, c.text.clone(), c.ts.clone()))
    }

    /// Audit event lines (`#SEQ ...`) posted in `channel`, and how many messages carried them.
    fn audit_lines(&self, channel: &str) -> (usize, usize) {
        let calls = self.calls.lock().unwrap();
        let posts: Vec<&Call> = calls
            .iter()
            .filter(|c| c.ok && c.method == "chat.postMessage" && c.channel == channel)
            .collect();
        let lines = posts
            .iter()
            .map(|c| c.text.lines().filter(|l| l.starts_with('#')).count())
            .sum();
        (lines, posts.len())
    }

    fn rate_limited(&self) -> usize {
        self.calls.lock().unwrap().iter().filter(|c| !c.ok).count()
    }
}

fn sign(ts: &str, body: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(m.finalize().into_bytes()))
}

fn enc(s: &str) -> String {
    serde_urlencoded::to_string([("x", s)]).unwrap()[2..].to_string()
}

async fn signed(client: &reqwest::Client, url: &str, body: String) {
    let ts = now_secs().to_string();
    let sig = sign(&ts, &body);
    let r = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", &ts)
        .header("x-slack-signature", &sig)
        .body(body)
        .send()
        .await
        .expect("request");
    assert!(r.status().is_success(), "status {}", r.status());
    let _ = r.bytes().await;
}

fn command(user: &str, text: &str, response_url: &str) -> String {
    format!(
        "token=t&team_id=T0BENCH&team_domain=bench&channel_id=C0OPS&channel_name=ops&user_id={user}&user_name={user}&command=%2Fdb&text={}&api_app_id=A0BENCH&is_enterprise_install=false&response_url={}&trigger_id=bench.{}",
        enc(text),
        enc(response_url),
        uuid::Uuid::new_v4().simple()
    )
}

fn click(action: &str, ts: &str, response_url: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "team": {"id": "T0BENCH", "domain": "bench"},
        "user": {"id": "U0BOB", "username": "bob", "name": "bob", "team_id": "T0BENCH"},
        "api_app_id": "A0BENCH",
        "token": "t",
        "container": {"type": "message", "message_ts": ts, "channel_id": "C0APPROVALS", "is_ephemeral": false},
        "trigger_id": format!("{}.trigger", uuid::Uuid::new_v4().simple()),
        "team_id": "T0BENCH",
        "is_enterprise_install": false,
        "channel": {"id": "C0APPROVALS", "name": "approvals"},
        "message": {"type": "message", "ts": ts, "text": "Approval requested", "blocks": []},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [{
            "type": "button", "action_id": action, "block_id": "dualkey-actions",
            "text": {"type": "plain_text", "text": "Approve"}, "value": "",
            "action_ts": format!("{}.{:06}", now_secs(), rand::random::<u32>() % 1_000_000),
        }],
    });
    format!("payload={}", enc(&payload.to_string()))
}

/// Polls `f` every 5 ms until it is `Some`, for at most `limit`.
async fn until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if t0.elapsed() > limit {
            panic!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Figures {
    /// Audit lines not yet in chat when the first request was made, and after the last outcome.
    waiting: usize,
    waiting_at_end: usize,
    request_to_card: Duration,
    click_to_outcome: Duration,
    drain: Option<Duration>,
    messages: usize,
    rate_limited: usize,
}

async fn scenario(mode: Mode, lines: usize) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let (s, base) = start_standin(mode).await;
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let config = slack_config(
        dir.path(),
        "http",
        &base,
        listen,
        "app_stop = [\"true\"]\napp_start = [\"true\"]",
    );
    let _bot = Killed(spawn_bot(
        &config,
        &[("DK_BENCH_BOT", "xoxb-bench"), ("DK_BENCH_SECRET", SECRET)],
    ));
    wait_http(&client, &format!("http://{listen}/healthz")).await;
    let commands = format!("http://{listen}/slack/commands");
    let interactions = format!("http://{listen}/slack/interactions");
    let hook = format!("{base}/hooks/bench");
    // The chain head posted at start is out of the way.
    until("the start-up head line", Duration::from_secs(10), || {
        s.find(
            "chat.postMessage",
            "C0AUDIT",
            "audit head",
            Instant::now() - Duration::from_secs(60),
        )
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Queue the audit lines: every command recorded (each answered through its response_url).
    let t_queue = Instant::now();
    queue_lines(&s, &client, &commands, &hook, lines).await;

    // Requests, their cards, the approving clicks and the outcome edits, one after the other.
    let waiting = lines.saturating_sub(s.audit_lines("C0AUDIT").0);
    let (mut to_card, mut to_outcome) = (Vec::new(), Vec::new());
    for _ in 0..CYCLES {
        // Slack's one post per second per channel applies to cards too: requests come further
        // apart than that, as people make them.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (c, o) = request_and_approve(&s, &client, &commands, &interactions, &hook).await;
        to_card.push(c);
        to_outcome.push(o);
    }
    to_card.sort();
    to_outcome.sort();
    let (request_to_card, click_to_outcome) = (to_card[CYCLES / 2], to_outcome[CYCLES / 2]);

    let waited_lines_before_end = s.audit_lines("C0AUDIT").0;
    let drain = if lines > 0 {
        until(
            "every audit line in the audit channel",
            Duration::from_secs(600),
            || (s.audit_lines("C0AUDIT").0 >= lines).then_some(()),
        )
        .await;
        Some(t_queue.elapsed())
    } else {
        None
    };
    let (_, messages) = s.audit_lines("C0AUDIT");
    let waiting_at_end = lines.saturating_sub(waited_lines_before_end);
    Figures {
        waiting,
        waiting_at_end,
        request_to_card,
        click_to_outcome,
        drain,
        messages,
        rate_limited: s.rate_limited(),
    }
}

/// Sends `lines` signed `/db help` commands (32 at a time) and waits until each was answered
/// through its response_url (its audit event is then queued).
async fn queue_lines(
    s: &Standin,
    client: &reqwest::Client,
    commands: &str,
    hook: &str,
    lines: usize,
) {
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for _ in 0..lines {
        let (client, url, body, sem) = (
            client.clone(),
            commands.to_string(),
            command("U0ALICE", "help", hook),
            sem.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            signed(&client, &url, body).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    until(
        "every queued command recorded",
        Duration::from_secs(120),
        || (s.hooks.load(std::sync::atomic::Ordering::SeqCst) >= lines).then_some(()),
    )
    .await;
}

/// Request-approve cycles per scenario (the medians are reported).
const CYCLES: usize = 5;

/// Requests `app stop` and approves it; returns the time from the request to its card in the
/// approvals channel, and from the click to the card's outcome edit.
async fn request_and_approve(
    s: &Standin,
    client: &reqwest::Client,
    commands: &str,
    interactions: &str,
    hook: &str,
) -> (Duration, Duration) {
    let t0 = Instant::now();
    signed(client, commands, command("U0ALICE", "app stop", hook)).await;
    let (at, card, ts) = until("the approval card", Duration::from_secs(60), || {
        s.find("chat.postMessage", "C0APPROVALS", "[approve:", t0)
    })
    .await;
    let action = card
        .lines()
        .find_map(|l| l.strip_prefix('[').and_then(|l| l.strip_suffix(']')))
        .filter(|a| a.starts_with("approve:"))
        .map(str::to_string)
        .expect("an approve button");
    let t1 = Instant::now();
    signed(client, interactions, click(&action, &ts, hook)).await;
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        until("the outcome edit", Duration::from_secs(30), || {
            s.find("chat.update", "C0APPROVALS", "succeeded", t1)
                .filter(|(_, _, edited)| *edited == ts)
        }),
    )
    .await;
    let Ok((done, _, _)) = outcome else {
        for c in s.calls.lock().unwrap().iter().filter(|c| c.at >= t0) {
            eprintln!("{} {} {} {}: {}", c.method, c.channel, c.ts, c.ok, c.text);
        }
        panic!("no outcome edit of card {ts} within 20 s");
    };
    (at - t0, done - t1)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let lines: usize = args
        .iter()
        .position(|a| a == "--lines")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let empty = scenario(Mode::Limited, 0).await;
    let busy = scenario(Mode::Limited, lines).await;
    let slow = scenario(Mode::Slow, lines).await;
    println!(
        "chat delivery with {lines} audit lines queued (stand-in Slack, release dualkey serve):"
    );
    println!("  1 chat.postMessage/s per channel, 429 + Retry-After: 1 beyond:");
    println!(
        "    request -> card          {:8.0} ms (target <= 2000 ms: {:.2}x of target); empty queue {:.0} ms",
        ms(busy.request_to_card),
        ms(busy.request_to_card) / 2000.0,
        ms(empty.request_to_card)
    );
    println!(
        "    click -> outcome edit    {:8.0} ms; empty queue {:.0} ms; ratio {:.2}x (target <= 1.2x)",
        ms(busy.click_to_outcome),
        ms(empty.click_to_outcome),
        ms(busy.click_to_outcome) / ms(empty.click_to_outcome)
    );
    println!(
        "    ({} of the {lines} lines were still queued at the first request, {} after the last outcome edit)",
        busy.waiting, busy.waiting_at_end
    );
    let d = busy.drain.unwrap();
    println!(
        "    drain {lines} lines         {:8.1} s in {} messages, {} answers were 429 (target <= 60 s: {:.2}x of target; one message per line: {lines} s, {:.3}x of that)",
        d.as_secs_f64(),
        busy.messages,
        busy.rate_limited,
        d.as_secs_f64() / 60.0,
        d.as_secs_f64() / lines as f64
    );
    println!("  every call answered after 150 ms, no rate limit:");
    println!(
        "    request -> card          {:8.0} ms (target <= 2000 ms: {:.2}x of target)",
        ms(slow.request_to_card),
        ms(slow.request_to_card) / 2000.0
    );
    println!(
        "    click -> outcome edit    {:8.0} ms; drain {:.1} s in {} messages",
        ms(slow.click_to_outcome),
        slow.drain.unwrap().as_secs_f64(),
        slow.messages
    );
}
