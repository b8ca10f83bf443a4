/// rehearse [ENV]
///
/// Applies the pending migrations to a restored copy of the newest verified backup (a scratch
/// database, dropped after) and posts the result here: each migration's time, the tables it
/// rewrote, and the error of one that fails on real data. Off the interaction path, one per
/// environment; a newer rehearsal or deploy request supersedes a running one. Needs the
/// operator role, no approval; refused when nothing is pending or `[deploy] rehearsal = "off"`.
use super::{env_words, Command, CommandSpec, EnvName, Options, ParseCtx, ENV_OPTION};
use crate::config::Role;
use crate::core::invocation::Invocation;

/// Arguments of `rehearse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Environment.
    pub env: EnvName,
}

/// Table row.
pub const SPEC: CommandSpec = CommandSpec {
    name: "rehearse",
    usage: "rehearse [ENV]",
    summary: "apply the pending migrations to a restored copy of the newest backup",
    role: Role::Operator,
    options: &[ENV_OPTION],
    words: env_words,
    from_options,
};

fn from_options(o: &Options, ctx: &ParseCtx) -> Result<Command, String> {
    Ok(Command::Rehearse(Args {
        env: ctx.env(o.get("env"))?,
    }))
}

/// Queues the rehearsal of the pending set and tells the operator; the runner posts the result.
pub async fn run(inv: &Invocation<'_>, args: Args) -> anyhow::Result<()> {
    inv.core
        .rehearse_command(inv.ev, inv.who, &args.env.0, inv.out)
        .await
}
