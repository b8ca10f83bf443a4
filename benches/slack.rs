//! Benchmark of the Slack adapter as users meet it, with the real `dualkey serve` binary (release
//! build) against a stand-in Slack on 127.0.0.1 (Web API methods and a Socket Mode websocket).
//!
//! 1. **Ack latency, HTTP mode**: 200 concurrent signed slash commands (`/db help`) POSTed to
//!    `/slack/commands` over warm keep-alive connections; the time from sending each request to
//!    its complete response, p50 and p99, next to a bare axum handler in its own process-like runtime that only checks the
//!    signature (same HMAC, same 5-minute window) and answers, measured in the same run.
//!    Target: dualkey p99 <= 1.5x the bare handler's p99.
//! 2. **Start to ready, Socket Mode**: from spawning `dualkey serve` to the stand-in's websocket
//!    seeing the bot connect (it answers `hello`). Target: <= 300 ms.
//! 3. **Idle RSS, Socket Mode**: `VmRSS` of the connected bot after 3 s idle. Target: <= 40 MB.
//!
//! Run: `cargo bench --bench slack` (add `-- --rounds N` for N rounds of 200, default 5).
//! Everything runs on 127.0.0.1; a fresh SQLite store in a temporary folder.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use common::{
    free_port, now_secs, pct, rss_kb, slack_config, spawn_bot, start_slack, wait_http, Killed,
};

const SECRET: &str = "bench-signing-secret";
const CONCURRENCY: usize = 200;

fn sign(ts: &str, body: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(m.finalize().into_bytes()))
}

// ---- the bot --------------------------------------------------------------------------------

// ---- the bare baseline ----------------------------------------------------------------------

fn verified(headers: &HeaderMap, body: &str) -> bool {
    let (Some(ts), Some(sig)) = (
        headers
            .get("x-slack-request-timestamp")
            .and_then(|v| v.to_str().ok()),
        headers
            .get("x-slack-signature")
            .and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    let Ok(t) = ts.parse::<i64>() else {
        return false;
    };
    if (now_secs() - t).abs() > 300 {
        return false;
    }
    let mut m = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(format!("v0:{ts}:{body}").as_bytes());
    let Some(hex_sig) = sig.strip_prefix("v0=") else {
        return false;
    };
    let Ok(raw) = hex::decode(hex_sig) else {
        return false;
    };
    m.verify_slice(&raw).is_ok()
}

async fn bare(headers: HeaderMap, body: String) -> impl IntoResponse {
    if !verified(&headers, &body) {
        return (StatusCode::UNAUTHORIZED, Json(serde_json::json!({}))).into_response();
    }
    Json(serde_json::json!({"response_type": "ephemeral", "text": "On it"})).into_response()
}

/// The bare handler on its own 2-worker runtime in a thread (the bot has the machine's cores).
fn start_bare() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, Router::new().route("/slack/commands", post(bare)))
                .await
                .unwrap();
        })
    });
    rx.recv().unwrap()
}

// ---- load -----------------------------------------------------------------------------------

fn body(i: usize) -> String {
    format!(
        "token=t&team_id=T0BENCH&team_domain=bench&channel_id=C0BENCH&channel_name=ops&user_id=U0ALICE&user_name=alice&command=%2Fdb&text=help&api_app_id=A0BENCH&is_enterprise_install=false&response_url=RESP&trigger_id=bench.{i}.{}",
        uuid::Uuid::new_v4().simple()
    )
}

