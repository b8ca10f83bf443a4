//! Planning a restore of a catalog backup or an external `.sql` file: a safety backup, the app
//! stopped around a single-transaction restore, and what the restore un-applies and loses.

use crate::config::EnvironmentSettings;
use crate::core::operation::{OperationKind, Plan};
use crate::core::ports::Reads;
use crate::dbops::backup::BackupKind;
use crate::services::environment::{database_url, migration_status, StepError};
use crate::services::runbook::planning::{gather_source, KindFacts, RestoreFacts};
use crate::services::runbook::source::restore_source;

/// The facts of a restore of `backup` (and the server version its status read had): the
/// source, checked, and the migrations applied now (or why they could not be read).
pub(super) async fn gather_restore(
    reads: Reads<'_>,
    env: &str,
    e: &EnvironmentSettings,
    backup: &str,
) -> Result<(KindFacts, Option<u32>), StepError> {
    let mut server: Option<u32> = None;
    database_url(e)?;
    let src = restore_source(reads, env, backup).await?;
    let applied = migration_status(e).await.map(|st| {
        server = st.server_version_num;
        st.applied
    });
    Ok((
        KindFacts::Restore(RestoreFacts {
            source: gather_source(src, e).await,
            applied,
        }),
        server,
    ))
}

/// The plan of a restore: the source's steps, its warnings, and the facts that pin its content
/// and what it un-applies.
pub(super) fn plan_restore(
    kind: &OperationKind,
    env: &str,
    e: &EnvironmentSettings,
    r: &RestoreFacts,
    now: i64,
) -> Result<Plan, StepError> {
    let src = &r.source.source;
    let detail = format!(
        "{} (single transaction: a failure changes nothing)",
        src.path.display()
    );
    // The approvers see what the restore un-applies: a migration applied after the
    // request changes the facts, so the plan goes stale instead of undoing more.
    let mut pinned_facts = vec![src.fact()];
    if let Ok(a) = &r.applied {
        pinned_facts.push(format!("applied: {}", a.join(",")));
    }
    Ok(Plan::new(
        kind,
        env,
        format!("restore {} into {env}", src.label),
        src.steps(e, BackupKind::PreRestore, detail, vec![], vec![]),
        r.source.warnings(env, &r.applied, now),
        pinned_facts,
    ))
}
