//! Outbox delivery: in order per channel, honouring Retry-After, nothing lost while chat fails.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use dualkey::core::event::{ChannelRef, Platform};
use dualkey::core::reply::Reply;
use dualkey::outbox::{deliver_due, DeliveryError, Outbound};

use crate::both_backends;
use crate::support::{spawn_app, Backend};

#[derive(Default)]
struct FlakyChat {
    delivered: Mutex<Vec<String>>,
    fail_next: Mutex<Vec<DeliveryError>>,
    /// When set, `fail_next` applies to posts in this channel only (lanes run concurrently).
    fail_in: Mutex<Option<String>>,
}

#[async_trait]
impl Outbound for FlakyChat {
    fn platform(&self) -> Platform {
        Platform::Slack
    }
    async fn post(&self, channel: &str, reply: &Reply) -> Result<String, DeliveryError> {
        let here = self
            .fail_in
            .lock()
            .unwrap()
            .as_ref()
            .is_none_or(|c| c == channel);
        if here {
            if let Some(e) = self.fail_next.lock().unwrap().pop() {
                return Err(e);
            }
        }
        let mut d = self.delivered.lock().unwrap();
        d.push(format!("{channel}:{}", reply.to_text()));
        Ok(d.len().to_string())
    }
    async fn edit(&self, channel: &str, id: &str, reply: &Reply) -> Result<(), DeliveryError> {
        self.delivered
            .lock()
            .unwrap()
            .push(format!("{channel}:{id}:{}", reply.to_text()));
        Ok(())
    }
    async fn ephemeral(
        &self,
        channel: &str,
        user: &str,
        reply: &Reply,
    ) -> Result<(), DeliveryError> {
        self.delivered
            .lock()
            .unwrap()
            .push(format!("{channel}:{user}:{}", reply.to_text()));
        Ok(())
    }
}

async fn delivery_keeps_order_per_channel_and_honours_retry_after(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    let a = ChannelRef {
        platform: Platform::Slack,
        id: "CA".into(),
    };
    let c = ChannelRef {
        platform: Platform::Slack,
        id: "CB".into(),
    };
    for i in 1..=3 {
        app.core
            .post(&a, &Reply::public(format!("a{i}")))
            .await
            .unwrap();
    }
    app.core.post(&c, &Reply::public("b1")).await.unwrap();
    let chat = FlakyChat::default();
    *chat.fail_in.lock().unwrap() = Some("CA".into());
    chat.fail_next
        .lock()
        .unwrap()
        .push(DeliveryError::RateLimited(Duration::from_secs(2)));
    assert_eq!(
        deliver_due(&app.core, &chat).await.unwrap(),
        1,
        "CA is rate limited, CB goes through"
    );
    assert_eq!(*chat.delivered.lock().unwrap(), vec!["CB:b1"]);
    assert_eq!(
        deliver_due(&app.core, &chat).await.unwrap(),
        0,
        "Retry-After not over yet"
    );
    app.clock.advance(2_000);
    assert_eq!(deliver_due(&app.core, &chat).await.unwrap(), 3);
    assert_eq!(
        *chat.delivered.lock().unwrap(),
        vec!["CB:b1", "CA:a1", "CA:a2", "CA:a3"]
    );
    let rows = app.core.store.outbox_all("slack").await.unwrap();
    assert!(rows.iter().all(|r| r.delivered_at.is_some()));
    assert_eq!(rows[0].attempts, 2, "one failed attempt then success");
}
both_backends!(delivery_keeps_order_per_channel_and_honours_retry_after);

async fn a_permanent_failure_is_kept_with_its_error(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    let a = ChannelRef {
        platform: Platform::Slack,
        id: "CGONE".into(),
    };
    app.core.post(&a, &Reply::public("hello")).await.unwrap();
    let chat = FlakyChat::default();
    chat.fail_next
        .lock()
        .unwrap()
        .push(DeliveryError::Permanent("channel_not_found".into()));
    assert_eq!(deliver_due(&app.core, &chat).await.unwrap(), 0);
    app.clock.advance(86_400_000);
    assert_eq!(
        deliver_due(&app.core, &chat).await.unwrap(),
        0,
        "not retried"
    );
    let rows = app.core.store.outbox_all("slack").await.unwrap();
    assert_eq!(rows[0].delivered_at, None);
    assert_eq!(rows[0].last_error.as_deref(), Some("channel_not_found"));
}
both_backends!(a_permanent_failure_is_kept_with_its_error);

