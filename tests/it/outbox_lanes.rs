//! Delivery lanes (issue 19): channels delivered concurrently, a 429 holding back only its own
//! lane, cards ahead of audit lines, audit lines in digests that record their carrier, and a
//! card that cannot be posted reported to its requester instead of being re-posted by each edit.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use dualkey::core::event::{ChannelRef, Platform};
use dualkey::core::reply::Reply;
use dualkey::outbox::{deliver_due, DeliveryError, Outbound};

use crate::both_backends;
use crate::support::{Backend, TestApp};

/// A chat that records every call (`post CHANNEL: text`, `edit CHANNEL ID: text`), can fail
/// the next posts of one channel, answers `not_in_channel` for every call in `gone`, and can
/// make posts in `slow` wait until a post in another channel arrived.
#[derive(Default)]
struct Chat {
    calls: Mutex<Vec<String>>,
    fail: Mutex<Vec<(String, DeliveryError)>>,
    gone: Option<String>,
    slow: Option<String>,
    other_posted: tokio::sync::Notify,
}

impl Chat {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn fail_next(&self, channel: &str, e: DeliveryError) {
        self.fail.lock().unwrap().push((channel.into(), e));
    }
    /// The texts posted in `channel`, in order.
    fn posts_in(&self, channel: &str) -> Vec<String> {
        let prefix = format!("post {channel}: ");
        self.calls()
            .into_iter()
            .filter_map(|c| c.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }
}

#[async_trait]
impl Outbound for Chat {
    fn platform(&self) -> Platform {
        Platform::Slack
    }
    async fn post(&self, channel: &str, reply: &Reply) -> Result<String, DeliveryError> {
        if self.slow.as_deref() == Some(channel) {
            // Only finishes once another lane has posted: sequential delivery would stall here.
            tokio::time::timeout(Duration::from_secs(5), self.other_posted.notified())
                .await
                .map_err(|_| DeliveryError::Transient("no other lane posted meanwhile".into()))?;
        }
        if self.gone.as_deref() == Some(channel) {
            self.calls
                .lock()
                .unwrap()
                .push(format!("refused {channel}"));
            return Err(DeliveryError::Permanent(
                "slack chat.postMessage: not_in_channel".into(),
            ));
        }
        {
            let mut fail = self.fail.lock().unwrap();
            if let Some(i) = fail.iter().position(|(c, _)| c == channel) {
                let (_, e) = fail.remove(i);
                self.calls.lock().unwrap().push(format!("failed {channel}"));
                return Err(e);
            }
        }
        let mut calls = self.calls.lock().unwrap();
        calls.push(format!("post {channel}: {}", reply.to_text()));
        self.other_posted.notify_one();
        Ok(format!("m{}", calls.len()))
    }
    async fn edit(&self, channel: &str, id: &str, reply: &Reply) -> Result<(), DeliveryError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("edit {channel} {id}: {}", reply.to_text()));
        Ok(())
    }
    async fn ephemeral(
        &self,
        channel: &str,
        user: &str,
        reply: &Reply,
    ) -> Result<(), DeliveryError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("ephemeral {channel} {user}: {}", reply.to_text()));
        Ok(())
    }
}

fn slack(id: &str) -> ChannelRef {
    ChannelRef {
        platform: Platform::Slack,
        id: id.into(),
    }
}

/// Queues the public message `text` for the Slack channel `channel`.
async fn queue(app: &TestApp, channel: &str, text: &str) {
    app.core
        .post(&slack(channel), &Reply::public(text))
        .await
        .unwrap();
}

/// A test app whose Slack approvals and audit channels are `approvals` and `audit`.
async fn app_with(b: Backend, approvals: &str, audit: &str) -> TestApp {
    let keys = format!("approvals_channel = \"{approvals}\"\naudit_channel = \"{audit}\"");
    crate::support::spawn_app_with(b, 1, 0, move |t| {
        t.replace(
            "[approvals]",
            &format!("[slack]\nenabled = true\n{keys}\n[approvals]"),
        )
    })
    .await
}

