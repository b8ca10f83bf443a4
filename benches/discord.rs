//! Benchmark of the Discord adapter as users meet it, with the real `dualkey serve` binary
//! (release build) against a stand-in Discord on 127.0.0.1 (REST under `/api/v10` and a gateway
//! websocket), and a stand-in Slack for the both-platforms half.
//!
//! 1. **Ack latency, HTTP interactions mode**: 200 concurrent signed `/db help` interactions
//!    (Ed25519, RFC 8032 test key) POSTed to `/discord/interactions` over warm keep-alive
//!    connections; the time from sending each request to its complete response, p50 and p99,
//!    next to a bare axum handler (its own runtime) that only checks the signature (serenity's
//!    verifier, the same 5-minute window) and answers a deferral, measured in the same run.
//!    Target: dualkey p99 <= 1.5x the bare handler's p99.
//! 2. **Start to ready, Slack and Discord together**: from spawning `dualkey serve` with Slack in
//!    Socket Mode and Discord on the gateway until both stand-ins see the bot connected (Slack's
//!    websocket answered `hello`, the Discord gateway received IDENTIFY and answered READY).
//!    Target: <= 300 ms.
//! 3. **Idle RSS, both connected**: `VmRSS` of that bot after 3 s idle. Target: <= 40 MB.
//!
//! Run: `cargo bench --bench discord` (add `-- --rounds N` for N rounds of 200, default 5).
//! Everything runs on 127.0.0.1; a fresh SQLite store in a temporary folder.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use serenity::interactions_endpoint::Verifier;

use common::{
    bot_config, free_port, now_secs, pct, rss_kb, spawn_bot, start_slack, wait_http, Killed,
};

const CONCURRENCY: usize = 200;
/// The token variables the bench config names.
const BOT_ENV: &[(&str, &str)] = &[
    ("DK_BENCH_DISCORD_BOT", "bench-discord-token"),
    ("DK_BENCH_SLACK_BOT", "xoxb-bench"),
    ("DK_BENCH_SLACK_APP", "xapp-bench"),
    ("DK_BENCH_SLACK_SECRET", "bench-signing-secret"),
];
/// RFC 8032 section 7.1 TEST 1.
const SECRET_KEY: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const PUBLIC_KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const APP_ID: u64 = 1_100_000_000_000_000_001;
const GUILD_ID: u64 = 1_100_000_000_000_000_100;
const CHANNEL_ID: u64 = 1_100_000_000_000_000_300;
const ALICE: u64 = 300_000_000_000_000_001;

fn signing_key() -> SigningKey {
    let bytes: [u8; 32] = hex::decode(SECRET_KEY).unwrap().try_into().unwrap();
    SigningKey::from_bytes(&bytes)
}

fn sign(key: &SigningKey, ts: &str, body: &str) -> String {
    let mut msg = ts.as_bytes().to_vec();
    msg.extend_from_slice(body.as_bytes());
    hex::encode(key.sign(&msg).to_bytes())
}

// ---- stand-in Discord -----------------------------------------------------------------------

#[derive(Clone, Default)]
struct Discord {
    base: Arc<std::sync::OnceLock<String>>,
    identifies: Arc<AtomicUsize>,
    identified: Arc<tokio::sync::Notify>,
    ids: Arc<AtomicU64>,
    calls: Arc<AtomicUsize>,
}

fn message_json(id: u64, channel: &str, body: &Value) -> Value {
    json!({
        "id": id.to_string(), "channel_id": channel,
        "author": {"id": APP_ID.to_string(), "username": "dualkey", "discriminator": "0",
                   "global_name": null, "avatar": null, "bot": true},
        "content": body.get("content").cloned().unwrap_or(json!("")),
        "timestamp": chrono::Utc::now().to_rfc3339(), "edited_timestamp": null,
        "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
        "attachments": [], "embeds": body.get("embeds").cloned().unwrap_or(json!([])),
        "components": body.get("components").cloned().unwrap_or(json!([])),
        "pinned": false, "type": 0, "flags": 0,
    })
}

