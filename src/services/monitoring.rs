//! Post-deploy monitoring windows: reminders with health probes, `monitor-ok` and
//! `monitor-rollback`.
//!
//! A window (opened by the worker after a successful deploy, rollback, restore or emergency, or
//! by `monitor`; see [`crate::core::command::monitor::open_window_tx`]) lives in the store with
//! one row per reminder. [`tick`], which the scheduler calls every few seconds under its lease,
//! posts what is due:
//!
//! - **Reminders.** Each due reminder becomes a card (elapsed time, what changed, the health
//!   probe of `environments.<env>.health_url`, the last lines of `app_logs`, and the
//!   `monitor-ok:<window>` / `monitor-rollback:<window>` buttons) for the origin channel and the
//!   report channels. The reminder is marked posted by a conditional update
//!   (`WHERE posted_at IS NULL`) in the same transaction as its outbox rows and audit event, so
//!   it is posted once even when two replicas tick at the same moment, and a reminder that came
//!   due while dualkey was down (or busy) is posted once at the next tick, marked late with its
//!   due and posted times. The latest reminder (by due time) closes the window with a summary.
//!   Times on cards are in `schedule.timezone`, with the zone's name.
//! - **Probes between reminders.** Every [`PROBE_EVERY_MS`] of clock time the window's health URL
//!   is probed (the probe is claimed in the store first, so one process probes). The first
//!   failure of a streak is posted at once, and a recovery line when it recovers.
//!
//! Probes and log commands run outside any transaction; a transaction only records their result.
//! The windows of a tick run at the same time, each within [`WINDOW_DEADLINE`], and a reminder's
//! probe and `app_logs` run at the same time too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::config::Route;
use crate::core::audit::NewAudit;
use crate::core::command::monitor::{card_key, hhmm};
use crate::core::dispatch::Core;
use crate::core::event::ChannelRef;
use crate::core::human;
use crate::core::reply::{Button, ButtonStyle, Card, Confirm, Reply, Style};
use crate::store::{NewOutbox, ReminderRow, WindowRow};

/// How often an open window's health URL is probed between reminders (clock time).
pub const PROBE_EVERY_MS: i64 = 30_000;
/// How long a health probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `app_logs` may run.
pub const LOGS_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of `app_logs`' output is read back (its last lines).
pub const LOGS_KEEP_BYTES: usize = 64 * 1024;
/// The longest one window's part of a [`tick`] may take (probe, logs and store); the windows of
/// a tick run at the same time, so a slow one does not delay the others.
pub const WINDOW_DEADLINE: Duration = Duration::from_secs(30);
/// How many log lines a reminder shows (each cut to [`LOG_LINE_CHARS`]).
pub const LOG_LINES: usize = 10;
/// Longest log line shown.
pub const LOG_LINE_CHARS: usize = 200;
/// A reminder posted more than this after its due time is marked late.
pub const LATE_AFTER_MS: i64 = 60_000;

/// One health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// A 2xx answer within the timeout.
    pub ok: bool,
    /// `HTTP 200 in 12 ms`, or the error.
    pub summary: String,
}

/// GETs `url` with a short timeout: the status and latency, or the error.
pub async fn probe(url: &str) -> Probe {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .connect_timeout(PROBE_TIMEOUT)
            .build()
            .expect("a plain HTTP client builds")
    });
    let start = Instant::now();
    match client.get(url).send().await {
        Ok(resp) => {
            let ms = start.elapsed().as_millis();
            let status = resp.status();
            Probe {
                ok: status.is_success(),
                summary: format!("HTTP {} in {ms} ms", status.as_u16()),
            }
        }
        Err(e) => {
            let ms = start.elapsed().as_millis();
            let why = if e.is_timeout() {
                format!("no answer within {} s", PROBE_TIMEOUT.as_secs())
            } else if e.is_connect() {
                "connection failed".to_string()
            } else {
                "request failed".to_string()
            };
            // reqwest's chain names the cause (connection refused, DNS); the URL has no secret
            // worth hiding beyond what the config already shows, but keep it short.
            let mut cause = String::new();
            let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
            while let Some(s) = src {
                cause = s.to_string();
                src = s.source();
            }
            let cause: String = cause.chars().take(160).collect();
            Probe {
                ok: false,
                summary: if cause.is_empty() {
                    format!("error after {ms} ms: {why}")
                } else {
                    format!("error after {ms} ms: {why} ({cause})")
                },
            }
        }
    }
}

