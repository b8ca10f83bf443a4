/// audit [N] | audit verify
///
/// The last N audit events (default 10, at most 100), or a check of the hash chain.
use super::{
    named, no_more, Choices, Command, CommandSpec, OptionKind, OptionSpec, Options, ParseCtx,
};
use crate::config::Role;
use crate::core::invocation::Invocation;

/// Arguments of `audit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// The last N events.
    Tail(i64),
    /// Check the chain.
    Verify,
}

/// Most events shown at once.
pub const MAX_TAIL: i64 = 100;

/// Table row.
pub const SPEC: CommandSpec = CommandSpec {
    name: "audit",
    usage: "audit [N|verify]",
    summary: "the last N audit events (default 10), or verify the hash chain",
    role: Role::Viewer,
    options: &[
        OptionSpec {
            name: "n",
            description: "how many of the last events to show (1-100, default 10)",
            required: false,
            kind: OptionKind::Integer,
            choices: Choices::Any,
            autocomplete: false,
            range: Some((1, MAX_TAIL)),
        },
        OptionSpec::string(
            "action",
            "verify: check the hash chain instead of listing events",
        )
        .choices(Choices::Fixed(&["verify"])),
    ],
    words,
    from_options,
};

fn words(args: &[&str], _ctx: &ParseCtx) -> Result<Vec<(String, String)>, String> {
    no_more(args.get(1..).unwrap_or_default())?;
    Ok(match args.first().copied() {
        Some("verify") => named(&[("action", Some("verify"))]),
        n => named(&[("n", n)]),
    })
}

fn from_options(o: &Options, _ctx: &ParseCtx) -> Result<Command, String> {
    let a = match (o.get("n"), o.get("action")) {
        (Some(_), Some(_)) => return Err("give N or verify, not both".into()),
        (None, Some(_)) => Args::Verify,
        (None, None) => Args::Tail(10),
        (Some(n), None) => match n.parse::<i64>() {
            Ok(n) if (1..=MAX_TAIL).contains(&n) => Args::Tail(n),
            _ => return Err(format!("`{n}` is not a number from 1 to {MAX_TAIL}")),
        },
    };
    Ok(Command::Audit(a))
}

/// Answers with the last events, or the chain check.
pub async fn run(inv: &Invocation<'_>, args: Args) -> anyhow::Result<()> {
    let core = inv.core;
    let text = match args {
        Args::Tail(n) => {
            let lines: Vec<String> = core
                .store
                .audit_tail(n)
                .await?
                .iter()
                .map(|r| r.render())
                .collect();
            if lines.is_empty() {
                "The audit trail is empty.".into()
            } else {
                lines.join("\n")
            }
        }
        Args::Verify => match crate::core::audit::verify_chain(core.store.as_ref()).await? {
            Ok(n) => format!("audit chain intact: {n} events verified"),
            Err(b) => format!("AUDIT CHAIN BROKEN: {b}"),
        },
    };
    inv.reply(text).await
}
