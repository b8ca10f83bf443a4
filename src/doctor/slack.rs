//! Slack: the bot token (`auth.test`), the app token and Socket Mode (`apps.connections.open`,
//! the call only: no websocket is opened) or, in HTTP mode, the signing secret; the bot's
//! membership of each configured channel (`conversations.info`); `slack.command` against the
//! app manifest.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{http, net_error, secret_var, Line};
use crate::config::{Settings, SlackSettings};

/// The Slack checks, none when Slack is not enabled.
pub async fn checks(settings: &Settings) -> Vec<Line> {
    let s = &settings.slack;
    if !s.enabled {
        return vec![Line::warn(
            "slack",
            "not enabled ([slack] enabled = false); not checked",
            "",
        )];
    }
    let mut out = Vec::new();
    let bot = bot_token(s, &mut out).await;
    if s.mode == "http" {
        out.push(signing_secret(s));
    } else {
        out.push(app_token(s).await);
    }
    if let Some(token) = bot {
        for (channel, keys) in channels(settings) {
            out.push(channel_member(s, &token, &channel, &keys).await);
        }
    }
    out.push(manifest(settings));
    out
}

/// A Web API call (form body, bearer token): the JSON answer, or why there is none.
async fn call(
    s: &SlackSettings,
    method: &str,
    token: &str,
    form: &[(&str, &str)],
) -> Result<Value, String> {
    let url = format!("{}/{method}", s.api_base_url.trim_end_matches('/'));
    let resp = http()
        .post(url)
        .bearer_auth(token)
        .form(form)
        .send()
        .await
        .map_err(|e| format!("{method}: {}", net_error(&e)))?;
    let status = resp.status();
    match resp.json::<Value>().await {
        Ok(v) if v.get("ok").is_some() => Ok(v),
        _ => Err(format!(
            "{method}: HTTP {} without Slack's JSON answer",
            status.as_u16()
        )),
    }
}

/// Slack's error code of a `{"ok":false}` answer.
fn error_code(v: &Value) -> Option<&str> {
    if v["ok"] == Value::Bool(true) {
        None
    } else {
        Some(v["error"].as_str().unwrap_or("unknown_error"))
    }
}

const API_FIX: &str =
    "check slack.api_base_url (https://slack.com/api) and that this host reaches it";

/// `auth.test` with the bot token; the token when Slack accepts it.
async fn bot_token(s: &SlackSettings, out: &mut Vec<Line>) -> Option<String> {
    const WHAT: &str = "slack bot token";
    let var = &s.bot_token_env;
    let Some(token) = secret_var(var) else {
        out.push(Line::fail(
            WHAT,
            format!("{var} is not set"),
            format!("export {var} with the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page (slack.bot_token_env names the variable)"),
        ));
        return None;
    };
    match call(s, "auth.test", &token, &[]).await {
        Err(e) => {
            out.push(Line::fail(
                WHAT,
                format!("Slack did not answer: {e}"),
                API_FIX,
            ));
            None
        }
        Ok(v) => match error_code(&v) {
            Some(code) => {
                out.push(Line::fail(
                    WHAT,
                    format!("Slack refused it (auth.test: {code})"),
                    format!("put a current Bot User OAuth Token (xoxb-…) in {var}: OAuth & Permissions at https://api.slack.com/apps, reinstall the app if it was revoked"),
                ));
                None
            }
            None => {
                out.push(Line::ok(
                    WHAT,
                    format!(
                        "valid: bot {} ({}) in workspace {}",
                        v["user"].as_str().unwrap_or("?"),
                        v["user_id"].as_str().unwrap_or("?"),
                        v["team"].as_str().unwrap_or("?")
                    ),
                ));
                Some(token)
            }
        },
    }
}

