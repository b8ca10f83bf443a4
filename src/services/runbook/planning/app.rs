//! Planning `app stop` and `app start`: one step running the environment's command, refused
//! when the command is not set.

use crate::config::EnvironmentSettings;
use crate::core::operation::{OperationKind, Plan};
use crate::services::environment::StepError;
use crate::services::runbook::step_builders::{app_command, app_step};

/// The plan of `app stop`.
pub(super) fn plan_app_stop(
    kind: &OperationKind,
    env: &str,
    e: &EnvironmentSettings,
) -> Result<Plan, StepError> {
    Ok(Plan::new(
        kind,
        env,
        format!("stop the app in {env}"),
        app_step(e, true).into_iter().collect(),
        vec![],
        vec![format!("command: {:?}", app_command(e, env, true)?)],
    ))
}

/// The plan of `app start`.
pub(super) fn plan_app_start(
    kind: &OperationKind,
    env: &str,
    e: &EnvironmentSettings,
) -> Result<Plan, StepError> {
    Ok(Plan::new(
        kind,
        env,
        format!("start the app in {env}"),
        app_step(e, false).into_iter().collect(),
        vec![],
        vec![format!("command: {:?}", app_command(e, env, false)?)],
    ))
}
