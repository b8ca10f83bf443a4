//! Planning `app stop` and `app start`: one step running the environment's command, refused
//! when the command is not set.

use crate::config::EnvironmentSettings;
use crate::core::operation::{OperationKind, Plan};
use crate::services::environment::StepError;
use crate::services::runbook::step_builders::{app_command, app_step};

/// The plan of `app stop` (`stop`) or `app start`.
pub(super) fn plan_app(
    kind: &OperationKind,
    env: &str,
    e: &EnvironmentSettings,
    stop: bool,
) -> Result<Plan, StepError> {
    let verb = if stop { "stop" } else { "start" };
    Ok(Plan::new(
        kind,
        env,
        format!("{verb} the app in {env}"),
        app_step(e, stop).into_iter().collect(),
        vec![],
        vec![format!("command: {:?}", app_command(e, env, stop)?)],
    ))
}
