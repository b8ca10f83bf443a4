//! Monitoring windows, the core's rules: which reminders a window gets, opening one (it
//! supersedes the environment's older window), and the `monitor-ok` / `monitor-rollback` clicks
//! that end it or ask for the rollback. The `monitor` command and the worker open windows here;
//! `services::monitoring` posts their reminders.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use crate::config::Route;
use crate::core::audit::NewAudit;
use crate::core::context::{Core, UserError};
use crate::core::event::{ChannelRef, InboundEvent};
use crate::core::human;
use crate::core::identity::Operator;
use crate::core::notify::enqueue_posts;
use crate::core::operation::{OperationKind, Plan, StepAction};
use crate::core::ports::Responder;
use crate::core::ports::{ReminderRow, StoreResult, Tx, WindowRow};
use crate::core::reply::{Body, Reply};

/// The reminder times of a window (ms after opening), in increasing order without repeats: the
/// configured reminders up to `minutes`, the last one at `minutes` exactly; all of them when
/// `minutes` is `None`. (The config check refuses a list that is not increasing; sorting here
/// keeps the reminder rows in time order whatever the settings say.)
pub fn reminder_offsets(reminders: &[Duration], minutes: Option<u32>) -> Vec<i64> {
    let mut all: Vec<i64> = reminders.iter().map(|d| d.as_millis() as i64).collect();
    all.sort_unstable();
    all.dedup();
    let Some(m) = minutes else {
        return all;
    };
    let end = i64::from(m) * 60_000;
    let mut out: Vec<i64> = all.into_iter().filter(|o| *o < end).collect();
    out.push(end);
    out
}

/// [`reminder_offsets`] of the configured `monitoring.reminders`.
pub(crate) fn offsets_of(core: &Core, minutes: Option<u32>) -> Vec<i64> {
    let reminders: Vec<Duration> = core
        .settings
        .monitoring
        .reminders
        .iter()
        .map(|d| d.0)
        .collect();
    reminder_offsets(&reminders, minutes)
}

/// A window to open.
#[derive(Debug, Clone)]
pub struct NewWindow {
    /// Environment.
    pub env: String,
    /// Operator id, or `system`.
    pub opened_by: String,
    /// `platform:account` of the person who opened it by hand.
    pub account: Option<String>,
    /// The operation that made the change.
    pub operation_id: Option<String>,
    /// `deploy`, `rollback`, `restore`, `emergency`, `manual`.
    pub kind: String,
    /// The migrations the change applied or un-applied.
    pub migrations: Vec<String>,
    /// What `monitor-rollback` rolls back.
    pub rollback_target: Option<String>,
    /// Where the change was asked for.
    pub channel: Option<ChannelRef>,
    /// Length in minutes (`None`: the configured reminders).
    pub minutes: Option<u32>,
}

/// What an operation changed, for the window it opens: `(kind, migrations, rollback target)`;
/// `None` for kinds that open no window (backups, app commands, resolve).
pub fn change_of(
    kind: &OperationKind,
    plan: &Plan,
) -> Option<(String, Vec<String>, Option<String>)> {
    match kind {
        OperationKind::Deploy => {
            let migrations: Vec<String> = plan
                .steps
                .iter()
                .filter_map(|s| match &s.action {
                    StepAction::Deploy { migrations, .. } => Some(migrations.clone()),
                    _ => None,
                })
                .flatten()
                .collect();
            let target = migrations.last().cloned();
            Some(("deploy".into(), migrations, target))
        }
        OperationKind::Rollback { migration, .. } => {
            Some(("rollback".into(), vec![migration.clone()], None))
        }
        OperationKind::Restore { .. } => Some(("restore".into(), vec![], None)),
        OperationKind::Emergency => Some(("emergency".into(), vec![], None)),
        _ => None,
    }
}

/// How often [`open_window_tx`] closes a window that another transaction opened at the same
/// moment and tries again before giving up.
const OPEN_ATTEMPTS: usize = 5;

