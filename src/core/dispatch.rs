//! The dispatcher: takes an acknowledged [`InboundEvent`], dedupes it, parses it with the
//! command's own parser, authorizes the canonical operator (fail closed) and either answers a
//! read-only command, records an approval request, records a vote, or queues an operation.
//! Every state change commits together with its audit event; chat updates go through the
//! outbox afterwards.

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use serde_json::json;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::{Role, Settings};
use crate::core::approval::{self, Decision, RequestFacts, RequestState, VoteRefusal};
use crate::core::audit::{AuditRecord, NewAudit, Verifier};
use crate::core::command::{self, app::AppAction, Command, ParseCtx, RequestId};
use crate::core::event::{Actor, ChannelRef, EventKind, InboundEvent, MessageRef, Platform};
use crate::core::human;
use crate::core::identity::{Directory, Operator};
use crate::core::operation::{OperationKind, OperationState, Plan};
use crate::core::reply::{Button, Card, CardState, Reply};
use crate::runbook;
use crate::store::{NewOutbox, OperationRow, RequestRow, Store, StoreResult, Tx};

/// How an adapter answers the event being handled (the "reply" of the backend contract).
/// Returns where the message was posted, when the platform lets it be edited later.
#[async_trait]
pub trait Responder: Send + Sync {
    /// Sends a reply to the person or channel the event came from.
    async fn respond(&self, reply: Reply) -> anyhow::Result<Option<MessageRef>>;
}

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
}

/// A user-facing refusal or mistake (shown as is), as opposed to an internal fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

impl Core {
    /// Names a parser may check against.
    pub fn parse_ctx(&self) -> ParseCtx {
        ParseCtx {
            envs: self.settings.environments.keys().cloned().collect(),
            default_env: self.settings.default_env().to_string(),
            migrations_dirs: self
                .settings
                .environments
                .iter()
                .map(|(k, e)| (k.clone(), e.migrations_dir.clone()))
                .collect(),
        }
    }

    /// The slash command as users type it.
    pub fn slash(&self) -> &str {
        &self.settings.slack.command
    }

