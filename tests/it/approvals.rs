//! The two-person rule, end to end through the dispatcher, on both store backends.

use std::sync::Arc;

use crate::both_backends;
use crate::support::{spawn_app, Backend};

async fn self_approval_is_refused(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    let card = app.cmd("alice", "app stop").await;
    let id = app.last_request().await;
    assert!(
        card.contains(&format!("[approve:{id}]")) && card.contains(&format!("[deny:{id}]")),
        "{card}"
    );
    let reply = app.click("alice", &format!("approve:{id}")).await;
    assert!(reply.contains("asked for this yourself"), "{reply}");
    assert_eq!(
        app.core
            .store
            .get_request(&id)
            .await
            .unwrap()
            .unwrap()
            .state,
        "pending"
    );
    assert!(app
        .core
        .store
        .operation_for_request(&id)
        .await
        .unwrap()
        .is_none());
    let tail = app.core.store.audit_tail(3).await.unwrap();
    assert!(
        tail.iter().any(|e| e.action == "vote.refused"),
        "refusal must be audited: {tail:?}"
    );
}
both_backends!(self_approval_is_refused);

async fn the_same_person_on_a_second_platform_cannot_approve(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    app.cmd("slack:U0ALICE", "app stop").await;
    let id = app.last_request().await;
    let reply = app
        .click("discord:300000000000000001", &format!("approve:{id}"))
        .await;
    assert!(reply.contains("asked for this yourself"), "{reply}");
    let reply = app.click("alice", &format!("approve:{id}")).await;
    assert!(reply.contains("asked for this yourself"), "{reply}");
    assert!(app.core.store.votes(&id).await.unwrap().is_empty());
}
both_backends!(the_same_person_on_a_second_platform_cannot_approve);

async fn a_non_approver_cannot_vote(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    app.cmd("alice", "app stop").await;
    let id = app.last_request().await;
    for who in ["carol", "dave", "slack:U0STRANGER"] {
        let reply = app.click(who, &format!("approve:{id}")).await;
        assert!(reply.contains("not an approver"), "{who}: {reply}");
    }
    assert!(app.core.store.votes(&id).await.unwrap().is_empty());
    assert_eq!(
        app.core
            .store
            .get_request(&id)
            .await
            .unwrap()
            .unwrap()
            .state,
        "pending"
    );
}
both_backends!(a_non_approver_cannot_vote);

async fn an_expired_request_cannot_be_approved(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    app.cmd("alice", "app stop").await;
    let id = app.last_request().await;
    app.clock.advance(15 * 60 * 1000);
    let reply = app.click("bob", &format!("approve:{id}")).await;
    assert!(reply.contains("expired"), "{reply}");
    assert_eq!(app.core.expire_requests().await.unwrap(), 1);
    assert_eq!(
        app.core
            .store
            .get_request(&id)
            .await
            .unwrap()
            .unwrap()
            .state,
        "expired"
    );
    app.drain_worker().await;
    assert!(app.marker_lines().is_empty(), "nothing may run");
}
both_backends!(an_expired_request_cannot_be_approved);

async fn a_denied_request_never_executes(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    app.cmd("alice", "app stop").await;
    let id = app.last_request().await;
    let reply = app.click("bob", &format!("deny:{id}")).await;
    assert!(reply.contains("Denied"), "{reply}");
    let reply = app.click("bob", &format!("approve:{id}")).await;
    assert!(
        reply.contains("already denied") || reply.contains("already voted"),
        "{reply}"
    );
    app.drain_worker().await;
    assert_eq!(
        app.core
            .store
            .get_request(&id)
            .await
            .unwrap()
            .unwrap()
            .state,
        "denied"
    );
    assert!(app
        .core
        .store
        .operation_for_request(&id)
        .await
        .unwrap()
        .is_none());
    assert!(app.marker_lines().is_empty());
}
both_backends!(a_denied_request_never_executes);

