//! The rehearsal engine: the pending migrations applied to a restored copy of the newest verified
//! backup, measured, and the copy dropped.
//!
//! [`rehearse`] picks the newest verified backup of the environment, or takes a fresh one (a
//! `manual` backup noted "taken for a deploy rehearsal") when there is none or it is older than
//! `[deploy] rehearsal_max_backup_age`; restores it into the scratch database
//! `<db>_dualkey_rehearsal` with the restore drill's machinery and safety rules
//! ([`crate::dbops::backup::ScratchKind`]: never a configured environment's database, never a name
//! PostgreSQL would cut, only `CREATE`/`DROP DATABASE` of it over the target's connection); applies
//! the pinned migrations there with [`crate::dbops::prisma::deploy_pinned`], the deploy's own code
//! path; records per migration its duration, the tables it rewrote (`pg_class.relfilenode` before
//! and after), the locks its session held (sampled from `pg_locks`) and its error with the failing
//! statement; and drops the scratch database however it ends (a cancel too). The target database
//! is never written to.
//!
//! While a rehearsal runs, a PostgreSQL store holds the lease [`lease_name`] (renewed), so
//! another replica neither starts a second one on the same scratch database nor drops it as a
//! leftover; a scratch database a killed dualkey left is dropped at the next start
//! ([`drop_leftover`], called with the drills' recovery).

mod observe;
mod statement;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::services::environment::protected_urls;

use crate::core::context::Core;
use crate::core::human;
use crate::dbops::backup::{BackupKind, ScratchKind};
use crate::dbops::sessions::human_rows;
use crate::services::backups::health::newest_verified;
use crate::services::backups::take::take_backup;
use crate::services::environment::{database_url, env_settings, StepError};
use crate::store::{Backend, BackupRow};

pub use observe::SAMPLE_EVERY;

/// One migration applied on the restored copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RehearsedMigration {
    /// The migration (folder name).
    pub name: String,
    /// Wall time of its script.
    pub duration_ms: u64,
    /// tables whose pg_class.relfilenode changed (rewritten), as schema.table
    pub rewrote: Vec<String>,
    /// locks seen while it ran, e.g. "ACCESS EXCLUSIVE on public.Task"
    pub locks: Vec<String>,
    /// the error when it failed, with the statement when known
    pub error: Option<String>,
    /// The statement of the script that failed, when it could be told.
    pub statement: Option<String>,
}

/// What a rehearsal found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RehearsalOutcome {
    /// The backup restored.
    pub backup_id: String,
    /// When it was taken.
    pub backup_created_at_ms: i64,
    /// true when the newest verified backup was missing or too old and one was taken for this
    pub fresh_backup: bool,
    /// the largest table and its exact row count, e.g. ("public.Task", 1500000)
    pub largest_table: Option<(String, i64)>,
    /// How long the restore into the scratch database took.
    pub restore_ms: u64,
    /// Per migration, in order; ends at the first that failed.
    pub migrations: Vec<RehearsedMigration>,
    /// The whole rehearsal: backup (when fresh), restore, migrations and the drop.
    pub total_ms: u64,
    /// (migration, checksum) pairs rehearsed, in order
    pub pinned: Vec<(String, String)>,
    /// Migrations the target applied after the backup was taken: applied to the copy first, in
    /// folder order, not measured.
    #[serde(default)]
    pub caught_up: Vec<String>,
}

impl RehearsalOutcome {
    /// Every pinned migration applied without an error.
    pub fn passed(&self) -> bool {
        self.migrations.len() == self.pinned.len()
            && self.migrations.iter().all(|m| m.error.is_none())
    }

