//! Planning an emergency: restore the newest verified backup taken before the newest applied
//! migration, with an assessment before and the failed rows cleared after.

use chrono::{DateTime, Utc};

use crate::config::EnvironmentSettings;
use crate::core::human;
use crate::core::operation::{OperationKind, Plan, PlannedStep, StepAction};
use crate::core::ports::Reads;
use crate::core::reply::Warning;
use crate::dbops::backup::BackupKind;
use crate::services::environment::{migration_status, StepError};
use crate::services::runbook::planning::{gather_source, EmergencyFacts, KindFacts, StatusFacts};
use crate::services::runbook::source::{newest_backup, RestoreSource};

/// The facts of an emergency (and the server version its status read had): the status, and
/// the newest verified backup taken before the newest migration.
pub(super) async fn gather_emergency(
    reads: Reads<'_>,
    env: &str,
    e: &EnvironmentSettings,
) -> Result<(KindFacts, Option<u32>), StepError> {
    let st = migration_status(e).await?;
    let server = st.server_version_num;
    let status = StatusFacts::from(&st);
    let backup = match newest_migration(&status) {
        Some((newest_at, _)) => {
            let cutoff = newest_at.timestamp_millis();
            match newest_backup(reads, env, |b| b.started_at < cutoff).await? {
                Some(b) => Some(gather_source(RestoreSource::from_row(&b), e).await),
                None => None,
            }
        }
        None => None,
    };
    Ok((
        KindFacts::Emergency(EmergencyFacts { status, backup }),
        server,
    ))
}

/// The newest applied migration (by `started_at`), which an emergency restores to before.
pub fn newest_migration(st: &StatusFacts) -> Option<(DateTime<Utc>, String)> {
    st.migrations
        .iter()
        .filter_map(|m| m.started_at.map(|t| (t, m.name.clone())))
        .max()
}

/// The plan of an emergency: refused without an applied migration or a backup before the
/// newest one; on a healthy database the card says first that the restore undoes good work.
pub(super) fn plan_emergency(
    kind: &OperationKind,
    env: &str,
    e: &EnvironmentSettings,
    em: &EmergencyFacts,
    now: i64,
) -> Result<Plan, StepError> {
    let st = &em.status;
    let Some((_, newest_name)) = newest_migration(st) else {
        return Err(StepError(format!("{env} has no applied migrations; there is nothing to roll back to. Use `restore BACKUP` with a backup from `backups`.")));
    };
    let sf = em.backup.as_ref().ok_or_else(|| {
        StepError(format!(
            "no verified backup of {env} was taken before the newest migration {newest_name}; emergency cannot restore. Way forward: `restore BACKUP` with an older backup from `backups`, or fix forward with a reversing migration and `deploy`."
        ))
    })?;
    let src = &sf.source;
    let assess = PlannedStep::new(
        "assess",
        "migration status, tables, recent app logs (recorded in the audit trail)",
        StepAction::Assess,
    );
    let clear = PlannedStep::new(
        "clear failed migrations",
        "mark remaining failed _prisma_migrations rows rolled back",
        StepAction::ClearFailed,
    );
    let applied = Ok(st.applied.clone());
    let mut warnings = Vec::new();
    if st.failed.is_empty() && st.pending.is_empty() {
        // Nothing failed and nothing waits: an emergency restore here mostly undoes
        // good work, so say that before anything else.
        let undone = src.unapplies(&st.applied).unwrap_or_default().len();
        warnings.push(Warning::danger(format!(
            "{env} looks healthy: no failed and no pending migration; this restore still undoes {undone} applied migration(s) and every write since {}",
            src.label
        )));
    }
    warnings.extend(sf.warnings(env, &applied, now));
    Ok(Plan::new(
        kind,
        env,
        format!(
            "emergency in {env}: restore {} (taken {} ago)",
            src.label,
            human::age(now - src.taken_at)
        ),
        src.steps(
            e,
            BackupKind::PreRestore,
            format!("backup {} taken before {newest_name}", src.label),
            vec![assess],
            vec![clear],
        ),
        warnings,
        vec![
            format!("newest migration {newest_name}"),
            src.fact(),
            format!("applied: {}", st.applied.join(",")),
        ],
    ))
}