/// Sends `CONCURRENCY` signed commands at once; returns each one's latency in µs.
async fn round(client: &reqwest::Client, url: &str, response_url: &str) -> Vec<u128> {
    let start = Arc::new(tokio::sync::Barrier::new(CONCURRENCY));
    let mut tasks = Vec::new();
    for i in 0..CONCURRENCY {
        let (client, url, start) = (client.clone(), url.to_string(), start.clone());
        let b = body(i).replace("RESP", &urlencode(response_url));
        tasks.push(tokio::spawn(async move {
            let ts = now_secs().to_string();
            let sig = sign(&ts, &b);
            start.wait().await;
            let t0 = Instant::now();
            let r = client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-slack-request-timestamp", &ts)
                .header("x-slack-signature", &sig)
                .body(b)
                .send()
                .await
                .expect("request");
            assert!(r.status().is_success(), "status {}", r.status());
            let _ = r.bytes().await.unwrap();
            t0.elapsed().as_micros()
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("x", s)]).unwrap()[2..].to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4 * CONCURRENCY)
        .build()
        .unwrap();
    let (standin, base) = start_slack().await;

    // 1. Ack latency, HTTP mode, interleaved with the bare handler.
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let config = slack_config(dir.path(), "http", &base, listen, "");
    let _bot = Killed(spawn_bot(
        &config,
        &[
            ("DK_BENCH_BOT", "xoxb-bench"),
            ("DK_BENCH_APP", "xapp-bench"),
            ("DK_BENCH_SECRET", SECRET),
        ],
    ));
    wait_http(&client, &format!("http://{listen}/healthz")).await;
    let bare_addr = start_bare();
    let bot_url = format!("http://{listen}/slack/commands");
    let bare_url = format!("http://{bare_addr}/slack/commands");
    let resp = format!("{base}/hooks/bench");
    // Warm-up: opens the 200 keep-alive connections to each server (200 simultaneous new
    // connections hit the kernel's SYN handling and its 1 s retransmit, for both servers alike,
    // which would measure the kernel instead of the handlers), SQLite pages, code paths.
    for _ in 0..2 {
        round(&client, &bot_url, &resp).await;
        round(&client, &bare_url, &resp).await;
    }
    let (mut bot_all, mut bare_all) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        if r % 2 == 0 {
            bot_all.extend(round(&client, &bot_url, &resp).await);
            bare_all.extend(round(&client, &bare_url, &resp).await);
        } else {
            bare_all.extend(round(&client, &bare_url, &resp).await);
            bot_all.extend(round(&client, &bot_url, &resp).await);
        }
        // Let the bot's spawned work (help replies through response_url) drain between rounds.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (b50, b99) = (pct(&mut bot_all, 0.50), pct(&mut bot_all, 0.99));
    let (r50, r99) = (pct(&mut bare_all, 0.50), pct(&mut bare_all, 0.99));
    println!("slash-command ack latency, HTTP mode, {rounds} rounds of {CONCURRENCY} concurrent signed requests:");
    println!("  dualkey        p50 {b50:8.2} ms   p99 {b99:8.2} ms");
    println!("  bare handler   p50 {r50:8.2} ms   p99 {r99:8.2} ms");
    println!(
        "  ratio p99 dualkey / bare = {:.2}x (target <= 1.5x); p50 {:.2}x",
        b99 / r99,
        b50 / r50
    );
    drop(_bot);

    // 2 and 3. Socket Mode: start to ready, idle RSS.
    let mut ready_ms = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let config = slack_config(dir.path(), "socket", &base, free_port(), "");
        let before = standin.sockets.load(Ordering::SeqCst);
        let connected = standin.connected.notified();
        tokio::pin!(connected);
        connected.as_mut().enable();
        let t0 = Instant::now();
        let bot = Killed(spawn_bot(
            &config,
            &[
                ("DK_BENCH_BOT", "xoxb-bench"),
                ("DK_BENCH_APP", "xapp-bench"),
                ("DK_BENCH_SECRET", SECRET),
            ],
        ));
        tokio::time::timeout(Duration::from_secs(30), async {
            while standin.sockets.load(Ordering::SeqCst) == before {
                connected.as_mut().await;
                connected.set(standin.connected.notified());
                connected.as_mut().enable();
            }
        })
        .await
        .expect("the bot connected to Socket Mode within 30 s");
        ready_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_secs(3)).await;
        rss.push(rss_kb(bot.0.id()) as f64 / 1024.0);
    }
    ready_ms.sort_by(f64::total_cmp);
    rss.sort_by(f64::total_cmp);
    println!("Socket Mode to the stand-in, 3 starts (median):");
    println!(
        "  start to ready {:.0} ms (target <= 300 ms: {:.2}x of target)",
        ready_ms[1],
        ready_ms[1] / 300.0
    );
    println!(
        "  idle RSS {:.1} MB (target <= 40 MB: {:.2}x of target)",
        rss[1],
        rss[1] / 40.0
    );
}
