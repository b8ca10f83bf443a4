//! The lock review's rules checked against a real PostgreSQL: each case runs its setup, then
//! its statement inside a transaction, and compares what PostgreSQL did with what the review says.
//!
//! - the lock: the strongest mode in `pg_locks` this backend holds on each table the review names
//!   equals the review's lock;
//! - the effect: the first table's `pg_class.relfilenode` changes exactly when the review says
//!   rewrite, and its scan count (sequential + index, `pg_stat_xact_all_tables`) grows exactly
//!   when the review says scan or rewrite;
//! - what it blocks: from a second connection (with a short `lock_timeout`), a read
//!   (`ACCESS SHARE`, what `SELECT` takes) and a write (`ROW EXCLUSIVE`, what `INSERT`/`UPDATE`/
//!   `DELETE` take) of the first table wait exactly as the review's "blocks" says (not observed
//!   for an index: `LOCK TABLE` takes tables only).
//!
//! The review is given the setup (its tables as `CREATE TABLE IF NOT EXISTS`, so that they count
//! as existing tables) and the statement as one script, so column types and checks the setup
//! created are known to it, as they would be in a migration that did both.

use dualkey::dbops::lockreview::{
    review_on_target, review_script, Blocks, Effect, LockLevel, StatementReview,
};
use sqlx::{Connection, PgConnection, Row};

use crate::support::TestDb;

/// What PostgreSQL did with one table while the statement's transaction was open.
#[derive(Debug)]
struct Seen {
    lock: Option<LockLevel>,
    rewritten: bool,
    scanned: bool,
}

fn level(mode: &str) -> Option<LockLevel> {
    Some(match mode {
        "AccessShareLock" => LockLevel::AccessShare,
        "RowShareLock" => LockLevel::RowShare,
        "RowExclusiveLock" => LockLevel::RowExclusive,
        "ShareUpdateExclusiveLock" => LockLevel::ShareUpdateExclusive,
        "ShareLock" => LockLevel::Share,
        "ShareRowExclusiveLock" => LockLevel::ShareRowExclusive,
        "ExclusiveLock" => LockLevel::Exclusive,
        "AccessExclusiveLock" => LockLevel::AccessExclusive,
        _ => return None,
    })
}

/// (relfilenode, sequential scans in this transaction) of the relation `oid`.
async fn file_and_scans(conn: &mut PgConnection, oid: u32) -> (Option<u32>, i64) {
    let row = sqlx::query(
        "SELECT (SELECT relfilenode::int8 FROM pg_class WHERE oid = $1::oid),
                COALESCE((SELECT seq_scan + COALESCE(idx_scan, 0) FROM pg_stat_xact_all_tables
                          WHERE relid = $1::oid), 0)",
    )
    .bind(oid as i64)
    .fetch_one(conn)
    .await
    .unwrap();
    let file: Option<i64> = row.get(0);
    (file.map(|f| f as u32), row.get(1))
}

/// Whether a second session's `LOCK TABLE ... IN mode` on `oid` has to wait.
async fn waits(url: &str, oid: u32, mode: &str) -> bool {
    let mut other = PgConnection::connect(url).await.unwrap();
    let sql = format!(
        "SET lock_timeout = '200ms'; BEGIN; DO $$ BEGIN EXECUTE format('LOCK TABLE %s IN {mode} MODE', {oid}::oid::regclass); END $$; ROLLBACK;"
    );
    match sqlx::raw_sql(&sql).execute(&mut other).await {
        Ok(_) => false,
        Err(e) => {
            let code = e
                .as_database_error()
                .and_then(|d| d.code().map(|c| c.to_string()));
            assert_eq!(code.as_deref(), Some("55P03"), "unexpected error: {e}");
            true
        }
    }
}

