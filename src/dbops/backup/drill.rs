//! Restore drills: a backup restored into a scratch database next to the target, checked and
//! dropped again, so the team learns that its backups restore before it needs one.
//!
//! The scratch database is `<target database>_dualkey_drill` on the target's server. It is
//! created empty (dropped first when a crashed drill left one), the backup is restored into it
//! with the same protocol as a real restore ([`super::restore_with`]: real `pg_restore` and
//! `psql` started with argument vectors, the URL's TLS settings, the catalog's SHA-256 checked
//! while the bytes stream), `_prisma_migrations` is read there and the largest tables are
//! counted, and the database is dropped, also when a step failed. Nothing is ever run in the
//! target database itself: the only statements sent over a connection to it are `CREATE
//! DATABASE` and `DROP DATABASE` of the scratch name, which is refused when PostgreSQL's
//! 63-byte limit would cut it, or when it is the database of any configured environment on the
//! same server.
//!
//! Every scratch database dualkey creates is marked (`COMMENT ON DATABASE ... IS 'dualkey
//! scratch database (...)'`, [`SCRATCH_MARK`]); one found at start-up or before a run is dropped
//! only with that mark: a database that merely has the name is left alone, with a clear error.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};

use super::url::PgUrl;
use super::RestoreOptions;
use crate::dbops::prisma::quote_ident;

/// The suffix of the scratch database's name.
pub const DRILL_SUFFIX: &str = "_dualkey_drill";

/// The suffix of a rehearsal's scratch database (the pending migrations applied to a restored
/// copy before a deploy is approved).
pub const REHEARSAL_SUFFIX: &str = "_dualkey_rehearsal";

/// What a scratch database is for: its name's suffix and the word its messages use. Every kind
/// follows the same safety rules (the name is never cut by PostgreSQL, never a configured
/// environment's database, and only `CREATE`/`DROP DATABASE` of it go over the target's
/// connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScratchKind {
    /// A restore drill: `<db>_dualkey_drill`.
    Drill,
    /// A deploy rehearsal: `<db>_dualkey_rehearsal`.
    Rehearsal,
}

