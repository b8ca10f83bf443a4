/// monitor [ENV] [MINUTES]
///
/// Starts a monitoring window by hand (no approval): reminders at `monitoring.reminders` with a
/// health probe and `monitor-ok` / `monitor-rollback` buttons, for MINUTES (1 to 1440; default:
/// the last reminder). The worker opens the same window after every successful deploy, rollback,
/// restore and emergency ([`open_window_tx`]); the `monitoring` module posts its reminders.
use anyhow::Context as _;

use super::{
    named, no_more, Choices, Command, CommandSpec, EnvName, OptionKind, OptionSpec, Options,
    ParseCtx, ENV_OPTION,
};
use crate::config::Role;
use crate::core::human;
use crate::core::invocation::Invocation;
use crate::core::reply::Reply;
use crate::core::window::{offsets_of, open_window_tx, NewWindow};

/// The longest window `monitor` opens, in minutes (a day).
pub const MAX_MINUTES: u32 = 1440;

/// Arguments of `monitor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Environment.
    pub env: EnvName,
    /// Length of the window; `None`: the last configured reminder.
    pub minutes: Option<u32>,
}

/// Table row.
pub const SPEC: CommandSpec = CommandSpec {
    name: "monitor",
    usage: "monitor [ENV] [MINUTES]",
    summary: "start a monitoring window by hand: reminders with a health probe",
    role: Role::Operator,
    options: &[
        ENV_OPTION,
        OptionSpec {
            name: "minutes",
            description: "length of the window, 1 to 1440 (default: the last reminder)",
            required: false,
            kind: OptionKind::Integer,
            choices: Choices::Any,
            autocomplete: false,
            range: Some((1, MAX_MINUTES as i64)),
        },
    ],
    words,
    from_options,
};

fn minutes(tok: &str) -> Result<u32, String> {
    let bad = || {
        format!("`{tok}` is not a number of minutes from 1 to {MAX_MINUTES} (write 30, not 30m)")
    };
    if tok.is_empty() || tok.len() > 4 || !tok.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    match tok.parse::<u32>() {
        Ok(m) if (1..=MAX_MINUTES).contains(&m) => Ok(m),
        _ => Err(bad()),
    }
}

/// `monitor [ENV] [MINUTES]`: a first word that is all digits is the length, not an environment.
fn words(args: &[&str], _ctx: &ParseCtx) -> Result<Vec<(String, String)>, String> {
    let is_number = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    let (env, rest) = match args.first() {
        Some(t) if !is_number(t) => (Some(*t), &args[1..]),
        _ => (None, args),
    };
    no_more(rest.get(1..).unwrap_or_default())?;
    Ok(named(&[("env", env), ("minutes", rest.first().copied())]))
}

fn from_options(o: &Options, ctx: &ParseCtx) -> Result<Command, String> {
    Ok(Command::Monitor(Args {
        env: ctx.env(o.get("env"))?,
        minutes: o.get("minutes").map(minutes).transpose()?,
    }))
}

/// Opens the window and answers with its reminders.
pub async fn run(inv: &Invocation<'_>, args: Args) -> anyhow::Result<()> {
    let core = inv.core;
    let env = args.env.0;
    let dir = core
        .settings
        .environments
        .get(&env)
        .map(|e| e.migrations_dir.clone())
        .context("parsed environments are configured")?;
    // By hand nothing is known to have changed: `monitor-rollback` offers the newest migration
    // of the folder (the rollback plan refuses, with the reason, when it is not applied).
    let newest = core.facts.migration_names(&dir).into_iter().next_back();
    let mut tx = core.store.begin().await?;
    let w = open_window_tx(
        core,
        &mut tx,
        NewWindow {
            env: env.clone(),
            opened_by: inv.who.id.clone().context("operators have ids")?,
            account: Some(inv.ev.actor.qualified()),
            operation_id: None,
            kind: "manual".into(),
            migrations: vec![],
            rollback_target: newest,
            channel: Some(inv.ev.channel.clone()),
            minutes: args.minutes,
        },
    )
    .await?;
    tx.commit().await?;
    core.outbox_wake.notify_one();
    let offsets = offsets_of(core, args.minutes);
    inv.out
        .respond(Reply::ephemeral(format!(
            "Monitoring window {} opened in {env}: reminders at {}; the last one closes it.",
            w.id,
            offsets
                .iter()
                .map(|o| format!("+{}", human::span(*o)))
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_are_parsed_strictly() {
        assert_eq!(minutes("1"), Ok(1));
        assert_eq!(minutes("1440"), Ok(1440));
        for bad in ["0", "1441", "30m", "-5", "", "99999999999", "1.5"] {
            assert!(minutes(bad).is_err(), "{bad}");
        }
    }
}
