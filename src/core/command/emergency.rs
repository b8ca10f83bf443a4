/// emergency [ENV]
///
/// The emergency procedure as one plan: safety backup, stop the app, assess, restore the newest
/// verified backup taken before the newest migration, clear failed migration rows, start the
/// app. Needs approval.
use super::{no_more, Command, CommandSpec, EnvName, OptionSpec, ParseCtx};
use crate::config::Role;

/// Arguments of `emergency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Environment.
    pub env: EnvName,
}

/// Table row.
pub const SPEC: CommandSpec = CommandSpec {
    name: "emergency",
    usage: "emergency [ENV]",
    summary:
        "stop app, assess, restore the last good backup, clear failed rows, start app (approval)",
    role: Role::Operator,
    options: &[OptionSpec {
        name: "env",
        description: "environment (default: the configured one)",
        required: false,
        choices: &[],
    }],
    parse,
};

fn parse(args: &[&str], ctx: &ParseCtx) -> Result<Command, String> {
    let env = ctx.env(args.first().copied())?;
    no_more(args.get(1..).unwrap_or_default())?;
    Ok(Command::Emergency(Args { env }))
}
