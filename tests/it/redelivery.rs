//! Repeated deliveries and foreign commands (issue 19, item 5): a command delivered again is
//! acked as already received, with its request id, and runs nothing; a slash command other
//! than `slack.command` is refused with an ephemeral naming the configured one.

use std::time::Duration;

use serde_json::{json, Value};

use crate::discord_adapter as dc;
use crate::discord_standin::DiscordStandin;
use crate::slack_harness::{db_command, eventually, start, WAIT};
use crate::slack_standin::{form_encode, slash_command_fields, SlackStandin};

/// Waits for the one request the test's command created; its id.
async fn the_request(run: &crate::slack_harness::Running) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let all = run.requests().await;
        if let Some(r) = all.first() {
            assert_eq!(all.len(), 1, "one request");
            return r.id.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no request recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_command_delivered_again_is_acked_as_already_received_with_its_request_id() {
    let standin = SlackStandin::start().await;
    let run = start(&standin, "http", "REDELIVER_HTTP", |t| t).await;
    let body = form_encode(&db_command(
        &standin,
        "U0ALICE",
        "app stop",
        "7.7.redeliver",
    ));
    let (ack, _) = run.command_body(&body).await;
    assert_eq!(ack["text"], "On it: `/db app stop`");
    let id = the_request(&run).await;

    // Slack retries the same command (same trigger id): the ack says what happened.
    let (ack, took) = run.command_body(&body).await;
    assert!(took < Duration::from_secs(2), "ack took {took:?}");
    assert_eq!(ack["response_type"], "ephemeral");
    let text = ack["text"].as_str().unwrap();
    assert!(
        text.starts_with("Already received `/db app stop`") && text.contains(&id),
        "{text}"
    );
    assert!(!text.contains("On it"), "{text}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(run.requests().await.len(), 1, "no second request");
    assert_eq!(run.marker(), "", "nothing ran");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_only_the_store_knows_is_acked_at_once_and_then_told_already_received() {
    let standin = SlackStandin::start().await;
    let run = start(&standin, "http", "REDELIVER_STORE", |t| t).await;
    let body = form_encode(&db_command(
        &standin,
        "U0ALICE",
        "app stop",
        "8.8.redeliver",
    ));
    run.command_body(&body).await;
    the_request(&run).await;
    // The first delivery's own answer ("Request … recorded") is out before the count below.
    eventually("the first delivery's answer", WAIT, || {
        standin.response_url_calls().iter().any(|c| {
            c.body["text"]
                .as_str()
                .is_some_and(|t| t.contains("recorded"))
        })
    })
    .await;
    // This process forgets what it saw, as a restarted process or another replica knows
    // nothing of the first delivery: only the store's dedupe, after the ack, catches it.
    *run.core.recent.lock().unwrap() = Default::default();
    let hooks_before = standin.response_url_calls().len();
    let (ack, took) = run.command_body(&body).await;
    assert!(took < Duration::from_secs(2), "ack took {took:?}");
    assert_eq!(ack["text"], "On it: `/db app stop`", "acked before any I/O");
    eventually("the follow-up", WAIT, || {
        standin.response_url_calls().len() > hooks_before
    })
    .await;
    let calls = standin.response_url_calls();
    let note = &calls.last().unwrap().body;
    assert_eq!(note["response_type"], "ephemeral", "{note}");
    let text = note["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("Already received") && text.contains("runs nothing again"),
        "{note}"
    );
    assert_eq!(run.requests().await.len(), 1, "no second request");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_mode_envelope_delivered_again_is_acked_as_already_received() {
    let standin = SlackStandin::start().await;
    let run = start(&standin, "socket", "REDELIVER_SOCKET", |t| t).await;
    assert!(standin.wait_connections(1, WAIT).await);
    let env = standin
        .send_slash_command(&db_command(&standin, "U0ALICE", "app stop", "9.9.cmd"))
        .await;
    let (ack, _) = standin.wait_ack(&env, WAIT).await.expect("acked");
    assert_eq!(ack["payload"]["text"], "On it: `/db app stop`");
    let id = the_request(&run).await;
    standin.redeliver(&env).await;
    assert!(standin.wait_acks(&env, 2, WAIT).await, "redelivery acked");
    let again = standin
        .acks()
        .into_iter()
        .filter(|a| a.envelope_id == env)
        .nth(1)
        .unwrap()
        .frame;
    let text = again["payload"]["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("Already received `/db app stop`") && text.contains(&id),
        "{again}"
    );
    assert_eq!(run.requests().await.len(), 1);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_command_delivered_again_is_answered_already_received_not_deferred() {
    let standin = DiscordStandin::start().await;
    let run = dc::start(dc::Setup {
        standin: &standin,
        mode: "http",
        tag: "REDELIVER_DISCORD",
        with_db: false,
        extra: String::new(),
    })
    .await;
    let cmd = dc::slash(
        1_400_000_000_000_000_077,
        dc::ALICE,
        "app",
        &[("action", json!("stop"))],
    );
    let (status, ack, _) = run.post_interaction(&standin, &cmd).await;
    assert_eq!(
        (status, ack),
        (200, json!({"type": 5, "data": {"flags": 64}}))
    );
    let id = dc::nth_request(&run, 1).await.id;
    let (status, ack, _) = run.post_interaction(&standin, &cmd).await;
    assert_eq!(status, 200);
    assert_eq!(ack["type"], 4, "an answer, not a second deferral: {ack}");
    assert_eq!(ack["data"]["flags"], 64, "ephemeral: {ack}");
    let text = ack["data"]["content"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("Already received") && text.contains(&id),
        "{ack}"
    );
    assert_eq!(run.requests().await.len(), 1);
    run.stop().await;
}

/// The fields of a slash command `command` (not `/db`) with `text`.
fn foreign(standin: &SlackStandin, command: &str, trigger: &str) -> Vec<(String, String)> {
    slash_command_fields(
        command,
        "app stop",
        "U0ALICE",
        "C0OPS",
        trigger,
        &standin.response_url(trigger),
    )
}

fn assert_refused(ack: &Value) {
    assert_eq!(ack["response_type"], "ephemeral", "{ack}");
    let text = ack["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("`/db` only")
            && text.contains("`/evil`")
            && text.contains("nothing was done"),
        "names the configured command: {ack}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_command_other_than_the_configured_one_is_refused_and_runs_nothing() {
    let standin = SlackStandin::start().await;
    let run = start(&standin, "http", "FOREIGN_HTTP", |t| t).await;
    let audit_before = run.audit().await.len();
    let (ack, _) = run
        .command_body(&form_encode(&foreign(&standin, "/evil", "1.1.evil")))
        .await;
    assert_refused(&ack);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(run.requests().await.is_empty(), "nothing requested");
    assert_eq!(run.audit().await.len(), audit_before, "nothing handled");
    assert_eq!(run.marker(), "");
    // The configured command still works.
    let (ack, _) = run
        .command_body(&form_encode(&foreign(&standin, "/db", "1.2.db")))
        .await;
    assert_eq!(ack["text"], "On it: `/db app stop`");
    run.stop().await;

    let run = start(&standin, "socket", "FOREIGN_SOCKET", |t| t).await;
    assert!(standin.wait_connections(1, WAIT).await);
    let env = standin
        .send_slash_command(&foreign(&standin, "/evil", "2.1.evil"))
        .await;
    let (ack, _) = standin.wait_ack(&env, WAIT).await.expect("acked");
    assert_refused(&ack["payload"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(run.requests().await.is_empty(), "nothing requested");
    run.stop().await;
}
