//! The client tools (`pg_dump`, `pg_restore`, `psql`) against the server's version: the
//! `tools` line of `status` and the checklist, and the warnings of `config check` and `serve`.

use super::{field, Field};
use crate::config::EnvironmentSettings;
use crate::dbops::backup::{PgVersion, ToolsCheck};

/// The environment's `pg_dump`, `pg_restore` and `psql` (versions cached per binary) against
/// the server's version as already read (no connection of its own).
pub(super) async fn tools_check(
    e: &EnvironmentSettings,
    server: Result<u32, String>,
) -> ToolsCheck {
    ToolsCheck::read(e.pg_bin_dir.as_deref(), server.map(PgVersion)).await
}

/// Whether the tools can handle the server, and the line that says so: `ERROR: ...` naming
/// each tool that cannot (missing, not runnable, older major) with both versions and the fix.
pub fn tools_verdict(check: &ToolsCheck, env: &str) -> (bool, String) {
    if let Some(problem) = check.problem(env) {
        return (
            false,
            format!(
                "ERROR (backup, deploy, restore, rollback and emergency are refused until fixed): {problem}"
            ),
        );
    }
    match &check.server {
        Ok(s) => (
            true,
            format!("{} can handle PostgreSQL {s}", check.summary()),
        ),
        Err(_) => (
            true,
            format!(
                "{} (not checked: the server version is unknown)",
                check.summary()
            ),
        ),
    }
}

/// The `tools` field: [`tools_verdict`]'s line.
pub(super) fn tools_field(check: &ToolsCheck, env: &str) -> Field {
    field("tools", tools_verdict(check, env).1)
}

/// What `config check` and the start of `serve` warn about the client tools: per environment
/// (read concurrently, one connection each for the server version), each tool that cannot
/// handle the server, and a server whose version cannot be read (the tools are then unchecked).
/// An environment whose database URL variable is unset is left to `Settings::warnings`.
pub async fn tool_warnings(settings: &crate::config::Settings) -> Vec<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (name, e)) in settings.environments.iter().enumerate() {
        if std::env::var(&e.database_url_env).is_err() {
            continue;
        }
        let (name, e) = (name.clone(), e.clone());
        tasks.spawn(async move {
            let check = crate::services::environment::gather_tools(&e, None).await;
            let mut w: Vec<String> = check
                .problem(&name)
                .into_iter()
                .map(|p| format!("environments.{name}: {p}. Until then backup, deploy, restore, rollback and emergency are refused"))
                .collect();
            if let Err(err) = &check.server {
                w.push(format!(
                    "environments.{name}: the client tools ({}) were not checked against the server: {err}",
                    check.summary()
                ));
            }
            (i, w)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(r) = r {
            all.push(r);
        }
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().flat_map(|(_, w)| w).collect()
}
