//! Helpers shared by the `backup_*` test modules: seeding a target database, fingerprinting its
//! content, and looking at a backup folder.

use std::path::{Path, PathBuf};

use dualkey::dbops::backup::{BackupKind, DumpRequest};
use sqlx::{Connection, PgConnection};

/// A password that trust auth ignores: tests check it never leaks into errors.
pub const FAKE_PASSWORD: &str = "hunter2-very-secret";

/// The test database's URL with [`FAKE_PASSWORD`] in it.
pub fn url_with_password(url: &str) -> String {
    url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{FAKE_PASSWORD}@"),
        1,
    )
}

/// Connects to a database.
pub async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .expect("connect to the test database")
}

/// Runs SQL (several statements allowed).
pub async fn exec(url: &str, sql: &str) {
    let mut c = connect(url).await;
    sqlx::raw_sql(sql).execute(&mut c).await.expect("run SQL");
}

/// Creates `items` (with a foreign-key child `notes`) holding `rows` rows.
pub async fn seed(url: &str, rows: i64) {
    exec(
        url,
        &format!(
            r#"CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, qty int, tags text[], meta jsonb);
               INSERT INTO items
                 SELECT g, 'item ' || g || E' \\ '' "quoted" ' || md5(g::text), g % 97,
                        ARRAY['a' || g, NULL], jsonb_build_object('g', g, 'x', repeat('y', g % 50))
                 FROM generate_series(1, {rows}) g;
               CREATE TABLE notes (id serial PRIMARY KEY, item_id bigint REFERENCES items(id), body text);
               INSERT INTO notes (item_id, body) SELECT g, 'note ' || g FROM generate_series(1, LEAST({rows}, 100)) g;"#
        ),
    )
    .await;
}

/// Creates `big` with `rows` rows of 192 random hex characters: enough for `pg_dump` to take a
/// moment (200 000 rows: about 2 s).
pub async fn seed_big(url: &str, rows: i64) {
    exec(
        url,
        &format!(
            "CREATE TABLE big (id int PRIMARY KEY, payload text);
             INSERT INTO big SELECT g, md5(random()::text) || md5(random()::text) || md5(random()::text)
                 || md5(random()::text) || md5(random()::text) || md5(random()::text)
             FROM generate_series(1, {rows}) g;"
        ),
    )
    .await;
}

/// Row count and an md5 over the whole content of `table` (ordered by `id`), or `None` if the
/// table does not exist.
pub async fn fingerprint(url: &str, table: &str) -> Option<(i64, String)> {
    let mut c = connect(url).await;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(&mut c)
        .await
        .unwrap();
    if !exists {
        return None;
    }
    let row: (i64, Option<String>) = sqlx::query_as(&format!(
        "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM {table} t"
    ))
    .fetch_one(&mut c)
    .await
    .unwrap();
    Some((row.0, row.1.unwrap_or_default()))
}

/// The columns of `table`, in order.
pub async fn columns(url: &str, table: &str) -> Vec<String> {
    let mut c = connect(url).await;
    sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut c)
    .await
    .unwrap()
}

/// Every file under `dir`, recursively, as paths relative to it.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A dump request for `env` "test" in `dir`.
pub fn request<'a>(url: &'a str, dir: &'a Path, kind: BackupKind) -> DumpRequest<'a> {
    DumpRequest {
        database_url: url,
        backup_dir: dir,
        env: "test",
        kind,
        pg_bin_dir: None,
    }
}