/// Socket Mode: `apps.connections.open` with the app token (the websocket URL it hands out is
/// not used).
async fn app_token(s: &SlackSettings) -> Line {
    const WHAT: &str = "slack app token (Socket Mode)";
    let var = &s.app_token_env;
    let Some(token) = secret_var(var) else {
        return Line::fail(
            WHAT,
            format!("{var} is not set"),
            format!("export {var} with an App-Level Token (xapp-…) with the connections:write scope (Basic Information → App-Level Tokens)"),
        );
    };
    match call(s, "apps.connections.open", &token, &[]).await {
        Err(e) => Line::fail(WHAT, format!("Slack did not answer: {e}"), API_FIX),
        Ok(v) => match error_code(&v) {
            Some(code) => Line::fail(
                WHAT,
                format!("Socket Mode cannot open a connection (apps.connections.open: {code})"),
                format!("put an App-Level Token (xapp-…, scope connections:write) in {var} and turn Socket Mode on (Settings → Socket Mode); or set slack.mode = \"http\""),
            ),
            None if v["url"].as_str().is_some_and(|u| u.starts_with("ws")) => Line::ok(
                WHAT,
                "valid: Socket Mode hands out a connection (apps.connections.open)",
            ),
            None => Line::fail(
                WHAT,
                "apps.connections.open answered without a websocket URL",
                API_FIX,
            ),
        },
    }
}

/// HTTP mode: the signing secret must be set (Slack's requests are refused without it).
fn signing_secret(s: &SlackSettings) -> Line {
    const WHAT: &str = "slack signing secret (HTTP mode)";
    let var = &s.signing_secret_env;
    match secret_var(var) {
        Some(_) => Line::ok(WHAT, format!("{var} is set")),
        None => Line::fail(
            WHAT,
            format!("{var} is not set: every request from Slack would be refused"),
            format!("export {var} with the Signing Secret (Basic Information → App Credentials)"),
        ),
    }
}

/// Every configured Slack channel id with the keys that name it, in config order.
fn channels(settings: &Settings) -> Vec<(String, Vec<String>)> {
    let s = &settings.slack;
    let own = [&s.approvals_channel, &s.audit_channel, &s.report_channel];
    super::configured_channels(settings, "slack", own, |e| &e.slack)
}

/// Groups (key, channel) pairs by channel, skipping empty ids, first appearance first.
pub(super) fn group(named: Vec<(String, String)>) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (key, id) in named {
        let id = id.trim().to_string();
        if id.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(c, _)| *c == id) {
            Some((_, keys)) => keys.push(key),
            None => out.push((id, vec![key])),
        }
    }
    out
}

/// `conversations.info`: the channel exists, is not archived, and the bot is a member.
async fn channel_member(s: &SlackSettings, token: &str, channel: &str, keys: &[String]) -> Line {
    let what = format!("slack channel {channel} ({})", keys.join(", "));
    let invite = format!("in Slack, open the channel and type /invite @dualkey (or set {} to a channel the bot is in)", keys[0]);
    let v = match call(s, "conversations.info", token, &[("channel", channel)]).await {
        Ok(v) => v,
        Err(e) => return Line::fail(what, format!("Slack did not answer: {e}"), API_FIX),
    };
    match error_code(&v) {
        Some("missing_scope") => Line::warn(
            what,
            format!(
                "membership not checked: the bot token lacks {} (conversations.info: missing_scope)",
                v["needed"].as_str().unwrap_or("channels:read")
            ),
            "add the bot scopes channels:read and groups:read (OAuth & Permissions) and reinstall, or make sure by hand that the bot was invited",
        ),
        Some("channel_not_found") => Line::fail(
            what,
            "no such channel, or a private channel the bot is not in (conversations.info: channel_not_found)",
            invite,
        ),
        Some(code) => Line::fail(what, format!("conversations.info: {code}"), invite),
        None => {
            let c = &v["channel"];
            let name = c["name"].as_str().unwrap_or("?");
            if c["is_archived"] == Value::Bool(true) {
                Line::fail(what, format!("#{name} is archived: nothing can be posted there"), format!("unarchive it, or set {} to another channel", keys[0]))
            } else if c["is_member"] == Value::Bool(true) {
                Line::ok(what, format!("#{name}, the bot is a member"))
            } else {
                Line::fail(what, format!("the bot is not a member of #{name} (is_member: false): its posts there fail with not_in_channel"), invite)
            }
        }
    }
}

