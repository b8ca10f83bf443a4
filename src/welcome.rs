//! What `dualkey serve` prints when it has started, in plain words: how to talk to it (each chat
//! platform, the local shell, the HTTP listeners) and what it found missing in the config and
//! the environment. Printed to stdout, once; the logs go to stderr as before.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use crate::config::{redact_url, Settings};

/// Where `serve` listens.
pub struct Listening {
    /// Chat endpoints (and `/healthz`).
    pub main: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics` when `server.admin_listen` is set.
    pub admin: Option<SocketAddr>,
}

/// The start-up text of `serve`. `shell_as` is the operator whose commands are read from this
/// terminal (`serve --shell-as NAME`), if any.
pub fn serve_banner(s: &Settings, config: &Path, at: &Listening, shell_as: Option<&str>) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "dualkey is running. Config: {}; store: {}.",
        config.display(),
        redact_url(&s.store.url)
    );
    let _ = writeln!(t, "\nHow to talk to it:");
    let _ = writeln!(t, "  Slack:   {}", slack_line(s));
    let _ = writeln!(t, "  Discord: {}", discord_line(s));
    let _ = writeln!(t, "  Here:    {}", shell_line(s, config, shell_as));
    let _ = writeln!(t, "  HTTP:    {}", http_line(s, at));
    let missing = s.warnings();
    if missing.is_empty() {
        let _ = writeln!(t, "\nNothing missing in the config or the environment.");
    } else {
        let _ = writeln!(t, "\nMissing ({}):", missing.len());
        for m in &missing {
            let _ = writeln!(t, "  - {m}");
        }
    }
    let _ = writeln!(
        t,
        "\nCheck tokens, channels, databases, tools and folders with `dualkey doctor`. Stop with ctrl-c (or SIGTERM): running operations finish first."
    );
    t
}

fn slack_line(s: &Settings) -> String {
    if !s.slack.enabled {
        return "off (slack.enabled = false; README \"Connecting Slack\" turns it on)".into();
    }
    let how = match s.slack.mode.as_str() {
        "http" => "HTTP mode: Slack posts to /slack/commands and /slack/interactions",
        _ => "Socket Mode: no public address needed",
    };
    format!(
        "on, {how}; type `{} help` in a channel the bot is in; cards go to {}",
        s.slack.command, s.slack.approvals_channel
    )
}

fn discord_line(s: &Settings) -> String {
    if !s.discord.enabled {
        return "off (discord.enabled = false; README \"Connecting Discord\" turns it on)".into();
    }
    let how = match s.discord.mode.as_str() {
        "http" => "HTTP mode: Discord posts to /discord/interactions",
        _ => "gateway mode: no public address needed",
    };
    format!(
        "on, {how}; type `/db help` in the server (after `dualkey discord register`); cards go to channel {}",
        s.discord.approvals_channel
    )
}

fn shell_line(s: &Settings, config: &Path, shell_as: Option<&str>) -> String {
    if let Some(name) = shell_as {
        return format!(
            "type commands below as `{name}` (`{} help`, `as NAME` to act as another operator, `click BUTTON-ID`); ctrl-d ends the shell and stops serve",
            s.slack.command
        );
    }
    let who = s.operators.first().map(|o| o.id.as_str()).unwrap_or("NAME");
    let cfg = format!("--config {}", config.display());
    // Not "`dualkey shell` from another terminal": replies to a shell leave through the outbox,
    // which only the lease holder delivers, and this process has no shell to print them.
    format!(
        "start it as `dualkey serve --shell-as {who} {cfg}` to type commands in this terminal, in the same process; or stop it and run `dualkey shell --as {who} {cfg}`"
    )
}

fn http_line(s: &Settings, at: &Listening) -> String {
    let mut chat = Vec::new();
    if s.slack.enabled && s.slack.mode == "http" {
        chat.push("/slack/commands, /slack/interactions");
    }
    if s.discord.enabled && s.discord.mode == "http" {
        chat.push("/discord/interactions");
    }
    let chat = if chat.is_empty() {
        String::new()
    } else {
        format!(" ({})", chat.join(", "))
    };
    match at.admin {
        Some(admin) => format!(
            "http://{}{chat}; health and metrics on http://{admin} (/healthz, /readyz, /metrics)",
            at.main
        ),
        None => format!(
            "http://{}{chat}; /healthz, /readyz, /metrics there too",
            at.main
        ),
    }
}
