//! The harness the Slack end-to-end tests share: the real `Application` (store, dispatcher,
//! worker, outbox, HTTP server) with `[slack]` pointed at the stand-in Slack
//! ([`crate::slack_standin::SlackStandin`]), started on port 0, plus builders for the commands
//! and clicks Slack sends and helpers for waiting on what dualkey answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dualkey::config::Settings;
use dualkey::core::context::Core;
use dualkey::startup::Application;
use serde_json::Value;

use crate::slack_standin::{
    block_action, block_action_form, form_encode, post_signed, slash_command_fields,
    ResponseUrlCall, SlackStandin,
};
use crate::support::test_config;

/// The content type of Slack's HTTP-mode bodies.
pub const FORM: &str = "application/x-www-form-urlencoded";
/// The signing secret dualkey is configured with (and the tests sign with).
pub const SECRET: &str = "standin-signing-secret-0123";
/// How long a test waits for something dualkey does in the background.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running dualkey talking to a stand-in Slack. Stop it with [`Running::stop`], which fails
/// the test if the app does not shut down cleanly.
pub struct Running {
    pub core: Arc<Core>,
    /// `http://127.0.0.1:PORT` of dualkey's own server.
    pub base: String,
    /// The test's folder: the store (`state/dualkey.db`), the marker file, the backup folder.
    pub dir: tempfile::TempDir,
    /// The stand-in's `response_url` base, `http://127.0.0.1:PORT/hooks`.
    hooks: String,
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

