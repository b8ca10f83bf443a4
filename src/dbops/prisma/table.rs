//! The `_prisma_migrations` table and the connection to the target database.
//!
//! Reads use Prisma's exact `SELECT … ORDER BY "started_at" ASC`; a missing table (SQLSTATE
//! 42P01) means "no migrations table" and creates nothing. Writers take the session-level advisory
//! lock 72707369 on the same connection they write with, giving up after 10 s like the native
//! engine; the lock is released when the connection closes (Prisma never unlocks explicitly).
//!
//! Every connection sets `client_connection_check_interval` ([`CLIENT_CHECK_INTERVAL`]) so that
//! what it runs dies with dualkey instead of committing for a dead process.
//!
//! The URL may carry Prisma's own parameters: `?schema=` selects the schema (default `public`,
//! applied as `search_path`), and Prisma-only parameters (`connection_limit`, `pgbouncer`, …) are
//! dropped before the URL reaches the driver. The URL itself is never logged or put in an error.

use super::error::{PrismaError, PrismaUserError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use std::str::FromStr;
use std::time::Duration;

/// Prisma Migrate's advisory lock key.
pub const ADVISORY_LOCK_KEY: i64 = 72707369;

/// How long writers wait for the advisory lock (the native engine's `ADVISORY_LOCK_TIMEOUT`).
pub const ADVISORY_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for a connection to the target database.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a graceful close of the target connection may take before the socket is dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// `client_connection_check_interval` of every connection to the target (PostgreSQL 14+): while
/// a statement runs, the server checks this often whether dualkey is still connected, and
/// cancels the statement (rolling its transaction back) when it is not.
///
/// Without it, a server notices a dead client only when it next writes to the socket, which for
/// a migration script sent as one query is after the script finished and its implicit
/// transaction COMMITTED: a dualkey killed mid-deploy would leave the script applied with its row
/// marked failed. With it, the script is cancelled and rolled back within about a second.
pub const CLIENT_CHECK_INTERVAL: &str = "1s";

/// Name of Prisma's bookkeeping table.
pub const MIGRATIONS_TABLE: &str = "_prisma_migrations";

/// The exact read Prisma does (`load_migrations_table`).
pub const SELECT_MIGRATIONS_SQL: &str = r#"SELECT "id", "checksum", "finished_at", "migration_name", "logs", "rolled_back_at", "started_at", "applied_steps_count" FROM "_prisma_migrations" ORDER BY "started_at" ASC"#;

/// The exact DDL Prisma uses (`create_migrations_table` of the PostgreSQL flavour).
pub const CREATE_MIGRATIONS_TABLE_SQL: &str = "CREATE TABLE _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
);";

/// Tables that do not make a schema "non-empty" for P3005 (PostGIS), compared case-insensitively.
pub const IGNORED_TABLES: &[&str] = &[
    "spatial_ref_sys",
    "geometry_columns",
    "geography_columns",
    "raster_columns",
    "raster_overviews",
];

/// One row of `_prisma_migrations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationRow {
    /// Row id (uuid v4 text).
    pub id: String,
    /// Checksum of the script when the row was written.
    pub checksum: String,
    /// When the script finished (or when `resolve --applied` ran).
    pub finished_at: Option<DateTime<Utc>>,
    /// The migration (folder) name.
    pub migration_name: String,
    /// Error text of a failed attempt; `''` for `resolve --applied`; `NULL` otherwise.
    pub logs: Option<String>,
    /// When the row was marked rolled back.
    pub rolled_back_at: Option<DateTime<Utc>>,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// 1 after a successful deploy, 0 otherwise.
    pub applied_steps_count: i32,
}

impl MigrationRow {
    /// Prisma's definition of failed: not finished and not rolled back.
    pub fn is_failed(&self) -> bool {
        self.finished_at.is_none() && self.rolled_back_at.is_none()
    }

    /// Finished and not rolled back: the migration counts as applied by this row.
    pub fn is_applied(&self) -> bool {
        self.finished_at.is_some() && self.rolled_back_at.is_none()
    }
}

/// A connection to the target database, with the schema Prisma would use.
pub(crate) struct Target {
    pub(crate) conn: PgConnection,
    pub(crate) schema: String,
}

