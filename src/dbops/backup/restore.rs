//! Restoring a backup into the target database, all or nothing.
//!
//! - Custom-format dumps (dualkey's own): `pg_restore --clean --if-exists --single-transaction
//!   --no-owner --exit-on-error`. Objects in the dump are dropped and recreated in one transaction;
//!   if anything fails, the transaction rolls back and the database is as it was. Objects created
//!   after the backup that the dump does not know (a table added by a later migration) are left in
//!   place, as `pg_restore --clean` does.
//! - Plain `.sql` files (external, from the runbook's `pg_dump > file.sql`): `psql -X -v
//!   ON_ERROR_STOP=1 --single-transaction`. Such a file usually has no `DROP` statements, so it
//!   restores into an empty database (or one the file itself cleans) and fails, changing nothing,
//!   over existing tables.
//!
//! Security of plain SQL: a `.sql` file is a psql script, and psql backslash commands can run shell
//! commands (`\!`, backticks, `\o |cmd`), read and write local files, or connect elsewhere. dualkey
//! therefore first puts psql in restricted mode with a random key (`\restrict KEY`, psql 13.22,
//! 14.19, 15.14, 16.10, 17.6 and later), in which psql refuses every backslash command, and streams
//! the file to psql itself (no second read of the path, so the file cannot be swapped after the
//! check). The `\restrict`/`\unrestrict` pair that pg_dump itself writes at the head and the end of
//! a plain dump is blanked out on the way; any other backslash command makes psql stop, and the
//! single transaction rolls back. A psql without `\restrict` is refused rather than trusted.

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use super::tools::{self, ToolNotFound};
use super::url::{PgUrl, UrlError};
use super::verify::has_custom_magic;

/// The format of a backup file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DumpFormat {
    /// `pg_dump -Fc` (starts with `PGDMP`): restored with `pg_restore`.
    Custom,
    /// A plain SQL script (`.sql`): restored with `psql`.
    PlainSql,
}

/// A restore that committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// Which tool restored it.
    pub format: DumpFormat,
    /// Wall time.
    pub duration: Duration,
}

/// Why a restore failed. In every case the database was left unchanged (single transaction).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The database URL could not be parsed.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// `pg_restore` or `psql` was not found.
    #[error(transparent)]
    ToolNotFound(#[from] ToolNotFound),
    /// The backup file is not there.
    #[error("backup file {} is missing", .0.display())]
    Missing(PathBuf),
    /// Neither a custom-format dump nor a `.sql` file.
    #[error("{} is neither a pg_dump custom-format archive nor a .sql file", .0.display())]
    UnsupportedFormat(PathBuf),
    /// The `psql` found cannot enter restricted mode, so a plain SQL file is not run with it.
    #[error("{version} has no \\restrict; plain SQL backups need psql 13.22, 14.19, 15.14, 16.10, 17.6 or newer")]
    PsqlWithoutRestrict {
        /// What `psql --version` said.
        version: String,
    },
    /// A file-system operation failed.
    #[error("could not {action} {}: {error}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The tool could not be started.
    #[error("could not start {tool}: {error}")]
    Spawn {
        /// `pg_restore` or `psql`.
        tool: &'static str,
        /// The OS error.
        error: io::Error,
    },
    /// The tool failed; its transaction was rolled back.
    #[error("{tool} failed ({status}), nothing was changed: {stderr}")]
    Failed {
        /// `pg_restore` or `psql`.
        tool: &'static str,
        /// `exit code N` or `killed by signal N`.
        status: String,
        /// The end of what the tool printed on stderr, secrets redacted.
        stderr: String,
    },
}

/// Tells a custom-format dump (by its `PGDMP` magic) from a plain `.sql` file (by its extension).
pub fn detect_format(path: &Path) -> Result<DumpFormat, RestoreError> {
    match has_custom_magic(path) {
        Ok(true) => return Ok(DumpFormat::Custom),
        Ok(false) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RestoreError::Missing(path.to_path_buf()))
        }
        Err(error) => {
            return Err(RestoreError::Io {
                action: "read",
                path: path.to_path_buf(),
                error,
            })
        }
    }
    let is_sql = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("sql"));
    if is_sql {
        Ok(DumpFormat::PlainSql)
    } else {
        Err(RestoreError::UnsupportedFormat(path.to_path_buf()))
    }
}

