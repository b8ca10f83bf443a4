//! Restoring a backup into the target database, all or nothing.
//!
//! What a restore means: afterwards the app's schema (the URL's `?schema=`, Prisma's default
//! `public`) holds exactly what the backup holds. Objects created after the backup (a table, an
//! enum, a foreign key to a restored table, added by a later migration) would otherwise survive a
//! plain `pg_restore --clean`, and either make it fail (a foreign key blocks the drop of the table
//! it points at) or make the next `/db deploy` fail (`relation already exists`). So, by default
//! ([`RestoreOptions::replace_schema`]), the restore first drops every object of that schema that
//! does not belong to an extension (the schema itself, its owner and grants, and extensions
//! stay), then restores the backup, all in one transaction:
//!
//! ```text
//! pg_restore --clean --if-exists --no-owner --file=- DUMP    (custom format: decoded to SQL)
//!   | dualkey       (blanks pg_dump's own \restrict pair; holds psql's input open, see below)
//!   | psql -X -v ON_ERROR_STOP=1 --single-transaction -c '\restrict KEY' [-c 'DO ...'] -f -
//! ```
//!
//! Plain `.sql` files (external, from the runbook's `pg_dump > file.sql`) take the same way
//! without the `pg_restore` stage. `psql --single-transaction` with `ON_ERROR_STOP` is what makes
//! it all-or-nothing: any error rolls everything back, the drops included. If `pg_restore` fails
//! (a truncated or damaged dump) or the file cannot be read to its end, psql is killed before it
//! sees the end of its input, so it never commits a partial restore. Dropping the future kills
//! both tools, which also rolls back. (`pg_restore --single-transaction --exit-on-error -d`, the
//! direct form, cannot run the drops in its own transaction, hence the pipe.)
//!
//! Security: a `.sql` file is a psql script, and psql backslash commands can run shell commands
//! (`\!`, backticks, `\o |cmd`), read and write local files, or connect elsewhere. dualkey therefore
//! first puts psql in restricted mode with a random key (`\restrict KEY`, psql 13.22, 14.19, 15.14,
//! 16.10, 17.6 and later), in which psql refuses every backslash command, and streams the file to
//! psql itself (the path is read once, so the file cannot be swapped after a check). The
//! `\restrict`/`\unrestrict` pair that pg_dump and pg_restore write at the head and the end of
//! their SQL output is blanked out on the way; any other backslash command makes psql stop, and
//! the transaction rolls back. A psql without `\restrict` is refused rather than trusted.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::tools::{self, ToolNotFound};
use super::url::{PgUrl, UrlError};
use super::verify::has_custom_magic;

/// The format of a backup file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DumpFormat {
    /// `pg_dump -Fc` (starts with `PGDMP`): decoded with `pg_restore`, run with `psql`.
    Custom,
    /// A plain SQL script (`.sql`): run with `psql`.
    PlainSql,
}

/// A restore that committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// The backup's format.
    pub format: DumpFormat,
    /// Wall time.
    pub duration: Duration,
}

/// How to restore.
#[derive(Debug, Clone, Copy)]
pub struct RestoreOptions<'a> {
    /// A directory holding `pg_restore` and `psql`, if configured; otherwise `PATH`, then
    /// `/usr/lib/postgresql/<major>/bin`.
    pub pg_bin_dir: Option<&'a Path>,
    /// First drop, in the same transaction, every object of the app's schema (the URL's
    /// `?schema=`, default `public`) that is not part of an extension, so that the schema ends up
    /// exactly as in the backup (default `true`). With `false`, objects created after the backup
    /// stay (plain `pg_restore --clean` behaviour), and may make the restore fail.
    pub replace_schema: bool,
}

