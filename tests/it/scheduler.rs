//! The scheduler (SPEC section 7), driven by a manual clock and direct `tick(now)` calls: cron
//! slots across daylight-saving changes, nightly verified backups with retention and a report,
//! failure alerts, the missed run at start-up, backup-age alerts, and two replicas on one
//! PostgreSQL store.

use std::path::Path;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use dualkey::clock::Clock;
use dualkey::core::context::Core;
use dualkey::core::reply::Reply;
use dualkey::services::backups::schedule::previous_slot;
use dualkey::services::scheduler::Scheduler;

use crate::support::{spawn_app_with, Backend, TestApp, TestDb};
use crate::taskflow::{copy_migration, INIT, TASKFLOW};

/// A bot whose `production` is a real target database with the TaskFlow `init` migration
/// applied; `staging` has no scheduled backups; reports go to Slack channel `C0REPORTS`.
pub struct Sched {
    pub app: TestApp,
    /// Dropped with the test.
    #[allow(dead_code)]
    pub target: TestDb,
    pub var: String,
}

/// `schedule` is the body of `[schedule]`; `env_extra` goes into `[environments.production]`.
pub async fn setup(store: Backend, schedule: &str, env_extra: &str) -> Sched {
    let target = TestDb::create("sched").await;
    let var = format!("DK_TEST_URL_{}", uuid::Uuid::new_v4().simple());
    std::env::set_var(&var, &target.url);
    let (schedule, env_extra, v) = (schedule.to_string(), env_extra.to_string(), var.clone());
    let app = spawn_app_with(store, 1, 0, move |t| {
        crate::support::own_production(&t, &v, "{dir}", &env_extra)
            .replace(
                "[approvals]",
                "[slack]\nenabled = true\nreport_channel = \"C0REPORTS\"\n[approvals]",
            )
            .replace(
                "[environments.staging]\n",
                "[environments.staging]\nscheduled_backups = false\n",
            )
            + &format!("[schedule]\n{schedule}\n")
    })
    .await;
    let migrations = app.dir.path().join("migrations");
    std::fs::copy(
        Path::new(TASKFLOW).join("prisma/migrations/migration_lock.toml"),
        migrations.join("migration_lock.toml"),
    )
    .unwrap();
    copy_migration(INIT, &migrations);
    dualkey::dbops::prisma::deploy(
        &target.url,
        &migrations,
        &mut dualkey::dbops::prisma::NoProgress,
    )
    .await
    .unwrap();
    Sched { app, target, var }
}

/// Sets a manual clock to `ms`.
pub fn set_clock(app: &TestApp, ms: i64) {
    app.clock.advance(ms - app.clock.now_ms());
}

/// UTC milliseconds of a date and time.
pub fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .unwrap()
        .timestamp_millis()
}

/// Sets the clock to `ms` and runs one tick there.
pub async fn tick_at(app: &TestApp, s: &Scheduler, ms: i64) {
    set_clock(app, ms);
    s.tick(ms).await;
}

/// Texts queued for Slack channel `C0REPORTS`, oldest first.
pub async fn reports(core: &Core) -> Vec<String> {
    core.store
        .outbox_all("slack")
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.channel == "C0REPORTS")
        .filter_map(|r| serde_json::from_str::<Reply>(&r.payload).ok())
        .map(|r| r.to_text())
        .collect()
}

async fn audit_details(core: &Core, action: &str) -> Vec<String> {
    core.store
        .audit_tail(500)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == action)
        .map(|e| e.details.to_string())
        .collect()
}

async fn scheduled_backups(core: &Core) -> Vec<dualkey::store::BackupRow> {
    core.store
        .list_backups("production")
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.kind == "scheduled")
        .collect()
}

/// The slot a cron job runs for at every 5 minutes of [from, to), without repeats, in order.
fn slots(pattern: &str, tz: chrono_tz::Tz, from: i64, to: i64) -> Vec<String> {
    let cron = dualkey::config::parse_cron(pattern).unwrap();
    let mut out: Vec<String> = Vec::new();
    let mut t = from;
    while t < to {
        let s = previous_slot(&cron, tz, t)
            .unwrap()
            .format("%Y-%m-%d %H:%M %Z")
            .to_string();
        if out.last() != Some(&s) {
            out.push(s);
        }
        t += 5 * 60_000;
    }
    out
}

