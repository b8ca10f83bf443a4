//! What every step and report starts from: the environment's settings, its database URL and
//! migration status, and the error a step or plan shows people.

use secrecy::ExposeSecret;

use crate::config::EnvironmentSettings;
use crate::core::ports::Reads;
use crate::dbops::backup::{PgVersion, ToolsCheck};
use crate::dbops::prisma;

/// A planning or step failure, shown to people and written to the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StepError(pub String);

/// The environment's settings.
pub fn env_settings<'a>(reads: Reads<'a>, env: &str) -> Result<&'a EnvironmentSettings, StepError> {
    reads
        .settings
        .environments
        .get(env)
        .ok_or_else(|| StepError(format!("environment `{env}` is no longer configured")))
}

/// The environment's database URL (a secret, from the environment variable).
pub fn database_url(e: &EnvironmentSettings) -> Result<secrecy::SecretString, StepError> {
    e.database_url().map_err(StepError)
}

/// Reads the migration status of an environment.
pub async fn migration_status(e: &EnvironmentSettings) -> Result<prisma::StatusReport, StepError> {
    let url = database_url(e)?;
    prisma::status(url.expose_secret(), &e.migrations_dir)
        .await
        .map_err(|err| StepError(format!("cannot read the migration status: {err}")))
}

/// The versions of the environment's tools (cached per binary) and of its server: `server`
/// when a status read had it, else read on a connection of its own.
pub async fn gather_tools(e: &EnvironmentSettings, server: Option<u32>) -> ToolsCheck {
    let server = match server {
        Some(n) => Ok(PgVersion(n)),
        None => match database_url(e) {
            Err(err) => Err(err.0),
            Ok(url) => prisma::server_version_num(url.expose_secret())
                .await
                .map(PgVersion)
                .map_err(|err| format!("cannot read the server version: {err}")),
        },
    };
    ToolsCheck::read(e.pg_bin_dir.as_deref(), server).await
}

/// The timeouts and retries of `[deploy]` for applying migrations: the same for a deploy and for
/// its rehearsal, so the rehearsal runs what the deploy will.
pub fn deploy_options(d: &crate::config::DeploySettings) -> crate::dbops::prisma::DeployOptions {
    crate::dbops::prisma::DeployOptions {
        lock_timeout: Some(d.lock_timeout.0),
        statement_timeout: d.statement_timeout.map(|t| t.0),
        lock_retries: d.lock_retries,
        backoff: crate::config::DeploySettings::lock_backoff,
        refuse_under_dump: true,
    }
}

/// The database URLs of every configured environment whose URL variable is set: a drill's or a
/// rehearsal's scratch database must be none of them.
pub fn protected_urls(settings: &crate::config::Settings) -> Vec<String> {
    use secrecy::ExposeSecret as _;
    settings
        .environments
        .values()
        .filter_map(|e| e.database_url().ok())
        .map(|u| u.expose_secret().to_string())
        .collect()
}
