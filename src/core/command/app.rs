/// app stop|start|status [ENV]
///
/// The environment's configured app commands. `stop` needs approval; `start` runs as an
/// operation without one; `status` only reads.
use super::{
    named, no_more, Choices, Command, CommandSpec, EnvName, OptionSpec, Options, ParseCtx,
    ENV_OPTION,
};
use crate::config::Role;
use crate::core::invocation::Invocation;
use crate::core::operation::OperationKind;
use crate::core::ports::ReportRequest;

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
        OptionSpec::string("action", "stop, start or status")
            .required()
            .choices(Choices::Fixed(&["stop", "start", "status"])),
        ENV_OPTION,
    ],
    words,
    from_options,
};

fn words(args: &[&str], _ctx: &ParseCtx) -> Result<Vec<(String, String)>, String> {
    if args.is_empty() {
        return Err("say what to do: stop, start or status".into());
    }
    no_more(args.get(2..).unwrap_or_default())?;
    Ok(named(&[
        ("action", args.first().copied()),
        ("env", args.get(1).copied()),
    ]))
}

fn from_options(o: &Options, ctx: &ParseCtx) -> Result<Command, String> {
    let action = match o.require("action")? {
        "stop" => AppAction::Stop,
        "start" => AppAction::Start,
        "status" => AppAction::Status,
        other => return Err(format!("`{other}` is not stop, start or status")),
    };
    let env = ctx.env(o.get("env"))?;
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
