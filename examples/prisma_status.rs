//! `prisma migrate status`, natively: prints what the Prisma CLI prints from the line
//! `N migrations found in prisma/migrations` onward, on the same streams, and exits with its code.
//!
//! Usage: `DATABASE_URL=postgres://… cargo run --release --example prisma_status -- prisma/migrations`
//! (used by `benches/prisma_status.sh` until `dualkey status --format prisma` exists).

use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "prisma/migrations".to_string());
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("DATABASE_URL is not set");
        std::process::exit(2);
    };
    let out = dualkey::dbops::prisma::status_prisma_cli(&url, std::path::Path::new(&dir)).await;
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    std::process::exit(out.exit_code);
}
