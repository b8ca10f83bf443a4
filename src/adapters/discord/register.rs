//! `dualkey discord register`: the `/db` command with its subcommands and typed options, built
//! from the command table; and the answers to autocomplete interactions.
//!
//! One CHAT_INPUT command named like the configured slash command (`/db` -> `db`), one
//! SUB_COMMAND per row of [`REGISTRY`], each with the row's options: STRING or INTEGER,
//! `required`, `choices` (fixed ones, the configured environments, the command names) and
//! `autocomplete` (migration names, backup ids, request ids). Discord wants required options
//! before optional ones, names of 1-32 lowercase letters, digits, `-` and `_`, and descriptions
//! of at most 100 characters.

use serde_json::{json, Value};

use crate::config::Settings;
use crate::core::command::{Choices, OptionKind, OptionSpec, REGISTRY};
use crate::core::context::Core;

/// Discord's APPLICATION_COMMAND_OPTION types.
const SUB_COMMAND: u8 = 1;
const STRING: u8 = 3;
const INTEGER: u8 = 4;

/// Most choices an option may list.
const MAX_CHOICES: usize = 25;

/// The command name Discord registers: the configured slash command without its `/`.
pub fn command_name(settings: &Settings) -> String {
    settings
        .slack
        .command
        .trim_start_matches('/')
        .to_lowercase()
}

/// Cuts a description to Discord's 100 characters.
fn description(s: &str) -> String {
    if s.chars().count() <= 100 {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(99).collect();
        out.push('…');
        out
    }
}

fn option_json(settings: &Settings, o: &OptionSpec) -> Value {
    let kind = match o.kind {
        OptionKind::Integer => INTEGER,
        OptionKind::String | OptionKind::Words => STRING,
    };
    let mut v = json!({
        "type": kind,
        "name": o.name,
        "description": description(o.description),
        "required": o.required,
    });
    let choices: Vec<String> = match o.choices {
        Choices::Any => Vec::new(),
        Choices::Fixed(c) => c.iter().map(|c| c.to_string()).collect(),
        Choices::Environments => settings.environments.keys().cloned().collect(),
        Choices::Commands => REGISTRY.iter().map(|s| s.name.to_string()).collect(),
    };
    // More than Discord can list: the option stays free text, checked when the command arrives.
    if !choices.is_empty()
        && choices.len() <= MAX_CHOICES
        && choices.iter().all(|c| c.chars().count() <= 100)
    {
        v["choices"] = choices
            .iter()
            .map(|c| json!({"name": c, "value": c}))
            .collect();
    } else if o.autocomplete {
        v["autocomplete"] = json!(true);
    }
    if let Some((lo, hi)) = o.range {
        v["min_value"] = json!(lo);
        v["max_value"] = json!(hi);
    }
    v
}

