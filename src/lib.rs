//! dualkey: a chat-ops bot for teams that run a Prisma + PostgreSQL application. It turns the
//! migration runbook into slash commands, puts every destructive step behind two-person
//! approval, and keeps a durable, tamper-evident audit trail.
//!
//! # Layout
//!
//! `core` decides, `store` remembers, `dbops` acts, `adapters` talk, `startup` wires.
//!
//! - [`config`]: typed settings from `config/dualkey.toml`, secrets from the environment.
//! - [`core`]: neutral events and replies, identities, the command registry
//!   ([`core::command`], one file per command), approval rules, the operation state machine,
//!   the audit chain and the [`core::dispatch::Dispatcher`].
//! - [`store`]: the [`store::Store`] trait with SQLite and PostgreSQL implementations.
//! - [`dbops`]: app commands, Prisma Migrate, backups: real processes and real SQL.
//! - [`checks`]: read-only reports: migration status lines, backups, the safety checklist.
//! - [`runbook`]: what each operation kind plans and runs, step by step.
//! - [`worker`]: claims queued operations and runs them, off the interaction path.
//! - [`outbox`]: delivers queued chat messages through adapters, with retries.
//! - [`adapters`]: platform adapters (today: the local shell).
//! - [`server`]: the HTTP server (`/healthz`, `/readyz`, `/metrics`).
//! - [`startup`]: builds the [`startup::Application`] and runs it until shutdown.
//! - [`cli`]: the command-line interface.

pub mod adapters;
pub mod checks;
pub mod cli;
pub mod clock;
pub mod config;
pub mod core;
pub mod dbops;
pub mod outbox;
pub mod runbook;
pub mod server;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod worker;
