//! Validation: the rules that types alone cannot express, one check per section, run in a fixed
//! order so the first error named is always the same one.

use std::path::Path;
use std::time::Duration;

use super::environments::default_migrations_dir;
use super::{
    format_duration, parse_cron, valid_name, ConfigError, EnvironmentSettings, Role, Settings,
    MAX_DURATION, MAX_TTL,
};

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

impl Settings {
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

    /// Checks every rule that types alone cannot express, section by section; the first
    /// broken rule is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_store()?;
        self.validate_server()?;
        self.validate_modes()?;
        self.validate_slack_channels()?;
        self.validate_discord()?;
        self.validate_required_votes()?;
        self.validate_operators()?;
        self.check_approvers_suffice()?;
        self.validate_ttl()?;
        self.validate_environments()?;
        self.validate_default_environment()?;
        self.validate_reminders()?;
        self.validate_duration_limits()?;
        self.validate_schedule()?;
        self.validate_deploy()
    }

    /// `[deploy]`: a lock timeout a migration can live with, a bounded number of tries, and
    /// waits under a year.
    fn validate_deploy(&self) -> Result<(), ConfigError> {
        let d = &self.deploy;
        if d.lock_timeout.0 > std::time::Duration::from_secs(3600) {
            return Err(self.invalid(
                "deploy.lock_timeout",
                format!(
                    "`{}` is longer than an hour: every query behind the migration waits that long; use seconds, e.g. \"5s\"",
                    format_duration(d.lock_timeout.0)
                ),
            ));
        }
        if d.lock_retries > 50 {
            return Err(self.invalid(
                "deploy.lock_retries",
                format!(
                    "{} tries is too many; use at most 50 (the default is 5)",
                    d.lock_retries
                ),
            ));
        }
        let limits = [
            ("deploy.dump_wait", Some(d.dump_wait)),
            (
                "deploy.rehearsal_max_backup_age",
                Some(d.rehearsal_max_backup_age),
            ),
            ("deploy.long_transaction", Some(d.long_transaction)),
            ("deploy.statement_timeout", d.statement_timeout),
        ];
        for (key, v) in limits {
            if let Some(v) = v.filter(|v| v.0 > MAX_DURATION) {
                return Err(self.invalid(
                    key,
                    format!(
                        "`{}` is longer than a year; use at most \"365d\"",
                        format_duration(v.0)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `[store]`: a URL dualkey can open.
    fn validate_store(&self) -> Result<(), ConfigError> {
        if !(self.store.url.starts_with("sqlite:")
            || self.store.url.starts_with("postgres://")
            || self.store.url.starts_with("postgresql://"))
        {
            return Err(self.invalid("store.url", "must start with sqlite:// or postgres://"));
        }
        Ok(())
    }

    /// `slack.mode`, `slack.command` and `discord.mode`.
    fn validate_modes(&self) -> Result<(), ConfigError> {
        if !matches!(self.slack.mode.as_str(), "socket" | "http") {
            return Err(self.invalid("slack.mode", "must be \"socket\" or \"http\""));
        }
        if !self.slack.command.starts_with('/') || self.slack.command.len() < 2 {
            return Err(self.invalid("slack.command", "must start with / (for example \"/db\")"));
        }
        if !matches!(self.discord.mode.as_str(), "gateway" | "http") {
            return Err(self.invalid("discord.mode", "must be \"gateway\" or \"http\""));
        }
        Ok(())
    }

    /// Slack channels by id: chat.update and chat.postEphemeral take only ids, so a name
    /// (`#db-approvals`) would post cards that can never be edited.
    fn slack_channel(&self, key: String, v: &str) -> Result<(), ConfigError> {
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
    }

    /// The `[slack]` channels, then each environment's `[environments.NAME.slack]` ones.
    fn validate_slack_channels(&self) -> Result<(), ConfigError> {
        self.slack_channel(
            "slack.approvals_channel".into(),
            &self.slack.approvals_channel,
        )?;
        self.slack_channel("slack.audit_channel".into(), &self.slack.audit_channel)?;
        self.slack_channel("slack.report_channel".into(), &self.slack.report_channel)?;
        for (name, e) in &self.environments {
            for (key, v) in [
                ("approvals_channel", &e.slack.approvals_channel),
                ("audit_channel", &e.slack.audit_channel),
                ("report_channel", &e.slack.report_channel),
            ] {
                if let Some(v) = v {
                    self.slack_channel(format!("environments.{name}.slack.{key}"), v)?;
                }
            }
        }
        Ok(())
    }

    /// Discord ids are snowflakes (decimal u64); a channel name (`#ops`) or a user name
    /// would only fail later, at every post.
    fn snowflake(&self, key: String, v: &str, what: &str) -> Result<(), ConfigError> {
        if v.is_empty() || (v.len() <= 20 && v.parse::<u64>().is_ok_and(|n| n > 0)) {
            Ok(())
        } else {
            Err(self.invalid(key, format!("`{v}` is not a Discord {what} id (a number like 200000000000000000; in Discord: Developer Mode, then right-click, Copy ID)")))
        }
    }

    /// `[discord]`: the application, guild and channel ids, each environment's channels, the
    /// operators' Discord accounts, and the public key in http mode.
    fn validate_discord(&self) -> Result<(), ConfigError> {
        let d = &self.discord;
        self.snowflake(
            "discord.application_id".into(),
            d.application_id.trim(),
            "application",
        )?;
        self.snowflake("discord.guild_id".into(), &d.guild_id, "server (guild)")?;
        for (key, v) in [
            ("approvals_channel", &d.approvals_channel),
            ("audit_channel", &d.audit_channel),
            ("report_channel", &d.report_channel),
        ] {
            self.snowflake(format!("discord.{key}"), v, "channel")?;
        }
        for (name, e) in &self.environments {
            for (key, v) in [
                ("approvals_channel", &e.discord.approvals_channel),
                ("audit_channel", &e.discord.audit_channel),
                ("report_channel", &e.discord.report_channel),
            ] {
                if let Some(v) = v {
                    self.snowflake(format!("environments.{name}.discord.{key}"), v, "channel")?;
                }
            }
        }
        for (i, op) in self.operators.iter().enumerate() {
            if let Some(a) = op.discord.as_deref().filter(|a| !a.trim().is_empty()) {
                self.snowflake(format!("operators[{i}].discord"), a, "user")?;
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
        Ok(())
    }

    /// `approvals.required`: at least one vote besides the requester's.
    fn validate_required_votes(&self) -> Result<(), ConfigError> {
        if self.approvals.required == 0 {
            return Err(self.invalid(
                "approvals.required",
                "must be at least 1: the requester can never approve alone",
            ));
        }
        Ok(())
    }

    /// `[[operators]]`: valid and distinct ids, at least one role, and each platform account
    /// non-empty and belonging to one operator only.
    fn validate_operators(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// `approvals.ttl`: at most [`MAX_TTL`].
    fn validate_ttl(&self) -> Result<(), ConfigError> {
        if self.approvals.ttl.0 > MAX_TTL {
            return Err(self.invalid(
                "approvals.ttl",
                format!(
                    "`{}` is longer than the 7d limit: a request that waits that long was reviewed against stale facts; use at most \"7d\" (the default is \"15m\")",
                    format_duration(self.approvals.ttl.0)
                ),
            ));
        }
        Ok(())
    }

    /// `[environments.*]`: at least one, each checked in name order.
    fn validate_environments(&self) -> Result<(), ConfigError> {
        if self.environments.is_empty() {
            return Err(self.invalid(
                "environments",
                "define at least one [environments.NAME] block",
            ));
        }
        for (name, env) in &self.environments {
            self.validate_environment(name, env)?;
        }
        Ok(())
    }

    /// One `[environments.NAME]` block.
    fn validate_environment(
        &self,
        name: &str,
        env: &EnvironmentSettings,
    ) -> Result<(), ConfigError> {
        let k = |f: &str| format!("environments.{name}.{f}");
        if !valid_name(name) {
            return Err(self.invalid(
                format!("environments.{name}"),
                "environment names must be 1-32 of a-z, 0-9, _ and -",
            ));
        }
        if env.database_url_env.trim().is_empty() {
            return Err(self.invalid(k("database_url_env"), "must name an environment variable"));
        }
        if !env.migrations_dir.is_dir() {
            return Err(self.invalid(k("migrations_dir"), missing_folder(&env.migrations_dir)));
        }
        self.validate_app_commands(name, env)?;
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
        Ok(())
    }

    /// An environment's app commands: non-empty argument vectors, `app_stop` and `app_start`
    /// together, and a timeout of at least a second.
    fn validate_app_commands(
        &self,
        name: &str,
        env: &EnvironmentSettings,
    ) -> Result<(), ConfigError> {
        let k = |f: &str| format!("environments.{name}.{f}");
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
        Ok(())
    }

    /// `default_environment`: one of the environments, and required when there are several.
    fn validate_default_environment(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// `monitoring.reminders`: at least one, in increasing order without repeats.
    fn validate_reminders(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// `schedule.max_backup_age` and each monitoring reminder: at most [`MAX_DURATION`].
    fn validate_duration_limits(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// `[schedule]`: a tz database time zone and cron patterns that parse.
    fn validate_schedule(&self) -> Result<(), ConfigError> {
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
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::*;

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
}
