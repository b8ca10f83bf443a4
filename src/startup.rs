//! Wiring: builds the store, the core, the worker and the outbox delivery, marks operations
//! left running by a dead process as interrupted, and runs everything until a shutdown future
//! completes.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::{watch, Notify};

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::core::dispatch::Core;
use crate::core::identity::Directory;
use crate::outbox::{self, ChatOut};
use crate::store;
use crate::worker::Worker;

/// A running dualkey: core plus background tasks.
pub struct Application {
    core: Arc<Core>,
    _store_lock: Option<std::fs::File>,
}

/// Takes an exclusive lock next to a SQLite store file so two processes (say `serve` and
/// `shell`) never run operations from the same file, which would make each mark the other's
/// running operations interrupted.
fn lock_sqlite(url: &str) -> anyhow::Result<Option<std::fs::File>> {
    let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Ok(None);
    };
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" {
        return Ok(None);
    }
    let lock_path = PathBuf::from(format!("{path}.lock"));
    if let Some(parent) = lock_path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        anyhow::bail!(
            "another dualkey process (serve or shell) is using the store {path}; stop it first, or use a PostgreSQL store (store.url) to run several"
        );
    }
    Ok(Some(f))
}

impl Application {
    /// Opens the store, builds the core and recovers interrupted operations.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Application::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Same as [`Application::build`] with an injected clock.
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Application> {
        let store_lock = lock_sqlite(&settings.store.url)?;
        let store = store::open(&settings.store.url).await.with_context(|| {
            format!(
                "opening the state store {}",
                crate::config::redact_url(&settings.store.url)
            )
        })?;
        let core = Arc::new(Core {
            directory: Directory::from_settings(&settings),
            settings: Arc::new(settings),
            store,
            clock,
            worker_wake: Arc::new(Notify::new()),
            outbox_wake: Arc::new(Notify::new()),
            in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        });
        let stale = Worker::recover_interrupted(&core, true).await?;
        for op in stale {
            tracing::warn!(operation = %op.id, env = %op.env, "operation was interrupted by a previous stop");
        }
        Ok(Application {
            core,
            _store_lock: store_lock,
        })
    }

    /// A core for read-only CLI commands (`dualkey backups`): no lock file, no recovery, no
    /// worker, so it works while `serve` runs on the same SQLite store.
    pub async fn read_only_core(settings: Settings) -> anyhow::Result<Arc<Core>> {
        let store = store::open(&settings.store.url).await.with_context(|| {
            format!(
                "opening the state store {}",
                crate::config::redact_url(&settings.store.url)
            )
        })?;
        Ok(Arc::new(Core {
            directory: Directory::from_settings(&settings),
            settings: Arc::new(settings),
            store,
            clock: Arc::new(SystemClock),
            worker_wake: Arc::new(Notify::new()),
            outbox_wake: Arc::new(Notify::new()),
            in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }))
    }

    /// The core, for adapters.
    pub fn core(&self) -> Arc<Core> {
        self.core.clone()
    }

    /// Runs the worker and outbox delivery for `outs` (and the HTTP server on `listener`, when
    /// given) until `shutdown` completes, then waits for running operations and a last outbox
    /// pass.
    pub async fn run_until_stopped<F: Future<Output = ()>>(
        self,
        outs: Vec<Arc<dyn ChatOut>>,
        listener: Option<tokio::net::TcpListener>,
        shutdown: F,
    ) -> anyhow::Result<()> {
        let (tx, rx) = watch::channel(false);
        let worker = tokio::spawn(Worker::new(self.core.clone()).run(rx.clone()));
        let delivery = tokio::spawn(outbox::run(self.core.clone(), outs, rx.clone()));
        let http = listener.map(|l| {
            let mut stop = rx.clone();
            let app = crate::server::router(self.core.clone());
            tokio::spawn(async move {
                let graceful = async move {
                    let _ = stop.wait_for(|v| *v).await;
                };
                if let Err(e) = axum::serve(l, app).with_graceful_shutdown(graceful).await {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            })
        });
        shutdown.await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
        if let Some(h) = http {
            let _ = h.await;
        }
        worker.await.context("worker task")?;
        delivery.await.context("outbox task")?;
        Ok(())
    }
}