/// Splits Prisma's URL parameters off: returns the driver URL and the schema.
pub(crate) fn split_prisma_url(url: &str) -> (String, String) {
    // Parameters the driver understands; everything else (Prisma's `schema`, `connection_limit`,
    // `pgbouncer`, `sslaccept`, `sslpassword`, …) is dropped so the driver never logs it. Prisma's
    // `sslcert` is the CA (libpq's `sslrootcert`), the driver's is a client certificate: dropped,
    // like for the tools (see `backup::url`).
    const DRIVER_PARAMS: &[&str] = &[
        "sslmode",
        "sslrootcert",
        "statement-cache-capacity",
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "application_name",
        "options",
    ];
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut schema = String::from("public");
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "schema" {
            let decoded = percent_decode(v);
            if !decoded.is_empty() {
                schema = decoded;
            }
        } else if DRIVER_PARAMS.contains(&k) {
            kept.push(pair);
        }
    }
    let driver_url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (driver_url, schema)
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Double-quotes an identifier for PostgreSQL.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The driver options dualkey uses for the target database at `database_url`: Prisma's own
/// parameters dropped, TLS (`sslmode`, `sslrootcert`) resolved exactly as for the PostgreSQL tools
/// (see [`crate::dbops::backup::PgUrl::apply_tls`]), statement logging off. Every sqlx connection
/// to the target goes through here.
pub fn connect_options(database_url: &str) -> Result<PgConnectOptions, PrismaError> {
    let (driver_url, _) = split_prisma_url(database_url);
    // Parsed for its TLS settings; the error names the bad part, never the URL.
    let url = crate::dbops::backup::PgUrl::parse(database_url)
        .map_err(|e| PrismaError::Connect(sqlx::Error::Configuration(Box::new(e))))?;
    let options = PgConnectOptions::from_str(&driver_url)
        .map_err(PrismaError::Connect)?
        .application_name("dualkey")
        // Migration scripts may contain secrets (CREATE ROLE … PASSWORD): never log SQL text.
        .disable_statement_logging();
    Ok(url.apply_tls(options))
}

impl Target {
    /// Connects (10 s timeout) and sets `search_path` to the URL's schema.
    pub(crate) async fn connect(database_url: &str) -> Result<Target, PrismaError> {
        let (_, schema) = split_prisma_url(database_url);
        let options = connect_options(database_url)?;
        let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
            Ok(r) => r.map_err(PrismaError::Connect)?,
            Err(_) => {
                return Err(PrismaError::Connect(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no connection within 10 s",
                ))))
            }
        };
        run_script(
            &mut conn,
            &format!("SET search_path = {}", quote_ident(&schema)),
        )
        .await
        .map_err(PrismaError::db("setting search_path"))?;
        // A statement of a dead dualkey must die with it (see CLIENT_CHECK_INTERVAL). Its own
        // statement, so that a server that refuses it (before 14: unknown parameter; a platform
        // without the check: invalid value) leaves the session as it was; such servers behave as
        // before, which the docs of `deploy` describe.
        let check = format!("SET client_connection_check_interval = '{CLIENT_CHECK_INTERVAL}'");
        match run_script(&mut conn, &check).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) => {
                // Once per process: status reads connect often.
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(error = %e.message(), "the target database does not support client_connection_check_interval (PostgreSQL 14+ on Linux): a statement running when dualkey dies runs to its end, and a migration script then commits");
                });
            }
            Err(e) => {
                return Err(PrismaError::db("setting client_connection_check_interval")(
                    e,
                ))
            }
        }
        Ok(Target { conn, schema })
    }

    /// `SELECT pg_advisory_lock(72707369)`, giving up after 10 s with P1002.
    ///
    /// On timeout the connection is dropped by the caller (the pending lock request dies with it).
    pub(crate) async fn acquire_lock(&mut self) -> Result<(), PrismaError> {
        let fut = sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(ADVISORY_LOCK_KEY)
            .execute(&mut self.conn);
        match tokio::time::timeout(ADVISORY_LOCK_TIMEOUT, fut).await {
            Ok(r) => r
                .map(|_| ())
                .map_err(PrismaError::db("taking the advisory lock")),
            Err(_) => Err(PrismaUserError::advisory_lock_timeout().into()),
        }
    }

    /// Prisma's read of `_prisma_migrations`; `None` when the table does not exist.
    pub(crate) async fn load_rows(&mut self) -> Result<Option<Vec<MigrationRow>>, PrismaError> {
        load_rows(&mut self.conn).await
    }

    /// Ordinary tables (`relkind = 'r'`) of the schema, as Prisma lists them for P3005.
    pub(crate) async fn table_names(&mut self) -> Result<Vec<String>, PrismaError> {
        let rows = sqlx::query(
            "SELECT tbl.relname AS table_name, namespace.nspname AS table_namespace \
             FROM pg_class AS tbl INNER JOIN pg_namespace AS namespace ON namespace.oid = tbl.relnamespace \
             WHERE tbl.relkind = 'r' AND namespace.nspname = ANY ($1)",
        )
        .bind(vec![self.schema.clone()])
        .fetch_all(&mut self.conn)
        .await
        .map_err(PrismaError::db("listing tables"))?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("table_name"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(PrismaError::db("listing tables"))
    }

    /// Prisma's `CREATE TABLE _prisma_migrations`.
    pub(crate) async fn create_migrations_table(&mut self) -> Result<(), PrismaError> {
        run_script(&mut self.conn, CREATE_MIGRATIONS_TABLE_SQL)
            .await
            .map(|_| ())
            .map_err(PrismaError::db("creating _prisma_migrations"))
    }

    /// Deploy's `initialize` without its write: `false` when the table exists, P3005 when other
    /// (non-PostGIS) tables exist, else `true`: the caller must create the table (with
    /// [`Target::create_migrations_table`]) before its first row.
    pub(crate) async fn check_initialize_for_deploy(&mut self) -> Result<bool, PrismaError> {
        let tables = self.table_names().await?;
        if tables.iter().any(|t| t == MIGRATIONS_TABLE) {
            return Ok(false);
        }
        if tables
            .iter()
            .any(|t| !IGNORED_TABLES.iter().any(|i| i.eq_ignore_ascii_case(t)))
        {
            return Err(PrismaUserError::schema_not_empty().into());
        }
        Ok(true)
    }

    /// `UPDATE … SET rolled_back_at = <now> WHERE id = $1` (Prisma's `mark_migration_rolled_back_by_id`).
    pub(crate) async fn mark_rolled_back_by_id(&mut self, id: &str) -> Result<(), PrismaError> {
        sqlx::query(r#"UPDATE "_prisma_migrations" SET "rolled_back_at" = $1 WHERE "id" = $2"#)
            .bind(Utc::now())
            .bind(id)
            .execute(&mut self.conn)
            .await
            .map(|_| ())
            .map_err(PrismaError::db("marking a migration rolled back"))
    }

    /// Closes the connection, which releases the session-level advisory lock.
    ///
    /// Bounded: over TLS, sqlx's graceful close waits to read from the server, and a server still
    /// busy with an abandoned statement (a lock wait that timed out) never answers. After
    /// [`CLOSE_TIMEOUT`] the socket is simply dropped; the server then ends the session (and
    /// releases its locks) when the statement finishes.
    pub(crate) async fn close(self) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.conn.close()).await;
    }
}

