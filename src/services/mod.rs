//! The service layer, between `core` (which decides) and `dbops` (which acts): what each operation
//! kind plans and runs, the read-only reports, monitoring windows, the worker and the scheduler's jobs.
//!
//! Arrows point down this list, never up: `scheduler` (one file per job) -> `worker` ->
//! `runbook`; `facts` (the core's `Facts` port) -> `runbook`, `reports`; `reports` ->
//! `monitoring`; `runbook` and `reports` -> `pending` (the review of pending migrations, which
//! both use); everything -> `backups` -> `environment`. A helper two of them need lives below
//! both.

pub mod backups;
pub mod environment;
pub mod facts;
pub mod monitoring;
pub mod pending;
pub mod rehearsal;
pub mod reports;
pub mod runbook;
pub mod scheduler;
pub mod worker;
