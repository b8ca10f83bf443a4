//! The dispatcher: takes an acknowledged [`InboundEvent`], dedupes it, parses it with the
//! command's own parser, authorizes the canonical operator (fail closed) and either answers a
//! read-only command, records an approval request, records a vote, or queues an operation.
//! Every state change commits together with its audit event; chat updates go through the
//! outbox afterwards.
//!
//! The core reaches the world through narrow ports: the [`Store`] trait, a [`Clock`], the
//! [`Facts`] port (plans and read-only reports, implemented outside the core by the runbook),
//! and a [`Responder`] per event (implemented by the adapter that received it). It imports
//! nothing from the runbook, the worker, the outbox or the adapters.

use std::sync::Arc;

use anyhow::Context as _;
use serde_json::json;
use tokio::sync::Notify;

use crate::config::{Role, Route, Settings};
use crate::core::approval::RequestState::{Approved, Cancelled, Denied, Expired, Pending};
use crate::core::approval::{self, Decision, RequestFacts, RequestState, VoteRefusal};
use crate::core::audit::{AuditRecord, NewAudit, Verifier};
use crate::core::command::{self, ParseCtx, RequestId};
use crate::core::event::{Actor, ChannelRef, EventKind, InboundEvent, MessageRef};
use crate::core::human;
use crate::core::identity::{Directory, Operator};
use crate::core::meter;
use crate::core::operation::{OperationKind, OperationState, Plan};
use crate::core::ports::{Clock, Facts, ReportRequest, Responder};
use crate::core::ports::{NewOutbox, OperationRow, RequestRow, Store, StoreResult, Tx};
use crate::core::reply::{
    Button, ButtonStyle, Card, CardState, Confirm, Mention, Reply, Severity, Step, StepState, Votes,
};

/// Shared state of the core: config, identities, store, clock, and wake-ups for the worker and
/// the outbox.
pub struct Core {
    /// Validated settings.
    pub settings: Arc<Settings>,
    /// Account -> operator.
    pub directory: Directory,
    /// State store.
    pub store: Arc<dyn Store>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Woken when an operation is queued.
    pub worker_wake: Arc<Notify>,
    /// Woken when a message is put in the outbox.
    pub outbox_wake: Arc<Notify>,
    /// Operations this process is running, including their final card update.
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Plans and reports from the target's facts.
    pub facts: Arc<dyn Facts>,
    /// This core's name among the store's lease holders (`PID-RANDOM`, unique per core, so two
    /// cores in one process are two holders). Every lease it takes is held as
    /// [`Core::lease_holder`], and a graceful stop releases them all at once.
    pub instance: String,
    /// Deliveries this core saw lately, each with the request it created once there is one,
    /// so a repeated delivery can be told apart and answered with its request id.
    pub recent: std::sync::Mutex<crate::core::event::RecentDeliveries>,
}

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

/// One parsed, authorized command being run: what a command file's `run` gets.
pub struct Invocation<'a> {
    /// The core.
    pub core: &'a Core,
    /// The event.
    pub ev: &'a InboundEvent,
    /// Who sent it.
    pub who: &'a Operator,
    /// How to answer the sender.
    pub out: &'a dyn Responder,
}

impl Invocation<'_> {
    /// Answers the sender with text only they see.
    pub async fn reply(&self, text: String) -> anyhow::Result<()> {
        self.out.respond(Reply::ephemeral(text)).await
    }

    /// Answers the sender with a report from the facts port.
    pub async fn report(&self, what: ReportRequest) -> anyhow::Result<()> {
        let r = self.core.facts.report(self.core, what).await?;
        self.out.respond(r).await
    }

    /// Plans an operation and records its request (or queues it when it needs no approval).
    pub async fn request(&self, kind: OperationKind, env: &str) -> anyhow::Result<()> {
        self.core
            .request_operation(self.ev, self.who, kind, env, self.out)
            .await
    }
}

/// A command as it arrived: a text line (Slack, the shell) or a subcommand with named options
/// (Discord).
#[derive(Clone, Copy)]
enum CommandInput<'a> {
    /// Everything after the slash command.
    Text(&'a str),
    /// Subcommand name and named option values.
    Options {
        command: &'a str,
        options: &'a [(String, String)],
    },
}

impl CommandInput<'_> {
    /// The command's name in the command table (its first word), `unknown` when it names none:
    /// a bounded label for `dualkey_commands_total`.
    fn command_name(&self) -> &'static str {
        let first = match self {
            CommandInput::Text(text) => text.split_ascii_whitespace().next(),
            CommandInput::Options { command, .. } => command.split_ascii_whitespace().next(),
        };
        first.and_then(command::spec).map_or("unknown", |s| s.name)
    }

    /// What the audit trail records of the command: `{"text": ...}`, or
    /// `{"command": ..., "options": {...}}` (each value cut at 200 characters).
    fn audit_json(&self) -> serde_json::Value {
        let cut = |s: &str| s.chars().take(200).collect::<String>();
        match self {
            CommandInput::Text(text) => json!({ "text": cut(text) }),
            CommandInput::Options { command, options } => {
                let mut named = serde_json::Map::new();
                for (k, v) in options.iter().take(25) {
                    named.entry(cut(k)).or_insert_with(|| json!(cut(v)));
                }
                json!({ "command": cut(command), "options": named })
            }
        }
    }
}