impl ScratchKind {
    /// The suffix appended to the target database's name.
    pub fn suffix(self) -> &'static str {
        match self {
            ScratchKind::Drill => DRILL_SUFFIX,
            ScratchKind::Rehearsal => REHEARSAL_SUFFIX,
        }
    }

    /// `drill`, `rehearsal`: the word in messages.
    pub fn label(self) -> &'static str {
        match self {
            ScratchKind::Drill => "drill",
            ScratchKind::Rehearsal => "rehearsal",
        }
    }

    fn action(self, what: Action) -> &'static str {
        use Action::*;
        match (self, what) {
            (ScratchKind::Drill, Look) => "looking for a stale drill database",
            (ScratchKind::Drill, Drop) => "dropping the drill database",
            (ScratchKind::Drill, Create) => "creating the drill database",
            (ScratchKind::Drill, Count) => "counting rows in the drill database",
            (ScratchKind::Rehearsal, Look) => "looking for a leftover rehearsal database",
            (ScratchKind::Rehearsal, Drop) => "dropping the rehearsal database",
            (ScratchKind::Rehearsal, Create) => "creating the rehearsal database",
            (ScratchKind::Rehearsal, Count) => "counting rows in the rehearsal database",
        }
    }

    /// The scratch database name for a target database, refused when PostgreSQL would
    /// truncate it.
    pub fn name(self, target_db: &str) -> Result<String, DrillError> {
        let name = format!("{target_db}{}", self.suffix());
        if name.len() > 63 {
            let label = self.label();
            return Err(DrillError::Refused(format!(
                "the {label} database name {name} is longer than PostgreSQL's 63 bytes; PostgreSQL would cut it, so no {label} runs for {target_db}"
            )));
        }
        Ok(name)
    }

    /// Refuses a scratch name that is the database of any URL in `protected` (the configured
    /// environments' databases) on the same server: dropping it would drop that environment.
    pub fn check(self, url: &PgUrl, scratch: &str, protected: &[String]) -> Result<(), DrillError> {
        for p in protected {
            let Ok(other) = PgUrl::parse(p) else {
                continue;
            };
            if other.database() == scratch && server(&other) == server(url) {
                let label = self.label();
                return Err(DrillError::Refused(format!(
                    "the {label} database {scratch} is the database of a configured environment on the same server; no {label} runs and nothing is dropped"
                )));
            }
        }
        Ok(())
    }

    /// The checked scratch name of `database_url`'s target.
    fn checked(self, database_url: &str, protected: &[String]) -> Result<String, DrillError> {
        let url = PgUrl::parse(database_url)?;
        let scratch = self.name(url.database())?;
        self.check(&url, &scratch, protected)?;
        Ok(scratch)
    }

    /// Drops this kind's scratch database of `database_url`'s target when one is left (a run
    /// that crashed); true when one was dropped.
    pub async fn drop_stale(
        self,
        database_url: &str,
        protected: &[String],
    ) -> Result<bool, DrillError> {
        let scratch = self.checked(database_url, protected)?;
        let (_, mut conn) = admin(database_url).await?;
        let exists = self.left_by_dualkey(&mut conn, &scratch).await?;
        if exists {
            drop_db(self, &mut conn, &scratch).await?;
        }
        let _ = conn.close().await;
        Ok(exists)
    }

    /// Whether a database named `scratch` exists; refused when it does without the mark
    /// ([`SCRATCH_MARK`]) dualkey puts on every scratch database it creates: a database that
    /// merely has the name is someone else's, and is never dropped.
    async fn left_by_dualkey(
        self,
        conn: &mut PgConnection,
        scratch: &str,
    ) -> Result<bool, DrillError> {
        let found: Option<Option<String>> = sqlx::query_scalar(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
        )
        .bind(scratch)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|error| DrillError::Db {
            action: self.action(Action::Look),
            error,
        })?;
        match found {
            None => Ok(false),
            Some(Some(c)) if c.starts_with(SCRATCH_MARK) => Ok(true),
            Some(_) => Err(DrillError::Refused(format!(
                "a database named {scratch} exists that dualkey did not create (it lacks dualkey's scratch mark); it is left alone. Drop or rename it yourself if it is not needed."
            ))),
        }
    }

    /// Creates this kind's scratch database next to `database_url`'s target, empty (dropped
    /// first when a crashed run left one). Drop it with [`Scratch::drop`] however the work ends.
    pub async fn create(
        self,
        database_url: &str,
        protected: &[String],
    ) -> Result<Scratch, DrillError> {
        let scratch = self.checked(database_url, protected)?;
        let (_, mut conn) = admin(database_url).await?;
        if self.left_by_dualkey(&mut conn, &scratch).await? {
            drop_db(self, &mut conn, &scratch).await?;
        }
        let name = quote_ident(&scratch);
        for sql in [
            format!("CREATE DATABASE {name}"),
            format!(
                "COMMENT ON DATABASE {name} IS '{SCRATCH_MARK} ({}); dropped by dualkey'",
                self.label()
            ),
        ] {
            sqlx::query(&sql)
                .execute(&mut conn)
                .await
                .map_err(|error| DrillError::Db {
                    action: self.action(Action::Create),
                    error,
                })?;
        }
        Ok(Scratch {
            kind: self,
            url: url_for_database(database_url, &scratch),
            name: scratch,
            admin: conn,
        })
    }
}

/// The comment dualkey puts on every scratch database it creates; an existing database with
/// the scratch name is dropped only when it carries it.
pub const SCRATCH_MARK: &str = "dualkey scratch database";

#[derive(Clone, Copy)]
enum Action {
    Look,
    Drop,
    Create,
    Count,
}

