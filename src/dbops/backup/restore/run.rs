//! Running a restore: psql started with dualkey's keys and guard, the file's bytes streamed into
//! it (through pg_restore for a custom-format dump), then dualkey's COMMIT or a kill.

use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tokio::process::Child;
use tokio::task::JoinHandle;

use super::feed::feed_sql;
use super::source::HashingReader;
use super::sql::{commit_guard_sql, commit_sql};
use super::verdict::{all_checked, checksum_mismatch, verdict, Finished};
use super::RestoreError;
use crate::dbops::backup::tools;
use crate::dbops::backup::url::PgUrl;

/// Streams `source` into psql (through `pg_restore` for a custom-format dump) inside a
/// transaction that dualkey commits only when the whole file was read, its SHA-256 is `expected`
/// (when given), `pg_restore` exited 0 and its output was complete. Returns the size and
/// SHA-256 of what was restored.
pub(super) async fn run_restore<R: Read + Send + 'static>(
    url: &PgUrl,
    psql: &Path,
    pg_restore: Option<&Path>,
    pre_sql: Option<String>,
    source: HashingReader<R>,
    path: &Path,
    expected: Option<&str>,
) -> Result<(u64, String), RestoreError> {
    // Keys the input cannot know: only `\unrestrict <restrict_key>` would lift restricted mode,
    // only `SET dualkey.restore_commit = '<commit_key>'` lets the guard pass a COMMIT.
    let restrict_key = uuid::Uuid::new_v4().simple().to_string();
    let commit_key = uuid::Uuid::new_v4().simple().to_string();
    let Psql {
        mut child,
        stderr,
        stdout,
        stdin: psql_in,
    } = spawn_psql(url, psql, pre_sql, &restrict_key, &commit_key)?;

    // Custom format: file -> SHA-256 -> pg_restore's stdin (copier), pg_restore's stdout ->
    // psql (feeder). Plain SQL: file -> SHA-256 -> psql (feeder). Blocking threads only move
    // bytes; every child is started on this task, in `spawn_psql` and `stream_custom` (see
    // tools.rs).
    let Streamed {
        fed,
        writer,
        read,
        produced,
    } = match pg_restore {
        None => stream_plain(source, psql_in).await,
        Some(pg_restore) => stream_custom(pg_restore, source, psql_in).await?,
    };

    let mismatch = checksum_mismatch(&read, expected, path);
    let all_checked = all_checked(&read, &mismatch, &produced, &fed, &writer);

    let psql_stopped_reading = matches!(&fed, Err(e) if e.kind() == io::ErrorKind::BrokenPipe);
    let status = end_psql(
        &mut child,
        writer,
        all_checked,
        psql_stopped_reading,
        &commit_key,
    )
    .await?;
    let psql_stderr = tools::summarize_stderr(&stderr.await.unwrap_or_default(), Some(url));
    let psql_stdout = stdout.await.unwrap_or_default();
    verdict(
        Finished {
            read,
            mismatch,
            status,
            psql_stderr,
            psql_stdout,
            produced,
            fed,
            psql_stopped_reading,
            all_checked,
        },
        path,
        &commit_key,
    )
}

/// A started psql: the child, its stderr and stdout being collected, and its stdin.
struct Psql {
    child: Child,
    stderr: JoinHandle<Vec<u8>>,
    stdout: JoinHandle<Vec<u8>>,
    stdin: std::fs::File,
}

/// The error when psql cannot be started (or waited for after a kill).
fn psql_spawn_err(error: io::Error) -> RestoreError {
    RestoreError::Spawn {
        tool: "psql",
        error,
    }
}

