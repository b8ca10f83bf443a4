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
//!   to make room ([`Waiting`]), so slow clients cannot keep a signed command out; when every
//!   slot is handling a request, new connections wait in the listen backlog.
//!
//! A request thus holds a connection for at most `header_read_timeout + body_read_timeout`
//! before its handler runs. The admin listener has its own connection limit
//! ([`ADMIN_MAX_CONNECTIONS`]), so a flood of the chat port leaves it answering.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::config::ServerSettings;
use crate::core::dispatch::Core;

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

/// Connections closed for slowness since start, by what was too slow: the request head (idle
/// kept-alive connections included), the body, or the taking of an answer; or closed early,
/// while every slot was taken, to make room for a new client (`evicted`, see [`Waiting`]).
static SLOW_CLIENTS: [std::sync::atomic::AtomicU64; 4] = [
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
];
const SLOW_PHASES: [&str; 4] = ["head", "body", "answer", "evicted"];

fn count_slow(phase: usize) {
    SLOW_CLIENTS[phase].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// [`SLOW_CLIENTS`] with their phase names, for `/metrics`.
pub fn slow_clients() -> [(&'static str, u64); 4] {
    std::array::from_fn(|i| {
        (
            SLOW_PHASES[i],
            SLOW_CLIENTS[i].load(std::sync::atomic::Ordering::Relaxed),
        )
    })
}

/// An answer that closes the connection (`Connection: close`): the request was not read.
fn refuse(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONNECTION, "close")], text).into_response()
}

/// Reads the whole body of `req` within `deadline` (at most [`MAX_BODY`]) and hands the
/// request, its body in memory, to `app`; answers `408`/`413`/`400` itself when the body does
/// not arrive in time, is too large or breaks off.
async fn with_body_deadline(
    app: Router,
    req: Request<hyper::body::Incoming>,
    deadline: Duration,
    slot: &Arc<Slot>,
) -> Response {
    use hyper::service::Service as _;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    }
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(Body::new(body), MAX_BODY);
    let bytes = match tokio::time::timeout(deadline, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "HTTP request body refused");
            return refuse(
                StatusCode::BAD_REQUEST,
                "request body unreadable or too large\n",
            );
        }
        Err(_) => {
            count_slow(1);
            tracing::debug!("HTTP request body not received within server.body_read_timeout");
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time\n",
            );
        }
    };
    // The request is in: from here on the connection is not evicted (a handler is never cut
    // off mid-way), unless it was chosen a moment ago, and then no handler starts.
    if !slot.busy() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "server busy; connection closed to make room\n",
        );
    }
    let service = hyper_util::service::TowerToHyperService::new(app);
    let response = match service
        .call(Request::from_parts(parts, Body::from(bytes)))
        .await
    {
        Ok(r) => r,
        Err(never) => match never {},
    };
    // Waiting again (evictable) once the answer is written, not before: see [`Answered`].
    response.map(|body| {
        Body::new(Answered {
            inner: body,
            slot: slot.clone(),
        })
    })
}

/// An answer's body that marks its connection waiting again when it is gone: written in full
/// (hyper drops a body once its last frame is out) or dropped with the connection. Until then a
/// flood of new clients cannot evict the connection and cut its answer (a Slack ack) short.
struct Answered {
    inner: Body,
    slot: Arc<Slot>,
}

impl Drop for Answered {
    fn drop(&mut self) {
        self.slot.waiting();
    }
}