/// Every REST route the bot uses, answered as Discord does (no recording: this is a benchmark).
async fn rest(
    State(d): State<Discord>,
    method: Method,
    Path(rest): Path<String>,
    body: Bytes,
) -> Response {
    d.calls.fetch_add(1, Ordering::Relaxed);
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let ws = d.base.get().unwrap().replace("http://", "ws://") + "/gateway";
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["gateway"]) => Json(json!({"url": ws})).into_response(),
        ("GET", ["gateway", "bot"]) => Json(json!({"url": ws, "shards": 1, "session_start_limit":
            {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}))
        .into_response(),
        ("POST", ["interactions", ..]) => StatusCode::NO_CONTENT.into_response(),
        ("GET", ["users", "@me"]) => Json(json!({"id": APP_ID.to_string(), "username": "dualkey",
            "discriminator": "0", "global_name": null, "avatar": null, "bot": true}))
        .into_response(),
        (_, ["applications", ..]) => Json(json!([])).into_response(),
        ("POST" | "PATCH", ["channels", channel, ..]) => {
            let id = 1_300_000_000_000_000_000 + d.ids.fetch_add(1, Ordering::Relaxed);
            Json(message_json(id, channel, &body)).into_response()
        }
        ("POST" | "PATCH", ["webhooks", ..]) => {
            let id = 1_300_000_000_000_000_000 + d.ids.fetch_add(1, Ordering::Relaxed);
            Json(message_json(id, &CHANNEL_ID.to_string(), &body)).into_response()
        }
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "404: Not Found", "code": 0})),
        )
            .into_response(),
    }
}

