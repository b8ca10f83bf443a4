//! Restoring a backup into the target database, all or nothing, byte for byte what was approved:
//! the options, errors and entry points here; preflight, source, sql, feed, run, verdict beside.
//!
//! What a restore means: afterwards the app's schema (the URL's `?schema=`, Prisma's default
//! `public`) holds exactly what the backup holds. Objects created after the backup (a table, an
//! enum, a foreign key to a restored table, added by a later migration) would otherwise survive a
//! plain `pg_restore --clean`, and either make it fail (a foreign key blocks the drop of the table
//! it points at) or make the next `/db deploy` fail (`relation already exists`). So, by default
//! ([`RestoreOptions::replace_schema`]), the restore first drops every object of that schema that
//! does not belong to an extension (the schema itself, its owner and grants, and extensions
//! stay), then restores the backup, all in one transaction.
//!
//! # The protocol
//!
//! ```text
//! backup file (opened once) -> SHA-256 -> pg_restore --clean --if-exists --no-owner
//!                                          --single-transaction --file=-   (custom format only,
//!                                          reads the archive from its stdin)
//!   -> dualkey  (blanks pg_dump's \restrict pair and pg_restore's own BEGIN/COMMIT)
//!   -> psql -X -q -At -v ON_ERROR_STOP=1 -c '\restrict KEY' -c 'SET default_transaction_read_only = on'
//!           -c 'BEGIN READ WRITE' -c '<commit guard>' [-c 'DO ...'] -f -
//! ```
//!
//! 1. The file is opened exactly once; its format is told from the first bytes of that handle.
//!    Every byte read from it goes through SHA-256 on its way to `pg_restore` (custom format; our
//!    dumps are written through a pipe, so they hold no data offsets and `pg_restore` reads them
//!    front to back from a pipe) or straight to psql (plain `.sql`). A file renamed over the path,
//!    or changed in place, after that open is either never read or changes the hash.
//! 2. psql runs *without* `--single-transaction`: dualkey opens the transaction (`BEGIN`) and is
//!    the only one that ends it. After the stream, it sends `COMMIT` only if the whole file was
//!    read, its SHA-256 equals [`RestoreOptions::expected_sha256`] (the approved/catalog hash),
//!    `pg_restore` exited 0 and its output ended with its own closing `COMMIT` (blanked, never
//!    run). Otherwise psql is killed without a `COMMIT`, and an open transaction dies with its
//!    session: nothing is committed. This is what makes a dead bot harmless: when dualkey is
//!    SIGKILLed, psql (which dies with it, see `tools.rs`) never got a `COMMIT`, and even a psql
//!    that lived on would only see the end of its input, which rolls back.
//! 3. Nothing in the stream can commit early. A `COMMIT`/`END` inside the file (a hand-written
//!    `.sql`, or pg_dump's `BEGIN`/`COMMIT` around large objects in plain dumps) fires a deferred
//!    constraint trigger on a temporary table, which raises unless dualkey set a random key just
//!    before its own `COMMIT`: the commit fails and everything rolls back. A `ROLLBACK` inside the
//!    file ends the transaction, after which the session defaults to read-only transactions, so
//!    plain writes after it fail. (A file could turn that default off again and commit what follows
//!    on its own: a plain `.sql` file is therefore spooled and its SHA-256 checked before psql sees
//!    a byte of it, so only the approved content can run; an approved hand-written file that does
//!    this is the approvers' own script, and catalog dumps never contain it.) Either way psql stops (`ON_ERROR_STOP`) or dualkey sees that its
//!    `COMMIT` was not the one that committed. Success is only reported when psql printed a marker
//!    that the guard sets inside the committing transaction. (Such files are therefore refused as
//!    a whole; restore them by hand. The guard needs the `TEMP` privilege, which PostgreSQL grants
//!    to everyone by default.)
//!
//! A failed restore leaves the database unchanged. (`pg_restore --single-transaction
//! --exit-on-error -d`, the direct form, cannot run the drops in its own transaction nor wait for
//! the hash, hence the pipe.)
//!
//! Security: a `.sql` file is a psql script, and psql backslash commands can run shell commands
//! (`\!`, backticks, `\o |cmd`), read and write local files, or connect elsewhere. dualkey therefore
//! first puts psql in restricted mode with a random key (`\restrict KEY`, psql 13.22, 14.19, 15.14,
//! 16.10, 17.6 and later), in which psql refuses every backslash command, and streams the file to
//! psql itself. The `\restrict`/`\unrestrict` pair that pg_dump and pg_restore write at the head
//! and the end of their SQL output is blanked out on the way; any other backslash command makes
//! psql stop, and the transaction rolls back. A psql without `\restrict` is refused rather than
//! trusted.

mod feed;
mod preflight;
mod run;
mod source;
mod sql;
mod verdict;

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::tools::{self, ToolNotFound};
use super::url::{PgUrl, UrlError};
use super::verify::CUSTOM_MAGIC;
use preflight::{format_from, psql_has_restrict, read_head};
use run::run_restore;
use source::{spool_checked, HashingReader};
use sql::empty_schema_sql;

pub use preflight::detect_format;

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
    /// SHA-256 (lowercase hex) of exactly the bytes that were restored.
    pub sha256: String,
    /// Number of bytes read from the file (all of it).
    pub size_bytes: u64,
}

/// Called with the path right after the backup file was opened, before any byte is read from
/// it. For tests that swap or change the file at exactly that moment.
pub type AfterOpenHook<'a> = &'a (dyn Fn(&Path) + Send + Sync);

