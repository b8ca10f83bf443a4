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

/// A duration written as `"30s"`, `"15m"`, `"26h"`, `"7d"` or a sum such as `"1h30m"`.
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
                "`{s}` is not a duration like \"30s\", \"15m\", \"26h\", \"7d\" or \"1h30m\""
            ))
        })
    }
}

/// The units a config duration may use: humantime knows more (`ms`, `min`, `seconds`, `w`,
/// `M`, `y`), but a month or a year has no fixed length and a `5ms` deadline is a typo.
const DURATION_UNITS: [&str; 4] = ["s", "m", "h", "d"];

/// Parses a positive duration with `humantime`, in whole `s`, `m`, `h` and `d`: `"30s"`,
/// `"15m"`, `"26h"`, `"7d"`, and sums of them (`"1h30m"`, `"1h 30m"`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let units_known = s
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|unit| !unit.is_empty())
        .all(|unit| DURATION_UNITS.contains(&unit));
    // humantime reads a bare number as an error already; a sign, a fraction or any character
    // but ASCII letters, digits and spaces (`µs`) is refused here so that the message does not
    // depend on its wording.
    let plain = s.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ');
    if !units_known || !plain {
        return None;
    }
    humantime::parse_duration(s)
        .ok()
        .filter(|d| !d.is_zero() && d.subsec_nanos() == 0)
}

/// Renders a duration compactly (`"15m"`, `"1h30m"`, `"45s"`), in a form [`parse_duration`]
/// reads back. Not `humantime::format_duration`: it writes `"1day 2h"`, and chat messages and the
/// config's own examples say `"26h"`.
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
    /// Time a client has, once its headers are in, to send the whole body; a slower one gets
    /// `408` and its connection is closed.
    pub body_read_timeout: HumanDuration,
    /// Address of the admin listener serving `/healthz`, `/readyz` and `/metrics` apart from
    /// the chat endpoints; empty (the default) serves them on `listen`.
    pub admin_listen: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:8080".into(),
            max_connections: std::num::NonZeroUsize::new(256).expect("256 is not zero"),
            header_read_timeout: HumanDuration(Duration::from_secs(10)),
            body_read_timeout: HumanDuration(Duration::from_secs(10)),
            admin_listen: String::new(),
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
        // The password may itself hold '/', '@' or '?' (libpq reads the userinfo up to the last
        // '@'): take the last '@' anywhere, so a stray one in a query over-redacts rather than
        // a password showing.
        if let Some(at) = rest.rfind('@') {
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

/// Per-environment channel overrides (`[environments.NAME.slack]`): an empty or missing key
/// keeps the platform's own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelOverrides {
    pub approvals_channel: Option<String>,
    pub audit_channel: Option<String>,
    pub report_channel: Option<String>,
}

/// Where a kind of message goes (SPEC section 10): approval cards to `approvals_channel` (and
/// the channel the command was typed in), audit lines to `audit_channel`, reports and alerts to
/// `report_channel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Approval cards.
    Approvals,
    /// Audit lines and the chain head.
    Audit,
    /// Scheduled reports and alerts.
    Report,
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

/// Why a configured folder is not usable: it does not exist or is a file. Relative paths are
/// read from the working directory (as every path in the config), so the message names it.
fn missing_folder(path: &Path) -> String {
    let what = if path.exists() {
        "is not a folder"
    } else {
        "does not exist"
    };
    let default = if path == default_migrations_dir() {
        " (also the default when the key is left out)"
    } else {
        ""
    };
    let relative = if path.is_relative() {
        match std::env::current_dir() {
            Ok(cwd) => format!(
                "; relative paths are read from the working directory, {}",
                cwd.display()
            ),
            Err(_) => "; relative paths are read from the working directory".into(),
        }
    } else {
        String::new()
    };
    format!(
        "`{}`{default} {what}{relative}. Point it at your Prisma project's migrations folder (the one holding migration_lock.toml), or start dualkey from the folder it is relative to",
        path.display()
    )
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

/// The file's top-level keys: the first part of a `DUALKEY_*` override.
const TOP_LEVEL_KEYS: [&str; 11] = [
    "default_environment",
    "unknown_users",
    "server",
    "store",
    "slack",
    "discord",
    "approvals",
    "operators",
    "environments",
    "schedule",
    "monitoring",
];

/// Variables named before the double-underscore scheme, still read: (variable, key).
const LEGACY_OVERRIDES: [(&str, &str); 6] = [
    ("DUALKEY_STORE_URL", "store.url"),
    ("DUALKEY_SERVER_LISTEN", "server.listen"),
    ("DUALKEY_SERVER_ADMIN_LISTEN", "server.admin_listen"),
    ("DUALKEY_SERVER_MAX_CONNECTIONS", "server.max_connections"),
    (
        "DUALKEY_SERVER_HEADER_READ_TIMEOUT",
        "server.header_read_timeout",
    ),
    (
        "DUALKEY_SERVER_BODY_READ_TIMEOUT",
        "server.body_read_timeout",
    ),
];

/// One `DUALKEY_*` variable that sets a key.
#[derive(Debug, Clone)]
struct Override {
    var: String,
    /// The dotted key it sets, e.g. `environments.production.backup_dir`.
    key: String,
    value: String,
    /// Take the value as text even when it reads as a number, a boolean or an array.
    as_text: bool,
}

impl Override {
    /// The value as figment reads environment variables (`true`, `42`, `["a", "b"]`, else
    /// text), or as text.
    fn value(&self) -> figment::value::Value {
        if self.as_text {
            self.value.clone().into()
        } else {
            self.value
                .parse()
                .expect("reading a figment Value never fails")
        }
    }

    /// `VAR=`value`` for messages, a password in the value redacted.
    fn shown(&self) -> String {
        format!("{}=`{}`", self.var, redact_url(&self.value))
    }
}

/// The variable names the config file gives in its `*_env` keys (`bot_token_env`,
/// `database_url_env`, ...), at any depth.
fn secret_variables(text: &str) -> std::collections::HashSet<String> {
    fn walk(v: &toml::Value, out: &mut std::collections::HashSet<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    match v {
                        toml::Value::String(name) if k.ends_with("_env") => {
                            out.insert(name.clone());
                        }
                        _ => walk(v, out),
                    }
                }
            }
            toml::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = std::collections::HashSet::new();
    if let Ok(v) = text.parse::<toml::Value>() {
        walk(&v, &mut out);
    }
    out
}

