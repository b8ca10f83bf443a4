//! Votes: the buttons of a card (approve, deny, and the monitoring window's) and the vote itself,
//! judged and recorded with its audit events in one transaction.

use serde_json::json;

use crate::config::Role;
use crate::core::approval::{self, Decision, RequestFacts, RequestState, VoteRefusal};
use crate::core::audit::NewAudit;
use crate::core::command::RequestId;
use crate::core::context::{Core, UserError};
use crate::core::event::InboundEvent;
use crate::core::identity::Operator;
use crate::core::meter;
use crate::core::operation::OperationKind;
use crate::core::ports::{OperationRow, RequestRow, Responder, Tx, VoteRow};
use crate::core::reply::Reply;

impl Core {
    pub(super) async fn on_action(
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
            return crate::core::window::click(self, ev, who, rollback, id, out).await;
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
        let refusal = vote_refusal(req.as_ref(), request_id, who, now);
        let env = req.as_ref().map(|r| r.env.clone());
        if let Some(refusal) = refusal {
            self.audit_tx(&mut tx, self.actor_audit(&ev.actor, who, env.as_deref(), "vote.refused", json!({"request": request_id, "decision": decision.as_str(), "reason": refusal.to_string()}))).await?;
            tx.commit().await?;
            meter::vote("refused");
            self.outbox_wake.notify_one();
            return Err(UserError(format!("Vote not counted: {refusal}.")).into());
        }
        let req = req.expect("checked above");
        if let Some(why) = self.rehearsal_gate(&mut tx, &req, decision).await? {
            return self.refuse_vote(tx, ev, who, &req, decision, &why).await;
        }
        let voter = who.id.clone().expect("approvers have ids");
        if tx.has_voted(request_id, &voter).await? {
            return repeated_vote(tx, request_id, out).await;
        }
        let vote = VoteRow {
            request_id: request_id.into(),
            voter: voter.clone(),
            account: ev.actor.qualified(),
            decision: decision.as_str().into(),
            at: now,
        };
        if !tx.insert_vote_if_open(&vote, now).await? {
            let closed = "the request is no longer open";
            return self.refuse_vote(tx, ev, who, &req, decision, closed).await;
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
        let (outcome, queued) = self
            .count_vote(&mut tx, &req, request_id, &voter, decision, now)
            .await?;
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

    /// A vote refused after the request was read (the request closed meanwhile, or it needs a
    /// passed rehearsal first): audits `vote.refused`, commits and returns the refusal.
    async fn refuse_vote(
        &self,
        mut tx: Box<dyn Tx>,
        ev: &InboundEvent,
        who: &Operator,
        req: &RequestRow,
        decision: Decision,
        reason: &str,
    ) -> anyhow::Result<()> {
        self.audit_tx(
            &mut tx,
            self.actor_audit(
                &ev.actor,
                who,
                Some(&req.env),
                "vote.refused",
                json!({"request": req.id, "decision": decision.as_str(), "reason": reason}),
            ),
        )
        .await?;
        tx.commit().await?;
        meter::vote("refused");
        self.outbox_wake.notify_one();
        Err(UserError(format!("Vote not counted: {reason}.")).into())
    }

    /// What a recorded vote does inside `tx`: a denial closes the request; an approval that
    /// completes the count approves it and queues its operation. Returns the answer for the
    /// voter and the queued operation's id.
    async fn count_vote(
        &self,
        tx: &mut Box<dyn Tx>,
        req: &RequestRow,
        request_id: &str,
        voter: &str,
        decision: Decision,
        now: i64,
    ) -> anyhow::Result<(String, Option<String>)> {
        let mut queued = None;
        let outcome = match decision {
            Decision::Deny => {
                tx.transition_request(
                    request_id,
                    RequestState::Pending,
                    RequestState::Denied,
                    Some(voter),
                    now,
                )
                .await?;
                self.audit_tx(
                    tx,
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
                        .transition_request(
                            request_id,
                            RequestState::Pending,
                            RequestState::Approved,
                            Some(voter),
                            now,
                        )
                        .await?
                {
                    let op = OperationRow::queued(req, true, now);
                    tx.insert_operation(&op).await?;
                    self.audit_tx(
                        tx,
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
        Ok((outcome, queued))
    }
}

/// Why a vote on `req` (the locked request `request_id`, `None` when there is none) by `who`
/// is not counted, if it is not.
fn vote_refusal(
    req: Option<&RequestRow>,
    request_id: &str,
    who: &Operator,
    now: i64,
) -> Option<VoteRefusal> {
    match req {
        None => Some(VoteRefusal::Unknown(request_id.into())),
        Some(r) => {
            let facts = RequestFacts {
                state: r.state,
                requester: &r.requester,
                expires_at_ms: r.expires_at,
            };
            approval::judge_vote(&facts, who, now).err()
        }
    }
}

/// A second click by the same approver: a no-op, answered as such.
async fn repeated_vote(
    tx: Box<dyn Tx>,
    request_id: &str,
    out: &dyn Responder,
) -> anyhow::Result<()> {
    tx.commit().await?;
    meter::vote("repeated");
    out.respond(Reply::ephemeral(format!(
        "You already voted on {request_id}; nothing changed."
    )))
    .await?;
    Ok(())
}