/// The texts of what was said in the shell channel since the last look.
async fn shell_texts(app: &TestApp) -> Vec<String> {
    app.deliver_shell()
        .await
        .iter()
        .map(|s| s.reply().to_text())
        .collect()
}

/// Every audit line in `posts`, each message split into lines and the head line closing a
/// digest left out.
fn lines_of(posts: &[String]) -> Vec<String> {
    posts
        .iter()
        .flat_map(|p| crate::slack_harness::digest_lines(p))
        .collect()
}

async fn a_slow_channel_does_not_delay_another(b: Backend) {
    let app = crate::support::spawn_app(b, 1, 0).await;
    // CA sorts first; its post finishes only after CB's has arrived.
    queue(&app, "CA", "a1").await;
    queue(&app, "CB", "b1").await;
    let chat = Chat {
        slow: Some("CA".into()),
        ..Default::default()
    };
    assert_eq!(deliver_due(&app.core, &chat).await.unwrap(), 2);
    assert_eq!(chat.calls(), vec!["post CB: b1", "post CA: a1"]);
}
both_backends!(a_slow_channel_does_not_delay_another);

async fn a_429_holds_back_only_its_own_lane_and_its_waiting_rows_are_not_read_again(b: Backend) {
    let app = crate::support::spawn_app(b, 1, 0).await;
    for t in ["a1", "a2", "a3"] {
        queue(&app, "CA", t).await;
    }
    queue(&app, "CB", "b1").await;
    let chat = Chat::default();
    chat.fail_next("CA", DeliveryError::RateLimited(Duration::from_secs(5)));
    assert_eq!(deliver_due(&app.core, &chat).await.unwrap(), 1);
    // While CA waits out its Retry-After, CB keeps going and CA's rows are not due.
    queue(&app, "CB", "b2").await;
    let now = app.core.clock.now_ms();
    assert_eq!(
        app.core.store.outbox_lanes("slack", now).await.unwrap(),
        vec!["CB".to_string()],
        "the held lane's rows are not read while it waits"
    );
    assert_eq!(deliver_due(&app.core, &chat).await.unwrap(), 1);
    assert_eq!(chat.posts_in("CB"), vec!["b1", "b2"]);
    assert!(chat.posts_in("CA").is_empty());
    app.clock.advance(5_000);
    assert_eq!(deliver_due(&app.core, &chat).await.unwrap(), 3);
    assert_eq!(chat.posts_in("CA"), vec!["a1", "a2", "a3"], "order kept");
}
both_backends!(a_429_holds_back_only_its_own_lane_and_its_waiting_rows_are_not_read_again);

async fn a_card_goes_ahead_of_audit_lines_waiting_in_its_lane(b: Backend) {
    // One channel for approvals and audit: one lane.
    let app = app_with(b, "C0OPS", "C0OPS").await;
    for _ in 0..5 {
        app.cmd("carol", "help").await;
    }
    app.cmd("alice", "app stop").await;
    let chat = Chat::default();
    deliver_due(&app.core, &chat).await.unwrap();
    let posts = chat.posts_in("C0OPS");
    assert!(
        posts[0].starts_with("== [pending] Request"),
        "the card first: {posts:#?}"
    );
    let records = app.core.store.audit_tail(100).await.unwrap();
    let rendered: Vec<String> = records.iter().map(|r| r.render()).collect();
    assert_eq!(
        lines_of(&posts[1..]),
        rendered,
        "then every audit line, in order"
    );
}
both_backends!(a_card_goes_ahead_of_audit_lines_waiting_in_its_lane);

