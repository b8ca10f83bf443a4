//! Write counters of a target database, recorded with every backup so that a plan which restores
//! that backup can say about how many rows, and in which tables, the restore takes away.
//!
//! The counters are PostgreSQL's cumulative statistics: per table `pg_stat_user_tables`
//! (`n_tup_ins`, `n_tup_upd`, `n_tup_del`, `n_live_tup`), and what tells a reset of them apart:
//! `pg_stat_database.stats_reset` (set by `pg_stat_reset()`) and `pg_postmaster_start_time()`
//! (a restart, and crash recovery, start every counter again from zero).
//!
//! The estimate is "about": the counters are flushed by each backend at most once a second, they
//! count statements that later rolled back, and a restore recreates its tables (their writes then
//! count from the restore on). When a reset makes the difference meaningless the estimate says
//! "unknown" and why, never a number.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::dbops::prisma::{Target, MIGRATIONS_TABLE};

/// The target's write counters at one moment (stored as JSON in the backup catalog).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteStats {
    /// `pg_stat_database.stats_reset` of the database, microseconds since the epoch (`None`:
    /// never reset).
    pub stats_reset_us: Option<i64>,
    /// `pg_postmaster_start_time()`, microseconds since the epoch.
    pub postmaster_start_us: i64,
    /// Per table, by `schema.table`.
    pub tables: BTreeMap<String, TableCounters>,
}

/// One table's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCounters {
    /// The table's OID: a table dropped and created again (a restore does that) has a new one
    /// and counters that start from zero.
    pub relid: i64,
    /// `n_tup_ins`.
    pub ins: i64,
    /// `n_tup_upd`.
    pub upd: i64,
    /// `n_tup_del`.
    pub del: i64,
    /// `n_live_tup`.
    pub live: i64,
}

/// Reading the counters failed (the backup goes on without them).
#[derive(Debug, thiserror::Error)]
#[error("cannot read the write counters: {0}")]
pub struct StatsError(String);

/// How long reading the counters may take: they are best effort and must never hold up a backup.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Reads the target's write counters (giving up after 15 s). `database_url` is a secret: it
/// never appears in the error.
#[tracing::instrument(skip_all)]
pub async fn read(database_url: &str) -> Result<WriteStats, StatsError> {
    tokio::time::timeout(READ_TIMEOUT, read_now(database_url))
        .await
        .unwrap_or_else(|_| Err(StatsError("no answer within 15 s".into())))
}

async fn read_now(database_url: &str) -> Result<WriteStats, StatsError> {
    let mut t = Target::connect(database_url)
        .await
        .map_err(|e| StatsError(e.to_string()))?;
    let db = sqlx::query(
        "SELECT (extract(epoch FROM d.stats_reset) * 1000000)::bigint AS stats_reset_us, \
                (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint AS postmaster_start_us \
         FROM pg_stat_database d WHERE d.datname = current_database()",
    )
    .fetch_one(&mut t.conn)
    .await
    .map_err(|e| StatsError(e.to_string()))?;
    let rows = sqlx::query(
        "SELECT schemaname::text AS schema, relname::text AS name, relid::bigint AS relid, \
                n_tup_ins, n_tup_upd, n_tup_del, n_live_tup \
         FROM pg_stat_user_tables",
    )
    .fetch_all(&mut t.conn)
    .await
    .map_err(|e| StatsError(e.to_string()))?;
    let mut tables = BTreeMap::new();
    for r in rows {
        let get = |c: &str| {
            r.try_get::<i64, _>(c)
                .map_err(|e| StatsError(e.to_string()))
        };
        let schema: String = r.try_get("schema").map_err(|e| StatsError(e.to_string()))?;
        let name: String = r.try_get("name").map_err(|e| StatsError(e.to_string()))?;
        tables.insert(
            format!("{schema}.{name}"),
            TableCounters {
                relid: get("relid")?,
                ins: get("n_tup_ins")?,
                upd: get("n_tup_upd")?,
                del: get("n_tup_del")?,
                live: get("n_live_tup")?,
            },
        );
    }
    Ok(WriteStats {
        stats_reset_us: db
            .try_get("stats_reset_us")
            .map_err(|e| StatsError(e.to_string()))?,
        postmaster_start_us: db
            .try_get("postmaster_start_us")
            .map_err(|e| StatsError(e.to_string()))?,
        tables,
    })
}

/// Rows written to one table since the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableWrites {
    /// `schema.table`.
    pub table: String,
    /// Rows inserted.
    pub inserted: i64,
    /// Rows updated.
    pub updated: i64,
    /// Rows deleted.
    pub deleted: i64,
}

impl TableWrites {
    /// Inserted + updated + deleted.
    pub fn total(&self) -> i64 {
        self.inserted + self.updated + self.deleted
    }
}

/// About how many rows were written since a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteEstimate {
    /// The counters' difference: tables with writes, most written first.
    Rows(Vec<TableWrites>),
    /// No honest number; the reason.
    Unknown(String),
}