/// How to restore.
#[derive(Clone, Copy)]
pub struct RestoreOptions<'a> {
    /// A directory holding `pg_restore` and `psql`, if configured; otherwise `PATH`, then
    /// `/usr/lib/postgresql/<major>/bin`.
    pub pg_bin_dir: Option<&'a Path>,
    /// First drop, in the same transaction, every object of the app's schema (the URL's
    /// `?schema=`, default `public`) that is not part of an extension, so that the schema ends up
    /// exactly as in the backup (default `true`). With `false`, objects created after the backup
    /// stay (plain `pg_restore --clean` behaviour), and may make the restore fail.
    pub replace_schema: bool,
    /// The SHA-256 (hex, any case) the file must have: the approved or catalog hash. The bytes
    /// are hashed while they stream into the restore, and the transaction commits only if they
    /// match. `None` restores whatever the file holds (still all or nothing).
    pub expected_sha256: Option<&'a str>,
    /// Test hook: see `AfterOpenHook`.
    #[doc(hidden)]
    pub after_open: Option<AfterOpenHook<'a>>,
}

impl Default for RestoreOptions<'_> {
    fn default() -> Self {
        RestoreOptions {
            pg_bin_dir: None,
            replace_schema: true,
            expected_sha256: None,
            after_open: None,
        }
    }
}

impl std::fmt::Debug for RestoreOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreOptions")
            .field("pg_bin_dir", &self.pg_bin_dir)
            .field("replace_schema", &self.replace_schema)
            .field("expected_sha256", &self.expected_sha256)
            .field("after_open", &self.after_open.is_some())
            .finish()
    }
}

/// Why a restore failed. In every case nothing was committed: the database is unchanged.
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
    /// The bytes that streamed into the restore are not the approved ones.
    #[error(
        "backup file {} changed since it was approved (SHA-256 now {actual}, approved {expected}); nothing was committed, the database is unchanged",
        path.display()
    )]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The approved SHA-256, lowercase hex.
        expected: String,
        /// The SHA-256 of what was read, lowercase hex.
        actual: String,
    },
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
    /// The stream did not end the way a complete restore ends (pg_restore's output stopped
    /// early, or the file ended the transaction itself), so dualkey did not commit.
    #[error("{0}; nothing was committed, the database is unchanged")]
    Incomplete(String),
    /// Every check passed and dualkey sent its `COMMIT`, but what psql did with it is not known
    /// (waiting for psql failed). The database holds either the whole backup or what it held
    /// before; never part of it.
    #[error("dualkey sent COMMIT after every check passed, but could not learn whether it took effect ({0}); the database holds either the whole backup or what it held before, never part of it: check it with `status` before anything else")]
    CommitUnconfirmed(String),
}

/// Restores `path` into the database at `database_url` with the default [`RestoreOptions`] (the
/// app's schema is replaced by the backup's; no expected hash), in one transaction: either all
/// of the backup is restored or nothing changes.
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

/// Restores `path` into the database at `database_url`, all or nothing (see the module doc for
/// the protocol). Dropping the future kills the tools, which also rolls back.
///
/// Children are spawned here, on the calling async task, never on a blocking thread (see
/// `tools.rs` on the parent-death signal).
#[tracing::instrument(skip_all, fields(path = %path.display(), replace_schema = opts.replace_schema))]
pub async fn restore_with(
    database_url: &str,
    path: &Path,
    opts: &RestoreOptions<'_>,
) -> Result<RestoreOutcome, RestoreError> {
    let url = PgUrl::parse(database_url)?;
    let io_err = |action, error: io::Error| match error.kind() {
        io::ErrorKind::NotFound => RestoreError::Missing(path.to_path_buf()),
        _ => RestoreError::Io {
            action,
            path: path.to_path_buf(),
            error,
        },
    };
    // The one open: every byte restored is read through this handle.
    let mut file = std::fs::File::open(path).map_err(|e| io_err("open", e))?;
    if !file.metadata().map_err(|e| io_err("read", e))?.is_file() {
        return Err(RestoreError::UnsupportedFormat(path.to_path_buf()));
    }
    let head = read_head(&mut file).map_err(|e| io_err("read", e))?;
    let format = format_from(head == CUSTOM_MAGIC, path)?;
    let psql = tools::locate("psql", opts.pg_bin_dir)?;
    let pg_restore = match format {
        DumpFormat::Custom => Some(tools::locate("pg_restore", opts.pg_bin_dir)?),
        DumpFormat::PlainSql => None,
    };
    psql_has_restrict(&psql).await?;
    if let Some(hook) = opts.after_open {
        hook(path);
    }
    let start = Instant::now();
    tracing::info!(?format, database = url.database(), "restore started");

    let rest: Box<dyn Read + Send> = match (format, opts.expected_sha256) {
        (DumpFormat::PlainSql, Some(want)) => {
            Box::new(spool_checked(head, file, path, want).await?)
        }
        _ => Box::new(io::Cursor::new(head).chain(file)),
    };
    let source = HashingReader::new(rest);
    let pre_sql = opts
        .replace_schema
        .then(|| empty_schema_sql(url.schema().unwrap_or("public")));
    let (size_bytes, sha256) = run_restore(
        &url,
        &psql,
        pg_restore.as_deref(),
        pre_sql,
        source,
        path,
        opts.expected_sha256,
    )
    .await?;

    let duration = start.elapsed();
    tracing::info!(?duration, %sha256, "restore committed");
    Ok(RestoreOutcome {
        format,
        duration,
        sha256,
        size_bytes,
    })
}
