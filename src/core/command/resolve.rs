/// resolve MIGRATION applied|rolled-back [ENV]
///
/// Prisma's `migrate resolve --applied|--rolled-back`, with the same preconditions and P30xx
/// errors, after a safety backup. Needs approval.
use super::{
    named, no_more, Choices, Command, CommandSpec, EnvName, MigrationName, OptionSpec, Options,
    ParseCtx, ENV_OPTION,
};
use crate::config::Role;
use crate::core::invocation::Invocation;
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
        OptionSpec::string("migration", "migration folder name")
            .required()
            .autocomplete(),
        OptionSpec::string("as", "applied or rolled-back")
            .required()
            .choices(Choices::Fixed(&["applied", "rolled-back"])),
        ENV_OPTION,
    ],
    words,
    from_options,
};

fn words(args: &[&str], _ctx: &ParseCtx) -> Result<Vec<(String, String)>, String> {
    let name = args.first().ok_or("say which migration to resolve")?;
    let state = args.get(1).ok_or("say applied or rolled-back")?;
    no_more(args.get(3..).unwrap_or_default())?;
    Ok(named(&[
        ("migration", Some(name)),
        ("as", Some(state)),
        ("env", args.get(2).copied()),
    ]))
}

fn from_options(o: &Options, ctx: &ParseCtx) -> Result<Command, String> {
    let applied = match o.require("as")? {
        "applied" => true,
        "rolled-back" => false,
        other => return Err(format!("`{other}` is not applied or rolled-back")),
    };
    let env: EnvName = ctx.env(o.get("env"))?;
    let migration: MigrationName = ctx.migration(&env, o.require("migration")?)?;
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
