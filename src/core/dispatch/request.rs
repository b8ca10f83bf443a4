//! Requests: planning an operation and recording its approval request (or queueing it when it
//! needs none), withdrawing a pending request, and expiring requests whose time is up.

use anyhow::Context as _;
use serde_json::json;

use super::cards::{describe_state, kind_name};
use crate::config::Route;
use crate::core::approval::{self, RequestFacts, RequestState};
use crate::core::audit::NewAudit;
use crate::core::command::RequestId;
use crate::core::context::{Core, UserError};
use crate::core::event::InboundEvent;
use crate::core::human;
use crate::core::identity::Operator;
use crate::core::operation::{OperationKind, Plan};
use crate::core::ports::{OperationRow, RequestRow, Responder};
use crate::core::reply::Reply;

impl Core {
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
        let plan = match self.facts.plan(self.reads(), &kind, env).await {
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
            let rehearsing = self.queue_request_rehearsal(&mut tx, &row).await?;
            tx.commit().await?;
            if rehearsing {
                self.rehearsal_wake.notify_one();
            }
            self.announce_request(ev, &row, &plan, out).await?;
        } else {
            let op = OperationRow::queued(&row, false, now);
            tx.insert_operation(&op).await?;
            self.audit_tx(&mut tx, self.actor_audit(&ev.actor, who, Some(env), "operation.queued", json!({"operation": op.id, "kind": kind.name(), "plan": plan.summary, "fingerprint": plan.short_fingerprint()}))).await?;
            tx.commit().await?;
            self.announce_operation(ev, &op, &plan, out).await?;
        }
        Ok(())
    }

    /// After a request is recorded: remembers it for the delivery, posts its card where it was
    /// asked for and in the approvals channels, and tells the requester.
    async fn announce_request(
        &self,
        ev: &InboundEvent,
        row: &RequestRow,
        plan: &Plan,
        out: &dyn Responder,
    ) -> anyhow::Result<()> {
        let id = &row.id;
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_request(&Core::delivery_key(ev), id);
        self.outbox_wake.notify_one();
        let card = self.request_card(id).await?;
        let channels = self.channels_for(Some(&ev.channel), Route::Approvals, &row.env);
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
        Ok(())
    }

    /// After an operation that needs no approval is queued: posts its card where it was asked
    /// for, tells the requester and wakes the worker.
    async fn announce_operation(
        &self,
        ev: &InboundEvent,
        op: &OperationRow,
        plan: &Plan,
        out: &dyn Responder,
    ) -> anyhow::Result<()> {
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
        tx.transition_request(
            &req.id,
            RequestState::Pending,
            RequestState::Cancelled,
            who.id.as_deref(),
            now,
        )
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
            tx.transition_request(
                &r.id,
                RequestState::Pending,
                RequestState::Expired,
                None,
                now,
            )
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
}
