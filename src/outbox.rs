//! Outbox delivery: messages written to the store (audit lines, cards and their edits, reports,
//! interruption notices) are delivered to chat afterwards, retried with exponential backoff,
//! honouring a platform's `Retry-After`. Nothing is lost while chat is down; a message that can
//! never be delivered is kept with its error, and logged.
//!
//! **Lanes.** Each channel is a lane. Lanes are delivered concurrently, with at most one call in
//! flight per lane; inside a lane rows go in (priority, id) order: cards, their edits and
//! ephemeral answers first, then other messages, then audit lines and reports (see
//! [`crate::store::OutboxKind`]). A 429 or a failure holds back only its own lane (a global 429
//! on Discord answers every lane of the platform with a 429, so it holds them all). The
//! per-channel budget of a platform is learned from its 429s: each one widens the spacing kept
//! between two calls in a lane, each success narrows it a little.
//!
//! **Digests.** When [`DIGEST_MIN`] or more audit lines wait at the head of a lane, they go out as
//! one message (each event's line, in order, as many as fit in one message of the platform),
//! closed by the chain head line of its last event; every line records the message that
//! carried it (`outbox.carried_by`, `carrier_message`).
//!
//! Cards are posted and edited by key (`request:<id>`): a posted card's message id is recorded
//! per channel, and an edit is sent only when no newer edit of the same card waits in the same
//! channel, so progress ticks that stacked up behind a 429 collapse into the newest. A card that
//! cannot be posted (the bot is not in the channel) is reported to its requester at once, and
//! later edits of that copy are not sent.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::core::dispatch::Core;
use crate::core::event::ChannelRef;
use crate::core::meter;
use crate::core::reply::Reply;
use crate::store::{NewOutbox, OutboxRow};

pub use crate::adapters::{DeliveryError, Outbound};

/// Backoff after `attempts` failures: 1 s, 2 s, 4 s ... capped at 5 minutes.
pub fn backoff(attempts: i64) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 8) as u32).min(Duration::from_secs(300))
}

/// Audit lines waiting at the head of a lane from which on they go out as one digest.
pub const DIGEST_MIN: usize = 3;
/// Rows of a lane read at a time (a digest holds at most this many lines).
const LANE_READ: i64 = 200;
/// How often a lane renews the `outbox` lease at most (well inside [`LEASE_MS`]).
const RENEW_MS: i64 = 1_000;
/// Longest a lane whose head waits for its retry is left alone before it is read again.
const HELD_RECHECK_MS: i64 = 5_000;
/// Longest [`deliver_due`] waits for another pass to finish a lane it wants to deliver.
const CLAIM_WAIT: Duration = Duration::from_secs(5);
/// Longest the last delivery at shutdown may take.
const LAST_PASS: Duration = Duration::from_secs(10);
/// The narrowest spacing between two posts in a lane a 429 sets, and the widest the learning
/// goes (never wider than the 429's `Retry-After`).
const MIN_SPACING: Duration = Duration::from_millis(250);
const MAX_SPACING: Duration = Duration::from_secs(2);

/// Delivers what is due for one adapter, once: every lane with something due, concurrently,
/// until it is empty or held back. Returns how many messages were delivered.
///
/// A lane is delivered by one pass at a time in this process (the outbox task, and the shell
/// flushing what its last line queued); across processes the `outbox` lease does that.
pub async fn deliver_due(core: &Core, out: &dyn Outbound) -> anyhow::Result<usize> {
    deliver_due_leased(core, out, None).await
}

