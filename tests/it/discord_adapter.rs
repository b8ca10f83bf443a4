//! The Discord adapter end to end: the real `Application` (store, dispatcher, worker, outbox,
//! HTTP server) with `[discord]` pointed at the stand-in Discord
//! ([`crate::discord_standin::DiscordStandin`]), driven over real HTTP (signed interactions to
//! `POST /discord/interactions`) and the stand-in's gateway websocket. The operation approved
//! is a real `deploy` of the TaskFlow migrations into a fresh PostgreSQL database.
//!
//! The harness at the top is shared with `discord_outages` and `discord_cross`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dualkey::adapters::discord::DiscordAdapter;
use dualkey::config::Settings;
use dualkey::core::context::Core;
use dualkey::startup::Application;
use serde_json::{json, Value};

use crate::discord_standin::{
    autocomplete_interaction, command_interaction, component_interaction, now_timestamp, ping,
    post_signed, post_signed_with, public_key_hex, sign, DiscordStandin, Failure, APP_ID,
    BOT_TOKEN, GUILD_ID,
};
use crate::support::{test_config, TestDb, FIXTURE_MIGRATIONS};

// ---------------------------------------------------------------------------------------------
// Harness

/// The Ed25519 secret key the tests sign HTTP-mode interactions with (its public key is
/// `discord.public_key`).
pub const SIGNING_SECRET: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";
/// The channel commands are typed in.
pub const OPS: u64 = 1_200_000_000_000_000_010;
/// `discord.approvals_channel`.
pub const APPROVALS: u64 = 1_200_000_000_000_000_011;
/// `discord.audit_channel`.
pub const AUDIT: u64 = 1_200_000_000_000_000_012;
/// Alice (operator, approver) and Bob (approver) in `test_config`.
pub const ALICE: u64 = 300_000_000_000_000_001;
pub const BOB: u64 = 300_000_000_000_000_002;
/// A Discord account no operator has.
pub const STRANGER: u64 = 300_000_000_000_000_099;
/// How long a test waits for something dualkey does in the background.
pub const WAIT: Duration = Duration::from_secs(15);

/// A running dualkey talking to a stand-in Discord (and maybe Slack).
pub struct Running {
    pub core: Arc<Core>,
    /// `http://127.0.0.1:PORT` of dualkey's own server.
    pub base: String,
    pub dir: tempfile::TempDir,
    /// The target database `production` deploys to.
    pub db: Option<TestDb>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Asks dualkey to stop and waits (15 s at most) for `run_until_stopped` to return `Ok`.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), t)
                .await
                .expect("dualkey stopped in time")
                .expect("run task")
                .expect("run_until_stopped");
        }
    }

    /// Every request in the store.
    pub async fn requests(&self) -> Vec<dualkey::store::RequestRow> {
        self.core.store.list_requests(None, 100).await.unwrap()
    }

    /// The audit records in the store, oldest first.
    pub async fn audit(&self) -> Vec<dualkey::core::audit::AuditRecord> {
        self.core.store.audit_tail(1000).await.unwrap()
    }

    /// The marker file: one line per app command run.
    pub fn marker(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("marker.log")).unwrap_or_default()
    }

    /// `BASE/discord/interactions`
    pub fn interactions_url(&self) -> String {
        format!("{}/discord/interactions", self.base)
    }

    /// POSTs `interaction` signed with [`SIGNING_SECRET`] (telling the stand-in about it first,
    /// as Discord knows its own interactions); returns the status, the JSON answer and how long
    /// it took.
    pub async fn post_interaction(
        &self,
        standin: &DiscordStandin,
        interaction: &Value,
    ) -> (u16, Value, Duration) {
        standin.note_interaction(interaction);
        let (status, body, took) = post_signed(
            &self.interactions_url(),
            SIGNING_SECRET,
            &interaction.to_string(),
        )
        .await;
        let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, json, took)
    }
}

/// What a test starts dualkey with.
pub struct Setup<'a> {
    pub standin: &'a DiscordStandin,
    /// `gateway` or `http`.
    pub mode: &'a str,
    /// Names the token variable; unique per test.
    pub tag: &'a str,
    /// A real target database for `production` (deploys go there).
    pub with_db: bool,
    /// More config text (a `[slack]` section).
    pub extra: String,
}

