//! Discord: the bot token (`GET /users/@me`); each configured channel (`GET /channels/{id}`,
//! then the bot's permissions there, computed as Discord does from the guild's roles, the bot's
//! roles and the channel's overwrites: VIEW_CHANNEL, SEND_MESSAGES and EMBED_LINKS are needed);
//! the registered command (`GET /applications/{app}[/guilds/{guild}]/commands`) against the
//! command table (`register::command_json`).

use std::collections::HashMap;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{http, net_error, secret_var, Line};
use crate::adapters::discord::register;
use crate::config::Settings;

const ADMINISTRATOR: u64 = 1 << 3;
const VIEW_CHANNEL: u64 = 1 << 10;
const SEND_MESSAGES: u64 = 1 << 11;
const EMBED_LINKS: u64 = 1 << 14;
/// What dualkey needs in a channel: see it, post, and post cards (embeds).
const NEEDED: [(u64, &str); 3] = [
    (VIEW_CHANNEL, "VIEW_CHANNEL"),
    (SEND_MESSAGES, "SEND_MESSAGES"),
    (EMBED_LINKS, "EMBED_LINKS"),
];

const API_FIX: &str =
    "check discord.api_base_url (https://discord.com) and that this host reaches it";

/// A REST client bound to the bot token.
struct Api {
    client: reqwest::Client,
    base: String,
    auth: String,
}

/// Discord's answer: status and JSON body (`Null` when it was not JSON).
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    /// `Missing Access (403, code 50001)`.
    fn describe(&self) -> String {
        match self.body["message"].as_str() {
            Some(m) => format!(
                "{m} ({}, code {})",
                self.status.as_u16(),
                self.body["code"].as_i64().unwrap_or(0)
            ),
            None => format!("HTTP {}", self.status.as_u16()),
        }
    }
}

impl Api {
    async fn get(&self, path: &str) -> Result<Answer, String> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, &self.auth)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {}", net_error(&e)))?;
        let status = resp.status();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }
}

/// The Discord checks, none when Discord is not enabled.
pub async fn checks(settings: &Settings) -> Vec<Line> {
    let d = &settings.discord;
    if !d.enabled {
        return vec![Line::warn(
            "discord",
            "not enabled ([discord] enabled = false); not checked",
            "",
        )];
    }
    let var = &d.bot_token_env;
    let Some(token) = secret_var(var) else {
        return vec![Line::fail(
            "discord bot token",
            format!("{var} is not set"),
            format!("export {var} with the token from the Bot page of your application at https://discord.com/developers/applications (discord.bot_token_env names the variable)"),
        )];
    };
    let api = Api {
        client: http(),
        base: format!("{}/api/v10", d.api_base_url.trim_end_matches('/')),
        auth: format!("Bot {token}"),
    };
    let mut out = Vec::new();
    let Some(bot) = bot_user(&api, var, &mut out).await else {
        return out;
    };
    let mut guilds = GuildCache::default();
    for (channel, keys) in channels(settings) {
        out.push(channel_access(&api, &bot, &mut guilds, &channel, &keys).await);
    }
    out.push(commands(&api, settings).await);
    out
}

/// `GET /users/@me`: the bot's user id when the token is accepted.
async fn bot_user(api: &Api, var: &str, out: &mut Vec<Line>) -> Option<String> {
    const WHAT: &str = "discord bot token";
    match api.get("/users/@me").await {
        Err(e) => out.push(Line::fail(WHAT, format!("Discord did not answer: {e}"), API_FIX)),
        Ok(a) if a.status == StatusCode::UNAUTHORIZED => out.push(Line::fail(
            WHAT,
            format!("Discord refused it: {}", a.describe()),
            format!("put a current bot token in {var} (Bot page → Reset Token at https://discord.com/developers/applications)"),
        )),
        Ok(a) if a.status.is_success() => {
            let id = a.body["id"].as_str().unwrap_or("").to_string();
            out.push(Line::ok(
                WHAT,
                format!("valid: bot {} ({id})", a.body["username"].as_str().unwrap_or("?")),
            ));
            return Some(id);
        }
        Ok(a) => out.push(Line::fail(WHAT, format!("GET /users/@me: {}", a.describe()), API_FIX)),
    }
    None
}