async fn only_one_holder_gets_a_lease_until_it_expires(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    let s = &app.core.store;
    assert!(s
        .try_lease("outbox", "replica-a", 1_000, 15_000)
        .await
        .unwrap());
    assert!(
        !s.try_lease("outbox", "replica-b", 2_000, 15_000)
            .await
            .unwrap(),
        "a's lease is valid"
    );
    assert!(
        s.try_lease("outbox", "replica-a", 10_000, 15_000)
            .await
            .unwrap(),
        "the holder renews"
    );
    assert!(!s
        .try_lease("outbox", "replica-b", 24_999, 15_000)
        .await
        .unwrap());
    assert!(
        s.try_lease("outbox", "replica-b", 25_001, 15_000)
            .await
            .unwrap(),
        "expired: b takes over"
    );
    assert!(!s
        .try_lease("outbox", "replica-a", 25_002, 15_000)
        .await
        .unwrap());
    assert!(
        s.try_lease("scheduler", "replica-a", 25_002, 15_000)
            .await
            .unwrap(),
        "leases are per name"
    );
}
both_backends!(only_one_holder_gets_a_lease_until_it_expires);

async fn pruning_drops_old_dedupe_keys_and_delivered_messages_only(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    let c = ChannelRef {
        platform: Platform::Slack,
        id: "CA".into(),
    };
    app.core
        .post(&c, &Reply::public("old, delivered"))
        .await
        .unwrap();
    app.core
        .post(&c, &Reply::public("old, undelivered"))
        .await
        .unwrap();
    app.cmd("carol", "status").await;
    let rows = app.core.store.outbox_all("slack").await.unwrap();
    app.core
        .store
        .outbox_delivered(rows[0].id, app.core.clock.now_ms())
        .await
        .unwrap();
    let later = app.core.clock.now_ms() + 8 * 86_400_000;
    let n = app
        .core
        .store
        .prune(later - 86_400_000, later - 7 * 86_400_000)
        .await
        .unwrap();
    assert_eq!(n, 2, "one dedupe key and one delivered message");
    let rows = app.core.store.outbox_all("slack").await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].delivered_at, None,
        "undelivered messages are never pruned"
    );
}
both_backends!(pruning_drops_old_dedupe_keys_and_delivered_messages_only);

/// A test app with `[slack] enabled = true` and the given channel keys (`audit_channel = "C0AUDIT"`),
/// plus `extra` config lines at the end.
async fn with_slack(b: Backend, keys: &str, extra: &str) -> crate::support::TestApp {
    let (keys, extra) = (keys.to_string(), extra.to_string());
    crate::support::spawn_app_with(b, 1, 0, move |t| {
        t.replace(
            "[approvals]",
            &format!("[slack]\nenabled = true\n{keys}\n[approvals]"),
        ) + &extra
    })
    .await
}

/// What waits (or waited) in the outbox for `platform`: `(channel, text)`, oldest first.
async fn queued_texts(app: &crate::support::TestApp, platform: &str) -> Vec<(String, String)> {
    app.core
        .store
        .outbox_all(platform)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| {
            let reply: Reply = serde_json::from_str(&r.payload).ok()?;
            Some((r.channel, reply.to_text()))
        })
        .collect()
}