/// Opens a monitoring window inside `tx`: closes the environment's older open window (a newer
/// change supersedes it), inserts the window and its reminders, audits `monitor.opened`, and
/// queues a line for the origin and report channels. The worker calls it in the transaction of
/// the operation's final transition.
///
/// The store allows one open window per environment (a partial unique index). When another
/// transaction opened one at the same moment (two replicas on PostgreSQL), the insert waits for
/// it to commit and then inserts nothing; that window is closed as superseded and the insert is
/// tried again.
pub async fn open_window_tx(
    core: &Core,
    tx: &mut Box<dyn Tx>,
    new: NewWindow,
) -> StoreResult<WindowRow> {
    let now = core.clock.now_ms();
    let id = crate::core::human::new_id('w');
    let offsets = offsets_of(core, new.minutes);
    let w = window_row(&id, now, &new);
    let reminders = reminder_rows(&id, now, &offsets);
    insert_superseding(core, tx, &w, &reminders, now).await?;
    let at: Vec<String> = offsets
        .iter()
        .map(|o| format!("+{}", human::span(*o)))
        .collect();
    let operator = (new.opened_by != "system").then(|| new.opened_by.clone());
    core.audit_tx(
        tx,
        NewAudit {
            operator,
            account: new.account.clone(),
            env: Some(new.env.clone()),
            action: "monitor.opened".into(),
            details: json!({"window": id, "kind": new.kind, "operation": new.operation_id, "migrations": new.migrations, "reminders": at}),
        },
    )
    .await?;
    let what = match &new.operation_id {
        Some(op) => format!("after {} {op}", new.kind),
        None => format!("opened by {}", new.opened_by),
    };
    let line = Reply::public(format!(
        "Monitoring {} ({what}): window {id}, reminders at {} with a health probe; the last one closes it.",
        new.env,
        at.join(", ")
    ));
    let payload = serde_json::to_string(&line).expect("reply serializes");
    let channels = core.channels_for(new.channel.as_ref(), Route::Report, &new.env);
    enqueue_posts(tx.as_mut(), &channels, &payload, None, now).await?;
    Ok(w)
}

/// The row of a new window `id` opened at `now`.
fn window_row(id: &str, now: i64, new: &NewWindow) -> WindowRow {
    WindowRow {
        id: id.to_string(),
        env: new.env.clone(),
        opened_at: now,
        opened_by: new.opened_by.clone(),
        operation_id: new.operation_id.clone(),
        kind: new.kind.clone(),
        migrations_json: serde_json::to_string(&new.migrations).expect("strings serialize"),
        rollback_target: new.rollback_target.clone(),
        channel_json: new
            .channel
            .as_ref()
            .map(|c| serde_json::to_string(c).expect("channel serializes")),
        state: "open".into(),
        closed_at: None,
        closed_by: None,
        close_reason: None,
        probes: 0,
        probe_failures: 0,
        last_probe_at: None,
        last_probe: None,
        failing: 0,
    }
}

/// The reminder rows of window `id` opened at `now`, one per offset.
fn reminder_rows(id: &str, now: i64, offsets: &[i64]) -> Vec<ReminderRow> {
    offsets
        .iter()
        .enumerate()
        .map(|(i, o)| ReminderRow {
            window_id: id.to_string(),
            idx: i as i64,
            due_at: now + o,
            posted_at: None,
            card_json: None,
        })
        .collect()
}

/// Inserts window `w` with its reminders, closing (and auditing) the environment's open
/// windows as superseded first, and again when another transaction opened one at the same
/// moment, up to [`OPEN_ATTEMPTS`] times; then the plain insert reports the conflict.
async fn insert_superseding(
    core: &Core,
    tx: &mut Box<dyn Tx>,
    w: &WindowRow,
    reminders: &[ReminderRow],
    now: i64,
) -> StoreResult<()> {
    let (id, env) = (&w.id, &w.env);
    let mut inserted = false;
    for _ in 0..OPEN_ATTEMPTS {
        for old in tx.open_windows_for_env(env).await? {
            let reason = format!("superseded by {id}");
            if tx.close_window(&old.id, now, "system", &reason).await? {
                core.audit_tx(
                    tx,
                    NewAudit::system(
                        "monitor.closed",
                        Some(env),
                        json!({"window": old.id, "reason": reason}),
                    ),
                )
                .await?;
            }
        }
        if tx.insert_window_if_none_open(w, reminders).await? {
            inserted = true;
            break;
        }
        tracing::info!(env = %env, window = %id, "another window opened at the same moment; closing it and trying again");
    }
    if !inserted {
        // Windows kept opening at the same moment: the plain insert reports the conflict.
        tx.insert_window(w, reminders).await?;
    }
    Ok(())
}