    /// The SQLite store file.
    pub fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("state/dualkey.db")
    }

    /// Every request in the store.
    pub async fn requests(&self) -> Vec<dualkey::store::RequestRow> {
        self.core.store.list_requests(None, 100).await.unwrap()
    }

    /// The audit records in the store, oldest first.
    pub async fn audit(&self) -> Vec<dualkey::core::audit::AuditRecord> {
        self.core.store.audit_tail(1000).await.unwrap()
    }

    /// Every outbox row for Slack, delivered or not.
    pub async fn outbox(&self) -> Vec<dualkey::store::OutboxRow> {
        self.core.store.outbox_all("slack").await.unwrap()
    }

    /// The marker file: one line per app command run (`stop` for `app stop`).
    pub fn marker(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("marker.log")).unwrap_or_default()
    }

    /// Waits until the marker file has a line containing `line` (an app command ran); fails
    /// the test naming `what` after [`WAIT`].
    pub async fn wait_marker(&self, line: &str, what: &str) {
        eventually(what, WAIT, || self.marker().contains(line)).await;
    }

    /// Waits until the worker runs an operation; fails the test after [`WAIT`].
    pub async fn wait_busy(&self) {
        let deadline = Instant::now() + WAIT;
        while dualkey::services::worker::Worker::idle(&self.core)
            .await
            .unwrap()
        {
            assert!(Instant::now() < deadline, "the operation never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Posts a signed slash command `/db TEXT` (see [`db_command`]); returns the ack's JSON
    /// and how long it took.
    pub async fn command(&self, user: &str, text: &str, trigger: &str) -> (Value, Duration) {
        let fields = db_command_at(&self.hooks, user, text, trigger);
        self.command_body(&form_encode(&fields)).await
    }

    /// Posts `body` to `/slack/commands`, signed with [`SECRET`]; asserts a 200 and returns
    /// the ack's JSON and how long it took.
    pub async fn command_body(&self, body: &str) -> (Value, Duration) {
        let started = Instant::now();
        let r = post_signed(&self.commands_url(), SECRET, body, FORM).await;
        let status = r.status();
        let ack: Value = r.json().await.expect("a JSON ack");
        let took = started.elapsed();
        assert_eq!(status, 200, "{ack}");
        (ack, took)
    }

    /// Posts a signed click; asserts a 200 and returns the ack's body and how long it took.
    pub async fn click_ack(&self, payload: &Value) -> (String, Duration) {
        let started = Instant::now();
        let r = post_signed(
            &self.interactions_url(),
            SECRET,
            &block_action_form(payload),
            FORM,
        )
        .await;
        let status = r.status();
        let body = r.text().await.expect("an ack body");
        let took = started.elapsed();
        assert_eq!(status, 200, "{body}");
        (body, took)
    }

    /// Posts a signed click; asserts a 200 and returns how long the ack took.
    pub async fn click_payload(&self, payload: &Value) -> Duration {
        self.click_ack(payload).await.1
    }

    /// `BASE/slack/commands`
    pub fn commands_url(&self) -> String {
        format!("{}/slack/commands", self.base)
    }

    /// `BASE/slack/interactions`
    pub fn interactions_url(&self) -> String {
        format!("{}/slack/interactions", self.base)
    }
}

/// The `[slack]` section for `mode` (`http` or `socket`) against `standin`, approvals in
/// C0APPROVALS and audit lines in C0AUDIT, with token env var names unique to `tag` (set here).
pub fn slack_section(standin: &SlackStandin, mode: &str, tag: &str) -> String {
    let bot = format!("DK_SLACK_{tag}_BOT");
    let app = format!("DK_SLACK_{tag}_APP");
    let sign = format!("DK_SLACK_{tag}_SIGN");
    std::env::set_var(&bot, "xoxb-standin-bot");
    std::env::set_var(&app, "xapp-1-standin");
    std::env::set_var(&sign, SECRET);
    format!(
        r#"
[slack]
enabled = true
mode = "{mode}"
api_base_url = "{api}"
bot_token_env = "{bot}"
app_token_env = "{app}"
signing_secret_env = "{sign}"
approvals_channel = "C0APPROVALS"
audit_channel = "C0AUDIT"
"#,
        api = standin.api_url()
    )
}

/// Starts dualkey (one approval needed, SQLite store in a fresh folder) with Slack enabled in
/// `mode` against `standin`, serving HTTP on a free port. `edit_config` edits the config text
/// before the `[slack]` section is added (`|t| t` for none); `{dir}` in the text is the test's
/// folder. `tag` names the token env vars and must be unique to the test.
pub async fn start(
    standin: &SlackStandin,
    mode: &str,
    tag: &str,
    edit_config: impl Fn(String) -> String,
) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/state/dualkey.db", dir.path().display());
    let mut text = edit_config(test_config(&url, &dir.path().join("marker.log"), 1, 0));
    text.push_str(&slack_section(standin, mode, tag));
    let text = text.replace("{dir}", &dir.path().display().to_string());
    let settings =
        Settings::from_toml(&text, std::path::Path::new("test.toml")).expect("valid test config");
    let app = Application::build(settings).await.expect("build the app");
    let core = app.core();
    let adapters = app.chat_adapters().expect("the Slack adapter builds");
    assert_eq!(adapters.len(), 1, "the Slack adapter only");
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
        hooks: format!("{}/hooks", standin.base_url()),
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

/// The newest request, waiting (up to [`WAIT`]) for it to be recorded; fails the test unless
/// there are then exactly `n` requests in all.
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

/// A message's `text` as Slack shows it: dualkey escapes `&`, `<` and `>` (Slack's rule for
/// message text), so a name like `<!channel>` pings nobody.
pub fn text_of(body: &Value) -> String {
    body["text"]
        .as_str()
        .unwrap_or_default()
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Every line posted in C0AUDIT, in order (the first is the chain head dualkey posts at start):
/// each message split into its lines, the full text read from its section blocks (a digest of
/// audit lines is longer than the `text` fallback), and the chain head line that closes a
/// digest left out.
pub fn audit_lines(standin: &SlackStandin) -> Vec<String> {
    standin
        .messages_in("C0AUDIT")
        .iter()
        .flat_map(|(_, b)| digest_lines(&full_text_of(b)))
        .collect()
}

/// A message's text from its section blocks (the `text` fallback when it has none), unescaped.
pub fn full_text_of(body: &Value) -> String {
    let sections: Vec<&str> = body["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "section")
        .filter_map(|b| b["text"]["text"].as_str())
        .collect();
    if sections.is_empty() {
        return text_of(body);
    }
    sections
        .join("\n")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The lines of one audit-channel message; a closing `audit head` line of a several-line
/// message (a digest) is left out.
pub fn digest_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.len() > 1 && lines.last().is_some_and(|l| l.starts_with("audit head ")) {
        lines.pop();
    }
    lines
}

/// Waits (up to [`WAIT`]) for dualkey's first POST to the stand-in's `response_url` named
/// `hook`, and returns it.
pub async fn response_to(standin: &SlackStandin, hook: &str) -> ResponseUrlCall {
    let find = || {
        standin
            .response_url_calls()
            .into_iter()
            .find(|h| h.name == hook)
    };
    eventually(&format!("a POST to the response_url {hook}"), WAIT, || {
        find().is_some()
    })
    .await;
    find().unwrap()
}

/// The fields of `/db TEXT` typed by `user` in C0OPS with trigger id `trigger`, as Slack
/// sends them (HTTP: [`form_encode`] them; Socket Mode: `send_slash_command`). Its
/// `response_url` is the stand-in's hook named `trigger`.
pub fn db_command(
    standin: &SlackStandin,
    user: &str,
    text: &str,
    trigger: &str,
) -> Vec<(String, String)> {
    db_command_at(
        &format!("{}/hooks", standin.base_url()),
        user,
        text,
        trigger,
    )
}

fn db_command_at(hooks: &str, user: &str, text: &str, trigger: &str) -> Vec<(String, String)> {
    slash_command_fields(
        "/db",
        text,
        user,
        "C0OPS",
        trigger,
        &format!("{hooks}/{trigger}"),
    )
}

/// A click on `action` (e.g. `approve:<id>`) by `user` on the card `ts` in C0APPROVALS, at
/// `action_ts` (which with `user` identifies the click, redeliveries included); its
/// `response_url` is the stand-in's hook `hook`.
pub fn click(
    standin: &SlackStandin,
    action: &str,
    user: &str,
    ts: &str,
    action_ts: &str,
    hook: &str,
) -> Value {
    block_action(
        action,
        "",
        user,
        "C0APPROVALS",
        ts,
        action_ts,
        &standin.response_url(hook),
        &format!("{action_ts}.trigger"),
    )
}