/// A scratch database that exists, with the admin connection (to the target's server) that
/// created it and will drop it.
#[derive(Debug)]
pub struct Scratch {
    kind: ScratchKind,
    name: String,
    url: String,
    admin: PgConnection,
}

impl Scratch {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The target's URL pointing at it instead ([`url_for_database`]).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Restores the backup at `path` (catalog SHA-256 `sha256`) into it with the protocol of a
    /// real restore; the time it took, in ms.
    pub async fn restore(
        &self,
        path: &Path,
        sha256: &str,
        pg_bin_dir: Option<&Path>,
    ) -> Result<i64, DrillError> {
        let start = Instant::now();
        let opts = RestoreOptions {
            pg_bin_dir,
            replace_schema: true,
            expected_sha256: Some(sha256),
            after_open: None,
        };
        super::restore_with(&self.url, path, &opts).await?;
        Ok(start.elapsed().as_millis() as i64)
    }

    /// The `top` largest tables in it (by total size) with their exact row counts.
    pub async fn largest_tables(&self, top: usize) -> Result<Vec<(String, i64)>, DrillError> {
        let (_, mut conn) = admin(&self.url).await?;
        let r = largest_tables(self.kind, &mut conn, top).await;
        let _ = conn.close().await;
        r
    }

    /// Drops it (`WITH (FORCE)`, so sessions still in it do not keep it).
    pub async fn drop(mut self) -> Result<(), DrillError> {
        let r = drop_db(self.kind, &mut self.admin, &self.name).await;
        let _ = self.admin.close().await;
        r
    }
}

/// What a drill found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillOutcome {
    /// The scratch database used (and dropped).
    pub scratch: String,
    /// How long the restore took.
    pub restore_ms: i64,
    /// Migrations applied in the restored `_prisma_migrations` (finished, not rolled back), by
    /// `started_at`.
    pub migrations: Vec<String>,
    /// Whether they are the catalog's record of the backup (same names).
    pub migrations_match: bool,
    /// The largest tables (by total size) with their exact row counts: `(schema.table, rows)`.
    pub largest_tables: Vec<(String, i64)>,
}

/// Why a drill failed.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The scratch name would be the target itself, or is too long for PostgreSQL.
    #[error("{0}")]
    Refused(String),
    /// A URL could not be used.
    #[error(transparent)]
    Url(#[from] super::UrlError),
    /// Creating, reading or dropping the scratch database failed.
    #[error("{action}: {error}")]
    Db {
        /// What was being done.
        action: &'static str,
        /// The driver's error.
        error: sqlx::Error,
    },
    /// The restore failed (nothing was committed in the scratch database).
    #[error("restore into the scratch database failed: {0}")]
    Restore(#[from] super::RestoreError),
    /// The restored history is not the catalog's.
    #[error("the restored _prisma_migrations holds [{found}], the catalog recorded [{expected}] for this backup")]
    Mismatch {
        /// What the scratch database holds.
        found: String,
        /// What the catalog says.
        expected: String,
    },
}

/// The drill's scratch database name for a target database, refused when PostgreSQL would
/// truncate it ([`ScratchKind::name`]).
pub fn scratch_name(target_db: &str) -> Result<String, DrillError> {
    ScratchKind::Drill.name(target_db)
}

/// Local host spellings (and Unix sockets) are one server.
fn server(url: &PgUrl) -> (String, u16) {
    let host = match url.host() {
        None | Some("localhost") | Some("127.0.0.1") | Some("::1") => "local".to_string(),
        Some(h) if h.starts_with('/') => "local".to_string(),
        Some(h) => h.to_ascii_lowercase(),
    };
    (host, url.port().unwrap_or(5432))
}

/// Refuses a drill scratch name that is the database of any URL in `protected` (the configured
/// environments' databases) on the same server: a drill would drop it ([`ScratchKind::check`]).
#[cfg(test)]
fn check_scratch(url: &PgUrl, scratch: &str, protected: &[String]) -> Result<(), DrillError> {
    ScratchKind::Drill.check(url, scratch, protected)
}

/// `database_url` pointing at `database` instead (a `dbname` query parameter, which both
/// dualkey's driver and the PostgreSQL tools take over the URL's path).
pub fn url_for_database(database_url: &str, database: &str) -> String {
    // A fragment means nothing to libpq; it is dropped.
    let base = database_url.split('#').next().unwrap_or(database_url);
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}dbname={}", super::url::percent_encode(database))
}

