//! The audit observer of the deploy and rollback steps: each migration applied or un-applied is
//! written to the audit trail as it happens.

use std::sync::Arc;

use serde_json::json;

use crate::core::audit::NewAudit;
use crate::core::context::Core;
use crate::dbops::prisma;

/// Writes each migration applied or un-applied inside a step to the audit trail as it happens
/// (before and after). An audit failure stops the step: nothing runs unaudited.
pub(crate) struct AuditObserver {
    pub(crate) core: Arc<Core>,
    pub(crate) env: String,
    pub(crate) op_id: String,
}

impl AuditObserver {
    pub(crate) async fn write(
        &self,
        action: &str,
        details: serde_json::Value,
    ) -> Result<(), String> {
        self.core
            .audit(NewAudit::system(action, Some(&self.env), details))
            .await
            .map(|_| ())
            .map_err(|e| format!("audit write failed: {e}"))
    }
}

#[async_trait::async_trait]
impl prisma::ProgressObserver<prisma::DeployEvent> for AuditObserver {
    async fn on_event(&mut self, ev: &prisma::DeployEvent) -> Result<(), String> {
        let op = &self.op_id;
        match ev {
            // A pinned deploy checked every script against the approved checksums before this
            // event; each event names the checksum of the script it is about.
            prisma::DeployEvent::Starting { migration, index, total, checksum } => self.write("migration.apply.started", json!({"operation": op, "migration": migration, "index": index, "total": total, "checksum": checksum})).await,
            prisma::DeployEvent::Applied { migration, duration_ms, checksum } => self.write("migration.apply.finished", json!({"operation": op, "migration": migration, "ms": duration_ms, "checksum": checksum})).await,
            prisma::DeployEvent::LockWait { migration, attempt, tries, retry_in_ms, holders } => self.write("migration.apply.lock_wait", json!({"operation": op, "migration": migration, "attempt": attempt, "tries": tries, "retry_in_ms": retry_in_ms, "holders": holders})).await,
            prisma::DeployEvent::Failed { migration, error, checksum } => self.write("migration.apply.failed", json!({"operation": op, "migration": migration, "error": error.message, "checksum": checksum})).await,
        }
    }
}

#[async_trait::async_trait]
impl prisma::ProgressObserver<prisma::RollbackEvent> for AuditObserver {
    async fn on_event(&mut self, ev: &prisma::RollbackEvent) -> Result<(), String> {
        let op = &self.op_id;
        match ev {
            prisma::RollbackEvent::Starting { migration, index, total } => self.write("migration.down.started", json!({"operation": op, "migration": migration, "index": index, "total": total})).await,
            prisma::RollbackEvent::Ran { migration, duration_ms } => self.write("migration.down.finished", json!({"operation": op, "migration": migration, "ms": duration_ms})).await,
            prisma::RollbackEvent::Failed { migration, error } => self.write("migration.down.failed", json!({"operation": op, "migration": migration, "error": error})).await,
        }
    }
}
