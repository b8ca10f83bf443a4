//! The facts port (plans and read-only reports from the target, implemented outside the core)
//! and the responder each inbound event answers through.

use async_trait::async_trait;

use crate::config::Settings;
use crate::core::operation::{OperationKind, Plan};
use crate::core::ports::{Clock, Store};
use crate::core::reply::Reply;

/// How an adapter answers the event being handled (the "reply" of the backend contract):
/// ephemeral replies reach only the sender, public ones the channel. Cards that are edited
/// later do not go this way but through the outbox (`Core::post_card`).
#[async_trait]
pub trait Responder: Send + Sync {
    /// Sends a reply to the person or channel the event came from.
    async fn respond(&self, reply: Reply) -> anyhow::Result<()>;
}

/// A read-only report a command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRequest {
    /// `status ENV`.
    Status(String),
    /// `app status ENV`.
    App(String),
    /// `backups ENV`.
    Backups(String),
    /// `checklist ENV`.
    Checklist(String),
    /// `approvals`.
    Approvals,
}

/// What plans and reports read, and all they may: the settings, the store and the clock. The
/// dispatcher lends its own (`Core::reads`); plans and reports never see the dispatcher.
#[derive(Clone, Copy)]
pub struct Reads<'a> {
    /// Validated settings.
    pub settings: &'a Settings,
    /// The state store (backups catalog, requests, operations).
    pub store: &'a dyn Store,
    /// Time.
    pub clock: &'a dyn Clock,
}

/// The facts port: what the core needs to know about the target to plan an operation or answer
/// a read-only command. Gathering them is I/O (migration status, backup hashes, app commands)
/// and lives outside the core (`facts::RunbookFacts`); the dispatcher calls it only after the
/// platform's ack.
#[async_trait]
pub trait Facts: Send + Sync {
    /// Plans `kind` in `env` from the facts as they are now; `Err` is the user-facing reason it
    /// cannot be planned.
    async fn plan(&self, reads: Reads<'_>, kind: &OperationKind, env: &str)
        -> Result<Plan, String>;
    /// Builds a read-only report.
    async fn report(&self, reads: Reads<'_>, what: ReportRequest) -> anyhow::Result<Reply>;
    /// The migration (folder) names in a migrations folder, for parsing names from chat.
    fn migration_names(&self, dir: &std::path::Path) -> std::collections::BTreeSet<String>;
}
