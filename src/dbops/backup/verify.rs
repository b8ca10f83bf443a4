//! Verifying a custom-format dump: the file is there, its SHA-256 is the one recorded, and
//! `pg_restore` reads it: `--list` for its table of contents, then a full read of every data block
//! (written as SQL to nowhere), which catches a file truncated or damaged after its table of
//! contents, something `--list` alone does not see.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use sha2::{Digest, Sha256};

use super::tools::{self, ToolNotFound};

/// A dump that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Number of entries in its table of contents (`pg_restore --list`).
    pub toc_entries: usize,
    /// Size in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
}

/// Why a dump failed verification. Never offer such a backup for restore.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The file is not there any more.
    #[error("backup file {} is missing", .0.display())]
    Missing(PathBuf),
    /// The file changed since it was written.
    #[error("backup file {} changed: SHA-256 is {actual}, expected {expected}", path.display())]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The SHA-256 recorded when it was written.
        expected: String,
        /// The SHA-256 now.
        actual: String,
    },
    /// `pg_restore` cannot read it (not a custom-format dump, truncated, damaged).
    #[error("backup file {} is unreadable: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What `pg_restore` said, or what is wrong with the file.
        reason: String,
    },
    /// Reading the file failed for another reason (permissions, I/O error).
    #[error("could not read backup file {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// `pg_restore` was not found.
    #[error(transparent)]
    ToolNotFound(#[from] ToolNotFound),
}

/// The first bytes of every custom-format archive.
pub(crate) const CUSTOM_MAGIC: &[u8; 5] = b"PGDMP";

/// Whether a file starts like a custom-format archive (a 5-byte read).
pub(crate) fn has_custom_magic(path: &Path) -> io::Result<bool> {
    let mut head = [0u8; 5];
    let mut f = std::fs::File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n == head.len() && &head == CUSTOM_MAGIC)
}

/// SHA-256 (lowercase hex) and size of a file, read in a blocking thread.
pub async fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((total, hex::encode(hasher.finalize())))
    })
    .await
    .map_err(|e| io::Error::other(format!("hashing thread failed: {e}")))?
}

/// Verifies a dump: present, SHA-256 equal to `expected_sha256` (when given; compared
/// case-insensitively), and readable to the end by `pg_restore`.
///
/// The checks run in that order, so a truncated file with a recorded checksum is reported as
/// [`VerifyError::ChecksumMismatch`], and one without as [`VerifyError::Unreadable`].
#[tracing::instrument(skip_all, fields(path = %path.display()))]
pub async fn verify(
    path: &Path,
    expected_sha256: Option<&str>,
    pg_bin_dir: Option<&Path>,
) -> Result<Verified, VerifyError> {
    let io_err = |error: io::Error| VerifyError::Io {
        path: path.to_path_buf(),
        error,
    };
    let meta = match tokio::fs::metadata(path).await {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(VerifyError::Missing(path.to_path_buf()))
        }
        Err(e) => return Err(io_err(e)),
    };
    let unreadable = |reason: String| VerifyError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    if !meta.is_file() {
        return Err(unreadable("not a regular file".into()));
    }
    let (size_bytes, sha256) = match sha256_file(path).await {
        Ok(v) => v,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(VerifyError::Missing(path.to_path_buf()))
        }
        Err(e) => return Err(io_err(e)),
    };
    if let Some(expected) = expected_sha256 {
        if !expected.trim().eq_ignore_ascii_case(&sha256) {
            return Err(VerifyError::ChecksumMismatch {
                path: path.to_path_buf(),
                expected: expected.trim().to_ascii_lowercase(),
                actual: sha256,
            });
        }
    }
    let toc_entries = verify_archive(path, pg_bin_dir).await?;
    Ok(Verified {
        toc_entries,
        size_bytes,
        sha256,
    })
}

/// The number of entries in a custom-format archive's table of contents (`pg_restore --list`,
/// which reads only the archive's header and table of contents, not its data). The error says
/// what went wrong, in words.
pub(crate) async fn toc_entries(pg_restore: &Path, path: &Path) -> Result<usize, String> {
    let out = tools::tool_command(pg_restore)
        .arg("--list")
        .arg(tools::path_arg(path))
        .output()
        .await
        .map_err(|e| format!("could not run pg_restore --list: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pg_restore --list failed ({}): {}",
            tools::describe_status(&out.status),
            tools::summarize_stderr(&out.stderr, None)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .count())
}

/// Checks that `pg_restore` reads a custom-format dump to the end; returns its number of
/// table-of-contents entries. No checksum. (A new backup does not need this second read:
/// [`super::dump_verified`] has `pg_restore` read the archive while it is written.)
#[tracing::instrument(skip_all, fields(path = %path.display()))]
pub async fn verify_archive(path: &Path, pg_bin_dir: Option<&Path>) -> Result<usize, VerifyError> {
    let io_err = |error: io::Error| VerifyError::Io {
        path: path.to_path_buf(),
        error,
    };
    let unreadable = |reason: String| VerifyError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    if !path.exists() {
        return Err(VerifyError::Missing(path.to_path_buf()));
    }
    if !has_custom_magic(path).map_err(io_err)? {
        return Err(unreadable("not a pg_dump custom-format archive".into()));
    }

    let pg_restore = tools::locate("pg_restore", pg_bin_dir)?;
    let file_arg = tools::path_arg(path);

    // 1. The table of contents.
    let toc_entries = toc_entries(&pg_restore, path).await.map_err(unreadable)?;

    // 2. Every data block, decompressed and rendered as SQL that goes nowhere.
    let child = tools::tool_command(&pg_restore)
        .arg("--file=-")
        .arg(&file_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err)?;
    let (status, stderr) = tools::wait_with_stderr(child, None).await.map_err(io_err)?;
    if !status.success() {
        return Err(unreadable(format!(
            "pg_restore could not read it to the end ({}): {stderr}",
            tools::describe_status(&status)
        )));
    }
    Ok(toc_entries)
}