#[test]
fn cron_slots_in_berlin_across_both_daylight_saving_changes() {
    let berlin = chrono_tz::Europe::Berlin;
    // Spring forward on Sunday 2026-03-29: 02:00 CET becomes 03:00 CEST. A 02:00 or 02:30 job
    // falls into the gap; croner runs it once, at the first instant after it (03:00 CEST).
    let spring = (utc(2026, 3, 27, 12, 0), utc(2026, 3, 31, 12, 0));
    assert_eq!(
        slots("0 2 * * *", berlin, spring.0, spring.1),
        [
            "2026-03-27 02:00 CET",
            "2026-03-28 02:00 CET",
            "2026-03-29 03:00 CEST",
            "2026-03-30 02:00 CEST",
            "2026-03-31 02:00 CEST"
        ]
    );
    assert_eq!(
        slots("30 2 * * *", berlin, spring.0, spring.1),
        [
            "2026-03-27 02:30 CET",
            "2026-03-28 02:30 CET",
            "2026-03-29 03:00 CEST",
            "2026-03-30 02:30 CEST",
            "2026-03-31 02:30 CEST"
        ]
    );
    // Fall back on Sunday 2026-10-25: 03:00 CEST becomes 02:00 CET, so 02:00-02:59 happens
    // twice. The job runs once, at the first 02:00 (CEST).
    let fall = (utc(2026, 10, 23, 12, 0), utc(2026, 10, 27, 12, 0));
    assert_eq!(
        slots("0 2 * * *", berlin, fall.0, fall.1),
        [
            "2026-10-23 02:00 CEST",
            "2026-10-24 02:00 CEST",
            "2026-10-25 02:00 CEST",
            "2026-10-26 02:00 CET",
            "2026-10-27 02:00 CET"
        ]
    );
}

