//! One dualkey deploy rehearsal through the engine (`services::rehearsal::engine::rehearse_backup`):
//! the backup restored into `<db>_dualkey_rehearsal`, the pending migrations of DIR applied there
//! with the deploy's code path and measured, the scratch database dropped. Prints what was
//! measured as one JSON line. Used by `benches/rehearsal.sh`.
//!
//! Usage: `DATABASE_URL=postgres://… rehearsal rehearse BACKUP DIR AFTER [SHA256]` (the pending
//! migrations are the folders of DIR named after AFTER, the last one the backup holds; SHA256 is
//! the backup's, as the catalog would give it: computed here when not given), or
//! `DATABASE_URL=… rehearsal deploy DIR` (a plain deploy, to set a database up). The URL comes
//! from the environment, never from the command line.

use std::path::{Path, PathBuf};

use dualkey::dbops::prisma::{deploy, render_checksum, NoProgress};
use dualkey::services::rehearsal::engine::{rehearse_backup, RehearsalTarget};

/// (name, checksum) of the migration folders of `dir` whose name is greater than `after`.
fn pinned(dir: &Path, after: &str) -> Vec<(String, String)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the migrations folder")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("migration.sql").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.as_str() > after)
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let sql = std::fs::read_to_string(dir.join(&n).join("migration.sql")).unwrap();
            (n, render_checksum(&sql))
        })
        .collect()
}

fn usage() -> ! {
    eprintln!("usage: DATABASE_URL=postgres://... rehearsal (rehearse BACKUP DIR AFTER [SHA256] | deploy DIR)");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("DATABASE_URL is not set");
        std::process::exit(2);
    };
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["deploy", dir] => {
            let out = deploy(&url, Path::new(dir), &mut NoProgress).await;
            match out {
                Ok(o) if o.stopped.is_none() => println!("applied {:?}", o.applied),
                Ok(o) => {
                    eprintln!("stopped: {:?}", o.stopped);
                    std::process::exit(1);
                }
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
        }
        ["rehearse", backup, dir, after, rest @ ..] if rest.len() <= 1 => {
            let path = PathBuf::from(backup);
            let sha = match rest.first() {
                Some(s) => s.to_string(),
                None => {
                    let (_, sha) = dualkey::dbops::backup::sha256_file(&path)
                        .await
                        .expect("hash the backup");
                    sha
                }
            };
            let pinned = pinned(Path::new(dir), after);
            let t = RehearsalTarget {
                database_url: &url,
                migrations_dir: Path::new(dir),
                pg_bin_dir: None,
                protected: &[],
                deploy: dualkey::services::environment::deploy_options(&Default::default()),
            };
            let (_tx, rx) = tokio::sync::watch::channel(false);
            match rehearse_backup(&t, &path, &sha, &pinned, rx).await {
                Ok(m) => println!(
                    "{}",
                    serde_json::json!({
                        "restore_ms": m.restore_ms,
                        "largest_table": m.largest_table,
                        "migrations": m.migrations,
                    })
                ),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
        }
        _ => usage(),
    }
}