async fn admin(database_url: &str) -> Result<(PgUrl, PgConnection), DrillError> {
    let url = PgUrl::parse(database_url)?;
    let opts = PgConnectOptions::from_str(database_url).map_err(|error| DrillError::Db {
        action: "reading the database URL",
        error,
    })?;
    let opts = url.apply_tls(opts);
    let conn = tokio::time::timeout(Duration::from_secs(15), PgConnection::connect_with(&opts))
        .await
        .map_err(|_| DrillError::Db {
            action: "connecting to the target's server",
            error: sqlx::Error::PoolTimedOut,
        })?
        .map_err(|error| DrillError::Db {
            action: "connecting to the target's server",
            error,
        })?;
    Ok((url, conn))
}

/// Drops the drill scratch database of `database_url`'s target when one is left (a drill that
/// crashed); true when one was dropped.
pub async fn drop_stale(database_url: &str, protected: &[String]) -> Result<bool, DrillError> {
    ScratchKind::Drill.drop_stale(database_url, protected).await
}

async fn drop_db(
    kind: ScratchKind,
    conn: &mut PgConnection,
    scratch: &str,
) -> Result<(), DrillError> {
    let sql = format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(scratch)
    );
    sqlx::query(&sql)
        .execute(&mut *conn)
        .await
        .map_err(|error| DrillError::Db {
            action: kind.action(Action::Drop),
            error,
        })?;
    Ok(())
}

/// Restores the backup at `path` (catalog SHA-256 `sha256`) into the scratch database of
/// `database_url`'s target, checks its `_prisma_migrations` against `expected_migrations` and
/// counts the rows of the `top` largest tables; the scratch database is dropped however it
/// ends. The target database is never written to. Refused when the scratch name is the database
/// of a URL in `protected` (the configured environments) on the same server.
pub async fn drill(
    database_url: &str,
    path: &Path,
    sha256: &str,
    expected_migrations: &[String],
    pg_bin_dir: Option<&Path>,
    top: usize,
    protected: &[String],
) -> Result<DrillOutcome, DrillError> {
    let scratch = ScratchKind::Drill.create(database_url, protected).await?;
    let result =
        restore_and_check(&scratch, path, sha256, expected_migrations, pg_bin_dir, top).await;
    let dropped = scratch.drop().await;
    let outcome = result?;
    dropped?;
    Ok(outcome)
}

async fn restore_and_check(
    scratch: &Scratch,
    path: &Path,
    sha256: &str,
    expected_migrations: &[String],
    pg_bin_dir: Option<&Path>,
    top: usize,
) -> Result<DrillOutcome, DrillError> {
    let restore_ms = scratch.restore(path, sha256, pg_bin_dir).await?;
    let (url, mut conn) = admin(scratch.url()).await?;
    let schema = url.schema().unwrap_or("public").to_string();
    let db = |action: &'static str| move |error| DrillError::Db { action, error };
    let has_table: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = '_prisma_migrations' AND c.relkind = 'r' AND n.nspname = $1)",
    )
    .bind(&schema)
    .fetch_one(&mut conn)
    .await
    .map_err(db("reading the restored schema"))?;
    let migrations: Vec<String> = if has_table {
        sqlx::query_scalar(&format!("SELECT migration_name FROM {}._prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY started_at, migration_name", quote_ident(&schema)))
            .fetch_all(&mut conn)
            .await
            .map_err(db("reading the restored _prisma_migrations"))?
    } else {
        Vec::new()
    };
    let largest_tables = largest_tables(ScratchKind::Drill, &mut conn, top).await;
    let _ = conn.close().await;
    let largest_tables = largest_tables?;
    let mut a = migrations.clone();
    let mut b = expected_migrations.to_vec();
    a.sort();
    b.sort();
    if a != b {
        return Err(DrillError::Mismatch {
            found: migrations.join(", "),
            expected: expected_migrations.join(", "),
        });
    }
    Ok(DrillOutcome {
        scratch: scratch.name().to_string(),
        restore_ms,
        migrations,
        migrations_match: true,
        largest_tables,
    })
}

