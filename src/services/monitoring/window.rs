//! One window's part of a monitoring tick: its due reminders posted, or else its health URL
//! probed (claimed first, so one process probes) and a failing streak's start or end posted.

use serde_json::json;

use super::probes::{probe, Probe};
use super::reminders::{buttons, post_reminders};
use super::{channels, health_url, PROBE_EVERY_MS};
use crate::core::audit::NewAudit;
use crate::core::context::Core;
use crate::core::human;
use crate::core::notify::enqueue_posts;
use crate::core::reply::{Card, Reply, Style};
use crate::core::window::hhmm;
use crate::store::{ReminderRow, WindowRow};

/// Posts what is due for window `w` at `now`: its reminders, or a probe between them.
#[tracing::instrument(skip_all, fields(window = %w.id, env = %w.env))]
pub(super) async fn tick_window(core: &Core, w: &WindowRow, now: i64) -> anyhow::Result<()> {
    let reminders = core.store.reminders(&w.id).await?;
    let due: Vec<&ReminderRow> = reminders
        .iter()
        .filter(|r| r.posted_at.is_none() && r.due_at <= now)
        .collect();
    if !due.is_empty() {
        return post_reminders(core, w, &reminders, &due, now).await;
    }
    if w.last_probe_at.is_some_and(|t| now - t < PROBE_EVERY_MS) {
        return Ok(());
    }
    let Some(url) = health_url(core, &w.env) else {
        return Ok(());
    };
    if !claim_probe(core, w, now).await? {
        return Ok(());
    }
    let p = probe(&url).await;
    record_probe(core, w, &reminders, &url, &p, now).await
}

/// Claims the window's probe, so that of several processes one probes.
async fn claim_probe(core: &Core, w: &WindowRow, now: i64) -> anyhow::Result<bool> {
    let mut tx = core.store.begin().await?;
    if !tx.claim_probe(&w.id, now, PROBE_EVERY_MS).await? {
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

/// Records probe `p` of window `w` (when the window is still open) and, when it starts or ends
/// a failing streak, audits it and queues its post.
async fn record_probe(
    core: &Core,
    w: &WindowRow,
    reminders: &[ReminderRow],
    url: &str,
    p: &Probe,
    now: i64,
) -> anyhow::Result<()> {
    let mut tx = core.store.begin().await?;
    let Some(cur) = tx.lock_window(&w.id).await? else {
        return Ok(());
    };
    if cur.state != "open" {
        return Ok(());
    }
    let to = i64::from(!p.ok);
    let moved = tx
        .record_probe(&w.id, now, p.ok, &p.summary, cur.failing, to)
        .await?;
    if moved {
        let elapsed = human::age(now - cur.opened_at);
        let (action, reply) = probe_post(core, &cur, reminders, p, elapsed);
        core.audit_tx(
            &mut tx,
            NewAudit::system(
                action,
                Some(&cur.env),
                json!({"window": cur.id, "health": p.summary, "url": url}),
            ),
        )
        .await?;
        let payload = serde_json::to_string(&reply)?;
        enqueue_posts(tx.as_mut(), &channels(core, &cur), &payload, None, now).await?;
    }
    tx.commit().await?;
    core.outbox_wake.notify_one();
    Ok(())
}

/// What a probe that moved the failing streak posts: the recovery line, or an alert with the
/// window's buttons; with its audit action.
fn probe_post(
    core: &Core,
    cur: &WindowRow,
    reminders: &[ReminderRow],
    p: &Probe,
    elapsed: String,
) -> (&'static str, Reply) {
    if p.ok {
        (
            "monitor.probe.recovered",
            Reply::public(format!(
                "Health probe of {} recovered (monitoring window {}, +{elapsed}): {}.",
                cur.env, cur.id, p.summary
            )),
        )
    } else {
        // An alert with the window's buttons, so the answer is one click away.
        let mut card = Card::new(
            format!(
                "Health probe of {} FAILED, monitoring window {}",
                cur.env, cur.id
            ),
            Style::Danger,
        );
        card.fields = vec![
            ("Window".into(), cur.id.clone()),
            ("Elapsed".into(), elapsed),
            ("Health".into(), format!("FAILING: {}", p.summary)),
        ];
        if let Some(r) = reminders
            .iter()
            .filter(|r| r.posted_at.is_none())
            .min_by_key(|r| (r.due_at, r.idx))
        {
            card.fields.push((
                "Next reminder".into(),
                hhmm(r.due_at, core.settings.schedule.tz()),
            ));
        }
        card.buttons = buttons(cur);
        ("monitor.probe.failed", Reply::card(card))
    }
}