async fn a_digest_carries_every_waiting_audit_line_once_in_order_and_closes_with_the_head(
    b: Backend,
) {
    let app = app_with(b, "C0APPROVALS", "C0AUDIT").await;
    for _ in 0..60 {
        app.cmd("carol", "help").await;
    }
    let chat = Chat::default();
    let n = deliver_due(&app.core, &chat).await.unwrap();
    let records = app.core.store.audit_tail(100).await.unwrap();
    assert_eq!(records.len(), 60);
    assert_eq!(n, 60, "every line delivered");
    let posts = chat.posts_in("C0AUDIT");
    assert!(
        posts.len() > 1 && posts.len() < 20,
        "several lines per message, within 2,000 characters each: {} messages",
        posts.len()
    );
    let rendered: Vec<String> = records.iter().map(|r| r.render()).collect();
    assert_eq!(lines_of(&posts), rendered, "each line once, in order");
    let rows = app.core.store.outbox_all("slack").await.unwrap();
    for p in &posts {
        assert!(p.chars().count() <= 2000, "{}", p.chars().count());
        // The head line of the digest's last event closes it.
        let last = lines_of(std::slice::from_ref(p)).pop().unwrap();
        let rec = records.iter().find(|r| r.render() == last).unwrap();
        let head = dualkey::core::audit::head_line(rec.seq, &rec.hash);
        assert!(p.ends_with(&head), "{p}");
    }
    // Each event records the message that carried it.
    for rec in &records {
        let row = rows
            .iter()
            .find(|r| r.audit_seq == Some(rec.seq) && r.channel == "C0AUDIT")
            .unwrap();
        let id = row.carrier_message.as_deref().expect("carrier recorded");
        let n: usize = id.trim_start_matches('m').parse().unwrap();
        let carrier = &chat.calls()[n - 1];
        assert!(carrier.contains(&rec.render()), "{id} carried #{}", rec.seq);
        assert!(row.carried_by.is_some() && row.delivered_at.is_some());
    }
}
both_backends!(a_digest_carries_every_waiting_audit_line_once_in_order_and_closes_with_the_head);

async fn a_restart_in_the_middle_of_digests_neither_drops_nor_repeats_a_line(b: Backend) {
    let app = app_with(b, "C0APPROVALS", "C0AUDIT").await;
    for _ in 0..60 {
        app.cmd("carol", "help").await;
    }
    // The first digest goes out, the second meets a failure, and the process stops.
    let (one, before) = deliver_one_then_fail(&app).await;
    assert!(one > 0 && one < 60, "{one} lines before the stop");
    // A new process on the same store.
    let restarted = app.with_settings(|_| {});
    app.clock.advance(60_000);
    let after = Chat::default();
    let rest = deliver_due(&restarted.core, &after).await.unwrap();
    assert_eq!(one + rest, 60);
    let records = app.core.store.audit_tail(100).await.unwrap();
    let rendered: Vec<String> = records.iter().map(|r| r.render()).collect();
    let mut lines = lines_of(&before);
    lines.extend(lines_of(&after.posts_in("C0AUDIT")));
    assert_eq!(
        lines, rendered,
        "each line once, in order, across the restart"
    );
}
both_backends!(a_restart_in_the_middle_of_digests_neither_drops_nor_repeats_a_line);

/// Delivers with a chat that accepts one post in C0AUDIT and fails the next; returns how many
/// lines went out and the messages posted.
async fn deliver_one_then_fail(app: &TestApp) -> (usize, Vec<String>) {
    struct OneThenFail(Chat);
    #[async_trait]
    impl Outbound for OneThenFail {
        fn platform(&self) -> Platform {
            Platform::Slack
        }
        async fn post(&self, channel: &str, reply: &Reply) -> Result<String, DeliveryError> {
            if !self.0.posts_in(channel).is_empty() {
                return Err(DeliveryError::Transient("HTTP 500".into()));
            }
            self.0.post(channel, reply).await
        }
        async fn edit(&self, c: &str, id: &str, r: &Reply) -> Result<(), DeliveryError> {
            self.0.edit(c, id, r).await
        }
        async fn ephemeral(&self, c: &str, u: &str, r: &Reply) -> Result<(), DeliveryError> {
            self.0.ephemeral(c, u, r).await
        }
    }
    let chat = OneThenFail(Chat::default());
    let n = deliver_due(&app.core, &chat).await.unwrap();
    (n, chat.0.posts_in("C0AUDIT"))
}

