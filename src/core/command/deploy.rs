/// deploy [ENV]
///
/// Pre-deploy backup, then apply pending migrations exactly as `prisma migrate deploy` would.
/// Needs approval when `deploy_needs_approval` (the default).
use super::{only_env, Command, CommandSpec, EnvName, ParseCtx, ENV_OPTION};
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
    options: &[ENV_OPTION],
    parse,
};

fn parse(args: &[&str], ctx: &ParseCtx) -> Result<Command, String> {
    Ok(Command::Deploy(Args {
        env: only_env(args, ctx)?,
    }))
}
