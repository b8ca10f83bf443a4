/// backups [ENV]
///
/// The backup catalog: id, kind, age, size, verified, migrations applied at the time; external
/// `.sql` files in the backup folder; missing or changed files are shown as such.
use super::{no_more, Command, CommandSpec, EnvName, OptionSpec, ParseCtx};
use crate::config::Role;

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
    Ok(Command::Backups(Args { env }))
}