/// The `/db` command as Discord's bulk-overwrite endpoint takes it (one element of the array).
pub fn command_json(settings: &Settings) -> Value {
    let subcommands: Vec<Value> = REGISTRY
        .iter()
        .map(|s| {
            // Required options first (Discord rejects a required option after an optional one).
            let mut options: Vec<&OptionSpec> = s.options.iter().collect();
            options.sort_by_key(|o| !o.required);
            json!({
                "type": SUB_COMMAND,
                "name": s.name,
                "description": description(s.summary),
                "options": options.iter().map(|o| option_json(settings, o)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "type": 1,
        "name": command_name(settings),
        "description": "dualkey: Prisma migrations and backups behind two-person approval",
        "options": subcommands,
        "default_member_permissions": null,
        // Guild channels only (INTERACTION_CONTEXT_TYPE GUILD): cards and votes live there.
        "contexts": [0],
    })
}

/// Where `dualkey discord register` puts the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every guild the bot is in (`PUT /applications/{app}/commands`); Discord may take a while
    /// to show changes.
    Global,
    /// One guild (`PUT /applications/{app}/guilds/{guild}/commands`); changes show at once.
    Guild(u64),
}

/// Registers the command with a bulk overwrite (replacing every command of this application in
/// `scope`) through `discord.api_base_url`, and returns the subcommand names Discord answered
/// with. A refusal carries Discord's own message and the fields it objected to.
pub async fn register(
    settings: &Settings,
    token: &str,
    scope: Scope,
) -> anyhow::Result<Vec<String>> {
    let app: u64 = settings.discord.application_id.trim().parse().map_err(|_| {
        anyhow::anyhow!(
            "discord.application_id is not set to an application id (the Application ID on the General Information page of https://discord.com/developers/applications)"
        )
    })?;
    let http = super::http::client(&settings.discord.api_base_url, token, Some(app));
    let body = json!([command_json(settings)]);
    let answer = match scope {
        Scope::Global => http.create_global_commands(&body).await,
        Scope::Guild(g) => {
            http.create_guild_commands(serenity::model::id::GuildId::new(g), &body)
                .await
        }
    };
    let commands = answer.map_err(discord_error)?;
    Ok(commands
        .iter()
        .flat_map(|c| {
            c.options
                .iter()
                .map(move |o| format!("/{} {}", c.name, o.name))
        })
        .collect())
}

/// Discord's refusal as one readable error: status, message and each field it objected to.
fn discord_error(e: serenity::Error) -> anyhow::Error {
    use serenity::http::HttpError;
    match e {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) => {
            let mut msg = format!(
                "Discord refused the registration ({} {}): {} (code {})",
                r.status_code.as_u16(),
                r.status_code.canonical_reason().unwrap_or(""),
                r.error.message,
                r.error.code
            );
            for f in &r.error.errors {
                msg.push_str(&format!("\n  {}: {} ({})", f.path, f.message, f.code));
            }
            anyhow::anyhow!(msg)
        }
        other => anyhow::Error::new(other).context("cannot reach Discord"),
    }
}

/// Answers an APPLICATION_COMMAND_AUTOCOMPLETE interaction: `data` is the interaction's `data`
/// object; the result is the whole interaction response (`{"type": 8, "data": {"choices": …}}`).
pub async fn autocomplete(core: &Core, data: &Value) -> Value {
    let choices: Vec<Value> = match focused(data) {
        Some(f) => core
            .complete(&f.command, &f.option, &f.partial, f.env.as_deref())
            .await
            .into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
        None => Vec::new(),
    };
    json!({"type": 8, "data": {"choices": choices}})
}

/// What an autocomplete interaction asks about.
#[derive(Debug, PartialEq, Eq)]
struct Focused {
    command: String,
    option: String,
    partial: String,
    env: Option<String>,
}

/// Reads the subcommand, the focused option and its partial value, and the `env` given so far.
fn focused(data: &Value) -> Option<Focused> {
    let sub = data["options"]
        .as_array()?
        .iter()
        .find(|o| o["type"] == json!(SUB_COMMAND))?;
    let opts = sub["options"].as_array()?;
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let f = opts.iter().find(|o| o["focused"] == json!(true))?;
    Some(Focused {
        command: sub["name"].as_str()?.to_string(),
        option: f["name"].as_str()?.to_string(),
        partial: text(&f["value"]).unwrap_or_default(),
        env: opts
            .iter()
            .find(|o| o["name"] == json!("env") && o["focused"] != json!(true))
            .and_then(|o| text(&o["value"])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::command::usage;

    /// The documented config with a second environment.
    pub(crate) fn settings() -> Settings {
        let base =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/dualkey.toml"))
                .unwrap();
        let text = format!(
            "{base}\n[environments.staging]\ndatabase_url_env = \"STAGING_DATABASE_URL\"\nmigrations_dir = \"tests/fixtures/taskflow/prisma/migrations\"\nbackup_dir = \"backups\"\n"
        );
        Settings::from_toml(&text, std::path::Path::new("test.toml")).unwrap()
    }

    fn valid_name(n: &str) -> bool {
        (1..=32).contains(&n.chars().count())
            && n.chars()
                .all(|c| c == '-' || c == '_' || c.is_alphanumeric())
            && n.to_lowercase() == n
    }

    #[test]
    fn every_command_is_registered_within_discords_limits() {
        let s = settings();
        let cmd = command_json(&s);
        assert_eq!(cmd["name"], "db");
        assert_eq!(cmd["type"], 1);
        assert!(cmd["description"].as_str().unwrap().chars().count() <= 100);
        let subs = cmd["options"].as_array().unwrap();
        assert_eq!(subs.len(), REGISTRY.len());
        assert!(subs.len() <= 25, "Discord allows 25 subcommands");
        for spec in REGISTRY {
            let sub = subs
                .iter()
                .find(|x| x["name"] == spec.name)
                .unwrap_or_else(|| panic!("{} not registered", spec.name));
            assert_eq!(sub["type"], 1);
            assert!(valid_name(spec.name), "{}", spec.name);
            let d = sub["description"].as_str().unwrap();
            assert!((1..=100).contains(&d.chars().count()), "{}: {d}", spec.name);
            let opts = sub["options"].as_array().unwrap();
            assert!(opts.len() <= 25);
            let mut seen_optional = false;
            for o in opts {
                let name = o["name"].as_str().unwrap();
                assert!(valid_name(name), "{}: option {name}", spec.name);
                let d = o["description"].as_str().unwrap();
                assert!((1..=100).contains(&d.chars().count()), "{name}: {d}");
                assert!(matches!(o["type"].as_u64(), Some(3 | 4)), "{name}");
                let required = o["required"].as_bool().unwrap();
                assert!(
                    !(required && seen_optional),
                    "{}: required {name} after an optional option",
                    spec.name
                );
                seen_optional |= !required;
                if let Some(c) = o["choices"].as_array() {
                    assert!(c.len() <= 25 && !c.is_empty());
                    assert!(o.get("autocomplete").is_none(), "choices and autocomplete");
                }
            }
        }
    }

    /// Every argument of a usage line is a registered option and the other way round; required
    /// exactly when not bracketed; the literal choices of the usage are the registered ones.
    #[test]
    fn registered_options_agree_with_the_usage_text() {
        let s = settings();
        let cmd = command_json(&s);
        for spec in REGISTRY {
            let sub = cmd["options"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == spec.name)
                .unwrap();
            let registered = sub["options"].as_array().unwrap();
            let args = usage::args(spec.usage);
            assert_eq!(
                args.len(),
                registered.len(),
                "{}: usage `{}` vs {} registered options",
                spec.name,
                spec.usage,
                registered.len()
            );
            for a in &args {
                let o = usage::option_for(spec, a)
                    .unwrap_or_else(|| panic!("{}: `{}` has no option", spec.name, a.shown));
                let r = registered
                    .iter()
                    .find(|r| r["name"] == o.name)
                    .unwrap_or_else(|| panic!("{}: {} not registered", spec.name, o.name));
                assert_eq!(
                    r["required"].as_bool(),
                    Some(a.required),
                    "{}: {} vs usage `{}`",
                    spec.name,
                    o.name,
                    a.shown
                );
                if !a.choices.is_empty() {
                    let got: Vec<&str> = r["choices"]
                        .as_array()
                        .unwrap_or_else(|| panic!("{}: {} has no choices", spec.name, o.name))
                        .iter()
                        .map(|c| c["value"].as_str().unwrap())
                        .collect();
                    assert_eq!(got, a.choices, "{}: {}", spec.name, o.name);
                }
            }
        }
    }

    #[test]
    fn env_choices_are_the_configured_environments_and_names_follow_the_config() {
        let mut s = settings();
        s.slack.command = "/dbops".into();
        let cmd = command_json(&s);
        assert_eq!(cmd["name"], "dbops");
        let rollback = cmd["options"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "rollback")
            .unwrap();
        let opts = rollback["options"].as_array().unwrap();
        assert_eq!(opts[0]["name"], "migration");
        assert_eq!(opts[0]["autocomplete"], true);
        assert_eq!(opts[0]["required"], true);
        let env = opts.iter().find(|o| o["name"] == "env").unwrap();
        assert_eq!(
            env["choices"],
            json!([{"name": "production", "value": "production"}, {"name": "staging", "value": "staging"}])
        );
        let strategy = opts.iter().find(|o| o["name"] == "strategy").unwrap();
        assert_eq!(strategy["choices"][1]["value"], "restore");
        let audit = cmd["options"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "audit")
            .unwrap();
        let n = &audit["options"][0];
        assert_eq!(
            (
                n["type"].as_u64(),
                n["min_value"].as_i64(),
                n["max_value"].as_i64()
            ),
            (Some(4), Some(1), Some(100))
        );
    }

    #[test]
    fn the_focused_option_and_env_are_read_from_the_interaction_data() {
        let data = json!({"name":"db","options":[{"type":1,"name":"rollback","options":[
            {"name":"migration","value":"2024","focused":true,"type":3},
            {"name":"env","value":"staging","type":3}]}]});
        assert_eq!(
            focused(&data),
            Some(Focused {
                command: "rollback".into(),
                option: "migration".into(),
                partial: "2024".into(),
                env: Some("staging".into()),
            })
        );
        assert_eq!(focused(&json!({"name": "db"})), None);
        assert_eq!(
            focused(&json!({"options": [{"type": 1, "name": "status", "options": []}]})),
            None
        );
    }
}
