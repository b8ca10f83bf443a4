//! Typed settings loaded from `config/dualkey.toml` (or `--config FILE`) plus `DUALKEY_*`
//! environment overrides, validated at start-up. Secrets never live in the file: keys ending in
//! `_env` name the environment variable that holds them, and they are read as [`SecretString`]
//! so they never reach a log, an audit line or a `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

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

/// A person's role (SPEC section 3).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only commands.
    Viewer,
    /// May request any action and run backups.
    Operator,
    /// May vote on other people's requests.
    Approver,
}

/// What people not listed in `[[operators]]` get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownUsers {
    /// Nothing at all (the default).
    #[default]
    None,
    /// Read-only commands.
    Viewer,
}

/// A duration written as `"30s"`, `"15m"`, `"26h"` or `"7d"`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(HumanDuration).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration like \"30s\", \"15m\", \"26h\" or \"7d\""
            ))
        })
    }
}

/// Parses `"30s"`, `"15m"`, `"26h"`, `"7d"` (a positive integer and one unit).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    if n == 0 {
        return None;
    }
    let secs = match unit {
        's' => n,
        'm' => n.checked_mul(60)?,
        'h' => n.checked_mul(3600)?,
        'd' => n.checked_mul(86400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// Renders a duration compactly (`"15m"`, `"1h30m"`, `"45s"`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return "0s".into();
    }
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 {
        out.push_str(&format!("{sec}s"));
    }
    out
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// HTTP listen address.
    pub listen: String,
    /// Connections served at once; more wait until one closes.
    pub max_connections: std::num::NonZeroUsize,
    /// Time a client has to send a request's headers; slower connections are closed.
    pub header_read_timeout: HumanDuration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:8080".into(),
            max_connections: std::num::NonZeroUsize::new(256).expect("256 is not zero"),
            header_read_timeout: HumanDuration(Duration::from_secs(10)),
        }
    }
}

/// `[store]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `sqlite://...` or `postgres://...`; may hold a password, so `Debug` redacts it.
    pub url: String,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: "sqlite://data/dualkey.db".into(),
        }
    }
}

impl fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSettings")
            .field("url", &redact_url(&self.url))
            .finish()
    }
}

/// Replaces the password of a `scheme://user:password@host/...` URL with `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        // The password may itself hold '/' or '@': the userinfo ends at the last '@' before
        // the path/query, so look for '@' up to the first '?' and take the last one.
        let query_at = rest.find('?').unwrap_or(rest.len());
        if let Some(at) = rest[..query_at].rfind('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                out = format!(
                    "{}://{}:***{}",
                    &url[..scheme_end],
                    &userinfo[..colon],
                    &rest[at..]
                );
            }
        }
    }
    redact_password_params(&out)
}

/// Replaces the value of `password=...` (URL query parameters and libpq conninfo strings).
pub fn redact_password_params(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut search = 0;
    while let Some(pos) = lower[search..].find("password=") {
        let start = search + pos + "password=".len();
        let end = text[start..]
            .find(|c: char| c == '&' || c.is_whitespace() || c == '\'' || c == '"')
            .map(|e| start + e)
            .unwrap_or(text.len());
        out.push_str(&text[last..start]);
        out.push_str("***");
        last = end;
        search = end.max(start);
        if search >= text.len() {
            break;
        }
    }
    out.push_str(&text[last..]);
    out
}

/// `[slack]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackSettings {
    pub enabled: bool,
    pub mode: String,
    pub command: String,
    pub api_base_url: String,
    pub bot_token_env: String,
    pub app_token_env: String,
    pub signing_secret_env: String,
    pub approvals_channel: String,
    pub audit_channel: String,
    pub report_channel: String,
}

