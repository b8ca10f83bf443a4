//! `store` remembers: the bot's own state (approval requests, votes, operations and their
//! steps, the audit chain, the chat outbox, delivery dedupe keys) behind the core's store port
//! ([`crate::core::ports::Store`], re-exported here with its rows), with two real
//! implementations chosen by URL scheme: SQLite (default, one file) and PostgreSQL (for several
//! replicas). Both run the same SQL text (`$N` parameters work in both) from one macro,
//! so they cannot drift apart; the differences (row locks, write serialization, migrations) are
//! spelled out in `sql.rs`.
//!
//! State changes happen in a [`Tx`]: the core locks what it decides on, writes the change and
//! its audit event, and commits them together.

mod rehearsals;
mod sql;

pub use crate::core::ports::rows::*;
pub use crate::core::ports::store::{Backend, Store, StoreError, StoreResult, Tx};
pub use sql::{PgStore, SqliteStore};

use crate::core::audit::{AuditRecord, NewAudit};

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e)
    }
}

/// Opens (and migrates) the store named by `url`: `sqlite://path` (file and folder created when
/// missing) or `postgres://...`.
pub async fn open(url: &str) -> StoreResult<std::sync::Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PgStore::open(url).await?))
    } else {
        Err(StoreError::BadUrl)
    }
}