async fn a_card_that_cannot_be_posted_tells_the_requester_and_its_edits_are_not_posted(b: Backend) {
    let app = app_with(b, "C0GONE", "C0AUDIT").await;
    app.cmd("alice", "app stop").await;
    let id = app.last_request().await;
    let chat = Chat {
        gone: Some("C0GONE".into()),
        ..Default::default()
    };
    deliver_due(&app.core, &chat).await.unwrap();
    assert_eq!(
        chat.calls()
            .iter()
            .filter(|c| *c == "refused C0GONE")
            .count(),
        1
    );
    // The requester (alice, in the shell channel) is told at once, with the fix.
    let said = shell_texts(&app).await;
    let notice = said
        .iter()
        .find(|t| t.contains("could not be posted"))
        .unwrap_or_else(|| panic!("no notice: {said:#?}"));
    assert!(notice.contains(&id), "{notice}");
    assert!(notice.contains("C0GONE"), "{notice}");
    assert!(notice.contains("invite @dualkey"), "{notice}");
    assert!(notice.contains("not_in_channel"), "{notice}");
    // A vote edits the card: the copy that was never posted is not posted now.
    app.click("bob", &format!("deny:{id}")).await;
    deliver_due(&app.core, &chat).await.unwrap();
    app.clock.advance(600_000);
    deliver_due(&app.core, &chat).await.unwrap();
    assert_eq!(
        chat.calls().iter().filter(|c| c.contains("C0GONE")).count(),
        1,
        "{:#?}",
        chat.calls()
    );
    let edits: Vec<_> = app
        .core
        .store
        .outbox_all("slack")
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.op == "edit" && r.channel == "C0GONE")
        .collect();
    assert!(!edits.is_empty());
    assert!(edits.iter().all(|r| r.delivered_at.is_none()
        && r.last_error
            .as_deref()
            .is_some_and(|e| e.contains("not sent"))));
}
both_backends!(a_card_that_cannot_be_posted_tells_the_requester_and_its_edits_are_not_posted);

/// The same through the real Slack adapter and a stand-in Slack answering `not_in_channel`:
/// the requester is told, and the card's later edit makes no second `chat.postMessage`.
#[tokio::test]
async fn slack_answering_not_in_channel_for_a_card_tells_the_requester_and_is_not_asked_again() {
    use crate::slack_outages::{post_calls_in, slack_adapter_for};
    use crate::slack_standin::{Failure, SlackStandin};
    let standin = SlackStandin::start().await;
    let slack = slack_adapter_for(&standin, "LANES");
    standin.fail_next(
        "chat.postMessage",
        10,
        Failure::ApiError("not_in_channel".into()),
    );
    let app = crate::support::spawn_app_with(Backend::Sqlite, 1, 0, |t| {
        t.replace(
            "[approvals]",
            "[slack]\nenabled = true\napprovals_channel = \"C0GONE\"\n[approvals]",
        )
    })
    .await;
    app.cmd("alice", "app stop").await;
    let id = app.last_request().await;
    deliver_due(&app.core, &slack).await.unwrap();
    let posts = || post_calls_in(&standin, "C0GONE");
    assert_eq!(posts(), 1);
    let said = shell_texts(&app).await;
    assert!(
        said.iter()
            .any(|t| t.contains(&id) && t.contains("invite @dualkey") && t.contains("C0GONE")),
        "{said:#?}"
    );
    app.click("bob", &format!("deny:{id}")).await;
    app.clock.advance(600_000);
    deliver_due(&app.core, &slack).await.unwrap();
    assert_eq!(posts(), 1, "the edit was not posted as a new message");
    assert!(standin.calls_to("chat.update").is_empty());
}
