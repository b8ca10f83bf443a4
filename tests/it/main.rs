//! The one integration-test binary: every module below is a group of tests.

mod approvals;
mod audit;
mod backup_common;
mod backup_dump;
mod backup_external;
mod backup_retention;
mod backup_verify;
mod cli;
mod cli_defects;
mod config_rules;
mod outbox;
mod plan_truth;
mod prisma_deploy;
mod prisma_golden;
mod prisma_helpers;
mod prisma_interop;
mod prisma_resolve;
mod prisma_rollback;
mod prisma_status;
mod restore_kill;
mod runbook;
mod sqlscan;
mod store_open;
mod support;
mod tls;