/// Runs `sql` as ONE simple-protocol query (the native engine's `simple_query`): several
/// statements, one implicit transaction unless the script manages its own.
///
/// Calls `Executor::execute` directly: `RawSql::execute` makes callers' futures non-`Send`
/// (sqlx 0.8 lifetime bound, launchbadge/sqlx#3613).
pub(crate) async fn run_script(
    conn: &mut PgConnection,
    sql: &str,
) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
    sqlx::Executor::execute(conn, sqlx::raw_sql(sql)).await
}

/// Runs Prisma's SELECT on `conn`; `None` when the table does not exist.
pub(crate) async fn load_rows(
    conn: &mut PgConnection,
) -> Result<Option<Vec<MigrationRow>>, PrismaError> {
    let rows = match sqlx::query(SELECT_MIGRATIONS_SQL)
        .fetch_all(&mut *conn)
        .await
    {
        Ok(rows) => rows,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => return Ok(None),
        Err(e) => return Err(PrismaError::db("reading _prisma_migrations")(e)),
    };
    let decode = |r: &sqlx::postgres::PgRow| -> Result<MigrationRow, sqlx::Error> {
        Ok(MigrationRow {
            id: r.try_get("id")?,
            checksum: r.try_get("checksum")?,
            finished_at: r.try_get("finished_at")?,
            migration_name: r.try_get("migration_name")?,
            logs: r.try_get("logs")?,
            rolled_back_at: r.try_get("rolled_back_at")?,
            started_at: r.try_get("started_at")?,
            applied_steps_count: r.try_get("applied_steps_count")?,
        })
    };
    rows.iter()
        .map(decode)
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
        .map_err(PrismaError::db("decoding _prisma_migrations"))
}