impl axum::body::HttpBody for Answered {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The connections of one server that hold a slot while no request of theirs is being handled:
/// waiting for a request head, reading a body, or idle between kept-alive requests. When every
/// slot is taken and another client is waiting to connect, the one that has waited longest
/// is closed to make room ([`Waiting::evict_oldest`]).
///
/// Without this, `max_connections` clients that send a byte now and then would hold every slot
/// until their deadlines, and a signed command behind them would wait just as long. A request
/// whose body is in is never evicted, so no handler (signature check, store write) is cut off.
#[derive(Default)]
struct Waiting {
    next: std::sync::atomic::AtomicU64,
    /// Connections by when they started waiting (a counter, oldest first).
    since: std::sync::Mutex<std::collections::BTreeMap<u64, Arc<tokio::sync::Notify>>>,
}

impl Waiting {
    /// Closes the connection that has waited longest; false when none is waiting (every
    /// slot is serving a request).
    fn evict_oldest(&self) -> bool {
        let oldest = self.since.lock().expect("waiting list").pop_first();
        match oldest {
            Some((_, evict)) => {
                evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// One connection's place in [`Waiting`].
struct Slot {
    all: Arc<Waiting>,
    /// Notified (a stored permit) when this connection is chosen to be closed.
    evict: Arc<tokio::sync::Notify>,
    /// Its key in `all.since` while waiting; `None` while a request is handled, or once evicted.
    key: std::sync::Mutex<Option<u64>>,
}

impl Slot {
    /// A new connection, waiting for its first request.
    fn new(all: Arc<Waiting>) -> Slot {
        let slot = Slot {
            all,
            evict: Arc::new(tokio::sync::Notify::new()),
            key: std::sync::Mutex::new(None),
        };
        slot.waiting();
        slot
    }

    /// Waiting again (for a request head or body): may be evicted.
    fn waiting(&self) {
        let mut since = self.all.since.lock().expect("waiting list");
        let mut key = self.key.lock().expect("slot key");
        let k = self
            .all
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        since.insert(k, self.evict.clone());
        *key = Some(k);
    }

    /// A request is being handled: no longer evictable. False when it was evicted already.
    fn busy(&self) -> bool {
        let mut since = self.all.since.lock().expect("waiting list");
        let mut key = self.key.lock().expect("slot key");
        match key.take() {
            Some(k) => since.remove(&k).is_some(),
            None => true,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.busy();
    }
}

/// A connection whose writes fail with `TimedOut` once the peer has taken none of our bytes
/// for `limit`: a client that sends requests but never reads the answers (pipelining into a
/// full socket buffer) would otherwise hold its connection forever.
struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, limit: Duration) -> Self {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// `Ready(Err)` when the write has been stuck for `limit`; clears the clock on progress.
    fn check<R>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        polled: std::task::Poll<std::io::Result<R>>,
    ) -> std::task::Poll<std::io::Result<R>> {
        use std::task::Poll;
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took none of the answer in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, polled)
    }
}

/// Counts a server's open connections; when the last of a burst of at least [`BURST`] closes,
/// hands the freed memory back to the system.
///
/// glibc's allocator keeps memory freed by many threads in its arenas: after a flood of slow
/// clients the process would stay tens of MB larger for good (issue 19 measured 32 -> 86 MB).
/// `malloc_trim` returns those pages; it runs once per burst, off the async threads.
#[derive(Default)]
struct Burst {
    open: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

/// Open connections that count as a burst worth trimming after.
const BURST: usize = 32;

impl Burst {
    fn opened(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.open.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
    }

    fn closed(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.open.fetch_sub(1, SeqCst) == 1 && self.peak.swap(0, SeqCst) >= BURST {
            tokio::task::spawn_blocking(release_freed_memory);
        }
    }
}

/// Returns memory the allocator holds but does not use to the system (glibc only).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
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
    use tokio::sync::{watch, Semaphore};

    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut full_logged = false;
    let burst = Arc::new(Burst::default());
    let waiting = Arc::new(Waiting::default());
    loop {
        let (permit, stream) = match slots.clone().try_acquire_owned() {
            Ok(p) => {
                full_logged = false;
                tokio::select! {
                    _ = &mut shutdown => break,
                    s = accept(&listener) => (p, s),
                }
            }
            Err(_) => {
                if !full_logged {
                    tracing::warn!(
                        max_connections = max,
                        "HTTP connection limit reached (server.max_connections); the connection waiting longest without a request makes room for a new one"
                    );
                    full_logged = true;
                }
                // Full: a client that connects now takes the place of the connection that
                // has waited longest without a request (when every slot serves a request, it
                // waits for one to finish, holding this one accepted connection only).
                let stream = tokio::select! {
                    _ = &mut shutdown => break,
                    p = slots.clone().acquire_owned() => {
                        let p = p.expect("the semaphore is never closed");
                        tokio::select! {
                            _ = &mut shutdown => break,
                            s = accept(&listener) => (p, s),
                        }
                    }
                    s = accept(&listener) => {
                        if s.is_some() {
                            waiting.evict_oldest();
                        }
                        let p = tokio::select! {
                            _ = &mut shutdown => break,
                            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                        };
                        (p, s)
                    }
                };
                stream
            }
        };
        let Some(stream) = stream else { continue };
        burst.opened();
        tokio::spawn(connection(
            stream,
            app.clone(),
            limits,
            stop_rx.clone(),
            (permit, burst.clone(), Slot::new(waiting.clone())),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every permit back means every connection closed.
    let _ = slots.acquire_many(max as u32).await;
}

/// The next connection; `None` after a failed accept (out of descriptors and similar: the
/// listener itself is fine), after a short pause instead of spinning.
async fn accept(listener: &tokio::net::TcpListener) -> Option<tokio::net::TcpStream> {
    match listener.accept().await {
        Ok((stream, _peer)) => Some(stream),
        Err(e) => {
            tracing::warn!(error = %e, "HTTP accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// Serves one connection until it closes, or, once `stop` turns true, until its request in
/// progress is answered, or until it is evicted while waiting (see [`Waiting`]); then gives
/// back its slot and counts it closed.
async fn connection(
    stream: tokio::net::TcpStream,
    app: Router,
    limits: Limits,
    mut stop: tokio::sync::watch::Receiver<bool>,
    (permit, burst, slot): (tokio::sync::OwnedSemaphorePermit, Arc<Burst>, Slot),
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slot = Arc::new(slot);
    let evicted = slot.evict.clone();
    let service = hyper::service::service_fn(move |req| {
        let (app, slot) = (app.clone(), slot.clone());
        async move {
            Ok::<_, std::convert::Infallible>(
                with_body_deadline(app, req, limits.body_read_timeout, &slot).await,
            )
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(
            TokioIo::new(WriteDeadline::new(stream, limits.body_read_timeout)),
            service,
        );
    let served = async move {
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            // The guard `wait_for` returns is not `Send`: drop it inside this future.
            _ = async { drop(stop.wait_for(|v| *v).await) } => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    };
    let served = tokio::select! {
        r = served => r,
        // Chosen to make room: only while no request of ours is handled, so nothing is cut
        // off but a wait.
        _ = evicted.notified() => {
            count_slow(3);
            tracing::debug!("HTTP connection closed to make room for a new one");
            Ok(())
        }
    };
    if let Err(e) = served {
        if e.is_timeout() {
            count_slow(0);
        } else if stalled_write(&e) {
            count_slow(2);
        }
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
    // The connection and its buffers are gone: give back the slot, then the memory.
    drop(permit);
    burst.closed();
}

/// Whether `e` comes from [`WriteDeadline`]: an I/O error `TimedOut` among its causes.
fn stalled_write(e: &hyper::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

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

/// What `/metrics` reads at scrape time: the store's counts, the newest healthy backup and the
/// last finished drill of each environment, and this process's counters.
struct Scrape {
    gauges: crate::store::Gauges,
    /// (env, started_at) of the newest healthy verified backup.
    newest_backup: Vec<(String, i64)>,
    /// (env, succeeded, finished at) of the last finished drill.
    last_drill: Vec<(String, bool, i64)>,
    now: i64,
    in_flight: usize,
}

impl Scrape {
    async fn read(core: &Core) -> anyhow::Result<Scrape> {
        let gauges = core.store.gauges().await?;
        let (mut newest_backup, mut last_drill) = (Vec::new(), Vec::new());
        for env in core.settings.environments.keys() {
            let all = core.store.list_backups(env).await?;
            // The newest verified backup whose file looks intact (stat only: a scrape never
            // reads a backup end to end nor writes to the store). A file with a new
            // modification time but its size counts until the scheduler's backup-age check,
            // which hashes it, says otherwise.
            let looks_healthy = |b: &&crate::store::BackupRow| {
                matches!(
                    crate::services::backups::health::backup_health(b),
                    "ok" | crate::services::backups::health::BACKUP_TOUCHED
                )
            };
            if let Some(b) = all.iter().find(looks_healthy) {
                newest_backup.push((env.clone(), b.started_at));
            }
            let drills = core.store.drills(env).await?;
            if let Some(d) = drills.iter().find(|d| d.state != "running") {
                let finished = d.started_at + d.duration_ms.unwrap_or(0);
                last_drill.push((env.clone(), d.state == "ok", finished));
            }
        }
        Ok(Scrape {
            gauges,
            newest_backup,
            last_drill,
            now: core.clock.now_ms(),
            in_flight: core.in_flight.load(std::sync::atomic::Ordering::SeqCst),
        })
    }

    /// Sets every scrape-time family on the current (local) recorder.
    fn record(&self, envs: &[String]) {
        use metrics::{counter, gauge};
        describe_scrape();
        let g = &self.gauges;
        let secs = |ms: i64| ms as f64 / 1000.0;
        for (state, n) in &g.requests {
            gauge!("dualkey_requests", "state" => state.clone()).set(*n as f64);
        }
        for (state, n) in &g.operations {
            gauge!("dualkey_operations", "state" => state.clone()).set(*n as f64);
        }
        for (platform, n) in &g.outbox_pending {
            gauge!("dualkey_outbox_pending", "platform" => platform.clone()).set(*n as f64);
        }
        for (env, state, n) in &g.backups {
            gauge!("dualkey_backups", "env" => env.clone(), "state" => state.clone())
                .set(*n as f64);
        }
        for (platform, channel, n, oldest) in &g.lanes {
            let lane = [("platform", platform.clone()), ("channel", channel.clone())];
            gauge!("dualkey_outbox_lane_depth", &lane).set(*n as f64);
            gauge!("dualkey_outbox_lane_oldest_age_seconds", &lane)
                .set(secs(self.now - oldest).max(0.0));
        }
        for env in envs {
            let open = g.open_windows.iter().find(|(e, _)| e == env);
            gauge!("dualkey_monitoring_windows_open", "env" => env.clone())
                .set(open.map_or(0.0, |(_, n)| *n as f64));
        }
        for (env, started_at) in &self.newest_backup {
            gauge!("dualkey_backup_newest_verified_age_seconds", "env" => env.clone())
                .set(secs(self.now - started_at).max(0.0));
        }
        for (env, ok, finished) in &self.last_drill {
            gauge!("dualkey_drill_last_success", "env" => env.clone()).set(u8::from(*ok));
            gauge!("dualkey_drill_last_timestamp_seconds", "env" => env.clone())
                .set(secs(*finished));
        }
        counter!("dualkey_audit_events_total").absolute(g.audit_seq.max(0) as u64);
        gauge!("dualkey_operations_in_flight").set(self.in_flight as f64);
        for (platform, n) in crate::adapters::signature_failures() {
            counter!("dualkey_signature_failures_total", "platform" => platform.as_str())
                .absolute(n);
        }
        for (phase, n) in slow_clients() {
            counter!("dualkey_http_slow_clients_total", "phase" => phase).absolute(n);
        }
    }
}

/// The help lines of the scrape-time families.
fn describe_scrape() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_gauge!("dualkey_requests", "Approval requests by state.");
    describe_gauge!("dualkey_operations", "Operations by state.");
    describe_gauge!(
        "dualkey_outbox_pending",
        "Chat messages not delivered yet (given-up ones included), by platform."
    );
    describe_gauge!(
        "dualkey_backups",
        "Backup catalog entries by environment and state."
    );
    describe_gauge!(
        "dualkey_outbox_lane_depth",
        "Chat messages waiting to be sent per lane (platform and channel)."
    );
    describe_gauge!(
        "dualkey_outbox_lane_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest message waiting in a lane."
    );
    describe_gauge!(
        "dualkey_monitoring_windows_open",
        "Open post-change monitoring windows by environment."
    );
    describe_gauge!(
        "dualkey_backup_newest_verified_age_seconds",
        Unit::Seconds,
        "Age of the newest verified backup with a healthy file, by environment (absent while there is none)."
    );
    describe_gauge!(
        "dualkey_drill_last_success",
        "1 when the last finished restore drill of the environment succeeded, 0 when it failed."
    );
    describe_gauge!(
        "dualkey_drill_last_timestamp_seconds",
        Unit::Seconds,
        "When the last finished restore drill of the environment ended (Unix time)."
    );
    describe_counter!("dualkey_audit_events_total", "Audit events written.");
    describe_gauge!(
        "dualkey_operations_in_flight",
        "Operations this process is running."
    );
    describe_counter!(
        "dualkey_signature_failures_total",
        "Chat requests refused for a bad, missing or stale signature since start."
    );
    describe_counter!("dualkey_http_slow_clients_total", "HTTP connections closed since start because the request head (idle kept-alive connections included), the body or the taking of an answer was too slow, or evicted to make room.");
}

/// `GET /metrics`: the process-wide event metrics ([`crate::core::meter`]) and the families
/// read at scrape time, rendered by `metrics-exporter-prometheus` (text format 0.0.4).
async fn metrics_page(State(core): State<Arc<Core>>) -> impl IntoResponse {
    let content = [(header::CONTENT_TYPE, "text/plain; version=0.0.4")];
    let scrape = match Scrape::read(&core).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "metrics: store unavailable");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                content,
                "# state store unavailable\n".to_string(),
            );
        }
    };
    // A recorder of this scrape's own: a lane drained or a state left since the last scrape
    // leaves no stale series behind.
    let local = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let envs: Vec<String> = core.settings.environments.keys().cloned().collect();
    metrics::with_local_recorder(&local, || scrape.record(&envs));
    let mut out = crate::core::meter::handle().render();
    out.push_str(&local.handle().render());
    (StatusCode::OK, content, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_evictable_while_it_waits_and_not_while_its_request_or_answer_is_out() {
        let all = Arc::new(Waiting::default());
        let older = Arc::new(Slot::new(all.clone()));
        let slot = Arc::new(Slot::new(all.clone()));
        assert!(older.busy() && slot.busy(), "both requests are in");
        assert!(!all.evict_oldest(), "handlers run: nothing to evict");
        let answer = Answered {
            inner: Body::from("ok"),
            slot: slot.clone(),
        };
        assert!(
            !all.evict_oldest(),
            "an answer still being written is not cut"
        );
        drop(answer);
        older.waiting();
        assert!(all.evict_oldest(), "idle again: evictable");
        assert!(
            !slot.busy(),
            "the one waiting longest (its answer out first) was chosen, and starts no handler"
        );
        assert!(older.busy(), "the other one was not chosen");
    }
}
