/// status [ENV]
///
/// What dualkey knows about an environment: running operation, open requests.
use super::{no_more, Command, CommandSpec, EnvName, OptionSpec, ParseCtx};
use crate::config::Role;

/// Arguments of `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Environment.
    pub env: EnvName,
}

/// Table row.
pub const SPEC: CommandSpec = CommandSpec {
    name: "status",
    usage: "status [ENV]",
    summary: "migration status, app status, running operation, open requests",
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
    Ok(Command::Status(Args { env }))
}
