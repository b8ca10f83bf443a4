//! The HTTP server (`server.listen`): `GET /healthz` (the process answers), `GET /readyz` (the
//! state store answers) and `GET /metrics` (Prometheus text). The Slack and Discord endpoints
//! of SPEC section 9 are added here by their adapters.
//!
//! [`serve`] is a hand-written HTTP/1 accept loop rather than `axum::serve`, for two limits a
//! public endpoint needs: a header-read timeout (`server.header_read_timeout`: a connection
//! that has not sent a complete request head in time, idle or half-sent, is closed) and a
//! connection limit (`server.max_connections`: beyond it new connections wait in the listen
//! backlog until one closes). Without them every half-open connection stayed open forever.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::core::dispatch::Core;

/// The HTTP server's limits (from `[server]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time a client has to send a complete request head.
    pub header_read_timeout: Duration,
}

impl Limits {
    /// The limits configured in `[server]`.
    pub fn from_settings(s: &crate::config::ServerSettings) -> Limits {
        Limits {
            max_connections: s.max_connections.get(),
            header_read_timeout: s.header_read_timeout.0,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets every
/// open connection finish its request (idle ones close at once) and returns when all are gone.
///
/// Each connection holds a semaphore permit from before `accept` until it closes, so at most
/// `max_connections` are served at once and the rest wait in the kernel's backlog, without
/// costing a task or a descriptor here.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tokio::sync::{watch, Semaphore};

    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut full_logged = false;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => {
                full_logged = false;
                p
            }
            Err(_) => {
                if !full_logged {
                    tracing::warn!(
                        max_connections = max,
                        "HTTP connection limit reached (server.max_connections); new connections wait"
                    );
                    full_logged = true;
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                }
            }
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of descriptors and similar: the listener itself is fine; back off
                    // instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            // Released when the connection is gone, whatever the way.
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                // The guard `wait_for` returns is not `Send`: drop it inside this future.
                _ = async { drop(stop.wait_for(|v| *v).await) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every permit back means every connection closed.
    let _ = slots.acquire_many(max as u32).await;
}

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
    let _ = writeln!(out, "# HELP dualkey_signature_failures_total Chat requests refused for a bad, missing or stale signature since start.\n# TYPE dualkey_signature_failures_total counter");
    for (platform, n) in crate::adapters::signature_failures() {
        let _ = writeln!(
            out,
            "dualkey_signature_failures_total{{platform=\"{}\"}} {n}",
            platform.as_str()
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