/// A user-facing refusal or mistake (shown as is), as opposed to an internal fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

impl Core {
    /// A core over `settings`, `store`, `clock` and `facts`, with fresh wake-ups.
    pub fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        facts: Arc<dyn Facts>,
    ) -> Core {
        meter::install();
        Core {
            directory: Directory::from_settings(&settings),
            settings: Arc::new(settings),
            store,
            clock,
            worker_wake: Arc::new(Notify::new()),
            outbox_wake: Arc::new(Notify::new()),
            in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            facts,
            instance: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
            recent: std::sync::Mutex::new(Default::default()),
        }
    }

    /// The lease holder name of one of this core's roles (`scheduler`, `outbox`):
    /// `ROLE@INSTANCE`, which `Tx::release_leases(&core.instance)` releases.
    pub fn lease_holder(&self, role: &str) -> String {
        format!("{role}@{}", self.instance)
    }

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

    /// Appends an audit event inside `tx` and queues it for the audit channels of its
    /// environment (`audit_channel`, per platform, overridable per environment). Every 100th
    /// event also queues the chain head, so `audit verify --head` can be checked against chat.
    pub async fn audit_tx(&self, tx: &mut Box<dyn Tx>, ev: NewAudit) -> StoreResult<AuditRecord> {
        let now = self.clock.now_ms();
        let rec = tx.append_audit(&ev, now).await?;
        let channels =
            crate::core::routing::route(&self.settings, Route::Audit, rec.env.as_deref());
        if channels.is_empty() {
            return Ok(rec);
        }
        let mut lines = vec![(Some(rec.seq), Reply::public(rec.render()))];
        if rec.seq % 100 == 0 {
            lines.push((
                None,
                Reply::public(crate::core::audit::head_line(rec.seq, &rec.hash)),
            ));
        }
        for channel in &channels {
            for (seq, line) in &lines {
                tx.enqueue_audit_line(&audit_row(channel, line), *seq, now)
                    .await?;
            }
        }
        Ok(rec)
    }

    /// Appends one audit event in its own transaction.
    pub async fn audit(&self, ev: NewAudit) -> StoreResult<AuditRecord> {
        let mut tx = self.store.begin().await?;
        let rec = self.audit_tx(&mut tx, ev).await?;
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok(rec)
    }

    /// Queues the chain head (`audit head seq=N hash=H`) for every audit channel; posted at
    /// start-up.
    pub async fn post_audit_head(&self) -> anyhow::Result<()> {
        let (seq, hash) = self.store.audit_head().await?;
        let line = Reply::public(crate::core::audit::head_line(seq, &hash));
        let mut tx = self.store.begin().await?;
        for channel in crate::core::routing::route(&self.settings, Route::Audit, None) {
            tx.enqueue_audit_line(&audit_row(&channel, &line), None, self.clock.now_ms())
                .await?;
        }
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok(())
    }

    /// Queues a new message in a channel.
    pub async fn post(&self, channel: &ChannelRef, reply: &Reply) -> anyhow::Result<()> {
        self.enqueue(channel, "post", None, None, reply).await
    }

    /// Posts card `key` (`request:<id>`, `operation:<id>`) to every channel in `channels` that
    /// does not have it yet (duplicates are skipped). Later [`Core::edit_card`] calls update every copy.
    pub async fn post_card(
        &self,
        key: &str,
        channels: &[ChannelRef],
        reply: &Reply,
    ) -> anyhow::Result<()> {
        let now = self.clock.now_ms();
        let payload = serde_json::to_string(reply)?;
        let mut tx = self.store.begin().await?;
        for c in channels {
            if tx.register_card(key, c.platform.as_str(), &c.id).await? {
                tx.enqueue_outbox(
                    &card_row(key, c.platform.as_str(), &c.id, "post", &payload),
                    now,
                )
                .await?;
            }
        }
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok(())
    }

    /// Queues an edit of every copy of card `key`. Returns false when the card was never
    /// posted through [`Core::post_card`] (cards of older versions: see `legacy`).
    /// Edits of one copy collapse at delivery: only the newest is sent.
    pub async fn edit_card(&self, key: &str, reply: &Reply) -> anyhow::Result<bool> {
        let now = self.clock.now_ms();
        let payload = serde_json::to_string(reply)?;
        let mut tx = self.store.begin().await?;
        let copies = tx.card_channels(key).await?;
        for (platform, channel) in &copies {
            tx.enqueue_outbox(&card_row(key, platform, channel, "edit", &payload), now)
                .await?;
        }
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok(!copies.is_empty())
    }

    /// Edits a card: every copy posted through [`Core::post_card`], or else the one message a
    /// version before card keys recorded (`message_json`, a stored [`MessageRef`]).
    async fn edit_card_or_legacy(
        &self,
        key: &str,
        legacy: Option<&str>,
        reply: &Reply,
    ) -> anyhow::Result<()> {
        if self.edit_card(key, reply).await? {
            return Ok(());
        }
        if let Some(message_json) = legacy {
            let msg: MessageRef =
                serde_json::from_str(message_json).context("stored message reference")?;
            self.enqueue(&msg.channel, "edit", Some(msg.id.clone()), None, reply)
                .await?;
        }
        Ok(())
    }

    async fn enqueue(
        &self,
        channel: &ChannelRef,
        op: &str,
        message_id: Option<String>,
        card_key: Option<String>,
        reply: &Reply,
    ) -> anyhow::Result<()> {
        let mut tx = self.store.begin().await?;
        tx.enqueue_outbox(
            &NewOutbox {
                platform: channel.platform.as_str().into(),
                channel: channel.id.clone(),
                op: op.into(),
                message_id,
                payload: serde_json::to_string(reply)?,
                card_key,
            },
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok(())
    }

    /// `origin` (where the command was typed, if known) and then the channels `route` names for
    /// `env` (one per enabled platform), without repeats: where a card or an alert goes.
    pub fn channels_for(
        &self,
        origin: Option<&ChannelRef>,
        route: Route,
        env: &str,
    ) -> Vec<ChannelRef> {
        let mut out: Vec<ChannelRef> = origin.into_iter().cloned().collect();
        for c in crate::core::routing::route(&self.settings, route, Some(env)) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
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

    fn actor_audit(
        &self,
        actor: &Actor,
        who: &Operator,
        env: Option<&str>,
        action: &str,
        details: serde_json::Value,
    ) -> NewAudit {
        NewAudit {
            operator: who.id.clone(),
            account: Some(actor.qualified()),
            env: env.map(str::to_string),
            action: action.into(),
            details,
        }
    }

    /// Handles a command and counts it in `dualkey_commands_total` by name and outcome.
    async fn on_command(
        &self,
        ev: &InboundEvent,
        who: &Operator,
        input: CommandInput<'_>,
        out: &dyn Responder,
    ) -> anyhow::Result<()> {
        let mut tally = (input.command_name(), meter::outcome::ERROR);
        let r = self.run_command(ev, who, input, out, &mut tally).await;
        let outcome = match &r {
            Ok(()) => tally.1,
            Err(e) if e.downcast_ref::<UserError>().is_some() => meter::outcome::DECLINED,
            Err(_) => meter::outcome::ERROR,
        };
        meter::command(tally.0, outcome);
        r
    }

    /// [`Core::on_command`] without the count: `tally` gets the command's name once known and
    /// the outcome of a command that returns `Ok`.
    async fn run_command(
        &self,
        ev: &InboundEvent,
        who: &Operator,
        input: CommandInput<'_>,
        out: &dyn Responder,
        tally: &mut (&'static str, &'static str),
    ) -> anyhow::Result<()> {
        let with = |mut details: serde_json::Value| {
            if let (Some(d), serde_json::Value::Object(input)) =
                (details.as_object_mut(), input.audit_json())
            {
                d.extend(input);
            }
            details
        };
        if who.roles.is_empty() {
            self.audit(self.actor_audit(
                &ev.actor,
                who,
                None,
                "command.refused",
                with(json!({"reason": "not an operator"})),
            ))
            .await?;
            out.respond(Reply::ephemeral(format!(
                "You are not allowed to use dualkey. Ask an admin to add your account ({}) to [[operators]] in the config.",
                ev.actor.qualified()
            )))
            .await?;
            tally.1 = meter::outcome::REFUSED;
            return Ok(());
        }
        let parsed = match input {
            CommandInput::Text(text) => command::parse(text, &self.parse_ctx()),
            CommandInput::Options { command, options } => {
                command::parse_options(command, options, &self.parse_ctx())
            }
        };
        let (spec, cmd) = match parsed {
            Ok(p) => p,
            Err(e) => {
                *tally = (
                    e.command.map_or(tally.0, |c| c.name),
                    meter::outcome::REJECTED,
                );
                self.audit(self.actor_audit(
                    &ev.actor,
                    who,
                    None,
                    "command.rejected",
                    with(json!({"error": e.message})),
                ))
                .await?;
                out.respond(Reply::ephemeral(e.render(self.slash())))
                    .await?;
                return Ok(());
            }
        };
        // Asking for any operation needs the operator role, whatever the command's own role.
        let needs = if cmd.operation().is_some() {
            Role::Operator
        } else {
            spec.role
        };
        tally.0 = spec.name;
        if !who.can(needs) {
            tally.1 = meter::outcome::REFUSED;
            self.audit(self.actor_audit(
                &ev.actor,
                who,
                None,
                "command.refused",
                with(json!({"reason": format!("needs the {needs:?} role")})),
            ))
            .await?;
            out.respond(Reply::ephemeral(format!(
                "`{}` needs the {} role, which you do not have.",
                spec.name,
                format!("{needs:?}").to_lowercase()
            )))
            .await?;
            return Ok(());
        }
        self.audit(self.actor_audit(&ev.actor, who, None, "command", with(json!({}))))
            .await?;
        tally.1 = meter::outcome::OK;
        cmd.run(&Invocation {
            core: self,
            ev,
            who,
            out,
        })
        .await
    }

    /// The audit event of a refused request.
    fn refusal(
        &self,
        ev: &InboundEvent,
        who: &Operator,
        env: &str,
        kind: &OperationKind,
        reason: &str,
    ) -> NewAudit {
        self.actor_audit(
            &ev.actor,
            who,
            Some(env),
            "request.refused",
            json!({"kind": kind.name(), "reason": reason}),
        )
    }

    /// Plans an operation and either records an approval request (posting its card) or, for
    /// kinds that need none, queues it directly. Refuses when the environment is busy.
    pub async fn request_operation(
        &self,
        ev: &InboundEvent,
        who: &Operator,
        kind: OperationKind,
        env: &str,
        out: &dyn Responder,
    ) -> anyhow::Result<()> {
        let plan = match self.facts.plan(self, &kind, env).await {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("Cannot plan {} in {env}: {e}", kind.name());
                self.audit(self.refusal(ev, who, env, &kind, &msg)).await?;
                return Err(UserError(msg).into());
            }
        };
        let requester = who.id.clone().context("operators always have an id")?;
        let now = self.clock.now_ms();
        let channel_json = serde_json::to_string(&ev.channel)?;
        let kind_json = serde_json::to_string(&kind)?;
        let plan_json = serde_json::to_string(&plan)?;
        let mut tx = self.store.begin().await?;
        if let Some(busy) = tx.active_operation_for_env(env).await? {
            let msg = format!("{env} is busy: operation {} ({}, {}) holds it. Wait for it to finish, then ask again.", busy.id, kind_name(&busy.kind_json), describe_state(&busy));
            self.audit_tx(&mut tx, self.refusal(ev, who, env, &kind, &msg))
                .await?;
            tx.commit().await?;
            return Err(UserError(msg).into());
        }
        let deploy_needs_approval = self
            .settings
            .environments
            .get(env)
            .map(|e| e.deploy_needs_approval)
            .unwrap_or(true);
        let ttl = self.settings.approvals.ttl.0.as_millis() as i64;
        let row = RequestRow {
            id: RequestId::generate().0,
            env: env.into(),
            kind_json,
            plan_json,
            fingerprint: plan.fingerprint.clone(),
            requester,
            requester_account: ev.actor.qualified(),
            state: RequestState::Pending,
            required_votes: self.settings.approvals.required as i64,
            created_at: now,
            expires_at: now + ttl,
            decided_at: None,
            decided_by: None,
            channel_json,
            message_json: None,
        };
        if kind.needs_approval(deploy_needs_approval) {
            let id = row.id.clone();
            tx.insert_request(&row).await?;
            self.audit_tx(
                &mut tx,
                self.actor_audit(&ev.actor, who, Some(env), "request.created", json!({"request": id, "kind": kind.name(), "plan": plan.summary, "steps": plan.steps.len(), "warnings": plan.warnings, "fingerprint": plan.short_fingerprint(), "expires_at": human::time(row.expires_at)})),
            )
            .await?;
            tx.commit().await?;
            self.recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_request(&Core::delivery_key(ev), &id);
            self.outbox_wake.notify_one();
            let card = self.request_card(&id).await?;
            let channels = self.channels_for(Some(&ev.channel), Route::Approvals, env);
            self.post_card(&format!("request:{id}"), &channels, &card)
                .await?;
            // The requester hears back even where the card cannot be posted (a channel the
            // bot was not invited to).
            out.respond(Reply::ephemeral(format!(
                "Request {id} recorded: {}. It needs {} approval(s) from someone other than you within {}; the card with the buttons goes to this channel{}.",
                plan.summary,
                row.required_votes,
                crate::config::format_duration(self.settings.approvals.ttl.0),
                if channels.len() > 1 {
                    " and the approvals channel"
                } else {
                    ""
                }
            )))
            .await?;
        } else {
            let op = OperationRow::queued(&row, false, now);
            tx.insert_operation(&op).await?;
            self.audit_tx(&mut tx, self.actor_audit(&ev.actor, who, Some(env), "operation.queued", json!({"operation": op.id, "kind": kind.name(), "plan": plan.summary, "fingerprint": plan.short_fingerprint()}))).await?;
            tx.commit().await?;
            self.outbox_wake.notify_one();
            let card = self.operation_card(&op.id).await?;
            self.post_card(
                &format!("operation:{}", op.id),
                std::slice::from_ref(&ev.channel),
                &card,
            )
            .await?;
            out.respond(Reply::ephemeral(format!(
                "Operation {} queued: {} (no approval needed).",
                op.id, plan.summary
            )))
            .await?;
            self.worker_wake.notify_one();
        }
        Ok(())
    }

    async fn on_action(
        &self,
        ev: &InboundEvent,
        who: &Operator,
        action_id: &str,
        out: &dyn Responder,
    ) -> anyhow::Result<()> {
        // The monitoring window's buttons: any operator may click them.
        if let Some((verb @ ("monitor-ok" | "monitor-rollback"), id)) = action_id.split_once(':') {
            if !who.can(Role::Operator) {
                self.audit(self.actor_audit(
                    &ev.actor,
                    who,
                    None,
                    "action.refused",
                    json!({"action": verb, "reason": "needs the operator role"}),
                ))
                .await?;
                return Err(UserError(format!(
                    "`{verb}` needs the operator role, which you do not have."
                ))
                .into());
            }
            let rollback = verb == "monitor-rollback";
            return command::monitor::click(self, ev, who, rollback, id, out).await;
        }
        let parsed = action_id.split_once(':').and_then(|(verb, id)| {
            let d = match verb {
                "approve" => Decision::Approve,
                "deny" => Decision::Deny,
                _ => return None,
            };
            RequestId::parse(id).ok().map(|r| (d, r))
        });
        let Some((decision, request)) = parsed else {
            let shown: String = action_id.chars().take(80).collect();
            self.audit(self.actor_audit(
                &ev.actor,
                who,
                None,
                "action.rejected",
                json!({"action": shown}),
            ))
            .await?;
            return Err(UserError(format!("Unknown button `{}`.", shown.escape_default())).into());
        };
        self.vote(ev, who, &request.0, decision, out).await
    }

    /// Records a vote: one locked read, the rules, one conditional write and its audit event,
    /// all in one transaction. Approval queues the operation in the same transaction.
    #[tracing::instrument(skip_all, fields(request = %request_id, decision = decision.as_str()))]
    pub async fn vote(
        &self,
        ev: &InboundEvent,
        who: &Operator,
        request_id: &str,
        decision: Decision,
        out: &dyn Responder,
    ) -> anyhow::Result<()> {
        let now = self.clock.now_ms();
        let mut tx = self.store.begin().await?;
        let req = tx.lock_request(request_id).await?;
        let refusal = match &req {
            None => Some(VoteRefusal::Unknown(request_id.into())),
            Some(r) => {
                let facts = RequestFacts {
                    state: r.state,
                    requester: &r.requester,
                    expires_at_ms: r.expires_at,
                };
                approval::judge_vote(&facts, who, now).err()
            }
        };
        let env = req.as_ref().map(|r| r.env.clone());
        if let Some(refusal) = refusal {
            self.audit_tx(&mut tx, self.actor_audit(&ev.actor, who, env.as_deref(), "vote.refused", json!({"request": request_id, "decision": decision.as_str(), "reason": refusal.to_string()}))).await?;
            tx.commit().await?;
            meter::vote("refused");
            self.outbox_wake.notify_one();
            return Err(UserError(format!("Vote not counted: {refusal}.")).into());
        }
        let req = req.expect("checked above");
        let voter = who.id.clone().expect("approvers have ids");
        if tx.has_voted(request_id, &voter).await? {
            // A second click by the same approver is a no-op.
            tx.commit().await?;
            meter::vote("repeated");
            out.respond(Reply::ephemeral(format!(
                "You already voted on {request_id}; nothing changed."
            )))
            .await?;
            return Ok(());
        }
        let vote = crate::core::ports::VoteRow {
            request_id: request_id.into(),
            voter: voter.clone(),
            account: ev.actor.qualified(),
            decision: decision.as_str().into(),
            at: now,
        };
        if !tx.insert_vote_if_open(&vote, now).await? {
            let reason = "the request is no longer open";
            self.audit_tx(
                &mut tx,
                self.actor_audit(
                    &ev.actor,
                    who,
                    Some(&req.env),
                    "vote.refused",
                    json!({"request": request_id, "decision": decision.as_str(), "reason": reason}),
                ),
            )
            .await?;
            tx.commit().await?;
            meter::vote("refused");
            return Err(UserError(format!("Vote not counted: {reason}.")).into());
        }
        self.audit_tx(
            &mut tx,
            self.actor_audit(
                &ev.actor,
                who,
                Some(&req.env),
                &format!("vote.{}", decision.as_str()),
                json!({"request": request_id}),
            ),
        )
        .await?;
        let mut queued = None;
        let outcome = match decision {
            Decision::Deny => {
                tx.transition_request(request_id, Pending, Denied, Some(&voter), now)
                    .await?;
                self.audit_tx(
                    &mut tx,
                    NewAudit::system(
                        "request.denied",
                        Some(&req.env),
                        json!({"request": request_id, "by": voter}),
                    ),
                )
                .await?;
                format!("Denied {request_id}; it will not run.")
            }
            Decision::Approve => {
                let approvals = tx.count_votes(request_id, "approve").await?;
                if approval::is_complete(approvals, req.required_votes)
                    && tx
                        .transition_request(request_id, Pending, Approved, Some(&voter), now)
                        .await?
                {
                    let op = OperationRow::queued(&req, true, now);
                    tx.insert_operation(&op).await?;
                    self.audit_tx(
                        &mut tx,
                        NewAudit::system(
                            "request.approved",
                            Some(&req.env),
                            json!({"request": request_id, "operation": op.id, "votes": approvals}),
                        ),
                    )
                    .await?;
                    let msg = format!("Approved {request_id}: operation {} is queued.", op.id);
                    queued = Some(op.id);
                    msg
                } else {
                    format!(
                        "Vote recorded on {request_id} ({approvals}/{} approvals).",
                        req.required_votes
                    )
                }
            }
        };
        tx.commit().await?;
        meter::vote(decision.as_str());
        self.outbox_wake.notify_one();
        if queued.is_some() {
            let kind = serde_json::from_str::<OperationKind>(&req.kind_json);
            meter::approval_wait(kind.map_or("unknown", |k| k.name()), now - req.created_at);
            self.worker_wake.notify_one();
        }
        self.refresh_request_card(request_id).await?;
        out.respond(Reply::ephemeral(outcome)).await?;
        Ok(())
    }

    /// Withdraws a pending request (`cancel REQUEST`).
    pub async fn cancel(
        &self,
        ev: &InboundEvent,
        who: &Operator,
        request: &RequestId,
        out: &dyn Responder,
    ) -> anyhow::Result<()> {
        let now = self.clock.now_ms();
        let mut tx = self.store.begin().await?;
        let Some(req) = tx.lock_request(&request.0).await? else {
            return Err(UserError(format!(
                "There is no request `{}`; `approvals` lists the open ones.",
                request.0
            ))
            .into());
        };
        let facts = RequestFacts {
            state: req.state,
            requester: &req.requester,
            expires_at_ms: req.expires_at,
        };
        if let Err(refusal) = approval::judge_cancel(&facts, who, now) {
            self.audit_tx(
                &mut tx,
                self.actor_audit(
                    &ev.actor,
                    who,
                    Some(&req.env),
                    "cancel.refused",
                    json!({"request": req.id, "reason": refusal.to_string()}),
                ),
            )
            .await?;
            tx.commit().await?;
            return Err(UserError(format!("Not cancelled: {refusal}.")).into());
        }
        tx.transition_request(&req.id, Pending, Cancelled, who.id.as_deref(), now)
            .await?;
        self.audit_tx(
            &mut tx,
            self.actor_audit(
                &ev.actor,
                who,
                Some(&req.env),
                "request.cancelled",
                json!({"request": req.id}),
            ),
        )
        .await?;
        tx.commit().await?;
        self.outbox_wake.notify_one();
        self.refresh_request_card(&req.id).await?;
        out.respond(Reply::ephemeral(format!("Cancelled {}.", req.id)))
            .await?;
        Ok(())
    }

    /// Marks pending requests whose time is up as expired (each with its audit event) and
    /// updates their cards. Returns how many expired.
    pub async fn expire_requests(&self) -> anyhow::Result<usize> {
        let now = self.clock.now_ms();
        let mut tx = self.store.begin().await?;
        let due = tx.due_expired_requests(now).await?;
        for r in &due {
            tx.transition_request(&r.id, Pending, Expired, None, now)
                .await?;
            self.audit_tx(
                &mut tx,
                NewAudit::system("request.expired", Some(&r.env), json!({"request": r.id})),
            )
            .await?;
        }
        tx.commit().await?;
        for r in &due {
            self.refresh_request_card(&r.id).await?;
        }
        Ok(due.len())
    }

    /// The current rendering of card `key` (`request:<id>`, `operation:<id>`), from the store;
    /// `None` for an unknown key. The outbox renders cards again when it delivers them, so a
    /// copy never shows an older state than the store's, whatever order edits were queued in.
    pub async fn render_card(&self, key: &str) -> anyhow::Result<Option<Reply>> {
        match key.split_once(':') {
            Some(("request", id)) if self.store.get_request(id).await?.is_some() => {
                Ok(Some(self.request_card(id).await?))
            }
            Some(("operation", id)) if self.store.get_operation(id).await?.is_some() => {
                Ok(Some(self.operation_card(id).await?))
            }
            _ => Ok(None),
        }
    }

    /// Re-renders a request's card and queues the edit of every copy.
    pub async fn refresh_request_card(&self, request_id: &str) -> anyhow::Result<()> {
        if let Some(req) = self.store.get_request(request_id).await? {
            let card = self.request_card(request_id).await?;
            self.edit_card_or_legacy(
                &format!("request:{request_id}"),
                req.message_json.as_deref(),
                &card,
            )
            .await?;
        }
        Ok(())
    }

    /// Re-renders the card that shows an operation (its request's card, or its own).
    pub async fn refresh_operation_card(&self, op: &OperationRow) -> anyhow::Result<()> {
        self.edit_operation_card(op, None).await
    }

    /// Shows a progress line (bytes written, elapsed) on the card of a running operation.
    pub async fn show_progress(&self, op: &OperationRow, line: &str) -> anyhow::Result<()> {
        self.edit_operation_card(op, Some(line)).await
    }

    /// Re-renders the card that shows `op` (its request's card, or its own), with an optional
    /// progress line, and queues the edit of every copy. Progress ticks collapse in the outbox:
    /// behind a rate limit only the newest reaches chat.
    async fn edit_operation_card(
        &self,
        op: &OperationRow,
        progress: Option<&str>,
    ) -> anyhow::Result<()> {
        let (key, legacy, mut card) = match &op.request_id {
            Some(r) => {
                let req = self
                    .store
                    .get_request(r)
                    .await?
                    .context("request vanished")?;
                (
                    format!("request:{r}"),
                    req.message_json,
                    self.request_card(r).await?,
                )
            }
            None => {
                let o = self
                    .store
                    .get_operation(&op.id)
                    .await?
                    .context("operation vanished")?;
                (
                    format!("operation:{}", op.id),
                    o.message_json,
                    self.operation_card(&op.id).await?,
                )
            }
        };
        if let (Some(line), crate::core::reply::Body::Card(c)) = (progress, &mut card.body) {
            c.progress = Some(line.to_string());
        }
        self.edit_card_or_legacy(&key, legacy.as_deref(), &card)
            .await
    }

    /// The person an operator id names, with their platform accounts.
    fn mention(&self, role: &str, operator: &str) -> Mention {
        Mention {
            role: role.into(),
            operator: operator.into(),
            accounts: self.directory.accounts(operator),
        }
    }

    /// The approval card of a request: who asked, environment, plan, warnings, fingerprint,
    /// expiry, votes, the operation's progress, and the buttons while it is open.
    pub async fn request_card(&self, request_id: &str) -> anyhow::Result<Reply> {
        let req = self
            .store
            .get_request(request_id)
            .await?
            .context("request vanished")?;
        let plan: Plan = serde_json::from_str(&req.plan_json)?;
        let votes = self.store.votes(request_id).await?;
        let op = self.store.operation_for_request(request_id).await?;
        let now = self.clock.now_ms();
        let state = req.state;
        let approvals = votes.iter().filter(|v| v.decision == "approve").count();
        let open = state == RequestState::Pending && now < req.expires_at;
        let mut fields = vec![
            (
                "Requested by".to_string(),
                format!("{} ({})", req.requester, req.requester_account),
            ),
            ("Environment".to_string(), req.env.clone()),
            (
                "Fingerprint".to_string(),
                plan.short_fingerprint().to_string(),
            ),
        ];
        let (status, card_state) = match (&op, state) {
            (Some(o), _) => (describe_state(o), op_card_state(o)),
            (None, RequestState::Pending) if now >= req.expires_at => {
                ("expired".to_string(), CardState::Expired)
            }
            (None, RequestState::Pending) => (
                format!(
                    "waiting for approval: {approvals}/{} votes, expires {} (in {})",
                    req.required_votes,
                    human::time(req.expires_at),
                    human::span(req.expires_at - now)
                ),
                CardState::Pending,
            ),
            (None, s) => (
                s.as_str().to_string(),
                match s {
                    RequestState::Pending => CardState::Pending,
                    RequestState::Approved => CardState::Approved,
                    RequestState::Denied => CardState::Denied,
                    RequestState::Cancelled => CardState::Cancelled,
                    RequestState::Expired => CardState::Expired,
                },
            ),
        };
        fields.push(("Status".into(), status));
        let cast: Vec<(String, String)> = votes
            .iter()
            .map(|v| {
                let done = match v.decision.as_str() {
                    "approve" => "approved",
                    "deny" => "denied",
                    other => other,
                };
                (v.voter.clone(), done.to_string())
            })
            .collect();
        if !cast.is_empty() {
            let v: Vec<String> = cast.iter().map(|(w, d)| format!("{w} {d}")).collect();
            fields.push(("Votes".into(), v.join(", ")));
        }
        let mut card = Card::new(
            format!("Request {}: {}", req.id, plan.summary),
            card_state.style(),
        );
        card.state = Some(card_state);
        card.fields = fields;
        card.votes = Some(Votes {
            approvals: approvals as u32,
            required: req.required_votes.max(0) as u32,
            cast,
        });
        card.expires_at_ms = open.then_some(req.expires_at);
        card.mentions = vec![self.mention("requester", &req.requester)];
        self.fill_plan(&mut card, &plan, op.as_ref()).await?;
        if open {
            let destructive = plan.warnings.iter().any(|w| w.severity == Severity::Danger)
                || plan.steps.iter().any(|s| {
                    !matches!(
                        s.action,
                        crate::core::operation::StepAction::Backup { .. }
                            | crate::core::operation::StepAction::AppStart
                    )
                });
            let mut approve = Button::new(
                format!("approve:{}", req.id),
                "Approve",
                ButtonStyle::Primary,
            );
            if destructive {
                approve = approve.with_confirm(Confirm {
                    title: "Approve and run?".into(),
                    text: format!(
                        "{}: {} step(s) run as soon as the vote counts.{}",
                        plan.summary,
                        plan.steps.len(),
                        match plan
                            .warnings
                            .iter()
                            .find(|w| w.severity == Severity::Danger)
                        {
                            Some(w) => format!(" {}", w.text),
                            None => String::new(),
                        }
                    ),
                    confirm: "Approve".into(),
                    deny: "Back".into(),
                });
            }
            card.buttons = vec![
                approve,
                Button::new(format!("deny:{}", req.id), "Deny", ButtonStyle::Danger),
            ];
        }
        Ok(Reply::card(card))
    }

    /// The card of an operation that needed no approval.
    pub async fn operation_card(&self, op_id: &str) -> anyhow::Result<Reply> {
        let op = self
            .store
            .get_operation(op_id)
            .await?
            .context("operation vanished")?;
        let plan: Plan = serde_json::from_str(&op.plan_json)?;
        let st = op_card_state(&op);
        let mut card = Card::new(format!("Operation {}: {}", op.id, plan.summary), st.style());
        card.state = Some(st);
        card.fields = vec![
            ("Requested by".into(), op.requester.clone()),
            ("Environment".into(), op.env.clone()),
            ("Status".into(), describe_state(&op)),
        ];
        card.mentions = vec![self.mention("requester", &op.requester)];
        self.fill_plan(&mut card, &plan, Some(&op)).await?;
        Ok(Reply::card(card))
    }

    /// Puts a plan's steps (with the states the worker recorded), its warnings (most serious
    /// first) and the operation's error on a card.
    async fn fill_plan(
        &self,
        card: &mut Card,
        plan: &Plan,
        op: Option<&OperationRow>,
    ) -> anyhow::Result<()> {
        card.steps = plan
            .steps
            .iter()
            .map(|s| Step {
                name: s.name.clone(),
                detail: s.detail.clone(),
                state: StepState::Planned,
                recorded: None,
            })
            .collect();
        let mut warnings = plan.warnings.clone();
        warnings.sort_by_key(|w| std::cmp::Reverse(w.severity));
        card.warnings = warnings;
        if let Some(o) = op {
            for s in self.store.steps(&o.id).await? {
                let out = s.output.clone().unwrap_or_default();
                let idx = s.idx.max(0) as usize;
                match card.steps.get_mut(idx) {
                    Some(step) => {
                        step.state = StepState::parse(&s.state);
                        step.recorded = Some((s.state.clone(), out));
                    }
                    None => card.lines.push(format!(
                        "step {} {}: {}{}",
                        idx + 1,
                        s.name,
                        s.state,
                        if out.is_empty() {
                            String::new()
                        } else {
                            format!(" ({out})")
                        }
                    )),
                }
            }
            card.error = o.error.clone();
        }
        Ok(())
    }
}