/// The overrides among `vars`: the legacy names first, then `DUALKEY_<KEY>__<KEY>...` in name
/// order (for one key, the later wins). Other `DUALKEY_*` variables (`DUALKEY_CONFIG`,
/// `DUALKEY_LOG_FORMAT`) set no key and are left alone, but one that starts like a key and has a
/// single underscore is refused, since it would otherwise be silently ignored. The error is
/// (key, message).
fn env_overrides(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, (String, String)> {
    let mut found = Vec::new();
    for (var, value) in vars {
        let Some(rest) = var.strip_prefix("DUALKEY_") else {
            continue;
        };
        let legacy = LEGACY_OVERRIDES.iter().position(|(v, _)| *v == var);
        let lower = rest.to_ascii_lowercase();
        let key = match legacy {
            Some(i) => LEGACY_OVERRIDES[i].1.to_string(),
            None => lower.split("__").collect::<Vec<_>>().join("."),
        };
        let top = key.split('.').next().unwrap_or_default();
        if legacy.is_none() && !TOP_LEVEL_KEYS.contains(&top) {
            if let Some(t) = TOP_LEVEL_KEYS
                .iter()
                .find(|t| top.starts_with(&format!("{t}_")))
            {
                let fixed = format!("DUALKEY_{}__{}", t.to_uppercase(), &rest[t.len() + 1..]);
                return Err((
                    format!("{t}.{}", &lower[t.len() + 1..]),
                    format!("{var} is not read: nested keys are joined by a double underscore, as in {fixed}"),
                ));
            }
            continue;
        }
        let stray = |part: &str| part.is_empty() || part.starts_with('_') || part.ends_with('_');
        if key.split('.').any(stray) {
            return Err((
                key,
                format!("{var} has an empty key part or a stray underscore (three underscores, or a trailing `__`?)"),
            ));
        }
        // Legacy names sort before the others, so `DUALKEY_SERVER__LISTEN` wins over them.
        found.push((
            legacy.is_none(),
            var.clone(),
            Override {
                var,
                key,
                value,
                as_text: false,
            },
        ));
    }
    found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    Ok(found.into_iter().map(|(_, _, o)| o).collect())
}

/// The file's settings with `overrides` merged over them by figment (the TOML text, then one
/// provider per variable). A value that does not fit is an error naming the variable and the
/// key. figment reads `123` or `true` as a number or a boolean; when a key that takes text refuses
/// that, the value is read again as text (each variable at most once, so the loop ends).
fn with_overrides(
    text: &str,
    path: &Path,
    mut overrides: Vec<Override>,
) -> Result<Settings, ConfigError> {
    use figment::providers::{Format, Serialized, Toml};
    loop {
        let figment = overrides
            .iter()
            .fold(figment::Figment::from(Toml::string(text)), |f, o| {
                f.merge(Serialized::default(&o.key, o.value()))
            });
        let err = match figment.extract::<Settings>() {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        let blamed = overrides.iter().rposition(|o| {
            let key: Vec<&str> = o.key.split('.').collect();
            key.iter().zip(&err.path).all(|(k, p)| k == p)
        });
        let Some(i) = blamed else {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                message: err.to_string(),
            });
        };
        let wants_text = matches!(&err.kind, figment::error::Kind::InvalidType(_, expected) if expected.contains("string"));
        // Only a scalar is read again: `["a", 1]` for an argv is wrong as written.
        let scalar = matches!(
            overrides[i].value(),
            figment::value::Value::Num(..) | figment::value::Value::Bool(..)
        );
        if wants_text && scalar && !overrides[i].as_text {
            overrides[i].as_text = true;
            continue;
        }
        let o = &overrides[i];
        // figment's message repeats the value: not when it holds a password.
        let why = match &err.kind {
            _ if redact_url(&o.value) == o.value => err.kind.to_string(),
            figment::error::Kind::InvalidType(_, expected)
            | figment::error::Kind::InvalidValue(_, expected) => format!("expected {expected}"),
            _ => "it does not fit this key".into(),
        };
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            key: o.key.clone(),
            message: format!("{} is refused: {why}", o.shown()),
        });
    }
}

