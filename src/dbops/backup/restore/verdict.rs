//! Whether a restore took: the checks before dualkey's COMMIT, and once psql exited the verdict,
//! most specific cause first.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use super::sql::COMMITTED_MARKER;
use super::RestoreError;
use crate::dbops::backup::tools;

/// The mismatch when `expected` is given and the bytes read hash to something else.
pub(super) fn checksum_mismatch(
    read: &io::Result<(u64, String)>,
    expected: Option<&str>,
    path: &Path,
) -> Option<RestoreError> {
    match (read, expected) {
        (Ok((_, actual)), Some(want)) if !want.trim().eq_ignore_ascii_case(actual) => {
            Some(RestoreError::ChecksumMismatch {
                path: path.to_path_buf(),
                expected: want.trim().to_ascii_lowercase(),
                actual: actual.clone(),
            })
        }
        _ => None,
    }
}

/// Whether everything checked out for dualkey's COMMIT: the whole file read, its SHA-256 as
/// expected, pg_restore exited 0, its output complete, and psql's stdin still there.
pub(super) fn all_checked(
    read: &io::Result<(u64, String)>,
    mismatch: &Option<RestoreError>,
    produced: &Option<(io::Result<ExitStatus>, String)>,
    fed: &io::Result<bool>,
    writer: &Option<std::fs::File>,
) -> bool {
    let producer_ok = match produced {
        None => true,
        Some((status, _)) => status.as_ref().is_ok_and(|s| s.success()),
    };
    read.is_ok() && mismatch.is_none() && producer_ok && matches!(fed, Ok(true)) && writer.is_some()
}

/// Everything known once psql has exited.
pub(super) struct Finished {
    /// Size and SHA-256 of what was read, or why reading failed.
    pub(super) read: io::Result<(u64, String)>,
    /// The checksum mismatch, if any.
    pub(super) mismatch: Option<RestoreError>,
    /// psql's exit.
    pub(super) status: ExitStatus,
    /// psql's summarised stderr.
    pub(super) psql_stderr: String,
    /// The end of psql's stdout (where the commit marker is).
    pub(super) psql_stdout: Vec<u8>,
    /// pg_restore's exit and summarised stderr (custom format).
    pub(super) produced: Option<(io::Result<ExitStatus>, String)>,
    /// How feeding psql ended.
    pub(super) fed: io::Result<bool>,
    /// Whether psql stopped reading its stdin (a broken pipe).
    pub(super) psql_stopped_reading: bool,
    /// Whether dualkey sent its COMMIT.
    pub(super) all_checked: bool,
}

/// The restore's result, most specific cause first: size and SHA-256 of what was restored when
/// dualkey's COMMIT (with `commit_key`'s marker) took effect.
pub(super) fn verdict(
    finished: Finished,
    path: &Path,
    commit_key: &str,
) -> Result<(u64, String), RestoreError> {
    let Finished {
        read,
        mismatch,
        status,
        psql_stderr,
        psql_stdout,
        produced,
        fed,
        psql_stopped_reading,
        all_checked,
    } = finished;
    let psql_failed = || RestoreError::Failed {
        tool: "psql",
        status: tools::describe_status(&status),
        stderr: psql_stderr.clone(),
    };

    // Most specific cause first.
    let read = read.map_err(|error| RestoreError::Io {
        action: "read",
        path: path.to_path_buf(),
        error,
    })?;
    if let Some(mismatch) = mismatch {
        return Err(mismatch);
    }
    // psql failing on its own (not killed by us) is the root cause: the producer then only saw
    // its output pipe close.
    if !status.success() && status.signal() != Some(libc::SIGKILL) {
        return Err(psql_failed());
    }
    check_producer(produced)?;
    check_fed(fed, psql_stopped_reading, path)?;
    if !status.success() {
        return Err(psql_failed());
    }
    let marker = format!("{COMMITTED_MARKER}{commit_key}");
    let committed = String::from_utf8_lossy(&psql_stdout)
        .lines()
        .any(|l| l.trim() == marker);
    if !all_checked || !committed {
        return Err(RestoreError::Incomplete(format!(
            "psql ended without dualkey's COMMIT taking effect (the file ends inside a statement or a COPY block, or it ends the transaction itself){}",
            if psql_stderr.is_empty() {
                String::new()
            } else {
                format!(": {psql_stderr}")
            }
        )));
    }
    Ok(read)
}

/// pg_restore's failure (custom format): it could not be waited for, or did not exit 0.
fn check_producer(produced: Option<(io::Result<ExitStatus>, String)>) -> Result<(), RestoreError> {
    if let Some((p_status, p_stderr)) = produced {
        let p_status: ExitStatus = p_status.map_err(|error| RestoreError::Spawn {
            tool: "pg_restore",
            error,
        })?;
        if !p_status.success() {
            return Err(RestoreError::Failed {
                tool: "pg_restore",
                status: tools::describe_status(&p_status),
                stderr: p_stderr,
            });
        }
    }
    Ok(())
}

/// The stream's failure: an error other than psql stopping reading, or pg_restore's output
/// ending without its closing COMMIT.
fn check_fed(
    fed: io::Result<bool>,
    psql_stopped_reading: bool,
    path: &Path,
) -> Result<(), RestoreError> {
    match fed {
        Err(error) if !psql_stopped_reading => {
            return Err(RestoreError::Io {
                action: "stream",
                path: path.to_path_buf(),
                error,
            })
        }
        Ok(false) => {
            return Err(RestoreError::Incomplete(
                "pg_restore's output ended without its closing COMMIT (the archive is incomplete)"
                    .into(),
            ))
        }
        _ => {}
    }
    Ok(())
}
