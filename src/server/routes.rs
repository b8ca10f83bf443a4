//! The routes of the two listeners: `/healthz` and `/readyz` here, `/metrics` in `metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::metrics::metrics_page;
use crate::core::context::Core;

/// The routes of `server.listen` before the adapters add theirs: `/healthz` always (a
/// constant answer that costs nothing, kept for probes that already use this port), and
/// `/readyz` and `/metrics` only when there is no admin listener (`with_admin` false). With one,
/// they stay off the public port: each costs a store query, so an unauthenticated flood of them
/// would load the store, and `/metrics` names environments and counts backups.
pub fn router(core: Arc<Core>, with_admin: bool) -> Router {
    if with_admin {
        Router::new().route("/healthz", get(healthz))
    } else {
        admin_router(core)
    }
}

/// The routes of `server.admin_listen`: `/healthz`, `/readyz`, `/metrics`.
pub fn admin_router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .with_state(core)
}

async fn healthz() -> &'static str {
    "ok\n"
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
