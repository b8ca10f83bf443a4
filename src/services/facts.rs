//! The reads's [`Facts`] port, implemented: plans come from the runbook, reports from
//! [`crate::services::reports`]. It sits above both, so neither imports the other through it.

use std::collections::BTreeSet;
use std::path::Path;

use crate::core::operation::{OperationKind, Plan};
use crate::core::ports::{Facts, Reads, ReportRequest};
use crate::core::reply::Reply;
use crate::services::reports;
use crate::services::runbook::plan;

/// The [`Facts`] port of the core: plans and read-only reports from the target's facts.
pub struct RunbookFacts;

#[async_trait::async_trait]
impl Facts for RunbookFacts {
    async fn plan(
        &self,
        reads: Reads<'_>,
        kind: &OperationKind,
        env: &str,
    ) -> Result<Plan, String> {
        plan(reads, kind, env).await.map_err(|e| e.to_string())
    }

    async fn report(&self, reads: Reads<'_>, what: ReportRequest) -> anyhow::Result<Reply> {
        Ok(match what {
            ReportRequest::Status(env) => Reply::report(reports::status_report(reads, &env).await?),
            ReportRequest::App(env) => reports::app_report(reads, &env).await,
            ReportRequest::Backups(env) => {
                Reply::report(reports::backups_report(reads, &env).await?)
            }
            ReportRequest::Checklist(env) => {
                Reply::report(reports::checklist_report(reads, &env).await?)
            }
            ReportRequest::Approvals => reports::approvals_report(reads).await?,
        })
    }

    /// The folder names only (one `readdir`, no script read): every command is parsed with
    /// them, `help` included. The same folders [`crate::dbops::prisma::list_migrations`] lists.
    fn migration_names(&self, dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}
