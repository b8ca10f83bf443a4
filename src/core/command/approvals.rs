/// approvals
///
/// Open requests with their plans, votes and expiry.
use super::{no_more, Command, CommandSpec, Options, ParseCtx};
use crate::config::Role;
use crate::core::invocation::Invocation;
use crate::core::ports::ReportRequest;

/// Arguments of `approvals` (none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args;

/// Table row.
pub const SPEC: CommandSpec = CommandSpec {
    name: "approvals",
    usage: "approvals",
    summary: "open requests with their plans, votes and expiry",
    role: Role::Viewer,
    options: &[],
    words,
    from_options,
};

fn words(args: &[&str], _ctx: &ParseCtx) -> Result<Vec<(String, String)>, String> {
    no_more(args)?;
    Ok(Vec::new())
}

fn from_options(_o: &Options, _ctx: &ParseCtx) -> Result<Command, String> {
    Ok(Command::Approvals(Args))
}

/// Answers with the open requests and their buttons.
pub async fn run(inv: &Invocation<'_>, _args: Args) -> anyhow::Result<()> {
    inv.report(ReportRequest::Approvals).await
}
