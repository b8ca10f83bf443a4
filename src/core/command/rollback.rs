/// rollback MIGRATION [ENV] [--strategy down|restore]
///
/// Un-apply MIGRATION and every migration applied after it, newest first: with each one's
/// `down.sql` (`down`), or by restoring the newest verified backup taken before it (`restore`).
/// Without `--strategy` the `down` strategy is used when every migration has a `down.sql`.
use super::{
    named, no_more, Choices, Command, CommandSpec, MigrationName, OptionSpec, Options, ParseCtx,
    ENV_OPTION,
};
use crate::config::Role;
use crate::core::command::EnvName;
use crate::core::invocation::Invocation;
use crate::core::operation::OperationKind;
use crate::core::operation::RollbackStrategy;

/// Arguments of `rollback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The migration (must exist in the folder).
    pub migration: MigrationName,
    /// Environment.
    pub env: EnvName,
    /// Strategy, if forced.
    pub strategy: Option<RollbackStrategy>,
}

/// Table row.
pub const SPEC: CommandSpec = CommandSpec {
    name: "rollback",
    usage: "rollback MIGRATION [ENV] [--strategy down|restore]",
    summary: "un-apply MIGRATION and every later one, newest first (approval)",
    role: Role::Operator,
    options: &[
        OptionSpec::string("migration", "migration folder name")
            .required()
            .autocomplete(),
        ENV_OPTION,
        OptionSpec::string(
            "strategy",
            "down (run down.sql) or restore (restore a backup)",
        )
        .choices(Choices::Fixed(&["down", "restore"])),
    ],
    words,
    from_options,
};

/// `MIGRATION [ENV] [--strategy down|restore]`, `--strategy=X` anywhere.
fn words(args: &[&str], _ctx: &ParseCtx) -> Result<Vec<(String, String)>, String> {
    let mut rest: Vec<&str> = args.to_vec();
    let mut strategy = None;
    if let Some(pos) = rest
        .iter()
        .position(|t| *t == "--strategy" || t.starts_with("--strategy="))
    {
        let value = match rest[pos].strip_prefix("--strategy=") {
            Some(v) => {
                rest.remove(pos);
                v.to_string()
            }
            None => {
                rest.remove(pos);
                if pos >= rest.len() {
                    return Err("--strategy needs down or restore".into());
                }
                rest.remove(pos).to_string()
            }
        };
        strategy = Some(value);
    }
    let Some((first, more)) = rest.split_first() else {
        return Err("say which migration to roll back (`status` lists them)".into());
    };
    no_more(more.get(1..).unwrap_or_default())?;
    Ok(named(&[
        ("migration", Some(first)),
        ("env", more.first().copied()),
        ("strategy", strategy.as_deref()),
    ]))
}

fn from_options(o: &Options, ctx: &ParseCtx) -> Result<Command, String> {
    let strategy = match o.get("strategy") {
        None => None,
        Some("down") => Some(RollbackStrategy::Down),
        Some("restore") => Some(RollbackStrategy::Restore),
        Some(other) => return Err(format!("`{other}` is not a strategy (down or restore)")),
    };
    let env = ctx.env(o.get("env"))?;
    let migration = ctx.migration(&env, o.require("migration")?)?;
    Ok(Command::Rollback(Args {
        migration,
        env,
        strategy,
    }))
}

/// The operation this command asks for.
pub fn operation(args: &Args) -> OperationKind {
    OperationKind::Rollback {
        migration: args.migration.0.clone(),
        strategy: args.strategy,
    }
}

/// Plans the rollback (needs approval) and records the request or queues the operation.
pub async fn run(inv: &Invocation<'_>, args: Args) -> anyhow::Result<()> {
    inv.request(operation(&args), &args.env.0).await
}
