/// status [ENV]
///
/// What dualkey knows about an environment: running operation, open requests.
use super::{env_words, Command, CommandSpec, EnvName, Options, ParseCtx, ENV_OPTION};
use crate::config::Role;
use crate::core::invocation::Invocation;
use crate::core::ports::ReportRequest;

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
    options: &[ENV_OPTION],
    words: env_words,
    from_options,
};

fn from_options(o: &Options, ctx: &ParseCtx) -> Result<Command, String> {
    Ok(Command::Status(Args {
        env: ctx.env(o.get("env"))?,
    }))
}

/// Answers with the report, built from the facts port (after the platform's ack).
pub async fn run(inv: &Invocation<'_>, args: Args) -> anyhow::Result<()> {
    inv.report(ReportRequest::Status(args.env.0)).await
}
