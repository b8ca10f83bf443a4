//! What both adapter benchmarks share: the stand-in Slack (Web API methods, `response_url`
//! hooks and a Socket Mode websocket), starting the release `dualkey serve`, and the figures
//! (percentiles, RSS).

#![allow(dead_code)] // each bench uses its own subset

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

/// Unix seconds now (request timestamps).
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

// ---- stand-in Slack -------------------------------------------------------------------------

/// A stand-in Slack: counts Socket Mode connections (each answered with `hello`).
#[derive(Clone, Default)]
pub struct SlackStandin {
    base: Arc<std::sync::OnceLock<String>>,
    pub sockets: Arc<AtomicUsize>,
    pub connected: Arc<tokio::sync::Notify>,
    ts: Arc<AtomicUsize>,
}

async fn slack_api(State(s): State<SlackStandin>, Path(method): Path<String>) -> impl IntoResponse {
    let n = s.ts.fetch_add(1, Ordering::SeqCst) + 1;
    let ts = format!("1700000000.{n:06}");
    match method.as_str() {
        "apps.connections.open" => Json(json!({
            "ok": true,
            "url": format!("{}/link/?ticket={n}", s.base.get().unwrap().replace("http://", "ws://"))
        })),
        "chat.postEphemeral" => Json(json!({"ok": true, "message_ts": ts})),
        _ => Json(json!({"ok": true, "channel": "C0BENCH", "ts": ts, "message": {"ts": ts}})),
    }
}

async fn slack_link(State(s): State<SlackStandin>, ws: WebSocketUpgrade) -> impl IntoResponse {
    ws.on_upgrade(move |mut socket: WebSocket| async move {
        let hello = r#"{"type":"hello","num_connections":1,"debug_info":{"host":"bench"},"connection_info":{"app_id":"A0BENCH"}}"#;
        let _ = socket.send(Message::Text(hello.into())).await;
        s.sockets.fetch_add(1, Ordering::SeqCst);
        s.connected.notify_waiters();
        while let Some(Ok(_)) = socket.recv().await {}
    })
}

/// Starts the stand-in Slack; returns it and its base URL (`http://127.0.0.1:PORT`).
pub async fn start_slack() -> (SlackStandin, String) {
    let s = SlackStandin::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    s.base.set(base.clone()).unwrap();
    let app = Router::new()
        .route("/api/{method}", post(slack_api).get(slack_api))
        .route("/hooks/{*rest}", post(|| async { "ok" }))
        .route("/link/", get(slack_link))
        .with_state(s.clone());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (s, base)
}

// ---- the bot --------------------------------------------------------------------------------

/// A free port on 127.0.0.1.
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts the release `dualkey serve --config CONFIG` with `env` set, quietly.
pub fn spawn_bot(config: &std::path::Path, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dualkey"))
        .args(["serve", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dualkey serve")
}

/// A child process killed and reaped when dropped.
pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `url` answers 2xx (30 s at most).
pub async fn wait_http(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} did not answer in 30 s");
}

// ---- figures --------------------------------------------------------------------------------

/// The `p` quantile of latencies in µs, in ms.
pub fn pct(v: &mut [u128], p: f64) -> f64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

/// `VmRSS` of a process, in kB.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Writes a `dualkey.toml` in `dir`: the HTTP server on `listen`, a SQLite store in `dir`,
/// then `chat` (the chat platforms' sections and the operators), then the `production`
/// environment with the TaskFlow fixture's migrations and `extra` appended to it. Returns its
/// path.
pub fn bot_config(
    dir: &std::path::Path,
    listen: SocketAddr,
    chat: &str,
    extra: &str,
) -> std::path::PathBuf {
    let migrations = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/taskflow/prisma/migrations"
    );
    let text = format!(
        r#"
default_environment = "production"
[server]
listen = "{listen}"
[store]
url = "sqlite://{dir}/data/dualkey.db"
{chat}
[environments.production]
database_url_env = "DK_BENCH_UNUSED_URL"
migrations_dir = "{migrations}"
{extra}
"#,
        dir = dir.display()
    );
    let p = dir.join("dualkey.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Writes a `dualkey.toml` in `dir` for a bench against the stand-in Slack at `api`: `mode`
/// (`http` or `socket`), the HTTP server on `listen`, a SQLite store in `dir`, alice (operator)
/// and bob (approver), the TaskFlow fixture's migrations; `extra` is appended to the
/// `production` environment (e.g. `app_stop = ["true"]`). Returns its path.
pub fn slack_config(
    dir: &std::path::Path,
    mode: &str,
    api: &str,
    listen: SocketAddr,
    extra: &str,
) -> std::path::PathBuf {
    let chat = format!(
        r#"[slack]
enabled = true
mode = "{mode}"
api_base_url = "{api}/api"
bot_token_env = "DK_BENCH_BOT"
app_token_env = "DK_BENCH_APP"
signing_secret_env = "DK_BENCH_SECRET"
approvals_channel = "C0APPROVALS"
audit_channel = "C0AUDIT"
[[operators]]
id = "alice"
slack = "U0ALICE"
roles = ["operator", "approver"]
[[operators]]
id = "bob"
slack = "U0BOB"
roles = ["approver"]"#
    );
    bot_config(dir, listen, &chat, extra)
}
