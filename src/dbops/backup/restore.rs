//! Restoring a backup into the target database, all or nothing, byte for byte what was approved.
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

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::tools::{self, ToolNotFound};
use super::url::{PgUrl, UrlError};
use super::verify::{has_custom_magic, CUSTOM_MAGIC};

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
    /// Test hook: see [`AfterOpenHook`].
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
    format_from(false, path)
}

/// The format, given whether the file starts with the custom-format magic.
fn format_from(custom_magic: bool, path: &Path) -> Result<DumpFormat, RestoreError> {
    if custom_magic {
        return Ok(DumpFormat::Custom);
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

/// Plain `.sql` files go to psql as they are read, and psql runs each statement as it arrives:
/// a file swapped after approval could act (say, `ROLLBACK` then statements that commit on their
/// own) before the hash at its end is compared. So a plain file is first copied, through the one
/// open handle and hashed on the way, into a private unlinked spool file next to it, and psql
/// reads the spool only when the hash equals `expected`. (pg_restore's output needs no spool: it
/// is checked for its own closing `COMMIT`, and dualkey's `COMMIT` waits for the hash.)
async fn spool_checked(
    head: Vec<u8>,
    file: std::fs::File,
    path: &Path,
    expected: &str,
) -> Result<std::fs::File, RestoreError> {
    let p = path.to_path_buf();
    let want = expected.trim().to_ascii_lowercase();
    let copied = tokio::task::spawn_blocking(move || -> Result<std::fs::File, RestoreError> {
        let io_err = |action, error| RestoreError::Io {
            action,
            path: p.clone(),
            error,
        };
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut spool = open_spool(dir).map_err(|e| io_err("create a spool file next to", e))?;
        let mut reader = HashingReader::new(io::Cursor::new(head).chain(file));
        io::copy(&mut reader, &mut spool).map_err(|e| io_err("spool", e))?;
        let (_, actual) = reader.finish();
        if actual != want {
            return Err(RestoreError::ChecksumMismatch {
                path: p.clone(),
                expected: want,
                actual,
            });
        }
        io::Seek::seek(&mut spool, io::SeekFrom::Start(0)).map_err(|e| io_err("spool", e))?;
        Ok(spool)
    })
    .await;
    copied.unwrap_or_else(|e| {
        Err(RestoreError::Io {
            action: "spool",
            path: path.to_path_buf(),
            error: io::Error::other(e.to_string()),
        })
    })
}

/// A read-write file in `dir` that has no name (Linux `O_TMPFILE`; elsewhere a new file that is
/// unlinked at once), so nothing else can open or change it.
fn open_spool(dir: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    #[cfg(target_os = "linux")]
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
    {
        return Ok(f);
    }
    let name = dir.join(format!(
        ".dualkey-restore-{}.spool",
        uuid::Uuid::new_v4().simple()
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&name)?;
    let _ = std::fs::remove_file(&name);
    Ok(f)
}

/// Reads up to the length of the custom-format magic from the start of `file`.
fn read_head(file: &mut std::fs::File) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; CUSTOM_MAGIC.len()];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(n);
    Ok(head)
}

/// A reader that hashes (SHA-256) and counts every byte read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads (and hashes) the rest, for when the consumer stopped early: the hash then still
    /// covers the whole file.
    fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }

    /// Size and lowercase-hex SHA-256 of everything read.
    fn finish(self) -> (u64, String) {
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
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

/// The name of the setting dualkey sets (to the commit key) just before its own `COMMIT`.
const COMMIT_SETTING: &str = "dualkey.restore_commit";
/// The name of the setting the guard sets (to the commit key) in the committing transaction.
const COMMITTED_SETTING: &str = "dualkey.restore_committed";
/// What psql prints, after the commit, when the guard saw dualkey's own `COMMIT` succeed.
const COMMITTED_MARKER: &str = "dualkey-restore-committed:";

/// The commit guard, run right after `BEGIN`: a deferred constraint trigger on a temporary
/// table fires at `COMMIT` (or `PREPARE TRANSACTION`, or `SET CONSTRAINTS ALL IMMEDIATE`) and
/// raises unless `dualkey.restore_commit` holds `key`, which only dualkey's final SQL sets. When
/// it lets the commit through, it records `key` in `dualkey.restore_committed` (a session
/// setting, kept because its transaction commits), which the final marker query prints.
fn commit_guard_sql(key: &str) -> String {
    let tag = format!("$dk{key}$");
    format!(
        "CREATE TEMPORARY TABLE dualkey_restore_guard (x int) ON COMMIT DROP;
CREATE FUNCTION pg_temp.dualkey_restore_guard() RETURNS trigger LANGUAGE plpgsql AS {tag}
BEGIN
  IF current_setting('{COMMIT_SETTING}', true) IS DISTINCT FROM '{key}' THEN
    RAISE EXCEPTION 'dualkey: the backup ends the restore''s transaction itself (COMMIT or END inside the file); dualkey commits a restore only after reading and checking the whole file, so nothing was committed';
  END IF;
  PERFORM set_config('{COMMITTED_SETTING}', '{key}', false);
  RETURN NULL;
END
{tag};
CREATE CONSTRAINT TRIGGER dualkey_restore_guard AFTER INSERT ON dualkey_restore_guard
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pg_temp.dualkey_restore_guard();
INSERT INTO dualkey_restore_guard VALUES (1);"
    )
}

/// What dualkey sends after the stream when, and only when, everything checked out. The
/// leading newline ends a last line without one; if the stream stopped inside a statement or a
/// `COPY` block, this text becomes part of it and never commits.
fn commit_sql(key: &str) -> String {
    format!(
        "\nSET LOCAL {COMMIT_SETTING} = '{key}';\nCOMMIT;\nSELECT '{COMMITTED_MARKER}' || coalesce(current_setting('{COMMITTED_SETTING}', true), 'none');\n"
    )
}

/// Streams `source` into psql (through `pg_restore` for a custom-format dump) inside a
/// transaction that dualkey commits only when the whole file was read, its SHA-256 is `expected`
/// (when given), `pg_restore` exited 0 and its output was complete. Returns the size and
/// SHA-256 of what was restored.
async fn run_restore<R: Read + Send + 'static>(
    url: &PgUrl,
    psql: &Path,
    pg_restore: Option<&Path>,
    pre_sql: Option<String>,
    mut source: HashingReader<R>,
    path: &Path,
    expected: Option<&str>,
) -> Result<(u64, String), RestoreError> {
    // Keys the input cannot know: only `\unrestrict <restrict_key>` would lift restricted mode,
    // only `SET dualkey.restore_commit = '<commit_key>'` lets the guard pass a COMMIT.
    let restrict_key = uuid::Uuid::new_v4().simple().to_string();
    let commit_key = uuid::Uuid::new_v4().simple().to_string();
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
    .arg(commit_guard_sql(&commit_key));
    if let Some(sql) = pre_sql {
        cmd.arg("-c").arg(sql);
    }
    cmd.args(["-f", "-"])
        .args(url.connection_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let psql_spawn_err = |error| RestoreError::Spawn {
        tool: "psql",
        error,
    };
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

    // Custom format: file -> SHA-256 -> pg_restore's stdin (copier), pg_restore's stdout ->
    // psql (feeder). Plain SQL: file -> SHA-256 -> psql (feeder). Blocking threads only move
    // bytes; every child was started above, on this task (see tools.rs).
    let (fed, read, produced) = match pg_restore {
        None => {
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
            ((fed, writer), read, None)
        }
        Some(pg_restore) => {
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
            (fed, read, Some((status, p_stderr)))
        }
    };
    let (fed, writer) = fed;

    let mismatch = match (&read, expected) {
        (Ok((_, actual)), Some(want)) if !want.trim().eq_ignore_ascii_case(actual) => {
            Some(RestoreError::ChecksumMismatch {
                path: path.to_path_buf(),
                expected: want.trim().to_ascii_lowercase(),
                actual: actual.clone(),
            })
        }
        _ => None,
    };
    let producer_ok = match &produced {
        None => true,
        Some((status, _)) => status.as_ref().is_ok_and(|s| s.success()),
    };
    let all_checked = read.is_ok()
        && mismatch.is_none()
        && producer_ok
        && matches!(fed, Ok(true))
        && writer.is_some();

    let psql_stopped_reading = matches!(&fed, Err(e) if e.kind() == io::ErrorKind::BrokenPipe);
    let status = if all_checked {
        // The one place a restore commits.
        let mut writer = writer.expect("checked above");
        let sql = commit_sql(&commit_key);
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
    let psql_stderr = tools::summarize_stderr(&stderr.await.unwrap_or_default(), Some(url));
    let psql_stdout = stdout.await.unwrap_or_default();
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

/// Whether this psql knows `\restrict` (its command help lists it).
async fn psql_has_restrict(psql: &Path) -> Result<(), RestoreError> {
    let spawn = |error| RestoreError::Spawn {
        tool: "psql",
        error,
    };
    let help = tools::tool_command(psql)
        .arg("--help=commands")
        .output()
        .await
        .map_err(spawn)?;
    if String::from_utf8_lossy(&help.stdout).contains("\\restrict") {
        return Ok(());
    }
    let version = tools::tool_command(psql)
        .arg("--version")
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

/// Whether `line` is exactly `stmt` (pg_restore writes its own `BEGIN;`/`COMMIT;` that way).
fn is_line(line: &[u8], stmt: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line == stmt
}

/// Copies a plain SQL dump to psql, blanking (keeping line numbers) pg_dump's own `\restrict KEY`
/// in the header (before the first line that is not blank or a `--` comment) and the matching
/// `\unrestrict KEY` when it is the last non-blank line. Everything else passes unchanged.
#[cfg(test)]
fn feed_plain_sql(input: impl BufRead, out: &mut impl Write) -> io::Result<()> {
    feed_sql(input, out, false).map(|_| ())
}

/// Copies SQL to psql, blanking (keeping line numbers) pg_dump's own `\restrict KEY` in the
/// header (before the first line that is not blank or a `--` comment) and the matching
/// `\unrestrict KEY` when nothing but blank lines and comments follow it. Everything else passes
/// unchanged.
///
/// `from_pg_restore`: the input is `pg_restore --single-transaction --file=-` output, whose
/// first statement is its own `BEGIN;` and whose last one its own `COMMIT;`. Both are blanked
/// (dualkey holds the transaction), and the result says whether that closing `COMMIT;` was
/// there, i.e. whether pg_restore wrote its output to the end. A `COMMIT;` line followed by
/// anything but blank lines, comments and the final `\unrestrict` (a line of `COPY` data, a
/// line in a function body) passes unchanged. For plain files the result is always `true`.
fn feed_sql(
    mut input: impl BufRead,
    out: &mut impl Write,
    from_pg_restore: bool,
) -> io::Result<bool> {
    let mut line = Vec::with_capacity(8192);
    let mut in_header = true;
    let mut begin_pending = from_pg_restore;
    let mut key: Option<Vec<u8>> = None;
    // Lines held back because they may be the end of the script: pg_restore's closing
    // `COMMIT;`, the final `\unrestrict`, and blank and comment lines after either.
    let mut held: Vec<Vec<u8>> = Vec::new();
    // Indexes in `held` of the lines to blank if the script ends here.
    let mut held_commit: Option<usize> = None;
    let mut held_unrestrict: Option<usize> = None;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let blank = line.iter().all(u8::is_ascii_whitespace);
        let comment = line.starts_with(b"--");
        if in_header {
            if let Some(k) = restrict_line(&line, "restrict") {
                key = Some(k.to_vec());
                in_header = false;
                out.write_all(b"\n")?;
                continue;
            }
            if !blank && !comment {
                in_header = false;
            }
        }
        if begin_pending && !blank && !comment {
            begin_pending = false;
            if is_line(&line, b"BEGIN;") {
                out.write_all(b"\n")?;
                continue;
            }
        }
        let is_commit = from_pg_restore && is_line(&line, b"COMMIT;");
        let is_unrestrict = key.is_some() && restrict_line(&line, "unrestrict") == key.as_deref();
        if is_commit || is_unrestrict {
            if is_commit {
                // Only a COMMIT after which nothing runs is pg_restore's closing one.
                for h in held.drain(..) {
                    out.write_all(&h)?;
                }
                held_unrestrict = None;
                held_commit = Some(0);
            } else {
                held_unrestrict = Some(held.len());
            }
            held.push(line.clone());
            continue;
        }
        if !held.is_empty() {
            if blank || comment {
                held.push(line.clone());
                continue;
            }
            for h in held.drain(..) {
                out.write_all(&h)?;
            }
            held_commit = None;
            held_unrestrict = None;
        }
        out.write_all(&line)?;
    }
    for i in [held_commit, held_unrestrict].into_iter().flatten() {
        held[i] = b"\n".to_vec();
    }
    for h in held {
        out.write_all(&h)?;
    }
    Ok(!from_pg_restore || held_commit.is_some())
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

    fn feed_restore(input: &str) -> (String, bool) {
        let mut out = Vec::new();
        let complete = feed_sql(input.as_bytes(), &mut out, true).unwrap();
        (String::from_utf8(out).unwrap(), complete)
    }

    /// What `pg_restore --single-transaction --file=-` writes, around `body`.
    fn pg_restore_output(body: &str) -> String {
        format!("--\n-- PostgreSQL database dump\n--\n\n\\restrict k9\n\n-- Dumped by pg_dump\n\nBEGIN;\n\nSET x = 0;\n{body}\nCOMMIT;\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict k9\n\n")
    }

    #[test]
    fn pg_restores_own_begin_and_closing_commit_are_blanked_and_the_end_is_seen() {
        let input = pg_restore_output("CREATE TABLE t (id int);\n");
        let (out, complete) = feed_restore(&input);
        assert!(complete);
        assert!(!out.contains("BEGIN;") && !out.contains("COMMIT;"), "{out}");
        assert!(!out.contains("restrict"), "{out}");
        assert!(
            out.contains("SET x = 0;\nCREATE TABLE t (id int);\n"),
            "{out}"
        );
        assert_eq!(
            out.lines().count(),
            input.lines().count(),
            "line numbers are kept"
        );
    }

    #[test]
    fn a_commit_line_that_is_data_or_a_function_body_passes_unchanged() {
        for body in [
            "COPY t (v) FROM stdin;\nCOMMIT;\n\\.\n",
            "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$\nBEGIN\nCOMMIT;\n-- c\nEND $$;\n",
        ] {
            let (out, complete) = feed_restore(&pg_restore_output(body));
            assert!(complete, "{body}");
            assert!(out.contains(body), "{out}");
            assert_eq!(out.matches("COMMIT;").count(), 1, "{out}");
        }
    }

    #[test]
    fn pg_restore_output_cut_before_its_closing_commit_is_incomplete() {
        let full = pg_restore_output("CREATE TABLE t ();\n");
        let cut = &full[..full.rfind("COMMIT;").unwrap()];
        assert!(!feed_restore(cut).1);
        // COPY data ending in a COMMIT line, cut before the end marker: not the closing one.
        let cut = "BEGIN;\nCOPY t (v) FROM stdin;\nx\nCOMMIT;\n";
        let (out, complete) = feed_restore(cut);
        // A cut stream can end in a line that reads like the closing COMMIT; the restore still
        // does not commit then, because pg_restore did not exit 0 (see run_restore).
        assert!(complete && !out.contains("COMMIT;"));
        assert!(!feed_restore("BEGIN;\nSET x = 1;\n").1);
        assert!(!feed_restore("").1);
    }

    #[test]
    fn plain_files_keep_their_begin_and_commit_for_the_guard_to_refuse() {
        let input = "BEGIN;\nCREATE TABLE t ();\nCOMMIT;\n";
        let mut out = Vec::new();
        assert!(feed_sql(input.as_bytes(), &mut out, false).unwrap());
        assert_eq!(String::from_utf8(out).unwrap(), input);
    }

    #[test]
    fn the_hash_covers_every_byte_read_also_after_the_consumer_stopped() {
        let data = b"PGDMP and the rest of an archive".repeat(1000);
        let mut file = io::Cursor::new(data.clone());
        let mut head = vec![0u8; 5];
        file.read_exact(&mut head).unwrap();
        let mut r = HashingReader::new(io::Cursor::new(head).chain(file));
        let mut first = [0u8; 100];
        r.read_exact(&mut first).unwrap();
        r.drain().unwrap();
        let (n, sha) = r.finish();
        assert_eq!(n, data.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&data)));
    }

    #[test]
    fn only_the_commit_key_opens_the_guard() {
        let key = "0123abcd";
        let guard = commit_guard_sql(key);
        let commit = commit_sql(key);
        assert!(
            guard.contains(&format!("IS DISTINCT FROM '{key}'")),
            "{guard}"
        );
        assert!(guard.contains("DEFERRABLE INITIALLY DEFERRED"), "{guard}");
        assert!(
            commit.starts_with('\n'),
            "a last line without newline is ended first"
        );
        let set = commit
            .find(&format!("SET LOCAL {COMMIT_SETTING} = '{key}'"))
            .unwrap();
        let commit_at = commit.find("COMMIT;").unwrap();
        let marker = commit.find(COMMITTED_MARKER).unwrap();
        assert!(set < commit_at && commit_at < marker, "{commit}");
    }
}