/// The last lines of `app_logs` (argv, never a shell; stdout and stderr read together into a
/// ring of their last [`LOGS_KEEP_BYTES`]; with a timeout after which the command is killed and
/// what it printed so far is shown), or why not.
async fn app_logs(argv: &[String]) -> Result<Vec<String>, String> {
    match crate::dbops::app::capture(argv, LOGS_TIMEOUT, LOGS_KEEP_BYTES).await {
        Ok(out) => {
            let lines: Vec<&str> = out
                .lines
                .iter()
                .map(String::as_str)
                .filter(|l| !l.trim().is_empty())
                .collect();
            let start = lines.len().saturating_sub(LOG_LINES);
            let mut shown: Vec<String> = lines[start..]
                .iter()
                .map(|l| {
                    let l = crate::core::audit::redact(l);
                    if l.chars().count() > LOG_LINE_CHARS {
                        format!("{}…", l.chars().take(LOG_LINE_CHARS).collect::<String>())
                    } else {
                        l
                    }
                })
                .collect();
            if out.timed_out {
                shown.push(format!("(stopped after {} s)", LOGS_TIMEOUT.as_secs()));
            } else if !out.ok() {
                shown.push(format!(
                    "(app_logs exited with {})",
                    out.code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "a signal".into())
                ));
            }
            Ok(shown)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// One pass of the monitoring job: posts the reminders and probe failures that are due. The
/// scheduler calls it under its lease; it is also safe to call from several processes at once.
pub async fn tick(core: &Arc<Core>) -> anyhow::Result<()> {
    let now = core.clock.now_ms();
    let mut set = tokio::task::JoinSet::new();
    for w in core.store.open_windows().await? {
        let core = core.clone();
        set.spawn(async move {
            match tokio::time::timeout(WINDOW_DEADLINE, tick_window(&core, &w, now)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(window = %w.id, error = format!("{e:#}"), "monitoring window tick failed")
                }
                // Dropped mid-way: its open transaction rolls back, and the next tick tries again.
                Err(_) => tracing::error!(
                    window = %w.id,
                    secs = WINDOW_DEADLINE.as_secs(),
                    "monitoring window tick did not finish in time"
                ),
            }
        });
    }
    while let Some(res) = set.join_next().await {
        if let Err(e) = res {
            tracing::error!(error = %e, "monitoring window task failed");
        }
    }
    Ok(())
}

fn health_url(core: &Core, env: &str) -> Option<String> {
    core.settings
        .environments
        .get(env)
        .and_then(|e| e.health_url.clone())
}

fn channels(core: &Core, w: &WindowRow) -> Vec<ChannelRef> {
    let origin = w
        .channel_json
        .as_deref()
        .and_then(|j| serde_json::from_str::<ChannelRef>(j).ok());
    core.channels_for(origin.as_ref(), Route::Report, &w.env)
}

#[tracing::instrument(skip_all, fields(window = %w.id, env = %w.env))]
async fn tick_window(core: &Core, w: &WindowRow, now: i64) -> anyhow::Result<()> {
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
    // Claim the probe, so that of several processes one probes.
    let mut tx = core.store.begin().await?;
    if !tx.claim_probe(&w.id, now, PROBE_EVERY_MS).await? {
        return Ok(());
    }
    tx.commit().await?;
    let p = probe(&url).await;
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
        let (action, reply) = if p.ok {
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
            card.buttons = buttons(&cur);
            ("monitor.probe.failed", Reply::card(card))
        };
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
        for c in channels(core, &cur) {
            tx.enqueue_outbox(
                &NewOutbox {
                    platform: c.platform.as_str().into(),
                    channel: c.id.clone(),
                    op: "post".into(),
                    message_id: None,
                    payload: payload.clone(),
                    card_key: None,
                },
                now,
            )
            .await?;
        }
    }
    tx.commit().await?;
    core.outbox_wake.notify_one();
    Ok(())
}