/// The scheduler itself, ticked every 30 minutes through both DST weekends: the nightly job
/// starts once per day, at the slots above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nightly_job_starts_once_per_day_across_daylight_saving_changes() {
    let app = spawn_app_with(Backend::Sqlite, 1, 0, |t| {
        t.replace(
            "[environments.production]\n",
            "[environments.production]\nscheduled_backups = false\n",
        )
        .replace(
            "[environments.staging]\n",
            "[environments.staging]\nscheduled_backups = false\n",
        ) + "[schedule]\ntimezone = \"Europe/Berlin\"\nbackup_cron = \"0 2 * * *\"\n"
    })
    .await;
    for (from, to) in [
        (utc(2026, 3, 27, 0, 30), utc(2026, 3, 30, 23, 30)),
        (utc(2026, 10, 22, 23, 30), utc(2026, 10, 26, 23, 30)),
    ] {
        set_clock(&app, from);
        let s = Scheduler::new(app.core.clone());
        let mut t = from;
        while t < to {
            tick_at(&app, &s, t).await;
            t += 30 * 60_000;
        }
    }
    let started: Vec<String> = audit_details(&app.core, "schedule.run.started")
        .await
        .into_iter()
        .map(|d| {
            serde_json::from_str::<serde_json::Value>(&d).unwrap()["slot"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        started,
        [
            "2026-03-27 02:00 CET",
            "2026-03-28 02:00 CET",
            "2026-03-29 03:00 CEST",
            "2026-03-30 02:00 CEST",
            "2026-10-23 02:00 CEST",
            "2026-10-24 02:00 CEST",
            "2026-10-25 02:00 CEST",
            "2026-10-26 02:00 CET",
        ]
    );
    assert_eq!(
        audit_details(&app.core, "schedule.run.finished")
            .await
            .len(),
        8
    );
}

/// Four nights of verified backups: each is reported (size, duration, verification, kept,
/// oldest/newest, total, trend); the fourth night's retention deletes the backups older than a
/// day beyond the newest two, audited; retention keeps `min_keep` even when all are old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nightly_backups_are_verified_retained_and_reported() {
    let s = setup(
        Backend::Sqlite,
        "backup_cron = \"0 2 * * *\"\ntimezone = \"UTC\"",
        "retention_days = 1\nmin_keep = 2",
    )
    .await;
    let app = &s.app;
    set_clock(app, utc(2026, 6, 1, 1, 0));
    let sched = Scheduler::new(app.core.clone());
    for day in 1..=4 {
        tick_at(app, &sched, utc(2026, 6, day, 2, 0)).await;
        // Ticks later that night run nothing again.
        tick_at(app, &sched, utc(2026, 6, day, 2, 1)).await;
    }
    let all = scheduled_backups(&app.core).await;
    assert_eq!(all.len(), 4, "one backup per night: {all:?}");
    assert!(all
        .iter()
        .all(|b| b.state == "ok" && b.verified_at.is_some()));
    let deleted: Vec<&str> = all
        .iter()
        .filter(|b| b.deleted_at.is_some())
        .map(|b| b.id.as_str())
        .collect();
    // Newest first: nights 4 and 3 are the two kept; 2 and 1 are older than a day.
    assert_eq!(deleted, [all[2].id.as_str(), all[3].id.as_str()]);
    assert!(!Path::new(&all[3].path).exists());
    assert!(Path::new(&all[0].path).exists());
    let audited = audit_details(&app.core, "retention.deleted").await;
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert!(audited.iter().any(|d| d.contains(&all[3].id)));

    let texts = reports(&app.core).await;
    let nightly: Vec<&String> = texts
        .iter()
        .filter(|t| t.starts_with("Scheduled backup report"))
        .collect();
    assert_eq!(nightly.len(), 4, "{texts:#?}");
    let last = nightly[3];
    for want in [
        "production: ok",
        &all[0].id,
        "size: ",
        "duration: ",
        "verification: verified",
        "backups kept: 2,",
        "newest: ",
        "oldest: ",
        "size trend (last 2)",
    ] {
        assert!(last.contains(want), "missing {want:?} in {last}");
    }
    // Night 3 deleted night 1's backup, night 4 night 2's.
    assert!(
        last.contains(&format!("retention deleted: {}", all[2].id)),
        "{last}"
    );
    assert!(
        nightly[2].contains(&format!("retention deleted: {}", all[3].id)),
        "{}",
        nightly[2]
    );
    assert!(!last.contains("staging"), "staging has no schedule: {last}");
    assert!(
        nightly[0].contains("retention deleted: nothing"),
        "{}",
        nightly[0]
    );

    // Ten days later every backup is old: min_keep (2) still keeps the newest two.
    set_clock(app, utc(2026, 6, 14, 12, 0));
    let gone = dualkey::services::backups::take::apply_retention(&app.core, "production")
        .await
        .unwrap();
    assert!(gone.is_empty(), "{gone:?}");
    let live = app
        .core
        .store
        .list_backups("production")
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.deleted_at.is_none())
        .count();
    assert_eq!(live, 2);
}

/// A backup that cannot be taken (the database is unreachable) is an alert naming the error
/// and the last good backup; no catalog entry of that night is ok, and retention does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backup_is_an_alert_naming_the_error_and_the_last_good_backup() {
    let s = setup(Backend::Sqlite, "backup_cron = \"0 2 * * *\"", "").await;
    let app = &s.app;
    set_clock(app, utc(2026, 6, 1, 1, 0));
    let sched = Scheduler::new(app.core.clone());
    tick_at(app, &sched, utc(2026, 6, 1, 2, 0)).await;
    let good = scheduled_backups(&app.core).await;
    assert_eq!(good.len(), 1);
    // Nothing listens on port 1.
    std::env::set_var(&s.var, "postgres://postgres@127.0.0.1:1/gone");
    tick_at(app, &sched, utc(2026, 6, 2, 2, 0)).await;
    let after = app.core.store.list_backups("production").await.unwrap();
    assert_eq!(
        after.iter().filter(|b| b.state == "ok").count(),
        1,
        "{after:?}"
    );
    assert!(after
        .iter()
        .all(|b| b.started_at < utc(2026, 6, 2, 0, 0) || b.state != "ok"));
    let texts = reports(&app.core).await;
    let alert = texts
        .iter()
        .find(|t| t.contains("ALERT: the scheduled backup of production failed"))
        .unwrap_or_else(|| panic!("{texts:#?}"));
    assert!(alert.contains("database unreachable"), "{alert}");
    assert!(
        alert.contains(&format!("last good backup: {}", good[0].id)),
        "{alert}"
    );
    let report = texts.last().unwrap();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("production: FAILED") && t.contains("retention did not run")),
        "{report}"
    );
    assert_eq!(audit_details(&app.core, "schedule.alert").await.len(), 1);
}

