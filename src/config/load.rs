//! Loading: the file read with `toml`, the `DUALKEY_*` environment overrides merged by figment
//! (legacy names, `KEY__KEY` names, the guard against misspelt ones), then validation.

use std::path::Path;

use super::{redact_url, ConfigError, Settings};

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
}