/// Every configured Discord channel id with the keys naming it.
fn channels(settings: &Settings) -> Vec<(String, Vec<String>)> {
    let d = &settings.discord;
    let own = [&d.approvals_channel, &d.audit_channel, &d.report_channel];
    super::configured_channels(settings, "discord", own, |e| &e.discord)
}

/// What is known of a guild for permission computing: its roles' permissions, its owner, and
/// the bot's roles there.
struct Guild {
    roles: HashMap<String, u64>,
    owner: String,
    bot_roles: Vec<String>,
}

#[derive(Default)]
struct GuildCache(HashMap<String, Result<Guild, String>>);

impl GuildCache {
    /// `GET /guilds/{id}` (roles, owner) and `GET /guilds/{id}/members/{bot}` (the bot's roles).
    async fn get(&mut self, api: &Api, guild: &str, bot: &str) -> &Result<Guild, String> {
        if !self.0.contains_key(guild) {
            let g = fetch_guild(api, guild, bot).await;
            self.0.insert(guild.to_string(), g);
        }
        &self.0[guild]
    }
}

async fn fetch_guild(api: &Api, guild: &str, bot: &str) -> Result<Guild, String> {
    let g = api.get(&format!("/guilds/{guild}")).await?;
    if !g.status.is_success() {
        return Err(format!("GET /guilds/{guild}: {}", g.describe()));
    }
    let m = api.get(&format!("/guilds/{guild}/members/{bot}")).await?;
    if !m.status.is_success() {
        return Err(format!(
            "GET /guilds/{guild}/members/{bot}: {}",
            m.describe()
        ));
    }
    let roles = g.body["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["id"].as_str()?.to_string(), bits(&r["permissions"]))))
        .collect();
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    Ok(Guild {
        roles,
        owner: g.body["owner_id"].as_str().unwrap_or("").to_string(),
        bot_roles: strs(&m.body["roles"]),
    })
}

/// A permission field (a decimal string in API v10; a number is read too).
fn bits(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        v => v.as_u64().unwrap_or(0),
    }
}

/// The bot's permissions in a channel, as Discord computes them: @everyone and the bot's roles,
/// ADMINISTRATOR (or owning the guild) grants all; then the channel's @everyone overwrite, its
/// role overwrites together, the bot's member overwrite.
fn permissions(guild_id: &str, g: &Guild, bot: &str, overwrites: &Value) -> u64 {
    if g.owner == bot {
        return u64::MAX;
    }
    let mut p = g.roles.get(guild_id).copied().unwrap_or(0);
    for r in &g.bot_roles {
        p |= g.roles.get(r).copied().unwrap_or(0);
    }
    if p & ADMINISTRATOR != 0 {
        return u64::MAX;
    }
    let ows: Vec<&Value> = overwrites.as_array().into_iter().flatten().collect();
    let apply = |p: u64, allow: u64, deny: u64| (p & !deny) | allow;
    if let Some(o) = ows.iter().find(|o| o["id"] == json!(guild_id)) {
        p = apply(p, bits(&o["allow"]), bits(&o["deny"]));
    }
    let (mut allow, mut deny) = (0, 0);
    for o in ows
        .iter()
        .filter(|o| o["type"] == json!(0) && o["id"] != json!(guild_id))
    {
        if g.bot_roles.iter().any(|r| o["id"] == json!(r)) {
            allow |= bits(&o["allow"]);
            deny |= bits(&o["deny"]);
        }
    }
    p = apply(p, allow, deny);
    if let Some(o) = ows
        .iter()
        .find(|o| o["type"] == json!(1) && o["id"] == json!(bot))
    {
        p = apply(p, bits(&o["allow"]), bits(&o["deny"]));
    }
    p
}

