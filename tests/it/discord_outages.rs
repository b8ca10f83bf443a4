//! Discord end to end under failure: its REST API answering 429 (per route and global) and
//! 500s while audit lines and card edits are delivered, and the gateway connection dropped
//! (resumed, or re-identified) while interactions are in flight.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::discord_adapter::{
    answer_to, approvals_card, audit_lines, click, eventually, nth_request, slash, start, text_of,
    Running, Setup, ALICE, APPROVALS, AUDIT, BOB, WAIT,
};
use crate::discord_standin::{DiscordStandin, Failure};

/// The bot's own posts in the audit channel have arrived, one per audit record plus the chain
/// head, each exactly once and in order.
async fn check_audit_once_in_order(standin: &DiscordStandin, run: &Running) {
    let records = run.audit().await;
    eventually("every audit line in the audit channel", WAIT, || {
        audit_lines(standin).len() > records.len()
    })
    .await;
    let lines = audit_lines(standin);
    assert!(lines[0].starts_with("audit head seq="), "{lines:?}");
    assert_eq!(lines.len(), records.len() + 1, "each line once: {lines:#?}");
    for (i, rec) in records.iter().enumerate() {
        assert_eq!(lines[i + 1], rec.render(), "audit line {i} in order");
    }
}

/// Alice asks for `app stop` (interaction `id`) in HTTP mode; returns the request id.
async fn request_app_stop(standin: &DiscordStandin, run: &Running, id: u64) -> String {
    let (status, ack, took) = run
        .post_interaction(
            standin,
            &slash(id, ALICE, "app", &[("action", json!("stop"))]),
        )
        .await;
    assert_eq!(
        (status, &ack),
        (200, &json!({"type": 5, "data": {"flags": 64}}))
    );
    assert!(took < Duration::from_secs(2), "acked in {took:?}");
    nth_request(run, 1).await.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_discord_outage_audit_lines_arrive_once_in_order_and_the_card_ends_right() {
    let standin = DiscordStandin::start().await;
    // The audit channel answers 429 (retry_after 0.5 s), then two 500s; card edits too.
    let audit_route = format!("POST /channels/{AUDIT}/messages");
    standin.fail_next(&audit_route, 1, Failure::RateLimited { retry_after: 0.5 });
    standin.fail_next(&audit_route, 2, Failure::ServerError);
    standin.fail_next(
        "PATCH /channels/",
        1,
        Failure::RateLimited { retry_after: 0.3 },
    );
    standin.fail_next("PATCH /channels/", 1, Failure::ServerError);
    let run = start(Setup {
        standin: &standin,
        mode: "http",
        tag: "OUTAGE",
        with_db: false,
        extra: String::new(),
    })
    .await;
    let id = request_app_stop(&standin, &run, 1_700_000_000_000_000_001).await;
    let (card_id, card) = approvals_card(&standin).await;
    let (status, ack, _) = run
        .post_interaction(
            &standin,
            &click(
                1_700_000_000_000_000_002,
                BOB,
                &format!("approve:{id}"),
                &card,
            ),
        )
        .await;
    assert_eq!((status, ack), (200, json!({"type": 6})));
    eventually("the app stop ran", WAIT, || run.marker().contains("stop")).await;
    eventually("the card shows succeeded", WAIT, || {
        standin
            .message(APPROVALS, card_id)
            .is_some_and(|m| text_of(&m).contains("[succeeded]"))
    })
    .await;
    check_audit_once_in_order(&standin, &run).await;

    // The outage happened as programmed, and the retry honoured retry_after.
    let audit_calls = standin.calls_to(&format!("/channels/{AUDIT}/messages"));
    let statuses: Vec<u16> = audit_calls.iter().take(4).map(|c| c.status).collect();
    assert_eq!(statuses, [429, 500, 500, 200], "{statuses:?}");
    let waited = audit_calls[1].at - audit_calls[0].at;
    assert!(
        waited >= Duration::from_millis(450),
        "retried after {waited:?}"
    );
    // (The first card edits, in whichever channel, were the ones refused.)
    let edit_statuses: Vec<u16> = standin
        .calls()
        .iter()
        .filter(|c| c.method == "PATCH" && c.path.starts_with("/channels/"))
        .map(|c| c.status)
        .collect();
    assert!(edit_statuses.contains(&500), "{edit_statuses:?}");
    assert!(edit_statuses.contains(&429), "{edit_statuses:?}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_429_holds_back_every_discord_channel_until_it_has_passed() {
    let standin = DiscordStandin::start().await;
    // The first channel post of all (the audit head, at start) gets a global 429 of 1 s.
    standin.fail_next(
        "POST /channels/",
        1,
        Failure::GlobalRateLimited { retry_after: 1.0 },
    );
    let run = start(Setup {
        standin: &standin,
        mode: "http",
        tag: "GLOBAL",
        with_db: false,
        extra: String::new(),
    })
    .await;
    eventually("the global 429", WAIT, || {
        standin
            .calls_to("/channels/")
            .iter()
            .any(|c| c.status == 429)
    })
    .await;
    // A request right away: its cards go to two other channels.
    let cmd_id = 1_700_000_000_000_000_011;
    request_app_stop(&standin, &run, cmd_id).await;
    // The answer to the person is not held back (interaction webhooks have no global limit).
    let (method, _) = answer_to(&standin, cmd_id).await;
    assert_eq!(method, "PATCH");
    approvals_card(&standin).await;
    eventually("the audit head", WAIT, || {
        !standin.messages_in(AUDIT).is_empty()
    })
    .await;

    let calls = standin.calls_to("/channels/");
    let limited = calls.iter().find(|c| c.status == 429).unwrap().clone();
    let later: Vec<_> = calls.iter().filter(|c| c.at > limited.at).collect();
    assert!(
        later
            .iter()
            .any(|c| c.path.starts_with(&format!("/channels/{APPROVALS}"))),
        "the card was posted after the hold"
    );
    for c in &later {
        let after = c.at - limited.at;
        assert!(
            after >= Duration::from_millis(950),
            "{} {} went out {after:?} after a global 429 of 1 s",
            c.method,
            c.path
        );
    }
    assert_eq!(
        calls.iter().filter(|c| c.status == 429).count(),
        1,
        "nothing was sent into the limit again"
    );
    check_audit_once_in_order(&standin, &run).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_gateway_is_resumed_or_reidentified_and_no_interaction_is_handled_twice() {
    let standin = DiscordStandin::start().await;
    let run = start(Setup {
        standin: &standin,
        mode: "gateway",
        tag: "GWLOSS",
        with_db: false,
        extra: String::new(),
    })
    .await;
    assert!(standin.wait_connections(1, WAIT).await, "connected");

    // Alice asks.
    let cmd = slash(
        1_700_000_000_000_000_021,
        ALICE,
        "app",
        &[("action", json!("stop"))],
    );
    standin.send_interaction(cmd.clone()).await;
    let id = nth_request(&run, 1).await.id;
    let (_, card) = approvals_card(&standin).await;

    // The connection drops (resumable); Bob's click happens meanwhile and is replayed on
    // RESUME.
    let started = Instant::now();
    assert!(standin.disconnect());
    let bob = click(
        1_700_000_000_000_000_022,
        BOB,
        &format!("approve:{id}"),
        &card,
    );
    standin.queue_interaction(bob.clone());
    eventually("a RESUME", WAIT, || !standin.resumes().is_empty()).await;
    assert!(standin.resumes()[0].accepted, "{:?}", standin.resumes());
    assert!(standin.wait_connections(2, WAIT).await, "reconnected");
    let (_, answer) = answer_to(&standin, 1_700_000_000_000_000_022).await;
    assert!(text_of(&answer).contains("Approved"), "{answer}");
    eventually("the app stop ran", WAIT, || run.marker().contains("stop")).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "resumed in time"
    );

    // The same click delivered again on the resumed connection: not acked, not handled again.
    standin.send_interaction(bob.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        standin
            .interaction_responses(1_700_000_000_000_000_022)
            .len(),
        1,
        "acked once"
    );
    assert_eq!(run.core.store.votes(&id).await.unwrap().len(), 1);

    // The session is invalidated: dualkey identifies again; the old command delivered once
    // more is still not handled twice.
    let identifies = standin.identifies().len();
    assert!(standin.invalid_session(false));
    eventually("a new IDENTIFY", WAIT, || {
        standin.identifies().len() > identifies
    })
    .await;
    assert!(standin.wait_connections(3, WAIT).await, "reconnected again");
    standin.send_interaction(cmd).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(run.requests().await.len(), 1, "no second request");
    assert_eq!(
        standin
            .interaction_responses(1_700_000_000_000_000_021)
            .len(),
        1
    );
    assert_eq!(run.marker().matches("stop").count(), 1, "ran once");
    // Still working: a new command after the re-identify is handled.
    let status = slash(1_700_000_000_000_000_023, BOB, "approvals", &[]);
    standin.send_interaction(status).await;
    let (_, answer) = answer_to(&standin, 1_700_000_000_000_000_023).await;
    assert!(!text_of(&answer).is_empty());
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_gateway_lookup_fails_dualkey_retries_it_and_never_falls_back_to_discord() {
    let standin = DiscordStandin::start().await;
    standin.fail_next("GET /gateway", 1, Failure::ServerError);
    let run = start(Setup {
        standin: &standin,
        mode: "gateway",
        tag: "GWLOOKUP",
        with_db: false,
        extra: String::new(),
    })
    .await;
    assert!(
        standin.wait_connections(1, WAIT).await,
        "connected after the retry"
    );
    let lookups: Vec<u16> = standin
        .calls_to("/gateway")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(lookups.first(), Some(&500), "{lookups:?}");
    assert!(lookups.contains(&200), "{lookups:?}");
    // And it works: a command is acked and answered.
    let id = 1_700_000_000_000_000_031;
    standin
        .send_interaction(slash(id, BOB, "approvals", &[]))
        .await;
    answer_to(&standin, id).await;
    run.stop().await;
}
