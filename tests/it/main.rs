//! The one integration-test binary: every module below is a group of tests.

mod support;
mod prisma_helpers;
mod prisma_golden;
mod approvals;
mod audit;
mod cli;
mod backup_common;
mod backup_dump;
mod backup_external;
mod backup_retention;
mod backup_verify;
mod sqlscan;
mod prisma_deploy;
mod prisma_resolve;
mod prisma_rollback;
mod prisma_status;
mod prisma_interop;
mod runbook;
mod outbox;
