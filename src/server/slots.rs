//! What keeps slow clients from holding the server: the counters of connections closed for
//! slowness, the list of connections waiting without a request (the oldest is evicted to make
//! room), the answer body that marks its connection waiting again, the write deadline, and the
//! memory trim after a burst of connections.

use std::future::Future as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;

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

pub(super) fn count_slow(phase: usize) {
    SLOW_CLIENTS[phase].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// `SLOW_CLIENTS` with their phase names, for `/metrics`.
pub fn slow_clients() -> [(&'static str, u64); 4] {
    std::array::from_fn(|i| {
        (
            SLOW_PHASES[i],
            SLOW_CLIENTS[i].load(std::sync::atomic::Ordering::Relaxed),
        )
    })
}

/// An answer's body that marks its connection waiting again when it is gone: written in full
/// (hyper drops a body once its last frame is out) or dropped with the connection. Until then a
/// flood of new clients cannot evict the connection and cut its answer (a Slack ack) short.
pub(super) struct Answered {
    pub(super) inner: Body,
    pub(super) slot: Arc<Slot>,
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
pub(super) struct Waiting {
    next: std::sync::atomic::AtomicU64,
    /// Connections by when they started waiting (a counter, oldest first).
    since: std::sync::Mutex<std::collections::BTreeMap<u64, Arc<tokio::sync::Notify>>>,
}

impl Waiting {
    /// Closes the connection that has waited longest; false when none is waiting (every
    /// slot is serving a request).
    pub(super) fn evict_oldest(&self) -> bool {
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
pub(super) struct Slot {
    all: Arc<Waiting>,
    /// Notified (a stored permit) when this connection is chosen to be closed.
    pub(super) evict: Arc<tokio::sync::Notify>,
    /// Its key in `all.since` while waiting; `None` while a request is handled, or once evicted.
    key: std::sync::Mutex<Option<u64>>,
}

impl Slot {
    /// A new connection, waiting for its first request.
    pub(super) fn new(all: Arc<Waiting>) -> Slot {
        let slot = Slot {
            all,
            evict: Arc::new(tokio::sync::Notify::new()),
            key: std::sync::Mutex::new(None),
        };
        slot.waiting();
        slot
    }

    /// Waiting again (for a request head or body): may be evicted.
    pub(super) fn waiting(&self) {
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
    pub(super) fn busy(&self) -> bool {
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
pub(super) struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    pub(super) fn new(inner: T, limit: Duration) -> Self {
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
pub(super) struct Burst {
    open: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

/// Open connections that count as a burst worth trimming after.
const BURST: usize = 32;

impl Burst {
    pub(super) fn opened(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.open.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
    }

    pub(super) fn closed(&self) {
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
