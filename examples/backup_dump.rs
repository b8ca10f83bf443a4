//! One dualkey backup (`dbops::backup::dump`), as the worker takes it: `pg_dump -Fc` streamed into
//! `<DIR>/<ENV>/<database>_<ts>_<kind>.dump` with SHA-256, fsync and rename. Prints the outcome as
//! one JSON line; progress goes to stderr.
//!
//! Usage: `DATABASE_URL=postgres://… cargo run --release --example backup_dump -- DIR [ENV] [KIND]`
//! (ENV defaults to `bench`, KIND to `manual`). The URL comes from the environment, never from the
//! command line, where `ps` would show its password. Used by `benches/backup.sh`.

use std::path::PathBuf;

use dualkey::dbops::backup::{dump, BackupKind, DumpRequest};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: DATABASE_URL=postgres://... backup_dump DIR [ENV] [KIND]");
        std::process::exit(2);
    };
    let env = args.next().unwrap_or_else(|| "bench".to_string());
    let kind = match args.next().map(|k| k.parse::<BackupKind>()) {
        None => BackupKind::Manual,
        Some(Ok(k)) => k,
        Some(Err(e)) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("DATABASE_URL is not set");
        std::process::exit(2);
    };
    let req = DumpRequest {
        database_url: &url,
        backup_dir: &dir,
        env: &env,
        kind,
        pg_bin_dir: None,
    };
    let progress = |p: dualkey::dbops::backup::DumpProgress| {
        eprintln!(
            "{:>6.1} s  {:>8.1} MiB",
            p.elapsed.as_secs_f64(),
            p.bytes_written as f64 / 1048576.0
        );
    };
    match dump(&req, progress).await {
        Ok(out) => println!(
            "{}",
            serde_json::json!({
                "path": out.path,
                "size_bytes": out.size_bytes,
                "sha256": out.sha256,
                "started_at": out.started_at,
                "duration_s": out.duration.as_secs_f64(),
                "database": out.database,
                "kind": out.kind,
            })
        ),
        Err(e) => {
            eprintln!("backup failed: {e}");
            std::process::exit(1);
        }
    }
}
