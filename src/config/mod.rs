//! Typed settings: loaded from `config/dualkey.toml` (or `--config FILE`) plus `DUALKEY_*`
//! environment overrides, and validated at start-up; one file per group of sections.
//!
//! Secrets never live in the file: keys ending in `_env` name the environment variable that
//! holds them, and they are read as [`secrecy::SecretString`] so they never reach a log, an
//! audit line or a `Debug` output.
//!
//! Layout: [`Settings`] and the limits here; the sections in `server.rs` (`[server]`,
//! `[store]`), `chat.rs` (`[slack]`, `[discord]`, routes), `people.rs` (roles, `[approvals]`,
//! `[[operators]]`), `environments.rs`, `schedule.rs` (`[schedule]`, `[monitoring]`), `deploy.rs` (`[deploy]`); value
//! helpers in `durations.rs` and `redact.rs`; reading in `load.rs`, the rules in `validate.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

mod chat;
mod deploy;
mod durations;
mod environments;
mod load;
mod people;
mod redact;
mod schedule;
mod server;
mod validate;

pub use chat::{ChannelOverrides, DiscordSettings, Route, SlackSettings};
pub use deploy::{DeploySettings, RehearsalMode};
pub use durations::{format_duration, parse_duration, HumanDuration};
pub use environments::EnvironmentSettings;
pub use people::{ApprovalSettings, OperatorSettings, Role, UnknownUsers};
pub use redact::{redact_password_params, redact_url};
pub use schedule::{parse_cron, MonitoringSettings, ScheduleSettings};
pub use server::{ServerSettings, StoreSettings};

/// The default config file, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/dualkey.toml";

/// A config error that names the exact key (or file position) that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML does not parse or has a key of the wrong type or an unknown key.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A key parsed but its value is not acceptable.
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Environment used when a command names none.
    #[serde(default)]
    pub default_environment: Option<String>,
    /// What unlisted people get.
    #[serde(default)]
    pub unknown_users: UnknownUsers,
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub store: StoreSettings,
    #[serde(default)]
    pub slack: SlackSettings,
    #[serde(default)]
    pub discord: DiscordSettings,
    #[serde(default)]
    pub approvals: ApprovalSettings,
    #[serde(default)]
    pub operators: Vec<OperatorSettings>,
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentSettings>,
    #[serde(default)]
    pub schedule: ScheduleSettings,
    #[serde(default)]
    pub monitoring: MonitoringSettings,
    #[serde(default)]
    pub deploy: DeploySettings,
    /// The file this was loaded from (not a key).
    #[serde(skip)]
    pub source: PathBuf,
}

/// The longest `approvals.ttl`: a request older than a week was reviewed against stale facts,
/// and the bound keeps `now + ttl` far from the limits of millisecond timestamps.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 86400);

/// The longest `schedule.max_backup_age` and monitoring reminder: times are added to
/// millisecond timestamps, and nothing useful lies beyond a year.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86400);

/// Checks a name used for environments and operators: `[a-z0-9][a-z0-9_-]{0,31}`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

impl Settings {
    /// The environment used when a command names none.
    pub fn default_env(&self) -> &str {
        match &self.default_environment {
            Some(d) => d,
            None => self
                .environments
                .keys()
                .next()
                .map(|s| s.as_str())
                .unwrap_or(""),
        }
    }

    /// Warnings that do not stop start-up (for example a database URL variable that is unset).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        for (name, env) in &self.environments {
            if std::env::var(&env.database_url_env).is_err() {
                w.push(format!(
                    "environments.{name}.database_url_env: the variable {} is not set; database commands for `{name}` will fail until it is",
                    env.database_url_env
                ));
            }
            if !env.controls_app() {
                w.push(format!(
                    "environments.{name}: app_stop/app_start are not set; `app stop|start` are refused and restores run while the app keeps running"
                ));
            }
        }
        if self.discord.enabled {
            let var = &self.discord.bot_token_env;
            if std::env::var(var)
                .map(|v| v.trim().is_empty())
                .unwrap_or(true)
            {
                w.push(format!("discord: the environment variable {var} is not set; `dualkey serve` will refuse to start the Discord adapter until it is"));
            }
        }
        if self.slack.enabled {
            let needed = match self.slack.mode.as_str() {
                "http" => [&self.slack.bot_token_env, &self.slack.signing_secret_env],
                _ => [&self.slack.bot_token_env, &self.slack.app_token_env],
            };
            for var in needed {
                if std::env::var(var)
                    .map(|v| v.trim().is_empty())
                    .unwrap_or(true)
                {
                    w.push(format!("slack: the environment variable {var} is not set; `dualkey serve` will refuse to start the Slack adapter until it is"));
                }
            }
        }
        w
    }
}
