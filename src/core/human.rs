//! Human-readable times, ages, sizes and short ids, shared by cards, reports and audit lines.

use std::time::Duration;

use crate::config::format_duration;
use crate::core::reply::Severity;

impl Severity {
    /// The label of a warning in the text fallback (the shell, plain-text cards): `NOTE` for
    /// something only worth knowing (Slack and Discord show it without a warning label), else
    /// `WARNING`.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "NOTE",
            Severity::Caution | Severity::Danger => "WARNING",
        }
    }
}

/// A UTC time, `2026-11-25 04:18:31Z`.
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A span to the second, rounded up (`14m30s`); `now` when nothing is left.
pub fn span(ms: i64) -> String {
    if ms <= 0 {
        return "now".into();
    }
    format_duration(Duration::from_secs(((ms + 999) / 1000) as u64))
}

/// An age rounded down to the minute (`2h13m`, `under a minute`).
pub fn age(ms: i64) -> String {
    let secs = (ms.max(0) / 1000) as u64;
    if secs < 60 {
        return "under a minute".into();
    }
    format_duration(Duration::from_secs(secs / 60 * 60))
}

/// A size in binary units (`11.8 KB`, `1.1 GB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A short random id: `prefix` and 9 lowercase hex digits (`r3f9a1c2b7`, `o…`, `b…`).
pub fn new_id(prefix: char) -> String {
    format!("{prefix}{:09x}", rand::random::<u64>() & 0xf_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renderings() {
        assert_eq!(Severity::Info.label(), "NOTE");
        assert_eq!(Severity::Caution.label(), "WARNING");
        assert_eq!(Severity::Danger.label(), "WARNING");
        assert_eq!(span(0), "now");
        assert_eq!(span(870_001), "14m31s");
        assert_eq!(age(59_999), "under a minute");
        assert_eq!(age(2 * 3_600_000 + 13 * 60_000 + 59_000), "2h13m");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(12_083), "11.8 KB");
        assert_eq!(time(0), "1970-01-01 00:00:00Z");
        let id = new_id('b');
        assert!(
            id.len() == 10 && id.starts_with('b') && id[1..].chars().all(|c| c.is_ascii_hexdigit())
        );
    }
}
