/// backup [ENV] [NOTE...]
///
/// An on-demand verified backup (`pg_dump -Fc`, SHA-256, `pg_restore` reading it as it is
/// written), progress shown by editing one message. Needs the operator role, no approval.
use super::{
    Choices, Command, CommandSpec, EnvName, OptionKind, OptionSpec, Options, ParseCtx, ENV_OPTION,
};
use crate::config::Role;
use crate::core::invocation::Invocation;
use crate::core::operation::OperationKind;

/// Arguments of `backup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Environment.
    pub env: EnvName,
    /// Note kept in the catalog (words of letters, digits and `_-.:=`).
    pub note: Option<String>,
}

/// Longest note, in characters.
pub const MAX_NOTE: usize = 200;

/// Table row.
pub const SPEC: CommandSpec = CommandSpec {
    name: "backup",
    usage: "backup [ENV] [NOTE...]",
    summary: "take a verified backup now (pg_dump -Fc)",
    role: Role::Operator,
    options: &[
        ENV_OPTION,
        OptionSpec {
            name: "note",
            description: "a note kept with the backup",
            required: false,
            kind: OptionKind::Words,
            choices: Choices::Any,
            autocomplete: false,
            range: None,
        },
    ],
    words,
    from_options,
};

/// `[ENV] [NOTE...]`: the first word is the environment when it names one; a near miss of an
/// environment name is a typo, not the first word of a note.
fn words(args: &[&str], ctx: &ParseCtx) -> Result<Vec<(String, String)>, String> {
    let (env, rest) = match args.first() {
        Some(first) if ctx.envs.iter().any(|e| e == first) => (Some(*first), &args[1..]),
        Some(first) => {
            // A near-miss of an environment name is a typo, not the first word of a note.
            if let Some(env) = ctx
                .envs
                .iter()
                .find(|e| first.len() >= 3 && super::edit_distance(first, e) <= 2)
            {
                return Err(format!(
                    "unknown environment `{first}`; did you mean `{env}`?"
                ));
            }
            (None, args)
        }
        None => (None, args),
    };
    let note = rest.join(" ");
    Ok(super::named(&[
        ("env", env),
        ("note", Some(note.as_str()).filter(|n| !n.is_empty())),
    ]))
}

fn from_options(o: &Options, ctx: &ParseCtx) -> Result<Command, String> {
    let env: EnvName = ctx.env(o.get("env"))?;
    let note = o.get("note").map(str::to_string);
    if note.as_ref().is_some_and(|n| n.chars().count() > MAX_NOTE) {
        return Err(format!("the note is longer than {MAX_NOTE} characters"));
    }
    Ok(Command::Backup(Args { env, note }))
}

/// The operation this command asks for.
pub fn operation(args: &Args) -> OperationKind {
    OperationKind::Backup {
        note: args.note.clone(),
    }
}

/// Plans the backup (no approval needed) and records the request or queues the operation.
pub async fn run(inv: &Invocation<'_>, args: Args) -> anyhow::Result<()> {
    inv.request(operation(&args), &args.env.0).await
}
