//! The one integration-test binary: every module below is a group of tests.

mod support;
mod prisma_helpers;
mod prisma_golden;
mod approvals;
mod audit;
mod cli;