async fn a_double_click_counts_once(b: Backend) {
    let app = spawn_app(b, 2, 1).await;
    app.cmd("alice", "app stop").await;
    let id = app.last_request().await;
    app.click("bob", &format!("approve:{id}")).await;
    let again = app.click("slack:U0BOB", &format!("approve:{id}")).await;
    assert!(again.contains("already voted"), "{again}");
    assert_eq!(app.core.store.votes(&id).await.unwrap().len(), 1);
    assert_eq!(
        app.core
            .store
            .get_request(&id)
            .await
            .unwrap()
            .unwrap()
            .state,
        "pending"
    );
    app.click("approver0", &format!("approve:{id}")).await;
    assert_eq!(
        app.core
            .store
            .get_request(&id)
            .await
            .unwrap()
            .unwrap()
            .state,
        "approved"
    );
    app.drain_worker().await;
    assert_eq!(app.marker_lines(), vec!["stop"]);
}
both_backends!(a_double_click_counts_once);

async fn fifty_concurrent_approvals_run_the_operation_once(b: Backend) {
    let app = Arc::new(spawn_app(b, 2, 50).await);
    app.cmd("alice", "app stop").await;
    let id = app.last_request().await;
    let worker_app = app.clone();
    let drain = tokio::spawn(async move { worker_app.drain_worker().await });
    let mut tasks = Vec::new();
    for i in 0..50 {
        for _ in 0..2 {
            let app = app.clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                app.click(&format!("approver{i}"), &format!("approve:{id}"))
                    .await
            }));
        }
    }
    for _ in 0..10 {
        let app = app.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            app.click("bob", &format!("approve:{id}")).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    drain.await.unwrap();
    app.drain_worker().await;
    let req = app.core.store.get_request(&id).await.unwrap().unwrap();
    assert_eq!(req.state, "approved");
    let votes = app.core.store.votes(&id).await.unwrap();
    assert_eq!(
        votes.len(),
        2,
        "votes close once the request is approved: {votes:?}"
    );
    let op = app
        .core
        .store
        .operation_for_request(&id)
        .await
        .unwrap()
        .expect("one operation");
    assert_eq!(op.state, "succeeded");
    assert_eq!(
        app.core.store.recent_operations(100).await.unwrap().len(),
        1
    );
    assert_eq!(
        app.marker_lines(),
        vec!["stop"],
        "the app command ran exactly once"
    );
    assert!(dualkey::core::audit::verify_chain(app.core.store.as_ref())
        .await
        .unwrap()
        .is_ok());
}
both_backends!(fifty_concurrent_approvals_run_the_operation_once);

async fn a_busy_environment_refuses_a_second_request_and_names_the_holder(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    app.cmd("alice", "app start").await;
    let op = app.core.store.active_operations().await.unwrap().remove(0);
    let reply = app.cmd("alice", "app stop").await;
    assert!(reply.contains("busy") && reply.contains(&op.id), "{reply}");
    let other_env = app.cmd("alice", "app stop staging").await;
    assert!(other_env.contains("[approve:"), "{other_env}");
}
both_backends!(a_busy_environment_refuses_a_second_request_and_names_the_holder);