/// A backup missed while dualkey was down runs once at the next start on the same day, marked
/// late; another start that day runs nothing; a slot missed on an earlier day is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_backup_runs_once_at_start_up_on_the_same_day_only() {
    let s = setup(Backend::Sqlite, "backup_cron = \"0 2 * * *\"", "").await;
    let app = &s.app;
    set_clock(app, utc(2026, 6, 1, 1, 0));
    let first = Scheduler::new(app.core.clone());
    tick_at(app, &first, utc(2026, 6, 1, 2, 0)).await;
    assert_eq!(scheduled_backups(&app.core).await.len(), 1);
    // Down from before 02:00 on June 2 until 10:00.
    set_clock(app, utc(2026, 6, 2, 10, 0));
    let second = Scheduler::new(app.core.clone());
    second.run_due().await;
    second.run_due().await;
    assert_eq!(scheduled_backups(&app.core).await.len(), 2);
    let texts = reports(&app.core).await;
    let late = texts.last().unwrap();
    assert!(
        late.contains("ran late: missed 02:00 while dualkey was down"),
        "{late}"
    );
    // Restarted again the same day: the slot is taken.
    set_clock(app, utc(2026, 6, 2, 11, 0));
    let third = Scheduler::new(app.core.clone());
    third.run_due().await;
    assert_eq!(scheduled_backups(&app.core).await.len(), 2);
    // Down over the June 3 run, back on June 4 at 01:00: June 3 is another day, skipped.
    set_clock(app, utc(2026, 6, 4, 1, 0));
    let fourth = Scheduler::new(app.core.clone());
    fourth.run_due().await;
    assert_eq!(scheduled_backups(&app.core).await.len(), 2);
    let skipped = audit_details(&app.core, "schedule.run.skipped").await;
    assert!(
        skipped
            .iter()
            .any(|d| d.contains("2026-06-03 02:00") && d.contains("earlier day")),
        "{skipped:?}"
    );
    let started = audit_details(&app.core, "schedule.run.started").await;
    assert_eq!(started.len(), 2, "{started:?}");
    assert!(started[1].contains("ran late"), "{started:?}");
}

/// The backup-age alert is posted once when the newest verified backup gets too old, not on
/// every check, and once more when a fresh backup resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_age_alert_is_posted_once_per_breach_and_once_on_resolve() {
    // A schedule that never comes due in this test (January 1st only).
    let s = setup(
        Backend::Sqlite,
        "backup_cron = \"0 2 1 1 *\"\nmax_backup_age = \"26h\"",
        "",
    )
    .await;
    let app = &s.app;
    let t0 = utc(2026, 6, 1, 12, 0);
    set_clock(app, t0);
    let sched = Scheduler::new(app.core.clone());
    let b = dualkey::services::backups::take::take_backup(
        &app.core,
        "production",
        dualkey::dbops::backup::BackupKind::Manual,
        Some("alice"),
        None,
        None,
    )
    .await
    .unwrap();
    let hour = 3_600_000;
    tick_at(app, &sched, t0 + hour).await;
    let alert = "ALERT: backups of production are too old";
    let count = |texts: &[String], what: &str| texts.iter().filter(|t| t.contains(what)).count();
    assert_eq!(count(&reports(&app.core).await, alert), 0);
    for h in [27, 28, 29, 40] {
        tick_at(app, &sched, t0 + h * hour).await;
    }
    let texts = reports(&app.core).await;
    assert_eq!(count(&texts, alert), 1, "{texts:#?}");
    assert!(texts.iter().any(|t| t.contains(alert) && t.contains(&b.id)));
    // A fresh backup resolves it, once.
    let fresh = dualkey::services::backups::take::take_backup(
        &app.core,
        "production",
        dualkey::dbops::backup::BackupKind::Manual,
        Some("alice"),
        None,
        None,
    )
    .await
    .unwrap();
    for h in [41, 42, 43] {
        tick_at(app, &sched, t0 + h * hour).await;
    }
    let texts = reports(&app.core).await;
    assert_eq!(count(&texts, alert), 1);
    assert_eq!(count(&texts, "RESOLVED"), 1, "{texts:#?}");
    assert!(texts
        .iter()
        .any(|t| t.contains("RESOLVED") && t.contains(&fresh.id)));
    // A second breach is a second alert.
    tick_at(app, &sched, t0 + 80 * hour).await;
    assert_eq!(count(&reports(&app.core).await, alert), 2);
    let audited = audit_details(&app.core, "schedule.alert").await;
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert_eq!(
        audit_details(&app.core, "schedule.alert_resolved")
            .await
            .len(),
        1
    );
}