    /// "Rehearsed on backup b… (2 h old, 1.5M rows in Task): 3 migrations in 41 s; 20250301_add_uid rewrote Task (38 s)"
    /// or, on failure, "Rehearsal FAILED on backup b… …: 20250301_uniq failed: `<error>` (statement: …)"
    pub fn summary(&self, now_ms: i64) -> String {
        let mut about = vec![format!(
            "{} old",
            human::age(now_ms - self.backup_created_at_ms)
        )];
        if self.fresh_backup {
            about.push("taken for this rehearsal".into());
        }
        if !self.caught_up.is_empty() {
            about.push(format!(
                "{} migration{} since it applied first",
                self.caught_up.len(),
                if self.caught_up.len() == 1 { "" } else { "s" }
            ));
        }
        if let Some((t, n)) = &self.largest_table {
            about.push(format!("{} rows in {}", human_rows(*n as u64), short(t)));
        }
        let on = format!("on backup {} ({})", self.backup_id, about.join(", "));
        if let Some(f) = self.migrations.iter().find(|m| m.error.is_some()) {
            let error = f.error.as_deref().unwrap_or_default().replace('\n', " ");
            let statement = f
                .statement
                .as_ref()
                .map(|s| format!(" (statement: {})", one_line(s)))
                .unwrap_or_default();
            return format!(
                "Rehearsal FAILED {on}: {} failed: {error}{statement}",
                f.name
            );
        }
        if !self.passed() {
            return format!(
                "Rehearsal FAILED {on}: {} of {} migrations applied",
                self.migrations.len(),
                self.pinned.len()
            );
        }
        let ms: u64 = self.migrations.iter().map(|m| m.duration_ms).sum();
        let mut s = format!(
            "Rehearsed {on}: {} migration{} in {}",
            self.migrations.len(),
            if self.migrations.len() == 1 { "" } else { "s" },
            seconds(ms)
        );
        let rewrites: Vec<String> = self
            .migrations
            .iter()
            .filter(|m| !m.rewrote.is_empty())
            .map(|m| {
                let t: Vec<&str> = m.rewrote.iter().map(|t| short(t)).collect();
                format!(
                    "{} rewrote {} ({})",
                    m.name,
                    t.join(", "),
                    seconds(m.duration_ms)
                )
            })
            .collect();
        if !rewrites.is_empty() {
            s.push_str(&format!("; {}", rewrites.join("; ")));
        }
        s
    }
}

/// `public.Task` reads `Task`; other schemas stay.
fn short(table: &str) -> &str {
    table.strip_prefix("public.").unwrap_or(table)
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// `41 s`, `0.3 s`.
fn seconds(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} s", (ms + 500) / 1000)
    }
}

/// The environments with a rehearsal running in this process: [`drop_leftover`] leaves their
/// scratch databases alone, and a second rehearsal of one is refused.
static RUNNING: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// This process's mark that a rehearsal of `env` runs; removed when dropped.
struct Running(String);

impl Running {
    fn mark(env: &str) -> Result<Running, StepError> {
        let mut all = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        if all.iter().any(|e| e == env) {
            return Err(StepError(format!(
                "a rehearsal of {env} is already running"
            )));
        }
        all.push(env.to_string());
        Ok(Running(env.to_string()))
    }

    fn is_running(env: &str) -> bool {
        let all = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().any(|e| e == env)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut all = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|e| *e != self.0);
    }
}

/// The store lease a running rehearsal of `env` holds (and renews) on a PostgreSQL store.
pub fn lease_name(env: &str) -> String {
    format!("rehearsal-scratch:{env}")
}

const LEASE_MS: i64 = 60_000;
const LEASE_RENEW: Duration = Duration::from_secs(10);

/// Where and how a backup is rehearsed on: the target (only its server is used), the folder the
/// deploy reads, the tools and the databases that must never be the scratch one.
#[derive(Debug, Clone, Copy)]
pub struct RehearsalTarget<'a> {
    /// The target's URL; the scratch database is created next to it.
    pub database_url: &'a str,
    /// The migrations folder (read by the deploy itself).
    pub migrations_dir: &'a Path,
    /// `pg_restore`/`psql` location, if configured.
    pub pg_bin_dir: Option<&'a Path>,
    /// The configured environments' database URLs.
    pub protected: &'a [String],
    /// The deploy's timeouts and retries (`[deploy]`): the rehearsal applies under them too.
    pub deploy: crate::dbops::prisma::DeployOptions,
}

