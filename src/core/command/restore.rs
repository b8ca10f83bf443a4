/// restore BACKUP [ENV]
///
/// Safety backup, stop the app, restore BACKUP in one transaction, start the app (also after a
/// failed restore). Needs approval.
use super::{
    named, no_more, BackupId, Command, CommandSpec, EnvName, OptionSpec, Options, ParseCtx,
    ENV_OPTION,
};
use crate::config::Role;
use crate::core::invocation::Invocation;
use crate::core::operation::OperationKind;

/// Arguments of `restore`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Catalog id or external `.sql` file name.
    pub backup: BackupId,
    /// Environment.
    pub env: EnvName,
}

/// Table row.
pub const SPEC: CommandSpec = CommandSpec {
    name: "restore",
    usage: "restore BACKUP [ENV]",
    summary: "safety backup, stop app, restore BACKUP, start app (approval)",
    role: Role::Operator,
    options: &[
        OptionSpec::string("backup", "backup id or external .sql file (see `backups`)")
            .required()
            .autocomplete(),
        ENV_OPTION,
    ],
    words,
    from_options,
};

fn words(args: &[&str], _ctx: &ParseCtx) -> Result<Vec<(String, String)>, String> {
    let backup = args
        .first()
        .ok_or("say which backup to restore (`backups` lists them)")?;
    no_more(args.get(2..).unwrap_or_default())?;
    Ok(named(&[
        ("backup", Some(backup)),
        ("env", args.get(1).copied()),
    ]))
}

fn from_options(o: &Options, ctx: &ParseCtx) -> Result<Command, String> {
    let backup = BackupId::parse(o.require("backup")?)?;
    let env: EnvName = ctx.env(o.get("env"))?;
    Ok(Command::Restore(Args { backup, env }))
}

/// The operation this command asks for.
pub fn operation(args: &Args) -> OperationKind {
    OperationKind::Restore {
        backup: args.backup.0.clone(),
    }
}

/// Plans the restore (needs approval) and records the request or queues the operation.
pub async fn run(inv: &Invocation<'_>, args: Args) -> anyhow::Result<()> {
    inv.request(operation(&args), &args.env.0).await
}
