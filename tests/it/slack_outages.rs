//! Slack end to end under stress: the real `Application` with `[slack]` pointed at the stand-in
//! Slack, driven over real HTTP (signed slash commands and clicks) and the Socket Mode websocket,
//! while Slack's Web API fails (429, then 500s), while a slow operation runs, and while planning
//! hashes a large backup. Slack wants every ack within 3 s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::slack_harness::{
    audit_lines, click, db_command, eventually, nth_request, response_to, start, text_of, WAIT,
};
use crate::slack_standin::{form_encode, Failure, SlackStandin};

/// Slack's deadline for acking a command or a click.
const ACK_DEADLINE: Duration = Duration::from_secs(3);

/// Fails the test unless `took` is within Slack's ack deadline.
fn assert_in_time(what: &str, took: Duration) {
    assert!(
        took < ACK_DEADLINE,
        "{what} was acked after {took:?} (Slack gives up after 3 s)"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Outages

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_slack_outage_audit_lines_arrive_once_in_order_and_stacked_card_edits_collapse() {
    let t0 = Instant::now();
    let standin = SlackStandin::start().await;
    // Slack is down from the start: a 429 first, then three 500s, for posts and for edits.
    for method in ["chat.postMessage", "chat.update"] {
        standin.fail_next(
            method,
            1,
            Failure::RateLimited {
                retry_after_secs: 1,
            },
        );
        standin.fail_next(method, 3, Failure::ServerError);
    }
    let run = start(&standin, "http", "OUTAGE", |t| t).await;

    // A request, refused once, approved and run, all while Slack fails.
    let (ack, took) = run.command("U0ALICE", "app stop", "10.20.out").await;
    assert_in_time("the command", took);
    assert_eq!(ack["text"], "On it: `/db app stop`");
    let id = nth_request(&run, 1).await.id;
    let card_key = format!("request:{id}");
    let self_vote = click(
        &standin,
        &format!("approve:{id}"),
        "U0ALICE",
        "1.1",
        "1700000300.000001",
        "alice",
    );
    assert_in_time("Alice's click", run.click_payload(&self_vote).await);
    // Alice's vote is refused.
    response_to(&standin, "alice").await;
    let approve = click(
        &standin,
        &format!("approve:{id}"),
        "U0BOB",
        "1.1",
        "1700000301.000001",
        "bob",
    );
    assert_in_time("Bob's click", run.click_payload(&approve).await);
    run.wait_marker("stop", "the operation ran").await;
    let card_posted_before_the_end = !standin.messages_in("C0APPROVALS").is_empty();

    // Slack recovers: the card ends showing the final state, edited in place.
    eventually("the card shows succeeded", Duration::from_secs(25), || {
        standin
            .messages_in("C0APPROVALS")
            .first()
            .is_some_and(|(_, b)| text_of(b).contains("succeeded"))
    })
    .await;
    let approvals = standin.messages_in("C0APPROVALS");
    assert_eq!(approvals.len(), 1, "one card, edited, never reposted");
    let card_ts = approvals[0].0.clone();

    // Every audit line exactly once, in store order (after the chain head posted at start).
    let deadline = Instant::now() + Duration::from_secs(25);
    let records = loop {
        let records = run.audit().await;
        let pending = run
            .outbox()
            .await
            .iter()
            .filter(|r| r.delivered_at.is_none())
            .count();
        if pending == 0 && audit_lines(&standin).len() > records.len() {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox did not drain: {pending} rows left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    assert!(actions.contains(&"vote.refused"), "{actions:?}");
    assert!(actions.len() >= 5, "{actions:?}");
    let lines = audit_lines(&standin);
    assert!(lines[0].starts_with("audit head seq="), "{lines:?}");
    let rendered: Vec<String> = records.iter().map(|r| r.render()).collect();
    assert_eq!(lines[1..], rendered[..], "audit lines once each, in order");

    // Every programmed failure was met (the outage really happened) and retried.
    for method in ["chat.postMessage", "chat.update"] {
        let failed: Vec<Option<Failure>> = standin
            .calls_to(method)
            .into_iter()
            .filter_map(|c| c.failure)
            .map(Some)
            .collect();
        assert_eq!(failed.len(), 4, "{method}: {failed:?}");
    }
    // Retry-After and the backoff were honoured: after a failure, its channel was next tried
    // no sooner than a second later.
    let calls: Vec<_> = standin
        .calls()
        .into_iter()
        .filter(|c| c.method.starts_with("chat."))
        .collect();
    for (i, c) in calls.iter().enumerate() {
        if c.failure.is_none() {
            continue;
        }
        if let Some(next) = calls[i + 1..]
            .iter()
            .find(|n| n.body["channel"] == c.body["channel"])
        {
            let gap = next.at.duration_since(c.at);
            assert!(
                gap >= Duration::from_millis(900),
                "{} in {} retried after {gap:?} ({:?})",
                c.method,
                c.body["channel"],
                c.failure
            );
        }
    }

    // Stacked edits collapsed: fewer card updates reached Slack than were queued.
    let queued_edits = run
        .outbox()
        .await
        .into_iter()
        .filter(|r| {
            r.op == "edit"
                && r.channel == "C0APPROVALS"
                && r.card_key.as_deref() == Some(card_key.as_str())
        })
        .count();
    let updates = standin
        .calls_to("chat.update")
        .into_iter()
        .filter(|c| {
            c.failure.is_none() && c.body["channel"] == "C0APPROVALS" && c.body["ts"] == card_ts
        })
        .count();
    assert!(updates >= 1, "the card was edited");
    assert!(
        updates < queued_edits,
        "{updates} card updates for {queued_edits} queued edits: nothing collapsed"
    );
    eprintln!(
        "outage test: {queued_edits} edits queued, {updates} sent; {} audit lines; card posted \
         before the run ended: {card_posted_before_the_end}; {:?}",
        rendered.len(),
        t0.elapsed()
    );
    run.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Ack deadlines

/// Production's `app_stop` takes 6 s.
fn slow_stop(t: String) -> String {
    t.replacen("\"echo stop >> '", "\"sleep 6; echo stop >> '", 1)
}

/// While a 6-second `app stop` runs, commands and clicks over HTTP are each acked within 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_slow_operation_runs_every_http_command_and_click_is_acked_within_3s() {
    let t0 = Instant::now();
    let standin = SlackStandin::start().await;
    let run = start(&standin, "http", "SLOWHTTP", slow_stop).await;

    let (_, took) = run.command("U0ALICE", "app stop", "20.1.slow").await;
    assert_in_time("app stop", took);
    let id = nth_request(&run, 1).await.id;
    let approve = click(
        &standin,
        &format!("approve:{id}"),
        "U0BOB",
        "1.1",
        "1700000400.000001",
        "bob",
    );
    assert_in_time("Bob's approval", run.click_payload(&approve).await);
    run.wait_busy().await;
    let busy_since = Instant::now();

    let mut acks = Vec::new();
    for (i, text) in [
        "status",
        "approvals",
        "app stop staging",
        "status production",
    ]
    .iter()
    .enumerate()
    {
        let (ack, took) = run.command("U0ALICE", text, &format!("20.2.{i}")).await;
        assert_eq!(ack["text"], format!("On it: `/db {text}`"));
        acks.push((text.to_string(), took));
    }
    let staging = nth_request(&run, 2).await.id;
    let clicks = [
        (
            "own staging request",
            format!("approve:{staging}"),
            "U0ALICE",
        ),
        (
            "the running request again",
            format!("approve:{id}"),
            "U0BOB",
        ),
        ("deny staging", format!("deny:{staging}"), "U0BOB"),
        ("unknown button", "frobnicate:x".to_string(), "U0BOB"),
    ];
    for (i, (what, action, user)) in clicks.iter().enumerate() {
        let payload = click(
            &standin,
            action,
            user,
            "1.1",
            &format!("1700000401.00000{i}"),
            "c",
        );
        acks.push((what.to_string(), run.click_payload(&payload).await));
    }
    for (what, took) in &acks {
        assert_in_time(what, *took);
    }
    // All of that happened while the operation was still running.
    assert!(
        !dualkey::services::worker::Worker::idle(&run.core)
            .await
            .unwrap()
            && !run.marker().contains("stop"),
        "the slow operation had already finished ({:?} after it started)",
        busy_since.elapsed()
    );
    // The clicks did their work meanwhile (not merely acked): Alice's own vote was refused.
    eventually(
        "Alice's vote on her staging request is refused",
        WAIT,
        || {
            standin
                .response_url_calls()
                .iter()
                .any(|h| h.name == "c" && text_of(&h.body).contains("Vote not counted"))
        },
    )
    .await;
    run.wait_marker("stop", "the slow operation finishes").await;
    eprintln!(
        "slow op over HTTP: acks {:?}; test {:?}",
        acks.iter().map(|(_, d)| *d).max(),
        t0.elapsed()
    );
    run.stop().await;
}

/// The same over Socket Mode: each envelope is acked on the websocket within 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_slow_operation_runs_every_socket_mode_command_and_click_is_acked_within_3s() {
    let t0 = Instant::now();
    let standin = SlackStandin::start().await;
    let run = start(&standin, "socket", "SLOWSOCK", slow_stop).await;
    assert!(standin.wait_connections(1, WAIT).await, "connected");

    let socket_command = |text: &str, trigger: &str| db_command(&standin, "U0ALICE", text, trigger);
    let env = standin
        .send_slash_command(&socket_command("app stop", "30.1.slow"))
        .await;
    let (_, took) = standin.wait_ack(&env, WAIT).await.expect("acked");
    assert_in_time("app stop", took);
    let id = nth_request(&run, 1).await.id;
    let env = standin
        .send_block_action(click(
            &standin,
            &format!("approve:{id}"),
            "U0BOB",
            "1.1",
            "1700000500.000001",
            "bob",
        ))
        .await;
    let (_, took) = standin.wait_ack(&env, WAIT).await.expect("acked");
    assert_in_time("Bob's approval", took);
    run.wait_busy().await;

    // A burst: every envelope sent before any ack is awaited.
    let mut sent = Vec::new();
    for (i, text) in ["status", "approvals", "app stop staging"]
        .iter()
        .enumerate()
    {
        let env = standin
            .send_slash_command(&socket_command(text, &format!("30.2.{i}")))
            .await;
        sent.push((text.to_string(), env));
    }
    for (i, action) in [format!("approve:{id}"), format!("deny:{id}")]
        .iter()
        .enumerate()
    {
        let env = standin
            .send_block_action(click(
                &standin,
                action,
                "U0BOB",
                "1.1",
                &format!("1700000501.00000{i}"),
                "c",
            ))
            .await;
        sent.push((action.clone(), env));
    }
    let mut worst = Duration::ZERO;
    for (what, env) in &sent {
        let (_, took) = standin
            .wait_ack(env, WAIT)
            .await
            .unwrap_or_else(|| panic!("{what} was never acked"));
        assert_in_time(what, took);
        worst = worst.max(took);
    }
    assert!(
        !run.marker().contains("stop"),
        "the slow operation had already finished"
    );
    eventually("the staging request is recorded", WAIT, || {
        standin.messages_in("C0APPROVALS").len() >= 2
    })
    .await;
    run.wait_marker("stop", "the slow operation finishes").await;
    eprintln!(
        "slow op over Socket Mode: worst ack {worst:?}; test {:?}",
        t0.elapsed()
    );
    run.stop().await;
}

/// Writes `bytes` of `-- comment` lines to `path`, quickly.
fn write_large_sql(path: &std::path::Path, bytes: usize) {
    use std::io::Write;
    let line = b"-- a comment line that makes this plain-SQL backup large; nothing to run here\n";
    let chunk: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take(line.len() * 13_000)
        .collect();
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut written = 0;
    while written < bytes {
        f.write_all(&chunk).unwrap();
        written += chunk.len();
    }
    f.flush().unwrap();
}

/// While planning hashes a 300 MB external backup, the commands after it are acked within 3 s;
/// the restore request's card appears afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_planning_hashes_a_large_backup_commands_are_acked_within_3s() {
    let t0 = Instant::now();
    let target = crate::support::TestDb::create("slackout").await;
    let var = format!("DK_SLACKOUT_URL_{}", uuid::Uuid::new_v4().simple());
    std::env::set_var(&var, &target.url);
    let standin = SlackStandin::start().await;
    let run = start(&standin, "http", "BIGPLAN", |t| {
        t.replacen(
            "database_url_env = \"DK_TEST_UNUSED_URL\"",
            &format!("database_url_env = \"{var}\"\nbackup_dir = \"{{dir}}/backups\""),
            1,
        )
    })
    .await;
    let folder = run.dir.path().join("backups/production");
    std::fs::create_dir_all(&folder).unwrap();
    let file = folder.join("backup_pre_migration_big.sql");
    let size = 300 << 20;
    let written = Instant::now();
    write_large_sql(&file, size);
    let write_time = written.elapsed();

    let (ack, took) = run
        .command(
            "U0ALICE",
            "restore backup_pre_migration_big.sql",
            "40.1.big",
        )
        .await;
    assert_eq!(
        ack["text"],
        "On it: `/db restore backup_pre_migration_big.sql`"
    );
    let mut acks = vec![("restore".to_string(), took)];
    for (i, text) in ["status", "approvals", "backups", "app stop staging", "help"]
        .iter()
        .enumerate()
    {
        let (_, took) = run.command("U0ALICE", text, &format!("40.2.{i}")).await;
        acks.push((text.to_string(), took));
    }
    let sent_all = t0.elapsed();
    let restore_pending = !run
        .requests()
        .await
        .iter()
        .any(|r| r.kind_json.contains("backup_pre_migration_big"));
    for (what, took) in &acks {
        assert_in_time(what, *took);
    }
    let planned = Instant::now();
    eventually(
        "the restore request's card",
        Duration::from_secs(40),
        || {
            standin
                .messages_in("C0APPROVALS")
                .iter()
                .any(|(_, b)| text_of(b).contains("backup_pre_migration_big.sql"))
        },
    )
    .await;
    let card_after = planned.elapsed();
    // The other commands were not held up behind the plan: the staging request came first.
    let reqs = run.requests().await;
    let created = |what: &str| {
        reqs.iter()
            .find(|r| r.kind_json.contains(what) || r.env == what)
            .map(|r| r.created_at)
            .unwrap_or_else(|| panic!("no request for {what}: {reqs:?}"))
    };
    assert!(
        created("staging") < created("backup_pre_migration_big"),
        "the staging request waited for the restore plan"
    );
    assert!(
        restore_pending,
        "the restore was already planned when the other commands had been acked; \
         the file is too small to prove anything"
    );
    std::fs::remove_file(&file).unwrap();
    eprintln!(
        "large backup: wrote {size} bytes in {write_time:?}; acks {:?}; card {card_after:?} \
         after the last ack; test {:?} (commands sent by {sent_all:?})",
        acks.iter().map(|(_, d)| *d).collect::<Vec<_>>(),
        t0.elapsed()
    );
    run.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Dedupe over HTTP

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_command_or_click_delivered_twice_over_http_acts_once() {
    let standin = SlackStandin::start().await;
    let run = start(&standin, "http", "DEDUPE", |t| t).await;

    // The same signed slash command (same trigger_id) twice: two acks, one request; the
    // second says it was received already (its request id once the request exists).
    let body = form_encode(&db_command(&standin, "U0ALICE", "app stop", "50.1.dup"));
    let (first, took1) = run.command_body(&body).await;
    let (second, took2) = run.command_body(&body).await;
    assert_in_time("the command", took1);
    assert_in_time("its redelivery", took2);
    assert_eq!(first["text"], "On it: `/db app stop`");
    let again = second["text"].as_str().unwrap_or_default();
    assert!(
        again.starts_with("Already received `/db app stop`"),
        "{second}"
    );
    assert_eq!(second["response_type"], "ephemeral");
    let id = nth_request(&run, 1).await.id;
    eventually("the card in C0OPS", WAIT, || {
        !standin.messages_in("C0OPS").is_empty()
    })
    .await;

    // The same click (same action_ts and user) twice: one vote.
    let approve = click(
        &standin,
        &format!("approve:{id}"),
        "U0BOB",
        "1.1",
        "1700000600.000001",
        "bob",
    );
    assert_in_time("the click", run.click_payload(&approve).await);
    assert_in_time("its redelivery", run.click_payload(&approve).await);
    run.wait_marker("stop", "the operation ran").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(run.requests().await.len(), 1, "one request");
    assert_eq!(standin.messages_in("C0OPS").len(), 1, "one card");
    assert_eq!(
        run.core.store.votes(&id).await.unwrap().len(),
        1,
        "one vote"
    );
    let actions: Vec<String> = run.audit().await.into_iter().map(|r| r.action).collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "request.created").count(),
        1,
        "{actions:?}"
    );
    // A second vote that got through would be refused (the request is no longer open), audited
    // and answered through the response_url.
    assert!(!actions.iter().any(|a| a == "vote.refused"), "{actions:?}");
    assert!(
        !standin
            .response_url_calls()
            .iter()
            .any(|h| text_of(&h.body).contains("not counted")
                || text_of(&h.body).contains("already")),
        "{:?}",
        standin.response_url_calls()
    );
    assert_eq!(run.marker().matches("stop").count(), 1, "ran once");
    run.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Retry-After counts from Slack's answer

/// The real Slack adapter, except that posting in `C0SLOW` takes five (manual-clock) seconds,
/// and right after it Slack starts answering `chat.postMessage` with 429 `Retry-After: 1`.
/// Lanes are delivered concurrently, so the post in `C0LIMITED` waits for the slow one.
struct SlowThenLimited<'a> {
    slack: dualkey::adapters::slack::SlackAdapter,
    standin: &'a SlackStandin,
    clock: Arc<dualkey::clock::ManualClock>,
    slow_done: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl dualkey::outbox::Outbound for SlowThenLimited<'_> {
    fn platform(&self) -> dualkey::core::event::Platform {
        dualkey::core::event::Platform::Slack
    }
    async fn post(
        &self,
        channel: &str,
        reply: &dualkey::core::reply::Reply,
    ) -> Result<String, dualkey::outbox::DeliveryError> {
        if channel == "C0LIMITED" && self.standin.messages_in("C0SLOW").is_empty() {
            let _ = self.slow_done.acquire().await;
        }
        let r = self.slack.post(channel, reply).await;
        if channel == "C0SLOW" {
            self.clock.advance(5_000);
            self.standin.fail_next(
                "chat.postMessage",
                1,
                Failure::RateLimited {
                    retry_after_secs: 1,
                },
            );
            self.slow_done.add_permits(1);
        }
        r
    }
    async fn edit(
        &self,
        channel: &str,
        id: &str,
        reply: &dualkey::core::reply::Reply,
    ) -> Result<(), dualkey::outbox::DeliveryError> {
        self.slack.edit(channel, id, reply).await
    }
    async fn ephemeral(
        &self,
        channel: &str,
        user: &str,
        reply: &dualkey::core::reply::Reply,
    ) -> Result<(), dualkey::outbox::DeliveryError> {
        self.slack.ephemeral(channel, user, reply).await
    }
}

/// The real Slack adapter in HTTP mode against `standin`, its bot token and signing secret
/// read from `DK_{tag}_BOT` and `DK_{tag}_SIGN` (set here; one `tag` per test).
pub fn slack_adapter_for(
    standin: &SlackStandin,
    tag: &str,
) -> dualkey::adapters::slack::SlackAdapter {
    let (bot, sign) = (format!("DK_{tag}_BOT"), format!("DK_{tag}_SIGN"));
    std::env::set_var(&bot, "xoxb-standin-bot");
    std::env::set_var(&sign, crate::slack_harness::SECRET);
    dualkey::adapters::slack::SlackAdapter::from_settings(&dualkey::config::SlackSettings {
        enabled: true,
        mode: "http".into(),
        api_base_url: standin.api_url(),
        bot_token_env: bot,
        signing_secret_env: sign,
        ..Default::default()
    })
    .unwrap()
}

/// How many `chat.postMessage` calls `standin` received for `channel`.
pub fn post_calls_in(standin: &SlackStandin, channel: &str) -> usize {
    standin
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|c| c.body["channel"] == channel)
        .count()
}

