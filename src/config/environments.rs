//! One `[environments.NAME]` block: the database, migrations and backup folders, retention and
//! the app commands, with the defaults of its optional keys.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

use super::ChannelOverrides;

/// One `[environments.NAME]` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSettings {
    /// Name of the environment variable that holds the database URL.
    pub database_url_env: String,
    /// Prisma migrations folder.
    #[serde(default = "default_migrations_dir")]
    pub migrations_dir: PathBuf,
    /// Backup folder (a sub-folder per environment is used).
    #[serde(default = "default_backup_dir")]
    pub backup_dir: PathBuf,
    /// Days to keep scheduled and manual backups.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Newest verified backups always kept.
    #[serde(default = "default_min_keep")]
    pub min_keep: u32,
    /// Part of the scheduled backup.
    #[serde(default = "default_true")]
    pub scheduled_backups: bool,
    /// Whether deploy needs approval.
    #[serde(default = "default_true")]
    pub deploy_needs_approval: bool,
    /// Environment that must have the migrations first.
    #[serde(default)]
    pub require_staging: Option<String>,
    /// Health probe URL for monitoring reminders.
    #[serde(default)]
    pub health_url: Option<String>,
    /// App stop command (argv), optional: without it (and `app_start`) dualkey never stops the
    /// app, `app stop|start` say so, and restoring plans warn that the app keeps running.
    #[serde(default)]
    pub app_stop: Option<Vec<String>>,
    /// App start command (argv); set together with `app_stop`.
    #[serde(default)]
    pub app_start: Option<Vec<String>>,
    /// App status command (argv), optional.
    #[serde(default)]
    pub app_status: Option<Vec<String>>,
    /// App logs command (argv), optional.
    #[serde(default)]
    pub app_logs: Option<Vec<String>>,
    /// Seconds an app command may run.
    #[serde(default = "default_app_timeout")]
    pub app_timeout_secs: u64,
    /// Folder holding `pg_dump`, `pg_restore` and `psql` (default: `PATH`, then the newest
    /// `/usr/lib/postgresql/<major>/bin`).
    #[serde(default)]
    pub pg_bin_dir: Option<PathBuf>,
    /// `[environments.NAME.slack]`: this environment's Slack channels, replacing `[slack]`'s.
    #[serde(default)]
    pub slack: ChannelOverrides,
    /// `[environments.NAME.discord]`: this environment's Discord channels.
    #[serde(default)]
    pub discord: ChannelOverrides,
}

pub(super) fn default_migrations_dir() -> PathBuf {
    PathBuf::from("prisma/migrations")
}
fn default_backup_dir() -> PathBuf {
    PathBuf::from("backups")
}
fn default_retention_days() -> u32 {
    7
}
fn default_min_keep() -> u32 {
    3
}
fn default_true() -> bool {
    true
}
fn default_app_timeout() -> u64 {
    120
}

impl EnvironmentSettings {
    /// True when dualkey may stop and start the app (`app_stop` and `app_start` are set;
    /// validation makes them come together).
    pub fn controls_app(&self) -> bool {
        self.app_stop.is_some() && self.app_start.is_some()
    }

    /// Reads the database URL from the environment variable named by `database_url_env`.
    pub fn database_url(&self) -> Result<SecretString, String> {
        match std::env::var(&self.database_url_env) {
            Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v)),
            _ => Err(format!(
                "the environment variable {} (environments.*.database_url_env) is not set",
                self.database_url_env
            )),
        }
    }
}
