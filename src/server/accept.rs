//! The accept loop and one connection: [`serve`] takes connections within the connection
//! limit, each connection reads its request head and body within their deadlines and hands the
//! request to the router.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::slots::{count_slow, Answered, Burst, Slot, Waiting, WriteDeadline};
use super::{Limits, MAX_BODY};

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
