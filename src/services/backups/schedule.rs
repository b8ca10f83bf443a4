//! When the next scheduled backup runs: the cron slots in the configured time zone.

use chrono::{DateTime, TimeZone as _};
use chrono_tz::Tz;

use crate::core::human;
use crate::core::ports::Reads;

/// How a slot time is shown: `2026-03-29 02:00 CEST`.
pub fn show(t: &DateTime<Tz>) -> String {
    t.format("%Y-%m-%d %H:%M %Z").to_string()
}

/// The scheduled instant of a cron job at or before `now` (ms), in the schedule's time zone.
pub fn previous_slot(cron: &croner::Cron, tz: Tz, now: i64) -> Option<DateTime<Tz>> {
    let now = tz.timestamp_millis_opt(now).single()?;
    cron.find_previous_occurrence(&now, true).ok()
}

/// The next scheduled instant of a cron job strictly after `now` (ms).
pub fn next_slot(cron: &croner::Cron, tz: Tz, now: i64) -> Option<DateTime<Tz>> {
    let now = tz.timestamp_millis_opt(now).single()?;
    cron.find_next_occurrence(&now, false).ok()
}

/// The `status` line for the next scheduled backup of `env`: `2026-03-29 02:00 CEST (in 5h12m)`.
pub fn next_backup_text(reads: Reads<'_>, env: &str) -> String {
    let Some(e) = reads.settings.environments.get(env) else {
        return "environment not configured".into();
    };
    if !e.scheduled_backups {
        return format!("none (environments.{env}.scheduled_backups is false)");
    }
    let s = &reads.settings.schedule;
    let now = reads.clock.now_ms();
    match next_slot(&s.backup_schedule(), s.tz(), now) {
        Some(t) => format!(
            "{} (in {}, schedule `{}`)",
            show(&t),
            human::span(t.timestamp_millis() - now),
            s.backup_cron
        ),
        None => format!("never (schedule `{}` has no next time)", s.backup_cron),
    }
}
