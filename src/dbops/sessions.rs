//! What the target's other sessions and tables look like right now, for safe deploys: the
//! sessions in a long transaction (a migration would queue behind them, and every query behind
//! the migration), the `pg_dump` sessions a deploy must not start under, the sessions holding a
//! lock on given tables (named when a migration's lock timeout ran out), and the tables' sizes
//! with the time of their statistics.
//!
//! Every function reads the catalog over a connection the caller opened with
//! `crate::dbops::prisma::Target::connect` (TLS and `search_path` as for every target
//! connection) and writes nothing. Tables are passed as `regclass` text (`"Task"`,
//! `"public"."Task"`), resolved with `to_regclass`, so a name that does not exist (yet: a table
//! the migration creates) is skipped, never an error.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnection;
use sqlx::Row;

/// How much of a session's query is kept: enough to recognise it on a card.
pub const QUERY_CHARS: usize = 100;

/// Another session on the target database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The backend's process id (`pg_terminate_backend(pid)` ends it).
    pub pid: i32,
    /// `application_name` (empty when unset).
    pub application: String,
    /// `state`: `active`, `idle in transaction`, ...
    pub state: String,
    /// Seconds since its transaction began (0 outside a transaction).
    pub xact_age_s: i64,
    /// The first [`QUERY_CHARS`] characters of its current or last query, on one line, with
    /// every string literal (`'...'`, `$$...$$`) shown as `'…'`: another session's query may
    /// carry a secret (`ALTER ROLE ... PASSWORD '...'`), and this text reaches cards and the
    /// audit trail.
    pub query: String,
}

impl fmt::Display for SessionInfo {
    /// `pid 4242 (psql, idle in transaction, in a transaction for 3m12s): UPDATE "Task" SET ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let app = if self.application.is_empty() {
            "no application_name"
        } else {
            &self.application
        };
        write!(f, "pid {} ({app}, {}", self.pid, self.state)?;
        if self.xact_age_s > 0 {
            write!(
                f,
                ", in a transaction for {}",
                crate::config::format_duration(Duration::from_secs(self.xact_age_s as u64))
            )?;
        }
        write!(f, "): {}", self.query)
    }
}

/// One table's size as the target's catalog has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSize {
    /// The name as asked for.
    pub table: String,
    /// `pg_class.reltuples`: the planner's row estimate; `None` before the table was ever
    /// vacuumed or analyzed (PostgreSQL 14+ says -1 then).
    pub rows: Option<u64>,
    /// `pg_total_relation_size`: table, indexes and TOAST, in bytes.
    pub bytes: u64,
    /// When the estimate was made: the later of `last_analyze` and `last_autoanalyze`
    /// (`None`: never analyzed).
    pub stats_at: Option<DateTime<Utc>>,
}

const SESSION_COLUMNS: &str = "a.pid, coalesce(a.application_name, '') AS application, \
     coalesce(a.state, '') AS state, \
     coalesce(extract(epoch FROM now() - a.xact_start)::bigint, 0) AS xact_age_s, \
     left(regexp_replace(regexp_replace(regexp_replace(coalesce(a.query, ''), \
       '''(?:[^'']|'''')*''', '''…''', 'g'), '\\$\\$.*?\\$\\$', '''…''', 'g'), \
       '\\s+', ' ', 'g'), 100) AS query";

fn session(r: &sqlx::postgres::PgRow) -> Result<SessionInfo, sqlx::Error> {
    Ok(SessionInfo {
        pid: r.try_get("pid")?,
        application: r.try_get("application")?,
        state: r.try_get("state")?,
        xact_age_s: r.try_get("xact_age_s")?,
        query: r.try_get("query")?,
    })
}

/// The other client sessions of this database whose transaction began more than `older_than`
/// ago, oldest first.
pub async fn long_transactions(
    conn: &mut PgConnection,
    older_than: Duration,
) -> Result<Vec<SessionInfo>, sqlx::Error> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM pg_stat_activity a \
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() \
           AND a.backend_type = 'client backend' AND a.xact_start IS NOT NULL \
           AND a.xact_start < now() - make_interval(secs => $1) \
         ORDER BY a.xact_start"
    );
    sqlx::query(&sql)
        .bind(older_than.as_secs_f64())
        .fetch_all(conn)
        .await?
        .iter()
        .map(session)
        .collect()
}

