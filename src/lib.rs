//! dualkey: a chat-ops bot for teams that run a Prisma + PostgreSQL application. It turns the
//! migration runbook into slash commands, puts every destructive step behind two-person
//! approval, and keeps a durable, tamper-evident audit trail.
//!
//! # Layout
//!
//! `core` decides, `services` runs the runbook, `store` remembers, `dbops` acts, `adapters`
//! talk, `startup` wires. Arrows point one way (checked by `../shared/tools/house.py src`):
//! `cli -> startup -> {server, outbox, console} -> adapters -> core`, `services -> {core, dbops,
//! store}`, `store -> core`, `core -> config`, and nothing points back.
//!
//! - [`config`]: typed settings from `config/dualkey.toml` plus `DUALKEY_*` overrides, one file
//!   per group of sections (`chat`, `environments`, `people`, `schedule`, `server`), `load` and
//!   `validate` (one check per section). It imports nothing from the crate.
//! - [`core`]: decides, and names no platform and no outer module.
//!   - [`core::ports`]: what the core needs from the world, defined here and implemented
//!     outside: [`core::ports::Store`]/[`core::ports::Tx`] and their rows (by [`store`]),
//!     [`core::ports::Clock`] (by [`clock`]), [`core::ports::Facts`] (plans and reports, by
//!     [`services::facts`], reading through [`core::ports::Reads`]: settings, store, clock) and
//!     [`core::ports::Responder`] (by each adapter).
//!   - [`core::context::Core`]: the dispatcher's context (settings, directory, ports, wake-ups).
//!   - [`core::dispatch`]: dedupe and dispatch, one `impl Core` per concern: `run.rs` (parse,
//!     authorize, run a command), `request.rs` (requests, cancel, expiry), `vote.rs`, `cards.rs`,
//!     `post.rs` (audit and posts).
//!   - [`core::command`]: the registry, one file per command with its `parse` and `run`, taking
//!     an [`core::invocation::Invocation`]; the shared parser in `command/parser.rs`.
//!   - [`core::window`] (monitoring windows), [`core::notify`] (`enqueue_posts`),
//!     [`core::routing`] (which channels a message goes to), [`core::approval`],
//!     [`core::operation`], [`core::audit`] (the hash chain and its verifier), [`core::reply`],
//!     [`core::event`], [`core::identity`], [`core::meter`] (metric names), [`core::complete`].
//! - [`services`]: the layer between `core` and `dbops`.
//!   - [`services::facts`]: the `Facts` port, on top of the runbook's planning and the reports.
//!   - [`services::scheduler`]: every periodic job under a store lease, one file per job
//!     (`nightly_backups`, `drills`, `alerts`, `housekeeping`, `monitoring_tick`), cron slots in
//!     `slots.rs`, what two jobs share in `shared.rs`.
//!   - [`services::worker`]: claims queued operations and runs them off the interaction path;
//!     `recovery.rs` after a restart.
//!   - [`services::runbook`]: `plan` ([`services::runbook::planning`], one planner per kind) and
//!     `run_step` (a match over `runbook/steps/`, one function per step action).
//!   - [`services::rehearsal`]: deploys rehearsed on a restored copy (`engine`) and their queue
//!     under a lease, one per environment (`runner`).
//!   - [`services::reports`] (status, backups, checklist, approvals, app) and
//!     [`services::monitoring`] (probes, windows, reminders).
//!   - [`services::backups`] (take with retention, health, next slot) and
//!     [`services::environment`] (an environment's settings, URL, status, tools): below all the
//!     others.
//! - [`store`]: the SQLite and PostgreSQL implementations of the store port (`store/sql.rs`,
//!   one SQL text for both).
//! - [`clock`]: the system clock and a manual one for tests.
//! - [`dbops`]: app commands, Prisma Migrate, backups and restores: real processes and real SQL;
//!   [`dbops::lockreview`] (each statement's lock, rewrite or scan, parsed with PostgreSQL's own
//!   grammar) and [`dbops::sessions`] (long transactions, `pg_dump` sessions, lock holders,
//!   table sizes) for safe deploys.
//! - [`outbox`]: delivers queued chat messages through adapters: lanes per channel (`lanes.rs`),
//!   one row (`deliver.rs`), audit digests (`digest.rs`).
//! - [`adapters`]: one contract ([`adapters::Outbound`], [`adapters::Adapter`],
//!   [`adapters::Inbound`]: verify, dedupe, ack, then dispatch) and its adapters: Slack,
//!   Discord, the local shell, and an in-memory one for tests.
//! - [`console`]: the shell adapter wired to the real outbox and worker.
//! - [`server`]: the HTTP servers: accept loop and slow-client guards (`accept.rs`,
//!   `slots.rs`), `/healthz` and `/readyz` (`routes.rs`), `/metrics` (`metrics.rs`).
//! - [`startup`]: builds the [`startup::Application`] and runs it until shutdown.
//! - [`doctor`]: `dualkey doctor`, the set-up checks, one line each.
//! - [`welcome`]: what `dualkey serve` prints at start: how to talk to it, what is missing.
//! - [`telemetry`]: logging set-up.
//! - [`cli`]: the command line, one function per subcommand (`serve.rs`, `setup.rs`, `db.rs`,
//!   `audit.rs`).

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
