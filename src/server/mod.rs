//! The HTTP servers. `server.listen` takes the Slack and Discord endpoints of SPEC section 9
//! (added by their adapters) and `GET /healthz`; `server.admin_listen`, when set, serves
//! `GET /healthz` (the process answers), `GET /readyz` (the state store answers) and
//! `GET /metrics` (Prometheus text) on a port of its own. Without `admin_listen` all three
//! stay on `server.listen`, as before.
//!
//! [`serve`] is a hand-written HTTP/1 accept loop rather than `axum::serve`, for the limits a
//! public endpoint needs, so that no client can hold the bot without a signature:
//! - a header-read timeout (`server.header_read_timeout`): a connection that has not sent a
//!   complete request head in time (idle, half-sent, or kept alive and silent) is closed;
//! - a body deadline (`server.body_read_timeout`): once the head is in, the whole body must
//!   arrive within it, or the client gets `408` and its connection is closed. This also covers
//!   `Expect: 100-continue` with no body and a body sent one byte at a time. The body is read
//!   here (at most [`MAX_BODY`], larger ones get `413` from their `Content-Length` alone) before
//!   any route runs, so a handler never runs under the deadline and is never cut off mid-way;
//! - a write deadline (the same `server.body_read_timeout`): a client that takes none of our
//!   answer for that long (say it pipelines requests and never reads) is closed;
//! - a connection limit (`server.max_connections`): when it is reached and another client
//!   connects, the connection that has waited longest without a request in progress is closed
//!   to make room (`slots::Waiting`), so slow clients cannot keep a signed command out; when every
//!   slot is handling a request, new connections wait in the listen backlog.
//!
//! A request thus holds a connection for at most `header_read_timeout + body_read_timeout`
//! before its handler runs. The admin listener has its own connection limit
//! ([`ADMIN_MAX_CONNECTIONS`]), so a flood of the chat port leaves it answering.
//!
//! Here: the limits and the listeners; `accept` holds the accept loop and one connection,
//! `slots` the guards against slow clients, `routes` and `metrics` the routes.

use std::time::Duration;

use crate::config::ServerSettings;

mod accept;
mod metrics;
mod routes;
mod slots;

pub use accept::serve;
pub use routes::{admin_router, router};
pub use slots::slow_clients;

/// The largest request body any route takes: the Slack and Discord endpoints take 64 KiB.
pub const MAX_BODY: usize = 64 * 1024;

const _: () = assert!(
    MAX_BODY >= crate::adapters::slack::inbound::MAX_BODY
        && MAX_BODY >= crate::adapters::discord::interactions::MAX_BODY
);

/// Connections the admin listener serves at once (probes and scrapes, not chat traffic).
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The HTTP server's limits (from `[server]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time a client has to send a complete request head.
    pub header_read_timeout: Duration,
    /// Time a client has, once its head is in, to send the whole body.
    pub body_read_timeout: Duration,
}

impl Limits {
    /// The limits configured in `[server]`.
    pub fn from_settings(s: &ServerSettings) -> Limits {
        Limits {
            max_connections: s.max_connections.get(),
            header_read_timeout: s.header_read_timeout.0,
            body_read_timeout: s.body_read_timeout.0,
        }
    }

    /// The admin listener's limits: the same deadlines, its own connection limit.
    pub fn admin(s: &ServerSettings) -> Limits {
        Limits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            ..Limits::from_settings(s)
        }
    }
}

/// The bound listeners of `serve`: `server.listen` and, when set, `server.admin_listen`.
pub struct Listeners {
    /// `server.listen`: the chat endpoints (and `/healthz`).
    pub main: tokio::net::TcpListener,
    /// `server.admin_listen`: `/healthz`, `/readyz`, `/metrics`.
    pub admin: Option<tokio::net::TcpListener>,
}

impl Listeners {
    /// Binds `server.listen` and `server.admin_listen` (when set); the error names the key.
    pub async fn bind(s: &ServerSettings) -> Result<Listeners, String> {
        let bind = |addr: String, key: &'static str| async move {
            tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} ({key}): {e}"))
        };
        let main = bind(s.listen.clone(), "server.listen").await?;
        let admin = match s.admin_listen.as_str() {
            "" => None,
            a => Some(bind(a.to_string(), "server.admin_listen").await?),
        };
        Ok(Listeners { main, admin })
    }
}

impl From<tokio::net::TcpListener> for Listeners {
    /// `server.listen` alone, no admin listener.
    fn from(main: tokio::net::TcpListener) -> Listeners {
        Listeners { main, admin: None }
    }
}