/// Restores `path` into the database at `database_url`, in one transaction: either all of the
/// backup is restored or nothing changes. Dropping the future kills the tool, which also rolls
/// back.
#[tracing::instrument(skip_all, fields(path = %path.display()))]
pub async fn restore(
    database_url: &str,
    path: &Path,
    pg_bin_dir: Option<&Path>,
) -> Result<RestoreOutcome, RestoreError> {
    let url = PgUrl::parse(database_url)?;
    let format = detect_format(path)?;
    let start = Instant::now();
    tracing::info!(?format, database = url.database(), "restore started");
    match format {
        DumpFormat::Custom => restore_custom(&url, path, pg_bin_dir).await?,
        DumpFormat::PlainSql => restore_plain(&url, path, pg_bin_dir).await?,
    }
    let duration = start.elapsed();
    tracing::info!(?duration, "restore finished");
    Ok(RestoreOutcome { format, duration })
}

async fn restore_custom(
    url: &PgUrl,
    path: &Path,
    pg_bin_dir: Option<&Path>,
) -> Result<(), RestoreError> {
    let pg_restore = tools::locate("pg_restore", pg_bin_dir)?;
    let mut cmd = tools::command(&pg_restore, url);
    cmd.args([
        "--clean",
        "--if-exists",
        "--single-transaction",
        "--no-owner",
        "--exit-on-error",
        "--no-password",
    ])
    .args(url.connection_args())
    .arg(tools::path_arg(path))
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|error| RestoreError::Spawn {
        tool: "pg_restore",
        error,
    })?;
    let (status, stderr) = tools::wait_with_stderr(child, Some(url))
        .await
        .map_err(|error| RestoreError::Spawn {
            tool: "pg_restore",
            error,
        })?;
    if !status.success() {
        return Err(RestoreError::Failed {
            tool: "pg_restore",
            status: tools::describe_status(&status),
            stderr,
        });
    }
    Ok(())
}

/// Whether this psql knows `\restrict` (its command help lists it).
async fn psql_has_restrict(psql: &Path) -> Result<(), RestoreError> {
    let spawn = |error| RestoreError::Spawn {
        tool: "psql",
        error,
    };
    let help = Command::new(psql)
        .arg("--help=commands")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(spawn)?;
    if String::from_utf8_lossy(&help.stdout).contains("\\restrict") {
        return Ok(());
    }
    let version = Command::new(psql)
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(spawn)?;
    let version = String::from_utf8_lossy(&version.stdout)
        .trim()
        .chars()
        .take(80)
        .collect();
    Err(RestoreError::PsqlWithoutRestrict { version })
}

async fn restore_plain(
    url: &PgUrl,
    path: &Path,
    pg_bin_dir: Option<&Path>,
) -> Result<(), RestoreError> {
    let psql = tools::locate("psql", pg_bin_dir)?;
    psql_has_restrict(&psql).await?;
    let file = std::fs::File::open(path).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => RestoreError::Missing(path.to_path_buf()),
        _ => RestoreError::Io {
            action: "open",
            path: path.to_path_buf(),
            error,
        },
    })?;
    // A key the file cannot know: only `\unrestrict <this key>` would lift restricted mode.
    let key = uuid::Uuid::new_v4().simple().to_string();
    let mut cmd = tools::command(&psql, url);
    cmd.args([
        "-X",
        "--no-password",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
    ])
    .arg("-c")
    .arg(format!("\\restrict {key}"))
    .args(["-f", "-"])
    .args(url.connection_args())
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let spawn_err = |error| RestoreError::Spawn {
        tool: "psql",
        error,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    let stderr = tools::collect_stderr(child.stderr.take());
    let stdin = child
        .stdin
        .take()
        .expect("stdin is piped")
        .into_owned_fd()
        .map_err(spawn_err)?;
    // psql sees the end of its input (and commits) only once both write ends are closed: this
    // one is closed after the feeder succeeded, or after psql was killed if it did not.
    let hold_open = stdin.try_clone().map_err(spawn_err)?;
    let feeder = tokio::task::spawn_blocking(move || {
        let mut out = io::BufWriter::with_capacity(1 << 20, std::fs::File::from(stdin));
        let input = BufReader::with_capacity(1 << 20, file);
        match feed_plain_sql(input, &mut out).and_then(|_| out.flush()) {
            // psql stopped reading (it failed and exited): its status says why.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            r => r,
        }
    });
    let fed = feeder
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
    if fed.is_err() {
        // Reading the file failed part-way: psql must not see a clean end of its input.
        let _ = child.start_kill();
    }
    // After a SIGKILL psql runs no more code, so closing the last write end is safe either way.
    drop(hold_open);
    let status = child.wait().await.map_err(spawn_err)?;
    let stderr = tools::summarize_stderr(&stderr.await.unwrap_or_default(), Some(url));
    fed.map_err(|error| RestoreError::Io {
        action: "read",
        path: path.to_path_buf(),
        error,
    })?;
    if !status.success() {
        return Err(RestoreError::Failed {
            tool: "psql",
            status: tools::describe_status(&status),
            stderr,
        });
    }
    Ok(())
}

