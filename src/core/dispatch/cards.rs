//! Cards: the approval card of a request and the card of an operation, rendered from the store,
//! and their refreshes (state changes, progress lines) queued as edits of every copy.

use anyhow::Context as _;

use crate::core::approval::RequestState;
use crate::core::context::Core;
use crate::core::human;
use crate::core::operation::{OperationKind, OperationState, Plan};
use crate::core::ports::{OperationRow, RequestRow, VoteRow};
use crate::core::reply::{
    Button, ButtonStyle, Card, CardState, Confirm, Mention, Reply, Severity, Step, StepState,
    Votes, Warning,
};

impl Core {
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
        let (status, card_state) = request_status(&req, op.as_ref(), state, approvals, now);
        fields.push(("Status".into(), status));
        let cast = cast_votes(&votes);
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
        self.rehearsal_on_card(&mut card, &req).await?;
        if open {
            card.buttons = approval_buttons(&req.id, &plan, &card.warnings);
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

/// The status line of a request's card and its card state: its operation's state once there is
/// one, else the request's own (a pending request past its expiry shows as expired).
fn request_status(
    req: &RequestRow,
    op: Option<&OperationRow>,
    state: RequestState,
    approvals: usize,
    now: i64,
) -> (String, CardState) {
    match (op, state) {
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
    }
}

/// The votes cast on a request as `(voter, "approved" | "denied")`.
fn cast_votes(votes: &[VoteRow]) -> Vec<(String, String)> {
    votes
        .iter()
        .map(|v| {
            let done = match v.decision.as_str() {
                "approve" => "approved",
                "deny" => "denied",
                other => other,
            };
            (v.voter.clone(), done.to_string())
        })
        .collect()
}

/// The buttons of an open request: Approve (asking for confirmation when the plan is
/// destructive: a danger warning on the card, or a step other than a backup or an app start;
/// the confirmation quotes the card's first danger line) and Deny.
fn approval_buttons(request_id: &str, plan: &Plan, warnings: &[Warning]) -> Vec<Button> {
    let destructive = warnings.iter().any(|w| w.severity == Severity::Danger)
        || plan.steps.iter().any(|s| {
            !matches!(
                s.action,
                crate::core::operation::StepAction::Backup { .. }
                    | crate::core::operation::StepAction::AppStart
            )
        });
    let mut approve = Button::new(
        format!("approve:{request_id}"),
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
                match warnings.iter().find(|w| w.severity == Severity::Danger) {
                    Some(w) => format!(" {}", w.text),
                    None => String::new(),
                }
            ),
            confirm: "Approve".into(),
            deny: "Back".into(),
        });
    }
    vec![
        approve,
        Button::new(format!("deny:{request_id}"), "Deny", ButtonStyle::Danger),
    ]
}
