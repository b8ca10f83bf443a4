//! The state store: reachable, and its schema migrations (`_sqlx_migrations`) exactly the ones
//! built into this dualkey. Read only: a store behind is reported, never migrated.

use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::{Connection, Row};

use super::{Line, CALL_TIMEOUT};
use crate::config::{redact_url, Settings};

const WHAT: &str = "state store";

/// What the store's `_sqlx_migrations` holds: (version, checksum, success) per row.
type Applied = Vec<(i64, Vec<u8>, bool)>;

/// Checks `[store] url`.
pub async fn check(settings: &Settings) -> Line {
    let url = settings.store.url.as_str();
    let shown = redact_url(url);
    let read = if url.starts_with("sqlite:") {
        read_sqlite(url).await
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        read_postgres(url).await
    } else {
        return Line::fail(
            WHAT,
            format!("store.url `{shown}` is neither sqlite:// nor postgres://"),
            "set [store] url to sqlite://data/dualkey.db or a postgres:// URL",
        );
    };
    let migrator = if url.starts_with("sqlite:") {
        sqlx::migrate!("./migrations/sqlite")
    } else {
        sqlx::migrate!("./migrations/postgres")
    };
    match read {
        Err(Unreadable::Missing(path)) => Line::warn(
            WHAT,
            format!(
                "{shown}: {path} does not exist yet ({} migrations to apply)",
                embedded(&migrator).len()
            ),
            "none needed: `dualkey serve` creates it at its first start",
        ),
        Err(Unreadable::Other(e)) => Line::fail(
            WHAT,
            format!("{shown} cannot be read: {e}"),
            "check [store] url (DUALKEY_STORE_URL overrides it), that the server runs and the user may log in",
        ),
        Ok(applied) => verdict(&shown, &migrator, &applied),
    }
}

/// The embedded up-migrations: (version, checksum, description).
fn embedded(m: &Migrator) -> Vec<(i64, Vec<u8>, String)> {
    m.iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| (m.version, m.checksum.to_vec(), m.description.to_string()))
        .collect()
}

/// Compares what the store applied with what this dualkey carries.
fn verdict(shown: &str, migrator: &Migrator, applied: &Applied) -> Line {
    let ours = embedded(migrator);
    let unknown: Vec<String> = applied
        .iter()
        .filter(|(v, _, _)| !ours.iter().any(|(o, _, _)| o == v))
        .map(|(v, _, _)| v.to_string())
        .collect();
    let changed: Vec<String> = applied
        .iter()
        .filter(|(v, c, _)| ours.iter().any(|(o, oc, _)| o == v && oc != c))
        .map(|(v, _, _)| v.to_string())
        .collect();
    let failed: Vec<String> = applied
        .iter()
        .filter(|(_, _, ok)| !ok)
        .map(|(v, _, _)| v.to_string())
        .collect();
    let pending: Vec<String> = ours
        .iter()
        .filter(|(v, _, _)| !applied.iter().any(|(a, _, _)| a == v))
        .map(|(v, _, d)| format!("{v} {d}"))
        .collect();
    if !unknown.is_empty() {
        return Line::fail(
            WHAT,
            format!("{shown} has migration(s) {} that this dualkey does not know: it was used by a newer dualkey", unknown.join(", ")),
            "run the dualkey version that migrated it (or newer)",
        );
    }
    if !changed.is_empty() || !failed.is_empty() {
        let mut what = Vec::new();
        if !changed.is_empty() {
            what.push(format!("checksum differs for {}", changed.join(", ")));
        }
        if !failed.is_empty() {
            what.push(format!("failed: {}", failed.join(", ")));
        }
        return Line::fail(
            WHAT,
            format!(
                "{shown}: its schema migrations do not match this dualkey ({})",
                what.join("; ")
            ),
            "restore the store from a backup, or point [store] url at a store of this dualkey",
        );
    }
    if !pending.is_empty() {
        return Line::warn(
            WHAT,
            format!(
                "{shown} reachable; {} of {} schema migrations not applied yet ({})",
                pending.len(),
                ours.len(),
                pending.join(", ")
            ),
            "none needed: `dualkey serve` applies them at start",
        );
    }
    Line::ok(
        WHAT,
        format!(
            "{shown} reachable, schema current ({} migrations)",
            ours.len()
        ),
    )
}

enum Unreadable {
    /// A SQLite file that does not exist yet.
    Missing(String),
    Other(String),
}

/// Reads `_sqlx_migrations` (none when the table does not exist) over `$conn`; `$catalog` is
/// the query fragment naming the table of tables and its name column. A macro: the same
/// statements for SQLite and PostgreSQL connections.
macro_rules! read_applied {
    ($conn:expr, $catalog:expr) => {
        async {
            let err = |e: sqlx::Error| Unreadable::Other(e.to_string());
            let exists: i64 = sqlx::query(&format!(
                "SELECT COUNT(*) FROM {} = '_sqlx_migrations'",
                $catalog
            ))
            .fetch_one(&mut *$conn)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(err)?;
            if exists == 0 {
                return Ok(Vec::new());
            }
            let rows = sqlx::query(
                "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version",
            )
            .fetch_all(&mut *$conn)
            .await
            .map_err(err)?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect::<Result<Applied, sqlx::Error>>()
                .map_err(err)
        }
    };
}

async fn read_sqlite(url: &str) -> Result<Applied, Unreadable> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| Unreadable::Other(e.to_string()))?
        .create_if_missing(false);
    let file = opts.get_filename().to_path_buf();
    if !file.exists() {
        return Err(Unreadable::Missing(file.display().to_string()));
    }
    let mut conn = tokio::time::timeout(CALL_TIMEOUT, SqliteConnection::connect_with(&opts))
        .await
        .map_err(|_| Unreadable::Other("no connection within 5 s".into()))?
        .map_err(|e| Unreadable::Other(e.to_string()))?;
    let rows: Result<Applied, Unreadable> =
        read_applied!(&mut conn, "sqlite_master WHERE type = 'table' AND name").await;
    let _ = conn.close().await;
    rows
}

async fn read_postgres(url: &str) -> Result<Applied, Unreadable> {
    use sqlx::postgres::{PgConnectOptions, PgConnection};
    let tls =
        crate::dbops::backup::PgUrl::parse(url).map_err(|e| Unreadable::Other(e.to_string()))?;
    let opts = tls
        .apply_tls(PgConnectOptions::from_str(url).map_err(|e| Unreadable::Other(e.to_string()))?);
    let mut conn = tokio::time::timeout(CALL_TIMEOUT, PgConnection::connect_with(&opts))
        .await
        .map_err(|_| Unreadable::Other("no connection within 5 s".into()))?
        .map_err(|e| Unreadable::Other(e.to_string()))?;
    let rows: Result<Applied, Unreadable> = read_applied!(
        &mut conn,
        "pg_tables WHERE schemaname = current_schema() AND tablename"
    )
    .await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.close()).await;
    rows
}
