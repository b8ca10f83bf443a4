/// emergency [ENV]
///
/// The emergency procedure as one plan: safety backup, stop the app, assess, restore the newest
/// verified backup taken before the newest migration, clear failed migration rows, start the
/// app. Needs approval.
use super::{env_words, Command, CommandSpec, EnvName, Options, ParseCtx, ENV_OPTION};
use crate::config::Role;
use crate::core::invocation::Invocation;
use crate::core::operation::OperationKind;

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
    options: &[ENV_OPTION],
    words: env_words,
    from_options,
};

fn from_options(o: &Options, ctx: &ParseCtx) -> Result<Command, String> {
    Ok(Command::Emergency(Args {
        env: ctx.env(o.get("env"))?,
    }))
}

/// The operation this command asks for.
pub fn operation(_args: &Args) -> OperationKind {
    OperationKind::Emergency
}

/// Plans the emergency procedure (needs approval) and records the request or queues the operation.
pub async fn run(inv: &Invocation<'_>, args: Args) -> anyhow::Result<()> {
    inv.request(operation(&args), &args.env.0).await
}