/// Two replicas (two cores, each with its own connection pool and scheduler) on one PostgreSQL
/// store tick at the same instant: one backup, one report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_postgres_store_take_one_backup_per_scheduled_run() {
    let s = setup(Backend::Postgres, "backup_cron = \"0 2 * * *\"", "").await;
    let a = &s.app;
    let store_url = a.db.as_ref().unwrap().url.clone();
    let other = Arc::new(Core::new(
        (*a.core.settings).clone(),
        dualkey::store::open(&store_url).await.unwrap(),
        a.clock.clone() as Arc<dyn Clock>,
        Arc::new(dualkey::services::facts::RunbookFacts),
    ));
    set_clock(a, utc(2026, 6, 1, 1, 0));
    let one = Scheduler::new(a.core.clone());
    let two = Scheduler::new(other.clone());
    for day in 1..=2 {
        let at = utc(2026, 6, day, 2, 0);
        set_clock(a, at);
        tokio::join!(one.tick(at), two.tick(at));
        tokio::join!(one.tick(at + 1000), two.tick(at + 1000));
    }
    let backups = scheduled_backups(&a.core).await;
    assert_eq!(backups.len(), 2, "one per night: {backups:?}");
    let texts = reports(&a.core).await;
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.starts_with("Scheduled backup report"))
            .count(),
        2,
        "{texts:#?}"
    );
    assert_eq!(
        audit_details(&a.core, "schedule.run.started").await.len(),
        2
    );
}

/// `status` shows the next scheduled backup in the schedule's time zone and how far off it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_next_scheduled_backup() {
    let app = spawn_app_with(Backend::Sqlite, 1, 0, |t| {
        t + "[schedule]\ntimezone = \"Europe/Berlin\"\nbackup_cron = \"0 2 * * *\"\n"
    })
    .await;
    // 2026-06-01 20:48 UTC is 22:48 CEST: the next run is 02:00 CEST, in 3h12m.
    set_clock(&app, utc(2026, 6, 1, 20, 48));
    let r = app.cmd("alice", "status").await;
    assert!(
        r.contains("next scheduled backup: 2026-06-02 02:00 CEST (in 3h12m"),
        "{r}"
    );
    let r = app.cmd("alice", "status staging").await;
    assert!(
        r.contains("next scheduled backup: 2026-06-02 02:00 CEST"),
        "{r}"
    );
}