/// Runs `setup` (committed), then `stmt` in a transaction; returns the review of the statement
/// and what PostgreSQL did to each table the review names, then rolls back.
async fn observe(setup: &str, stmt: &str) -> (StatementReview, Vec<Seen>, Option<Blocks>) {
    let db = TestDb::create("lockreview").await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(setup)
        .execute(&mut conn)
        .await
        .expect("setup");
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    // The setup's tables stand for existing ones (a table the script creates is "new-table").
    let existing = setup.replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ");
    let review = review_script(&format!("{existing};\n{stmt}"), version as u32);
    assert_eq!(review.parse_error, None);
    let s = review.statements.last().unwrap().clone();
    assert!(!s.tables.is_empty(), "the review names no table: {s:?}");
    let mut oids = Vec::new();
    for t in &s.tables {
        let oid: i64 = sqlx::query_scalar("SELECT $1::regclass::oid::int8")
            .bind(t.regclass())
            .fetch_one(&mut conn)
            .await
            .unwrap();
        oids.push(oid as u32);
    }
    let relkind: String =
        sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE oid = $1::oid")
            .bind(oids[0] as i64)
            .fetch_optional(&mut conn)
            .await
            .unwrap()
            .unwrap_or_else(|| "r".into());
    sqlx::raw_sql("BEGIN").execute(&mut conn).await.unwrap();
    let mut before = Vec::new();
    for oid in &oids {
        before.push(file_and_scans(&mut conn, *oid).await);
    }
    sqlx::raw_sql(stmt)
        .execute(&mut conn)
        .await
        .expect("statement");
    let mut seen = Vec::new();
    for (oid, (file0, scans0)) in oids.iter().zip(before) {
        let modes: Vec<String> = sqlx::query_scalar(
            "SELECT mode FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation'
             AND relation = $1::oid AND granted",
        )
        .bind(*oid as i64)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let (file1, scans1) = file_and_scans(&mut conn, *oid).await;
        seen.push(Seen {
            lock: modes.iter().filter_map(|m| level(m)).max(),
            rewritten: file1.is_some() && file1 != file0,
            scanned: scans1 > scans0,
        });
    }
    // `LOCK TABLE` takes tables only: an index's "blocks" is not observed.
    let blocks = if relkind == "i" {
        None
    } else {
        Some(
            match (
                waits(&db.url, oids[0], "ACCESS SHARE").await,
                waits(&db.url, oids[0], "ROW EXCLUSIVE").await,
            ) {
                (true, true) => Blocks::ReadsAndWrites,
                (false, true) => Blocks::Writes,
                (false, false) => Blocks::Nothing,
                (true, false) => panic!("reads wait but writes do not"),
            },
        )
    };
    sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
    (s, seen, blocks)
}

/// Checks the review of `stmt` (expected to match the row `rule`) against PostgreSQL.
async fn check(rule: &str, setup: &str, stmt: &str) {
    let (review, seen, blocks) = observe(setup, stmt).await;
    assert_eq!(review.rule, rule, "{stmt}");
    for (t, s) in review.tables.iter().zip(&seen) {
        assert_eq!(s.lock, review.lock, "lock on {t} for {stmt}: {seen:?}");
    }
    let main = &seen[0];
    assert_eq!(
        main.rewritten,
        review.effect == Effect::Rewrite,
        "rewrite? {stmt}: {main:?}"
    );
    assert_eq!(
        main.scanned,
        review.effect != Effect::Metadata,
        "scan? {stmt}: {main:?}"
    );
    if let Some(blocks) = blocks {
        assert_eq!(blocks, review.blocks(), "what waits behind {stmt}");
    }
}

const T: &str = "CREATE TABLE t (id int PRIMARY KEY, a int, v varchar(10), n int);
INSERT INTO t SELECT g, g, 'x', g FROM generate_series(1, 200) g;";
const FK: &str = "CREATE TABLE r (id int PRIMARY KEY); INSERT INTO r SELECT generate_series(1, 200);
CREATE TABLE t (id int PRIMARY KEY, r_id int); INSERT INTO t SELECT g, g FROM generate_series(1, 200) g;";

macro_rules! pg_case {
    ($test:ident, $rule:expr, $setup:expr, $stmt:expr) => {
        #[tokio::test]
        async fn $test() {
            check($rule, $setup, $stmt).await;
        }
    };
}

