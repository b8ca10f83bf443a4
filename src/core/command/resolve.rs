/// resolve MIGRATION applied|rolled-back [ENV]
///
/// Prisma's `migrate resolve --applied|--rolled-back`, with the same preconditions and P30xx
/// errors, after a safety backup. Needs approval.
use super::{
    no_more, Command, CommandSpec, EnvName, MigrationName, OptionSpec, ParseCtx, ENV_OPTION,
};
use crate::config::Role;
use crate::core::dispatch::Invocation;
use crate::core::operation::OperationKind;

/// Arguments of `resolve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The migration (must exist in the folder).
    pub migration: MigrationName,
    /// `applied` when true, `rolled-back` otherwise.
    pub applied: bool,
    /// Environment.
    pub env: EnvName,
}

/// Table row.
pub const SPEC: CommandSpec = CommandSpec {
    name: "resolve",
    usage: "resolve MIGRATION applied|rolled-back [ENV]",
    summary: "mark a migration applied or rolled back, like prisma migrate resolve (approval)",
    role: Role::Operator,
    options: &[
        OptionSpec {
            name: "migration",
            description: "migration folder name",
            required: true,
            choices: &[],
        },
        OptionSpec {
            name: "as",
            description: "applied or rolled-back",
            required: true,
            choices: &["applied", "rolled-back"],
        },
        ENV_OPTION,
    ],
    parse,
};

fn parse(args: &[&str], ctx: &ParseCtx) -> Result<Command, String> {
    let name = args.first().ok_or("say which migration to resolve")?;
    let applied = match args.get(1).copied() {
        Some("applied") => true,
        Some("rolled-back") => false,
        Some(other) => return Err(format!("`{other}` is not applied or rolled-back")),
        None => return Err("say applied or rolled-back".into()),
    };
    let env = ctx.env(args.get(2).copied())?;
    no_more(args.get(3..).unwrap_or_default())?;
    let migration = ctx.migration(&env, name)?;
    Ok(Command::Resolve(Args {
        migration,
        applied,
        env,
    }))
}

/// The operation this command asks for.
pub fn operation(args: &Args) -> OperationKind {
    OperationKind::Resolve {
        migration: args.migration.0.clone(),
        applied: args.applied,
    }
}

/// Plans the resolve (needs approval) and records the request or queues the operation.
pub async fn run(inv: &Invocation<'_>, args: Args) -> anyhow::Result<()> {
    inv.request(operation(&args), &args.env.0).await
}