/// The `[discord]` section against `standin`.
fn discord_section(standin: &DiscordStandin, mode: &str, tag: &str) -> String {
    let bot = format!("DK_DISCORD_{tag}_BOT");
    std::env::set_var(&bot, BOT_TOKEN);
    format!(
        r#"
[discord]
enabled = true
mode = "{mode}"
api_base_url = "{api}"
bot_token_env = "{bot}"
application_id = "{APP_ID}"
public_key = "{pk}"
guild_id = "{GUILD_ID}"
approvals_channel = "{APPROVALS}"
audit_channel = "{AUDIT}"
"#,
        api = standin.base_url(),
        pk = public_key_hex(SIGNING_SECRET),
    )
}

/// Starts dualkey (one approval needed, SQLite store in a fresh folder) with Discord enabled,
/// serving HTTP on a free port.
pub async fn start(setup: Setup<'_>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/state/dualkey.db", dir.path().display());
    let mut text = test_config(&url, &dir.path().join("marker.log"), 1, 0);
    let db = if setup.with_db {
        let db = TestDb::create("discord").await;
        let var = format!("DK_DISCORD_{}_DB", setup.tag);
        std::env::set_var(&var, &db.url);
        text = text.replacen(
            "database_url_env = \"DK_TEST_UNUSED_URL\"",
            &format!(
                "database_url_env = \"{var}\"\nbackup_dir = \"{}/backups\"",
                dir.path().display()
            ),
            1,
        );
        Some(db)
    } else {
        None
    };
    assert!(text.contains(FIXTURE_MIGRATIONS));
    text.push_str(&discord_section(setup.standin, setup.mode, setup.tag));
    text.push_str(&setup.extra);
    let settings =
        Settings::from_toml(&text, std::path::Path::new("test.toml")).expect("valid test config");
    let app = Application::build(settings).await.expect("build the app");
    let core = app.core();
    let adapters = app.chat_adapters().expect("the chat adapters build");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        app.run_until_stopped(adapters, Some(listener.into()), async move {
            let _ = rx.await;
        })
        .await
    });
    Running {
        core,
        base,
        dir,
        db,
        stop: Some(tx),
        task: Some(task),
    }
}

/// Polls `cond` every 20 ms until it holds; fails the test naming `what` after `wait`.
pub async fn eventually<F: FnMut() -> bool>(what: &str, wait: Duration, mut cond: F) {
    let deadline = Instant::now() + wait;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Discord-markdown escaping undone (the renderer escapes text from users and the database).
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&n) = chars.peek() {
                if "\\*_~`|><#[]-".contains(n) {
                    out.push(n);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out.replace("@\u{200b}", "@")
}

/// Everything a Discord message shows as text: `content` (unescaped), and each embed's title,
/// description, fields and footer.
pub fn text_of(message: &Value) -> String {
    let mut out = unescape(message["content"].as_str().unwrap_or_default());
    for e in message["embeds"].as_array().into_iter().flatten() {
        for part in [&e["title"], &e["description"], &e["footer"]["text"]] {
            if let Some(s) = part.as_str() {
                out.push('\n');
                out.push_str(s);
            }
        }
        for f in e["fields"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "\n{}: {}",
                f["name"].as_str().unwrap_or_default(),
                f["value"].as_str().unwrap_or_default()
            ));
        }
    }
    out
}

/// The `custom_id`s of a message's buttons, in order.
pub fn button_ids(message: &Value) -> Vec<String> {
    message["components"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| b["custom_id"].as_str().map(str::to_string))
        .collect()
}

/// A `/db SUB OPTIONS` typed by `user` in [`OPS`] (interaction `id`, token `tok-<id>`).
pub fn slash(id: u64, user: u64, sub: &str, options: &[(&str, Value)]) -> Value {
    command_interaction(
        id,
        &format!("tok-{id}"),
        APP_ID,
        Some(GUILD_ID),
        OPS,
        user,
        sub,
        options,
    )
}

/// A click by `user` on button `custom_id` of `message` (interaction `id`, token `tok-<id>`).
pub fn click(id: u64, user: u64, custom_id: &str, message: &Value) -> Value {
    component_interaction(
        id,
        &format!("tok-{id}"),
        APP_ID,
        Some(GUILD_ID),
        user,
        custom_id,
        message,
    )
}

/// The text of every message in [`AUDIT`], in order (the first is the chain head).
pub fn audit_lines(standin: &DiscordStandin) -> Vec<String> {
    standin
        .messages_in(AUDIT)
        .iter()
        .flat_map(|(_, m)| crate::slack_harness::digest_lines(&text_of(m)))
        .collect()
}

