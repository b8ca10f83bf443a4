/// cancel REQUEST
///
/// Withdraw a pending request (the requester or an approver).
use super::{named, no_more, Command, CommandSpec, OptionSpec, Options, ParseCtx, RequestId};
use crate::config::Role;
use crate::core::invocation::Invocation;

/// Arguments of `cancel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The request.
    pub request: RequestId,
}

/// Table row.
pub const SPEC: CommandSpec = CommandSpec {
    name: "cancel",
    usage: "cancel REQUEST",
    summary: "withdraw a pending request (requester or an approver)",
    role: Role::Viewer,
    options: &[
        OptionSpec::string("request", "request id, as on the approval card")
            .required()
            .autocomplete(),
    ],
    words,
    from_options,
};

fn words(args: &[&str], _ctx: &ParseCtx) -> Result<Vec<(String, String)>, String> {
    let request = args.first().ok_or("say which request (see `approvals`)")?;
    no_more(&args[1..])?;
    Ok(named(&[("request", Some(request))]))
}

fn from_options(o: &Options, _ctx: &ParseCtx) -> Result<Command, String> {
    let request = RequestId::parse(o.require("request")?)?;
    Ok(Command::Cancel(Args { request }))
}

/// Withdraws the request (requester or an approver), with its audit event.
pub async fn run(inv: &Invocation<'_>, args: Args) -> anyhow::Result<()> {
    inv.core
        .cancel(inv.ev, inv.who, &args.request, inv.out)
        .await
}
