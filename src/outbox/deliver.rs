//! Delivery of one row (the head of its lane): a post, an edit of a card (re-rendered fresh,
//! skipped when superseded), an ephemeral answer; what a failure does to the lane; and telling a
//! requester at once when their card cannot be posted.

use std::time::Duration;

use super::backoff;
use super::lanes::Lane;
use super::{DeliveryError, Outbound};
use crate::core::context::Core;
use crate::core::event::ChannelRef;
use crate::core::meter;
use crate::core::reply::Reply;
use crate::store::{NewOutbox, OutboxRow};

/// What became of the head of a lane.
pub(super) enum Sent {
    /// Delivered, carrying this many rows.
    Delivered(usize),
    /// Nothing to send (a superseded edit, a dead letter).
    Skipped,
    /// Failed for now: the lane waits.
    HeldBack,
}

/// Delivers one row (the head of its lane).
pub(super) async fn deliver_row(
    core: &Core,
    out: &dyn Outbound,
    lane: &Lane,
    row: &OutboxRow,
) -> anyhow::Result<Sent> {
    let reply: Reply = match serde_json::from_str(&row.payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(outbox = row.id, error = %e, "unreadable outbox payload kept undelivered");
            core.store
                .outbox_retry(row.id, i64::MAX, &format!("unreadable payload: {e}"))
                .await?;
            return Ok(Sent::Skipped);
        }
    };
    if row.op == "edit" && core.store.outbox_edit_superseded(row).await? {
        // A newer edit of this card waits in this channel: this one is skipped.
        core.store
            .outbox_delivered(row.id, core.clock.now_ms())
            .await?;
        return Ok(Sent::Skipped);
    }
    if let (Some(key), None) = (&row.card_key, &row.message_id) {
        if row.op == "edit" {
            if let Some(why) = core
                .store
                .card_post_error(key, &row.platform, &row.channel)
                .await?
            {
                // The copy was never posted here: the edit is not posted as a new message.
                core.store
                    .outbox_retry(
                        row.id,
                        i64::MAX,
                        &format!("not sent: the card could not be posted in this channel ({why})"),
                    )
                    .await?;
                return Ok(Sent::Skipped);
            }
        }
    }
    let reply = match &row.card_key {
        Some(key) => fresh_card(core, key, reply).await,
        None => reply,
    };
    // Slack's one-per-second-per-channel limit is on posts; edits and answers are not paced.
    let post = row.op == "post";
    if post {
        lane.pace().await;
    }
    match send(core, out, row, &reply).await {
        Ok(id) => {
            if post {
                lane.learn(None);
            }
            meter::delivery(&row.platform, "ok", 1);
            record_carried(core, &[row.id], id.as_deref()).await?;
            Ok(Sent::Delivered(1))
        }
        Err(e) => failed(core, lane, std::slice::from_ref(row), e).await,
    }
}

/// After a failed call for `rows` (the head of a lane): a 429 or a transient failure holds the
/// lane back (in this process and in the store, so waiting rows are not read again until then);
/// a permanent one keeps the rows with their error, and the lane goes on.
pub(super) async fn failed(
    core: &Core,
    lane: &Lane,
    rows: &[OutboxRow],
    e: DeliveryError,
) -> anyhow::Result<Sent> {
    let head = &rows[0];
    tracing::warn!(outbox = head.id, rows = rows.len(), platform = %head.platform, channel = %head.channel, error = %e, "chat delivery failed");
    let outcome = match &e {
        DeliveryError::RateLimited(_) => "rate_limited",
        DeliveryError::Transient(_) => "transient",
        DeliveryError::Permanent(_) => "permanent",
    };
    meter::delivery(&head.platform, outcome, rows.len() as u64);
    let now = core.clock.now_ms();
    let next = match &e {
        DeliveryError::RateLimited(after) => now + after.as_millis() as i64,
        DeliveryError::Transient(_) => now + backoff(head.attempts).as_millis() as i64,
        DeliveryError::Permanent(_) => {
            // The requester is told before the post is given up: a crash in between posts
            // (and fails) again and tells again, rather than never telling.
            if let (Some(key), "post", true) = (&head.card_key, head.op.as_str(), e.is_no_access())
            {
                card_not_posted(core, head, key, &e).await?;
            }
            for r in rows {
                core.store
                    .outbox_retry(r.id, i64::MAX, &e.to_string())
                    .await?;
            }
            return Ok(Sent::Skipped);
        }
    };
    if let (DeliveryError::RateLimited(after), "post") = (&e, head.op.as_str()) {
        lane.learn(Some(*after));
    }
    lane.hold(next);
    core.store
        .outbox_retry(head.id, next, &e.to_string())
        .await?;
    core.store
        .outbox_hold_lane(&head.platform, &head.channel, next)
        .await?;
    Ok(Sent::HeldBack)
}

/// Marks `ids` delivered in the message `message_id` carried by the first of them, with a few
/// quick retries (the message exists: sending it again would show the lines twice).
pub(super) async fn record_carried(
    core: &Core,
    ids: &[i64],
    message_id: Option<&str>,
) -> anyhow::Result<()> {
    let mut tries = 0;
    loop {
        match core
            .store
            .outbox_carried(ids, ids[0], message_id, core.clock.now_ms())
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) if tries >= 3 => return Err(e.into()),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
            }
        }
    }
}