/// `GET /channels/{id}`: the bot sees the channel; then its permissions there.
async fn channel_access(
    api: &Api,
    bot: &str,
    guilds: &mut GuildCache,
    channel: &str,
    keys: &[String],
) -> Line {
    let what = format!("discord channel {channel} ({})", keys.join(", "));
    let invite = format!("invite the bot to the server and let its role View Channel, Send Messages and Embed Links in that channel (channel settings → Permissions), or set {} to another channel", keys[0]);
    let a = match api.get(&format!("/channels/{channel}")).await {
        Ok(a) => a,
        Err(e) => return Line::fail(what, format!("Discord did not answer: {e}"), API_FIX),
    };
    if a.status == StatusCode::FORBIDDEN {
        return Line::fail(
            what,
            format!("the bot cannot see it: {}", a.describe()),
            invite,
        );
    }
    if !a.status.is_success() {
        return Line::fail(
            what,
            format!("GET /channels/{channel}: {}", a.describe()),
            format!(
                "set {} to the id of a channel (right-click it → Copy Channel ID)",
                keys[0]
            ),
        );
    }
    let c = &a.body;
    let name = c["name"].as_str().unwrap_or("?");
    let Some(guild_id) = c["guild_id"].as_str() else {
        return Line::ok(what, format!("{name}: visible (not a server channel)"));
    };
    let g = match guilds.get(api, guild_id, bot).await {
        Ok(g) => g,
        Err(e) => {
            return Line::warn(
                what,
                format!("#{name} is visible; permissions not checked: {e}"),
                "",
            )
        }
    };
    let p = permissions(guild_id, g, bot, &c["permission_overwrites"]);
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(b, _)| p & b == 0)
        .map(|(_, n)| *n)
        .collect();
    if missing.is_empty() {
        Line::ok(what, format!("#{name}: the bot can see it and post cards (VIEW_CHANNEL, SEND_MESSAGES, EMBED_LINKS)"))
    } else {
        Line::fail(what, format!("#{name}: the bot lacks {} there (from the server's roles and the channel's overwrites)", missing.join(", ")), invite)
    }
}

/// The registered command against the command table: missing, or which subcommands differ.
async fn commands(api: &Api, settings: &Settings) -> Line {
    let d = &settings.discord;
    let name = register::command_name(settings);
    let what = format!("discord command /{name}");
    let Ok(app) = d.application_id.trim().parse::<u64>() else {
        return Line::fail(what, "discord.application_id is not set", "put the Application ID (General Information at https://discord.com/developers/applications) in discord.application_id");
    };
    let guild = d.guild_id.trim();
    let (path, scope, register_cmd) = if guild.is_empty() {
        (
            format!("/applications/{app}/commands"),
            "globally".to_string(),
            "dualkey discord register --global".to_string(),
        )
    } else {
        (
            format!("/applications/{app}/guilds/{guild}/commands"),
            format!("in guild {guild}"),
            format!("dualkey discord register --guild {guild}"),
        )
    };
    let fix = format!("run `{register_cmd}`");
    let a = match api.get(&path).await {
        Ok(a) => a,
        Err(e) => return Line::fail(what, format!("Discord did not answer: {e}"), API_FIX),
    };
    if !a.status.is_success() {
        return Line::fail(what, format!("GET {path}: {}", a.describe()), "check discord.application_id and discord.guild_id, and that the bot was invited with the applications.commands scope");
    }
    let registered = a
        .body
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == json!(name)));
    let Some(registered) = registered else {
        return Line::fail(what, format!("not registered {scope}"), fix);
    };
    let diff = differences(&register::command_json(settings), registered);
    if diff.is_empty() {
        Line::ok(
            what,
            format!("registered {scope}, matches the command table"),
        )
    } else {
        Line::fail(
            what,
            format!("registered {scope} but out of date: {}", diff.join("; ")),
            fix,
        )
    }
}

