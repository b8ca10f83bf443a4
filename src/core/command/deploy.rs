/// deploy [ENV]
///
/// Pre-deploy backup, then apply pending migrations exactly as `prisma migrate deploy` would.
/// Needs approval when `deploy_needs_approval` (the default).
use super::{env_words, Command, CommandSpec, EnvName, Options, ParseCtx, ENV_OPTION};
use crate::config::Role;
use crate::core::invocation::Invocation;
use crate::core::operation::OperationKind;

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
    words: env_words,
    from_options,
};

fn from_options(o: &Options, ctx: &ParseCtx) -> Result<Command, String> {
    Ok(Command::Deploy(Args {
        env: ctx.env(o.get("env"))?,
    }))
}

/// The operation this command asks for.
pub fn operation(_args: &Args) -> OperationKind {
    OperationKind::Deploy
}

/// Plans the deploy (approval per `deploy_needs_approval`) and records the request or queues the operation.
pub async fn run(inv: &Invocation<'_>, args: Args) -> anyhow::Result<()> {
    inv.request(operation(&args), &args.env.0).await
}
