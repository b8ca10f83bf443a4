//! `dualkey slack manifest`: a Slack app manifest (YAML, <https://api.slack.com/reference/manifests>)
//! for this config: the slash command from `slack.command`, interactivity for the buttons, and
//! either Socket Mode or the two HTTP request URLs under `--url`.
//!
//! The YAML is written by hand: every string is a double-quoted scalar escaped as JSON (a JSON
//! string is a valid YAML double-quoted scalar), so nothing in the config can break out.

use crate::config::Settings;

/// What the app is called in Slack.
const NAME: &str = "dualkey";
/// Shown in the app directory and the app's profile (Slack allows 140 characters).
const DESCRIPTION: &str =
    "Prisma + PostgreSQL migrations, backups and restores as chat commands, behind two-person approval.";
/// The slash command's description in Slack's command picker.
const COMMAND_DESCRIPTION: &str = "Database runbook: status, backups, deploy, rollback, restore";
/// The slash command's usage hint.
const USAGE_HINT: &str = "help | status [env] | backup [env] | deploy [env] | approvals";

/// A YAML double-quoted scalar.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// The manifest for `settings`. In HTTP mode (`slack.mode = "http"`) `public_url` is the
/// HTTPS address Slack reaches dualkey at (`/slack/commands` and `/slack/interactions` are
/// added); Socket Mode needs none and refuses one, so a mistake in the mode is seen early.
pub fn manifest(settings: &Settings, public_url: Option<&str>) -> Result<String, String> {
    let (http, base) = mode_and_base(settings, public_url)?;
    let command = checked_command(settings)?;
    Ok(yaml(settings, http, base.as_deref(), command))
}

/// Whether `slack.mode` is HTTP, and the checked `--url` it needs (Socket Mode refuses one).
fn mode_and_base(
    settings: &Settings,
    public_url: Option<&str>,
) -> Result<(bool, Option<String>), String> {
    let s = &settings.slack;
    let http = match s.mode.as_str() {
        "http" => true,
        "socket" => false,
        other => {
            return Err(format!(
                "slack.mode is \"{other}\"; it must be \"socket\" or \"http\""
            ))
        }
    };
    let base = match (http, public_url) {
        (true, None) => {
            return Err(
                "slack.mode is \"http\", so Slack needs the public HTTPS address dualkey is \
                 reachable at: pass --url https://your.host (the manifest adds /slack/commands \
                 and /slack/interactions)"
                    .into(),
            )
        }
        (false, Some(_)) => {
            return Err(
                "--url is only for slack.mode = \"http\"; in Socket Mode dualkey connects out \
                 to Slack and needs no public address (leave out --url)"
                    .into(),
            )
        }
        (true, Some(u)) => Some(check_url(u)?),
        (false, None) => None,
    };
    Ok((http, base))
}

/// `slack.command`, trimmed, when it is one word starting with `/`.
fn checked_command(settings: &Settings) -> Result<&str, String> {
    let command = settings.slack.command.trim();
    if !command.starts_with('/') || command.len() < 2 || command.chars().any(char::is_whitespace) {
        return Err(format!(
            "slack.command {} must be one word starting with / (for example \"/db\")",
            q(command)
        ));
    }
    Ok(command)
}

/// The manifest's YAML: `http` for HTTP mode with the request URLs under `base`.
fn yaml(settings: &Settings, http: bool, base: Option<&str>, command: &str) -> String {
    let mut y = String::new();
    y.push_str(&format!(
        "# Slack app manifest for dualkey ({} mode), from {}.\n",
        if http { "HTTP" } else { "Socket" },
        settings.source.display()
    ));
    y.push_str(
        "# Create the app at https://api.slack.com/apps -> Create New App -> From an app manifest.\n",
    );
    y.push_str("_metadata:\n  major_version: 1\n  minor_version: 1\n");
    y.push_str("display_information:\n");
    y.push_str(&format!("  name: {}\n", q(NAME)));
    y.push_str(&format!("  description: {}\n", q(DESCRIPTION)));
    y.push_str("features:\n");
    y.push_str("  bot_user:\n");
    y.push_str(&format!("    display_name: {}\n", q(NAME)));
    y.push_str("    always_online: true\n");
    y.push_str("  slash_commands:\n");
    y.push_str(&format!("    - command: {}\n", q(command)));
    if let Some(base) = base {
        y.push_str(&format!(
            "      url: {}\n",
            q(&format!("{base}/slack/commands"))
        ));
    }
    y.push_str(&format!("      description: {}\n", q(COMMAND_DESCRIPTION)));
    y.push_str(&format!("      usage_hint: {}\n", q(USAGE_HINT)));
    y.push_str("      should_escape: false\n");
    y.push_str("oauth_config:\n");
    y.push_str("  scopes:\n");
    y.push_str(
        "    # Only what dualkey uses: `commands` for the slash command, `chat:write` for\n\
         \x20   # chat.postMessage, chat.update and chat.postEphemeral, `channels:read` and\n\
         \x20   # `groups:read` for conversations.info (`dualkey doctor` checks that the bot is in\n\
         \x20   # each configured public or private channel; names and membership, no messages).\n\
         \x20   # No chat:write.public (invite the bot to its channels instead, so it posts only\n\
         \x20   # where it was let in), no users:read (operators are mapped by Slack user id in\n\
         \x20   # [[operators]]), and nothing that reads channel history.\n",
    );
    y.push_str("    bot:\n");
    y.push_str("      - commands\n");
    y.push_str("      - chat:write\n");
    y.push_str("      - channels:read\n");
    y.push_str("      - groups:read\n");
    y.push_str("settings:\n");
    y.push_str("  interactivity:\n");
    y.push_str("    is_enabled: true\n");
    if let Some(base) = base {
        y.push_str(&format!(
            "    request_url: {}\n",
            q(&format!("{base}/slack/interactions"))
        ));
    }
    y.push_str("  org_deploy_enabled: false\n");
    y.push_str(&format!("  socket_mode_enabled: {}\n", !http));
    y.push_str("  token_rotation_enabled: false\n");
    y
}

