//! `dualkey doctor`: the checks every first set-up trips over, one line each.
//!
//! - Slack (when enabled): the bot token (`auth.test`), the app token and Socket Mode
//!   (`apps.connections.open`, the call only), the bot's membership of each configured channel
//!   (`conversations.info`), and `slack.command` against the app manifest.
//! - Discord (when enabled): the bot token (`GET /users/@me`), each configured channel (`GET
//!   /channels/{id}`, then the bot's permissions there computed from the guild's roles and the
//!   channel's overwrites), and the registered command against the command table.
//! - Each environment: the database (and its TLS), the client tools against the server, the
//!   migrations folder against `_prisma_migrations`, the backup folder (writable, room for two
//!   of the newest backup), the app commands, the health URL.
//! - The state store: reachable, and its schema migrations those of this dualkey (read only:
//!   doctor applies nothing).
//!
//! Every line is `ok   WHAT: DETAIL`, `warn WHAT: DETAIL — fix: FIX` (not configured or not
//! checkable) or `FAIL WHAT: PROBLEM — fix: FIX`; any FAIL makes the exit code 1. Network calls
//! go to the configured API base URLs with short timeouts; tokens and database URLs are never
//! printed.

mod discord;
mod env;
mod slack;
mod store;

use std::time::Duration;

use crate::config::Settings;

/// How long one network call of a check may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Works.
    Ok,
    /// Not configured, or could not be checked; not a failure.
    Warn,
    /// Broken: dualkey will fail here.
    Fail,
}

/// One check's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub verdict: Verdict,
    /// What was checked: `slack bot token`, `production database`.
    pub what: String,
    /// What was found (for a failure: what is wrong).
    pub detail: String,
    /// What to do about it.
    pub fix: Option<String>,
}

impl Line {
    pub fn ok(what: impl Into<String>, detail: impl Into<String>) -> Line {
        Line {
            verdict: Verdict::Ok,
            what: what.into(),
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warn(
        what: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Line {
        Line {
            verdict: Verdict::Warn,
            what: what.into(),
            detail: detail.into(),
            fix: Some(fix.into()).filter(|f: &String| !f.is_empty()),
        }
    }

    pub fn fail(
        what: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Line {
        Line {
            verdict: Verdict::Fail,
            what: what.into(),
            detail: problem.into(),
            fix: Some(fix.into()).filter(|f: &String| !f.is_empty()),
        }
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = match self.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        write!(f, "{tag} {}", self.what)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        if let Some(fix) = &self.fix {
            write!(f, " — fix: {fix}")?;
        }
        Ok(())
    }
}

/// Runs every check (environments: only `only_env` when given), handing each line to `emit`
/// as soon as it is known; returns whether any failed.
pub async fn run(
    settings: &Settings,
    only_env: Option<&str>,
    emit: &mut dyn FnMut(&Line) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let mut failed = false;
    let mut out = |lines: Vec<Line>| -> anyhow::Result<()> {
        for l in &lines {
            failed |= l.verdict == Verdict::Fail;
            emit(l)?;
        }
        Ok(())
    };
    out(within("store", async { vec![store::check(settings).await] }).await)?;
    out(within("slack", slack::checks(settings)).await)?;
    out(within("discord", discord::checks(settings)).await)?;
    for (name, e) in &settings.environments {
        if only_env.is_some_and(|o| o != name) {
            continue;
        }
        out(within(&format!("environments.{name}"), env::checks(name, e)).await)?;
    }
    Ok(failed)
}

/// How long one group of checks (the store, Slack, Discord, one environment) may take in all:
/// each HTTP call has its own 5 s limit, but a database that accepts a session and then stalls
/// would otherwise hold doctor forever.
const GROUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The lines of `checks`, or one FAIL line when they do not finish within [`GROUP_TIMEOUT`].
async fn within(what: &str, checks: impl std::future::Future<Output = Vec<Line>>) -> Vec<Line> {
    match tokio::time::timeout(GROUP_TIMEOUT, checks).await {
        Ok(lines) => lines,
        Err(_) => vec![Line::fail(
            what.to_string(),
            format!("no answer within {} s", GROUP_TIMEOUT.as_secs()),
            "check that the servers it talks to answer (a database or API that accepts a connection and then stalls), then run doctor again",
        )],
    }
}

/// The HTTP client of the checks: short timeouts, no redirects to follow silently.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CALL_TIMEOUT)
        .user_agent(concat!("dualkey-doctor/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a plain HTTP client builds")
}

/// A reqwest failure in words, without the URL (it may carry nothing secret, but stays short):
/// `no answer within 5 s`, `connection failed (Connection refused)`.
fn net_error(e: &reqwest::Error) -> String {
    let mut cause = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    let why = if e.is_timeout() {
        format!("no answer within {} s", CALL_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_decode() {
        "the answer is not JSON".into()
    } else {
        "request failed".into()
    };
    let cause: String = cause.chars().take(120).collect();
    if cause.is_empty() || e.is_timeout() {
        why
    } else {
        format!("{why} ({cause})")
    }
}

/// The value of the environment variable `var`, trimmed, when set and not blank.
fn secret_var(var: &str) -> Option<String> {
    std::env::var(var)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Every channel id configured for `platform` (`own`: its approvals, audit and report channels;
/// then each environment's overrides, read by `overrides`), with the config keys naming it, in
/// config order; empty ids left out.
fn configured_channels(
    settings: &crate::config::Settings,
    platform: &str,
    own: [&String; 3],
    overrides: impl Fn(&crate::config::EnvironmentSettings) -> &crate::config::ChannelOverrides,
) -> Vec<(String, Vec<String>)> {
    const KEYS: [&str; 3] = ["approvals_channel", "audit_channel", "report_channel"];
    let mut named: Vec<(String, String)> = KEYS
        .iter()
        .zip(own)
        .map(|(key, id)| (format!("{platform}.{key}"), id.clone()))
        .collect();
    for (env, e) in &settings.environments {
        let o = overrides(e);
        for (key, id) in
            KEYS.iter()
                .zip([&o.approvals_channel, &o.audit_channel, &o.report_channel])
        {
            if let Some(id) = id {
                named.push((format!("environments.{env}.{platform}.{key}"), id.clone()));
            }
        }
    }
    slack::group(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_documented() {
        assert_eq!(
            Line::ok("slack bot token", "valid").to_string(),
            "ok   slack bot token: valid"
        );
        assert_eq!(
            Line::fail("x", "broken", "mend it").to_string(),
            "FAIL x: broken — fix: mend it"
        );
        assert_eq!(
            Line::warn("y", "not set", "").to_string(),
            "warn y: not set"
        );
    }
}
