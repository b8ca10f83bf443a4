//! The `[deploy]` section: safe deploys (SPEC section 10). The lock review's thresholds, the
//! rehearsal on a restored copy, and the timeouts every migration statement runs under.

use std::time::Duration;

use serde::Deserialize;

use super::HumanDuration;

/// When a deploy is rehearsed on a restored copy of the newest verified backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RehearsalMode {
    /// Every deploy request starts a rehearsal at once.
    Auto,
    /// Only `/db rehearse [ENV]` starts one.
    OnRequest,
    /// Never.
    Off,
}

impl RehearsalMode {
    /// The name the config writes.
    pub fn as_str(self) -> &'static str {
        match self {
            RehearsalMode::Auto => "auto",
            RehearsalMode::OnRequest => "on_request",
            RehearsalMode::Off => "off",
        }
    }
}

/// `[deploy]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeploySettings {
    /// `"auto"`, `"on_request"` or `"off"`. Unset: `auto` when the newest verified backup is
    /// smaller than [`DeploySettings::rehearsal_auto_max_mb`], else `on_request`
    /// ([`DeploySettings::rehearsal_mode`]).
    pub rehearsal: Option<RehearsalMode>,
    /// The size (MiB) below which an unset `rehearsal` means `auto`.
    pub rehearsal_auto_max_mb: u64,
    /// A backup older than this is not rehearsed on: a fresh one is taken for the rehearsal.
    pub rehearsal_max_backup_age: HumanDuration,
    /// Approval only after a rehearsal of the exact pending set (by checksum) passed.
    pub require_rehearsal: bool,
    /// `lock_timeout` of every migration statement.
    pub lock_timeout: HumanDuration,
    /// `statement_timeout` of every migration statement; unset: none.
    pub statement_timeout: Option<HumanDuration>,
    /// Tries after a lock timeout, with backoff, before the step fails having applied nothing.
    pub lock_retries: u32,
    /// How long a deploy waits for a running `pg_dump` on the target before failing.
    pub dump_wait: HumanDuration,
    /// The lock review warns (rather than notes) from this many rows in the table ...
    pub review_warn_rows: u64,
    /// ... or from this many MiB (table, indexes and TOAST).
    pub review_warn_mb: u64,
    /// A session in a transaction for longer than this is a warning on the card.
    pub long_transaction: HumanDuration,
}

impl Default for DeploySettings {
    fn default() -> Self {
        DeploySettings {
            rehearsal: None,
            rehearsal_auto_max_mb: 1024,
            rehearsal_max_backup_age: HumanDuration(Duration::from_secs(24 * 3600)),
            require_rehearsal: false,
            lock_timeout: HumanDuration(Duration::from_secs(5)),
            statement_timeout: None,
            lock_retries: 5,
            dump_wait: HumanDuration(Duration::from_secs(30 * 60)),
            review_warn_rows: 10_000,
            review_warn_mb: 64,
            long_transaction: HumanDuration(Duration::from_secs(60)),
        }
    }
}

impl DeploySettings {
    /// The rehearsal mode in force: the configured one, else `auto` when the newest verified
    /// backup (`newest_backup_bytes`, `None` when there is none) is below
    /// `rehearsal_auto_max_mb`, else `on_request`.
    pub fn rehearsal_mode(&self, newest_backup_bytes: Option<u64>) -> RehearsalMode {
        if let Some(mode) = self.rehearsal {
            return mode;
        }
        match newest_backup_bytes {
            Some(b) if b >= self.rehearsal_auto_max_mb.saturating_mul(1024 * 1024) => {
                RehearsalMode::OnRequest
            }
            _ => RehearsalMode::Auto,
        }
    }

    /// Whether a table of `rows` rows and `bytes` bytes is large enough for a warning.
    pub fn is_large(&self, rows: u64, bytes: u64) -> bool {
        rows >= self.review_warn_rows || bytes >= self.review_warn_mb.saturating_mul(1024 * 1024)
    }

    /// The pause before try `attempt` (1-based) after a lock timeout: 250 ms doubling, at most
    /// 8 s.
    pub fn lock_backoff(attempt: u32) -> Duration {
        let ms = 250u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(5));
        Duration::from_millis(ms.min(8_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_rehearsal_follows_the_backup_size() {
        let d = DeploySettings::default();
        assert_eq!(d.rehearsal_mode(None), RehearsalMode::Auto);
        assert_eq!(d.rehearsal_mode(Some(10 << 20)), RehearsalMode::Auto);
        assert_eq!(d.rehearsal_mode(Some(2 << 30)), RehearsalMode::OnRequest);
        let off = DeploySettings {
            rehearsal: Some(RehearsalMode::Off),
            ..DeploySettings::default()
        };
        assert_eq!(off.rehearsal_mode(None), RehearsalMode::Off);
    }

    #[test]
    fn size_threshold_and_backoff() {
        let d = DeploySettings::default();
        assert!(!d.is_large(300, 64 * 1024));
        assert!(d.is_large(10_000, 0));
        assert!(d.is_large(0, 64 << 20));
        assert_eq!(DeploySettings::lock_backoff(1), Duration::from_millis(250));
        assert_eq!(DeploySettings::lock_backoff(3), Duration::from_millis(1000));
        assert_eq!(
            DeploySettings::lock_backoff(20),
            Duration::from_millis(8000)
        );
    }
}
