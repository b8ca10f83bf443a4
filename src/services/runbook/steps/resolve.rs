//! The bookkeeping steps on `_prisma_migrations`: `migrate resolve` of one migration, and
//! clearing every failed row (an emergency's last step).

use secrecy::ExposeSecret;

use crate::config::EnvironmentSettings;
use crate::dbops::prisma;
use crate::services::environment::{database_url, migration_status, StepError};

/// `StepAction::Resolve`: marks `migration` applied or rolled back (no SQL of it runs).
pub(crate) async fn resolve(
    e: &EnvironmentSettings,
    migration: &str,
    applied: bool,
) -> Result<String, StepError> {
    let url = database_url(e)?;
    let action = if applied {
        prisma::ResolveAction::Applied
    } else {
        prisma::ResolveAction::RolledBack
    };
    prisma::resolve(url.expose_secret(), &e.migrations_dir, migration, action)
        .await
        .map_err(|err| StepError(err.to_string()))?;
    Ok(format!(
        "{migration} marked as {}",
        if applied { "applied" } else { "rolled back" }
    ))
}

/// `StepAction::ClearFailed`: marks every failed migration row rolled back.
pub(crate) async fn clear_failed(e: &EnvironmentSettings) -> Result<String, StepError> {
    let st = migration_status(e).await?;
    let url = database_url(e)?;
    let mut names: Vec<String> = st.failed.iter().map(|f| f.name.clone()).collect();
    names.dedup();
    for n in &names {
        prisma::resolve_rolled_back(url.expose_secret(), n)
            .await
            .map_err(|err| StepError(err.to_string()))?;
    }
    Ok(if names.is_empty() {
        "no failed migration rows".into()
    } else {
        format!("marked rolled back: {}", names.join(", "))
    })
}
