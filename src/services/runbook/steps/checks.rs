//! The assessment step of an emergency: migration status, table count and recent app logs,
//! recorded in the audit trail through the step's output.

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::config::EnvironmentSettings;
use crate::dbops;
use crate::services::environment::{database_url, migration_status, StepError};

/// `StepAction::Assess`: the migration status, the number of tables and the app's recent logs.
pub(crate) async fn assess(
    e: &EnvironmentSettings,
    timeout: Duration,
) -> Result<String, StepError> {
    let st = migration_status(e).await?;
    let mut parts = vec![format!(
        "{} applied, pending [{}], failed [{}]",
        st.applied.len(),
        st.pending.join(", "),
        st.failed
            .iter()
            .map(|f| f.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    )];
    if let Ok(n) = table_count(e).await {
        parts.push(format!("{n} tables in the public schema"));
    }
    if let Some(logs) = &e.app_logs {
        if let Ok(o) = dbops::app::run(logs, timeout).await {
            parts.push(format!("app logs: {}", dbops::app::tail_of(&o.tail, 300)));
        }
    }
    Ok(parts.join("; "))
}

async fn table_count(e: &EnvironmentSettings) -> Result<i64, StepError> {
    use sqlx::Connection;
    let url = database_url(e)?;
    let opts = dbops::prisma::connect_options(url.expose_secret())
        .map_err(|err| StepError(err.to_string()))?;
    let mut c = sqlx::PgConnection::connect_with(&opts)
        .await
        .map_err(|_| StepError("database unreachable".into()))?;
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
            .fetch_one(&mut c)
            .await
            .map_err(|err| StepError(err.to_string()))?;
    Ok(n)
}
