/// checklist [ENV]
///
/// The migration safety checklist, each item ticked from facts the bot can check.
use super::{no_more, Command, CommandSpec, EnvName, OptionSpec, ParseCtx};
use crate::config::Role;

/// Arguments of `checklist`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Environment.
    pub env: EnvName,
}

/// Table row.
pub const SPEC: CommandSpec = CommandSpec {
    name: "checklist",
    usage: "checklist [ENV]",
    summary: "the migration safety checklist, checked against facts",
    role: Role::Viewer,
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
    Ok(Command::Checklist(Args { env }))
}
