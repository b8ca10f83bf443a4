//! The Slack adapter end to end: the real `Application` (store, dispatcher, worker, outbox,
//! HTTP server) with `[slack]` pointed at the stand-in Slack, driven over real HTTP (signed
//! slash commands and clicks) and the Socket Mode websocket.

use std::time::Duration;

use dualkey::adapters::slack::render;
use dualkey::adapters::slack::SlackAdapter;
use dualkey::core::reply::{Card, Reply, Style};
use serde_json::{json, Value};

use crate::slack_harness::{
    audit_lines, click, db_command, eventually, response_to, start, text_of, Running, FORM, SECRET,
    WAIT,
};
use crate::slack_standin::{
    block_action_form, form_encode, now_timestamp, post_signed, post_signed_with, sign,
    SlackStandin,
};

/// Whether the renderer produces Block Kit for cards (the placeholder renders text only);
/// when it does, every posted card must carry its blocks.
fn cards_have_blocks() -> bool {
    render::message(&Reply::card(Card::new("probe", Style::Info)))
        .blocks
        .is_some_and(|b| !b.is_empty())
}

/// The first message posted in `channel`: (ts, body).
fn first_message(standin: &SlackStandin, channel: &str) -> Option<(String, Value)> {
    standin.messages_in(channel).into_iter().next()
}

/// Checks the card copies posted for a new request and returns the request id and the ts of
/// the card in the approvals channel.
async fn check_request_cards(
    standin: &SlackStandin,
    run: &Running,
    origin: &str,
) -> (String, String) {
    eventually(
        "the card in the command's channel and in C0APPROVALS",
        WAIT,
        || {
            first_message(standin, origin).is_some()
                && first_message(standin, "C0APPROVALS").is_some()
        },
    )
    .await;
    let reqs = run.requests().await;
    assert_eq!(reqs.len(), 1, "one request");
    let id = reqs[0].id.clone();
    assert_eq!(reqs[0].state, "pending");
    for channel in [origin, "C0APPROVALS"] {
        let (_, body) = first_message(standin, channel).unwrap();
        let text = text_of(&body);
        assert!(!text.is_empty(), "a text fallback: {body}");
        if cards_have_blocks() {
            assert!(
                body["blocks"].as_array().is_some_and(|b| !b.is_empty()),
                "blocks on the card: {body}"
            );
        }
    }
    let posts = standin.calls_to("chat.postMessage");
    assert!(posts
        .iter()
        .all(|c| c.auth.as_deref() == Some("xoxb-standin-bot")));
    let (ts, _) = first_message(standin, "C0APPROVALS").unwrap();
    (id, ts)
}

/// Alice's click on her own request was refused: answered only to her through the click's
/// `response_url` (hook `click-alice`), and no vote stored. Returns that answer.
async fn check_self_vote_refused(standin: &SlackStandin, run: &Running, id: &str) -> Value {
    let hook = response_to(standin, "click-alice").await;
    assert_eq!(hook.body["response_type"], "ephemeral", "{:?}", hook.body);
    assert!(
        text_of(&hook.body).contains("Vote not counted"),
        "{:?}",
        hook.body
    );
    assert!(run.core.store.votes(id).await.unwrap().is_empty());
    hook.body
}

/// After the approval: the card in C0APPROVALS is updated in place until it shows succeeded,
/// and the audit channel carries the audit trail in order.
async fn check_success_and_audit(standin: &SlackStandin, run: &Running, card_ts: &str) {
    eventually("the card shows succeeded", WAIT, || {
        standin
            .message("C0APPROVALS", card_ts)
            .is_some_and(|b| text_of(&b).contains("succeeded"))
    })
    .await;
    let updates = standin.calls_to("chat.update");
    assert!(
        updates
            .iter()
            .any(|c| c.body["channel"] == "C0APPROVALS" && c.body["ts"] == card_ts),
        "chat.update of the same ts"
    );
    // Still one card in the approvals channel: edited, never reposted.
    assert_eq!(standin.messages_in("C0APPROVALS").len(), 1);

    let records = run.audit().await;
    let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    assert!(actions.contains(&"request.created"), "{actions:?}");
    assert!(actions.contains(&"vote.refused"), "{actions:?}");
    eventually("every audit line in C0AUDIT", WAIT, || {
        audit_lines(standin).len() > records.len()
    })
    .await;
    let lines = audit_lines(standin);
    assert!(lines[0].starts_with("audit head seq="), "{lines:?}");
    for (i, rec) in records.iter().enumerate() {
        assert_eq!(lines[i + 1], rec.render(), "audit line {i} in order");
    }
}