/// A 429 answered late in a delivery pass (after a slow call) is still waited out in full:
/// `Retry-After` counts from Slack's answer, not from the start of the pass.
#[tokio::test]
async fn retry_after_counts_from_the_429_not_from_the_start_of_the_delivery_pass() {
    use dualkey::core::event::{ChannelRef, Platform};
    use dualkey::core::reply::Reply;
    let standin = SlackStandin::start().await;
    let slack = slack_adapter_for(&standin, "SLACKOUT_PASS");
    let app = crate::support::spawn_app(crate::support::Backend::Sqlite, 1, 0).await;
    for channel in ["C0SLOW", "C0LIMITED"] {
        let to = ChannelRef {
            platform: Platform::Slack,
            id: channel.into(),
        };
        app.core.post(&to, &Reply::public(channel)).await.unwrap();
    }
    let out = SlowThenLimited {
        slack,
        standin: &standin,
        clock: app.clock.clone(),
        slow_done: tokio::sync::Semaphore::new(0),
    };
    let pass = |n: usize| {
        let (core, out) = (&app.core, &out);
        async move {
            assert_eq!(
                dualkey::outbox::deliver_due(core, out).await.unwrap(),
                n,
                "messages delivered"
            );
        }
    };
    let limited_calls = || post_calls_in(&standin, "C0LIMITED");

    pass(1).await; // C0SLOW posted; then C0LIMITED answered 429 Retry-After: 1, five seconds in.
    let answered_429_at = dualkey::clock::Clock::now_ms(app.clock.as_ref());
    assert_eq!(limited_calls(), 1);
    let row = app
        .core
        .store
        .outbox_all("slack")
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.channel == "C0LIMITED")
        .unwrap();
    assert!(
        row.next_attempt_at >= answered_429_at + 1_000,
        "retry due {} ms after the 429 that said wait 1 s",
        row.next_attempt_at - answered_429_at
    );
    pass(0).await; // still within Retry-After: Slack is not asked again
    assert_eq!(limited_calls(), 1, "retried inside Retry-After");
    app.clock.advance(1_000);
    pass(1).await;
    assert_eq!(standin.messages_in("C0LIMITED").len(), 1);
}