/// Posts the due reminders of a window (more than one only after dualkey was down), each once.
async fn post_reminders(
    core: &Core,
    w: &WindowRow,
    all: &[ReminderRow],
    due: &[&ReminderRow],
    now: i64,
) -> anyhow::Result<()> {
    let env = core.settings.environments.get(&w.env);
    let url = env.and_then(|e| e.health_url.as_deref());
    let argv = env.and_then(|e| e.app_logs.as_deref());
    let (probe, logs) = tokio::join!(
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
    );
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
    for r in due {
        let next = all
            .iter()
            .filter(|n| n.idx != r.idx && (n.due_at, n.idx) > (r.due_at, r.idx))
            .min_by_key(|n| (n.due_at, n.idx));
        let card = reminder_card(
            &cur,
            r,
            total,
            r.idx == last,
            next,
            now,
            tz,
            probe.as_ref(),
            logs.as_ref(),
            requester.as_deref(),
        );
        let payload = serde_json::to_string(&card)?;
        if !tx
            .mark_reminder_posted(&cur.id, r.idx, now, &payload)
            .await?
        {
            // Another process posted it first: this transaction (and what it recorded) is
            // dropped, which rolls it back.
            tracing::info!(reminder = r.idx, "reminder already posted elsewhere");
            return Ok(());
        }
        let key = card_key(&cur.id, r.idx);
        for c in &channels {
            if tx.register_card(&key, c.platform.as_str(), &c.id).await? {
                tx.enqueue_outbox(
                    &NewOutbox {
                        platform: c.platform.as_str().into(),
                        channel: c.id.clone(),
                        op: "post".into(),
                        message_id: None,
                        payload: payload.clone(),
                        card_key: Some(key.clone()),
                    },
                    now,
                )
                .await?;
            }
        }
        let late = now - r.due_at > LATE_AFTER_MS;
        core.audit_tx(
            &mut tx,
            NewAudit::system(
                "monitor.reminder",
                Some(&cur.env),
                json!({
                    "window": cur.id,
                    "reminder": r.idx + 1,
                    "of": total,
                    "due": human::time(r.due_at),
                    "late": late,
                    "health": probe.as_ref().map(|p| p.summary.clone()),
                }),
            ),
        )
        .await?;
    }
    if moved {
        // The reminder card shows it; the streak is recorded so the probes between reminders
        // do not post it a second time (and post the recovery when it comes).
        let p = probe.as_ref().expect("moved only after a probe");
        let action = if p.ok {
            "monitor.probe.recovered"
        } else {
            "monitor.probe.failed"
        };
        core.audit_tx(
            &mut tx,
            NewAudit::system(
                action,
                Some(&cur.env),
                json!({"window": cur.id, "health": p.summary}),
            ),
        )
        .await?;
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
    let migrations: Vec<String> = serde_json::from_str(&w.migrations_json).unwrap_or_default();
    let changed = match (&w.operation_id, w.kind.as_str()) {
        (Some(op), kind) => match requester {
            Some(who) => format!("{kind} {op}, asked by {who}"),
            None => format!("{kind} {op}"),
        },
        (None, _) => format!("nothing recorded: opened by hand by {}", w.opened_by),
    };
    card.fields = vec![
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
    ];
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
    if now - r.due_at > LATE_AFTER_MS {
        // Only the facts: dualkey may have been down, or up but busy; it does not know which.
        card.lines.push(format!(
            "late: due {}, posted {}",
            hhmm(r.due_at, tz),
            hhmm(now, tz)
        ));
    }
    match logs {
        Some(Ok(lines)) if !lines.is_empty() => {
            card.lines.push("Recent logs (app_logs):".into());
            card.lines.extend(lines.iter().map(|l| format!("  {l}")));
        }
        Some(Ok(_)) => card.lines.push("app_logs printed nothing.".into()),
        Some(Err(e)) => card.lines.push(format!("app_logs failed: {e}")),
        None => {}
    }
    if !last {
        card.buttons = buttons(w);
    }
    Reply::card(card)
}

/// The buttons of an open window: `monitor-ok`, and `monitor-rollback` when the change has a
/// migration to roll back.
fn buttons(w: &WindowRow) -> Vec<Button> {
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

/// The `status` line of an environment's active monitoring window: id, elapsed time and next
/// reminder; `None` when no window is open.
pub async fn status_line(core: &Core, env: &str) -> anyhow::Result<Option<String>> {
    let now = core.clock.now_ms();
    let Some(w) = core
        .store
        .open_windows()
        .await?
        .into_iter()
        .rev()
        .find(|w| w.env == env)
    else {
        return Ok(None);
    };
    let reminders = core.store.reminders(&w.id).await.context("reminders")?;
    let next = reminders
        .iter()
        .filter(|r| r.posted_at.is_none())
        .min_by_key(|r| (r.due_at, r.idx));
    let what = match &w.operation_id {
        Some(op) => format!("after {} {op}", w.kind),
        None => format!("opened by {}", w.opened_by),
    };
    let next = match next {
        Some(r) => format!(
            "next reminder {}/{} at {} (in {})",
            r.idx + 1,
            reminders.len(),
            hhmm(r.due_at, core.settings.schedule.tz()),
            human::span(r.due_at - now)
        ),
        None => "no reminder left".into(),
    };
    let health = match &w.last_probe {
        Some(p) if w.failing == 1 => format!(", health FAILING: {p}"),
        Some(p) => format!(", health {p}"),
        None => String::new(),
    };
    Ok(Some(format!(
        "{} ({what}), open for {}, {next}{health}",
        w.id,
        human::age(now - w.opened_at)
    )))
}
