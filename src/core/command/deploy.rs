/// deploy [ENV]
///
/// Pre-deploy backup, then apply pending migrations exactly as `prisma migrate deploy` would.
/// Needs approval when `deploy_needs_approval` (the default).
use super::{no_more, Command, CommandSpec, EnvName, OptionSpec, ParseCtx};
use crate::config::Role;

/// Arguments of `deploy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Environment.
    pub env: EnvName,
}

/// Table row.
pub const SPEC: CommandSpec = CommandSpec {
    name: "deploy",
    usage: "deploy [ENV]",
    summary: "pre-deploy backup, then apply pending migrations (approval per config)",
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
    Ok(Command::Deploy(Args { env }))
}