/// [`deliver_due`] for the holder of the `outbox` lease: the lease is renewed (at most once a
/// second) before each message, and a lane stops when it was lost (a slow pass must not let a
/// second replica deliver the same rows).
pub async fn deliver_due_leased(
    core: &Core,
    out: &dyn Outbound,
    holder: Option<&str>,
) -> anyhow::Result<usize> {
    let lease = holder.map(Lease::new);
    let lanes = core
        .store
        .outbox_lanes(out.platform().as_str(), core.clock.now_ms())
        .await?;
    let drains: Vec<Drain<'_>> = lanes
        .iter()
        .map(|ch| {
            Box::pin(async {
                // Another pass (the outbox task) may be delivering this lane right now (busy;
                // a hold is not waited for, `now` = MAX): wait
                // for it, so a caller such as the shell sees its messages out before it goes
                // on (a bounded wait: that pass may be draining a long backlog).
                let end = Instant::now() + CLAIM_WAIT;
                while Lane::busy_or_held(core, out.platform().as_str(), ch, i64::MAX)
                    && Instant::now() < end
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                drain_lane(core, out, ch, lease.as_ref(), None).await
            }) as Drain<'_>
        })
        .collect();
    let mut delivered = 0;
    let mut failed = None;
    for r in join_all(drains).await {
        match r {
            Ok(n) => delivered += n,
            Err(e) => failed = Some(e),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(delivered),
    }
}

type Drain<'a> = Pin<Box<dyn Future<Output = anyhow::Result<usize>> + Send + 'a>>;

/// Runs `futs` concurrently on this task; their results in order.
async fn join_all<T>(mut futs: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut done: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, d) in futs.iter_mut().zip(done.iter_mut()) {
            if d.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *d = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

/// The `outbox` lease as one delivering process holds it, renewed at most every [`RENEW_MS`].
pub struct Lease {
    holder: String,
    renewed_at: tokio::sync::Mutex<Option<i64>>,
}

impl Lease {
    fn new(holder: &str) -> Lease {
        Lease {
            holder: holder.to_string(),
            renewed_at: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether this process still holds the lease (renewing it when it is due).
    async fn held(&self, core: &Core) -> anyhow::Result<bool> {
        let mut at = self.renewed_at.lock().await;
        let now = core.clock.now_ms();
        if let Some(t) = *at {
            if now >= t && now - t < RENEW_MS {
                return Ok(true);
            }
        }
        let held = core
            .store
            .try_lease("outbox", &self.holder, now, LEASE_MS)
            .await?;
        *at = held.then_some(now);
        Ok(held)
    }
}

/// What this process knows about one lane.
#[derive(Default)]
struct LaneState {
    /// A pass is delivering it.
    busy: bool,
    /// Held back until then (core clock, ms): a 429 or a failure.
    held_until: i64,
    /// When its last call started (for the spacing).
    last_call: Option<Instant>,
}

/// Lanes by (core, platform, channel), and the learned spacing by (core, platform).
#[derive(Default)]
struct Lanes {
    lanes: HashMap<(usize, String, String), LaneState>,
    spacing: HashMap<(usize, String), Duration>,
}

static LANES: Mutex<Option<Lanes>> = Mutex::new(None);

fn with_lanes<T>(f: impl FnOnce(&mut Lanes) -> T) -> T {
    let mut g = LANES.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(Lanes::default))
}

/// One lane of one core: its key in [`LANES`].
struct Lane {
    key: (usize, String, String),
}

impl Lane {
    /// Claims the lane for one pass; `None` when another pass delivers it.
    fn claim(core: &Core, platform: &str, channel: &str) -> Option<Lane> {
        let key = (
            core as *const Core as usize,
            platform.to_string(),
            channel.to_string(),
        );
        with_lanes(|l| {
            let st = l.lanes.entry(key.clone()).or_default();
            if st.busy {
                return None;
            }
            st.busy = true;
            Some(Lane { key })
        })
    }

    fn held_until(&self) -> i64 {
        with_lanes(|l| l.lanes.get(&self.key).map_or(0, |s| s.held_until))
    }

    fn hold(&self, until: i64) {
        with_lanes(|l| l.lanes.entry(self.key.clone()).or_default().held_until = until);
    }

    fn platform_key(&self) -> (usize, String) {
        (self.key.0, self.key.1.clone())
    }

    /// Waits until the platform's learned spacing has passed since this lane's last call,
    /// then records this call's start.
    async fn pace(&self) {
        let wait = with_lanes(|l| {
            let spacing = l
                .spacing
                .get(&self.platform_key())
                .copied()
                .unwrap_or_default();
            let last = l.lanes.get(&self.key).and_then(|s| s.last_call);
            last.map(|t| spacing.saturating_sub(t.elapsed()))
                .unwrap_or_default()
        });
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        with_lanes(|l| {
            l.lanes.entry(self.key.clone()).or_default().last_call = Some(Instant::now())
        });
    }

    /// Learns from a post's outcome: a 429 that said wait `after` doubles the spacing (at least
    /// [`MIN_SPACING`], at most `after` and [`MAX_SPACING`]); a success narrows it by 2 %.
    fn learn(&self, limited: Option<Duration>) {
        with_lanes(|l| {
            let s = l.spacing.entry(self.platform_key()).or_default();
            *s = match limited {
                Some(after) => (*s * 2).clamp(MIN_SPACING, after.clamp(MIN_SPACING, MAX_SPACING)),
                None if *s < Duration::from_millis(20) => Duration::ZERO,
                None => *s * 49 / 50,
            };
        })
    }

    /// Whether another pass delivers this lane (for the outbox task, which starts a pass per
    /// lane that is free and not held back).
    fn busy_or_held(core: &Core, platform: &str, channel: &str, now: i64) -> bool {
        let key = (
            core as *const Core as usize,
            platform.to_string(),
            channel.to_string(),
        );
        with_lanes(|l| {
            l.lanes
                .get(&key)
                .is_some_and(|s| s.busy || s.held_until > now)
        })
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        with_lanes(|l| {
            if let Some(s) = l.lanes.get_mut(&self.key) {
                s.busy = false;
            }
        })
    }
}

/// Delivers one lane until it is empty, held back, the lease is lost or `stop` turns true:
/// one call at a time, the head of the lane first (a digest when audit lines pile up).
async fn drain_lane(
    core: &Core,
    out: &dyn Outbound,
    channel: &str,
    lease: Option<&Lease>,
    stop: Option<&watch::Receiver<bool>>,
) -> anyhow::Result<usize> {
    let platform = out.platform().as_str();
    let Some(lane) = Lane::claim(core, platform, channel) else {
        return Ok(0);
    };
    let mut delivered = 0;
    loop {
        if stop.is_some_and(|s| *s.borrow()) {
            break;
        }
        if let Some(l) = lease {
            if !l.held(core).await? {
                tracing::warn!("outbox lease lost during a pass; another replica delivers");
                break;
            }
        }
        let now = core.clock.now_ms();
        if lane.held_until() > now {
            break;
        }
        let rows = core.store.outbox_lane(platform, channel, LANE_READ).await?;
        let Some(head) = rows.first() else { break };
        if head.next_attempt_at > now {
            // The head waits for its retry, and the lane with it. Held here too, so the outbox
            // task does not start this lane again and again meanwhile (after a restart only the
            // rows know of the hold); at most HELD_RECHECK_MS, so a card queued behind a long
            // backoff is looked at again soon.
            lane.hold(head.next_attempt_at.min(now + HELD_RECHECK_MS));
            break;
        }
        let unit = digest_run(&rows, now);
        let sent = if unit.len() >= DIGEST_MIN {
            send_digest(core, out, &lane, unit).await?
        } else {
            deliver_row(core, out, &lane, head).await?
        };
        match sent {
            Sent::Delivered(n) => delivered += n,
            Sent::Skipped => {}
            Sent::HeldBack => break,
        }
    }
    Ok(delivered)
}

/// What became of the head of a lane.
enum Sent {
    /// Delivered, carrying this many rows.
    Delivered(usize),
    /// Nothing to send (a superseded edit, a dead letter).
    Skipped,
    /// Failed for now: the lane waits.
    HeldBack,
}

/// The audit lines at the head of a lane that are due, in order.
fn digest_run(rows: &[OutboxRow], now: i64) -> &[OutboxRow] {
    let n = rows
        .iter()
        .take_while(|r| r.kind == "audit" && r.next_attempt_at <= now && r.op == "post")
        .count();
    &rows[..n]
}

/// A chain head line as long as any can be (reserved at the end of a digest).
const HEAD_RESERVE: usize = 120;

/// Sends the audit lines `run` (at least [`DIGEST_MIN`]) as digests: as many lines as fit in
/// one message with the closing head line; the rest waits for the next turn of the lane.
async fn send_digest(
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

/// Marks `ids` delivered in the message `message_id` carried by the first of them, with a few
/// quick retries (the message exists: sending it again would show the lines twice).
async fn record_carried(core: &Core, ids: &[i64], message_id: Option<&str>) -> anyhow::Result<()> {
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

/// After a failed call for `rows` (the head of a lane): a 429 or a transient failure holds the
/// lane back (in this process and in the store, so waiting rows are not read again until then);
/// a permanent one keeps the rows with their error, and the lane goes on.
async fn failed(
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

/// Delivers one row (the head of its lane).
async fn deliver_row(
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

/// How long the outbox lease lasts without renewal.
pub const LEASE_MS: i64 = 15_000;

/// Delivers for every adapter until `shutdown`; woken by `core.outbox_wake`, by a lane that
/// finished, and every 500 ms. Each lane with something due gets its own task (at most one
/// per lane), so a slow or rate-limited channel never delays another. With several replicas on
/// one store, only the holder of the `outbox` lease delivers, so a message is posted once and
/// in order. At shutdown the lanes finish the call in flight.
pub async fn run(
    core: Arc<Core>,
    outs: Vec<Arc<dyn Outbound>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let me = core.lease_holder("outbox");
    // SQLite stores have one process (a lock file enforces it): no lease needed, and a killed
    // predecessor's lease must not delay delivery.
    let sqlite = core.store.backend() == crate::store::Backend::Sqlite;
    let lease = (!sqlite).then(|| Arc::new(Lease::new(&me)));
    let mut lanes = tokio::task::JoinSet::new();
    loop {
        let holder = match &lease {
            None => true,
            Some(l) => l.held(&core).await.unwrap_or_else(|e| {
                tracing::error!(error = format!("{e:#}"), "outbox lease check failed");
                false
            }),
        };
        if holder {
            for out in &outs {
                start_lanes(&core, out, lease.as_ref(), &shutdown, &mut lanes).await;
            }
        }
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = core.outbox_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => {}
            Some(_) = lanes.join_next(), if !lanes.is_empty() => {}
        }
    }
    while lanes.join_next().await.is_some() {}
    // A last delivery of what was queued while the process stopped (an interruption notice,
    // the audit lines of the last requests), bounded so a slow platform cannot hold the stop.
    let held = match &lease {
        None => true,
        Some(l) => l.held(&core).await.unwrap_or(false),
    };
    if held {
        for out in &outs {
            let last = deliver_due_leased(&core, out.as_ref(), lease.as_ref().map(|_| me.as_str()));
            match tokio::time::timeout(LAST_PASS, last).await {
                Ok(Err(e)) => tracing::warn!(error = format!("{e:#}"), "last outbox pass failed"),
                Err(_) => tracing::warn!("last outbox pass cut short at shutdown; the rest is delivered by the next process"),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Starts a task for every lane of `out` with something due that no task delivers and no
/// 429 holds back.
async fn start_lanes(
    core: &Arc<Core>,
    out: &Arc<dyn Outbound>,
    lease: Option<&Arc<Lease>>,
    shutdown: &watch::Receiver<bool>,
    lanes: &mut tokio::task::JoinSet<()>,
) {
    let platform = out.platform().as_str();
    let now = core.clock.now_ms();
    let due = match core.store.outbox_lanes(platform, now).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "reading the outbox lanes failed");
            return;
        }
    };
    for channel in due {
        if Lane::busy_or_held(core, platform, &channel, now) {
            continue;
        }
        let (core, out, lease, stop) =
            (core.clone(), out.clone(), lease.cloned(), shutdown.clone());
        lanes.spawn(async move {
            if let Err(e) =
                drain_lane(&core, out.as_ref(), &channel, lease.as_deref(), Some(&stop)).await
            {
                tracing::error!(error = format!("{e:#}"), channel = %channel, "outbox lane failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(
            backoff(40),
            Duration::from_secs(256).min(Duration::from_secs(300))
        );
    }
}