impl WriteEstimate {
    /// Rows written in all tables.
    pub fn total(&self) -> Option<i64> {
        match self {
            WriteEstimate::Rows(t) => Some(t.iter().map(TableWrites::total).sum()),
            WriteEstimate::Unknown(_) => None,
        }
    }

    /// One line for a card: `about 120 rows (public.Task: 100 = 80 inserted, 10 updated, 10
    /// deleted; …)`, naming the `top` most written tables, or `unknown (why)`.
    pub fn describe(&self, top: usize) -> String {
        let tables = match self {
            WriteEstimate::Unknown(why) => return format!("unknown ({why})"),
            WriteEstimate::Rows(t) if t.is_empty() => return "about 0 rows".into(),
            WriteEstimate::Rows(t) => t,
        };
        let shown: Vec<String> = tables
            .iter()
            .take(top)
            .map(|t| {
                format!(
                    "{}: {} = {} inserted, {} updated, {} deleted",
                    t.table,
                    t.total(),
                    t.inserted,
                    t.updated,
                    t.deleted
                )
            })
            .collect();
        let more = match tables.len().saturating_sub(top) {
            0 => String::new(),
            n => format!("; and {n} more table(s)"),
        };
        format!(
            "about {} rows ({}{more})",
            self.total().unwrap_or(0),
            shown.join("; ")
        )
    }
}

/// The writes between `then` (recorded with a backup) and `now`. Unknown when the counters were
/// reset in between: the database's `stats_reset` or the server's start time differs, or a
/// counter of a table that still exists (same OID) went backwards. Prisma's own bookkeeping table
/// is left out (the card lists the migrations separately).
pub fn estimate(then: &WriteStats, now: &WriteStats) -> WriteEstimate {
    if then.postmaster_start_us != now.postmaster_start_us {
        return WriteEstimate::Unknown(
            "the database server restarted since the backup, which reset its write counters".into(),
        );
    }
    if then.stats_reset_us != now.stats_reset_us {
        return WriteEstimate::Unknown(
            "the database's statistics were reset since the backup, by pg_stat_reset()".into(),
        );
    }
    let mut out = Vec::new();
    for (table, c) in &now.tables {
        if table.rsplit('.').next() == Some(MIGRATIONS_TABLE) {
            continue;
        }
        // A table created (or dropped and created again) since the backup: all its writes are new.
        let before = then.tables.get(table).filter(|b| b.relid == c.relid);
        let (ins, upd, del) = before.map_or((0, 0, 0), |b| (b.ins, b.upd, b.del));
        if c.ins < ins || c.upd < upd || c.del < del {
            return WriteEstimate::Unknown(format!(
                "the write counters of {table} went backwards since the backup (reset)"
            ));
        }
        let w = TableWrites {
            table: table.clone(),
            inserted: c.ins - ins,
            updated: c.upd - upd,
            deleted: c.del - del,
        };
        if w.total() > 0 {
            out.push(w);
        }
    }
    out.sort_by(|a, b| b.total().cmp(&a.total()).then(a.table.cmp(&b.table)));
    WriteEstimate::Rows(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(reset: Option<i64>, start: i64, t: &[(&str, i64, i64, i64, i64)]) -> WriteStats {
        WriteStats {
            stats_reset_us: reset,
            postmaster_start_us: start,
            tables: t
                .iter()
                .map(|&(n, relid, ins, upd, del)| {
                    (
                        n.to_string(),
                        TableCounters {
                            relid,
                            ins,
                            upd,
                            del,
                            live: 0,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn the_difference_counts_new_and_recreated_tables_and_skips_prisma_bookkeeping() {
        let then = stats(
            None,
            1,
            &[("public.Task", 10, 5, 1, 0), ("public.Old", 11, 100, 0, 0)],
        );
        let now = stats(
            None,
            1,
            &[
                ("public.Task", 10, 8, 3, 1),
                ("public.Old", 12, 4, 0, 0),
                ("public.New", 13, 7, 0, 0),
                ("public._prisma_migrations", 14, 9, 9, 0),
            ],
        );
        let e = estimate(&then, &now);
        assert_eq!(e.total(), Some(3 + 2 + 1 + 4 + 7));
        let d = e.describe(2);
        assert!(
            d.starts_with("about 17 rows (public.New: 7 = 7 inserted"),
            "{d}"
        );
        assert!(d.contains("public.Task: 6 = 3 inserted, 2 updated, 1 deleted"));
        assert!(d.ends_with("; and 1 more table(s))"), "{d}");
    }

    #[test]
    fn a_reset_or_restart_or_a_counter_going_backwards_is_unknown() {
        let then = stats(Some(5), 1, &[("public.Task", 10, 5, 1, 0)]);
        for (now, why) in [
            (stats(Some(6), 1, &[("public.Task", 10, 9, 1, 0)]), "reset"),
            (
                stats(Some(5), 2, &[("public.Task", 10, 9, 1, 0)]),
                "restarted",
            ),
            (
                stats(Some(5), 1, &[("public.Task", 10, 4, 1, 0)]),
                "backwards",
            ),
        ] {
            let d = estimate(&then, &now).describe(3);
            assert!(d.starts_with("unknown (") && d.contains(why), "{d}");
        }
    }
}