impl Settings {
    /// Loads `path`, applies the `DUALKEY_*` overrides of the process environment and validates
    /// everything.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let vars = std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        });
        Settings::from_toml_with_env(&text, path, vars)
    }

    /// Parses TOML text without environment overrides, then validates it.
    pub fn from_toml(text: &str, path: &Path) -> Result<Settings, ConfigError> {
        Settings::from_toml_with_env(text, path, std::iter::empty())
    }

    /// Parses TOML text, applies the `DUALKEY_*` overrides among `vars` (name, value) and
    /// validates the result. The environment is a parameter so that tests need not change the
    /// process's own.
    pub fn from_toml_with_env(
        text: &str,
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        // The file alone first: its errors carry line and column.
        let mut s: Settings = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        // Variables the file names in its `*_env` keys hold secrets, not overrides: a token kept
        // in `DUALKEY_SLACK_BOT_TOKEN` is neither read as a key nor refused as a misspelt one.
        let secrets = secret_variables(text);
        let vars = vars.into_iter().filter(|(var, _)| !secrets.contains(var));
        let overrides = env_overrides(vars).map_err(|(key, message)| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        })?;
        if !overrides.is_empty() {
            s = with_overrides(text, path, overrides.clone())?;
        }
        s.source = path.to_path_buf();
        s.validate().map_err(|e| match e {
            ConfigError::Invalid { path, key, message } => {
                let from = overrides.iter().rev().find(|o| o.key == key);
                let message = match from {
                    Some(o) => format!("{message} (set by {})", o.var),
                    None => message,
                };
                ConfigError::Invalid { path, key, message }
            }
            other => other,
        })?;
        Ok(s)
    }

    /// The `[server]` rules: addresses that parse, distinct ports, deadlines of at most 10
    /// minutes.
    fn validate_server(&self) -> Result<(), ConfigError> {
        let sv = &self.server;
        let Ok(listen) = sv.listen.parse::<std::net::SocketAddr>() else {
            return Err(self.invalid(
                "server.listen",
                format!("`{}` is not an address like 127.0.0.1:8080", sv.listen),
            ));
        };
        if !sv.admin_listen.is_empty() {
            let Ok(admin) = sv.admin_listen.parse::<std::net::SocketAddr>() else {
                return Err(self.invalid(
                    "server.admin_listen",
                    format!(
                        "`{}` is not an address like 127.0.0.1:9090 (or \"\" for none)",
                        sv.admin_listen
                    ),
                ));
            };
            if admin == listen && admin.port() != 0 {
                return Err(self.invalid(
                    "server.admin_listen",
                    format!("`{admin}` is server.listen too; give the admin listener its own port"),
                ));
            }
        }
        let most = Duration::from_secs(600);
        for (key, d) in [
            ("server.header_read_timeout", sv.header_read_timeout.0),
            ("server.body_read_timeout", sv.body_read_timeout.0),
        ] {
            if d > most {
                return Err(self.invalid(
                    key,
                    format!(
                        "{} is longer than 10m; a silent client would hold a connection that long",
                        format_duration(d)
                    ),
                ));
            }
        }
        Ok(())
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
        self.validate_server()?;
        if !matches!(self.slack.mode.as_str(), "socket" | "http") {
            return Err(self.invalid("slack.mode", "must be \"socket\" or \"http\""));
        }
        if !self.slack.command.starts_with('/') || self.slack.command.len() < 2 {
            return Err(self.invalid("slack.command", "must start with / (for example \"/db\")"));
        }
        if !matches!(self.discord.mode.as_str(), "gateway" | "http") {
            return Err(self.invalid("discord.mode", "must be \"gateway\" or \"http\""));
        }
        // Slack channels by id: chat.update and chat.postEphemeral take only ids, so a name
        // (`#db-approvals`) would post cards that can never be edited.
        let slack_channel = |key: String, v: &str| -> Result<(), ConfigError> {
            let ok = v.is_empty()
                || (v.len() >= 2
                    && v.len() <= 24
                    && v.starts_with(['C', 'G', 'D'])
                    && v.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
            if ok {
                Ok(())
            } else {
                Err(self.invalid(key, format!("`{v}` is not a Slack channel id (like C0123ABCD; in Slack: the channel's name, About, at the bottom); names such as #ops cannot be edited by chat.update")))
            }
        };
        slack_channel(
            "slack.approvals_channel".into(),
            &self.slack.approvals_channel,
        )?;
        slack_channel("slack.audit_channel".into(), &self.slack.audit_channel)?;
        slack_channel("slack.report_channel".into(), &self.slack.report_channel)?;
        for (name, e) in &self.environments {
            for (key, v) in [
                ("approvals_channel", &e.slack.approvals_channel),
                ("audit_channel", &e.slack.audit_channel),
                ("report_channel", &e.slack.report_channel),
            ] {
                if let Some(v) = v {
                    slack_channel(format!("environments.{name}.slack.{key}"), v)?;
                }
            }
        }
        // Discord ids are snowflakes (decimal u64); a channel name (`#ops`) or a user name
        // would only fail later, at every post.
        let snowflake = |key: String, v: &str, what: &str| -> Result<(), ConfigError> {
            if v.is_empty() || (v.len() <= 20 && v.parse::<u64>().is_ok_and(|n| n > 0)) {
                Ok(())
            } else {
                Err(self.invalid(key, format!("`{v}` is not a Discord {what} id (a number like 200000000000000000; in Discord: Developer Mode, then right-click, Copy ID)")))
            }
        };
        let d = &self.discord;
        snowflake(
            "discord.application_id".into(),
            d.application_id.trim(),
            "application",
        )?;
        snowflake("discord.guild_id".into(), &d.guild_id, "server (guild)")?;
        for (key, v) in [
            ("approvals_channel", &d.approvals_channel),
            ("audit_channel", &d.audit_channel),
            ("report_channel", &d.report_channel),
        ] {
            snowflake(format!("discord.{key}"), v, "channel")?;
        }
        for (name, e) in &self.environments {
            for (key, v) in [
                ("approvals_channel", &e.discord.approvals_channel),
                ("audit_channel", &e.discord.audit_channel),
                ("report_channel", &e.discord.report_channel),
            ] {
                if let Some(v) = v {
                    snowflake(format!("environments.{name}.discord.{key}"), v, "channel")?;
                }
            }
        }
        for (i, op) in self.operators.iter().enumerate() {
            if let Some(a) = op.discord.as_deref().filter(|a| !a.trim().is_empty()) {
                snowflake(format!("operators[{i}].discord"), a, "user")?;
            }
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
        self.check_approvers_suffice()?;
        if self.approvals.ttl.0 > MAX_TTL {
            return Err(self.invalid(
                "approvals.ttl",
                format!(
                    "`{}` is longer than the 7d limit: a request that waits that long was reviewed against stale facts; use at most \"7d\" (the default is \"15m\")",
                    format_duration(self.approvals.ttl.0)
                ),
            ));
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
            if !env.migrations_dir.is_dir() {
                return Err(self.invalid(k("migrations_dir"), missing_folder(&env.migrations_dir)));
            }
            for (f, argv) in [
                ("app_stop", &env.app_stop),
                ("app_start", &env.app_start),
                ("app_status", &env.app_status),
            ] {
                if argv
                    .as_ref()
                    .is_some_and(|a| a.is_empty() || a[0].trim().is_empty())
                {
                    return Err(self.invalid(k(f), "must be a non-empty argument vector like [\"docker\", \"compose\", \"stop\", \"backend\"], or be left out when dualkey may not run it"));
                }
            }
            match (&env.app_stop, &env.app_start) {
                (Some(_), None) => return Err(self.invalid(k("app_start"), "is missing while app_stop is set: a restore would stop the app and never start it again. Set both, or leave both out")),
                (None, Some(_)) => return Err(self.invalid(k("app_stop"), "is missing while app_start is set: set both, or leave both out (then dualkey never stops the app and restores warn that it keeps running)")),
                _ => {}
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
        if let Some(w) = self
            .monitoring
            .reminders
            .windows(2)
            .find(|w| w[1].0 <= w[0].0)
        {
            return Err(self.invalid(
                "monitoring.reminders",
                format!(
                    "must be in increasing order without repeats (`{}` comes after `{}`); the last one closes the window, e.g. [\"5m\", \"15m\", \"30m\"]",
                    format_duration(w[1].0),
                    format_duration(w[0].0)
                ),
            ));
        }
        for (key, d) in std::iter::once(("schedule.max_backup_age", &self.schedule.max_backup_age))
            .chain(
                self.monitoring
                    .reminders
                    .iter()
                    .map(|r| ("monitoring.reminders", r)),
            )
        {
            if d.0 > MAX_DURATION {
                return Err(self.invalid(
                    key,
                    format!(
                        "`{}` is longer than a year; use at most \"365d\"",
                        format_duration(d.0)
                    ),
                ));
            }
        }
        if self.schedule.timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(self.invalid(
                "schedule.timezone",
                format!(
                    "`{}` is not a time zone of the tz database; use a name like \"UTC\", \"Europe/Berlin\" or \"America/New_York\" (case matters)",
                    self.schedule.timezone
                ),
            ));
        }
        if let Err(why) = parse_cron(&self.schedule.backup_cron) {
            return Err(self.invalid("schedule.backup_cron", why));
        }
        if let Some(p) = &self.schedule.restore_drill_cron {
            if let Err(why) = parse_cron(p) {
                return Err(self.invalid("schedule.restore_drill_cron", why));
            }
        }
        Ok(())
    }

    /// Refuses `approvals.required` when some operator (someone who may request) has fewer
    /// approvers besides themselves than required: their requests could never be approved.
    /// Only listed people can request; `unknown_users = "viewer"` adds none.
    fn check_approvers_suffice(&self) -> Result<(), ConfigError> {
        let required = self.approvals.required as usize;
        let approvers: Vec<&str> = self
            .operators
            .iter()
            .filter(|o| o.roles.contains(&Role::Approver))
            .map(|o| o.id.as_str())
            .collect();
        for op in self
            .operators
            .iter()
            .filter(|o| o.roles.contains(&Role::Operator))
        {
            let others: Vec<&str> = approvers.iter().copied().filter(|a| *a != op.id).collect();
            if others.len() < required {
                return Err(self.invalid(
                    "approvals.required",
                    format!(
                        "is {required}, but operator `{}` has {} approver(s) besides themselves ({}), so their requests could never be approved. Give more people the approver role in [[operators]], or lower approvals.required",
                        op.id,
                        others.len(),
                        if others.is_empty() { "none".to_string() } else { others.join(", ") }
                    ),
                ));
            }
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
        // `serve` from a fresh clone reads the example project, not "0 migrations".
        let dir = &s.environments["production"].migrations_dir;
        assert_eq!(
            crate::dbops::prisma::list_migrations(dir).migrations.len(),
            4
        );
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
    fn server_deadlines_and_the_admin_listener_are_checked_naming_the_key() {
        let s = check(&base()).unwrap();
        assert_eq!(s.server.body_read_timeout.0, Duration::from_secs(10));
        assert_eq!(
            s.server.admin_listen, "127.0.0.1:9090",
            "the shipped file puts health on the admin port"
        );
        let without: String = base()
            .lines()
            .filter(|l| !l.starts_with("admin_listen ="))
            .map(|l| format!("{l}\n"))
            .collect();
        let bare = check(&without).unwrap();
        assert_eq!(
            bare.server.admin_listen, "",
            "no admin listener unless asked for"
        );
        // `base()` with one `[server]` line replaced.
        let with = |line: &str| {
            let key = format!("{} =", line.split(" =").next().unwrap());
            base()
                .lines()
                .filter(|l| !l.starts_with(&key))
                .collect::<Vec<_>>()
                .join("\n")
                .replace("[server]", &format!("[server]\n{line}"))
        };
        let s = check(&with("admin_listen = \"127.0.0.1:9090\"")).unwrap();
        assert_eq!(s.server.admin_listen, "127.0.0.1:9090");
        let cases = [
            (
                "admin_listen = \"localhost\"",
                "server.admin_listen",
                "not an address",
            ),
            (
                "admin_listen = \"127.0.0.1:8080\"",
                "server.admin_listen",
                "own port",
            ),
            (
                "body_read_timeout = \"0s\"",
                "body_read_timeout",
                "not a duration",
            ),
            (
                "body_read_timeout = \"11m\"",
                "server.body_read_timeout",
                "longer than 10m",
            ),
            (
                "header_read_timeout = \"1h\"",
                "server.header_read_timeout",
                "10m",
            ),
        ];
        for (line, key, why) in cases {
            let err = check(&with(line)).expect_err(line).to_string();
            assert!(err.contains(key) && err.contains(why), "{line}: {err}");
        }
    }

    /// `base()` parsed with `vars` as the environment.
    fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::from_toml_with_env(text, Path::new("test.toml"), vars)
    }

    #[test]
    fn legacy_environment_names_still_override_and_bad_values_name_the_variable() {
        let s = with_env(
            &base(),
            &[
                ("DUALKEY_STORE_URL", "postgres://dk:pw@db:5432/dualkey"),
                ("DUALKEY_SERVER_LISTEN", "0.0.0.0:8088"),
                ("DUALKEY_SERVER_ADMIN_LISTEN", " 127.0.0.1:9191 "),
                ("DUALKEY_SERVER_MAX_CONNECTIONS", "900"),
                ("DUALKEY_SERVER_HEADER_READ_TIMEOUT", "3s"),
                ("DUALKEY_SERVER_BODY_READ_TIMEOUT", "2s"),
            ],
        )
        .unwrap();
        assert_eq!(s.store.url, "postgres://dk:pw@db:5432/dualkey");
        assert_eq!(s.server.listen, "0.0.0.0:8088");
        assert_eq!(s.server.admin_listen, "127.0.0.1:9191");
        assert_eq!(s.server.max_connections.get(), 900);
        assert_eq!(s.server.header_read_timeout.0, Duration::from_secs(3));
        assert_eq!(s.server.body_read_timeout.0, Duration::from_secs(2));
        // The double-underscore name of the same key wins over the legacy one.
        let s = with_env(
            &base(),
            &[
                ("DUALKEY_SERVER__LISTEN", "127.0.0.1:7000"),
                ("DUALKEY_SERVER_LISTEN", "127.0.0.1:7001"),
            ],
        )
        .unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:7000");
        for (var, value, key) in [
            (
                "DUALKEY_SERVER_MAX_CONNECTIONS",
                "0",
                "server.max_connections",
            ),
            (
                "DUALKEY_SERVER_MAX_CONNECTIONS",
                "many",
                "server.max_connections",
            ),
            (
                "DUALKEY_SERVER_BODY_READ_TIMEOUT",
                "2 seconds",
                "server.body_read_timeout",
            ),
            (
                "DUALKEY_SERVER_HEADER_READ_TIMEOUT",
                "10",
                "server.header_read_timeout",
            ),
            // Parses, and validation names the key and where the value came from.
            (
                "DUALKEY_SERVER_ADMIN_LISTEN",
                "nowhere",
                "server.admin_listen",
            ),
        ] {
            let err = with_env(&base(), &[(var, value)]).unwrap_err().to_string();
            let named = format!("key `{key}`");
            assert!(
                err.contains(var) && err.contains(&named),
                "{var}={value}: {err}"
            );
        }
    }

    #[test]
    fn secrets_the_file_names_and_the_test_scripts_variables_are_not_overrides() {
        let text = base().replace(
            "bot_token_env = \"SLACK_BOT_TOKEN\"",
            "bot_token_env = \"DUALKEY_SLACK_BOT_TOKEN\"",
        );
        assert!(text.contains("DUALKEY_SLACK_BOT_TOKEN"), "base() changed");
        let s = with_env(
            &text,
            &[
                ("DUALKEY_SLACK_BOT_TOKEN", "xoxb-secret"),
                ("DUALKEY_TEST_PG", "postgres://postgres@127.0.0.1:5439"),
                ("DUALKEY_TEST_OWN_PG", "1"),
                ("DUALKEY_TEST_PG_CA", "/tmp/ca.crt"),
                ("DUALKEY_TEST_PG_SOCKET", "/tmp/sock"),
                ("DUALKEY_TEST_PG_PORT", "5439"),
                ("DUALKEY_NO_PG18", "1"),
                ("DUALKEY_PG18_PORT", "5438"),
            ],
        )
        .unwrap();
        assert_eq!(s.slack.bot_token_env, "DUALKEY_SLACK_BOT_TOKEN");
        // Not named by the file: still caught as a misspelt override.
        let err = with_env(&base(), &[("DUALKEY_SLACK_BOT_TOKEN", "x")]).unwrap_err();
        assert!(err.to_string().contains("double underscore"), "{err}");
    }

    #[test]
    fn every_key_can_be_overridden_by_a_double_underscore_variable() {
        let s = with_env(
            &base(),
            &[
                ("DUALKEY_APPROVALS__TTL", "1h 30m"),
                ("DUALKEY_SLACK__ENABLED", "true"),
                ("DUALKEY_ENVIRONMENTS__PRODUCTION__BACKUP_DIR", "/backups"),
                ("DUALKEY_ENVIRONMENTS__PRODUCTION__RETENTION_DAYS", "30"),
                (
                    "DUALKEY_ENVIRONMENTS__PRODUCTION__APP_STOP",
                    r#"["systemctl", "stop", "app"]"#,
                ),
                ("DUALKEY_MONITORING__REMINDERS", r#"["10m", "1h"]"#),
                // Reads as a number; the key takes text, so it gets the digits.
                ("DUALKEY_DISCORD__GUILD_ID", "200000000000000009"),
                ("DUALKEY_UNKNOWN_USERS", "viewer"),
                // No keys: left alone.
                ("DUALKEY_LOG_FORMAT", "json"),
                ("DUALKEY_CONFIG", "elsewhere.toml"),
                ("SERVER__LISTEN", "nowhere"),
            ],
        )
        .unwrap();
        assert_eq!(s.approvals.ttl.0, Duration::from_secs(5400));
        assert!(s.slack.enabled);
        let e = &s.environments["production"];
        assert_eq!(e.backup_dir, PathBuf::from("/backups"));
        assert_eq!(e.retention_days, 30);
        assert_eq!(e.app_stop.as_deref().unwrap(), ["systemctl", "stop", "app"]);
        let mins: Vec<u64> = s
            .monitoring
            .reminders
            .iter()
            .map(|r| r.0.as_secs() / 60)
            .collect();
        assert_eq!(mins, [10, 60]);
        assert_eq!(s.discord.guild_id, "200000000000000009");
        assert_eq!(s.unknown_users, UnknownUsers::Viewer);
        // What no variable names keeps the file's value.
        assert_eq!(s.approvals.required, 1);
        assert_eq!(e.database_url_env, "TASKFLOW_DATABASE_URL");
        assert_eq!(s.server.listen, "127.0.0.1:8080");
    }

    #[test]
    fn bad_overrides_are_refused_naming_the_variable_and_the_key() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "DUALKEY_APPROVALS__TTL",
                "15x",
                &[
                    "DUALKEY_APPROVALS__TTL=`15x`",
                    "key `approvals.ttl`",
                    "not a duration",
                ],
            ),
            (
                "DUALKEY_SLACK__ENABLED",
                "yes",
                &["DUALKEY_SLACK__ENABLED=`yes`", "key `slack.enabled`"],
            ),
            (
                "DUALKEY_SERVER__LISTN",
                "x",
                &["DUALKEY_SERVER__LISTN=`x`", "key `server.listn`", "listn"],
            ),
            (
                "DUALKEY_APPROVALS_TTL",
                "30m",
                &[
                    "DUALKEY_APPROVALS_TTL is not read",
                    "DUALKEY_APPROVALS__TTL",
                    "key `approvals.ttl`",
                ],
            ),
            (
                "DUALKEY_SERVER___LISTEN",
                "x",
                &["DUALKEY_SERVER___LISTEN", "empty key part"],
            ),
            // Parses, but validation refuses it: the message says which variable set it.
            (
                "DUALKEY_APPROVALS__TTL",
                "8d",
                &[
                    "key `approvals.ttl`",
                    "7d",
                    "(set by DUALKEY_APPROVALS__TTL)",
                ],
            ),
            // A new environment needs its required keys.
            (
                "DUALKEY_ENVIRONMENTS__STAGING__BACKUP_DIR",
                "/b",
                &[
                    "DUALKEY_ENVIRONMENTS__STAGING__BACKUP_DIR",
                    "database_url_env",
                ],
            ),
            (
                "DUALKEY_ENVIRONMENTS__PRODUCTION__APP_STOP",
                "[\"a\", 1]",
                &[
                    "DUALKEY_ENVIRONMENTS__PRODUCTION__APP_STOP",
                    "key `environments.production.app_stop`",
                ],
            ),
        ];
        let mut wrong = Vec::new();
        for (var, value, words) in cases {
            match with_env(&base(), &[(var, value)]) {
                Ok(_) => wrong.push(format!("{var}={value}: accepted")),
                Err(e) => {
                    let err = e.to_string();
                    for w in *words {
                        if !err.contains(w) {
                            wrong.push(format!("{var}={value}: `{err}` should say `{w}`"));
                        }
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        // A value shown in a message has its password redacted.
        let err = with_env(
            &base(),
            &[(
                "DUALKEY_SERVER__MAX_CONNECTIONS",
                "postgres://u:hunter2@h/db",
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("u:***@h") && !err.contains("hunter2"), "{err}");
    }

    /// `base()` with the three app command lines removed.
    fn without_app_commands(text: &str) -> String {
        text.lines()
            .filter(|l| {
                !l.starts_with("app_stop")
                    && !l.starts_with("app_start")
                    && !l.starts_with("app_status")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn configuration_that_would_lie_is_refused_naming_the_key() {
        let no_approver_role = |t: String| {
            t.replacen(
                "roles = [\"operator\", \"approver\"]",
                "roles = [\"operator\"]",
                1,
            )
        };
        // (config text, key named, further words the message must hold)
        let cases: Vec<(String, &str, Vec<&str>)> = vec![
            // alice's only other approver is bob: two votes can never come together.
            (
                base().replace("required = 1", "required = 2"),
                "approvals.required",
                vec!["`alice`", "1 approver(s) besides themselves (bob)"],
            ),
            // alice is no approver: bob, an operator too, has nobody to approve his requests.
            (
                no_approver_role(base()),
                "approvals.required",
                vec!["`bob`", "(none)"],
            ),
            (
                base().replace("ttl = \"15m\"", "ttl = \"8d\""),
                "approvals.ttl",
                vec!["7d"],
            ),
            // Would overflow `now + ttl` in milliseconds.
            (
                base().replace("ttl = \"15m\"", "ttl = \"106751991167d\""),
                "approvals.ttl",
                vec!["7d"],
            ),
            (
                base().replace(
                    "max_backup_age = \"26h\"",
                    "max_backup_age = \"400000000d\"",
                ),
                "schedule.max_backup_age",
                vec!["365d"],
            ),
            (
                base().replace(
                    "reminders = [\"5m\", \"15m\", \"30m\"]",
                    "reminders = [\"5m\", \"99999999999d\"]",
                ),
                "monitoring.reminders",
                vec!["365d"],
            ),
            (
                base().replace(
                    "reminders = [\"5m\", \"15m\", \"30m\"]",
                    "reminders = [\"30m\", \"5m\"]",
                ),
                "monitoring.reminders",
                vec!["increasing order", "`5m` comes after `30m`"],
            ),
            (
                base().replace(
                    "reminders = [\"5m\", \"15m\", \"30m\"]",
                    "reminders = [\"5m\", \"5m\", \"30m\"]",
                ),
                "monitoring.reminders",
                vec!["without repeats"],
            ),
            (
                base().replace("timezone = \"UTC\"", "timezone = \"Mars/Olympus_Mons\""),
                "schedule.timezone",
                vec!["Mars/Olympus_Mons", "tz database"],
            ),
            (
                base().replace("timezone = \"UTC\"", "timezone = \"Europe/Berln\""),
                "schedule.timezone",
                vec!["Europe/Berln"],
            ),
            (
                base().replace(
                    "migrations_dir = \"tests/fixtures/taskflow/prisma/migrations\"",
                    "migrations_dir = \"tests/fixtures/taskflow/prisma/migratoins\"",
                ),
                "environments.production.migrations_dir",
                vec!["prisma/migratoins", "does not exist", "working directory"],
            ),
            (
                base().replace(
                    "migrations_dir = \"tests/fixtures/taskflow/prisma/migrations\"\n",
                    "",
                ),
                "environments.production.migrations_dir",
                vec!["`prisma/migrations` (also the default when the key is left out) does not exist"],
            ),
            (
                base().replace(
                    "migrations_dir = \"tests/fixtures/taskflow/prisma/migrations\"",
                    "migrations_dir = \"Cargo.toml\"",
                ),
                "environments.production.migrations_dir",
                vec!["is not a folder"],
            ),
            (
                base().replace(
                    "app_start = [\"docker\", \"compose\", \"start\", \"backend\"]\n",
                    "",
                ),
                "environments.production.app_start",
                vec!["never start it again"],
            ),
            (
                base().replace(
                    "app_stop = [\"docker\", \"compose\", \"stop\", \"backend\"]\n",
                    "",
                ),
                "environments.production.app_stop",
                vec!["set both"],
            ),
            (
                base().replace(
                    "app_status = [\"docker\", \"compose\", \"ps\", \"backend\"]",
                    "app_status = []",
                ),
                "environments.production.app_status",
                vec!["left out"],
            ),
        ];
        // Every row is checked before failing, so one run names every rule that does not hold.
        let mut wrong = Vec::new();
        for (i, (text, key, words)) in cases.iter().enumerate() {
            match check(text) {
                Ok(_) => wrong.push(format!("row {i} ({key}): accepted")),
                Err(e) => {
                    let err = e.to_string();
                    if !err.contains(&format!("key `{key}`")) {
                        wrong.push(format!("row {i}: `{err}` should name `{key}`"));
                    }
                    for w in words {
                        if !err.contains(w) {
                            wrong.push(format!("row {i}: `{err}` should say `{w}`"));
                        }
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn configuration_that_tells_the_truth_is_accepted() {
        let cases = [
            // Viewers, listed or not, never request: they need no approvers.
            base().replace("unknown_users = \"none\"", "unknown_users = \"viewer\""),
            // Two approvers besides each operator: required = 2 holds for everyone.
            base().replace("required = 1", "required = 2")
                + "\n[[operators]]\nid = \"dave\"\nroles = [\"approver\"]\n",
            // An approver who cannot request needs no approvers of their own.
            base().replace("roles = [\"viewer\"]", "roles = [\"approver\"]"),
            base().replace("ttl = \"15m\"", "ttl = \"7d\""),
            base().replace("timezone = \"UTC\"", "timezone = \"America/New_York\""),
            without_app_commands(&base()),
            base().replace(
                "app_status = [\"docker\", \"compose\", \"ps\", \"backend\"]\n",
                "",
            ),
        ];
        for text in cases {
            check(&text).unwrap_or_else(|e| panic!("refused: {e}"));
        }
        let s = check(&without_app_commands(&base())).unwrap();
        let e = &s.environments["production"];
        assert!(!e.controls_app() && e.app_status.is_none());
        let s =
            check(&base().replace("timezone = \"UTC\"", "timezone = \"Europe/Berlin\"")).unwrap();
        assert_eq!(s.schedule.tz(), chrono_tz::Europe::Berlin);
    }

    #[test]
    fn durations_parse_strictly() {
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("26h"), Some(Duration::from_secs(93600)));
        assert_eq!(parse_duration(" 7d "), Some(Duration::from_secs(7 * 86400)));
        // What humantime adds to one number and one unit: sums, with or without spaces.
        for sum in ["1h30m", "1h 30m", "90m", "1h 1800s"] {
            assert_eq!(
                parse_duration(sum),
                Some(Duration::from_secs(5400)),
                "{sum}"
            );
        }
        for bad in [
            "1µs",
            "1\u{00a0}s",
            "",
            "m",
            "0m",
            "0h 0m",
            "-1m",
            "+1m",
            "1.5h",
            "15",
            "15 m x",
            "1y",
            "1M",
            "1w",
            "5ms",
            "2 seconds",
            "1min",
            "1h30",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        // format_duration's output reads back.
        for secs in [45, 900, 5400, 93600, 7 * 86400 + 1] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(d)), Some(d), "{secs}");
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
            ("postgres://u:hun?ter5@127.0.0.1:1/db", "hun?ter5"),
            ("postgres://u:a?b@c@db/x?sslmode=require", "a?b@c"),
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
