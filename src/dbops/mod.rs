//! `dbops` acts: everything dualkey does to a target database or the app around it, as real
//! processes started with argument vectors (never a shell string) and real SQL connections.
//!
//! - [`app`]: the configured app stop/start/status/logs commands.
//! - [`prisma`]: a native Rust copy of Prisma Migrate (folder listing, checksums,
//!   `_prisma_migrations`, status, resolve, deploy).
//! - [`backup`]: `pg_dump -Fc` backups with SHA-256, verification and restore.
//! - [`sqlscan`]: data-loss warnings read from SQL text.
//! - [`stats`]: the target's per-table write counters, recorded with backups.
//! - [`sessions`]: the target's other sessions (long transactions, `pg_dump`, lock holders) and
//!   table sizes, for safe deploys.
//! - [`lockreview`]: each migration statement's lock, rewrite or scan, parsed with PostgreSQL's
//!   own grammar.

pub mod app;
pub mod backup;
pub mod lockreview;
pub mod prisma;
pub mod sessions;
pub mod sqlscan;
pub mod stats;
