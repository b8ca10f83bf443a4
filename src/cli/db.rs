//! The database commands: `status` (migration status), `backup` (take one now) and `backups`
//! (the catalog).

use std::io::Write;
use std::process::ExitCode;

use super::{load, out, pick_env, stdout_error, Cli, StatusFormat, UsageError};
use crate::startup::Application;

/// `dualkey status [--env ENV] [--format prisma|json|text]`: the migration status; exit 1
/// when it is not clean (with `prisma`, the exit code of `prisma migrate status`).
pub(super) async fn status(
    cli: &Cli,
    env: &Option<String>,
    format: &StatusFormat,
) -> anyhow::Result<ExitCode> {
    let s = load(cli)?;
    let env = pick_env(&s, env)?;
    let e = &s.environments[&env];
    let url = e.database_url().map_err(UsageError)?;
    use secrecy::ExposeSecret;
    match format {
        StatusFormat::Prisma => {
            let out =
                crate::dbops::prisma::status_prisma_cli(url.expose_secret(), &e.migrations_dir)
                    .await;
            let mut w = std::io::stdout().lock();
            w.write_all(out.stdout.as_bytes())
                .and_then(|_| w.flush())
                .map_err(stdout_error)?;
            let _ = std::io::stderr().lock().write_all(out.stderr.as_bytes());
            Ok(ExitCode::from(out.exit_code.clamp(0, 255) as u8))
        }
        StatusFormat::Json | StatusFormat::Text => {
            let st = crate::dbops::prisma::status(url.expose_secret(), &e.migrations_dir)
                .await
                .map_err(|err| {
                    anyhow::anyhow!("cannot read the migration status of {env}: {err}")
                })?;
            if *format == StatusFormat::Json {
                out(serde_json::to_string_pretty(&st)?)?;
            } else {
                out(crate::services::reports::fields_text(
                    &crate::services::reports::status_fields(&st),
                ))?;
            }
            Ok(if st.prisma_exit_code == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// `dualkey backup [--env ENV] [--note TEXT]`: a verified backup taken now.
pub(super) async fn backup(
    cli: &Cli,
    env: &Option<String>,
    note: &Option<String>,
) -> anyhow::Result<ExitCode> {
    let s = load(cli)?;
    let env = pick_env(&s, env)?;
    let app = Application::build(s).await?;
    let core = app.core();
    let b =
        crate::services::backups::take::take_manual_backup(&core, &env, "cli", note.clone(), None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    out(format_args!(
        "backup {} ok: {} ({} bytes, sha256 {})",
        b.id,
        b.path,
        b.size_bytes.unwrap_or(0),
        b.sha256.unwrap_or_default()
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `dualkey backups [--env ENV]`: the backup catalog and external .sql files.
pub(super) async fn backups(cli: &Cli, env: &Option<String>) -> anyhow::Result<ExitCode> {
    let s = load(cli)?;
    let env = pick_env(&s, env)?;
    let core = Application::read_only_core(s).await?;
    out(crate::services::reports::backups_text(core.reads(), &env).await?)?;
    Ok(ExitCode::SUCCESS)
}
