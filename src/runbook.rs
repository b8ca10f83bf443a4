//! What each operation kind plans and runs. `plan` reads the facts the plan depends on (so the
//! fingerprint changes when they change); `run_step` executes one step through `dbops`.

use std::time::Duration;

use crate::config::{EnvironmentSettings, Settings};
use crate::core::operation::{OperationKind, Plan, PlannedStep};
use crate::dbops;

/// A step failure, shown to people and written to the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StepError(pub String);

fn env_settings<'a>(
    settings: &'a Settings,
    env: &str,
) -> Result<&'a EnvironmentSettings, StepError> {
    settings
        .environments
        .get(env)
        .ok_or_else(|| StepError(format!("environment `{env}` is no longer configured")))
}

/// Computes the plan of `kind` in `env` from current facts.
pub async fn plan(settings: &Settings, kind: &OperationKind, env: &str) -> Result<Plan, StepError> {
    let e = env_settings(settings, env)?;
    let (summary, argv) = match kind {
        OperationKind::AppStop => ("stop the app", &e.app_stop),
        OperationKind::AppStart => ("start the app", &e.app_start),
    };
    let steps = vec![PlannedStep {
        name: summary.to_string(),
        detail: argv.join(" "),
    }];
    let facts = vec![format!("command: {argv:?}")];
    Ok(Plan::new(
        kind,
        env,
        format!("{summary} in {env}"),
        steps,
        vec![],
        facts,
    ))
}

/// Runs step `idx` of `kind`'s plan; returns a short summary of what happened.
pub async fn run_step(
    settings: &Settings,
    kind: &OperationKind,
    env: &str,
    idx: usize,
) -> Result<String, StepError> {
    let e = env_settings(settings, env)?;
    let timeout = Duration::from_secs(e.app_timeout_secs);
    match (kind, idx) {
        (OperationKind::AppStop, 0) => run_app(&e.app_stop, timeout).await,
        (OperationKind::AppStart, 0) => run_app(&e.app_start, timeout).await,
        _ => Err(StepError(format!(
            "{} has no step {}",
            kind.name(),
            idx + 1
        ))),
    }
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
