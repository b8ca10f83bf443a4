//! The rehearsal queries (issue 22), one macro for both backends like `sql.rs`, kept out of
//! that file so it does not grow: `sql.rs`'s trait methods call these functions.

/// The columns of `rehearsals`, in [`crate::store::RehearsalRow`] order.
pub(super) const REHEARSAL_COLS: &str = "id, env, request_id, set_digest, pinned_json, state, requested_by, channel_json, runner, created_at, started_at, finished_at, summary, outcome_json, error";

/// Generates `mod rehearsal_sql` for database `$db`: one function per store call.
macro_rules! rehearsal_sql {
    ($db:ty) => {
        pub(super) mod rehearsal_sql {
            use sqlx::Row;

            use crate::store::rehearsals::REHEARSAL_COLS;
            use crate::store::{RehearsalEnd, RehearsalRow, StoreResult};

            type Conn = <$db as sqlx::Database>::Connection;
            type Pool = sqlx::Pool<$db>;

            fn row(r: &<$db as sqlx::Database>::Row) -> StoreResult<RehearsalRow> {
                Ok(RehearsalRow {
                    id: r.try_get("id")?,
                    env: r.try_get("env")?,
                    request_id: r.try_get("request_id")?,
                    set_digest: r.try_get("set_digest")?,
                    pinned_json: r.try_get("pinned_json")?,
                    state: r.try_get("state")?,
                    requested_by: r.try_get("requested_by")?,
                    channel_json: r.try_get("channel_json")?,
                    runner: r.try_get("runner")?,
                    created_at: r.try_get("created_at")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    summary: r.try_get("summary")?,
                    outcome_json: r.try_get("outcome_json")?,
                    error: r.try_get("error")?,
                })
            }

            pub async fn get(pool: &Pool, id: &str) -> StoreResult<Option<RehearsalRow>> {
                let q = format!("SELECT {REHEARSAL_COLS} FROM rehearsals WHERE id = $1");
                let r = sqlx::query(&q).bind(id).fetch_optional(pool).await?;
                r.as_ref().map(row).transpose()
            }

            pub async fn latest(
                pool: &Pool,
                env: &str,
                digest: &str,
            ) -> StoreResult<Option<RehearsalRow>> {
                let q = format!("SELECT {REHEARSAL_COLS} FROM rehearsals WHERE env = $1 AND set_digest = $2 ORDER BY CASE WHEN state = 'superseded' THEN 1 ELSE 0 END, created_at DESC, id DESC LIMIT 1");
                let r = sqlx::query(&q)
                    .bind(env)
                    .bind(digest)
                    .fetch_optional(pool)
                    .await?;
                r.as_ref().map(row).transpose()
            }

            pub async fn in_state(pool: &Pool, state: &str) -> StoreResult<Vec<RehearsalRow>> {
                let q = format!("SELECT {REHEARSAL_COLS} FROM rehearsals WHERE state = $1 ORDER BY created_at, id");
                let rows = sqlx::query(&q).bind(state).fetch_all(pool).await?;
                rows.iter().map(row).collect()
            }

            pub async fn queue(conn: &mut Conn, r: &RehearsalRow) -> StoreResult<Vec<String>> {
                let gone = sqlx::query("UPDATE rehearsals SET state = 'superseded', finished_at = $2 WHERE env = $1 AND state IN ('queued', 'running') RETURNING id")
                    .bind(&r.env)
                    .bind(r.created_at)
                    .fetch_all(&mut *conn)
                    .await?;
                let q = format!("INSERT INTO rehearsals ({REHEARSAL_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)");
                sqlx::query(&q)
                    .bind(&r.id)
                    .bind(&r.env)
                    .bind(&r.request_id)
                    .bind(&r.set_digest)
                    .bind(&r.pinned_json)
                    .bind(&r.state)
                    .bind(&r.requested_by)
                    .bind(&r.channel_json)
                    .bind(&r.runner)
                    .bind(r.created_at)
                    .bind(r.started_at)
                    .bind(r.finished_at)
                    .bind(&r.summary)
                    .bind(&r.outcome_json)
                    .bind(&r.error)
                    .execute(&mut *conn)
                    .await?;
                gone.iter().map(|g| Ok(g.try_get("id")?)).collect()
            }

            pub async fn start(conn: &mut Conn, id: &str, runner: &str, now: i64) -> StoreResult<bool> {
                let res = sqlx::query("UPDATE rehearsals SET state = 'running', runner = $2, started_at = $3 WHERE id = $1 AND state = 'queued'")
                    .bind(id)
                    .bind(runner)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                Ok(res.rows_affected() == 1)
            }

            pub async fn finish(conn: &mut Conn, id: &str, end: &RehearsalEnd, now: i64) -> StoreResult<bool> {
                let res = sqlx::query("UPDATE rehearsals SET state = $2, summary = $3, outcome_json = $4, error = $5, finished_at = $6 WHERE id = $1 AND state = 'running'")
                    .bind(id)
                    .bind(&end.state)
                    .bind(&end.summary)
                    .bind(&end.outcome_json)
                    .bind(&end.error)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                Ok(res.rows_affected() == 1)
            }

            pub async fn passed(conn: &mut Conn, env: &str, digest: &str) -> StoreResult<bool> {
                // The newest verdict on the data decides: a set that passed last month and failed
                // today (duplicates arrived since) is not approvable.
                let r = sqlx::query("SELECT state FROM rehearsals WHERE env = $1 AND set_digest = $2 AND state IN ('passed', 'failed') ORDER BY finished_at DESC, created_at DESC LIMIT 1")
                    .bind(env)
                    .bind(digest)
                    .fetch_optional(&mut *conn)
                    .await?;
                Ok(match r {
                    Some(r) => r.try_get::<String, _>("state")? == "passed",
                    None => false,
                })
            }

            pub async fn interrupt(conn: &mut Conn, env: &str, reason: &str, now: i64) -> StoreResult<Vec<RehearsalRow>> {
                let q = format!("SELECT {REHEARSAL_COLS} FROM rehearsals WHERE env = $1 AND state = 'running' ORDER BY created_at");
                let rows = sqlx::query(&q).bind(env).fetch_all(&mut *conn).await?;
                let rows: Vec<RehearsalRow> = rows.iter().map(row).collect::<StoreResult<_>>()?;
                for r in &rows {
                    sqlx::query("UPDATE rehearsals SET state = 'error', error = $2, finished_at = $3 WHERE id = $1 AND state = 'running'")
                        .bind(&r.id)
                        .bind(reason)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(rows)
            }
        }
    };
}
pub(super) use rehearsal_sql;
