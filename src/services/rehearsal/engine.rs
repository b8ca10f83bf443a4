//! TEMP engine stub (helper `rehearsal-flow` only): the signatures of helper
//! `rehearsal-engine`'s engine, so the runner compiles before the engine is merged. Dropped at
//! merge in favour of the real engine.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::context::Core;
use crate::services::environment::StepError;

/// One migration as rehearsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RehearsedMigration {
    pub name: String,
    pub duration_ms: u64,
    pub rewrote: Vec<String>,
    pub locks: Vec<String>,
    pub error: Option<String>,
    pub statement: Option<String>,
}

/// A rehearsal's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RehearsalOutcome {
    pub backup_id: String,
    pub backup_created_at_ms: i64,
    pub fresh_backup: bool,
    pub largest_table: Option<(String, i64)>,
    pub restore_ms: u64,
    pub migrations: Vec<RehearsedMigration>,
    pub total_ms: u64,
    pub pinned: Vec<(String, String)>,
}

impl RehearsalOutcome {
    /// Whether every migration applied.
    pub fn passed(&self) -> bool {
        todo!()
    }
    /// The card's line.
    pub fn summary(&self, _now_ms: i64) -> String {
        todo!()
    }
}

/// Rehearses `pinned` on a restored copy.
pub async fn rehearse(
    _core: &Arc<Core>,
    _env: &str,
    _pinned: &[(String, String)],
    _cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<RehearsalOutcome, StepError> {
    Err(StepError("the rehearsal engine is not merged yet".into()))
}

/// Drops a scratch database a killed rehearsal left.
pub async fn drop_leftover(_core: &Arc<Core>, _env: &str) -> Result<bool, StepError> {
    Ok(false)
}