#[test]
fn a_missing_token_is_an_error_naming_its_variable() {
    let mut s = dualkey::config::SlackSettings {
        enabled: true,
        bot_token_env: "DK_SLACK_MISSING_BOT_TOKEN".into(),
        ..Default::default()
    };
    let err = SlackAdapter::from_settings(&s).err().expect("no bot token");
    assert!(
        format!("{err:#}").contains("DK_SLACK_MISSING_BOT_TOKEN"),
        "{err:#}"
    );
    std::env::set_var("DK_SLACK_PRESENT_BOT_TOKEN", "xoxb-1");
    s.bot_token_env = "DK_SLACK_PRESENT_BOT_TOKEN".into();
    s.app_token_env = "DK_SLACK_MISSING_APP_TOKEN".into();
    let err = SlackAdapter::from_settings(&s)
        .err()
        .expect("socket mode needs the app token");
    assert!(
        format!("{err:#}").contains("DK_SLACK_MISSING_APP_TOKEN"),
        "{err:#}"
    );
    s.mode = "http".into();
    s.signing_secret_env = "DK_SLACK_MISSING_SIGNING".into();
    let err = SlackAdapter::from_settings(&s)
        .err()
        .expect("http mode needs the secret");
    assert!(
        format!("{err:#}").contains("DK_SLACK_MISSING_SIGNING"),
        "{err:#}"
    );
    std::env::set_var("DK_SLACK_PRESENT_SIGNING", "s3cret");
    s.signing_secret_env = "DK_SLACK_PRESENT_SIGNING".into();
    assert!(SlackAdapter::from_settings(&s).is_ok());
}

