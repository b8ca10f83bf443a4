//! Wiring: builds the store, the core, the worker, the scheduler and the outbox delivery, marks
//! operations left running by a dead process as interrupted, and runs everything until a
//! shutdown future completes.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::adapters::{Adapter, Inbound, Outbound};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::core::context::Core;
use crate::outbox;
use crate::services::rehearsal::runner as rehearsal_runner;
use crate::services::worker::Worker;
use crate::store;

/// A running dualkey: core plus background tasks.
pub struct Application {
    core: Arc<Core>,
    _store_lock: Option<StoreLock>,
}

/// One process's exclusive hold on a SQLite store, so two processes (say `serve` and `shell`)
/// never run operations from the same file: each would take the other's running operations
/// for dead, mark them `interrupted` and delete their `.partial` files.
///
/// The lock is a `flock(2)` on the database file itself, not on a file next to it: every path
/// to the store (a symlinked file or folder, `..`, a hard link) opens the same inode, and there
/// is no lock file that someone can delete to let a second process in. SQLite locks with POSIX
/// `fcntl` locks, which on Linux's local file systems are independent of `flock` locks, so this
/// lock neither blocks SQLite nor read-only commands (`backups`, `audit verify`) of other
/// processes. (On NFS, Linux emulates `flock` with `fcntl`; SQLite on NFS is unsupported anyway.)
///
/// Safety invariant: the descriptor is never closed. Closing any descriptor of a file drops
/// every POSIX lock this process holds on it, SQLite's own included, and the store's pool may
/// outlive the [`Application`]. On drop the `flock` is released and the descriptor is leaked
/// (one per [`Application`] built).
struct StoreLock(Option<std::fs::File>);

impl Drop for StoreLock {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a descriptor we own; no memory is shared.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
            std::mem::forget(f);
        }
    }
}