/// How a registered command differs from the wanted one, in words (empty when it does not).
pub(super) fn differences(wanted: &Value, registered: &Value) -> Vec<String> {
    let subs = |v: &Value| -> Vec<(String, Value)> {
        v["options"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| (o["name"].as_str().unwrap_or("").to_string(), canon(o)))
            .collect()
    };
    let (want, have) = (subs(wanted), subs(registered));
    let mut out = Vec::new();
    if wanted["description"] != registered["description"] {
        out.push("its description changed".to_string());
    }
    let missing: Vec<&str> = want
        .iter()
        .filter(|(n, _)| !have.iter().any(|(h, _)| h == n))
        .map(|(n, _)| n.as_str())
        .collect();
    let extra: Vec<&str> = have
        .iter()
        .filter(|(n, _)| !want.iter().any(|(w, _)| w == n))
        .map(|(n, _)| n.as_str())
        .collect();
    let changed: Vec<&str> = want
        .iter()
        .filter(|(n, w)| have.iter().any(|(h, hv)| h == n && hv != w))
        .map(|(n, _)| n.as_str())
        .collect();
    for (label, names) in [
        ("missing", missing),
        ("no longer in dualkey", extra),
        ("changed", changed),
    ] {
        if !names.is_empty() {
            out.push(format!("{label}: {}", names.join(", ")));
        }
    }
    out
}

/// An option (or subcommand) reduced to what matters, with Discord's defaults filled in.
fn canon(o: &Value) -> Value {
    let or = |k: &str, d: Value| match &o[k] {
        Value::Null => d,
        v => v.clone(),
    };
    let choices: Vec<Value> = o["choices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!([c["name"], c["value"]]))
        .collect();
    let options: Vec<Value> = o["options"]
        .as_array()
        .into_iter()
        .flatten()
        .map(canon)
        .collect();
    json!({
        "type": o["type"],
        "name": o["name"],
        "description": o["description"],
        "required": or("required", json!(false)),
        "autocomplete": or("autocomplete", json!(false)),
        "choices": choices,
        "min_value": o["min_value"],
        "max_value": o["max_value"],
        "options": options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guild(everyone: u64, bot_role: u64) -> Guild {
        Guild {
            roles: [("1".to_string(), everyone), ("2".to_string(), bot_role)].into(),
            owner: "9".into(),
            bot_roles: vec!["2".into()],
        }
    }

    #[test]
    fn permissions_follow_discords_order() {
        let g = guild(VIEW_CHANNEL | SEND_MESSAGES, EMBED_LINKS);
        let all = VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS;
        assert_eq!(permissions("1", &g, "5", &json!([])) & all, all);
        // @everyone denies sending; the bot's role allows it again.
        let ow = json!([{"id":"1","type":0,"allow":"0","deny":SEND_MESSAGES.to_string()},
                        {"id":"2","type":0,"allow":SEND_MESSAGES.to_string(),"deny":"0"}]);
        assert_eq!(permissions("1", &g, "5", &ow) & all, all);
        // The member overwrite has the last word.
        let ow = json!([{"id":"5","type":1,"allow":"0","deny":VIEW_CHANNEL.to_string()}]);
        assert_eq!(permissions("1", &g, "5", &ow) & VIEW_CHANNEL, 0);
        // ADMINISTRATOR ignores overwrites.
        let admin = guild(0, ADMINISTRATOR);
        assert_eq!(permissions("1", &admin, "5", &ow), u64::MAX);
    }

    #[test]
    fn a_stale_registration_names_what_differs() {
        let s = crate::config::Settings::from_toml(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/dualkey.toml"))
                .unwrap(),
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let want = register::command_json(&s);
        assert!(differences(&want, &want).is_empty());
        let mut have = want.clone();
        let subs = have["options"].as_array_mut().unwrap();
        let first = subs.remove(0)["name"].as_str().unwrap().to_string();
        subs[0]["description"] = json!("old text");
        let second = subs[0]["name"].as_str().unwrap().to_string();
        let d = differences(&want, &have);
        assert_eq!(
            d,
            vec![format!("missing: {first}"), format!("changed: {second}")]
        );
    }
}