impl Default for RestoreOptions<'_> {
    fn default() -> Self {
        RestoreOptions {
            pg_bin_dir: None,
            replace_schema: true,
        }
    }
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
    /// The `psql` found cannot enter restricted mode, so no backup is run through it.
    #[error(
        "{version} has no \\restrict; restores need psql 13.22, 14.19, 15.14, 16.10, 17.6 or newer"
    )]
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
    /// A tool could not be started.
    #[error("could not start {tool}: {error}")]
    Spawn {
        /// `pg_restore` or `psql`.
        tool: &'static str,
        /// The OS error.
        error: io::Error,
    },
    /// A tool failed; the transaction was rolled back.
    #[error("{tool} failed ({status}), nothing was changed: {stderr}")]
    Failed {
        /// `pg_restore` (could not read the dump) or `psql` (the SQL failed).
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

/// Restores `path` into the database at `database_url` with the default [`RestoreOptions`] (the
/// app's schema is replaced by the backup's), in one transaction: either all of the backup is
/// restored or nothing changes.
pub async fn restore(
    database_url: &str,
    path: &Path,
    pg_bin_dir: Option<&Path>,
) -> Result<RestoreOutcome, RestoreError> {
    let opts = RestoreOptions {
        pg_bin_dir,
        ..RestoreOptions::default()
    };
    restore_with(database_url, path, &opts).await
}

/// Restores `path` into the database at `database_url`, in one transaction. Dropping the future
/// kills the tools, which also rolls back.
#[tracing::instrument(skip_all, fields(path = %path.display(), replace_schema = opts.replace_schema))]
pub async fn restore_with(
    database_url: &str,
    path: &Path,
    opts: &RestoreOptions<'_>,
) -> Result<RestoreOutcome, RestoreError> {
    let url = PgUrl::parse(database_url)?;
    let format = detect_format(path)?;
    let psql = tools::locate("psql", opts.pg_bin_dir)?;
    let pg_restore = match format {
        DumpFormat::Custom => Some(tools::locate("pg_restore", opts.pg_bin_dir)?),
        DumpFormat::PlainSql => None,
    };
    psql_has_restrict(&psql).await?;
    let start = Instant::now();
    tracing::info!(?format, database = url.database(), "restore started");

    let (input, producer) = match &pg_restore {
        None => {
            let file = std::fs::File::open(path).map_err(|error| match error.kind() {
                io::ErrorKind::NotFound => RestoreError::Missing(path.to_path_buf()),
                _ => RestoreError::Io {
                    action: "open",
                    path: path.to_path_buf(),
                    error,
                },
            })?;
            (file, None)
        }
        Some(pg_restore) => {
            let spawn_err = |error| RestoreError::Spawn {
                tool: "pg_restore",
                error,
            };
            let mut child = Command::new(pg_restore)
                .args(["--clean", "--if-exists", "--no-owner", "--file=-"])
                .arg(tools::path_arg(path))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(spawn_err)?;
            let stderr = tools::collect_stderr(child.stderr.take());
            let stdout = child.stdout.take().expect("stdout is piped");
            let stdout = stdout.into_owned_fd().map_err(spawn_err)?;
            (std::fs::File::from(stdout), Some((child, stderr)))
        }
    };
    let pre_sql = opts
        .replace_schema
        .then(|| empty_schema_sql(url.schema().unwrap_or("public")));
    run_psql(&url, &psql, pre_sql, input, producer, path).await?;

    let duration = start.elapsed();
    tracing::info!(?duration, "restore finished");
    Ok(RestoreOutcome { format, duration })
}

/// A `DO` block that drops every table, view, materialized view, sequence, foreign table, type,
/// domain, function, procedure and aggregate of `schema` that is not part of an extension.
fn empty_schema_sql(schema: &str) -> String {
    // A random dollar-quote tag: no schema name can end the block early.
    let tag = format!("$dk{}$", uuid::Uuid::new_v4().simple());
    let lit = format!("'{}'", schema.replace('\'', "''"));
    format!(
        "DO {tag}
DECLARE r record;
BEGIN
  FOR r IN
    SELECT format('DROP %s IF EXISTS %I.%I CASCADE',
             CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
               WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
             n.nspname, c.relname) AS stmt
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = {lit} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                      AND d.objid = c.oid AND d.deptype = 'e')
    UNION ALL
    SELECT format('DROP %s IF EXISTS %I.%I CASCADE',
             CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, n.nspname, t.typname)
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE n.nspname = {lit} AND t.typtype IN ('e', 'd', 'r', 'c')
      AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                      AND d.objid = t.oid AND d.deptype = 'e')
    UNION ALL
    SELECT format('DROP %s IF EXISTS %s CASCADE',
             CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE'
               ELSE 'FUNCTION' END,
             p.oid::regprocedure)
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = {lit}
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                      AND d.objid = p.oid AND d.deptype = 'e')
  LOOP
    EXECUTE r.stmt;
  END LOOP;