pg_case!(
    add_column_without_default_is_catalog_only,
    "add-column",
    T,
    "ALTER TABLE t ADD COLUMN b text"
);
pg_case!(
    add_column_constant_default_is_catalog_only,
    "add-column-constant-default",
    T,
    "ALTER TABLE t ADD COLUMN b int NOT NULL DEFAULT 7"
);
pg_case!(
    add_column_volatile_default_rewrites,
    "add-column-volatile-default",
    T,
    "ALTER TABLE t ADD COLUMN b uuid DEFAULT gen_random_uuid()"
);
pg_case!(
    add_column_clock_timestamp_rewrites,
    "add-column-volatile-default",
    T,
    "ALTER TABLE t ADD COLUMN b timestamptz DEFAULT clock_timestamp()"
);
pg_case!(
    add_column_serial_rewrites,
    "add-column-serial-identity-generated",
    T,
    "ALTER TABLE t ADD COLUMN b bigserial"
);
pg_case!(
    drop_column_is_catalog_only,
    "drop-column",
    T,
    "ALTER TABLE t DROP COLUMN a"
);
pg_case!(
    alter_column_type_rewrites,
    "alter-column-type",
    T,
    "ALTER TABLE t ALTER COLUMN a TYPE bigint"
);
pg_case!(
    varchar_widening_is_catalog_only,
    "alter-column-type-coercible",
    T,
    "ALTER TABLE t ALTER COLUMN v TYPE varchar(20)"
);
pg_case!(
    varchar_to_text_is_catalog_only,
    "alter-column-type-coercible",
    T,
    "ALTER TABLE t ALTER COLUMN v TYPE text"
);
pg_case!(
    set_not_null_scans,
    "set-not-null",
    T,
    "ALTER TABLE t ALTER COLUMN n SET NOT NULL"
);
pg_case!(set_not_null_after_validated_check_skips_the_scan, "set-not-null-checked",
    "CREATE TABLE t (id int PRIMARY KEY, n int); INSERT INTO t SELECT g, g FROM generate_series(1, 200) g;
     ALTER TABLE t ADD CONSTRAINT t_n_not_null CHECK (n IS NOT NULL) NOT VALID;
     ALTER TABLE t VALIDATE CONSTRAINT t_n_not_null;",
    "ALTER TABLE t ALTER COLUMN n SET NOT NULL");
pg_case!(
    drop_not_null_is_catalog_only,
    "drop-not-null",
    "CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL)",
    "ALTER TABLE t ALTER COLUMN n DROP NOT NULL"
);
pg_case!(
    set_default_is_catalog_only,
    "set-or-drop-default",
    T,
    "ALTER TABLE t ALTER COLUMN a SET DEFAULT 3"
);
pg_case!(
    add_check_scans,
    "add-check",
    T,
    "ALTER TABLE t ADD CONSTRAINT k CHECK (a > 0)"
);
pg_case!(
    add_check_not_valid_is_catalog_only,
    "add-check-not-valid",
    T,
    "ALTER TABLE t ADD CONSTRAINT k CHECK (a > 0) NOT VALID"
);
pg_case!(validate_check_scans_without_blocking, "validate-constraint",
    "CREATE TABLE t (id int PRIMARY KEY, a int); INSERT INTO t SELECT g, g FROM generate_series(1, 200) g;
     ALTER TABLE t ADD CONSTRAINT k CHECK (a > 0) NOT VALID;",
    "ALTER TABLE t VALIDATE CONSTRAINT k");
pg_case!(
    add_foreign_key_locks_both_tables_and_scans,
    "add-foreign-key",
    FK,
    "ALTER TABLE t ADD CONSTRAINT t_r_fkey FOREIGN KEY (r_id) REFERENCES r (id)"
);
pg_case!(
    add_foreign_key_not_valid_is_catalog_only,
    "add-foreign-key-not-valid",
    FK,
    "ALTER TABLE t ADD CONSTRAINT t_r_fkey FOREIGN KEY (r_id) REFERENCES r (id) NOT VALID"
);
pg_case!(
    add_unique_builds_an_index,
    "add-unique-or-primary-key",
    T,
    "ALTER TABLE t ADD CONSTRAINT t_a_key UNIQUE (a)"
);
pg_case!(add_unique_using_index_is_catalog_only, "add-constraint-using-index",
    concat!("CREATE TABLE t (id int PRIMARY KEY, a int); INSERT INTO t SELECT g, g FROM generate_series(1, 200) g;", " CREATE UNIQUE INDEX t_a_idx ON t (a);"),
    "ALTER TABLE t ADD CONSTRAINT t_a_key UNIQUE USING INDEX t_a_idx");
