/// app stop|start|status [ENV]
///
/// The environment's configured app commands. `stop` needs approval; `start` runs as an
/// operation without one; `status` only reads.
use super::{no_more, Command, CommandSpec, EnvName, OptionSpec, ParseCtx, ENV_OPTION};
use crate::config::Role;
use crate::core::dispatch::Invocation;
use crate::core::dispatch::ReportRequest;
use crate::core::operation::OperationKind;

/// What to do with the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppAction {
    /// `app_stop` (needs approval).
    Stop,
    /// `app_start`.
    Start,
    /// `app_status` (read-only).
    Status,
}

/// Arguments of `app`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The action.
    pub action: AppAction,
    /// Environment.
    pub env: EnvName,
}

/// Table row.
pub const SPEC: CommandSpec = CommandSpec {
    name: "app",
    usage: "app stop|start|status [ENV]",
    summary: "run the app's stop (needs approval), start or status command",
    role: Role::Viewer,
    options: &[
        OptionSpec {
            name: "action",
            description: "stop, start or status",
            required: true,
            choices: &["stop", "start", "status"],
        },
        ENV_OPTION,
    ],
    parse,
};

fn parse(args: &[&str], ctx: &ParseCtx) -> Result<Command, String> {
    let action = match args.first().copied() {
        Some("stop") => AppAction::Stop,
        Some("start") => AppAction::Start,
        Some("status") => AppAction::Status,
        Some(other) => return Err(format!("`{other}` is not stop, start or status")),
        None => return Err("say what to do: stop, start or status".into()),
    };
    let env = ctx.env(args.get(1).copied())?;
    no_more(args.get(2..).unwrap_or_default())?;
    Ok(Command::App(Args { action, env }))
}

/// The operation `stop` and `start` ask for (`status` only reads).
pub fn operation(args: &Args) -> Option<OperationKind> {
    match args.action {
        AppAction::Stop => Some(OperationKind::AppStop),
        AppAction::Start => Some(OperationKind::AppStart),
        AppAction::Status => None,
    }
}

/// `stop` and `start` become operations; `status` runs the app's status command.
pub async fn run(inv: &Invocation<'_>, args: Args) -> anyhow::Result<()> {
    match operation(&args) {
        Some(kind) => inv.request(kind, &args.env.0).await,
        None => inv.report(ReportRequest::App(args.env.0)).await,
    }
}
