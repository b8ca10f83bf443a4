//! The set-up tools: `config check`, `slack manifest`, `discord register` and `doctor`.

use std::process::ExitCode;

use super::{load, out, pick_env, Cli, UsageError};

/// `dualkey config check`: the config is valid; a summary, then the warnings.
pub(super) async fn config_check(cli: &Cli) -> anyhow::Result<ExitCode> {
    let s = load(cli)?;
    out(format_args!(
        "config OK: {} ({} operator(s), environments: {}; store {})",
        s.source.display(),
        s.operators.len(),
        s.environments
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        crate::config::redact_url(&s.store.url)
    ))?;
    for w in s.warnings() {
        out(format_args!("warning: {w}"))?;
    }
    for w in crate::services::reports::tool_warnings(&s).await {
        out(format_args!("warning: {w}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `dualkey slack manifest [--url URL]`: the app manifest for this config, on stdout.
pub(super) fn slack_manifest(cli: &Cli, url: Option<&str>) -> anyhow::Result<ExitCode> {
    let s = load(cli)?;
    let yaml = crate::adapters::slack::manifest::manifest(&s, url).map_err(UsageError)?;
    out(yaml.trim_end())?;
    Ok(ExitCode::SUCCESS)
}

/// `dualkey discord register [--guild ID | --global]`: the slash command registered with
/// Discord, its subcommands listed.
pub(super) async fn discord_register(
    cli: &Cli,
    guild: &Option<String>,
    global: &bool,
) -> anyhow::Result<ExitCode> {
    use crate::adapters::discord::register::{self, Scope};
    let s = load(cli)?;
    let guild = match (guild, *global) {
        (Some(g), _) => Some(g.clone()),
        (None, false) if !s.discord.guild_id.trim().is_empty() => {
            Some(s.discord.guild_id.trim().to_string())
        }
        _ => None,
    };
    let scope = match guild {
        None => Scope::Global,
        Some(g) => Scope::Guild(g.parse().ok().filter(|g| *g != 0).ok_or_else(|| {
            UsageError(format!(
                "`{g}` is not a guild id (a number; Discord: right-click the server, Copy Server ID)"
            ))
        })?),
    };
    if s.discord.application_id.trim().parse::<u64>().is_err() {
        return Err(UsageError(
            "discord.application_id is not set: put the Application ID from https://discord.com/developers/applications (General Information) in the config".into(),
        )
        .into());
    }
    let var = &s.discord.bot_token_env;
    let token = std::env::var(var)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            UsageError(format!(
                "the bot token is not set: export {var} (discord.bot_token_env) with the token from the Bot page of your Discord application"
            ))
        })?;
    let names = register::register(&s, token.trim(), scope).await?;
    let name = register::command_name(&s);
    match scope {
        Scope::Global => out(format_args!(
            "registered /{name} globally ({} subcommands); Discord clients may take a while to show changes",
            names.len()
        ))?,
        Scope::Guild(g) => out(format_args!(
            "registered /{name} in guild {g} ({} subcommands)",
            names.len()
        ))?,
    }
    for n in names {
        out(format_args!("  {n}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `dualkey doctor [--env ENV]`: every check's line; exit 1 when one failed.
pub(super) async fn doctor(cli: &Cli, env: &Option<String>) -> anyhow::Result<ExitCode> {
    let s = load(cli)?;
    let only = match env {
        Some(_) => Some(pick_env(&s, env)?),
        None => None,
    };
    let failed = crate::doctor::run(&s, only.as_deref(), &mut |line| out(line)).await?;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