/// Checks `--url`: an absolute `https://` URL with a host and no query; returns it without a
/// trailing slash.
fn check_url(u: &str) -> Result<String, String> {
    let u = u.trim();
    let rest = u.strip_prefix("https://").ok_or_else(|| {
        format!(
            "--url {} must start with https:// (Slack only sends requests over HTTPS), \
             for example --url https://your.host",
            q(u)
        )
    })?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty()
        || rest.contains(['?', '#'])
        || rest
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
    {
        return Err(format!(
            "--url {} is not a plain address like https://your.host or https://your.host/prefix",
            q(u)
        ));
    }
    Ok(u.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings(extra: &str) -> Settings {
        // Parsed without validation: only [slack] matters here.
        let mut s: Settings = toml::from_str(extra).expect("config");
        s.source = Path::new("test.toml").into();
        s
    }

    /// The value after `key: ` on the line that starts (after indentation) with it.
    fn value<'a>(y: &'a str, key: &str) -> Vec<&'a str> {
        y.lines()
            .filter_map(|l| l.trim_start().trim_start_matches("- ").strip_prefix(key))
            .filter_map(|r| r.strip_prefix(": "))
            .collect()
    }

    #[test]
    fn socket_mode_has_no_urls_and_enables_socket_mode() {
        let y = manifest(&settings("[slack]\nmode = \"socket\"\n"), None).unwrap();
        assert_eq!(value(&y, "socket_mode_enabled"), ["true"]);
        assert!(!y.contains("url:"), "{y}");
        assert!(!y.contains("request_url"), "{y}");
        assert_eq!(value(&y, "is_enabled"), ["true"]);
        assert_eq!(value(&y, "org_deploy_enabled"), ["false"]);
        assert_eq!(value(&y, "token_rotation_enabled"), ["false"]);
        assert_eq!(value(&y, "always_online"), ["true"]);
        assert_eq!(value(&y, "should_escape"), ["false"]);
        assert_eq!(value(&y, "display_name"), ["\"dualkey\""]);
        let err = manifest(&settings(""), Some("https://x.example")).unwrap_err();
        assert!(err.contains("--url is only for"), "{err}");
    }

    #[test]
    fn http_mode_needs_a_url_and_points_slack_at_both_endpoints() {
        let s = settings("[slack]\nmode = \"http\"\n");
        let err = manifest(&s, None).unwrap_err();
        assert!(err.contains("--url https://your.host"), "{err}");
        let err = manifest(&s, Some("http://x.example")).unwrap_err();
        assert!(err.contains("https://"), "{err}");
        let y = manifest(&s, Some("https://bot.example.com/dk/")).unwrap();
        assert_eq!(value(&y, "socket_mode_enabled"), ["false"]);
        assert_eq!(
            value(&y, "url"),
            ["\"https://bot.example.com/dk/slack/commands\""]
        );
        assert_eq!(
            value(&y, "request_url"),
            ["\"https://bot.example.com/dk/slack/interactions\""]
        );
        for bad in [
            "https://",
            "https://x.example/?a=b",
            "https://x.example/\"\n- x",
        ] {
            assert!(manifest(&s, Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_needed_bot_scopes() {
        let y = manifest(&settings(""), None).unwrap();
        let scopes: Vec<&str> = y
            .lines()
            .skip_while(|l| l.trim() != "bot:")
            .skip(1)
            .take_while(|l| l.trim_start().starts_with("- "))
            .map(|l| l.trim_start().trim_start_matches("- "))
            .collect();
        assert_eq!(
            scopes,
            ["commands", "chat:write", "channels:read", "groups:read"]
        );
        assert!(
            !y.lines().any(|l| l.trim() == "user:"),
            "no user scopes: {y}"
        );
    }

    #[test]
    fn the_command_comes_from_the_config() {
        let y = manifest(&settings("[slack]\ncommand = \"/prod-db\"\n"), None).unwrap();
        assert_eq!(value(&y, "command"), ["\"/prod-db\""]);
        let y = manifest(&settings(""), None).unwrap();
        assert_eq!(value(&y, "command"), ["\"/db\""]);
    }

    #[test]
    fn quoting_keeps_odd_text_inside_its_string() {
        assert_eq!(q("a\"b\\c\nd: e # f"), r#""a\"b\\c\nd: e # f""#);
    }
}