/// What [`rehearse_backup`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// How long the restore took.
    pub restore_ms: u64,
    /// The largest table of the restored copy, with its exact row count.
    pub largest_table: Option<(String, i64)>,
    /// Per migration applied (or failed).
    pub migrations: Vec<RehearsedMigration>,
    /// The migrations applied first to bring the copy up to the target.
    pub caught_up: Vec<String>,
}

/// Resolves when `*cancel` turns true; never when its sender is gone.
async fn cancelled(mut cancel: watch::Receiver<bool>) {
    if cancel.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn cancel_error() -> StepError {
    StepError("the rehearsal was cancelled; its scratch database was dropped".into())
}

/// The engine without the catalog: restores the backup at `path` (SHA-256 `sha256`) into the
/// scratch database of `t.database_url`, applies `pinned` there, measures, and drops it however
/// it ends (also when `cancel` turns true).
pub async fn rehearse_backup(
    t: &RehearsalTarget<'_>,
    path: &Path,
    sha256: &str,
    pinned: &[(String, String)],
    cancel: watch::Receiver<bool>,
) -> Result<Measured, StepError> {
    let scratch = ScratchKind::Rehearsal
        .create(t.database_url, t.protected)
        .await
        .map_err(|e| StepError(format!("the rehearsal could not start: {e}")))?;
    let result = {
        let work = on_scratch(&scratch, t, path, sha256, pinned);
        tokio::select! {
            r = work => r,
            () = cancelled(cancel) => Err(cancel_error()),
        }
    };
    let name = scratch.name().to_string();
    let dropped = scratch.drop().await;
    let measured = result?;
    dropped.map_err(|e| {
        StepError(format!(
            "the rehearsal database {name} was not dropped: {e}"
        ))
    })?;
    Ok(measured)
}

async fn on_scratch(
    scratch: &crate::dbops::backup::Scratch,
    t: &RehearsalTarget<'_>,
    path: &Path,
    sha256: &str,
    pinned: &[(String, String)],
) -> Result<Measured, StepError> {
    let restore_ms = scratch
        .restore(path, sha256, t.pg_bin_dir)
        .await
        .map_err(|e| {
            StepError(format!(
                "restoring the backup for the rehearsal failed: {e}"
            ))
        })?;
    let largest_table = scratch
        .largest_tables(1)
        .await
        .map_err(|e| StepError(e.to_string()))?
        .into_iter()
        .next();
    let extra = catch_up(scratch.url(), t.migrations_dir, pinned).await?;
    let caught_up: Vec<String> = extra.iter().map(|(n, _)| n.clone()).collect();
    let mut observer = observe::Observer::open(scratch.url(), t.migrations_dir, caught_up.clone())
        .await
        .map_err(StepError)?;
    let all: Vec<(String, String)> = extra.into_iter().chain(pinned.iter().cloned()).collect();
    let outcome = crate::dbops::prisma::deploy_pinned(
        scratch.url(),
        t.migrations_dir,
        &all,
        t.deploy,
        &mut observer,
    )
    .await
    .map_err(|e| {
        StepError(format!(
            "applying the migrations to the restored backup failed before any ran: {e}"
        ))
    })?;
    if let Some(stop) = &outcome.stopped {
        if let crate::dbops::prisma::DeployStopReason::Observer { message } = &stop.reason {
            return Err(StepError(format!(
                "the rehearsal stopped before {}: {message}",
                stop.migration
            )));
        }
    }
    Ok(Measured {
        restore_ms: restore_ms as u64,
        largest_table,
        migrations: std::mem::take(&mut observer.done),
        caught_up,
    })
}

/// The migrations of the folder the restored copy has not applied and that are not `pinned`:
/// those the target applied after the backup was taken (a pre-deploy backup misses the deploy it
/// preceded). With their checksums, in folder order.
async fn catch_up(
    scratch_url: &str,
    dir: &Path,
    pinned: &[(String, String)],
) -> Result<Vec<(String, String)>, StepError> {
    use crate::dbops::prisma::{list_migrations, render_checksum, Target};
    let read = |e: crate::dbops::prisma::PrismaError| {
        StepError(format!(
            "reading the restored _prisma_migrations failed: {e}"
        ))
    };
    let mut conn = Target::connect(scratch_url).await.map_err(read)?;
    let rows = conn.load_rows().await;
    conn.close().await;
    let rows = rows.map_err(read)?.unwrap_or_default();
    let folder = list_migrations(dir);
    Ok(folder
        .migrations
        .iter()
        .filter(|m| {
            !pinned.iter().any(|(n, _)| *n == m.name)
                && !rows
                    .iter()
                    .any(|r| r.rolled_back_at.is_none() && r.migration_name == m.name)
        })
        .map(|m| {
            let sum = m.script.as_deref().map(render_checksum).unwrap_or_default();
            (m.name.clone(), sum)
        })
        .collect())
}

/// The newest verified backup of `env` when it is recent enough, else a fresh one; true when
/// fresh.
async fn backup_for(core: &Arc<Core>, env: &str) -> Result<(BackupRow, bool), StepError> {
    let max_age = core.settings.deploy.rehearsal_max_backup_age.0.as_millis() as i64;
    let newest = newest_verified(core.reads(), env)
        .await
        .map_err(|e| StepError(format!("reading the backup catalog failed: {e:#}")))?;
    if let Some(b) = newest {
        if core.clock.now_ms() - b.started_at <= max_age {
            return Ok((b, false));
        }
    }
    // A fresh pg_dump beside a running deploy, restore or backup would make that operation's
    // migrations wait behind the dump (or the dump behind them).
    let busy = async {
        let mut tx = core.store.begin().await?;
        let busy = tx.active_operation_for_env(env).await?;
        tx.commit().await?;
        anyhow::Ok(busy)
    }
    .await
    .map_err(|e| StepError(format!("reading the operations failed: {e:#}")))?;
    if let Some(op) = busy {
        return Err(StepError(format!(
            "no verified backup of {env} younger than {} to rehearse on, and operation {} is running there: a fresh backup now would run beside it. Rehearse again when it has ended (`rehearse {env}`).",
            crate::config::format_duration(core.settings.deploy.rehearsal_max_backup_age.0),
            op.id
        )));
    }
    let note = Some("taken for a deploy rehearsal".to_string());
    let b = take_backup(core, env, BackupKind::Manual, None, note, None).await?;
    Ok((b, true))
}

/// Takes the rehearsal lease of `env` on a PostgreSQL store (a SQLite store is one process).
async fn take_lease(core: &Core, env: &str) -> Result<(), StepError> {
    if core.store.backend() != Backend::Postgres {
        return Ok(());
    }
    let holder = core.lease_holder("rehearsal");
    let now = core.clock.now_ms();
    match core
        .store
        .try_lease(&lease_name(env), &holder, now, LEASE_MS)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(StepError(format!(
            "a rehearsal of {env} is already running on another dualkey"
        ))),
        Err(e) => Err(StepError(format!("taking the rehearsal lease failed: {e}"))),
    }
}