/// Stacked edits of one card behind a 429 collapse into the newest, which goes ahead of the
/// other messages waiting in the channel, to the message the card was posted as.
async fn stacked_card_edits_collapse_to_the_newest_and_order_is_kept(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    let ch = ChannelRef {
        platform: Platform::Slack,
        id: "CA".into(),
    };
    app.core
        .post_card(
            "request:r1",
            std::slice::from_ref(&ch),
            &Reply::public("card v0"),
        )
        .await
        .unwrap();
    let chat = FlakyChat::default();
    assert_eq!(deliver_due(&app.core, &chat).await.unwrap(), 1);
    // Slack answers 429 to the first edit; 20 progress ticks and an audit line queue behind it.
    chat.fail_next
        .lock()
        .unwrap()
        .push(DeliveryError::RateLimited(Duration::from_secs(3)));
    for i in 1..=10 {
        app.core
            .edit_card("request:r1", &Reply::public(format!("card v{i}")))
            .await
            .unwrap();
    }
    app.core
        .post(&ch, &Reply::public("audit line"))
        .await
        .unwrap();
    for i in 11..=20 {
        app.core
            .edit_card("request:r1", &Reply::public(format!("card v{i}")))
            .await
            .unwrap();
    }
    deliver_due(&app.core, &chat).await.unwrap();
    app.clock.advance(3_000);
    deliver_due(&app.core, &chat).await.unwrap();
    assert_eq!(
        *chat.delivered.lock().unwrap(),
        vec!["CA:card v0", "CA:1:card v20", "CA:audit line"],
        "one edit, the newest, ahead of the message queued before it (cards go first in a lane)"
    );
    assert!(app
        .core
        .store
        .outbox_all("slack")
        .await
        .unwrap()
        .iter()
        .all(|r| r.delivered_at.is_some()));
}
both_backends!(stacked_card_edits_collapse_to_the_newest_and_order_is_kept);

/// Approval cards go to the command's channel and to `approvals_channel`, audit lines to
/// `audit_channel`; `[environments.NAME.slack]` overrides them per environment.
async fn cards_and_audit_lines_are_routed_by_config_with_per_environment_overrides(b: Backend) {
    let app = with_slack(
        b,
        "approvals_channel = \"C0APPROVALS\"\naudit_channel = \"C0AUDIT\"\nreport_channel = \"C0REPORTS\"",
        "[environments.staging.slack]\napprovals_channel = \"C0STAGINGAPPROVALS\"\naudit_channel = \"C0STAGINGAUDIT\"\n",
    )
    .await;
    app.cmd("alice", "app stop").await;
    app.cmd("alice", "app stop staging").await;
    let posts = queued_texts(&app, "slack").await;
    let cards_in = |ch: &str| {
        posts
            .iter()
            .filter(|(c, t)| c == ch && t.starts_with("== [pending] Request"))
            .count()
    };
    assert_eq!(cards_in("C0APPROVALS"), 1, "{posts:#?}");
    assert_eq!(cards_in("C0STAGINGAPPROVALS"), 1, "{posts:#?}");
    let audit_in = |ch: &str| {
        posts
            .iter()
            .filter(|(c, t)| c == ch && t.contains("request.created"))
            .count()
    };
    assert_eq!(audit_in("C0AUDIT"), 1, "{posts:#?}");
    assert_eq!(audit_in("C0STAGINGAUDIT"), 1, "{posts:#?}");
    assert_eq!(cards_in("C0REPORTS") + audit_in("C0REPORTS"), 0);
    // The shell channel the command came from got its copy too.
    let shell = app.core.store.outbox_all("shell").await.unwrap();
    assert_eq!(shell.iter().filter(|r| r.op == "post").count(), 2);
    // A vote edits every copy.
    let id = app.last_request().await;
    app.click("bob", &format!("deny:{id}")).await;
    let edits = app
        .core
        .store
        .outbox_all("slack")
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.op == "edit" && r.card_key.as_deref() == Some(&format!("request:{id}")))
        .count();
    assert_eq!(
        edits, 1,
        "the approvals-channel copy of the staging card is edited"
    );
}
both_backends!(cards_and_audit_lines_are_routed_by_config_with_per_environment_overrides);

