//! A window's reminders: each due one posted once (its card, outbox rows and audit event in
//! one transaction), the window closed by its latest one, and the window's buttons.

use serde_json::json;

use super::channels;
use super::probes::{app_logs, probe, Probe};
use super::LATE_AFTER_MS;
use crate::core::audit::NewAudit;
use crate::core::context::Core;
use crate::core::event::ChannelRef;
use crate::core::human;
use crate::core::notify::enqueue_posts;
use crate::core::reply::{Button, ButtonStyle, Card, Confirm, Reply, Style};
use crate::core::window::{card_key, hhmm};
use crate::store::{ReminderRow, Tx, WindowRow};

/// What the reminder cards of one pass over a window share.
struct Pass<'a> {
    cur: &'a WindowRow,
    all: &'a [ReminderRow],
    total: i64,
    /// The index of the latest reminder (by due time), which closes the window.
    last: i64,
    now: i64,
    tz: chrono_tz::Tz,
    probe: Option<&'a Probe>,
    logs: Option<&'a Result<Vec<String>, String>>,
    requester: Option<&'a str>,
}

/// Posts the due reminders of a window (more than one only after dualkey was down), each once.
pub(super) async fn post_reminders(
    core: &Core,
    w: &WindowRow,
    all: &[ReminderRow],
    due: &[&ReminderRow],
    now: i64,
) -> anyhow::Result<()> {
    let (probe, logs) = probe_and_logs(core, w).await;
    let requester = match &w.operation_id {
        Some(op) => core.store.get_operation(op).await?.map(|o| o.requester),
        None => None,
    };
    let mut tx = core.store.begin().await?;
    let Some(mut cur) = tx.lock_window(&w.id).await? else {
        return Ok(());
    };
    if cur.state != "open" {
        return Ok(());
    }
    let mut moved = false;
    if let Some(p) = &probe {
        let to = i64::from(!p.ok);
        moved = tx
            .record_probe(&w.id, now, p.ok, &p.summary, cur.failing, to)
            .await?;
        cur.probes += 1;
        cur.probe_failures += i64::from(!p.ok);
    }
    let total = all.len() as i64;
    // The window closes with its latest reminder (by due time, whatever the order of the rows).
    let last = all
        .iter()
        .max_by_key(|r| (r.due_at, r.idx))
        .map(|r| r.idx)
        .unwrap_or(-1);
    let tz = core.settings.schedule.tz();
    let channels = channels(core, &cur);
    let pass = Pass {
        cur: &cur,
        all,
        total,
        last,
        now,
        tz,
        probe: probe.as_ref(),
        logs: logs.as_ref(),
        requester: requester.as_deref(),
    };
    for r in due {
        if !post_reminder(core, &mut tx, &pass, &channels, r).await? {
            return Ok(());
        }
    }
    if moved {
        audit_streak(core, &mut tx, &cur, probe.as_ref()).await?;
    }
    if due.iter().any(|r| r.idx == last)
        && tx
            .close_window(&cur.id, now, "system", "last reminder")
            .await?
    {
        core.audit_tx(
            &mut tx,
            NewAudit::system(
                "monitor.closed",
                Some(&cur.env),
                json!({"window": cur.id, "reason": "last reminder", "probes": cur.probes, "failures": cur.probe_failures}),
            ),
        )
        .await?;
    }
    tx.commit().await?;
    core.outbox_wake.notify_one();
    Ok(())
}

/// The window's health probe and the last lines of `app_logs`, run at the same time (each
/// `None` when not configured).
async fn probe_and_logs(
    core: &Core,
    w: &WindowRow,
) -> (Option<Probe>, Option<Result<Vec<String>, String>>) {
    let env = core.settings.environments.get(&w.env);
    let url = env.and_then(|e| e.health_url.as_deref());
    let argv = env.and_then(|e| e.app_logs.as_deref());
    tokio::join!(
        async {
            match url {
                Some(url) => Some(probe(url).await),
                None => None,
            }
        },
        async {
            match argv {
                Some(argv) => Some(app_logs(argv).await),
                None => None,
            }
        }
    )
}

/// Posts reminder `r` in `tx`: marked posted, its card queued for `channels` and audited.
/// False when another process posted it first (the caller then drops `tx`, which rolls back).
async fn post_reminder(
    core: &Core,
    tx: &mut Box<dyn Tx>,
    pass: &Pass<'_>,
    channels: &[ChannelRef],
    r: &ReminderRow,
) -> anyhow::Result<bool> {
    let (cur, all, total, now) = (pass.cur, pass.all, pass.total, pass.now);
    let probe = pass.probe;
    let next = all
        .iter()
        .filter(|n| n.idx != r.idx && (n.due_at, n.idx) > (r.due_at, r.idx))
        .min_by_key(|n| (n.due_at, n.idx));
    let card = reminder_card(
        cur,
        r,
        total,
        r.idx == pass.last,
        next,
        now,
        pass.tz,
        probe,
        pass.logs,
        pass.requester,
    );
    let payload = serde_json::to_string(&card)?;
    if !tx
        .mark_reminder_posted(&cur.id, r.idx, now, &payload)
        .await?
    {
        // Another process posted it first: this transaction (and what it recorded) is
        // dropped, which rolls it back.
        tracing::info!(reminder = r.idx, "reminder already posted elsewhere");
        return Ok(false);
    }
    let key = card_key(&cur.id, r.idx);
    enqueue_posts(tx.as_mut(), channels, &payload, Some(&key), now).await?;
    let late = now - r.due_at > LATE_AFTER_MS;
    core.audit_tx(
        tx,
        NewAudit::system(
            "monitor.reminder",
            Some(&cur.env),
            json!({
                "window": cur.id,
                "reminder": r.idx + 1,
                "of": total,
                "due": human::time(r.due_at),
                "late": late,
                "health": probe.map(|p| p.summary.clone()),
            }),
        ),
    )
    .await?;
    Ok(true)
}