/// Renews the lease until dropped (never returns).
async fn renew_lease(core: &Core, env: &str) {
    let holder = core.lease_holder("rehearsal");
    loop {
        tokio::time::sleep(LEASE_RENEW).await;
        if core.store.backend() != Backend::Postgres {
            continue;
        }
        let now = core.clock.now_ms();
        if let Err(e) = core
            .store
            .try_lease(&lease_name(env), &holder, now, LEASE_MS)
            .await
        {
            tracing::warn!(error = %e, "renewing the rehearsal lease failed");
        }
    }
}

/// Restores the newest verified backup of `env` (or a fresh one, see below) into the scratch
/// database `<db>_dualkey_rehearsal`, applies `pinned` there through the same code path a
/// deploy uses, measures, and drops the scratch database however it ends. Stops early (dropping
/// the scratch database) when `*cancel.borrow()` becomes true.
///
/// The backup is fresh (a `manual` one taken now) when the environment has no verified backup
/// or the newest is older than `[deploy] rehearsal_max_backup_age`.
pub async fn rehearse(
    core: &std::sync::Arc<crate::core::context::Core>,
    env: &str,
    pinned: &[(String, String)],
    cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<RehearsalOutcome, crate::services::environment::StepError> {
    let started = Instant::now();
    let e = env_settings(core.reads(), env)?;
    let url = database_url(e)?;
    let _mark = Running::mark(env)?;
    take_lease(core, env).await?;
    let protected = protected_urls(&core.settings);
    let t = RehearsalTarget {
        database_url: url.expose_secret(),
        migrations_dir: &e.migrations_dir,
        pg_bin_dir: e.pg_bin_dir.as_deref(),
        protected: &protected,
        deploy: crate::services::environment::deploy_options(&core.settings.deploy),
    };
    let work = async {
        // Not cut short by a cancel: a backup dropped half way would leave its catalog row
        // `running`. A superseded rehearsal stops right after it.
        let (b, fresh) = backup_for(core, env).await?;
        if *cancel.borrow() {
            return Err(cancel_error());
        }
        let sha = b.sha256.clone().unwrap_or_default();
        let m = rehearse_backup(&t, Path::new(&b.path), &sha, pinned, cancel).await?;
        Ok(RehearsalOutcome {
            backup_id: b.id.clone(),
            backup_created_at_ms: b.started_at,
            fresh_backup: fresh,
            largest_table: m.largest_table,
            restore_ms: m.restore_ms,
            migrations: m.migrations,
            total_ms: started.elapsed().as_millis() as u64,
            pinned: pinned.to_vec(),
            caught_up: m.caught_up,
        })
    };
    let result = tokio::select! {
        r = work => r,
        () = renew_lease(core, env) => unreachable!("the renewal never ends"),
    };
    if core.store.backend() == Backend::Postgres {
        let holder = core.lease_holder("rehearsal");
        let _ = core
            .store
            .try_lease(&lease_name(env), &holder, core.clock.now_ms(), 0)
            .await;
    }
    result
}

/// Drops a rehearsal scratch database a killed dualkey left behind; true when one was dropped.
///
/// Nothing is dropped while this process rehearses `env`, nor, on a PostgreSQL store, while
/// another dualkey holds the rehearsal's lease (its rehearsal is alive).
pub async fn drop_leftover(
    core: &std::sync::Arc<crate::core::context::Core>,
    env: &str,
) -> Result<bool, crate::services::environment::StepError> {
    let e = env_settings(core.reads(), env)?;
    let url = database_url(e)?;
    if Running::is_running(env) {
        return Ok(false);
    }
    if core.store.backend() == Backend::Postgres {
        let holder = core.lease_holder("rehearsal");
        let now = core.clock.now_ms();
        // Taken and given back at once (a lease until `now`): free means no rehearsal is alive.
        match core
            .store
            .try_lease(&lease_name(env), &holder, now, 0)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => {
                return Err(StepError(format!(
                    "reading the rehearsal lease failed: {e}"
                )))
            }
        }
    }
    ScratchKind::Rehearsal
        .drop_stale(url.expose_secret(), &protected_urls(&core.settings))
        .await
        .map_err(|e| StepError(e.to_string()))
}

#[cfg(test)]
mod tests;