/// Waits for the newest request, failing unless there are then exactly `n`.
pub async fn nth_request(run: &Running, n: usize) -> dualkey::store::RequestRow {
    let deadline = Instant::now() + WAIT;
    loop {
        let reqs = run.requests().await;
        if reqs.len() >= n {
            assert_eq!(reqs.len(), n, "{reqs:?}");
            return reqs.into_iter().max_by_key(|r| r.created_at).unwrap();
        }
        assert!(Instant::now() < deadline, "request {n} was not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the first follow-up or `@original` edit sent with interaction token `tok-<id>`
/// and returns its body.
pub async fn answer_to(standin: &DiscordStandin, id: u64) -> (String, Value) {
    let token = format!("tok-{id}");
    let find = || {
        standin
            .webhook_calls(&token)
            .into_iter()
            .find(|c| c.status < 300)
            .map(|c| (c.method.clone(), c.body.clone()))
    };
    eventually(&format!("an answer to interaction {id}"), WAIT, || {
        find().is_some()
    })
    .await;
    find().unwrap()
}

/// The card in [`APPROVALS`] once posted: (message id, message).
pub async fn approvals_card(standin: &DiscordStandin) -> (u64, Value) {
    eventually("the card in the approvals channel", WAIT, || {
        !standin.messages_in(APPROVALS).is_empty()
    })
    .await;
    standin.messages_in(APPROVALS).remove(0)
}

/// The flow after a request: the card in OPS and APPROVALS with Approve/Deny for `id`; Alice's
/// own click refused ephemerally (no vote); Bob's click approves; the deploy runs into the
/// database; the card is edited in place to succeeded; the audit channel has every event in
/// order. `deliver` sends an interaction the way the mode under test does and returns its ack.
pub async fn check_approval_flow<F, Fut>(standin: &DiscordStandin, run: &Running, deliver: F)
where
    F: Fn(Value) -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let req = nth_request(run, 1).await;
    let id = req.id.clone();
    let (card_id, card) = approvals_card(standin).await;
    eventually("the card in the command's channel", WAIT, || {
        !standin.messages_in(OPS).is_empty()
    })
    .await;
    for (_, m) in standin
        .messages_in(OPS)
        .iter()
        .filter(|(_, m)| m["webhook_id"].is_null())
        .chain(std::iter::once(&(card_id, card.clone())))
    {
        assert_eq!(
            button_ids(m),
            [format!("approve:{id}"), format!("deny:{id}")],
            "{m}"
        );
        assert!(
            text_of(m).contains(&id) || text_of(m).contains("deploy"),
            "{m}"
        );
    }
    let posts = standin.calls_to(&format!("/channels/{APPROVALS}/messages"));
    assert!(posts
        .iter()
        .all(|c| c.auth.as_deref() == Some(&format!("Bot {BOT_TOKEN}"))));

    // Alice clicks approve on her own request: acked as a deferred update, refused in an
    // ephemeral follow-up, no vote.
    let approve = format!("approve:{id}");
    let ack = deliver(click(1_500_000_000_000_000_001, ALICE, &approve, &card)).await;
    assert_eq!(ack, json!({"type": 6}));
    let (method, body) = answer_to(standin, 1_500_000_000_000_000_001).await;
    assert_eq!(method, "POST", "a follow-up, never an edit of the card");
    assert_eq!(body["flags"].as_u64().unwrap_or(0) & 64, 64, "{body}");
    assert!(text_of(&body).contains("Vote not counted"), "{body}");
    assert!(run.core.store.votes(&id).await.unwrap().is_empty());

    // Bob approves: the deploy runs, the card ends at succeeded, edited in place.
    let ack = deliver(click(1_500_000_000_000_000_002, BOB, &approve, &card)).await;
    assert_eq!(ack, json!({"type": 6}));
    let (_, body) = answer_to(standin, 1_500_000_000_000_000_002).await;
    assert!(text_of(&body).contains("Approved"), "{body}");
    eventually("the card shows succeeded", Duration::from_secs(40), || {
        standin
            .message(APPROVALS, card_id)
            .is_some_and(|m| text_of(&m).contains("[succeeded]"))
    })
    .await;
    // Every edit of the card went to the channel message with the bot token (which, unlike
    // an interaction token, never expires).
    let card_edits = standin.calls_to(&format!("/channels/{APPROVALS}/messages/{card_id}"));
    assert!(!card_edits.is_empty());
    for c in &card_edits {
        assert_eq!(c.method, "PATCH");
        assert_eq!(c.auth.as_deref(), Some(format!("Bot {BOT_TOKEN}").as_str()));
    }
    let edits = standin.edits_of(card_id);
    assert!(!edits.is_empty(), "the card was edited");
    assert!(
        edits.iter().any(|e| text_of(e).contains("[running]")),
        "a step-by-step edit: {edits:?}"
    );
    let bot_posts = standin
        .messages_in(APPROVALS)
        .into_iter()
        .filter(|(_, m)| m["webhook_id"].is_null())
        .count();
    assert_eq!(bot_posts, 1, "edited, never reposted (follow-ups aside)");
    let last = standin.message(APPROVALS, card_id).unwrap();
    assert!(
        button_ids(&last).is_empty(),
        "no buttons once decided: {last}"
    );
    assert_eq!(run.core.store.votes(&id).await.unwrap().len(), 1);

    // The migrations are in the database.
    if let Some(db) = &run.db {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let applied: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM _prisma_migrations WHERE finished_at IS NOT NULL",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert!(applied > 0, "the deploy applied the migrations");
    }

    // The audit channel: the chain head, then every event in order.
    let deadline = Instant::now() + WAIT;
    while !run
        .audit()
        .await
        .iter()
        .any(|r| r.action == "operation.succeeded")
    {
        assert!(
            Instant::now() < deadline,
            "operation.succeeded was not audited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let records = run.audit().await;
    let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    for a in [
        "request.created",
        "vote.refused",
        "vote.approve",
        "request.approved",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    eventually("every audit line in the audit channel", WAIT, || {
        audit_lines(standin).len() > records.len()
    })
    .await;
    let lines = audit_lines(standin);
    assert!(lines[0].starts_with("audit head seq="), "{lines:?}");
    for (i, rec) in records.iter().enumerate() {
        assert_eq!(lines[i + 1], rec.render(), "audit line {i} in order");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn a_missing_token_or_bad_public_key_is_an_error_naming_it() {
    let mut s = dualkey::config::DiscordSettings {
        enabled: true,
        bot_token_env: "DK_DISCORD_MISSING_BOT_TOKEN".into(),
        ..Default::default()
    };
    let err = DiscordAdapter::from_settings(&s)
        .err()
        .expect("no bot token");
    assert!(
        format!("{err:#}").contains("DK_DISCORD_MISSING_BOT_TOKEN"),
        "{err:#}"
    );
    std::env::set_var("DK_DISCORD_PRESENT_BOT_TOKEN", "abc.def.ghi");
    s.bot_token_env = "DK_DISCORD_PRESENT_BOT_TOKEN".into();
    assert!(
        DiscordAdapter::from_settings(&s).is_ok(),
        "gateway mode needs no key"
    );
    s.mode = "http".into();
    s.public_key = "zz".into();
    let err = DiscordAdapter::from_settings(&s).err().expect("bad key");
    assert!(format!("{err:#}").contains("discord.public_key"), "{err:#}");
    s.public_key = public_key_hex(SIGNING_SECRET);
    assert!(DiscordAdapter::from_settings(&s).is_ok());
    std::env::set_var("DK_DISCORD_PREFIXED_BOT_TOKEN", "Bot abc");
    s.bot_token_env = "DK_DISCORD_PREFIXED_BOT_TOKEN".into();
    assert!(
        DiscordAdapter::from_settings(&s).is_err(),
        "`Bot ` is refused"
    );
    s.bot_token_env = "DK_DISCORD_PRESENT_BOT_TOKEN".into();
    s.api_base_url = "ftp://x".into();
    assert!(DiscordAdapter::from_settings(&s).is_err());
}

#[test]
fn discord_ids_in_the_config_must_be_snowflakes() {
    let base = test_config("sqlite://x.db", std::path::Path::new("/tmp/m"), 1, 0);
    let check = |section: &str| {
        Settings::from_toml(&format!("{base}{section}"), std::path::Path::new("t.toml"))
    };
    assert!(check("[discord]\napprovals_channel = \"200000000000000000\"\n").is_ok());
    for (section, key) in [
        (
            "[discord]\napprovals_channel = \"#ops\"\n",
            "discord.approvals_channel",
        ),
        (
            "[discord]\naudit_channel = \"12ab\"\n",
            "discord.audit_channel",
        ),
        ("[discord]\nguild_id = \"x\"\n", "discord.guild_id"),
        (
            "[discord]\napplication_id = \"-1\"\n",
            "discord.application_id",
        ),
        (
            "[environments.production.discord]\nreport_channel = \"ops\"\n",
            "environments.production.discord.report_channel",
        ),
    ] {
        let err = check(section)
            .err()
            .unwrap_or_else(|| panic!("{section} accepted"));
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
    let bad_user = base.replacen(
        "discord = \"300000000000000001\"",
        "discord = \"alice#1234\"",
        1,
    );
    let err = Settings::from_toml(&bad_user, std::path::Path::new("t.toml")).unwrap_err();
    assert!(err.to_string().contains("operators[0].discord"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_answers_ping_and_refuses_bad_signatures_storing_nothing() {
    let standin = DiscordStandin::start().await;
    let run = start(Setup {
        standin: &standin,
        mode: "http",
        tag: "SIG",
        with_db: false,
        extra: String::new(),
    })
    .await;
    let url = run.interactions_url();

    // PING: PONG, as JSON.
    let body = ping().to_string();
    let ts = now_timestamp();
    let r = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("x-signature-ed25519", sign(SIGNING_SECRET, &ts, &body))
        .header("x-signature-timestamp", &ts)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"type": 1}));

    let audit_before = run.audit().await.len();
    let cmd = slash(
        1_400_000_000_000_000_001,
        ALICE,
        "app",
        &[("action", json!("stop"))],
    );
    let body = cmd.to_string();
    let now = now_timestamp();
    let good = sign(SIGNING_SECRET, &now, &body);
    // Tampered body.
    let tampered = body.replace("stop", "start");
    assert_eq!(post_signed_with(&url, &tampered, &now, &good).await.0, 401);
    // Tampered timestamp.
    let later = (now.parse::<i64>().unwrap() + 1).to_string();
    assert_eq!(post_signed_with(&url, &body, &later, &good).await.0, 401);
    // Tampered signature (one hex digit).
    let mut bad = good.clone();
    let c = if bad.starts_with('0') { "1" } else { "0" };
    bad.replace_range(0..1, c);
    assert_eq!(post_signed_with(&url, &body, &now, &bad).await.0, 401);
    // Another key.
    let other = "1111111111111111111111111111111111111111111111111111111111111111";
    assert_eq!(post_signed(&url, other, &body).await.0, 401);
    // Signed correctly, but six minutes old.
    let old = (now.parse::<i64>().unwrap() - 360).to_string();
    let (status, _, _) =
        post_signed_with(&url, &body, &old, &sign(SIGNING_SECRET, &old, &body)).await;
    assert_eq!(status, 401);
    // No signature at all.
    let r = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Signed but not an interaction: 400.
    assert_eq!(post_signed(&url, SIGNING_SECRET, "{not json").await.0, 400);
    assert_eq!(
        post_signed(&url, SIGNING_SECRET, "{\"type\": 2}").await.0,
        400
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(run.requests().await.is_empty(), "nothing requested");
    assert_eq!(run.audit().await.len(), audit_before, "nothing audited");
    assert!(
        standin.calls_to("/webhooks/").is_empty() && standin.calls_to("/interactions/").is_empty(),
        "nothing answered"
    );
    let failures = dualkey::adapters::signature_failures();
    assert!(
        failures
            .iter()
            .any(|(p, n)| *p == dualkey::core::event::Platform::Discord && *n >= 6),
        "{failures:?}"
    );
    assert_eq!(run.marker(), "");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_command_card_refused_self_vote_approval_deploy_and_audit() {
    let standin = DiscordStandin::start().await;
    let run = start(Setup {
        standin: &standin,
        mode: "http",
        tag: "HTTPFLOW",
        with_db: true,
        extra: String::new(),
    })
    .await;

    let cmd = slash(
        1_400_000_000_000_000_010,
        ALICE,
        "deploy",
        &[("env", json!("production"))],
    );
    let (status, ack, took) = run.post_interaction(&standin, &cmd).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack, json!({"type": 5, "data": {"flags": 64}}));
    assert!(took < Duration::from_secs(2), "ack took {took:?}");
    // The deferred answer is edited with the outcome, only for Alice.
    let (method, body) = answer_to(&standin, 1_400_000_000_000_000_010).await;
    assert_eq!(method, "PATCH", "the deferred response is edited");
    assert!(text_of(&body).contains("recorded"), "{body}");
    // Its 15 minutes pass: the card is still edited to the end (with the bot token).
    standin.expire_token("tok-1400000000000000010");

    let deliver = |ia: Value| {
        let run = &run;
        let standin = &standin;
        async move {
            let (status, ack, took) = run.post_interaction(standin, &ia).await;
            assert_eq!(status, 200, "{ack}");
            assert!(took < Duration::from_secs(2), "ack took {took:?}");
            ack
        }
    };
    check_approval_flow(&standin, &run, deliver).await;

    // The same click delivered again: the same ack, no second vote.
    let (_, card) = approvals_card(&standin).await;
    let id = run.requests().await[0].id.clone();
    let again = click(
        1_500_000_000_000_000_002,
        BOB,
        &format!("approve:{id}"),
        &card,
    );
    let (status, ack, _) = run.post_interaction(&standin, &again).await;
    assert_eq!((status, ack), (200, json!({"type": 6})));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(run.core.store.votes(&id).await.unwrap().len(), 1);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_mode_command_card_refused_self_vote_approval_deploy_and_audit() {
    let standin = DiscordStandin::start().await;
    let run = start(Setup {
        standin: &standin,
        mode: "gateway",
        tag: "GWFLOW",
        with_db: true,
        extra: String::new(),
    })
    .await;
    assert!(
        standin.wait_connections(1, WAIT).await,
        "dualkey connected to the gateway"
    );
    let ids = standin.identifies();
    assert_eq!(ids[0].token, format!("Bot {BOT_TOKEN}"));
    assert_eq!(ids[0].intents, 0, "no intents");
    assert!(
        !standin.calls_to("/gateway").is_empty(),
        "the gateway URL came from the stand-in's REST API"
    );

    let cmd_id = 1_400_000_000_000_000_020;
    standin
        .send_interaction(slash(
            cmd_id,
            ALICE,
            "deploy",
            &[("env", json!("production"))],
        ))
        .await;
    assert!(
        standin
            .wait_calls(&format!("/interactions/{cmd_id}/"), 1, WAIT)
            .await
    );
    let acks = standin.interaction_responses(cmd_id);
    assert_eq!(acks[0].body, json!({"type": 5, "data": {"flags": 64}}));
    assert!(acks[0].status < 300);
    let (method, body) = answer_to(&standin, cmd_id).await;
    assert_eq!(method, "PATCH");
    assert!(text_of(&body).contains("recorded"), "{body}");

    let deliver = |ia: Value| {
        let standin = &standin;
        async move {
            let id: u64 = ia["id"].as_str().unwrap().parse().unwrap();
            standin.send_interaction(ia).await;
            assert!(
                standin
                    .wait_calls(&format!("/interactions/{id}/"), 1, WAIT)
                    .await,
                "interaction {id} acked"
            );
            standin.interaction_responses(id)[0].body.clone()
        }
    };
    check_approval_flow(&standin, &run, deliver).await;
    assert_eq!(run.requests().await.len(), 1);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_is_refused_ephemerally_and_nothing_is_requested() {
    let standin = DiscordStandin::start().await;
    let run = start(Setup {
        standin: &standin,
        mode: "http",
        tag: "STRANGER",
        with_db: false,
        extra: String::new(),
    })
    .await;
    let id = 1_400_000_000_000_000_030;
    let (status, ack, _) = run
        .post_interaction(
            &standin,
            &slash(id, STRANGER, "app", &[("action", json!("stop"))]),
        )
        .await;
    assert_eq!(
        (status, ack),
        (200, json!({"type": 5, "data": {"flags": 64}}))
    );
    let (method, body) = answer_to(&standin, id).await;
    // The deferred response was ephemeral (flag 64): editing it keeps it to that person.
    assert_eq!(method, "PATCH");
    assert!(text_of(&body).contains("not allowed"), "{body}");
    assert!(
        text_of(&body).contains(&format!("discord:{STRANGER}")),
        "{body}"
    );
    assert!(run.requests().await.is_empty());
    assert!(standin.messages_in(APPROVALS).is_empty());
    run.stop().await;
}

/// The adapter's outbound calls against the stand-in, failures mapped onto `DeliveryError`;
/// and `ephemeral` outside an interaction as a direct message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_calls_map_discords_failures_and_ephemeral_goes_by_direct_message() {
    use dualkey::adapters::{DeliveryError, Outbound};
    use dualkey::core::reply::Reply;

    let standin = DiscordStandin::start().await;
    std::env::set_var("DK_DISCORD_OUTBOUND_BOT", BOT_TOKEN);
    let settings = |base: String| dualkey::config::DiscordSettings {
        enabled: true,
        api_base_url: base,
        bot_token_env: "DK_DISCORD_OUTBOUND_BOT".into(),
        ..Default::default()
    };
    let a = DiscordAdapter::from_settings(&settings(standin.base_url())).unwrap();
    let chan = "1200000000000000077";
    let id = a.post(chan, &Reply::public("hello")).await.unwrap();
    a.edit(chan, &id, &Reply::public("hello again"))
        .await
        .unwrap();
    let m = standin
        .message(1_200_000_000_000_000_077, id.parse().unwrap())
        .unwrap();
    assert_eq!(text_of(&m), "hello again");

    let route = format!("/channels/{chan}/messages");
    standin.fail_next(&route, 1, Failure::RateLimited { retry_after: 2.5 });
    match a.post(chan, &Reply::public("x")).await {
        Err(DeliveryError::RateLimited(d)) => assert_eq!(d, Duration::from_millis(2500)),
        other => panic!("{other:?}"),
    }
    standin.fail_next(&route, 1, Failure::ServerError);
    assert!(matches!(
        a.post(chan, &Reply::public("x")).await,
        Err(DeliveryError::Transient(_))
    ));
    standin.fail_next(&route, 1, Failure::BadGateway);
    assert!(matches!(
        a.post(chan, &Reply::public("x")).await,
        Err(DeliveryError::Transient(_))
    ));
    for f in [Failure::Unauthorized, Failure::NotFound] {
        standin.fail_next(&route, 1, f);
        match a.post(chan, &Reply::public("x")).await {
            Err(DeliveryError::Permanent(m)) => assert!(m.contains("HTTP 4"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    standin.fail_next(
        &route,
        1,
        Failure::Status {
            status: 403,
            code: 50001,
            message: "Missing Access".into(),
        },
    );
    match a.post(chan, &Reply::public("x")).await {
        Err(DeliveryError::Permanent(m)) => {
            assert!(m.contains("Missing Access") && m.contains("50001"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // Nothing listening: transient.
    let gone = DiscordAdapter::from_settings(&settings("http://127.0.0.1:9".into())).unwrap();
    assert!(matches!(
        gone.post(chan, &Reply::public("x")).await,
        Err(DeliveryError::Transient(_))
    ));

    // A failed answer through an interaction token never shows the token.
    let token = "T".repeat(120);
    let mut ev = dualkey::core::event::InboundEvent::new(
        "1".into(),
        dualkey::core::event::Actor {
            platform: dualkey::core::event::Platform::Discord,
            account: "300000000000000001".into(),
            display: "a".into(),
        },
        dualkey::core::event::ChannelRef {
            platform: dualkey::core::event::Platform::Discord,
            id: chan.into(),
        },
        dualkey::core::event::EventKind::Action {
            action_id: "x".into(),
        },
    );
    ev.reply_to = Some(format!("k:{APP_ID}:{token}"));
    match gone.respond(&ev, &Reply::ephemeral("x")).await {
        Err(DeliveryError::Transient(m)) => assert!(!m.contains(&token), "{m}"),
        other => panic!("{other:?}"),
    }

    // ephemeral(): a DM channel for the user, then the message there.
    a.ephemeral(
        chan,
        "300000000000000001",
        &Reply::ephemeral("only for you"),
    )
    .await
    .unwrap();
    let dms = standin.dms_to(ALICE);
    assert_eq!(dms.len(), 1, "{dms:?}");
    let content = text_of(&dms[0].1);
    assert!(
        content.contains("only for you") && content.contains(chan),
        "{content}"
    );
    let opened = standin.calls_to("/users/@me/channels");
    assert_eq!(
        opened[0].body,
        json!({"recipient_id": "300000000000000001"})
    );
    assert_eq!(
        opened[0].auth.as_deref(),
        Some(format!("Bot {BOT_TOKEN}").as_str())
    );
    let sent = standin.calls_to(&format!(
        "/channels/{}/messages",
        standin.dm_channel(ALICE).unwrap()
    ));
    assert!(
        sent[0].body.get("flags").is_none(),
        "no ephemeral flag on a channel message"
    );
}

/// `respond`: a command's first ephemeral answer edits the deferred response, later ones are
/// ephemeral follow-ups; a public answer is a channel message; a click's answers are always
/// follow-ups (its "original" is the card).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_edit_the_deferred_response_once_then_follow_up() {
    use dualkey::adapters::discord::interactions::{parse, Incoming};
    use dualkey::adapters::Outbound;
    use dualkey::core::reply::Reply;

    let standin = DiscordStandin::start().await;
    std::env::set_var("DK_DISCORD_RESPOND_BOT", BOT_TOKEN);
    let a = DiscordAdapter::from_settings(&dualkey::config::DiscordSettings {
        enabled: true,
        api_base_url: standin.base_url(),
        bot_token_env: "DK_DISCORD_RESPOND_BOT".into(),
        ..Default::default()
    })
    .unwrap();
    let ia = slash(1_800_000_000_000_000_001, ALICE, "status", &[]);
    standin.note_interaction(&ia);
    let Incoming::Event { event, ack, .. } = parse(&ia).unwrap() else {
        panic!("an event")
    };
    a.transport()
        .interaction_callback("1800000000000000001", "tok-1800000000000000001", &ack)
        .await
        .unwrap();
    a.note_acked(&event);
    a.respond(&event, &Reply::ephemeral("first")).await.unwrap();
    a.respond(&event, &Reply::ephemeral("second"))
        .await
        .unwrap();
    a.respond(&event, &Reply::public("for everyone"))
        .await
        .unwrap();
    let calls: Vec<(String, String, Value)> = standin
        .webhook_calls("tok-1800000000000000001")
        .into_iter()
        .map(|c| (c.method, c.path, c.body))
        .collect();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(calls[0].0, "PATCH");
    assert!(calls[0].1.ends_with("/messages/@original"));
    assert_eq!(text_of(&calls[0].2), "first");
    assert_eq!(calls[1].0, "POST");
    assert_eq!(calls[1].2["flags"], 64);
    assert_eq!(text_of(&calls[1].2), "second");
    let public: Vec<String> = standin
        .messages_in(OPS)
        .iter()
        .filter(|(_, m)| m["webhook_id"].is_null())
        .map(|(_, m)| text_of(m))
        .collect();
    assert_eq!(public, ["for everyone"]);

    // A click: follow-ups only.
    let card = json!({"id": "1900000000000000001", "channel_id": APPROVALS.to_string()});
    let ia = click(1_800_000_000_000_000_002, BOB, "approve:x", &card);
    standin.note_interaction(&ia);
    let Incoming::Event { event, ack, .. } = parse(&ia).unwrap() else {
        panic!("an event")
    };
    assert_eq!(ack, json!({"type": 6}));
    a.note_acked(&event);
    a.respond(&event, &Reply::ephemeral("refused"))
        .await
        .unwrap();
    let calls = standin.webhook_calls("tok-1800000000000000002");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "POST");
    assert_eq!(calls[0].body["flags"], 64);
}

/// Suggestions name migrations, backups and requests: someone who is not an operator gets
/// none, an operator gets the migration folder's names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocomplete_suggests_only_to_those_who_may_run_the_command() {
    let standin = DiscordStandin::start().await;
    let run = start(Setup {
        standin: &standin,
        mode: "http",
        tag: "AUTOCOMPLETE",
        with_db: false,
        extra: String::new(),
    })
    .await;
    let typing = |id: u64, user: u64| {
        autocomplete_interaction(
            id,
            &format!("tok-{id}"),
            APP_ID,
            Some(GUILD_ID),
            OPS,
            user,
            "rollback",
            &[],
            "migration",
            "",
        )
    };
    let (status, answer, _) = run
        .post_interaction(&standin, &typing(1_400_000_000_000_000_040, ALICE))
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["type"], 8);
    let choices = answer["data"]["choices"].as_array().cloned().unwrap();
    assert!(
        !choices.is_empty(),
        "an operator gets suggestions: {answer}"
    );
    let (status, answer, _) = run
        .post_interaction(&standin, &typing(1_400_000_000_000_000_041, STRANGER))
        .await;
    assert_eq!(
        (status, answer),
        (200, json!({"type": 8, "data": {"choices": []}}))
    );
    run.stop().await;
}

/// With `discord.guild_id` set, an interaction from another server (the bot invited elsewhere)
/// is refused there and then: nothing is requested, nothing is audited, no card is posted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactions_from_another_server_are_refused_and_change_nothing() {
    let standin = DiscordStandin::start().await;
    let run = start(Setup {
        standin: &standin,
        mode: "http",
        tag: "FOREIGN",
        with_db: false,
        extra: String::new(),
    })
    .await;
    let before = run.audit().await.len();
    let id = 1_400_000_000_000_000_050;
    let foreign = command_interaction(
        id,
        &format!("tok-{id}"),
        APP_ID,
        Some(GUILD_ID + 7),
        OPS,
        ALICE,
        "app",
        &[("action", json!("stop"))],
    );
    let (status, answer, _) = run.post_interaction(&standin, &foreign).await;
    assert_eq!(status, 200);
    assert_eq!(answer["type"], 4, "{answer}");
    assert_eq!(answer["data"]["flags"], 64, "{answer}");
    assert!(
        text_of(&answer["data"]).contains("not set up for this server"),
        "{answer}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(run.requests().await.is_empty());
    assert_eq!(run.audit().await.len(), before);
    assert!(standin.messages_in(APPROVALS).is_empty());
    run.stop().await;
}