/// Starts psql in restricted mode (`restrict_key`), read-only outside dualkey's transaction,
/// inside `BEGIN READ WRITE` with the commit guard for `commit_key`, then `pre_sql`, then the
/// script from its stdin.
fn spawn_psql(
    url: &PgUrl,
    psql: &Path,
    pre_sql: Option<String>,
    restrict_key: &str,
    commit_key: &str,
) -> Result<Psql, RestoreError> {
    let mut cmd = tools::command(psql, url);
    cmd.args([
        "-X",
        "-q",
        "-A",
        "-t",
        "--no-password",
        "-v",
        "ON_ERROR_STOP=1",
    ])
    .arg("-c")
    .arg(format!("\\restrict {restrict_key}"))
    // Outside dualkey's transaction (after a ROLLBACK inside the file) nothing writes.
    .args(["-c", "SET default_transaction_read_only = on"])
    .args(["-c", "BEGIN READ WRITE"])
    .arg("-c")
    .arg(commit_guard_sql(commit_key));
    if let Some(sql) = pre_sql {
        cmd.arg("-c").arg(sql);
    }
    cmd.args(["-f", "-"])
        .args(url.connection_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(psql_spawn_err)?;
    let stderr = tools::collect_stderr(child.stderr.take());
    let stdout = tools::collect_tail(child.stdout.take());
    let psql_in = child
        .stdin
        .take()
        .expect("stdin is piped")
        .into_owned_fd()
        .map_err(psql_spawn_err)?;
    let psql_in = std::fs::File::from(psql_in);

    Ok(Psql {
        child,
        stderr,
        stdout,
        stdin: psql_in,
    })
}

/// How streaming ended: feeding psql (`Ok(true)` when complete, for a custom-format dump when
/// pg_restore's closing COMMIT was seen), psql's stdin to commit through, the size and SHA-256 of
/// what was read, and for a custom-format dump pg_restore's exit and summarised stderr.
struct Streamed {
    fed: io::Result<bool>,
    writer: Option<std::fs::File>,
    read: io::Result<(u64, String)>,
    produced: Option<(io::Result<ExitStatus>, String)>,
}

/// Plain SQL: file -> SHA-256 -> psql (feeder).
async fn stream_plain<R: Read + Send + 'static>(
    mut source: HashingReader<R>,
    psql_in: std::fs::File,
) -> Streamed {
    let feeder = tokio::task::spawn_blocking(move || {
        let mut out = io::BufWriter::with_capacity(1 << 20, psql_in);
        let fed = feed_sql(
            BufReader::with_capacity(1 << 20, &mut source),
            &mut out,
            false,
        )
        .and_then(|complete| out.flush().map(|_| complete));
        let read = match &fed {
            // psql stopped reading: hash the rest so that the hash covers the file.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => source.drain(),
            // Writing to psql fails only with a broken pipe; anything else is the file.
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            Ok(_) => Ok(()),
        };
        let writer = out.into_inner().ok();
        (fed, writer, read.map(|_| source.finish()))
    });
    let (fed, writer, read) = feeder.await.unwrap_or_else(|e| {
        let e = io::Error::other(format!("restore thread failed: {e}"));
        (Err(io::Error::other(e.to_string())), None, Err(e))
    });
    Streamed {
        fed,
        writer,
        read,
        produced: None,
    }
}

/// Custom format: file -> SHA-256 -> pg_restore's stdin (copier), pg_restore's stdout -> psql
/// (feeder).
async fn stream_custom<R: Read + Send + 'static>(
    pg_restore: &Path,
    mut source: HashingReader<R>,
    psql_in: std::fs::File,
) -> Result<Streamed, RestoreError> {
    let spawn_err = |error| RestoreError::Spawn {
        tool: "pg_restore",
        error,
    };
    // No path operand: the archive comes from stdin, i.e. from the one open handle.
    let mut producer = tools::tool_command(pg_restore)
        .args([
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",
            "--file=-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let p_stderr = tools::collect_stderr(producer.stderr.take());
    let p_in = producer.stdin.take().expect("stdin is piped");
    let p_in = std::fs::File::from(p_in.into_owned_fd().map_err(spawn_err)?);
    let p_out = producer.stdout.take().expect("stdout is piped");
    let p_out = std::fs::File::from(p_out.into_owned_fd().map_err(spawn_err)?);
    let copier = tokio::task::spawn_blocking(move || {
        let mut p_in = p_in;
        let copied = io::copy(&mut source, &mut p_in).map(|_| ());
        drop(p_in);
        match copied {
            // pg_restore stopped reading (it failed, or the archive ended before the
            // file did): hash the rest so that the hash covers the file.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => source.drain(),
            r => r,
        }
        .map(|_| source.finish())
    });
    let feeder = tokio::task::spawn_blocking(move || {
        let mut out = io::BufWriter::with_capacity(1 << 20, psql_in);
        let fed = feed_sql(BufReader::with_capacity(1 << 20, p_out), &mut out, true)
            .and_then(|complete| out.flush().map(|_| complete));
        (fed, out.into_inner().ok())
    });
    let fed = feeder.await.unwrap_or_else(|e| {
        (
            Err(io::Error::other(format!("restore thread failed: {e}"))),
            None,
        )
    });
    let read = copier
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("read thread failed: {e}"))));
    let status = producer.wait().await;
    let p_stderr = tools::summarize_stderr(&p_stderr.await.unwrap_or_default(), None);
    let (fed, writer) = fed;
    Ok(Streamed {
        fed,
        writer,
        read,
        produced: Some((status, p_stderr)),
    })
}

/// Ends psql: dualkey's COMMIT when `all_checked`, else a kill (unless psql already stopped
/// reading) and never a COMMIT; then waits for it.
async fn end_psql(
    child: &mut Child,
    writer: Option<std::fs::File>,
    all_checked: bool,
    psql_stopped_reading: bool,
    commit_key: &str,
) -> Result<ExitStatus, RestoreError> {
    let status = if all_checked {
        // The one place a restore commits.
        let mut writer = writer.expect("checked above");
        let sql = commit_sql(commit_key);
        let wrote = tokio::task::spawn_blocking(move || writer.write_all(sql.as_bytes())).await;
        if !matches!(wrote, Ok(Ok(()))) {
            tracing::warn!("could not send COMMIT to psql");
        }
        // From here on the COMMIT may have taken effect: an error must not claim otherwise.
        child
            .wait()
            .await
            .map_err(|e| RestoreError::CommitUnconfirmed(format!("waiting for psql: {e}")))?
    } else {
        if !psql_stopped_reading {
            // Not everything checked out: psql must never get a COMMIT. Kill it; its open
            // transaction dies with its session.
            let _ = child.start_kill();
        }
        drop(writer);
        child.wait().await.map_err(psql_spawn_err)?
    };
    Ok(status)
}
