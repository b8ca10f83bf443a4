//! The planned steps several plans share: the safety (or manual) backup, stopping and starting
//! the app, and the refusal when the app command is not set.

use crate::config::EnvironmentSettings;
use crate::core::operation::{PlannedStep, StepAction};
use crate::dbops::backup::BackupKind;
use crate::services::environment::StepError;

/// The backup step of `kind` (a safety backup unless manual or scheduled), with `note` for the
/// catalog.
pub(super) fn backup_step(kind: BackupKind, note: Option<String>) -> PlannedStep {
    let name = match kind {
        BackupKind::Manual | BackupKind::Scheduled => "backup".to_string(),
        _ => "safety backup".to_string(),
    };
    PlannedStep::new(
        name,
        format!(
            "pg_dump -Fc ({}), verified by pg_restore as it is written; nothing else runs if it fails",
            kind.as_str()
        ),
        StepAction::Backup {
            kind: kind.as_str().into(),
            note,
        },
    )
}

/// The step that stops (or starts) the app, `None` when the environment has no such command.
pub(super) fn app_step(e: &EnvironmentSettings, stop: bool) -> Option<PlannedStep> {
    if stop {
        let argv = e.app_stop.as_ref()?;
        Some(PlannedStep::new(
            "stop app",
            argv.join(" "),
            StepAction::AppStop,
        ))
    } else {
        let argv = e.app_start.as_ref()?;
        Some(PlannedStep::new(
            "start app",
            argv.join(" "),
            StepAction::AppStart,
        ))
    }
}

/// The app stop (or start) command, or a refusal that says it is not set and what to do
/// instead.
pub(super) fn app_command<'a>(
    e: &'a EnvironmentSettings,
    env: &str,
    stop: bool,
) -> Result<&'a Vec<String>, StepError> {
    let (key, argv) = if stop {
        ("app_stop", &e.app_stop)
    } else {
        ("app_start", &e.app_start)
    };
    argv.as_ref().ok_or_else(|| {
        StepError(format!(
            "environments.{env}.{key} is not set, so dualkey does not stop or start the app in {env}. Use your platform's own tools (kubectl, the PaaS console), or set app_stop and app_start in the config."
        ))
    })
}
