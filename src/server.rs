//! The HTTP server (`server.listen`): `GET /healthz` (the process answers), `GET /readyz` (the
//! state store answers) and `GET /metrics` (Prometheus text). The Slack and Discord endpoints
//! of SPEC section 9 are added here by their adapters.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::core::dispatch::Core;

/// The routes, sharing the core.
pub fn router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(core)
}

async fn readyz(State(core): State<Arc<Core>>) -> impl IntoResponse {
    match core.store.audit_head().await {
        Ok(_) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "state store unavailable\n".to_string(),
            )
        }
    }
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(State(core): State<Arc<Core>>) -> impl IntoResponse {
    let g = match core.store.gauges().await {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: store unavailable");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                "# state store unavailable\n".to_string(),
            );
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP dualkey_requests Approval requests by state.\n# TYPE dualkey_requests gauge"
    );
    for (state, n) in &g.requests {
        let _ = writeln!(out, "dualkey_requests{{state=\"{}\"}} {n}", label(state));
    }
    let _ = writeln!(
        out,
        "# HELP dualkey_operations Operations by state.\n# TYPE dualkey_operations gauge"
    );
    for (state, n) in &g.operations {
        let _ = writeln!(out, "dualkey_operations{{state=\"{}\"}} {n}", label(state));
    }
    let _ = writeln!(out, "# HELP dualkey_outbox_pending Chat messages not delivered yet.\n# TYPE dualkey_outbox_pending gauge");
    for (platform, n) in &g.outbox_pending {
        let _ = writeln!(
            out,
            "dualkey_outbox_pending{{platform=\"{}\"}} {n}",
            label(platform)
        );
    }
    let _ = writeln!(out, "# HELP dualkey_backups Backup catalog entries by environment and state.\n# TYPE dualkey_backups gauge");
    for (env, state, n) in &g.backups {
        let _ = writeln!(
            out,
            "dualkey_backups{{env=\"{}\",state=\"{}\"}} {n}",
            label(env),
            label(state)
        );
    }
    let _ = writeln!(out, "# HELP dualkey_audit_events_total Audit events written.\n# TYPE dualkey_audit_events_total counter\ndualkey_audit_events_total {}", g.audit_seq);
    let _ = writeln!(out, "# HELP dualkey_operations_in_flight Operations this process is running.\n# TYPE dualkey_operations_in_flight gauge\ndualkey_operations_in_flight {}", core.in_flight.load(std::sync::atomic::Ordering::SeqCst));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
}