/// The chain head reaches the audit channel with every 100th event, in the form
/// `dualkey audit verify --head` takes.
async fn the_audit_head_is_posted_every_hundred_events(b: Backend) {
    let app = with_slack(b, "audit_channel = \"C0AUDIT\"", "").await;
    for _ in 0..34 {
        app.cmd("carol", "help").await; // a command event each (help needs no database)
    }
    let (seq, _) = app.core.store.audit_head().await.unwrap();
    assert!(seq < 100, "{seq}");
    let heads = |rows: Vec<(String, String)>| -> Vec<String> {
        rows.into_iter()
            .map(|(_, t)| t)
            .filter(|t| t.starts_with("audit head "))
            .collect()
    };
    assert!(heads(queued_texts(&app, "slack").await).is_empty());
    while app.core.store.audit_head().await.unwrap().0 < 100 {
        app.cmd("carol", "help").await;
    }
    let h = heads(queued_texts(&app, "slack").await);
    assert_eq!(h.len(), 1, "{h:?}");
    let page = app.core.store.audit_page(99, 1).await.unwrap();
    assert_eq!(h[0], format!("audit head seq=100 hash={}", page[0].hash));
    // At start-up the head is queued too.
    app.core.post_audit_head().await.unwrap();
    assert_eq!(heads(queued_texts(&app, "slack").await).len(), 2);
}
both_backends!(the_audit_head_is_posted_every_hundred_events);

/// An operation found interrupted at start-up is an alert: posted to the channel it came from
/// and to `report_channel`.
async fn an_interrupted_operation_is_reported_to_the_report_channel(b: Backend) {
    let app = with_slack(b, "report_channel = \"C0REPORTS\"", "").await;
    app.cmd("alice", "app start").await;
    let now = app.core.clock.now_ms();
    let mut tx = app.core.store.begin().await.unwrap();
    // Its heartbeat is long stale (on PostgreSQL only stale ones are taken for dead).
    let op = tx
        .claim_operation("gone", now - 600_000)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    dualkey::services::worker::Worker::recover_interrupted(&app.core, true)
        .await
        .unwrap();
    let alert = format!(
        "Operation {} (app-start in production) was interrupted",
        op.id
    );
    let has_alert = |rows: Vec<(String, String)>, channel: &str| {
        rows.iter().any(|(c, t)| c == channel && t.contains(&alert))
    };
    assert!(
        has_alert(queued_texts(&app, "slack").await, "C0REPORTS"),
        "report channel"
    );
    assert!(
        has_alert(queued_texts(&app, "shell").await, "test"),
        "the channel it came from"
    );
}
both_backends!(an_interrupted_operation_is_reported_to_the_report_channel);

/// Two writers race: a stale rendering of a card (made before a deny committed) is queued
/// after the fresh one. The copy in chat still ends showing the store's state, not the stale one.
async fn a_stale_card_rendering_queued_last_never_wins(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    app.cmd("alice", "app stop").await;
    let id = app.last_request().await;
    let stale = app.core.request_card(&id).await.unwrap();
    assert!(stale.to_text().contains("[pending]"));
    app.click("bob", &format!("deny:{id}")).await;
    // The racing writer's edit lands last.
    app.core
        .edit_card(&format!("request:{id}"), &stale)
        .await
        .unwrap();
    let said = app.deliver_shell().await;
    let last = said
        .last()
        .expect("an edit was delivered")
        .reply()
        .to_text();
    assert!(last.starts_with("== [denied]"), "{last}");
    assert!(
        !last.contains("[approve:"),
        "no live buttons on a denied card: {last}"
    );
}
both_backends!(a_stale_card_rendering_queued_last_never_wins);

/// A replica that lost the `outbox` lease stops its pass before sending anything more.
async fn a_pass_stops_when_the_lease_belongs_to_another_replica(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    let ch = ChannelRef {
        platform: Platform::Slack,
        id: "CA".into(),
    };
    app.core.post(&ch, &Reply::public("one")).await.unwrap();
    let now = app.core.clock.now_ms();
    assert!(app
        .core
        .store
        .try_lease("outbox", "replica-b", now, 15_000)
        .await
        .unwrap());
    let chat = FlakyChat::default();
    let n = dualkey::outbox::deliver_due_leased(&app.core, &chat, Some("replica-a"))
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert!(chat.delivered.lock().unwrap().is_empty());
    app.clock.advance(16_000);
    let n = dualkey::outbox::deliver_due_leased(&app.core, &chat, Some("replica-a"))
        .await
        .unwrap();
    assert_eq!(n, 1, "b's lease ran out: a takes over");
}
both_backends!(a_pass_stops_when_the_lease_belongs_to_another_replica);
