//! Read-only reports built from facts: `status` (including what Prisma's status hides), the
//! backup catalog, the app status, open approvals, and the migration safety checklist.
//!
//! `status.rs` (the `status` report and its fields), `tools.rs` (the client tools against the
//! server), `app.rs` (the app status), `backups.rs` (the backup catalog), `checklist.rs` (the
//! migration safety checklist), `approvals.rs` (open requests); here the report row helpers.

mod app;
mod approvals;
mod backups;
mod checklist;
mod status;
mod tools;

pub use app::{app_field, app_report};
pub use approvals::approvals_report;
pub use backups::{backups_report, backups_text};
pub use checklist::checklist_report;
pub use status::{backup_field, database_fields, status_fields, status_report};
pub use tools::{tool_warnings, tools_verdict};

/// The items joined by commas, or `none`.
pub(super) fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// A report row: (label, value).
pub type Field = (String, String);

/// A report row from a label and a value.
pub(super) fn field(label: &str, value: impl Into<String>) -> Field {
    (label.to_string(), value.into())
}

/// Fields as the text the CLI prints: one `label: value` line each.
pub fn fields_text(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}
