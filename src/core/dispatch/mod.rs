//! The dispatcher, one `impl Core` per file: dedupe and dispatch here, command running (`run.rs`),
//! requests (`request.rs`), votes (`vote.rs`), cards (`cards.rs`), posting and audit (`post.rs`).
//!
//! It takes an acknowledged [`InboundEvent`], dedupes it, parses it with the
//! command's own parser, authorizes the canonical operator (fail closed) and either answers a
//! read-only command, records an approval request, records a vote, or queues an operation.
//! Every state change commits together with its audit event; chat updates go through the
//! outbox afterwards.
//!
//! The core reaches the world through narrow ports: the [`Store`] trait, a [`Clock`], the
//! [`Facts`] port (plans and read-only reports, implemented outside the core by the runbook),
//! and a [`Responder`] per event (implemented by the adapter that received it). It imports
//! nothing from the runbook, the worker, the outbox or the adapters.
//!
//! [`Core`] itself (the struct) lives in `core/context.rs`.
//!
//! [`Store`]: crate::core::ports::Store
//! [`Clock`]: crate::core::ports::Clock
//! [`Facts`]: crate::core::ports::Facts

mod cards;
mod post;
mod rehearsal;
mod request;
mod run;
mod vote;

pub use cards::{describe_state, kind_name};

use crate::core::command::ParseCtx;
use crate::core::context::{Core, UserError};
use crate::core::event::{EventKind, InboundEvent};
use crate::core::ports::Responder;
use crate::core::reply::Reply;
pub use rehearsal::{pinned_set, set_digest};
use run::CommandInput;

/// What a repeated delivery of a command is told: nothing runs again; its request id when
/// this process knows it. `shown` is the command as typed (`/db app stop`), when known.
pub fn already_received(shown: Option<&str>, request: Option<&str>) -> String {
    let what = match shown {
        Some(s) => format!(" `{}`", s.trim().replace('`', "'")),
        None => " this command".to_string(),
    };
    match request {
        Some(id) => format!("Already received{what} (request {id}); this repeated delivery runs nothing again. `approvals` shows the request."),
        None => format!("Already received{what}; this repeated delivery runs nothing again."),
    }
}

impl Core {
    /// Names a parser may check against.
    pub fn parse_ctx(&self) -> ParseCtx {
        ParseCtx {
            envs: self.settings.environments.keys().cloned().collect(),
            default_env: self.settings.default_env().to_string(),
            migrations: self
                .settings
                .environments
                .iter()
                .map(|(k, e)| {
                    let names = self.facts.migration_names(&e.migrations_dir);
                    (k.clone(), (e.migrations_dir.clone(), names))
                })
                .collect(),
        }
    }

    /// The slash command as users type it.
    pub fn slash(&self) -> &str {
        &self.settings.slack.command
    }

    /// The key of `ev`'s delivery in the store's dedupe table and in [`Core::recent`].
    pub fn delivery_key(ev: &InboundEvent) -> String {
        Core::delivery_key_of(ev.actor.platform, &ev.delivery_id)
    }

    /// [`Core::delivery_key`] from the platform and the delivery id.
    pub fn delivery_key_of(platform: crate::core::event::Platform, delivery_id: &str) -> String {
        format!("{}:{delivery_id}", platform.as_str())
    }

    /// The request `ev`'s delivery created, when this process saw it create one.
    pub fn request_of_delivery(&self, ev: &InboundEvent) -> Option<String> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.request(&Core::delivery_key(ev))
    }

    /// Records the event's delivery id; false when the same delivery was seen before (it is
    /// then ignored). Runs after the adapter's ack (see `adapters::Inbound::submit`).
    pub async fn first_delivery(&self, ev: &InboundEvent) -> anyhow::Result<bool> {
        Ok(self.first_deliveries(&[ev]).await?[0])
    }

    /// Records many delivery ids in one transaction (one commit, one fsync, for a burst of
    /// events); each is true when its delivery was not seen before, also within the batch.
    pub async fn first_deliveries(&self, evs: &[&InboundEvent]) -> anyhow::Result<Vec<bool>> {
        let now = self.clock.now_ms();
        let mut tx = self.store.begin().await?;
        let mut out = Vec::with_capacity(evs.len());
        for ev in evs {
            out.push(tx.first_delivery(&Core::delivery_key(ev), now).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Dedupes, then dispatches one event (for callers that have no ack deadline).
    pub async fn handle(&self, ev: InboundEvent, out: &dyn Responder) {
        match self.first_delivery(&ev).await {
            Ok(true) => self.dispatch(ev, out).await,
            Ok(false) => tracing::info!(delivery = %ev.delivery_id, "duplicate delivery ignored"),
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "delivery dedupe failed");
                let _ = out
                    .respond(Reply::ephemeral(
                        "dualkey could not record this request (its state store failed); nothing was done. Try again in a moment.",
                    ))
                    .await;
            }
        }
    }

    /// Handles one event already deduped by [`Core::first_delivery`]; internal faults are
    /// logged with a reference id and the person is told the reference, never the cause chain.
    #[tracing::instrument(skip_all, fields(platform = ev.actor.platform.as_str(), account = %ev.actor.account, delivery = %ev.delivery_id))]
    pub async fn dispatch(&self, ev: InboundEvent, out: &dyn Responder) {
        if let Err(e) = self.handle_inner(&ev, out).await {
            match e.downcast_ref::<UserError>() {
                Some(u) => {
                    let _ = out.respond(Reply::ephemeral(u.0.clone())).await;
                }
                None => {
                    let reference = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
                    tracing::error!(reference = %reference, error = format!("{e:#}"), "event failed");
                    let _ = out
                        .respond(Reply::ephemeral(format!(
                            "Something went wrong inside dualkey (reference {reference}). Part of it may have been recorded: `approvals` and `status` show what was. The details are in dualkey's log."
                        )))
                        .await;
                }
            }
        }
    }

    async fn handle_inner(&self, ev: &InboundEvent, out: &dyn Responder) -> anyhow::Result<()> {
        let who = self.directory.resolve(&ev.actor);
        match &ev.kind {
            EventKind::Command { text } => {
                self.on_command(ev, &who, CommandInput::Text(text), out)
                    .await
            }
            EventKind::Invoke { command, options } => {
                self.on_command(ev, &who, CommandInput::Options { command, options }, out)
                    .await
            }
            EventKind::Action { action_id } => self.on_action(ev, &who, action_id, out).await,
        }
    }
}