/// An audit line (or chain head line) posted to an audit channel.
fn audit_row(channel: &ChannelRef, line: &Reply) -> NewOutbox {
    NewOutbox {
        platform: channel.platform.as_str().into(),
        channel: channel.id.clone(),
        op: "post".into(),
        message_id: None,
        payload: serde_json::to_string(line).expect("reply serializes"),
        card_key: None,
    }
}

/// An outbox row that posts or edits (`op`) card `key` in one channel.
fn card_row(key: &str, platform: &str, channel: &str, op: &str, payload: &str) -> NewOutbox {
    NewOutbox {
        platform: platform.into(),
        channel: channel.into(),
        op: op.into(),
        message_id: None,
        payload: payload.into(),
        card_key: Some(key.into()),
    }
}

/// The operation kind's short name from its stored JSON.
pub fn kind_name(kind_json: &str) -> String {
    serde_json::from_str::<OperationKind>(kind_json)
        .map(|k| k.name().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// A human description of an operation's state (`running step 2/5`).
pub fn describe_state(o: &OperationRow) -> String {
    let steps = serde_json::from_str::<Plan>(&o.plan_json)
        .map(|p| p.steps.len())
        .unwrap_or(0);
    match (o.state.as_str(), o.current_step) {
        ("running", Some(k)) => format!("operation {} running step {}/{steps}", o.id, k + 1),
        ("running", None) => format!("operation {} starting", o.id),
        ("interrupted", Some(k)) => {
            format!("operation {} interrupted in step {}/{steps}", o.id, k + 1)
        }
        (s, _) => format!("operation {} {s}", o.id),
    }
}

/// The card state of an operation: each stored state has its own label.
fn op_card_state(o: &OperationRow) -> CardState {
    match Some(o.state) {
        Some(OperationState::Queued) => CardState::Queued,
        Some(OperationState::Running) => CardState::Running,
        Some(OperationState::Succeeded) => CardState::Succeeded,
        Some(OperationState::Failed) | None => CardState::Failed,
        Some(OperationState::Cancelled) => CardState::Cancelled,
        Some(OperationState::Interrupted) => CardState::Interrupted,
    }
}

/// Walks the whole audit chain; `Ok(Ok(n))` when intact, `Ok(Err(first broken link))` when not.
pub async fn verify_chain(
    store: &dyn Store,
) -> StoreResult<Result<i64, crate::core::audit::BrokenLink>> {
    // Read the head first and verify up to it: events appended while we read (the bot keeps
    // working) are not mistaken for a broken chain.
    let (head_seq, head_hash) = store.audit_head().await?;
    let mut v = Verifier::default();
    let mut after = 0;
    'pages: loop {
        let page = store.audit_page(after, 1000).await?;
        if page.is_empty() {
            break;
        }
        for r in &page {
            if r.seq > head_seq {
                break 'pages;
            }
            if let Err(b) = v.check(r) {
                return Ok(Err(b));
            }
        }
        after = page.last().map(|r| r.seq).unwrap_or(after);
    }
    Ok(v.finish(head_seq, &head_hash).map(|_| v.checked))
}