/// Tells the requester of card `key` at once that its copy in `row`'s channel could not be
/// posted, and how to fix it; the copy's later edits are then not sent (see [`deliver_row`]).
async fn card_not_posted(
    core: &Core,
    row: &OutboxRow,
    key: &str,
    e: &DeliveryError,
) -> anyhow::Result<()> {
    core.store
        .set_card_post_error(key, &row.platform, &row.channel, &e.to_string())
        .await?;
    let request_id = match key.split_once(':') {
        Some(("request", id)) => Some(id.to_string()),
        Some(("operation", id)) => core
            .store
            .get_operation(id)
            .await?
            .and_then(|o| o.request_id),
        _ => None,
    };
    let req = match request_id {
        Some(id) => core.store.get_request(&id).await?,
        None => None,
    };
    let Some(req) = req else {
        tracing::warn!(
            card = key,
            "a card could not be posted and has no requester to tell"
        );
        return Ok(());
    };
    let Ok(origin) = serde_json::from_str::<ChannelRef>(&req.channel_json) else {
        return Ok(());
    };
    let user = req
        .requester_account
        .split_once(':')
        .map_or(req.requester_account.as_str(), |(_, a)| a);
    let fix = if e.is_no_access() {
        format!(
            "dualkey is not in that channel: invite @dualkey to it (`/invite @dualkey` in {} on {}), \
             or set another channel in the config.",
            row.channel, row.platform
        )
    } else {
        "Check that channel in the config (`approvals_channel`, `audit_channel`).".to_string()
    };
    let text = format!(
        "The card of your request {} could not be posted in channel {} on {} ({e}). {fix} \
         The request is still open; approvers see it with `{} approvals`.",
        req.id,
        row.channel,
        row.platform,
        core.slash()
    );
    let mut tx = core.store.begin().await?;
    tx.enqueue_outbox(
        &NewOutbox {
            platform: origin.platform.as_str().into(),
            channel: origin.id.clone(),
            op: "ephemeral".into(),
            message_id: Some(user.to_string()),
            payload: serde_json::to_string(&Reply::ephemeral(text))?,
            card_key: None,
        },
        core.clock.now_ms(),
    )
    .await?;
    tx.commit().await?;
    core.outbox_wake.notify_one();
    Ok(())
}

/// A card as the store has it now, with the queued reply's progress line: edits queued by
/// racing writers (a vote and the worker, two replicas) may carry older states, and the newest
/// queued edit is the only one sent, so it is rendered again here. Falls back to the queued
/// reply when the card cannot be rendered (an unknown key, a store hiccup).
async fn fresh_card(core: &Core, key: &str, queued: Reply) -> Reply {
    match core.render_card(key).await {
        Ok(Some(mut fresh)) => {
            if let (crate::core::reply::Body::Card(f), crate::core::reply::Body::Card(q)) =
                (&mut fresh.body, &queued.body)
            {
                // A progress line belongs to a running operation only.
                if f.state == Some(crate::core::reply::CardState::Running) {
                    f.progress = q.progress.clone();
                }
            }
            fresh
        }
        Ok(None) => queued,
        Err(e) => {
            tracing::warn!(
                card = key,
                error = format!("{e:#}"),
                "card not re-rendered; sending the queued state"
            );
            queued
        }
    }
}

/// Sends one row: a post (recording a card's message id), an edit of a known message, an
/// answer only one person sees (`ephemeral`, `message_id` naming the person; where the bot
/// cannot answer in the channel, a direct message), or an edit of a card copy whose post never
/// got a message id, which is posted anew instead. Returns the message's id when known.
async fn send(
    core: &Core,
    out: &dyn Outbound,
    row: &OutboxRow,
    reply: &Reply,
) -> Result<Option<String>, DeliveryError> {
    if row.op == "ephemeral" {
        let user = row.message_id.as_deref().unwrap_or_default();
        return match out.ephemeral(&row.channel, user, reply).await {
            Err(e) if e.is_no_access() => out.post(user, reply).await.map(Some),
            r => r.map(|()| None),
        };
    }
    let message_id = match (&row.message_id, &row.card_key) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(key)) if row.op == "edit" => core
            .store
            .card_messages(key)
            .await
            .map_err(|e| DeliveryError::Transient(format!("reading the card's message: {e}")))?
            .into_iter()
            .find(|(p, c, _)| *p == row.platform && *c == row.channel)
            .and_then(|(_, _, m)| m),
        _ => None,
    };
    match (row.op.as_str(), message_id) {
        ("edit", Some(id)) => out.edit(&row.channel, &id, reply).await.map(|()| Some(id)),
        _ => {
            let id = out.post(&row.channel, reply).await?;
            if let Some(key) = &row.card_key {
                // The message exists now: retrying the post would duplicate it, so the id is
                // recorded with a few quick retries, and only then given up (the next edit of
                // this copy would then post it again).
                let mut tries = 0;
                loop {
                    match core
                        .store
                        .set_card_message(key, &row.platform, &row.channel, &id)
                        .await
                    {
                        Ok(()) => break,
                        Err(e) if tries >= 3 => {
                            return Err(DeliveryError::Permanent(format!(
                                "posted as {id}, but recording the message id failed: {e}"
                            )))
                        }
                        Err(_) => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                        }
                    }
                }
            }
            Ok(Some(id))
        }
    }
}
