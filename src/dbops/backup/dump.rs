//! `pg_dump -Fc` into `<backup_dir>/<env>/<database>_<ts>_<kind>.dump`, verified as it is written.
//!
//! The dump is streamed from `pg_dump`'s stdout into `<file>.partial` by a blocking thread that
//! hashes (SHA-256) and writes 1 MiB at a time, asking the kernel to start writeback as it goes so
//! that the final `fsync` is short. Then the file is fsynced, renamed to its final name and the
//! folder fsynced.
//!
//! [`dump_verified`] (what `dualkey backup` and every runbook backup use) also hands each chunk,
//! once written to the file, to a second blocking thread that writes it into the stdin of a
//! `pg_restore --file=-` (SQL output to nowhere): the verifier decompresses and reads every data
//! block while the dump is written, so nothing is read again afterwards. The two threads are
//! joined by a bounded channel (16 chunks): a verifier that is briefly slower does not hold
//! `pg_dump` back, one that stops reading (it failed, or it needs no more input) makes the send
//! fail and the copy goes on to the file alone; its exit status decides. The table of contents is
//! counted with `pg_restore --list` on the finished file, which reads only the archive's header.
//! Every child is spawned from the async task; the threads only do blocking I/O.
//!
//! Invariant: only a dump whose `pg_dump` exited 0, whose bytes are all on disk and (for
//! [`dump_verified`]) whose verifier exited 0 ever gets its final name. A failed `pg_dump`, a
//! killed one, a failed verification, a write error or a dropped future leaves no file: the
//! `.partial` is removed by a drop guard, and `kill_on_drop` ends the children. (A bot killed with
//! SIGKILL cannot run the guard: [`super::cleanup_partials`] removes such leftovers at start-up.)
//!
//! Note: because `pg_dump` writes to a pipe, the archive carries no data offsets. `pg_restore`
//! reads it sequentially, which is all dualkey does (`--single-transaction` restores, `--list`);
//! parallel `pg_restore -j` of these files is not possible.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::process::Child;
use tokio::task::JoinHandle;

use super::copy::{copy_hash_sync, enlarge_pipe, feed_sync, Feed};
use super::files::{dump_file_name, PARTIAL_SUFFIX};
use super::tools::{self, ToolNotFound};
use super::url::{PgUrl, UrlError};
use super::{check_env_name, BackupKind, InvalidEnvName};

/// What to dump and where. `Debug` leaves the database URL out.
#[derive(Clone, Copy)]
pub struct DumpRequest<'a> {
    /// The target database's URL (a secret: never logged).
    pub database_url: &'a str,
    /// The configured `backup_dir`; the dump goes into its `<env>` subfolder.
    pub backup_dir: &'a Path,
    /// The environment name (one safe folder name, see [`check_env_name`]).
    pub env: &'a str,
    /// Why the backup is taken.
    pub kind: BackupKind,
    /// A directory holding `pg_dump`, if configured; otherwise `PATH`, then
    /// `/usr/lib/postgresql/<major>/bin`.
    pub pg_bin_dir: Option<&'a Path>,
}

impl std::fmt::Debug for DumpRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpRequest")
            .field("database_url", &"[redacted]")
            .field("backup_dir", &self.backup_dir)
            .field("env", &self.env)
            .field("kind", &self.kind)
            .field("pg_bin_dir", &self.pg_bin_dir)
            .finish()
    }
}

/// Progress of a running dump, reported about once a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpProgress {
    /// Bytes written to the file so far.
    pub bytes_written: u64,
    /// Time since `pg_dump` started.
    pub elapsed: Duration,
}

/// A finished dump, on disk under its final name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpOutcome {
    /// Full path of the dump.
    pub path: PathBuf,
    /// Its file name (`<database>_<ts>_<kind>.dump`).
    pub file_name: String,
    /// Environment it belongs to.
    pub env: String,
    /// The database that was dumped (as named in the URL).
    pub database: String,
    /// Why it was taken.
    pub kind: BackupKind,
    /// Size in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// When the dump started (the time in the file name, UTC).
    pub started_at: DateTime<Utc>,
    /// Wall time from start to the file being durable under its final name.
    pub duration: Duration,
    /// Entries in the archive's table of contents, when it was verified while it was written
    /// ([`dump_verified`]); `None` from [`dump()`].
    pub toc_entries: Option<usize>,
}