pg_case!(
    create_index_scans_and_blocks_writes,
    "create-index",
    T,
    "CREATE INDEX t_a_idx ON t (a)"
);
pg_case!(
    create_unique_index_scans_and_blocks_writes,
    "create-unique-index",
    T,
    "CREATE UNIQUE INDEX t_a_idx ON t (a)"
);
pg_case!(
    drop_index_locks_the_index,
    "drop-index",
    "CREATE TABLE t (id int, a int); CREATE INDEX t_a_idx ON t (a);",
    "DROP INDEX t_a_idx"
);
pg_case!(
    rename_column_is_catalog_only,
    "rename-column",
    T,
    "ALTER TABLE t RENAME COLUMN a TO b"
);
pg_case!(
    rename_table_is_catalog_only,
    "rename-table",
    T,
    "ALTER TABLE t RENAME TO u"
);
pg_case!(drop_table_is_catalog_only, "drop-table", T, "DROP TABLE t");
pg_case!(
    rename_index_locks_only_the_index,
    "rename-index",
    "CREATE TABLE t (id int, a int); CREATE INDEX t_a_idx ON t (a);",
    "ALTER INDEX t_a_idx RENAME TO t_a_idx2"
);
pg_case!(
    rename_constraint_is_catalog_only,
    "rename-constraint",
    T,
    "ALTER TABLE t RENAME CONSTRAINT t_pkey TO t_pk"
);
pg_case!(drop_foreign_key_locks_the_referenced_table_too, "drop-foreign-key",
    "CREATE TABLE r (id int PRIMARY KEY); CREATE TABLE t (id int PRIMARY KEY, r_id int REFERENCES r (id));",
    "ALTER TABLE t DROP CONSTRAINT t_r_id_fkey");
pg_case!(
    create_table_with_foreign_key_locks_the_referenced_table,
    "create-table-foreign-key",
    "CREATE TABLE r (id int PRIMARY KEY); INSERT INTO r SELECT generate_series(1, 200);",
    "CREATE TABLE c (id int PRIMARY KEY, r_id int REFERENCES r (id))"
);
pg_case!(cluster_rewrites, "cluster", T, "CLUSTER t USING t_pkey");
pg_case!(
    reindex_scans_and_blocks_writes,
    "reindex",
    T,
    "REINDEX TABLE t"
);
pg_case!(
    update_scans_and_blocks_nothing,
    "update-or-delete",
    T,
    "UPDATE t SET a = a + 1"
);
pg_case!(
    insert_blocks_nothing,
    "insert",
    T,
    "INSERT INTO t (id, a) VALUES (1000, 1)"
);

/// TRUNCATE's effect is "catalog only" in the sense that matters (fast whatever the size), but it
/// does give the table a new file, so only its lock is compared here.
#[tokio::test]
async fn truncate_takes_access_exclusive() {
    let (review, seen, blocks) = observe(T, "TRUNCATE t CASCADE").await;
    assert_eq!(review.rule, "truncate");
    assert_eq!(seen[0].lock, Some(LockLevel::AccessExclusive));
    assert_eq!(review.lock, Some(LockLevel::AccessExclusive));
    assert_eq!(blocks, Some(Blocks::ReadsAndWrites));
}

/// With the target's catalog, a widening the script alone cannot judge is catalog-only (and
/// PostgreSQL agrees: `varchar_widening_is_catalog_only`); a narrowing stays a rewrite.
#[tokio::test]
async fn review_on_target_reads_version_and_column_types() {
    let db = TestDb::create("lockreview").await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE \"Task\" (id int, title varchar(10), n numeric(10,2))")
        .execute(&mut conn)
        .await
        .unwrap();
    let sql = "ALTER TABLE \"Task\" ALTER COLUMN title TYPE varchar(20);
ALTER TABLE \"Task\" ALTER COLUMN n TYPE numeric(8,2);
ALTER TABLE \"Task\" ADD COLUMN d int DEFAULT 0;
ALTER TABLE \"Missing\" ALTER COLUMN x TYPE text;";
    let review = review_on_target(&mut conn, sql).await.unwrap();
    let rules: Vec<&str> = review.statements.iter().map(|s| s.rule).collect();
    assert_eq!(
        rules,
        [
            "alter-column-type-coercible",
            "alter-column-type",
            "add-column-constant-default",
            "alter-column-type"
        ]
    );
    assert_eq!(
        review_script(sql, 150000).statements[0].rule,
        "alter-column-type"
    );
}
