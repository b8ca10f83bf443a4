/// help [COMMAND]
///
/// Usage for all commands, or for one.
use super::{
    named, no_more, Choices, Command, CommandSpec, OptionSpec, Options, ParseCtx, REGISTRY,
};
use crate::config::Role;
use crate::core::invocation::Invocation;

/// Arguments of `help`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The command to explain, or all.
    pub command: Option<&'static str>,
}

/// Table row.
pub const SPEC: CommandSpec = CommandSpec {
    name: "help",
    usage: "help [COMMAND]",
    summary: "usage for all commands or one",
    role: Role::Viewer,
    options: &[OptionSpec::string("command", "a command name").choices(Choices::Commands)],
    words,
    from_options,
};

fn words(args: &[&str], _ctx: &ParseCtx) -> Result<Vec<(String, String)>, String> {
    no_more(args.get(1..).unwrap_or_default())?;
    Ok(named(&[("command", args.first().copied())]))
}

fn from_options(o: &Options, _ctx: &ParseCtx) -> Result<Command, String> {
    let command = match o.get("command") {
        None => None,
        Some(name) => Some(
            super::spec(name)
                .map(|s| s.name)
                .ok_or_else(|| format!("no command `{name}`"))?,
        ),
    };
    Ok(Command::Help(Args { command }))
}

/// The full help text, generated from the registry.
pub fn render_all(slash: &str) -> String {
    let mut out = format!("dualkey commands ({slash} COMMAND):");
    for s in REGISTRY {
        out.push_str(&format!("\n  {slash} {:<36} {}", s.usage, s.summary));
    }
    out.push_str("\nButtons: approve:<request> / deny:<request> on approval cards. Destructive steps need a second person.");
    out
}

/// Help for one command.
pub fn render_one(slash: &str, s: &CommandSpec) -> String {
    let mut out = format!("usage: {slash} {}\n{}", s.usage, s.summary);
    for o in s.options {
        let req = if o.required { "required" } else { "optional" };
        out.push_str(&format!(
            "\n  {:<10} {} ({req})",
            o.name.to_uppercase(),
            o.description
        ));
    }
    out
}

/// Answers with the usage of one command or all.
pub async fn run(inv: &Invocation<'_>, args: Args) -> anyhow::Result<()> {
    let slash = inv.core.slash();
    let text = match args.command.and_then(super::spec) {
        Some(s) => render_one(slash, s),
        None => render_all(slash),
    };
    inv.reply(text).await
}