/// Audits the start or end of a failing streak that a reminder's probe moved.
async fn audit_streak(
    core: &Core,
    tx: &mut Box<dyn Tx>,
    cur: &WindowRow,
    probe: Option<&Probe>,
) -> anyhow::Result<()> {
    // The reminder card shows it; the streak is recorded so the probes between reminders
    // do not post it a second time (and post the recovery when it comes).
    let p = probe.expect("moved only after a probe");
    let action = if p.ok {
        "monitor.probe.recovered"
    } else {
        "monitor.probe.failed"
    };
    core.audit_tx(
        tx,
        NewAudit::system(
            action,
            Some(&cur.env),
            json!({"window": cur.id, "health": p.summary}),
        ),
    )
    .await?;
    Ok(())
}

/// The card of reminder `r` (1-based `r.idx + 1` of `total`; `last`: the latest, which closes
/// the window). Times are in `tz` (`schedule.timezone`), with the zone's name.
#[allow(clippy::too_many_arguments)]
fn reminder_card(
    w: &WindowRow,
    r: &ReminderRow,
    total: i64,
    last: bool,
    next: Option<&ReminderRow>,
    now: i64,
    tz: chrono_tz::Tz,
    probe: Option<&Probe>,
    logs: Option<&Result<Vec<String>, String>>,
    requester: Option<&str>,
) -> Reply {
    let n = r.idx + 1;
    let title = if last {
        format!(
            "Monitoring {}: final reminder {n}/{total}, window {} closed",
            w.env, w.id
        )
    } else {
        format!(
            "Monitoring {}: reminder {n}/{total}, window {}",
            w.env, w.id
        )
    };
    let style = match probe {
        Some(p) if !p.ok => Style::Danger,
        Some(_) => Style::Success,
        None => Style::Info,
    };
    let mut card = Card::new(title, style);
    card.fields = card_fields(w, now, probe, requester);
    match next {
        Some(nx) if !last => card.fields.push((
            "Next reminder".into(),
            format!(
                "{} (+{})",
                hhmm(nx.due_at, tz),
                human::age(nx.due_at - w.opened_at)
            ),
        )),
        _ => card.fields.push((
            "Summary".into(),
            format!(
                "{} probe(s), {} failed; the window is closed",
                w.probes, w.probe_failures
            ),
        )),
    }
    card.lines = card_lines(r, now, tz, logs);
    if !last {
        card.buttons = buttons(w);
    }
    Reply::card(card)
}

/// The fields of a reminder card: window, environment, elapsed time, what changed, its
/// migrations and the health probe.
fn card_fields(
    w: &WindowRow,
    now: i64,
    probe: Option<&Probe>,
    requester: Option<&str>,
) -> Vec<(String, String)> {
    let migrations: Vec<String> = serde_json::from_str(&w.migrations_json).unwrap_or_default();
    let changed = match (&w.operation_id, w.kind.as_str()) {
        (Some(op), kind) => match requester {
            Some(who) => format!("{kind} {op}, asked by {who}"),
            None => format!("{kind} {op}"),
        },
        (None, _) => format!("nothing recorded: opened by hand by {}", w.opened_by),
    };
    vec![
        ("Window".into(), w.id.clone()),
        ("Environment".into(), w.env.clone()),
        ("Elapsed".into(), human::age(now - w.opened_at)),
        ("Changed".into(), changed),
        (
            "Migrations".into(),
            if migrations.is_empty() {
                "none".into()
            } else {
                migrations.join(", ")
            },
        ),
        (
            "Health".into(),
            match probe {
                Some(p) if p.ok => p.summary.clone(),
                Some(p) => format!("FAILING: {}", p.summary),
                None => format!("not probed (no health_url for {})", w.env),
            },
        ),
    ]
}

/// The lines of a reminder card: late (when it is), then the recent logs.
fn card_lines(
    r: &ReminderRow,
    now: i64,
    tz: chrono_tz::Tz,
    logs: Option<&Result<Vec<String>, String>>,
) -> Vec<String> {
    let mut out = Vec::new();
    if now - r.due_at > LATE_AFTER_MS {
        // Only the facts: dualkey may have been down, or up but busy; it does not know which.
        out.push(format!(
            "late: due {}, posted {}",
            hhmm(r.due_at, tz),
            hhmm(now, tz)
        ));
    }
    match logs {
        Some(Ok(lines)) if !lines.is_empty() => {
            out.push("Recent logs (app_logs):".into());
            out.extend(lines.iter().map(|l| format!("  {l}")));
        }
        Some(Ok(_)) => out.push("app_logs printed nothing.".into()),
        Some(Err(e)) => out.push(format!("app_logs failed: {e}")),
        None => {}
    }
    out
}

/// The buttons of an open window: `monitor-ok`, and `monitor-rollback` when the change has a
/// migration to roll back.
pub(super) fn buttons(w: &WindowRow) -> Vec<Button> {
    let mut out = vec![Button::new(
        format!("monitor-ok:{}", w.id),
        "Looks good: end monitoring",
        ButtonStyle::Primary,
    )];
    if let Some(target) = &w.rollback_target {
        out.push(
            Button::new(
                format!("monitor-rollback:{}", w.id),
                format!("Roll back {target}"),
                ButtonStyle::Danger,
            )
            .with_confirm(Confirm {
                title: "Ask for a rollback?".into(),
                text: format!(
                    "This opens a rollback request for {target} in {}; it still needs a second person's approval.",
                    w.env
                ),
                confirm: "Ask".into(),
                deny: "Back".into(),
            }),
        );
    }
    out
}