    /// Appends an audit event inside `tx` and queues it for every enabled audit channel.
    pub async fn audit_tx(&self, tx: &mut Box<dyn Tx>, ev: NewAudit) -> StoreResult<AuditRecord> {
        let now = self.clock.now_ms();
        let rec = tx.append_audit(&ev, now).await?;
        let line = serde_json::to_string(&Reply::public(rec.render())).expect("reply serializes");
        for (platform, enabled, channel) in [
            (
                Platform::Slack,
                self.settings.slack.enabled,
                &self.settings.slack.audit_channel,
            ),
            (
                Platform::Discord,
                self.settings.discord.enabled,
                &self.settings.discord.audit_channel,
            ),
        ] {
            if enabled && !channel.is_empty() {
                tx.enqueue_outbox(
                    &NewOutbox {
                        platform: platform.as_str().into(),
                        channel: channel.clone(),
                        op: "post".into(),
                        message_id: None,
                        payload: line.clone(),
                    },
                    now,
                )
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

    /// Queues an edit of a posted message (`message_json` is a stored [`MessageRef`]).
    pub async fn edit_message(&self, message_json: &str, reply: &Reply) -> anyhow::Result<()> {
        let msg: MessageRef =
            serde_json::from_str(message_json).context("stored message reference")?;
        self.enqueue(&msg.channel, "edit", Some(msg.id.clone()), reply)
            .await
    }

    /// Queues a new message in a channel.
    pub async fn post(&self, channel: &ChannelRef, reply: &Reply) -> anyhow::Result<()> {
        self.enqueue(channel, "post", None, reply).await
    }

    async fn enqueue(
        &self,
        channel: &ChannelRef,
        op: &str,
        message_id: Option<String>,
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
            },
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok(())
    }

    /// Handles one event; internal faults are logged with a reference id and the person is
    /// told the reference, never the cause chain.
    #[tracing::instrument(skip_all, fields(platform = ev.actor.platform.as_str(), account = %ev.actor.account, delivery = %ev.delivery_id))]
    pub async fn handle(&self, ev: InboundEvent, out: &dyn Responder) {
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
                            "Something went wrong inside dualkey (reference {reference}); nothing was approved or run by this message. The details are in dualkey's log."
                        )))
                        .await;
                }
            }
        }
    }

    async fn handle_inner(&self, ev: &InboundEvent, out: &dyn Responder) -> anyhow::Result<()> {
        let now = self.clock.now_ms();
        let mut tx = self.store.begin().await?;
        let first = tx
            .first_delivery(
                &format!("{}:{}", ev.actor.platform.as_str(), ev.delivery_id),
                now,
            )
            .await?;
        tx.commit().await?;
        if !first {
            tracing::info!("duplicate delivery ignored");
            return Ok(());
        }
        let who = self.directory.resolve(&ev.actor);
        match &ev.kind {
            EventKind::Command { text } => self.on_command(ev, &who, text, out).await,
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

    async fn on_command(
        &self,
        ev: &InboundEvent,
        who: &Operator,
        text: &str,
        out: &dyn Responder,
    ) -> anyhow::Result<()> {
        let shown: String = text.chars().take(200).collect();
        if who.roles.is_empty() {
            self.audit(self.actor_audit(
                &ev.actor,
                who,
                None,
                "command.refused",
                json!({"text": shown, "reason": "not an operator"}),
            ))
            .await?;
            out.respond(Reply::ephemeral(format!(
                "You are not allowed to use dualkey. Ask an admin to add your account ({}) to [[operators]] in the config.",
                ev.actor.qualified()
            )))
            .await?;
            return Ok(());
        }
        let (spec, cmd) = match command::parse(text, &self.parse_ctx()) {
            Ok(p) => p,
            Err(e) => {
                self.audit(self.actor_audit(
                    &ev.actor,
                    who,
                    None,
                    "command.rejected",
                    json!({"text": shown, "error": e.message}),
                ))
                .await?;
                out.respond(Reply::ephemeral(e.render(self.slash())))
                    .await?;
                return Ok(());
            }
        };
        let operation = requested_operation(&cmd);
        // Asking for any operation needs the operator role, whatever the command's own role.
        let needs = if operation.is_some() {
            Role::Operator
        } else {
            spec.role
        };
        if !who.can(needs) {
            self.audit(self.actor_audit(
                &ev.actor,
                who,
                None,
                "command.refused",
                json!({"text": shown, "reason": format!("needs the {needs:?} role")}),
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
        self.audit(self.actor_audit(&ev.actor, who, None, "command", json!({"text": shown})))
            .await?;
        if let Some((kind, env)) = operation {
            return self.request_operation(ev, who, kind, &env, out).await;
        }
        let text = match cmd {
            Command::Help(a) => match a.command.and_then(command::spec) {
                Some(s) => command::help::render_one(self.slash(), s),
                None => command::help::render_all(self.slash()),
            },
            Command::Status(a) => crate::checks::status_text(self, &a.env.0).await?,
            Command::App(a) => crate::checks::app_lines(self, &a.env.0).await.join("\n"),
            Command::Backups(a) => crate::checks::backups_text(self, &a.env.0).await?,
            Command::Checklist(a) => crate::checks::checklist_text(self, &a.env.0).await?,
            Command::Approvals(_) => crate::checks::approvals_text(self).await?,
            Command::Cancel(a) => return self.cancel(ev, who, &a.request, out).await,
            Command::Audit(command::audit::Args::Tail(n)) => {
                let lines: Vec<String> = self
                    .store
                    .audit_tail(n)
                    .await?
                    .iter()
                    .map(|r| r.render())
                    .collect();
                if lines.is_empty() {
                    "The audit trail is empty.".into()
                } else {
                    lines.join("\n")
                }
            }
            Command::Audit(command::audit::Args::Verify) => {
                match verify_chain(self.store.as_ref()).await? {
                    Ok(n) => format!("audit chain intact: {n} events verified"),
                    Err(b) => format!("AUDIT CHAIN BROKEN: {b}"),
                }
            }
            Command::Backup(_)
            | Command::Deploy(_)
            | Command::Rollback(_)
            | Command::Restore(_)
            | Command::Resolve(_)
            | Command::Emergency(_) => {
                unreachable!("operation commands were handled above")
            }
        };
        out.respond(Reply::ephemeral(text)).await?;
        Ok(())
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
        let plan = match runbook::plan(self, &kind, env).await {
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
            state: RequestState::Pending.as_str().into(),
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
            self.outbox_wake.notify_one();
            let card = self.request_card(&id).await?;
            if let Some(msg) = out.respond(card).await? {
                let mut tx = self.store.begin().await?;
                tx.set_request_message(&id, &serde_json::to_string(&msg)?)
                    .await?;
                tx.commit().await?;
            }
        } else {
            let op = OperationRow::queued(&row, false, now);
            tx.insert_operation(&op).await?;
            self.audit_tx(&mut tx, self.actor_audit(&ev.actor, who, Some(env), "operation.queued", json!({"operation": op.id, "kind": kind.name(), "plan": plan.summary, "fingerprint": plan.short_fingerprint()}))).await?;
            tx.commit().await?;
            self.outbox_wake.notify_one();
            let card = self.operation_card(&op.id).await?;
            if let Some(msg) = out.respond(card).await? {
                let mut tx = self.store.begin().await?;
                tx.set_operation_message(&op.id, &serde_json::to_string(&msg)?)
                    .await?;
                tx.commit().await?;
            }
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
                    state: RequestState::parse(&r.state).unwrap_or(RequestState::Cancelled),
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
            self.outbox_wake.notify_one();
            return Err(UserError(format!("Vote not counted: {refusal}.")).into());
        }
        let req = req.expect("checked above");
        let voter = who.id.clone().expect("approvers have ids");
        if tx.has_voted(request_id, &voter).await? {
            // A second click by the same approver is a no-op.
            tx.commit().await?;
            out.respond(Reply::ephemeral(format!(
                "You already voted on {request_id}; nothing changed."
            )))
            .await?;
            return Ok(());
        }
        let vote = crate::store::VoteRow {
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
                tx.transition_request(request_id, "pending", "denied", Some(&voter), now)
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
                        .transition_request(request_id, "pending", "approved", Some(&voter), now)
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
        self.outbox_wake.notify_one();
        if queued.is_some() {
            self.worker_wake.notify_one();
        }
        self.refresh_request_card(request_id).await?;
        out.respond(Reply::ephemeral(outcome)).await?;
        Ok(())
    }

    async fn cancel(
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
            state: RequestState::parse(&req.state).unwrap_or(RequestState::Cancelled),
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
        tx.transition_request(&req.id, "pending", "cancelled", who.id.as_deref(), now)
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
            tx.transition_request(&r.id, "pending", "expired", None, now)
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

    /// Re-renders a request's card and queues the edit (when the card was posted).
    pub async fn refresh_request_card(&self, request_id: &str) -> anyhow::Result<()> {
        if let Some(req) = self.store.get_request(request_id).await? {
            if let Some(msg) = &req.message_json {
                let card = self.request_card(request_id).await?;
                self.edit_message(msg, &card).await?;
            }
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
    /// progress line, and queues the edit when the card was posted.
    async fn edit_operation_card(
        &self,
        op: &OperationRow,
        progress: Option<&str>,
    ) -> anyhow::Result<()> {
        let (msg, mut card) = match &op.request_id {
            Some(r) => {
                let req = self
                    .store
                    .get_request(r)
                    .await?
                    .context("request vanished")?;
                (req.message_json, self.request_card(r).await?)
            }
            None => {
                let o = self
                    .store
                    .get_operation(&op.id)
                    .await?
                    .context("operation vanished")?;
                (o.message_json, self.operation_card(&op.id).await?)
            }
        };
        let Some(msg) = msg else { return Ok(()) };
        if let (Some(line), crate::core::reply::Body::Card(c)) = (progress, &mut card.body) {
            c.lines.push(format!("progress: {line}"));
        }
        self.edit_message(&msg, &card).await
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
        let state = RequestState::parse(&req.state).unwrap_or(RequestState::Cancelled);
        let approvals = votes.iter().filter(|v| v.decision == "approve").count();
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
        if !votes.is_empty() {
            let v: Vec<String> = votes
                .iter()
                .map(|v| {
                    let done = match v.decision.as_str() {
                        "approve" => "approved",
                        "deny" => "denied",
                        other => other,
                    };
                    format!("{} {done}", v.voter)
                })
                .collect();
            fields.push(("Votes".into(), v.join(", ")));
        }
        let mut lines = plan_lines(&plan);
        if let Some(o) = &op {
            lines.extend(self.step_lines(o).await?);
        }
        let buttons = if state == RequestState::Pending && now < req.expires_at {
            vec![
                Button {
                    id: format!("approve:{}", req.id),
                    label: "Approve".into(),
                    danger: false,
                },
                Button {
                    id: format!("deny:{}", req.id),
                    label: "Deny".into(),
                    danger: true,
                },
            ]
        } else {
            vec![]
        };
        Ok(Reply::card(Card {
            title: format!("Request {}: {}", req.id, plan.summary),
            fields,
            lines,
            buttons,
            style: card_state.style(),
            state: Some(card_state),
        }))
    }

    /// The card of an operation that needed no approval.
    pub async fn operation_card(&self, op_id: &str) -> anyhow::Result<Reply> {
        let op = self
            .store
            .get_operation(op_id)
            .await?
            .context("operation vanished")?;
        let plan: Plan = serde_json::from_str(&op.plan_json)?;
        let mut lines = plan_lines(&plan);
        lines.extend(self.step_lines(&op).await?);
        Ok(Reply::card(Card {
            title: format!("Operation {}: {}", op.id, plan.summary),
            fields: vec![
                ("Requested by".into(), op.requester.clone()),
                ("Environment".into(), op.env.clone()),
                ("Status".into(), describe_state(&op)),
            ],
            lines,
            buttons: vec![],
            style: op_card_state(&op).style(),
            state: Some(op_card_state(&op)),
        }))
    }

    async fn step_lines(&self, op: &OperationRow) -> anyhow::Result<Vec<String>> {
        let mut lines = Vec::new();
        for s in self.store.steps(&op.id).await? {
            let out = s.output.as_deref().unwrap_or("");
            lines.push(format!(
                "step {} {}: {}{}",
                s.idx + 1,
                s.name,
                s.state,
                if out.is_empty() {
                    String::new()
                } else {
                    format!(" ({out})")
                }
            ));
        }
        if let Some(err) = &op.error {
            lines.push(format!("error: {err}"));
        }
        Ok(lines)
    }
}

/// The operation a command asks for, with its environment; `None` for read-only commands.
fn requested_operation(cmd: &Command) -> Option<(OperationKind, String)> {
    let (kind, env) = match cmd {
        Command::App(a) => match a.action {
            AppAction::Stop => (OperationKind::AppStop, &a.env),
            AppAction::Start => (OperationKind::AppStart, &a.env),
            AppAction::Status => return None,
        },
        Command::Backup(a) => (
            OperationKind::Backup {
                note: a.note.clone(),
            },
            &a.env,
        ),
        Command::Deploy(a) => (OperationKind::Deploy, &a.env),
        Command::Rollback(a) => (
            OperationKind::Rollback {
                migration: a.migration.0.clone(),
                strategy: a.strategy,
            },
            &a.env,
        ),
        Command::Restore(a) => (
            OperationKind::Restore {
                backup: a.backup.0.clone(),
            },
            &a.env,
        ),
        Command::Resolve(a) => (
            OperationKind::Resolve {
                migration: a.migration.0.clone(),
                applied: a.applied,
            },
            &a.env,
        ),
        Command::Emergency(a) => (OperationKind::Emergency, &a.env),
        Command::Help(_)
        | Command::Status(_)
        | Command::Backups(_)
        | Command::Checklist(_)
        | Command::Approvals(_)
        | Command::Cancel(_)
        | Command::Audit(_) => return None,
    };
    Some((kind, env.0.clone()))
}

/// A plan as card lines: the numbered steps, then the warnings.
pub(crate) fn plan_lines(plan: &Plan) -> Vec<String> {
    let mut lines = vec!["Plan:".to_string()];
    for (i, s) in plan.steps.iter().enumerate() {
        lines.push(format!("  {}. {}: {}", i + 1, s.name, s.detail));
    }
    for w in &plan.warnings {
        lines.push(format!("WARNING: {w}"));
    }
    lines
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
    match OperationState::parse(&o.state) {
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
