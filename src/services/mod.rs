//! The service layer, between `core` (which decides) and `dbops` (which acts): what each operation
//! kind plans and runs, the read-only reports, monitoring windows, the worker and the scheduler's jobs.

pub mod backups;
pub mod environment;
pub mod facts;
pub mod monitoring;
pub mod reports;
pub mod runbook;
pub mod scheduler;
pub mod worker;