/// The sessions of this database whose `application_name` is `pg_dump` (what `pg_dump` sets
/// unless `PGAPPNAME` says otherwise; dualkey's own backups leave it so).
pub async fn dump_sessions(conn: &mut PgConnection) -> Result<Vec<SessionInfo>, sqlx::Error> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM pg_stat_activity a \
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() \
           AND a.application_name = 'pg_dump' \
         ORDER BY a.backend_start"
    );
    sqlx::query(&sql)
        .fetch_all(conn)
        .await?
        .iter()
        .map(session)
        .collect()
}

/// The sessions the backend `pid` is waiting for right now (`pg_blocking_pids`): the ones
/// holding, or queued ahead for, the lock it asked for. Empty when it waits for nothing.
pub async fn blocking_sessions(
    conn: &mut PgConnection,
    pid: i32,
) -> Result<Vec<SessionInfo>, sqlx::Error> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM pg_stat_activity a \
         WHERE a.pid = ANY (pg_blocking_pids($1)) ORDER BY a.xact_start NULLS LAST, a.pid"
    );
    sqlx::query(&sql)
        .bind(pid)
        .fetch_all(conn)
        .await?
        .iter()
        .map(session)
        .collect()
}

/// The other sessions holding a granted lock on any of `tables` (`regclass` text), longest in a
/// transaction first.
pub async fn lock_holders(
    conn: &mut PgConnection,
    tables: &[String],
) -> Result<Vec<SessionInfo>, sqlx::Error> {
    let sql = format!(
        "SELECT DISTINCT ON (a.pid) {SESSION_COLUMNS}, a.xact_start FROM pg_locks l \
         JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.granted AND l.pid <> pg_backend_pid() AND l.locktype = 'relation' \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND l.relation IN (SELECT to_regclass(t) FROM unnest($1::text[]) AS t) \
         ORDER BY a.pid"
    );
    let mut found: Vec<(Option<DateTime<Utc>>, SessionInfo)> = sqlx::query(&sql)
        .bind(tables)
        .fetch_all(conn)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("xact_start")?, session(r)?)))
        .collect::<Result<_, sqlx::Error>>()?;
    found.sort_by_key(|(start, s)| (start.is_none(), *start, s.pid));
    Ok(found.into_iter().map(|(_, s)| s).collect())
}

/// The size of each of `tables` (`regclass` text) that exists, in the order asked.
pub async fn table_sizes(
    conn: &mut PgConnection,
    tables: &[String],
) -> Result<Vec<TableSize>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT t.name, c.reltuples::float8 AS reltuples, pg_total_relation_size(c.oid) AS bytes, \
                greatest(s.last_analyze, s.last_autoanalyze) AS stats_at \
         FROM unnest($1::text[]) WITH ORDINALITY AS t(name, i) \
         JOIN pg_class c ON c.oid = to_regclass(t.name) \
         LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid \
         ORDER BY t.i",
    )
    .bind(tables)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let reltuples: f64 = r.try_get("reltuples")?;
            let bytes: i64 = r.try_get("bytes")?;
            Ok(TableSize {
                table: r.try_get("name")?,
                rows: (reltuples >= 0.0).then_some(reltuples as u64),
                bytes: bytes.max(0) as u64,
                stats_at: r.try_get("stats_at")?,
            })
        })
        .collect()
}

/// `1.5M`, `12k`, `340`: a row count for a card.
pub fn human_rows(n: u64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{}k", n / 1000),
        n if n >= 1_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// `420 MB`, `8 kB`: a size for a card (powers of 1024, PostgreSQL's `pg_size_pretty` units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else if v >= 10.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_card() {
        assert_eq!(human_rows(1_500_000), "1.5M");
        assert_eq!(human_rows(42_000), "42k");
        assert_eq!(human_rows(1_200), "1.2k");
        assert_eq!(human_rows(100), "100");
        assert_eq!(human_bytes(420 * 1024 * 1024), "420 MB");
        assert_eq!(human_bytes(8192), "8.0 kB");
        assert_eq!(human_bytes(12), "12 bytes");
    }

    #[test]
    fn a_session_names_pid_application_state_and_age() {
        let s = SessionInfo {
            pid: 4242,
            application: "psql".into(),
            state: "idle in transaction".into(),
            xact_age_s: 192,
            query: "UPDATE \"Task\" SET done = true".into(),
        };
        assert_eq!(
            s.to_string(),
            "pid 4242 (psql, idle in transaction, in a transaction for 3m12s): UPDATE \"Task\" SET done = true"
        );
    }
}
