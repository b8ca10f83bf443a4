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
}

#[async_trait]
impl Outbound for FlakyChat {
    fn platform(&self) -> Platform {
        Platform::Slack
    }
    async fn post(&self, channel: &str, reply: &Reply) -> Result<String, DeliveryError> {
        if let Some(e) = self.fail_next.lock().unwrap().pop() {
            return Err(e);
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
