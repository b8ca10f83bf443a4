//! The `approvals` report: open requests with their plans, votes and buttons.

use crate::core::human;
use crate::core::operation::Plan;
use crate::core::ports::Reads;
use crate::core::reply::{Button, ButtonStyle, Reply, Report, Section};
use crate::store::RequestRow;

/// Pending requests that have not expired yet, newest first.
pub(super) async fn open_requests(reads: Reads<'_>, now: i64) -> anyhow::Result<Vec<RequestRow>> {
    Ok(reads
        .store
        .list_requests(Some(crate::core::approval::RequestState::Pending), 100)
        .await?
        .into_iter()
        .filter(|r| r.expires_at > now)
        .collect())
}

/// The `approvals` report: open requests with their plans, votes, expiry, and each one's
/// approve and deny buttons.
pub async fn approvals_report(reads: Reads<'_>) -> anyhow::Result<Reply> {
    let now = reads.clock.now_ms();
    let open = open_requests(reads, now).await?;
    if open.is_empty() {
        return Ok(Reply::ephemeral("No open requests."));
    }
    let mut report = Report {
        title: format!("{} open request(s):", open.len()),
        sections: vec![],
        buttons: vec![],
    };
    for r in open {
        let plan: Plan = serde_json::from_str(&r.plan_json)?;
        let votes = reads.store.votes(&r.id).await?;
        let approvals = votes.iter().filter(|v| v.decision == "approve").count();
        let mut lines = vec!["Plan:".to_string()];
        for (i, s) in plan.steps.iter().enumerate() {
            lines.push(format!("  {}. {}: {}", i + 1, s.name, s.detail));
        }
        report.sections.push(Section {
            heading: Some(format!(
                "{} [{}] {} by {}: {approvals}/{} votes, expires in {}, fingerprint {}",
                r.id,
                r.env,
                plan.summary,
                r.requester,
                r.required_votes,
                human::span(r.expires_at - now),
                plan.short_fingerprint(),
            )),
            lines,
            warnings: plan.warnings.clone(),
            ..Section::default()
        });
        report.buttons.push(Button::new(
            format!("approve:{}", r.id),
            format!("Approve {}", r.id),
            ButtonStyle::Primary,
        ));
        report.buttons.push(Button::new(
            format!("deny:{}", r.id),
            format!("Deny {}", r.id),
            ButtonStyle::Danger,
        ));
    }
    Ok(Reply::report(report))
}