async fn gateway(State(d): State<Discord>, ws: WebSocketUpgrade) -> impl IntoResponse {
    ws.on_upgrade(move |mut socket: WebSocket| async move {
        let hello = json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": 41250}});
        if socket
            .send(Message::Text(hello.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
        let mut seq = 0u64;
        while let Some(Ok(msg)) = socket.recv().await {
            let Message::Text(text) = msg else { continue };
            let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            let reply = match frame["op"].as_u64() {
                Some(1) => json!({"op": 11, "s": null, "t": null, "d": null}),
                Some(2) => {
                    seq += 1;
                    let ws = d.base.get().unwrap().replace("http://", "ws://") + "/gateway";
                    json!({"op": 0, "s": seq, "t": "READY", "d": {
                        "v": 10,
                        "user": {"id": APP_ID.to_string(), "username": "dualkey",
                                 "discriminator": "0", "global_name": null, "avatar": null,
                                 "bot": true},
                        "guilds": [], "session_id": "bench-session",
                        "resume_gateway_url": ws, "shard": [0, 1],
                        "application": {"id": APP_ID.to_string(), "flags": 0},
                    }})
                }
                _ => continue,
            };
            if socket
                .send(Message::Text(reply.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
            if frame["op"] == 2 {
                d.identifies.fetch_add(1, Ordering::SeqCst);
                d.identified.notify_waiters();
            }
        }
    })
}

async fn start_discord() -> (Discord, String) {
    let d = Discord::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    d.base.set(base.clone()).unwrap();
    let app = Router::new()
        .route("/api/v10/{*rest}", any(rest))
        .route("/gateway", get(gateway))
        .with_state(d.clone());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (d, base)
}

// ---- the bot --------------------------------------------------------------------------------

/// A config with Discord in `discord_mode` and, when `slack_api` is given, Slack in Socket Mode.
fn write_config(
    dir: &std::path::Path,
    discord_mode: &str,
    discord_api: &str,
    slack_api: Option<&str>,
    listen: SocketAddr,
) -> std::path::PathBuf {
    let slack = match slack_api {
        Some(api) => format!(
            r#"
[slack]
enabled = true
mode = "socket"
api_base_url = "{api}/api"
bot_token_env = "DK_BENCH_SLACK_BOT"
app_token_env = "DK_BENCH_SLACK_APP"
signing_secret_env = "DK_BENCH_SLACK_SECRET"
approvals_channel = "C0APPROVALS"
audit_channel = "C0AUDIT"
"#
        ),
        None => String::new(),
    };
    let chat = format!(
        r#"{slack}
[discord]
enabled = true
mode = "{discord_mode}"
api_base_url = "{discord_api}"
bot_token_env = "DK_BENCH_DISCORD_BOT"
application_id = "{APP_ID}"
public_key = "{PUBLIC_KEY}"
guild_id = "{GUILD_ID}"
approvals_channel = "{CHANNEL_ID}"
audit_channel = "{CHANNEL_ID}"
[[operators]]
id = "alice"
slack = "U0ALICE"
discord = "{ALICE}"
roles = ["operator", "approver"]
[[operators]]
id = "bob"
slack = "U0BOB"
discord = "300000000000000002"
roles = ["approver"]"#
    );
    bot_config(dir, listen, &chat, "")
}

// ---- the bare baseline ----------------------------------------------------------------------

fn verified(verifier: &Verifier, headers: &HeaderMap, body: &[u8]) -> bool {
    let (Some(ts), Some(sig)) = (
        headers
            .get("x-signature-timestamp")
            .and_then(|v| v.to_str().ok()),
        headers
            .get("x-signature-ed25519")
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
    verifier.verify(sig, ts, body).is_ok()
}

async fn bare(State(v): State<Arc<Verifier>>, headers: HeaderMap, body: Bytes) -> Response {
    if !verified(&v, &headers, &body) {
        return (StatusCode::UNAUTHORIZED, "invalid request signature").into_response();
    }
    Json(json!({"type": 5, "data": {"flags": 64}})).into_response()
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
            let verifier = Arc::new(Verifier::new(PUBLIC_KEY));
            let app = Router::new()
                .route("/discord/interactions", post(bare))
                .with_state(verifier);
            axum::serve(l, app).await.unwrap();
        })
    });
    rx.recv().unwrap()
}

// ---- load -----------------------------------------------------------------------------------

static NEXT_ID: AtomicU64 = AtomicU64::new(1_400_000_000_000_000_000);

/// `/db help` from alice in the guild, as Discord POSTs it (every field serenity requires).
fn interaction_body() -> String {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    json!({
        "id": id.to_string(),
        "application_id": APP_ID.to_string(),
        "type": 2,
        "data": {"id": "1100000000000000200", "name": "db", "type": 1, "guild_id": GUILD_ID.to_string(),
                 "options": [{"type": 1, "name": "help", "options": []}]},
        "guild_id": GUILD_ID.to_string(),
        "channel_id": CHANNEL_ID.to_string(),
        "channel": {"id": CHANNEL_ID.to_string(), "type": 0, "name": "ops", "guild_id": GUILD_ID.to_string()},
        "member": {
            "user": {"id": ALICE.to_string(), "username": "alice", "discriminator": "0",
                     "global_name": "Alice", "avatar": null, "public_flags": 0},
            "nick": null, "avatar": null, "roles": [], "joined_at": "2024-01-01T00:00:00.000000+00:00",
            "premium_since": null, "deaf": false, "mute": false, "flags": 0, "pending": false,
            "permissions": "2248473465835073", "communication_disabled_until": null,
        },
        "token": format!("bench-token-{id}"),
        "version": 1,
        "app_permissions": "2248473465835073",
        "locale": "en-US",
        "guild_locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"0": GUILD_ID.to_string()},
        "context": 0,
        "attachment_size_limit": 10_485_760,
    })
    .to_string()
}

/// Sends `CONCURRENCY` signed interactions at once; returns each one's latency in µs.
async fn round(client: &reqwest::Client, url: &str, key: &SigningKey) -> Vec<u128> {
    let start = Arc::new(tokio::sync::Barrier::new(CONCURRENCY));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url, start) = (client.clone(), url.to_string(), start.clone());
        let body = interaction_body();
        let ts = now_secs().to_string();
        let sig = sign(key, &ts, &body);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let t0 = Instant::now();
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-signature-timestamp", &ts)
                .header("x-signature-ed25519", &sig)
                .body(body)
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
    let key = signing_key();
    assert_eq!(hex::encode(key.verifying_key().to_bytes()), PUBLIC_KEY);
    let (discord, discord_base) = start_discord().await;
    let (slack, slack_base) = start_slack().await;

    // 1. Ack latency, HTTP interactions mode, interleaved with the bare handler.
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let config = write_config(dir.path(), "http", &discord_base, None, listen);
    let bot = Killed(spawn_bot(&config, BOT_ENV));
    wait_http(&client, &format!("http://{listen}/healthz")).await;
    let bare_addr = start_bare();
    let bot_url = format!("http://{listen}/discord/interactions");
    let bare_url = format!("http://{bare_addr}/discord/interactions");
    // Warm-up: opens the 200 keep-alive connections to each server (200 simultaneous new
    // connections measure the kernel's SYN handling, not the handlers), SQLite pages, code paths.
    for _ in 0..2 {
        round(&client, &bot_url, &key).await;
        round(&client, &bare_url, &key).await;
    }
    let (mut bot_all, mut bare_all) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        if r % 2 == 0 {
            bot_all.extend(round(&client, &bot_url, &key).await);
            bare_all.extend(round(&client, &bare_url, &key).await);
        } else {
            bare_all.extend(round(&client, &bare_url, &key).await);
            bot_all.extend(round(&client, &bot_url, &key).await);
        }
        // Let the bot's spawned work (help replies edited into the deferred responses) drain.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (b50, b99) = (pct(&mut bot_all, 0.50), pct(&mut bot_all, 0.99));
    let (r50, r99) = (pct(&mut bare_all, 0.50), pct(&mut bare_all, 0.99));
    println!(
        "interaction ack latency, HTTP mode, {rounds} rounds of {CONCURRENCY} concurrent signed requests:"
    );
    println!("  dualkey        p50 {b50:8.2} ms   p99 {b99:8.2} ms");
    println!("  bare handler   p50 {r50:8.2} ms   p99 {r99:8.2} ms");
    println!(
        "  ratio p99 dualkey / bare = {:.2}x (target <= 1.5x); p50 {:.2}x",
        b99 / r99,
        b50 / r50
    );
    println!(
        "  (the stand-in Discord saw {} REST calls: the bot's follow-up work)",
        discord.calls.load(Ordering::Relaxed)
    );
    drop(bot);

    // 2 and 3. Slack (Socket Mode) and Discord (gateway) together: start to ready, idle RSS.
    let mut ready_ms = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(
            dir.path(),
            "gateway",
            &discord_base,
            Some(&slack_base),
            free_port(),
        );
        let slack_before = slack.sockets.load(Ordering::SeqCst);
        let discord_before = discord.identifies.load(Ordering::SeqCst);
        let t0 = Instant::now();
        let bot = Killed(spawn_bot(&config, BOT_ENV));
        let slack_ready = async {
            loop {
                let n = slack.connected.notified();
                tokio::pin!(n);
                n.as_mut().enable();
                if slack.sockets.load(Ordering::SeqCst) > slack_before {
                    return t0.elapsed();
                }
                n.await;
            }
        };
        let discord_ready = async {
            loop {
                let n = discord.identified.notified();
                tokio::pin!(n);
                n.as_mut().enable();
                if discord.identifies.load(Ordering::SeqCst) > discord_before {
                    return t0.elapsed();
                }
                n.await;
            }
        };
        let (s, d) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(slack_ready, discord_ready)
        })
        .await
        .expect("the bot connected to both stand-ins within 30 s");
        ready_ms.push((
            s.max(d).as_secs_f64() * 1000.0,
            s.as_secs_f64() * 1000.0,
            d.as_secs_f64() * 1000.0,
        ));
        tokio::time::sleep(Duration::from_secs(3)).await;
        rss.push(rss_kb(bot.0.id()) as f64 / 1024.0);
    }
    ready_ms.sort_by(|a, b| a.0.total_cmp(&b.0));
    rss.sort_by(f64::total_cmp);
    let (both, s, d) = ready_ms[1];
    println!("Slack (Socket Mode) and Discord (gateway) to the stand-ins, 3 starts (median):");
    println!(
        "  start to ready {both:.0} ms (Slack {s:.0} ms, Discord {d:.0} ms; target <= 300 ms: {:.2}x of target)",
        both / 300.0
    );
    println!(
        "  idle RSS {:.1} MB (target <= 40 MB: {:.2}x of target)",
        rss[1],
        rss[1] / 40.0
    );
}
