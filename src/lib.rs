//! dualkey: a chat-ops bot for teams that run a Prisma + PostgreSQL application. It turns the
//! migration runbook into slash commands, puts every destructive step behind two-person
//! approval, and keeps a durable, tamper-evident audit trail.
//!
//! # Layout
//!
//! `core` decides, `store` remembers, `dbops` acts, `adapters` talk, `startup` wires.
//!
//! - [`config`]: typed settings from `config/dualkey.toml`, secrets from the environment.
//! - [`core`]: neutral events and typed replies (cards, reports), identities, the command
//!   registry ([`core::command`], one file per command with its `parse` and `run`), approval
//!   rules, the operation state machine, the audit chain and the dispatcher
//!   ([`core::dispatch::Core`]). It reaches the world only through ports: the store trait, a
//!   clock, the [`core::dispatch::Facts`] port (plans and reports) and a
//!   [`core::dispatch::Responder`] per event; it imports nothing from `dbops`, `runbook`,
//!   `checks`, `worker`, `outbox` or `adapters`.
//! - [`store`]: the [`store::Store`] trait with SQLite and PostgreSQL implementations.
//! - [`dbops`]: app commands, Prisma Migrate, backups: real processes and real SQL.
//! - [`checks`]: read-only reports: migration status lines, backups, the safety checklist.
//! - [`runbook`]: what each operation kind plans and runs, step by step.
//! - [`worker`]: claims queued operations and runs them, off the interaction path.
//! - [`outbox`]: delivers queued chat messages through adapters: order per channel, retries,
//!   `Retry-After`, cards edited in every channel they were posted to, edits collapsed.
//! - [`adapters`]: one contract ([`adapters::Outbound`], [`adapters::Adapter`],
//!   [`adapters::Inbound`]: verify, dedupe, ack, then dispatch) and its adapters: Slack, the
//!   local shell, and an in-memory one for tests.
//! - [`server`]: the HTTP server (`/healthz`, `/readyz`, `/metrics`, and the routes adapters
//!   mount, such as Slack's HTTP mode endpoints).
//! - [`startup`]: builds the [`startup::Application`] and runs it until shutdown.
//! - [`doctor`]: `dualkey doctor`, the set-up checks (tokens, channels, databases, tools,
//!   folders), one line each.
//! - [`welcome`]: what `dualkey serve` prints at start: how to talk to it, what is missing.
//! - metrics: names, help texts and buckets in `core::meter` (recorded through the `metrics`
//!   facade from any layer), rendered on `/metrics` by [`server`].
//! - [`cli`]: the command-line interface.

pub mod adapters;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod core;
pub mod dbops;
pub mod doctor;
pub mod outbox;
pub mod server;
pub mod services;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod welcome;