/// `slack.command` is a valid slash command and, when the manifest is kept as `manifest.yml`
/// beside the config file (or in the current folder), that manifest has it and the same mode.
/// Slack's API does not tell a bot token its app's slash commands, so the manifest is what
/// there is to compare with.
fn manifest(settings: &Settings) -> Line {
    const WHAT: &str = "slack command";
    let command = settings.slack.command.trim();
    if !command.starts_with('/') || command.len() < 2 || command.chars().any(char::is_whitespace) {
        return Line::fail(
            WHAT,
            format!("slack.command `{command}` is not one word starting with /"),
            "set slack.command = \"/db\" (or another /word) and regenerate the manifest with `dualkey slack manifest`",
        );
    }
    let regenerate = "regenerate it with `dualkey slack manifest > manifest.yml` and paste it in the app's App Manifest page (https://api.slack.com/apps)";
    let Some(path) = manifest_path(&settings.source) else {
        return Line::warn(
            WHAT,
            format!("{command}; no manifest.yml beside the config or in the current folder to compare with (Slack does not tell a bot its slash commands)"),
            "keep the manifest from `dualkey slack manifest` as manifest.yml beside the config, or check the app's Slash Commands page by hand",
        );
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            return Line::fail(
                WHAT,
                format!("{} cannot be read: {e}", path.display()),
                regenerate,
            )
        }
    };
    let (commands, socket) = read_manifest(&text);
    let shown = path.display();
    if !commands.iter().any(|c| c == command) {
        return Line::fail(
            WHAT,
            format!("slack.command is {command} but {shown} has {}: Slack sends the other command, dualkey answers none", if commands.is_empty() { "no slash command".to_string() } else { commands.join(", ") }),
            regenerate,
        );
    }
    let http = settings.slack.mode == "http";
    if let Some(on) = socket.filter(|on| *on == http) {
        return Line::fail(
            WHAT,
            format!(
                "slack.mode is {} but {shown} has socket_mode_enabled: {on}",
                settings.slack.mode
            ),
            regenerate,
        );
    }
    Line::ok(WHAT, format!("{command} matches {shown}"))
}

/// `manifest.yml` beside the config file, else in the current folder.
fn manifest_path(config: &Path) -> Option<PathBuf> {
    let beside = config.parent().map(|d| d.join("manifest.yml"));
    [beside, Some(PathBuf::from("manifest.yml"))]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
}

/// The slash commands (`- command: "/db"`) and `socket_mode_enabled` of a manifest, read
/// line by line (the YAML `dualkey slack manifest` writes, quoted or not).
pub(super) fn read_manifest(text: &str) -> (Vec<String>, Option<bool>) {
    let value = |line: &str, key: &str| -> Option<String> {
        let rest = line.trim().trim_start_matches("- ").trim_start();
        let v = rest.strip_prefix(key)?.trim();
        let v = v.split(" #").next().unwrap_or(v).trim();
        Some(match serde_json::from_str::<String>(v) {
            Ok(s) => s,
            Err(_) => v.trim_matches(|c| c == '\'' || c == '"').to_string(),
        })
    };
    let commands = text.lines().filter_map(|l| value(l, "command:")).collect();
    let socket = text
        .lines()
        .find_map(|l| value(l, "socket_mode_enabled:"))
        .map(|v| v == "true");
    (commands, socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_dualkey_writes_is_read_back() {
        let yaml = "features:\n  slash_commands:\n    - command: \"/dbops\"\n      description: \"x\"\nsettings:\n  socket_mode_enabled: true\n";
        assert_eq!(
            read_manifest(yaml),
            (vec!["/dbops".to_string()], Some(true))
        );
        let plain = "  slash_commands:\n    - command: /db # ours\n  socket_mode_enabled: false\n";
        assert_eq!(read_manifest(plain), (vec!["/db".to_string()], Some(false)));
    }

    #[test]
    fn channels_are_grouped_with_every_key_that_names_them() {
        let g = group(vec![
            ("a".into(), "C1".into()),
            ("b".into(), "".into()),
            ("c".into(), "C2".into()),
            ("d".into(), " C1 ".into()),
        ]);
        assert_eq!(
            g,
            vec![
                ("C1".to_string(), vec!["a".to_string(), "d".to_string()]),
                ("C2".to_string(), vec!["c".to_string()])
            ]
        );
    }
}
