//! The one integration-test binary: every module below is a group of tests.

mod approvals;
mod audit;
mod backup_common;
mod backup_dump;
mod backup_external;
mod backup_identity;
mod backup_retention;
mod backup_streamed;
mod backup_verify;
mod cli;
mod outbox;
mod prisma_deploy;
mod prisma_golden;
mod prisma_helpers;
mod prisma_interop;
mod prisma_resolve;
mod prisma_rollback;
mod prisma_status;
mod runbook;
mod sqlscan;
mod support;