/// A cron pattern that does not parse is refused at load, naming the key.
#[test]
fn bad_cron_patterns_are_refused_at_load_naming_the_key() {
    for (key, line) in [
        ("schedule.backup_cron", "backup_cron = \"0 25 * * *\""),
        ("schedule.backup_cron", "backup_cron = \"0 2 * *\""),
        (
            "schedule.restore_drill_cron",
            "restore_drill_cron = \"every night\"",
        ),
    ] {
        let text = crate::support::test_config("sqlite://x.db", Path::new("m"), 1, 0)
            + &format!("[schedule]\n{line}\n");
        let err = dualkey::config::Settings::from_toml(&text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{line}: {err}");
    }
}

/// With no verified backup, the backup-age alert counts from when a check first saw none (kept
/// in the store): a restart neither resolves it (which used to panic the scheduler) nor resets
/// the count, and only a verified backup resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_no_verified_backup_alert_open_and_does_not_panic() {
    let s = setup(
        Backend::Sqlite,
        "backup_cron = \"0 2 1 1 *\"\nmax_backup_age = \"26h\"",
        "",
    )
    .await;
    let app = &s.app;
    let hour = 3_600_000;
    let t0 = utc(2026, 6, 1, 12, 0);
    set_clock(app, t0);
    let first = Scheduler::new(app.core.clone());
    tick_at(app, &first, t0).await;
    // Restarted 20 h later: the count goes on from t0, not from the restart.
    set_clock(app, t0 + 20 * hour);
    let second = Scheduler::new(app.core.clone());
    tick_at(app, &second, t0 + 27 * hour).await;
    let alert = "ALERT: backups of production are too old";
    let count = |texts: &[String], what: &str| texts.iter().filter(|t| t.contains(what)).count();
    let texts = reports(&app.core).await;
    assert_eq!(count(&texts, alert), 1, "{texts:#?}");
    assert!(texts.iter().any(|t| t.contains("no verified backup")));
    // Restarted again: the young process must neither resolve the alert nor panic.
    set_clock(app, t0 + 28 * hour);
    let third = Scheduler::new(app.core.clone());
    tick_at(app, &third, t0 + 28 * hour).await;
    tick_at(app, &third, t0 + 29 * hour).await;
    let texts = reports(&app.core).await;
    assert_eq!(count(&texts, alert), 1, "{texts:#?}");
    assert_eq!(count(&texts, "RESOLVED"), 0, "{texts:#?}");
    // A verified backup resolves it.
    let fresh = dualkey::services::backups::take::take_backup(
        &app.core,
        "production",
        dualkey::dbops::backup::BackupKind::Manual,
        Some("alice"),
        None,
        None,
    )
    .await
    .unwrap();
    tick_at(app, &third, t0 + 30 * hour).await;
    let texts = reports(&app.core).await;
    assert!(
        texts
            .iter()
            .any(|t| t.contains("RESOLVED") && t.contains(&fresh.id)),
        "{texts:#?}"
    );
}