#[tokio::test]
async fn http_mode_refuses_unsigned_forged_and_stale_requests_and_stores_nothing() {
    let standin = SlackStandin::start().await;
    let run = start(&standin, "http", "REFUSE", |t| t).await;
    let url = run.commands_url();
    let audit_before = run.audit().await.len();
    let body = form_encode(&db_command(&standin, "U0ALICE", "app stop", "11.22.33"));

    // Wrong secret.
    let r = post_signed(&url, "not-the-secret", &body, FORM).await;
    assert_eq!(r.status(), 401);
    // Right timestamp, signature over another body.
    let now = now_timestamp();
    let r = post_signed_with(&url, &body, FORM, &now, &sign(SECRET, &now, "token=x")).await;
    assert_eq!(r.status(), 401);
    // No signature headers at all.
    let r = reqwest::Client::new()
        .post(&url)
        .header("content-type", FORM)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Correctly signed, six minutes old.
    let old = (now.parse::<i64>().unwrap() - 360).to_string();
    let r = post_signed_with(&url, &body, FORM, &old, &sign(SECRET, &old, &body)).await;
    assert_eq!(r.status(), 401);
    // A forged click.
    let forged = click(&standin, "approve:r1", "U0BOB", "1.1", "2.2", "i");
    let r = post_signed(
        &run.interactions_url(),
        "nope",
        &block_action_form(&forged),
        FORM,
    )
    .await;
    assert_eq!(r.status(), 401);
    // Signed but malformed: 400.
    let r = post_signed(&url, SECRET, "text=only", FORM).await;
    assert_eq!(r.status(), 400);
    let r = post_signed(&run.interactions_url(), SECRET, "payload=%7Bnot-json", FORM).await;
    assert_eq!(r.status(), 400);
    // Too large: 413.
    let big = form_encode(&[("text".to_string(), "x".repeat(70 * 1024))]);
    let r = post_signed(&url, SECRET, &big, FORM).await;
    assert_eq!(r.status(), 413);

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(run.requests().await.is_empty(), "nothing stored");
    assert_eq!(run.audit().await.len(), audit_before, "no audit event");
    assert!(standin.response_url_calls().is_empty());
    // The five refusals are counted in /metrics (the counter is per process: other tests in
    // the same process may add to it, never take from it).
    let metrics = reqwest::get(format!("{}/metrics", run.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dualkey_signature_failures_total{platform=\"slack\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no slack signature counter in {metrics}"));
    assert!(refused >= 5, "{refused} refusals counted");
    run.stop().await;
}

#[tokio::test]
async fn http_mode_command_card_refused_self_vote_approval_and_audit() {
    let standin = SlackStandin::start().await;
    let run = start(&standin, "http", "FLOW", |t| t).await;

    let (ack, took) = run.command("U0ALICE", "app stop", "100.200.cmd").await;
    assert_eq!(
        ack,
        json!({"response_type": "ephemeral", "text": "On it: `/db app stop`"})
    );
    assert!(took < Duration::from_secs(2), "ack took {took:?}");

    let (id, card_ts) = check_request_cards(&standin, &run, "C0OPS").await;

    // Alice clicks approve on her own request: refused through the response_url, no vote.
    let approve = format!("approve:{id}");
    let vote = |user, action_ts, hook| click(&standin, &approve, user, &card_ts, action_ts, hook);
    let alice = vote("U0ALICE", "1700000100.000001", "click-alice");
    let (ack, _) = run.click_ack(&alice).await;
    assert_eq!(ack, "");
    let answer = check_self_vote_refused(&standin, &run, &id).await;
    assert_eq!(answer["replace_original"], false);

    // Bob approves.
    let bob = vote("U0BOB", "1700000101.000001", "click-bob");
    run.click_payload(&bob).await;
    check_success_and_audit(&standin, &run, &card_ts).await;
    assert_eq!(run.core.store.votes(&id).await.unwrap().len(), 1);
    run.stop().await;
}

#[tokio::test]
async fn socket_mode_command_redelivery_refusal_approval_and_audit() {
    let standin = SlackStandin::start().await;
    let run = start(&standin, "socket", "SOCKET", |t| t).await;
    assert!(
        standin.wait_connections(1, WAIT).await,
        "dualkey connected over Socket Mode"
    );
    assert_eq!(
        standin.calls_to("apps.connections.open")[0].auth.as_deref(),
        Some("xapp-1-standin")
    );

    let cmd = standin
        .send_slash_command(&db_command(&standin, "U0ALICE", "app stop", "500.600.cmd"))
        .await;
    let (ack, took) = standin
        .wait_ack(&cmd, WAIT)
        .await
        .expect("the command was acked");
    assert_eq!(
        ack["payload"],
        json!({"response_type": "ephemeral", "text": "On it: `/db app stop`"})
    );
    assert!(took < Duration::from_secs(2), "ack took {took:?}");

    let (id, card_ts) = check_request_cards(&standin, &run, "C0OPS").await;

    // Slack redelivers the envelope: acked as already received, no second request.
    standin.redeliver(&cmd).await;
    assert!(standin.wait_acks(&cmd, 2, WAIT).await, "redelivery acked");
    let acks: Vec<Value> = standin
        .acks()
        .into_iter()
        .filter(|a| a.envelope_id == cmd)
        .map(|a| a.frame)
        .collect();
    let again = acks[1]["payload"]["text"].as_str().unwrap_or_default();
    assert!(
        again.starts_with("Already received") && again.contains(&id),
        "{again}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(run.requests().await.len(), 1, "no second request");

    // Alice's own click is refused through the response_url.
    let approve = format!("approve:{id}");
    let vote = |user, action_ts, hook| click(&standin, &approve, user, &card_ts, action_ts, hook);
    let alice = vote("U0ALICE", "1700000200.000001", "click-alice");
    let env = standin.send_block_action(alice).await;
    let (ack, _) = standin.wait_ack(&env, WAIT).await.expect("click acked");
    assert_eq!(ack, json!({"envelope_id": env}));
    check_self_vote_refused(&standin, &run, &id).await;

    // Bob approves; a redelivery of his click counts once.
    let bob = vote("U0BOB", "1700000201.000001", "click-bob");
    let env = standin.send_block_action(bob).await;
    standin.redeliver(&env).await;
    assert!(standin.wait_acks(&env, 2, WAIT).await);
    check_success_and_audit(&standin, &run, &card_ts).await;
    assert_eq!(run.core.store.votes(&id).await.unwrap().len(), 1);
    run.stop().await;
}

#[tokio::test]
async fn web_api_and_response_url_failures_map_to_delivery_errors() {
    use dualkey::adapters::{DeliveryError, Outbound};
    use dualkey::core::event::{Actor, ChannelRef, EventKind, InboundEvent, Platform};

    let standin = SlackStandin::start().await;
    std::env::set_var("DK_SLACK_MAP_BOT", "xoxb-standin-bot");
    std::env::set_var("DK_SLACK_MAP_SIGN", SECRET);
    let settings = dualkey::config::SlackSettings {
        enabled: true,
        mode: "http".into(),
        // A trailing slash is tolerated.
        api_base_url: format!("{}/", standin.api_url()),
        bot_token_env: "DK_SLACK_MAP_BOT".into(),
        signing_secret_env: "DK_SLACK_MAP_SIGN".into(),
        ..Default::default()
    };
    let slack = SlackAdapter::from_settings(&settings).unwrap();
    let reply = Reply::public("hello");

    let ts = slack.post("C1", &reply).await.unwrap();
    assert_eq!(standin.messages_in("C1")[0].0, ts);
    assert_eq!(standin.messages_in("C1")[0].1["text"], "hello");
    slack
        .edit("C1", &ts, &Reply::public("edited"))
        .await
        .unwrap();
    assert_eq!(standin.message("C1", &ts).unwrap()["text"], "edited");
    slack
        .ephemeral("C1", "U0BOB", &Reply::ephemeral("psst"))
        .await
        .unwrap();
    let eph = standin.calls_to("chat.postEphemeral");
    assert_eq!(eph[0].body["user"], "U0BOB");
    assert_eq!(eph[0].body["text"], "psst");

    standin.fail_next(
        "chat.postMessage",
        1,
        crate::slack_standin::Failure::RateLimited {
            retry_after_secs: 3,
        },
    );
    match slack.post("C1", &reply).await {
        Err(DeliveryError::RateLimited(d)) => assert_eq!(d, Duration::from_secs(3)),
        other => panic!("expected RateLimited(3s), got {other:?}"),
    }
    for failure in [
        crate::slack_standin::Failure::ServerError,
        crate::slack_standin::Failure::Unavailable,
        crate::slack_standin::Failure::ApiError("internal_error".into()),
    ] {
        standin.fail_next("chat.postMessage", 1, failure.clone());
        match slack.post("C1", &reply).await {
            Err(DeliveryError::Transient(_)) => {}
            other => panic!("{failure:?}: expected Transient, got {other:?}"),
        }
    }
    standin.fail_next(
        "chat.postMessage",
        1,
        crate::slack_standin::Failure::ApiError("channel_not_found".into()),
    );
    match slack.post("C1", &reply).await {
        Err(DeliveryError::Permanent(m)) => assert!(m.contains("channel_not_found"), "{m}"),
        other => panic!("expected Permanent, got {other:?}"),
    }
    match slack.edit("C1", "1600000000.000001", &reply).await {
        Err(DeliveryError::Permanent(m)) => assert!(m.contains("message_not_found"), "{m}"),
        other => panic!("expected Permanent, got {other:?}"),
    }

    // respond(): through the response_url when the event has one, else the Web API.
    let mut ev = InboundEvent::new(
        "cmd:1".into(),
        Actor {
            platform: Platform::Slack,
            account: "U0ALICE".into(),
            display: "U0ALICE".into(),
        },
        ChannelRef {
            platform: Platform::Slack,
            id: "C2".into(),
        },
        EventKind::Command {
            text: "status".into(),
        },
    );
    slack
        .respond(&ev, &Reply::ephemeral("only you"))
        .await
        .unwrap();
    assert_eq!(
        standin.calls_to("chat.postEphemeral")[1].body["user"],
        "U0ALICE"
    );
    ev.reply_to = Some(standin.response_url("r1"));
    slack
        .respond(&ev, &Reply::public("everyone"))
        .await
        .unwrap();
    let hooks = standin.response_url_calls();
    assert_eq!(hooks[0].name, "r1");
    assert_eq!(hooks[0].body["text"], "everyone");
    assert_eq!(hooks[0].body["response_type"], "in_channel");
    assert_eq!(hooks[0].body["replace_original"], false);
    standin.fail_next(
        "response_url",
        1,
        crate::slack_standin::Failure::ServerError,
    );
    assert!(matches!(
        slack.respond(&ev, &reply).await,
        Err(DeliveryError::Transient(_))
    ));

    // Slack unreachable: transient.
    standin.shutdown().await;
    drop(standin);
    match slack.post("C1", &reply).await {
        Err(DeliveryError::Transient(_)) => {}
        other => panic!("expected Transient when Slack is unreachable, got {other:?}"),
    }
}

#[test]
fn an_api_url_that_is_neither_https_nor_http_is_refused() {
    std::env::set_var("DK_SLACK_URL_BOT", "xoxb-1");
    std::env::set_var("DK_SLACK_URL_APP", "xapp-1");
    let s = dualkey::config::SlackSettings {
        enabled: true,
        api_base_url: "ftp://slack.example/api".into(),
        bot_token_env: "DK_SLACK_URL_BOT".into(),
        app_token_env: "DK_SLACK_URL_APP".into(),
        ..Default::default()
    };
    let err = SlackAdapter::from_settings(&s).err().expect("refused");
    assert!(format!("{err:#}").contains("https://"), "{err:#}");
}

#[tokio::test]
async fn socket_mode_retries_when_the_first_connection_attempt_fails() {
    let standin = SlackStandin::start().await;
    standin.fail_next(
        "apps.connections.open",
        1,
        crate::slack_standin::Failure::ServerError,
    );
    let run = start(&standin, "socket", "RETRY", |t| t).await;
    assert!(
        standin.wait_connections(1, Duration::from_secs(10)).await,
        "connected after a retry"
    );
    let opens = standin.calls_to("apps.connections.open");
    assert!(opens.len() >= 2, "{} attempts", opens.len());
    assert!(opens[0].failure.is_some());
    // And it works.
    let cmd = standin
        .send_slash_command(&db_command(&standin, "U0ALICE", "help", "9.9.9"))
        .await;
    let (ack, _) = standin.wait_ack(&cmd, WAIT).await.expect("acked");
    assert_eq!(ack["payload"]["text"], "On it: `/db help`");
    run.stop().await;
}

#[tokio::test]
async fn when_the_store_cannot_record_a_command_the_person_is_told_and_nothing_runs() {
    use sqlx::Connection;
    let standin = SlackStandin::start().await;
    let run = start(&standin, "http", "STOREDOWN", |t| t).await;
    // Break the store's dedupe table: recording a delivery now fails.
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", run.db_path().display()))
            .await
            .unwrap();
    sqlx::query("DROP TABLE dedupe")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let (ack, _) = tokio::time::timeout(
        Duration::from_secs(5),
        run.command("U0ALICE", "app stop", "7.7.7"),
    )
    .await
    .expect("acked without hanging");
    assert_eq!(ack["response_type"], "ephemeral");
    // The ack needs no I/O; the failure to record is told through the response URL.
    assert_eq!(text_of(&ack), "On it: `/db app stop`", "{ack}");
    let told = response_to(&standin, "7.7.7").await;
    assert_eq!(told.body["response_type"], "ephemeral");
    assert!(
        text_of(&told.body).starts_with("dualkey could not record this request"),
        "{:?}",
        told.body
    );
    assert!(run.requests().await.is_empty());
    assert!(standin.messages_in("C0OPS").is_empty());
    run.stop().await;
}