async fn a_changed_plan_stops_before_the_first_step(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    app.cmd("alice", "app stop").await;
    let id = app.last_request().await;
    // Approve, then change what the plan depends on before the worker runs it.
    app.click("bob", &format!("approve:{id}")).await;
    let marker = app.marker.display().to_string();
    let changed = app.with_settings(|s| {
        s.environments.get_mut("production").unwrap().app_stop = Some(vec![
            "sh".into(),
            "-c".into(),
            format!("echo changed >> '{marker}'"),
        ]);
    });
    changed.drain_worker().await;
    let op = app
        .core
        .store
        .operation_for_request(&id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(op.state, "failed");
    assert!(op.error.unwrap().contains("plan changed"));
    assert!(
        app.core.store.steps(&op.id).await.unwrap().is_empty(),
        "no step may start"
    );
    assert!(app.marker_lines().is_empty());
}
both_backends!(a_changed_plan_stops_before_the_first_step);

async fn unknown_people_get_nothing_and_viewers_cannot_request(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    let r = app.cmd("slack:U0STRANGER", "status").await;
    assert!(r.contains("not allowed"), "{r}");
    let r = app.cmd("carol", "app stop").await;
    assert!(r.contains("needs the operator role"), "{r}");
    let r = app.cmd("carol", "status").await;
    assert!(r.contains("dualkey status for production"), "{r}");
    assert!(app
        .core
        .store
        .list_requests(None, 10)
        .await
        .unwrap()
        .is_empty());
}
both_backends!(unknown_people_get_nothing_and_viewers_cannot_request);

async fn cancel_withdraws_a_pending_request(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    app.cmd("alice", "app stop").await;
    let id = app.last_request().await;
    let r = app.cmd("carol", &format!("cancel {id}")).await;
    assert!(r.contains("only the requester or an approver"), "{r}");
    let r = app.cmd("alice", &format!("cancel {id}")).await;
    assert!(r.contains("Cancelled"), "{r}");
    let r = app.click("bob", &format!("approve:{id}")).await;
    assert!(r.contains("already cancelled"), "{r}");
    app.drain_worker().await;
    assert!(app.marker_lines().is_empty());
}
both_backends!(cancel_withdraws_a_pending_request);

async fn hostile_commands_are_rejected_with_usage_and_run_nothing(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    let long = "x".repeat(10_000);
    for text in [
        "app stop ../production",
        "app stop production;reboot",
        "app stop 'production'",
        "app stop \u{043f}\u{0440}\u{043e}\u{0434}",
        "",
        &long,
        "nope",
    ] {
        let r = app.cmd("alice", text).await;
        assert!(r.contains("usage") || r.contains("help"), "{text:?}: {r}");
    }
    for click in [
        "approve:../../x",
        "approve:r123;drop",
        "explode:r0123456789",
        "",
    ] {
        let r = app.click("bob", click).await;
        assert!(r.contains("Unknown button"), "{click:?}: {r}");
    }
    assert!(app
        .core
        .store
        .list_requests(None, 10)
        .await
        .unwrap()
        .is_empty());
    app.drain_worker().await;
    assert!(app.marker_lines().is_empty());
}
both_backends!(hostile_commands_are_rejected_with_usage_and_run_nothing);

async fn the_same_delivery_handled_twice_acts_once(b: Backend) {
    use dualkey::core::event::{ChannelRef, EventKind, InboundEvent, Platform};
    let app = spawn_app(b, 1, 0).await;
    let ev = InboundEvent::new(
        "trigger-123".into(),
        crate::support::actor("alice"),
        ChannelRef {
            platform: Platform::Shell,
            id: "test".into(),
        },
        EventKind::Command {
            text: "app stop".into(),
        },
    );
    let cap = crate::support::Capture::default();
    app.core.handle(ev.clone(), &cap).await;
    app.core.handle(ev, &cap).await;
    assert_eq!(
        app.core.store.list_requests(None, 10).await.unwrap().len(),
        1
    );
}
both_backends!(the_same_delivery_handled_twice_acts_once);

async fn progress_edits_the_operation_card_through_the_outbox(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    app.cmd("alice", "app stop").await;
    let id = app.last_request().await;
    let req = app.core.store.get_request(&id).await.unwrap().unwrap();
    let op = dualkey::store::OperationRow {
        id: "o000000001".into(),
        request_id: Some(id.clone()),
        env: req.env.clone(),
        kind_json: req.kind_json.clone(),
        plan_json: req.plan_json.clone(),
        fingerprint: req.fingerprint.clone(),
        requester: req.requester.clone(),
        state: "running".parse().unwrap(),
        current_step: Some(0),
        created_at: 0,
        started_at: None,
        finished_at: None,
        worker: None,
        heartbeat_at: None,
        error: None,
        channel_json: req.channel_json.clone(),
        message_json: req.message_json.clone(),
    };
    let mut tx = app.core.store.begin().await.unwrap();
    tx.insert_operation(&op).await.unwrap();
    tx.commit().await.unwrap();
    app.core
        .show_progress(&op, "backup b1: 1.5 GB written, 12s elapsed")
        .await
        .unwrap();
    let rows = app.core.store.outbox_all("shell").await.unwrap();
    let last = rows.last().expect("an edit was queued");
    assert_eq!(last.op, "edit");
    assert_eq!(
        last.card_key.as_deref(),
        Some(format!("request:{id}").as_str())
    );
    let queued: dualkey::core::reply::Reply = serde_json::from_str(&last.payload).unwrap();
    assert!(
        queued
            .to_text()
            .contains("progress: backup b1: 1.5 GB written, 12s elapsed"),
        "{}",
        last.payload
    );
    // Delivered, it edits the message the card was posted as, not a new one.
    let (_, _, posted) = app
        .core
        .store
        .card_messages(&format!("request:{id}"))
        .await
        .unwrap()
        .remove(0);
    let said = app.deliver_shell().await;
    match said.last() {
        Some(dualkey::adapters::memory::Said::Edit {
            id: edited, reply, ..
        }) => {
            assert_eq!(Some(edited), posted.as_ref(), "the same card is edited");
            assert!(
                reply.to_text().contains("progress: backup b1"),
                "{}",
                reply.to_text()
            );
        }
        other => panic!("expected an edit of the card, got {other:?}"),
    }
}
both_backends!(progress_edits_the_operation_card_through_the_outbox);

/// On PostgreSQL, replicas share the store: only operations whose heartbeat went stale are
/// taken for dead; on SQLite every running operation is stale at start-up.
async fn only_operations_with_a_stale_heartbeat_are_marked_interrupted(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    app.cmd("alice", "app start").await;
    app.cmd("alice", "app start staging").await;
    let now = app.core.clock.now_ms();
    let mut tx = app.core.store.begin().await.unwrap();
    let first = tx
        .claim_operation("replica-a", now - 60_000)
        .await
        .unwrap()
        .unwrap();
    let second = tx.claim_operation("replica-b", now).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_ne!(first.env, second.env);
    let stale = dualkey::services::worker::Worker::recover_interrupted(&app.core, false)
        .await
        .unwrap();
    assert_eq!(
        stale.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        vec![first.id.clone()]
    );
    assert_eq!(
        app.core
            .store
            .get_operation(&first.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        "interrupted"
    );
    assert_eq!(
        app.core
            .store
            .get_operation(&second.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        "running"
    );
    let at_start = dualkey::services::worker::Worker::recover_interrupted(&app.core, true)
        .await
        .unwrap();
    let expected: Vec<String> = if b == Backend::Sqlite {
        vec![second.id.clone()]
    } else {
        vec![]
    };
    assert_eq!(
        at_start.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        expected
    );
}
both_backends!(only_operations_with_a_stale_heartbeat_are_marked_interrupted);

/// `status` reaches adapters as label/value fields (Slack renders them as fields), not as text
/// that would have to be parsed again.
async fn status_is_a_report_of_fields(b: Backend) {
    use dualkey::core::ports::ReportRequest;
    use dualkey::core::reply::Body;
    let app = spawn_app(b, 1, 0).await;
    app.cmd("alice", "app stop").await;
    let reply = app
        .core
        .facts
        .report(app.core.reads(), ReportRequest::Status("production".into()))
        .await
        .unwrap();
    let Body::Report(r) = &reply.body else {
        panic!("status is a report: {reply:?}")
    };
    let fields: Vec<&(String, String)> = r.sections.iter().flat_map(|s| &s.fields).collect();
    let value = |label: &str| {
        fields
            .iter()
            .find(|(k, _)| k == label)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no `{label}` field in {fields:?}"))
    };
    assert_eq!(value("newest backup"), "NONE verified");
    assert_eq!(value("app"), "backend running");
    assert_eq!(value("open requests"), "1");
    assert!(value("database").starts_with("UNREACHABLE"), "{fields:?}");
}
both_backends!(status_is_a_report_of_fields);