impl Default for SlackSettings {
    fn default() -> Self {
        SlackSettings {
            enabled: false,
            mode: "socket".into(),
            command: "/db".into(),
            api_base_url: "https://slack.com/api".into(),
            bot_token_env: "SLACK_BOT_TOKEN".into(),
            app_token_env: "SLACK_APP_TOKEN".into(),
            signing_secret_env: "SLACK_SIGNING_SECRET".into(),
            approvals_channel: String::new(),
            audit_channel: String::new(),
            report_channel: String::new(),
        }
    }
}

/// `[discord]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordSettings {
    pub enabled: bool,
    pub mode: String,
    pub api_base_url: String,
    pub bot_token_env: String,
    pub application_id: String,
    pub public_key: String,
    pub guild_id: String,
    pub approvals_channel: String,
    pub audit_channel: String,
    pub report_channel: String,
}

impl Default for DiscordSettings {
    fn default() -> Self {
        DiscordSettings {
            enabled: false,
            mode: "gateway".into(),
            api_base_url: "https://discord.com".into(),
            bot_token_env: "DISCORD_BOT_TOKEN".into(),
            application_id: String::new(),
            public_key: String::new(),
            guild_id: String::new(),
            approvals_channel: String::new(),
            audit_channel: String::new(),
            report_channel: String::new(),
        }
    }
}

/// `[approvals]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalSettings {
    /// Votes needed besides the requester.
    pub required: u32,
    /// How long a request stays open.
    pub ttl: HumanDuration,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        ApprovalSettings {
            required: 1,
            ttl: HumanDuration(Duration::from_secs(15 * 60)),
        }
    }
}

/// One `[[operators]]` block: a person, their platform accounts and roles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSettings {
    /// Canonical identity (used for the two-person rule).
    pub id: String,
    /// Slack user id.
    #[serde(default)]
    pub slack: Option<String>,
    /// Discord user id.
    #[serde(default)]
    pub discord: Option<String>,
    /// Roles.
    pub roles: Vec<Role>,
}

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
    /// App stop command (argv).
    pub app_stop: Vec<String>,
    /// App start command (argv).
    pub app_start: Vec<String>,
    /// App status command (argv).
    pub app_status: Vec<String>,
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
}