/// `\restrict KEY` or `\unrestrict KEY` as pg_dump writes them: the key, if `line` is one.
fn restrict_line<'a>(line: &'a [u8], command: &str) -> Option<&'a [u8]> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line
        .strip_prefix(b"\\")?
        .strip_prefix(command.as_bytes())?
        .strip_prefix(b" ")?;
    (!rest.is_empty() && rest.iter().all(u8::is_ascii_alphanumeric)).then_some(rest)
}

/// Copies a plain SQL dump to psql, blanking (keeping line numbers) pg_dump's own `\restrict KEY`
/// in the header (before the first line that is not blank or a `--` comment) and the matching
/// `\unrestrict KEY` when it is the last non-blank line. Everything else passes unchanged.
fn feed_plain_sql(mut input: impl BufRead, out: &mut impl Write) -> io::Result<()> {
    let mut line = Vec::with_capacity(8192);
    let mut in_header = true;
    let mut key: Option<Vec<u8>> = None;
    // Lines held back because they may be the final `\unrestrict` and the blank lines after it.
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let blank = line.iter().all(u8::is_ascii_whitespace);
        if in_header {
            if let Some(k) = restrict_line(&line, "restrict") {
                key = Some(k.to_vec());
                in_header = false;
                out.write_all(b"\n")?;
                continue;
            }
            if !blank && !line.starts_with(b"--") {
                in_header = false;
            }
        }
        if !held.is_empty() {
            if blank {
                held.push(line.clone());
                continue;
            }
            for h in held.drain(..) {
                out.write_all(&h)?;
            }
        }
        if key.is_some() && restrict_line(&line, "unrestrict") == key.as_deref() {
            held.push(line.clone());
            continue;
        }
        out.write_all(&line)?;
    }
    if let Some(first) = held.first_mut() {
        *first = b"\n".to_vec();
    }
    for h in held {
        out.write_all(&h)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(input: &str) -> String {
        let mut out = Vec::new();
        feed_plain_sql(input.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn pg_dumps_own_restrict_pair_is_blanked() {
        let dump = "--\n-- dump\n--\n\n\\restrict abc123\n\nSET x = 1;\nCOPY t FROM stdin;\n1\n\\.\n\n\\unrestrict abc123\n\n";
        assert_eq!(
            feed(dump),
            "--\n-- dump\n--\n\n\n\nSET x = 1;\nCOPY t FROM stdin;\n1\n\\.\n\n\n\n"
        );
    }

    #[test]
    fn other_backslash_lines_pass_through_for_psql_to_refuse() {
        for input in [
            // A second \restrict after the header, an \unrestrict that is not last, another key.
            "SET x = 1;\n\\restrict abc\n",
            "\\restrict k1\nSELECT 1;\n\\unrestrict k1\n\\! id\n",
            "\\restrict k1\nSELECT 1;\n\\unrestrict k2\n",
            "\\restrict k1\n\\! id\n",
            "\\restrict k1 \\! id\n",
        ] {
            let out = feed(input);
            let kept: Vec<&str> = out.lines().filter(|l| l.starts_with('\\')).collect();
            let expected: Vec<&str> = input
                .lines()
                .filter(|l| l.starts_with('\\'))
                .filter(|l| *l != "\\restrict k1")
                .collect();
            assert_eq!(kept, expected, "{input:?}");
        }
    }

    #[test]
    fn lines_and_bytes_are_kept_otherwise() {
        let input = "SELECT 'caf\u{e9}';\r\nCOPY t FROM stdin;\nx\\ty\n\\.\nno newline at end";
        assert_eq!(feed(input), input);
    }
}
