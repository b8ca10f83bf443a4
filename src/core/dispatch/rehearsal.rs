//! Rehearsals as the core sees them (issue 22): which set a deploy plan pins and its digest,
//! queueing a rehearsal (with a deploy request in `auto` mode, or by `rehearse [ENV]`), the
//! card's rehearsal line, and the `require_rehearsal` gate on approval. Running them is the
//! rehearsal runner's (in `services`), which finishes the row and refreshes the card.

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::RehearsalMode;
use crate::core::context::{Core, UserError};
use crate::core::event::InboundEvent;
use crate::core::human;
use crate::core::identity::Operator;
use crate::core::operation::{OperationKind, Plan, StepAction};
use crate::core::ports::{RehearsalRow, RequestRow, Responder, Tx};
use crate::core::reply::{Card, Reply, Warning};

/// The `(migration, checksum)` pairs a plan's deploy step pins, in order; empty for plans
/// without a deploy step.
pub fn pinned_set(plan: &Plan) -> Vec<(String, String)> {
    plan.steps
        .iter()
        .find_map(|s| match &s.action {
            StepAction::Deploy { pinned, .. } => Some(
                pinned
                    .iter()
                    .map(|p| (p.migration.clone(), p.checksum.clone()))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

/// The digest of a pinned set: SHA-256 (hex) over `migration NUL checksum LF` per pair, in
/// order. Two sets have the same digest only when they are the same migrations with the same
/// scripts.
pub fn set_digest(pinned: &[(String, String)]) -> String {
    let mut h = Sha256::new();
    for (m, c) in pinned {
        h.update(m.as_bytes());
        h.update([0]);
        h.update(c.as_bytes());
        h.update([b'\n']);
    }
    hex::encode(h.finalize())
}

/// The pinned set and digest of a stored deploy request; `None` for other kinds.
fn request_set(req: &RequestRow) -> Option<(Vec<(String, String)>, String)> {
    let kind: OperationKind = serde_json::from_str(&req.kind_json).ok()?;
    if kind != OperationKind::Deploy {
        return None;
    }
    let plan: Plan = serde_json::from_str(&req.plan_json).ok()?;
    let pinned = pinned_set(&plan);
    let digest = set_digest(&pinned);
    Some((pinned, digest))
}

/// Whether `req` is a deploy, or of a kind this dualkey cannot read (treated as one by the gate,
/// which fails closed).
fn kind_is_deploy(req: &RequestRow) -> bool {
    serde_json::from_str::<OperationKind>(&req.kind_json)
        .map(|k| k == OperationKind::Deploy)
        .unwrap_or(true)
}

impl Core {
    /// The rehearsal mode in force for `env`: `[deploy] rehearsal`, or, unset, by the size of
    /// the newest verified backup.
    pub async fn rehearsal_mode(&self, env: &str) -> anyhow::Result<RehearsalMode> {
        let newest = self
            .store
            .list_backups(env)
            .await?
            .into_iter()
            .find(|b| b.state == "ok" && b.verified_at.is_some() && b.deleted_at.is_none())
            .and_then(|b| b.size_bytes)
            .map(|s| s.max(0) as u64);
        Ok(self.settings.deploy.rehearsal_mode(newest))
    }

    /// Queues a rehearsal of `pinned` in `env` inside `tx` (superseding the environment's queued
    /// or running one) with its audit event. The caller commits, then wakes the runner.
    pub(super) async fn queue_rehearsal_tx(
        &self,
        tx: &mut Box<dyn Tx>,
        env: &str,
        request_id: Option<&str>,
        pinned: &[(String, String)],
        who: &str,
        channel_json: Option<String>,
    ) -> anyhow::Result<RehearsalRow> {
        let row = RehearsalRow {
            id: human::new_id('h'),
            env: env.into(),
            request_id: request_id.map(str::to_string),
            set_digest: set_digest(pinned),
            pinned_json: serde_json::to_string(pinned)?,
            state: "queued".into(),
            requested_by: who.into(),
            channel_json,
            runner: None,
            created_at: self.clock.now_ms(),
            started_at: None,
            finished_at: None,
            summary: None,
            outcome_json: None,
            error: None,
        };
        let superseded = tx.queue_rehearsal(&row).await?;
        let migrations: Vec<&str> = pinned.iter().map(|(m, _)| m.as_str()).collect();
        let details = json!({"rehearsal": row.id, "request": request_id, "migrations": migrations, "set": &row.set_digest[..12], "superseded": superseded});
        let mut ev = crate::core::audit::NewAudit::system("rehearsal.queued", Some(env), details);
        ev.operator = Some(who.to_string());
        self.audit_tx(tx, ev).await?;
        Ok(row)
    }

    /// With a deploy request in `auto` mode: queues its rehearsal in the request's transaction.
    /// True when one was queued (wake the runner after the commit).
    pub(super) async fn queue_request_rehearsal(
        &self,
        tx: &mut Box<dyn Tx>,
        req: &RequestRow,
    ) -> anyhow::Result<bool> {
        let Some((pinned, _)) = request_set(req) else {
            return Ok(false);
        };
        if pinned.is_empty() || self.rehearsal_mode(&req.env).await? != RehearsalMode::Auto {
            return Ok(false);
        }
        self.queue_rehearsal_tx(tx, &req.env, Some(&req.id), &pinned, &req.requester, None)
            .await?;
        Ok(true)
    }

    /// `rehearse [ENV]`: plans the pending set and queues its rehearsal without a request; the
    /// runner posts the result where it was asked.
    pub async fn rehearse_command(
        &self,
        ev: &InboundEvent,
        who: &Operator,
        env: &str,
        out: &dyn Responder,
    ) -> anyhow::Result<()> {
        let refuse = |msg: String| async move {
            self.audit(self.actor_audit(
                &ev.actor,
                who,
                Some(env),
                "rehearsal.refused",
                json!({"reason": msg}),
            ))
            .await?;
            Err::<(), anyhow::Error>(UserError(msg).into())
        };
        if self.rehearsal_mode(env).await? == RehearsalMode::Off {
            return refuse(format!("Rehearsals are off (`[deploy] rehearsal = \"off\"`); nothing was queued for {env}.")).await;
        }
        let plan = match self
            .facts
            .plan(self.reads(), &OperationKind::Deploy, env)
            .await
        {
            Ok(p) => p,
            Err(e) => return refuse(format!("Cannot rehearse in {env}: {e}")).await,
        };
        let pinned = pinned_set(&plan);
        if pinned.is_empty() {
            return refuse(format!(
                "Nothing to rehearse in {env}: no migration is pending."
            ))
            .await;
        }
        let requester = who.id.clone().unwrap_or_else(|| ev.actor.qualified());
        let mut tx = self.store.begin().await?;
        let channel = Some(serde_json::to_string(&ev.channel)?);
        let row = self
            .queue_rehearsal_tx(&mut tx, env, None, &pinned, &requester, channel)
            .await?;
        tx.commit().await?;
        self.outbox_wake.notify_one();
        self.rehearsal_wake.notify_one();
        let names: Vec<&str> = pinned.iter().map(|(m, _)| m.as_str()).collect();
        out.respond(Reply::ephemeral(format!(
            "Rehearsal {} queued in {env}: {} on a restored copy of the newest verified backup. The result is posted here when it ends.",
            row.id,
            names.join(", ")
        )))
        .await?;
        Ok(())
    }

    /// Puts the rehearsal of a deploy request's set on its card: a line while it is queued or
    /// running or once it passed; a failure is the first danger line, an error a caution.
    pub(super) async fn rehearsal_on_card(
        &self,
        card: &mut Card,
        req: &RequestRow,
    ) -> anyhow::Result<()> {
        let Some((pinned, digest)) = request_set(req) else {
            return Ok(());
        };
        if pinned.is_empty() {
            return Ok(());
        }
        let Some(r) = self.store.latest_rehearsal(&req.env, &digest).await? else {
            if self.settings.deploy.require_rehearsal {
                card.lines.push(format!(
                    "Not rehearsed yet: approval needs a passed rehearsal (`rehearse {}`).",
                    req.env
                ));
            }
            return Ok(());
        };
        match r.state.as_str() {
            "queued" | "running" => card
                .lines
                .push(format!("Rehearsal {} running on a restored copy…", r.id)),
            "passed" => card.lines.push(
                r.summary
                    .clone()
                    .unwrap_or_else(|| format!("Rehearsal {} passed.", r.id)),
            ),
            "failed" => {
                let why = r.error.clone().or(r.summary.clone()).unwrap_or_default();
                card.warnings.insert(
                    0,
                    Warning::danger(format!("Rehearsal FAILED on a restored copy: {why}")),
                );
                if let Some(s) = &r.summary {
                    card.lines.push(s.clone());
                }
            }
            "error" => card.warnings.push(Warning::caution(format!(
                "The rehearsal could not run: {}",
                r.error.as_deref().unwrap_or("unknown error")
            ))),
            "superseded" => card.lines.push(format!(
                "Rehearsal {} was superseded by a newer one in {}.",
                r.id, r.env
            )),
            _ => {}
        }
        // Most serious first; the sort is stable, so the rehearsal's failure stays the first
        // danger line.
        card.warnings.sort_by_key(|w| std::cmp::Reverse(w.severity));
        Ok(())
    }

    /// With `[deploy] require_rehearsal`: why an approve vote (`decision`) on `req` cannot count yet (no
    /// passed rehearsal of exactly its set), or `None`.
    pub(super) async fn rehearsal_gate(
        &self,
        tx: &mut Box<dyn Tx>,
        req: &RequestRow,
        decision: crate::core::approval::Decision,
    ) -> anyhow::Result<Option<String>> {
        if !self.settings.deploy.require_rehearsal
            || decision != crate::core::approval::Decision::Approve
        {
            return Ok(None);
        }
        let Some((pinned, digest)) = request_set(req) else {
            // Not a deploy, or a deploy whose stored plan cannot be read: fail closed for the
            // latter rather than let an unreviewable set through.
            if kind_is_deploy(req) {
                return Ok(Some("approval needs a passed rehearsal, and this request's plan cannot be read to know which migrations it applies: request the deploy again".into()));
            }
            return Ok(None);
        };
        if pinned.is_empty() || tx.passed_rehearsal(&req.env, &digest).await? {
            return Ok(None);
        }
        Ok(Some(format!(
            "approval needs a passed rehearsal of exactly these migrations (set {}): run `rehearse {}` and vote again once it passed",
            &digest[..12],
            req.env
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_changes_with_any_checksum_or_order() {
        let p = |a: &str, b: &str| {
            vec![
                ("m1".to_string(), a.to_string()),
                ("m2".to_string(), b.to_string()),
            ]
        };
        assert_eq!(set_digest(&p("x", "y")), set_digest(&p("x", "y")));
        assert_ne!(set_digest(&p("x", "y")), set_digest(&p("x", "z")));
        let mut swapped = p("x", "y");
        swapped.reverse();
        assert_ne!(set_digest(&p("x", "y")), set_digest(&swapped));
        assert_eq!(set_digest(&p("x", "y")).len(), 64);
    }
}
