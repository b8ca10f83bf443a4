/// checklist [ENV]
///
/// The migration safety checklist, each item ticked from facts the bot can check.
use super::{env_words, Command, CommandSpec, EnvName, Options, ParseCtx, ENV_OPTION};
use crate::config::Role;
use crate::core::invocation::Invocation;
use crate::core::ports::ReportRequest;

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
    options: &[ENV_OPTION],
    words: env_words,
    from_options,
};

fn from_options(o: &Options, ctx: &ParseCtx) -> Result<Command, String> {
    Ok(Command::Checklist(Args {
        env: ctx.env(o.get("env"))?,
    }))
}

/// Answers with the report, built from the facts port (after the platform's ack).
pub async fn run(inv: &Invocation<'_>, args: Args) -> anyhow::Result<()> {
    inv.report(ReportRequest::Checklist(args.env.0)).await
}
