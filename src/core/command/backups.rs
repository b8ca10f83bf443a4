/// backups [ENV]
///
/// The backup catalog: id, kind, age, size, verified, migrations applied at the time; external
/// `.sql` files in the backup folder; missing or changed files are shown as such.
use super::{env_words, Command, CommandSpec, EnvName, Options, ParseCtx, ENV_OPTION};
use crate::config::Role;
use crate::core::invocation::Invocation;
use crate::core::ports::ReportRequest;

/// Arguments of `backups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Environment.
    pub env: EnvName,
}

/// Table row.
pub const SPEC: CommandSpec = CommandSpec {
    name: "backups",
    usage: "backups [ENV]",
    summary: "the backup catalog (and external .sql files)",
    role: Role::Viewer,
    options: &[ENV_OPTION],
    words: env_words,
    from_options,
};

fn from_options(o: &Options, ctx: &ParseCtx) -> Result<Command, String> {
    Ok(Command::Backups(Args {
        env: ctx.env(o.get("env"))?,
    }))
}

/// Answers with the report, built from the facts port (after the platform's ack).
pub async fn run(inv: &Invocation<'_>, args: Args) -> anyhow::Result<()> {
    inv.report(ReportRequest::Backups(args.env.0)).await
}