fn default_migrations_dir() -> PathBuf {
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

/// `[schedule]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSettings {
    pub backup_cron: String,
    pub timezone: String,
    pub max_backup_age: HumanDuration,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        ScheduleSettings {
            backup_cron: "0 2 * * *".into(),
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
    /// The file this was loaded from (not a key).
    #[serde(skip)]
    pub source: PathBuf,
}

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
    /// Loads `path`, applies `DUALKEY_*` overrides and validates everything.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut s = Settings::from_toml(&text, path)?;
        if let Ok(url) = std::env::var("DUALKEY_STORE_URL") {
            s.store.url = url;
        }
        if let Ok(listen) = std::env::var("DUALKEY_SERVER_LISTEN") {
            s.server.listen = listen;
        }
        s.validate()?;
        Ok(s)
    }

    /// Parses TOML text without environment overrides, then validates it.
    pub fn from_toml(text: &str, path: &Path) -> Result<Settings, ConfigError> {
        let mut s: Settings = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        s.source = path.to_path_buf();
        s.validate()?;
        Ok(s)
    }

    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Checks every rule that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.store.url.starts_with("sqlite:")
            || self.store.url.starts_with("postgres://")
            || self.store.url.starts_with("postgresql://"))
        {
            return Err(self.invalid("store.url", "must start with sqlite:// or postgres://"));
        }
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(self.invalid(
                "server.listen",
                format!(
                    "`{}` is not an address like 127.0.0.1:8080",
                    self.server.listen
                ),
            ));
        }
        if !matches!(self.slack.mode.as_str(), "socket" | "http") {
            return Err(self.invalid("slack.mode", "must be \"socket\" or \"http\""));
        }
        if !self.slack.command.starts_with('/') || self.slack.command.len() < 2 {
            return Err(self.invalid("slack.command", "must start with / (for example \"/db\")"));
        }
        if !matches!(self.discord.mode.as_str(), "gateway" | "http") {
            return Err(self.invalid("discord.mode", "must be \"gateway\" or \"http\""));
        }
        if self.discord.enabled && self.discord.mode == "http" {
            let ok = self.discord.public_key.len() == 64
                && self
                    .discord
                    .public_key
                    .chars()
                    .all(|c| c.is_ascii_hexdigit());
            if !ok {
                return Err(self.invalid(
                    "discord.public_key",
                    "http mode needs the application's 64-hex-digit Ed25519 public key",
                ));
            }
        }
        if self.approvals.required == 0 {
            return Err(self.invalid(
                "approvals.required",
                "must be at least 1: the requester can never approve alone",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut accounts = std::collections::BTreeMap::new();
        for (i, op) in self.operators.iter().enumerate() {
            if !valid_name(&op.id) {
                return Err(self.invalid(
                    format!("operators[{i}].id"),
                    format!("`{}` must be 1-32 of a-z, 0-9, _ and -", op.id),
                ));
            }
            if !seen.insert(op.id.clone()) {
                return Err(self.invalid(
                    format!("operators[{i}].id"),
                    format!("`{}` is listed twice", op.id),
                ));
            }
            if op.roles.is_empty() {
                return Err(self.invalid(
                    format!("operators[{i}].roles"),
                    "needs at least one of viewer, operator, approver",
                ));
            }
            for (key, acct) in [("slack", &op.slack), ("discord", &op.discord)] {
                if let Some(a) = acct {
                    if a.trim().is_empty() {
                        return Err(self.invalid(
                            format!("operators[{i}].{key}"),
                            "is empty; remove the key instead",
                        ));
                    }
                    if let Some(other) = accounts.insert((key, a.clone()), op.id.clone()) {
                        return Err(self.invalid(
                            format!("operators[{i}].{key}"),
                            format!("account `{a}` already belongs to operator `{other}`"),
                        ));
                    }
                }
            }
        }
        if self.environments.is_empty() {
            return Err(self.invalid(
                "environments",
                "define at least one [environments.NAME] block",
            ));
        }
        for (name, env) in &self.environments {
            let k = |f: &str| format!("environments.{name}.{f}");
            if !valid_name(name) {
                return Err(self.invalid(
                    format!("environments.{name}"),
                    "environment names must be 1-32 of a-z, 0-9, _ and -",
                ));
            }
            if env.database_url_env.trim().is_empty() {
                return Err(
                    self.invalid(k("database_url_env"), "must name an environment variable")
                );
            }
            for (f, argv) in [
                ("app_stop", &env.app_stop),
                ("app_start", &env.app_start),
                ("app_status", &env.app_status),
            ] {
                if argv.is_empty() || argv[0].trim().is_empty() {
                    return Err(self.invalid(k(f), "must be a non-empty argument vector like [\"docker\", \"compose\", \"stop\", \"backend\"]"));
                }
            }
            if let Some(logs) = &env.app_logs {
                if logs.is_empty() {
                    return Err(self.invalid(
                        k("app_logs"),
                        "must be a non-empty argument vector or be left out",
                    ));
                }
            }
            if env.app_timeout_secs == 0 {
                return Err(self.invalid(k("app_timeout_secs"), "must be at least 1"));
            }
            if let Some(dir) = &env.pg_bin_dir {
                if !dir.is_dir() {
                    return Err(self.invalid(
                        k("pg_bin_dir"),
                        format!("`{}` is not a folder", dir.display()),
                    ));
                }
            }
            if env.retention_days == 0 {
                return Err(self.invalid(k("retention_days"), "must be at least 1"));
            }
            if let Some(st) = &env.require_staging {
                if st == name || !self.environments.contains_key(st) {
                    return Err(self.invalid(
                        k("require_staging"),
                        format!("`{st}` is not another environment in [environments.*]"),
                    ));
                }
            }
            if let Some(url) = &env.health_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(self.invalid(k("health_url"), "must be an http:// or https:// URL"));
                }
            }
        }
        match &self.default_environment {
            Some(d) if !self.environments.contains_key(d) => {
                return Err(self.invalid(
                    "default_environment",
                    format!("`{d}` is not one of [environments.*]"),
                ));
            }
            None if self.environments.len() > 1 => {
                return Err(self.invalid(
                    "default_environment",
                    "required when there is more than one environment",
                ));
            }
            _ => {}
        }
        if self.monitoring.reminders.is_empty() {
            return Err(self.invalid(
                "monitoring.reminders",
                "needs at least one reminder, e.g. [\"5m\", \"15m\", \"30m\"]",
            ));
        }
        if self.schedule.backup_cron.split_whitespace().count() != 5 {
            return Err(self.invalid(
                "schedule.backup_cron",
                "must have 5 fields: minute hour day-of-month month day-of-week",
            ));
        }
        Ok(())
    }

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
        }
        if self.slack.enabled || self.discord.enabled {
            w.push("slack/discord adapters are not built into this release yet; only the shell adapter runs".into());
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/dualkey.toml"))
            .unwrap()
    }

    fn check(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn the_documented_default_config_is_valid() {
        let s = check(&base()).unwrap();
        assert_eq!(s.approvals.required, 1);
        assert_eq!(s.approvals.ttl.0, Duration::from_secs(900));
        assert_eq!(s.default_env(), "production");
    }

    #[test]
    fn errors_name_the_exact_key() {
        let cases = [
            (base().replace("ttl = \"15m\"", "ttl = \"15x\""), "ttl"),
            (
                base().replace("required = 1", "required = 0"),
                "approvals.required",
            ),
            (
                base().replace("roles = [\"viewer\"]", "roles = [\"admin\"]"),
                "admin",
            ),
            (
                base().replace(
                    "app_stop = [\"docker\", \"compose\", \"stop\", \"backend\"]",
                    "app_stop = []",
                ),
                "environments.production.app_stop",
            ),
            (
                base().replace(
                    "default_environment = \"production\"",
                    "default_environment = \"prod\"",
                ),
                "default_environment",
            ),
            (
                base().replace("[server]", "[server]\nlisten_port = 1"),
                "listen_port",
            ),
            (
                base().replace("id = \"bob\"", "id = \"alice\""),
                "operators[1].id",
            ),
            (
                base().replace("slack = \"U0BOB\"", "slack = \"U0ALICE\""),
                "operators[1].slack",
            ),
        ];
        for (text, key) in cases {
            let err = check(&text).expect_err(key).to_string();
            assert!(err.contains(key), "error `{err}` should name `{key}`");
        }
    }

    #[test]
    fn durations_parse_strictly() {
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("26h"), Some(Duration::from_secs(93600)));
        for bad in ["", "m", "0m", "-1m", "1.5h", "15", "15 m x", "1y"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn store_url_passwords_are_redacted_in_debug() {
        let s = StoreSettings {
            url: "postgres://dk:s3cret@db:5432/dualkey".into(),
        };
        let d = format!("{s:?}");
        assert!(!d.contains("s3cret"), "{d}");
        assert!(d.contains("dk:***@db:5432"), "{d}");
    }

    #[test]
    fn every_password_form_is_redacted() {
        for (input, secret) in [
            ("postgres://u:p/ss@w0rd@db/x", "p/ss"),
            (
                "postgres://db/x?user=u&password=hunter2&sslmode=require",
                "hunter2",
            ),
            ("host=db user=u password=hunter2 dbname=x", "hunter2"),
            ("PGPASSWORD=hunter2 psql", "hunter2"),
        ] {
            let r = redact_url(input);
            assert!(!r.contains(secret), "{input} -> {r}");
        }
        assert_eq!(
            redact_url("postgres://db/x?sslmode=require"),
            "postgres://db/x?sslmode=require"
        );
    }
}