/// Reads `_prisma_migrations` of the target database with Prisma's exact SELECT (rows ordered by
/// `started_at`); `Ok(None)` when the table does not exist. Takes no lock and writes nothing.
pub async fn read_migrations_table(
    database_url: &str,
) -> Result<Option<Vec<MigrationRow>>, PrismaError> {
    let mut target = Target::connect(database_url).await?;
    let rows = target.load_rows().await;
    target.close().await;
    rows
}

/// Renders a PostgreSQL error from a script the way the native engine does for P3018
/// (`apply_migration_script`): `(sqlstate, "<SEVERITY>: <message>[\nDETAIL: …][\nHINT: …]
/// [position block]\n\n<DbError debug>")`. Non-database errors give `("none", error text)`.
pub(crate) fn render_script_error(script: &str, err: &sqlx::Error) -> (String, String) {
    let Some(db) = err
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>())
    else {
        return ("none".to_string(), err.to_string());
    };
    use sqlx::postgres::PgSeverity;
    let (sev_str, parsed) = match db.severity() {
        PgSeverity::Panic => ("PANIC", "Panic"),
        PgSeverity::Fatal => ("FATAL", "Fatal"),
        PgSeverity::Error => ("ERROR", "Error"),
        PgSeverity::Warning => ("WARNING", "Warning"),
        PgSeverity::Notice => ("NOTICE", "Notice"),
        PgSeverity::Debug => ("DEBUG", "Debug"),
        PgSeverity::Info => ("INFO", "Info"),
        PgSeverity::Log => ("LOG", "Log"),
    };
    let mut display = format!("{sev_str}: {}", db.message());
    if let Some(d) = db.detail() {
        display.push_str(&format!("\nDETAIL: {d}"));
    }
    if let Some(h) = db.hint() {
        display.push_str(&format!("\nHINT: {h}"));
    }
    let mut position_block = String::new();
    let mut position_debug = "None".to_string();
    match db.position() {
        Some(sqlx::postgres::PgErrorPosition::Original(position)) => {
            position_debug = format!("Some(Original({position}))");
            position_block = render_position(script, position);
        }
        Some(sqlx::postgres::PgErrorPosition::Internal { position, query }) => {
            position_debug = format!("Some(Internal {{ position: {position}, query: {query:?} }})");
        }
        None => {}
    }
    let parsed = format!("Some({parsed})");
    let opt = |v: Option<&str>| match v {
        Some(s) => format!("Some({s:?})"),
        None => "None".to_string(),
    };
    let debug = format!(
        "DbError {{ severity: {sev_str:?}, parsed_severity: {parsed}, code: SqlState(E{code}), message: {message:?}, detail: {detail}, hint: {hint}, position: {position_debug}, where_: {where_}, schema: {schema}, table: {table}, column: {column}, datatype: {datatype}, constraint: {constraint}, file: {file}, line: {line}, routine: {routine} }}",
        code = db.code(),
        message = db.message(),
        detail = opt(db.detail()),
        hint = opt(db.hint()),
        where_ = opt(db.r#where()),
        schema = opt(db.schema()),
        table = opt(db.table()),
        column = opt(db.column()),
        datatype = opt(db.data_type()),
        constraint = opt(db.constraint()),
        file = opt(db.file()),
        line = db.line().map(|l| format!("Some({l})")).unwrap_or_else(|| "None".into()),
        routine = opt(db.routine()),
    );
    (
        db.code().to_string(),
        format!("{display}{position_block}\n\n{debug}"),
    )
}

/// The native engine's `Position:` block: up to 5 numbered lines before the error line and the
/// error line itself, with its ANSI bold/red codes (copied literally, byte-index arithmetic
/// included).
fn render_position(script: &str, position: usize) -> String {
    let mut previous: [&str; 5] = [""; 5];
    let mut byte_index = 0usize;
    for (line_idx, line) in script.lines().enumerate() {
        let line_number = line_idx + 1;
        byte_index += line.len() + 1;
        if position <= byte_index {
            let numbered: Vec<String> = previous
                .iter()
                .enumerate()
                .filter_map(|(idx, l)| {
                    line_number
                        .checked_sub(previous.len() - idx)
                        .map(|n| (n, l))
                })
                .map(|(n, l)| {
                    format!(
                        "\x1b[1m{:>3}\x1b[0m{}{}",
                        n,
                        if l.is_empty() { "" } else { " " },
                        l
                    )
                })
                .collect();
            return format!(
                "\n\nPosition:\n{}\n\x1b[1m{line_number:>3}\x1b[1;31m {line}\x1b[0m",
                numbered.join("\n")
            );
        }
        previous = [previous[1], previous[2], previous[3], previous[4], line];
    }
    String::new()
}