/// Parses a window id: `w` and 9 to 16 lowercase hex digits.
pub fn parse_window_id(s: &str) -> Result<String, String> {
    let ok = (10..=17).contains(&s.len())
        && s.starts_with('w')
        && s[1..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if ok {
        Ok(s.to_string())
    } else {
        let shown: String = s.chars().take(40).collect();
        Err(format!(
            "`{}` is not a monitoring window id (like w3f9a1c2b7)",
            shown.escape_default()
        ))
    }
}

/// The card key of reminder `idx` of window `id`.
pub fn card_key(id: &str, idx: i64) -> String {
    format!("monitor:{id}:{idx}")
}

/// A click on `monitor-ok:<id>` (`rollback` false) or `monitor-rollback:<id>` (true) by an
/// operator: checks that the window exists and is open, audits the click, ends the window or
/// asks for the rollback (an ordinary request: it still needs a second person's approval),
/// edits the window's cards and answers the clicker.
pub async fn click(
    core: &Core,
    ev: &InboundEvent,
    who: &Operator,
    rollback: bool,
    id: &str,
    out: &dyn Responder,
) -> anyhow::Result<()> {
    let verb = if rollback {
        "monitor.rollback"
    } else {
        "monitor.ok"
    };
    let audit = |env: Option<&str>, action: &str, details: serde_json::Value| NewAudit {
        operator: who.id.clone(),
        account: Some(ev.actor.qualified()),
        env: env.map(str::to_string),
        action: action.into(),
        details,
    };
    let id = match parse_window_id(id) {
        Ok(id) => id,
        Err(e) => {
            core.audit(audit(
                None,
                "action.rejected",
                json!({"action": verb, "reason": e}),
            ))
            .await?;
            return Err(UserError(e).into());
        }
    };
    let now = core.clock.now_ms();
    let mut tx = core.store.begin().await?;
    let w = tx.lock_window(&id).await?;
    let refusal = click_refusal(w.as_ref(), &id, rollback);
    let env = w.as_ref().map(|w| w.env.clone());
    if let Some(reason) = refusal {
        core.audit_tx(
            &mut tx,
            audit(
                env.as_deref(),
                &format!("{verb}.refused"),
                json!({"window": id, "reason": reason}),
            ),
        )
        .await?;
        tx.commit().await?;
        core.outbox_wake.notify_one();
        return Err(UserError(format!("Not done: {reason}.")).into());
    }
    let w = w.expect("checked above");
    let by = who.id.clone().unwrap_or_else(|| ev.actor.qualified());
    let (note, answer) = if rollback {
        let note = ask_rollback(core, &mut tx, &audit, verb, &w, &by, now).await?;
        (note, None)
    } else {
        let (note, answer) = end_window(core, &mut tx, &audit, verb, &w, &by, now).await?;
        (note, Some(answer))
    };
    tx.commit().await?;
    core.outbox_wake.notify_one();
    after_click(core, ev, who, &w, &note, answer, out).await
}

/// After a click committed: edits the window's cards with `note` and answers the clicker, or
/// (no `answer`: a rollback click) asks for the rollback through the ordinary request path.
async fn after_click(
    core: &Core,
    ev: &InboundEvent,
    who: &Operator,
    w: &WindowRow,
    note: &str,
    answer: Option<String>,
    out: &dyn Responder,
) -> anyhow::Result<()> {
    let id = &w.id;
    match answer {
        Some(text) => {
            edit_cards(core, id, note, true).await?;
            out.respond(Reply::ephemeral(text)).await
        }
        None => {
            let target = w.rollback_target.clone().expect("checked above");
            // The ordinary request path: planned, recorded, and it needs a second person.
            core.request_operation(
                ev,
                who,
                OperationKind::Rollback {
                    migration: target,
                    strategy: None,
                },
                &w.env,
                out,
            )
            .await?;
            edit_cards(core, id, note, false).await
        }
    }
}

/// Why a click on window `id` (`w`, the locked row, `None` when there is none) does nothing,
/// if it does nothing: no such window, already closed, or nothing to roll back.
fn click_refusal(w: Option<&WindowRow>, id: &str, rollback: bool) -> Option<String> {
    match w {
        None => Some(format!("there is no monitoring window {id}")),
        Some(w) if w.state != "open" => Some(format!(
            "monitoring window {id} is already closed ({})",
            w.close_reason.as_deref().unwrap_or("closed")
        )),
        Some(w) if rollback && w.rollback_target.is_none() => Some(format!(
            "monitoring window {id} follows a {}: there is no migration of it to roll back; use `restore` or `rollback` by hand",
            w.kind
        )),
        Some(_) => None,
    }
}

/// `monitor-rollback` inside `tx`: audits the click (`audit` makes the clicker's events) and
/// returns the note for the window's cards; the rollback request itself is asked for after
/// the commit.
async fn ask_rollback<A>(
    core: &Core,
    tx: &mut Box<dyn Tx>,
    audit: &A,
    verb: &str,
    w: &WindowRow,
    by: &str,
    now: i64,
) -> StoreResult<String>
where
    A: Fn(Option<&str>, &str, serde_json::Value) -> NewAudit,
{
    let id = &w.id;
    let target = w.rollback_target.clone().expect("checked above");
    core.audit_tx(
        tx,
        audit(
            Some(&w.env),
            verb,
            json!({"window": id, "migration": target}),
        ),
    )
    .await?;
    Ok(format!(
        "{by} asked to roll back {target} at {} (a request that needs approval).",
        hhmm(now, core.settings.schedule.tz())
    ))
}

/// `monitor-ok` inside `tx`: closes the window, audits the click and `monitor.closed`; returns
/// the note for the window's cards and the answer for the clicker.
async fn end_window<A>(
    core: &Core,
    tx: &mut Box<dyn Tx>,
    audit: &A,
    verb: &str,
    w: &WindowRow,
    by: &str,
    now: i64,
) -> StoreResult<(String, String)>
where
    A: Fn(Option<&str>, &str, serde_json::Value) -> NewAudit,
{
    let id = &w.id;
    tx.close_window(id, now, by, "ok").await?;
    core.audit_tx(tx, audit(Some(&w.env), verb, json!({"window": id})))
        .await?;
    core.audit_tx(
        tx,
        NewAudit::system(
            "monitor.closed",
            Some(&w.env),
            json!({"window": id, "reason": "ok", "by": by, "probes": w.probes, "failures": w.probe_failures}),
        ),
    )
    .await?;
    Ok((
        format!(
            "Ended by {by} at {}: looks good. No more reminders.",
            hhmm(now, core.settings.schedule.tz())
        ),
        format!(
            "Monitoring window {id} in {} ended; no more reminders.",
            w.env
        ),
    ))
}

/// Edits every posted reminder card of window `id`: adds `note`, drops the rollback button (a
/// request was asked for) or, when `ended`, every button.
pub async fn edit_cards(core: &Core, id: &str, note: &str, ended: bool) -> anyhow::Result<()> {
    for r in core.store.reminders(id).await? {
        let Some(json) = &r.card_json else { continue };
        let mut reply: Reply = serde_json::from_str(json).context("stored reminder card")?;
        if let Body::Card(c) = &mut reply.body {
            if ended {
                c.buttons.clear();
            } else {
                c.buttons.retain(|b| !b.id.starts_with("monitor-rollback:"));
            }
            c.lines.push(note.to_string());
        }
        core.edit_card(&card_key(id, r.idx), &reply).await?;
    }
    Ok(())
}

/// `14:05 CET`: the time of day in `tz` (the `schedule.timezone` that `status` uses too), with
/// the zone's abbreviation.
pub fn hhmm(ms: i64, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&tz).format("%H:%M %Z").to_string())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|x| Duration::from_secs(x * 60)).collect()
    }

    #[test]
    fn reminders_beyond_the_chosen_length_are_dropped_and_the_last_is_at_the_end() {
        let r = m(&[5, 15, 30]);
        let min = |v: Vec<i64>| v.into_iter().map(|x| x / 60_000).collect::<Vec<_>>();
        assert_eq!(min(reminder_offsets(&r, None)), vec![5, 15, 30]);
        assert_eq!(min(reminder_offsets(&r, Some(30))), vec![5, 15, 30]);
        assert_eq!(min(reminder_offsets(&r, Some(20))), vec![5, 15, 20]);
        assert_eq!(min(reminder_offsets(&r, Some(15))), vec![5, 15]);
        assert_eq!(min(reminder_offsets(&r, Some(3))), vec![3]);
        assert_eq!(min(reminder_offsets(&r, Some(60))), vec![5, 15, 30, 60]);
    }

    #[test]
    fn window_ids_are_checked_for_shape() {
        assert!(parse_window_id("w0123456ab").is_ok());
        for bad in [
            "",
            "w",
            "r0123456ab",
            "w0123456AB",
            "w../etc/pa",
            "w0123456ab;",
            "wébcdefabc",
        ] {
            assert!(parse_window_id(bad).is_err(), "{bad}");
        }
    }
}
