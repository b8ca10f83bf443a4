//! The `[schedule]` (backup and drill cron patterns, time zone, backup age) and `[monitoring]`
//! (reminder times) sections, and the cron parser both load and the scheduler use.

use std::time::Duration;

use serde::Deserialize;

use super::HumanDuration;

/// `[schedule]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSettings {
    /// When the scheduled backup runs, in [`ScheduleSettings::tz`]; parsed at load (read it with
    /// [`ScheduleSettings::backup_schedule`]).
    pub backup_cron: String,
    /// When restore drills run (none when unset); parsed at load.
    pub restore_drill_cron: Option<String>,
    /// A tz database name (`UTC`, `Europe/Berlin`), checked at load; read it with
    /// [`ScheduleSettings::tz`].
    pub timezone: String,
    pub max_backup_age: HumanDuration,
}

impl ScheduleSettings {
    /// The time zone of `backup_cron`. Validation refused names outside the tz database, so
    /// the UTC fallback is only reached on settings that were never validated.
    pub fn tz(&self) -> chrono_tz::Tz {
        self.timezone.parse().unwrap_or(chrono_tz::Tz::UTC)
    }

    /// `backup_cron`, parsed. Validation refused patterns that do not parse, so the fallback
    /// (`0 2 * * *`) is only reached on settings that were never validated.
    pub fn backup_schedule(&self) -> croner::Cron {
        parse_cron(&self.backup_cron)
            .or_else(|_| parse_cron("0 2 * * *"))
            .expect("the default pattern parses")
    }

    /// `restore_drill_cron`, parsed; `None` when unset (or, on unvalidated settings, invalid).
    pub fn drill_schedule(&self) -> Option<croner::Cron> {
        self.restore_drill_cron
            .as_deref()
            .and_then(|p| parse_cron(p).ok())
    }
}

/// Parses a 5-field cron pattern (minute hour day-of-month month day-of-week) with croner; the
/// error says what is wrong.
pub fn parse_cron(pattern: &str) -> Result<croner::Cron, String> {
    if pattern.split_whitespace().count() != 5 {
        return Err(format!(
            "`{pattern}` must have 5 fields: minute hour day-of-month month day-of-week"
        ));
    }
    pattern
        .parse::<croner::Cron>()
        .map_err(|e| format!("`{pattern}` is not a valid cron pattern: {e}"))
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        ScheduleSettings {
            backup_cron: "0 2 * * *".into(),
            restore_drill_cron: None,
            timezone: "UTC".into(),
            max_backup_age: HumanDuration(Duration::from_secs(26 * 3600)),
        }
    }
}

/// `[monitoring]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringSettings {
    pub reminders: Vec<HumanDuration>,
}

impl Default for MonitoringSettings {
    fn default() -> Self {
        MonitoringSettings {
            reminders: [5, 15, 30]
                .into_iter()
                .map(|m| HumanDuration(Duration::from_secs(m * 60)))
                .collect(),
        }
    }
}
