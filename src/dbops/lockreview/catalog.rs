//! The target's side of the lock review: the server's version and the types of the columns a
//! script changes, read from the catalog (nothing is written), so that a binary-coercible type
//! change (`varchar(10)` to `varchar(20)` or `text`) is reported as catalog-only rather than as a
//! rewrite. Tables are resolved with `to_regclass` in the connection's `search_path`; a table
//! that does not exist (yet) is skipped, never an error.

use sqlx::postgres::PgConnection;
use sqlx::Row;

use super::{review_script, review_script_with, ColumnType, KnownColumns, ScriptReview, TableRef};

/// Reviews `sql` for the server behind `conn`: its `server_version_num`, and the current types
/// of the columns of every table the script names.
pub async fn review_on_target(
    conn: &mut PgConnection,
    sql: &str,
) -> Result<ScriptReview, sqlx::Error> {
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut *conn)
        .await?;
    let version = version.max(0) as u32;
    let first = review_script(sql, version);
    if first.parse_error.is_some() {
        return Ok(first);
    }
    let mut tables: Vec<TableRef> = Vec::new();
    for t in first.statements.iter().flat_map(|s| s.tables.iter()) {
        if !tables.contains(t) {
            tables.push(t.clone());
        }
    }
    if tables.is_empty() {
        return Ok(first);
    }
    let known = known_columns(conn, &tables).await?;
    Ok(review_script_with(sql, version, &known))
}

/// The current type of every column of `tables` (keyed by the table's and the column's names as
/// stored), for [`review_script_with`].
pub async fn known_columns(
    conn: &mut PgConnection,
    tables: &[TableRef],
) -> Result<KnownColumns, sqlx::Error> {
    let names: Vec<String> = tables.iter().map(TableRef::regclass).collect();
    let rows = sqlx::query(
        "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod)
           FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          WHERE a.attrelid IN (SELECT to_regclass(n) FROM unnest($1::text[]) AS n)
            AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .bind(&names)
    .fetch_all(&mut *conn)
    .await?;
    let mut known = KnownColumns::new();
    for row in rows {
        let (table, column, ty): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        if let Some(ty) = ColumnType::parse(&ty) {
            known.insert((table, column), ty);
        }
    }
    Ok(known)
}
