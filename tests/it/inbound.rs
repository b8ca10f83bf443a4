//! The inbound half of the adapter contract: dedupe, then ack, then dispatch.

use std::sync::Arc;

use async_trait::async_trait;
use dualkey::adapters::memory::{MemoryAdapter, Said};
use dualkey::adapters::{Handled, Inbound, Outbound};
use dualkey::core::context::Core;
use dualkey::core::event::{ChannelRef, EventKind, InboundEvent, Platform};
use dualkey::core::operation::{OperationKind, Plan};
use dualkey::core::ports::{Facts, Reads, ReportRequest};
use dualkey::core::reply::Reply;

use crate::both_backends;
use crate::support::{actor, spawn_app, Backend};

fn event(id: &str, who: &str, text: &str) -> InboundEvent {
    InboundEvent::new(
        id.into(),
        actor(who),
        ChannelRef {
            platform: Platform::Slack,
            id: "C0OPS".into(),
        },
        EventKind::Command { text: text.into() },
    )
}

/// A facts port whose planning waits until the test opens the gate (a slow migration status
/// or a large backup being hashed).
struct Gated {
    inner: Arc<dyn Facts>,
    gate: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl Facts for Gated {
    async fn plan(
        &self,
        reads: Reads<'_>,
        kind: &OperationKind,
        env: &str,
    ) -> Result<Plan, String> {
        let _permit = self.gate.acquire().await.unwrap();
        self.inner.plan(reads, kind, env).await
    }
    async fn report(&self, reads: Reads<'_>, what: ReportRequest) -> anyhow::Result<Reply> {
        self.inner.report(reads, what).await
    }
    fn migration_names(&self, dir: &std::path::Path) -> std::collections::BTreeSet<String> {
        self.inner.migration_names(dir)
    }
}

/// The same core (settings, store, clock), planning behind `gate`.
fn gated_core(core: &Core, gate: &Arc<tokio::sync::Semaphore>) -> Arc<Core> {
    let mut c = Core::new(
        (*core.settings).clone(),
        core.store.clone(),
        core.clock.clone(),
        Arc::new(Gated {
            inner: core.facts.clone(),
            gate: gate.clone(),
        }),
    );
    c.outbox_wake = core.outbox_wake.clone();
    Arc::new(c)
}

/// `submit` returns (the adapter acks) while planning is still blocked; the card follows once
/// planning finishes.
async fn the_ack_comes_before_planning_and_the_card_after_it(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let core = gated_core(&app.core, &gate);
    let mem = MemoryAdapter::new(Platform::Slack);
    let inbound = Inbound::new(core.clone(), vec![mem.clone() as Arc<dyn Outbound>]);
    // `submit` is not async: the adapter acks as soon as it returns.
    let done = inbound
        .submit(event("trigger-1", "slack:U0ALICE", "app stop"))
        .0;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!done.is_finished(), "planning has not run yet");
    assert!(core.store.list_requests(None, 5).await.unwrap().is_empty());
    gate.add_permits(1);
    assert_eq!(done.await.unwrap(), Handled::Dispatched);
    assert_eq!(core.store.list_requests(None, 5).await.unwrap().len(), 1);
    dualkey::outbox::deliver_due(&core, mem.as_ref())
        .await
        .unwrap();
    let said = mem.drain();
    assert!(
        said.iter()
            .any(|s| matches!(s, Said::Post { channel, reply, .. }
            if channel == "C0OPS" && reply.to_text().contains("[approve:"))),
        "{said:#?}"
    );
}
both_backends!(the_ack_comes_before_planning_and_the_card_after_it);

/// A burst of deliveries, each sent twice at once, acts once per delivery; the dedupe inserts
/// share transactions.
async fn a_burst_of_redelivered_events_acts_once_each(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    let mem = MemoryAdapter::new(Platform::Slack);
    let inbound = Inbound::new(app.core.clone(), vec![mem.clone() as Arc<dyn Outbound>]);
    let mut tasks = Vec::new();
    for i in 0..40 {
        for _copy in 0..2 {
            let inbound = inbound.clone();
            tasks.push(
                inbound
                    .submit(event(&format!("trigger-{i}"), "slack:U0CAROL", "help"))
                    .0,
            );
        }
    }
    let mut accepted = 0;
    for t in tasks {
        if t.await.unwrap() == Handled::Dispatched {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 40);
    let texts: Vec<String> = mem
        .drain()
        .into_iter()
        .filter(|s| matches!(s, Said::Ephemeral { user, .. } if user == "U0CAROL"))
        .map(|s| s.reply().summary())
        .collect();
    let repeats = texts
        .iter()
        .filter(|t| t.starts_with("Already received"))
        .count();
    assert_eq!(texts.len() - repeats, 40, "one help answer per delivery");
    // Caught by the store after the ack, each second copy is told it runs nothing again.
    assert_eq!(repeats, 40, "{texts:?}");
}
both_backends!(a_burst_of_redelivered_events_acts_once_each);

/// Shutdown waits for events that were acked but are still being handled.
async fn drain_waits_for_acked_events_still_being_handled(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let core = gated_core(&app.core, &gate);
    let mem = MemoryAdapter::new(Platform::Slack);
    let inbound = Inbound::new(core.clone(), vec![mem.clone() as Arc<dyn Outbound>]);
    drop(inbound.submit(event("trigger-d", "slack:U0ALICE", "app stop")));
    assert!(
        !inbound.drain(std::time::Duration::from_millis(200)).await,
        "still planning"
    );
    gate.add_permits(1);
    assert!(inbound.drain(std::time::Duration::from_secs(10)).await);
    assert_eq!(core.store.list_requests(None, 5).await.unwrap().len(), 1);
}
both_backends!(drain_waits_for_acked_events_still_being_handled);

/// A delivery the store cannot record is not dispatched, and the sender is told.
async fn a_delivery_the_store_cannot_record_runs_nothing_and_says_so(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    let mem = MemoryAdapter::new(Platform::Slack);
    let inbound = Inbound::new(app.core.clone(), vec![mem.clone() as Arc<dyn Outbound>]);
    // The dedupe table is gone: recording any delivery fails.
    match b {
        Backend::Sqlite => {
            let url = app.core.settings.store.url.clone();
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("DROP TABLE dedupe")
                .execute(&mut c)
                .await
                .unwrap();
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let url = app.db.as_ref().unwrap().url.clone();
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query("DROP TABLE dedupe")
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
    let handled = mem
        .push(&inbound, event("trigger-x", "slack:U0ALICE", "app stop"))
        .await
        .unwrap();
    assert_eq!(handled, Handled::NotRecorded);
    assert!(app
        .core
        .store
        .list_requests(None, 5)
        .await
        .unwrap()
        .is_empty());
    let said = mem.drain();
    assert!(
        said.iter()
            .any(|s| matches!(s, Said::Ephemeral { user, reply, .. }
            if user == "U0ALICE" && reply.to_text().contains("could not record"))),
        "{said:#?}"
    );
}
both_backends!(a_delivery_the_store_cannot_record_runs_nothing_and_says_so);
