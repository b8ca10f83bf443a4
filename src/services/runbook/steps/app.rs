//! The app steps: stop and start the app with the environment's commands, and [`run_app`], which
//! runs one such command.

use std::time::Duration;

use crate::config::EnvironmentSettings;
use crate::dbops;
use crate::services::environment::StepError;
use crate::services::runbook::step_builders::app_command;

/// `StepAction::AppStop`: runs the environment's `app_stop` command.
pub(crate) async fn app_stop(
    e: &EnvironmentSettings,
    env: &str,
    timeout: Duration,
) -> Result<String, StepError> {
    run_app(app_command(e, env, true)?, timeout).await
}

/// `StepAction::AppStart`: runs the environment's `app_start` command.
pub(crate) async fn app_start(
    e: &EnvironmentSettings,
    env: &str,
    timeout: Duration,
) -> Result<String, StepError> {
    run_app(app_command(e, env, false)?, timeout).await
}

/// Runs an app command; a non-zero exit is a failure.
pub async fn run_app(argv: &[String], timeout: Duration) -> Result<String, StepError> {
    match dbops::app::run(argv, timeout).await {
        Ok(out) if out.ok() => Ok(if out.tail.is_empty() {
            "exit 0".into()
        } else {
            format!("exit 0: {}", out.tail)
        }),
        Ok(out) => Err(StepError(format!(
            "`{}` exited with {}: {}",
            argv.join(" "),
            out.code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "a signal".into()),
            out.tail
        ))),
        Err(e) => Err(StepError(e.to_string())),
    }
}