/// Takes the [`StoreLock`] of a SQLite store URL (`None` for PostgreSQL and in-memory stores),
/// creating the folder and an empty database file when missing (SQLite takes an empty file
/// for a new database).
fn lock_sqlite(url: &str) -> anyhow::Result<Option<StoreLock>> {
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
    let path = PathBuf::from(path);
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening the SQLite store {}", path.display()))?;
    let shown = std::fs::canonicalize(&path).unwrap_or(path);
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // Never close the descriptor (see StoreLock): leak it, we hold no lock through it.
        std::mem::forget(f);
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            anyhow::bail!(
                "another dualkey process (serve or shell) is using the store {}; stop it first, or use a PostgreSQL store (store.url) to run several",
                shown.display()
            );
        }
        return Err(e).with_context(|| format!("locking the SQLite store {}", shown.display()));
    }
    Ok(Some(StoreLock(Some(f))))
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
        let core = Arc::new(Core::new(
            settings,
            store,
            clock,
            Arc::new(crate::services::facts::RunbookFacts),
        ));
        let stale = Worker::recover_interrupted(&core, true).await?;
        for op in stale {
            tracing::warn!(operation = %op.id, env = %op.env, "operation was interrupted by a previous stop");
        }
        let (seq, hash) = core.store.audit_head().await?;
        crate::core::audit::log_head(seq, &hash);
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
        Ok(Arc::new(Core::new(
            settings,
            store,
            Arc::new(SystemClock),
            Arc::new(crate::services::facts::RunbookFacts),
        )))
    }

    /// The core, for adapters.
    pub fn core(&self) -> Arc<Core> {
        self.core.clone()
    }

    /// The chat adapters the settings enable (Slack, Discord), built and checked (tokens
    /// present, URLs and keys valid) but not yet connected.
    pub fn chat_adapters(&self) -> anyhow::Result<Vec<Arc<dyn Adapter>>> {
        let mut out: Vec<Arc<dyn Adapter>> = Vec::new();
        if self.core.settings.slack.enabled {
            out.push(Arc::new(
                crate::adapters::slack::SlackAdapter::from_settings(&self.core.settings.slack)
                    .context("starting the Slack adapter ([slack])")?,
            ));
        }
        if self.core.settings.discord.enabled {
            out.push(Arc::new(
                crate::adapters::discord::DiscordAdapter::from_settings(
                    &self.core.settings.discord,
                )
                .context("starting the Discord adapter ([discord])")?,
            ));
        }
        Ok(out)
    }

    /// Serves `app` on `l.main` and the admin routes on `l.admin` (when bound) until `stop`
    /// turns true.
    fn spawn_http(
        &self,
        l: crate::server::Listeners,
        app: axum::Router,
        stop: &watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let server = &self.core.settings.server;
        let serve = |listener, app, limits| {
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let graceful = async move {
                    let _ = stop.wait_for(|v| *v).await;
                };
                crate::server::serve(listener, app, limits, graceful).await;
            })
        };
        let mut http = vec![serve(
            l.main,
            app,
            crate::server::Limits::from_settings(server),
        )];
        if let Some(admin) = l.admin {
            let routes = crate::server::admin_router(self.core.clone());
            http.push(serve(admin, routes, crate::server::Limits::admin(server)));
        }
        http
    }

    /// Runs the worker, the scheduler, outbox delivery and `adapters` (their connections, and
    /// their routes on the HTTP server on `listeners.main`, when given; `/healthz`, `/readyz`
    /// and `/metrics` on `listeners.admin` when there is one) until `shutdown` completes,
    /// then waits for running operations (and a scheduled job in progress) and a last outbox
    /// pass, and releases this process's leases. Posts the audit chain head to the audit
    /// channels at start.
    pub async fn run_until_stopped<F: Future<Output = ()>>(
        self,
        adapters: Vec<Arc<dyn Adapter>>,
        listeners: Option<crate::server::Listeners>,
        shutdown: F,
    ) -> anyhow::Result<()> {
        let (tx, rx) = watch::channel(false);
        let outs: Vec<Arc<dyn Outbound>> = adapters
            .iter()
            .map(|a| a.clone() as Arc<dyn Outbound>)
            .collect();
        let inbound = Inbound::new(self.core.clone(), outs.clone());
        if let Err(e) = self.core.post_audit_head().await {
            tracing::error!(
                error = format!("{e:#}"),
                "could not queue the audit head for chat"
            );
        }
        // In the background: an unreachable database must not delay the start.
        let settings = self.core.settings.clone();
        tokio::spawn(async move {
            for w in crate::services::reports::tool_warnings(&settings).await {
                tracing::warn!("{w}");
            }
        });
        let worker = tokio::spawn(Worker::new(self.core.clone()).run(rx.clone()));
        let scheduler = tokio::spawn(
            crate::services::scheduler::Scheduler::new(self.core.clone()).run(rx.clone()),
        );
        let delivery = tokio::spawn(outbox::run(self.core.clone(), outs, rx.clone()));
        let rehearsals = tokio::spawn(rehearsal_runner::run(self.core.clone(), rx.clone()));
        let upkeep = tokio::spawn(meter_upkeep());
        let with_admin = listeners.as_ref().is_some_and(|l| l.admin.is_some());
        let mut app = crate::server::router(self.core.clone(), with_admin);
        for a in &adapters {
            if let Some(r) = a.clone().routes(inbound.clone()) {
                app = app.merge(r);
            }
        }
        let conns: Vec<_> = adapters
            .iter()
            .map(|a| {
                let a = a.clone();
                let (inbound, stop) = (inbound.clone(), rx.clone());
                tokio::spawn(async move {
                    if let Err(e) = a.run(inbound, stop).await {
                        tracing::error!(error = format!("{e:#}"), "chat adapter stopped");
                    }
                })
            })
            .collect();
        let http = match listeners {
            Some(l) => self.spawn_http(l, app, &rx),
            None => Vec::new(),
        };
        shutdown.await;
        upkeep.abort();
        tracing::info!("shutting down");
        let _ = tx.send(true);
        for h in http {
            let _ = h.await;
        }
        for c in conns {
            let _ = c.await;
        }
        // Events already acked are dispatched before the worker and the outbox stop.
        if !inbound.drain(std::time::Duration::from_secs(30)).await {
            tracing::warn!("some acknowledged events were still being handled at shutdown");
        }
        // Every loop that takes leases has stopped (a failed one too), so none can take one
        // again after this: the leases go now, and a successor starts its jobs at once.
        let stopped = (worker.await, scheduler.await, delivery.await);
        rehearsal_runner::log_end(rehearsals.await);
        self.release_leases().await;
        stopped.0.context("worker task")?;
        stopped.1.context("scheduler task")?;
        stopped.2.context("outbox task")?;
        Ok(())
    }

    /// Releases every lease this core holds (scheduler jobs, cron and drill runs, the outbox),
    /// in one transaction. A failure is logged: the leases then expire as after a crash.
    async fn release_leases(&self) {
        let released = async {
            let mut tx = self.core.store.begin().await?;
            let n = tx.release_leases(&self.core.instance).await?;
            tx.commit().await?;
            anyhow::Ok(n)
        };
        match released.await {
            Ok(n) => tracing::info!(leases = n, holder = %self.core.instance, "leases released"),
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "could not release the leases; other processes wait for them to expire"
            ),
        }
    }
}

/// Histogram samples wait in the recorder until a scrape; without scrapes, this folds them in
/// every 5 s so they do not pile up. Runs until aborted.
async fn meter_upkeep() {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        crate::core::meter::handle().run_upkeep();
    }
}
