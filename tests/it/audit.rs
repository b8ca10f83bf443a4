//! The audit chain on both store backends: intact chains verify; an altered, removed or
//! truncated row is named.

use crate::both_backends;
use crate::support::{spawn_app, Backend};
use dualkey::core::audit::verify_chain;

async fn tamper(app: &crate::support::TestApp, sql: &str) {
    match &app.db {
        Some(db) => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        None => {
            let url = format!("sqlite://{}/state/dualkey.db", app.dir.path().display());
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
    }
}

async fn audit_verify_names_the_first_altered_event(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    app.cmd("alice", "app stop").await;
    let id = app.last_request().await;
    app.click("bob", &format!("approve:{id}")).await;
    app.drain_worker().await;
    let n = verify_chain(app.core.store.as_ref())
        .await
        .unwrap()
        .expect("intact");
    assert!(n >= 8, "every step is audited, got {n}");
    let r = app.cmd("carol", "audit verify").await;
    assert!(r.contains("intact"), "{r}");
    tamper(
        &app,
        "UPDATE audit_events SET details = '{\"request\":\"forged\"}' WHERE seq = 4",
    )
    .await;
    let broken = verify_chain(app.core.store.as_ref())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(broken.seq, 4, "{broken}");
    let r = app.cmd("carol", "audit verify").await;
    assert!(r.contains("BROKEN") && r.contains("#4"), "{r}");
}
both_backends!(audit_verify_names_the_first_altered_event);

async fn removing_events_is_detected(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    for _ in 0..3 {
        app.cmd("carol", "status").await;
    }
    tamper(&app, "DELETE FROM audit_events WHERE seq = 2").await;
    assert_eq!(
        verify_chain(app.core.store.as_ref())
            .await
            .unwrap()
            .unwrap_err()
            .seq,
        2
    );
    let app = spawn_app(b, 1, 0).await;
    for _ in 0..3 {
        app.cmd("carol", "status").await;
    }
    tamper(&app, "DELETE FROM audit_events WHERE seq = 3").await;
    assert_eq!(
        verify_chain(app.core.store.as_ref())
            .await
            .unwrap()
            .unwrap_err()
            .seq,
        3
    );
}
both_backends!(removing_events_is_detected);

async fn every_step_is_audited_before_and_after(b: Backend) {
    let app = spawn_app(b, 1, 0).await;
    app.cmd("alice", "app start").await;
    app.drain_worker().await;
    let actions = app.audit_actions().await;
    let pos = |a: &str| {
        actions
            .iter()
            .position(|x| x == a)
            .unwrap_or_else(|| panic!("{a} missing in {actions:?}"))
    };
    assert!(pos("operation.queued") < pos("operation.started"));
    assert!(pos("operation.started") < pos("step.started"));
    assert!(pos("step.started") < pos("step.finished"));
    assert!(pos("step.finished") < pos("operation.succeeded"));
    assert_eq!(app.marker_lines(), vec!["start"]);
}
both_backends!(every_step_is_audited_before_and_after);