/// A bot killed during the nightly backup: the next start finishes the run as `interrupted`
/// (audited, with an alert), marks the scheduled backup it left `running` failed, and makes
/// the backup up once that day.
async fn killed_mid_run(store: Backend) {
    let s = setup(store, "backup_cron = \"0 2 * * *\"", "").await;
    let app = &s.app;
    let slot = utc(2026, 6, 2, 2, 0);
    set_clock(app, slot);
    // What a kill at 02:00:05 leaves: the slot taken, no finish, a scheduled backup running.
    let manual = dualkey::services::backups::take::take_backup(
        &app.core,
        "production",
        dualkey::dbops::backup::BackupKind::Manual,
        Some("alice"),
        None,
        None,
    )
    .await
    .unwrap();
    let mut orphan = manual.clone();
    orphan.id = "b-orphan".into();
    orphan.kind = "scheduled".into();
    orphan.state = "running".into();
    orphan.started_at = slot + 5_000;
    orphan.operation_id = None;
    let mut tx = app.core.store.begin().await.unwrap();
    assert!(tx
        .claim_run("backup", slot, "scheduler-dead", false, slot)
        .await
        .unwrap());
    tx.put_backup(&orphan).await.unwrap();
    tx.commit().await.unwrap();
    // Restarted at 02:30 the same day.
    set_clock(app, slot + 1_800_000);
    let sched = Scheduler::new(app.core.clone());
    sched.startup().await;
    tick_at(app, &sched, slot + 1_800_000).await;
    let interrupted = audit_details(&app.core, "schedule.run.interrupted").await;
    assert_eq!(interrupted.len(), 1, "{interrupted:?}");
    assert!(interrupted[0].contains("b-orphan"), "{interrupted:?}");
    let alerts = audit_details(&app.core, "schedule.alert").await;
    assert!(
        alerts.iter().any(|a| a.contains("run-interrupted")),
        "{alerts:?}"
    );
    let b = app
        .core
        .store
        .get_backup("b-orphan")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.state, "failed");
    let texts = reports(&app.core).await;
    assert!(
        texts
            .iter()
            .any(|t| t.contains("ALERT") && t.contains("was interrupted")),
        "{texts:#?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("Scheduled backup report") && t.contains("made up")),
        "{texts:#?}"
    );
    let ok = |v: Vec<dualkey::store::BackupRow>| v.into_iter().filter(|b| b.state == "ok").count();
    assert_eq!(ok(scheduled_backups(&app.core).await), 1);
    // Another restart the same day makes nothing up again.
    set_clock(app, slot + 3_600_000);
    let again = Scheduler::new(app.core.clone());
    again.startup().await;
    tick_at(app, &again, slot + 3_600_000).await;
    assert_eq!(ok(scheduled_backups(&app.core).await), 1);
    assert_eq!(
        audit_details(&app.core, "schedule.run.interrupted")
            .await
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_the_nightly_backup_is_reported_and_made_up_once_sqlite() {
    killed_mid_run(Backend::Sqlite).await;
}

/// On PostgreSQL the dead holder's run lease is expired (it never took one here), so a
/// replica starting recovers it; a run whose holder renews its lease is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_the_nightly_backup_is_reported_and_made_up_once_postgres() {
    killed_mid_run(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_progress_on_another_postgres_replica_is_not_interrupted() {
    let s = setup(Backend::Postgres, "backup_cron = \"0 2 * * *\"", "").await;
    let app = &s.app;
    let slot = utc(2026, 6, 2, 2, 0);
    set_clock(app, slot);
    assert!(app
        .core
        .store
        .try_lease(
            &format!("run:backup:{slot}"),
            "scheduler-alive",
            slot,
            60_000
        )
        .await
        .unwrap());
    let mut tx = app.core.store.begin().await.unwrap();
    assert!(tx
        .claim_run("backup", slot, "scheduler-alive", false, slot)
        .await
        .unwrap());
    tx.commit().await.unwrap();
    set_clock(app, slot + 30_000);
    let sched = Scheduler::new(app.core.clone());
    sched.startup().await;
    assert!(audit_details(&app.core, "schedule.run.interrupted")
        .await
        .is_empty());
    // Its holder stopped renewing: a minute later the periodic check recovers it.
    set_clock(app, slot + 90_000);
    sched.recover_runs(slot + 90_000).await.unwrap();
    assert_eq!(
        audit_details(&app.core, "schedule.run.interrupted")
            .await
            .len(),
        1
    );
}

/// When the store refuses the failure alert of one environment, the report still has that
/// environment's section, with the error and a warning that the alert was not recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_keeps_an_environment_whose_alert_the_store_refused() {
    use sqlx::Connection;
    let s = setup(Backend::Postgres, "backup_cron = \"0 2 * * *\"", "").await;
    let app = &s.app;
    let store_url = app.db.as_ref().unwrap().url.clone();
    let mut c = sqlx::PgConnection::connect(&store_url).await.unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_alert() RETURNS trigger AS $$ BEGIN \
           IF NEW.action = 'schedule.alert' THEN RAISE EXCEPTION 'store refused the alert'; END IF; \
           RETURN NEW; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER refuse_alert BEFORE INSERT ON audit_events \
           FOR EACH ROW EXECUTE FUNCTION refuse_alert();",
    )
    .execute(&mut c)
    .await
    .unwrap();
    // Nothing listens on port 1: the backup fails, then recording its alert fails.
    std::env::set_var(&s.var, "postgres://postgres@127.0.0.1:1/gone");
    set_clock(app, utc(2026, 6, 1, 1, 0));
    let sched = Scheduler::new(app.core.clone());
    tick_at(app, &sched, utc(2026, 6, 1, 2, 0)).await;
    let texts = reports(&app.core).await;
    let report = texts
        .iter()
        .find(|t| t.contains("Scheduled backup report"))
        .unwrap_or_else(|| panic!("{texts:#?}"));
    assert!(report.contains("production: FAILED"), "{report}");
    assert!(report.contains("database unreachable"), "{report}");
    assert!(
        report.contains("the alert could not be recorded"),
        "{report}"
    );
}