/// Why a dump failed. In every case no file was left behind.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The database URL could not be parsed.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The environment name cannot be a folder name.
    #[error(transparent)]
    InvalidEnv(#[from] InvalidEnvName),
    /// `pg_dump` was not found.
    #[error(transparent)]
    ToolNotFound(#[from] ToolNotFound),
    /// A file-system operation failed (creating the folder, writing, syncing, renaming).
    #[error("could not {action} {}: {error}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// `pg_dump` could not be started.
    #[error("could not start pg_dump: {0}")]
    Spawn(io::Error),
    /// `pg_dump` exited with an error or was killed.
    #[error("pg_dump failed ({status}): {stderr}")]
    Failed {
        /// `exit code N` or `killed by signal N`.
        status: String,
        /// The end of what `pg_dump` printed on stderr, secrets redacted.
        stderr: String,
    },
    /// Another backup already has this file name (two in the same second, several times over).
    #[error("a backup named {} already exists", .0.display())]
    NameTaken(PathBuf),
    /// `pg_restore`, reading the dump as it was written, could not read it to the end (or could
    /// not list its table of contents); the dump was not kept.
    #[error("the dump failed verification and was not kept: {0}")]
    Unverified(String),
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DumpError + 'a {
    move |error| DumpError::Io {
        action,
        path: path.to_path_buf(),
        error,
    }
}

/// Removes the `.partial` file when dropped, unless disarmed: on every error path and when the
/// dump's future is dropped.
struct PartialGuard(Option<PathBuf>);

impl Drop for PartialGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Dumps the database with `pg_dump -Fc` into `<backup_dir>/<env>/<database>_<ts>_<kind>.dump`,
/// without verification (see [`dump_verified`]).
///
/// `on_progress` is called from the calling task at most about once a second while the dump runs
/// (not at the start and not at the end); it must not block (send to a channel to edit a chat
/// message). Dropping the returned future kills `pg_dump` and removes the partial file.
#[tracing::instrument(skip_all, fields(env = req.env, kind = %req.kind))]
pub async fn dump(
    req: &DumpRequest<'_>,
    on_progress: impl FnMut(DumpProgress),
) -> Result<DumpOutcome, DumpError> {
    run(req, on_progress, false).await
}

/// Like [`dump()`], and `pg_restore` reads every block of the archive while it is written (see
/// the module documentation): the result is a verified backup, with its table-of-contents count
/// in [`DumpOutcome::toc_entries`]. A dump the verifier cannot read fails with
/// [`DumpError::Unverified`] and leaves no file. Dropping the future kills both children.
#[tracing::instrument(skip_all, fields(env = req.env, kind = %req.kind))]
pub async fn dump_verified(
    req: &DumpRequest<'_>,
    on_progress: impl FnMut(DumpProgress),
) -> Result<DumpOutcome, DumpError> {
    run(req, on_progress, true).await
}

/// How many chunks (of at most [`BUF_SIZE`]) may wait for the verifier.
const FEED_DEPTH: usize = 16;

/// The verifier: `pg_restore` reading the archive from its stdin.
struct Verifier {
    child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
}

/// Starts `pg_restore --file=-` reading an archive from a pipe, its SQL output going nowhere:
/// it decompresses and reads every data block, and fails on a truncated or damaged stream.
/// Returns the child and the write end of its stdin. Spawned from the async task on purpose.
fn spawn_verifier(pg_restore: &Path) -> io::Result<(Verifier, OwnedFd)> {
    // It never connects: no connection settings and no password in its environment.
    let mut cmd = tools::tool_command(pg_restore);
    cmd.arg("--file=-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let stderr = tools::collect_stderr(child.stderr.take());
    let stdin = child
        .stdin
        .take()
        .expect("stdin is piped")
        .into_owned_fd()?;
    enlarge_pipe(&stdin);
    Ok((Verifier { child, stderr }, stdin))
}

async fn run(
    req: &DumpRequest<'_>,
    on_progress: impl FnMut(DumpProgress),
    verify: bool,
) -> Result<DumpOutcome, DumpError> {
    let url = PgUrl::parse(req.database_url)?;
    check_env_name(req.env)?;
    let pg_dump = tools::locate("pg_dump", req.pg_bin_dir)?;
    let pg_restore = if verify {
        Some(tools::locate("pg_restore", req.pg_bin_dir)?)
    } else {
        None
    };
    let dir = req.backup_dir.join(req.env);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io_err("create the backup folder", &dir))?;
    let database = url.database().to_string();

    let Partial {
        started_at,
        file_name,
        final_path,
        partial_path,
        file,
    } = create_partial(&dir, &database, req.kind).await?;
    let mut guard = PartialGuard(Some(partial_path.clone()));
    tracing::info!(file = %file_name, database = %database, "pg_dump started");
    let start = Instant::now();

    let (mut child, stderr, stdout) = spawn_pg_dump(&pg_dump, &url)?;
    // The verifier and the thread that feeds it (spawned here, in the async task).
    let (verifier, feed, feeder) = start_verifier(pg_restore.as_deref())?;
    let copied = copy_with_progress(stdout, file, feed, start, on_progress).await;
    let (size_bytes, digest) =
        finish_pg_dump(&mut child, stderr, copied, &url, &partial_path).await?;
    let toc_entries = match (verifier, feeder, &pg_restore) {
        (Some(v), Some(feeder), Some(pg_restore)) => {
            let n = finish_verification(v, feeder, pg_restore, &partial_path).await;
            if let Err(reason) = &n {
                tracing::warn!(%reason, "the dump failed verification");
            }
            Some(n.map_err(DumpError::Unverified)?)
        }
        _ => None,
    };

    // No await from here on: the rename and its bookkeeping cannot be cut in half by a cancel.
    publish(&partial_path, &final_path, &dir, &mut guard)?;
    let duration = start.elapsed();
    tracing::info!(file = %file_name, size_bytes, ?duration, "pg_dump finished");
    Ok(DumpOutcome {
        path: final_path,
        file_name,
        env: req.env.to_string(),
        database,
        kind: req.kind,
        size_bytes,
        sha256: hex::encode(digest),
        started_at,
        duration,
        toc_entries,
    })
}

/// The `.partial` file just created under a free name, and the names around it.
struct Partial {
    started_at: DateTime<Utc>,
    file_name: String,
    final_path: PathBuf,
    partial_path: PathBuf,
    file: File,
}

/// Picks a free name and creates its `.partial` (mode 0600); two dumps in the same second wait
/// for the next one.
async fn create_partial(
    dir: &Path,
    database: &str,
    kind: BackupKind,
) -> Result<Partial, DumpError> {
    let mut attempt = 0;
    loop {
        let started_at = Utc::now();
        let file_name = dump_file_name(database, started_at, kind);
        let final_path = dir.join(&file_name);
        let partial_path = dir.join(format!("{file_name}{PARTIAL_SUFFIX}"));
        if final_path.symlink_metadata().is_err() {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&partial_path)
            {
                Ok(file) => {
                    return Ok(Partial {
                        started_at,
                        file_name,
                        final_path,
                        partial_path,
                        file,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create", &partial_path)(e)),
            }
        }
        attempt += 1;
        if attempt >= 3 {
            return Err(DumpError::NameTaken(final_path));
        }
        let to_next_second = 1_000 - u64::from(started_at.timestamp_subsec_millis().min(999)) + 5;
        tokio::time::sleep(Duration::from_millis(to_next_second)).await;
    }
}

/// Starts `pg_dump --format=custom` with piped stdout and stderr: the child, its stderr being
/// collected, and its stdout.
fn spawn_pg_dump(
    pg_dump: &Path,
    url: &PgUrl,
) -> Result<(Child, JoinHandle<Vec<u8>>, OwnedFd), DumpError> {
    let mut cmd = tools::command(pg_dump, url);
    cmd.arg("--format=custom")
        .arg("--no-password")
        .args(url.connection_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(DumpError::Spawn)?;
    let stderr = tools::collect_stderr(child.stderr.take());
    let stdout = child
        .stdout
        .take()
        .expect("stdout is piped")
        .into_owned_fd()
        .map_err(DumpError::Spawn)?;
    enlarge_pipe(&stdout);
    Ok((child, stderr, stdout))
}

/// The verifier, the copy thread's side of its feed and the thread that feeds it, when
/// `pg_restore` is given.
type VerifierParts = (
    Option<Verifier>,
    Option<Feed>,
    Option<JoinHandle<io::Result<()>>>,
);

/// Starts the verifier and the thread that feeds it, when verifying.
fn start_verifier(pg_restore: Option<&Path>) -> Result<VerifierParts, DumpError> {
    Ok(match pg_restore {
        None => (None, None, None),
        Some(p) => {
            let (verifier, stdin) = spawn_verifier(p)
                .map_err(|e| DumpError::Unverified(format!("could not start pg_restore: {e}")))?;
            let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(FEED_DEPTH);
            let (spare_tx, spare_rx) = mpsc::channel::<Vec<u8>>();
            let feeder = tokio::task::spawn_blocking(move || feed_sync(rx, spare_tx, stdin));
            (
                Some(verifier),
                Some(Feed {
                    tx,
                    spare: spare_rx,
                }),
                Some(feeder),
            )
        }
    })
}

/// Copies `pg_dump`'s output to the file (and the verifier) on a blocking thread, calling
/// `on_progress` about once a second until the copy ends.
async fn copy_with_progress(
    stdout: OwnedFd,
    file: File,
    feed: Option<Feed>,
    start: Instant,
    mut on_progress: impl FnMut(DumpProgress),
) -> io::Result<(u64, [u8; 32])> {
    let written = Arc::new(AtomicU64::new(0));
    let mut copy = tokio::task::spawn_blocking({
        let written = Arc::clone(&written);
        move || copy_hash_sync(stdout, file, &written, feed)
    });
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let copied = loop {
        tokio::select! {
            r = &mut copy => break r,
            _ = ticker.tick() => on_progress(DumpProgress {
                bytes_written: written.load(Ordering::Relaxed),
                elapsed: start.elapsed(),
            }),
        }
    };
    match copied {
        Ok(r) => r,
        Err(join) => Err(io::Error::other(format!("copy thread failed: {join}"))),
    }
}

/// After the copy: on a copy error, kills `pg_dump`; else waits for it and fails unless it
/// exited 0. Returns the size and SHA-256 digest of what was written.
async fn finish_pg_dump(
    child: &mut Child,
    stderr: JoinHandle<Vec<u8>>,
    copied: io::Result<(u64, [u8; 32])>,
    url: &PgUrl,
    partial_path: &Path,
) -> Result<(u64, [u8; 32]), DumpError> {
    let (size_bytes, digest) = match copied {
        Ok(v) => v,
        Err(e) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(io_err("write", partial_path)(e));
        }
    };
    let status = child.wait().await.map_err(DumpError::Spawn)?;
    let stderr = stderr.await.unwrap_or_default();
    if !status.success() {
        let status = tools::describe_status(&status);
        let stderr = tools::summarize_stderr(&stderr, Some(url));
        tracing::warn!(%status, %stderr, "pg_dump failed");
        return Err(DumpError::Failed { status, stderr });
    }
    Ok((size_bytes, digest))
}

/// Gives the dump its final name, disarms `guard`, and fsyncs the folder (removing the dump if
/// that fails).
fn publish(
    partial_path: &Path,
    final_path: &Path,
    dir: &Path,
    guard: &mut PartialGuard,
) -> Result<(), DumpError> {
    if final_path.symlink_metadata().is_ok() {
        return Err(DumpError::NameTaken(final_path.to_path_buf()));
    }
    std::fs::rename(partial_path, final_path).map_err(io_err("rename", partial_path))?;
    guard.0 = None;
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        let _ = std::fs::remove_file(final_path);
        return Err(io_err("sync the backup folder", dir)(e));
    }
    Ok(())
}

/// Waits for the feeding thread and the verifier after the whole dump went through them, then
/// counts the table of contents of the written file. Returns why it failed, in words.
async fn finish_verification(
    mut v: Verifier,
    feeder: tokio::task::JoinHandle<io::Result<()>>,
    pg_restore: &Path,
    partial_path: &Path,
) -> Result<usize, String> {
    let fed = feeder
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("feeding thread failed: {e}"))));
    let status = v
        .child
        .wait()
        .await
        .map_err(|e| format!("could not wait for pg_restore: {e}"))?;
    let stderr = v.stderr.await.unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "pg_restore could not read it to the end ({}): {}",
            tools::describe_status(&status),
            tools::summarize_stderr(&stderr, None)
        ));
    }
    fed.map_err(|e| format!("could not feed pg_restore: {e}"))?;
    super::verify::toc_entries(pg_restore, partial_path).await
}
