//! Backups as a service: taking them (with retention), judging their health, and the next
//! scheduled slot. Used by the runbook, the reports and the scheduler's jobs, which all sit above.

pub mod health;
pub mod schedule;
pub mod take;