END
{tag}"
    )
}

/// A tool producing psql's input (`pg_restore --file=-`) and its stderr being collected.
type Producer = (Child, JoinHandle<Vec<u8>>);

/// Runs `psql --single-transaction` in restricted mode on `input` (after `pre_sql`), letting it
/// commit only if `input` was read to its end and the `producer` writing it succeeded.
async fn run_psql(
    url: &PgUrl,
    psql: &Path,
    pre_sql: Option<String>,
    input: std::fs::File,
    producer: Option<Producer>,
    path: &Path,
) -> Result<(), RestoreError> {
    // A key the input cannot know: only `\unrestrict <this key>` would lift restricted mode.
    let key = uuid::Uuid::new_v4().simple().to_string();
    let mut cmd = tools::command(psql, url);
    cmd.args([
        "-X",
        "--no-password",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
    ])
    .arg("-c")
    .arg(format!("\\restrict {key}"));
    if let Some(sql) = pre_sql {
        cmd.arg("-c").arg(sql);
    }
    cmd.args(["-f", "-"])
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
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.into_owned_fd().map_err(spawn_err)?;
    // psql sees the end of its input (and commits) only once both write ends are closed: this
    // one is closed after the input was fed completely, or after psql was killed if it was not.
    let hold_open = stdin.try_clone().map_err(spawn_err)?;
    let feeder = tokio::task::spawn_blocking(move || {
        let mut out = io::BufWriter::with_capacity(1 << 20, std::fs::File::from(stdin));
        let input = BufReader::with_capacity(1 << 20, input);
        match feed_plain_sql(input, &mut out).and_then(|_| out.flush()) {
            // psql stopped reading (it failed and exited): its status says why.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            r => r,
        }
    });
    let fed = feeder
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
    let produced = match producer {
        None => None,
        Some((mut p, p_stderr)) => {
            let status = p.wait().await;
            let p_stderr = tools::summarize_stderr(&p_stderr.await.unwrap_or_default(), None);
            Some((status, p_stderr))
        }
    };
    let producer_ok = match &produced {
        None => true,
        Some((status, _)) => status.as_ref().is_ok_and(|s| s.success()),
    };
    if fed.is_err() || !producer_ok {
        // The input ended early: psql must not see a clean end of it.
        let _ = child.start_kill();
    }
    // After a SIGKILL psql runs no more code, so closing the last write end is safe either way.
    drop(hold_open);
    let status = child.wait().await.map_err(spawn_err)?;
    let stderr = tools::summarize_stderr(&stderr.await.unwrap_or_default(), Some(url));
    let psql_failed = || RestoreError::Failed {
        tool: "psql",
        status: tools::describe_status(&status),
        stderr: stderr.clone(),
    };

    // psql failing on its own (not killed by us) is the root cause: the producer then only saw
    // its output pipe close.
    if !status.success() && status.signal() != Some(libc::SIGKILL) {
        return Err(psql_failed());
    }
    if let Some((p_status, p_stderr)) = produced {
        let p_status = p_status.map_err(|error| RestoreError::Spawn {
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
    fed.map_err(|error| RestoreError::Io {
        action: "read",
        path: path.to_path_buf(),
        error,
    })?;
    if !status.success() {
        return Err(psql_failed());
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
