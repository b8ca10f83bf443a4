//! Digests: audit lines piled up at the head of a lane go out as one message, as many as fit,
//! closed by the chain head line of the last one.

use super::deliver::{deliver_row, failed, record_carried, Sent};
use super::lanes::Lane;
use super::Outbound;
use crate::core::context::Core;
use crate::core::meter;
use crate::core::reply::Reply;
use crate::store::OutboxRow;

/// A chain head line as long as any can be (reserved at the end of a digest).
const HEAD_RESERVE: usize = 120;

/// The audit lines at the head of a lane that are due, in order.
pub(super) fn digest_run(rows: &[OutboxRow], now: i64) -> &[OutboxRow] {
    let n = rows
        .iter()
        .take_while(|r| r.kind == "audit" && r.next_attempt_at <= now && r.op == "post")
        .count();
    &rows[..n]
}

/// Sends the audit lines `run` (at least [`DIGEST_MIN`]) as digests: as many lines as fit in
/// one message with the closing head line; the rest waits for the next turn of the lane.
pub(super) async fn send_digest(
    core: &Core,
    out: &dyn Outbound,
    lane: &Lane,
    run: &[OutboxRow],
) -> anyhow::Result<Sent> {
    let mut text = String::new();
    let mut taken = 0;
    for row in run {
        let line = match serde_json::from_str::<Reply>(&row.payload) {
            Ok(r) => r.to_text(),
            Err(_) => break, // sent alone, where the unreadable payload is kept with its error
        };
        let next = if text.is_empty() {
            line
        } else {
            format!("{text}\n{line}")
        };
        let probe = format!("{next}\n{}", "x".repeat(HEAD_RESERVE));
        if !out.fits_one_message(&probe) {
            break;
        }
        text = next;
        taken += 1;
    }
    if taken < 2 {
        return deliver_row(core, out, lane, &run[0]).await;
    }
    let rows = &run[..taken];
    if let Some(seq) = rows.iter().rev().find_map(|r| r.audit_seq) {
        let head = core.store.audit_page(seq - 1, 1).await?;
        if let Some(ev) = head.first().filter(|e| e.seq == seq) {
            let line = crate::core::audit::head_line(ev.seq, &ev.hash);
            if !text.ends_with(&line) {
                text = format!("{text}\n{line}");
            }
        }
    }
    lane.pace().await;
    let channel = &rows[0].channel;
    match out.post(channel, &Reply::public(text)).await {
        Ok(id) => {
            lane.learn(None);
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            meter::delivery(&rows[0].platform, "ok", rows.len() as u64);
            record_carried(core, &ids, Some(&id)).await?;
            Ok(Sent::Delivered(rows.len()))
        }
        Err(e) => failed(core, lane, rows, e).await,
    }
}
