//! The chat platforms' sections, `[slack]` and `[discord]`, the per-environment channel
//! overrides (`[environments.NAME.slack]`) and the [`Route`] a kind of message takes.

use serde::Deserialize;

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