/// The `top` largest tables on `conn` (by total size), with exact row counts.
async fn largest_tables(
    kind: ScratchKind,
    conn: &mut PgConnection,
    top: usize,
) -> Result<Vec<(String, i64)>, DrillError> {
    let db = |action: &'static str| move |error| DrillError::Db { action, error };
    let rows = sqlx::query(
        "SELECT n.nspname AS schema, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
         ORDER BY pg_total_relation_size(c.oid) DESC, c.relname LIMIT $1",
    )
    .bind(top as i64)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("listing the restored tables"))?;
    let mut largest = Vec::new();
    for r in rows {
        let (schema, name): (String, String) = (r.get("schema"), r.get("name"));
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {}.{}",
            quote_ident(&schema),
            quote_ident(&name)
        ))
        .fetch_one(&mut *conn)
        .await
        .map_err(db(kind.action(Action::Count)))?;
        largest.push((format!("{schema}.{name}"), n));
    }
    Ok(largest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_are_suffixed_and_refused_when_too_long() {
        assert_eq!(scratch_name("taskflow").unwrap(), "taskflow_dualkey_drill");
        assert!(scratch_name(&"x".repeat(50)).is_err());
    }

    #[test]
    fn rehearsal_scratch_names_follow_the_same_rules() {
        let k = ScratchKind::Rehearsal;
        assert_eq!(k.name("taskflow").unwrap(), "taskflow_dualkey_rehearsal");
        let err = k.name(&"x".repeat(46)).unwrap_err().to_string();
        assert!(err.contains("rehearsal database name"), "{err}");
        assert!(k.name(&"x".repeat(45)).is_ok());
        let url = PgUrl::parse("postgres://u@localhost:5432/app").unwrap();
        let other = vec!["postgres://v@127.0.0.1/app_dualkey_rehearsal".to_string()];
        let err = k.check(&url, "app_dualkey_rehearsal", &other).unwrap_err();
        assert!(err.to_string().contains("no rehearsal runs"), "{err}");
    }

    #[test]
    fn a_scratch_name_that_is_a_configured_database_on_the_same_server_is_refused() {
        let url = PgUrl::parse("postgres://u@localhost:5432/app").unwrap();
        let other = vec!["postgres://v@127.0.0.1/app_dualkey_drill".to_string()];
        assert!(check_scratch(&url, "app_dualkey_drill", &other).is_err());
        let elsewhere = vec!["postgres://v@db2:5432/app_dualkey_drill".to_string()];
        assert!(check_scratch(&url, "app_dualkey_drill", &elsewhere).is_ok());
        let port = vec!["postgres://v@localhost:5433/app_dualkey_drill".to_string()];
        assert!(check_scratch(&url, "app_dualkey_drill", &port).is_ok());
    }

    #[test]
    fn the_scratch_url_overrides_the_database_with_a_query_parameter() {
        assert_eq!(
            url_for_database("postgres://u:p@h:5432/app", "app_dualkey_drill"),
            "postgres://u:p@h:5432/app?dbname=app_dualkey_drill"
        );
        assert_eq!(
            url_for_database("postgres://h/app?sslmode=require", "a b"),
            "postgres://h/app?sslmode=require&dbname=a%20b"
        );
        let u = PgUrl::parse(&url_for_database("postgres://h/app?schema=s", "app_x")).unwrap();
        assert_eq!(u.database(), "app_x");
        assert_eq!(u.schema(), Some("s"));
    }
}
