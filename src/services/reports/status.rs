//! The `status` report: migration fields (with what Prisma's status hides), the newest backup,
//! the next scheduled backup, the app, operations, open requests and the monitoring window.

use super::app::app_field;
use super::approvals::open_requests;
use super::tools::{tools_check, tools_field};
use super::{field, list, Field};
use crate::core::dispatch::{describe_state, kind_name};
use crate::core::human;
use crate::core::ports::Reads;
use crate::core::reply::{Report, Section};
use crate::dbops::prisma::StatusReport;
use crate::services::backups::health::{backup_line, first_healthy};
use crate::store::{OperationRow, RequestRow};

/// Migration fields for `status`: reachability and version, the client tools against that
/// version, then applied, pending, failed, rolled back (due again), edited after apply, only in
/// the database, diverged.
pub async fn database_fields(reads: Reads<'_>, env: &str) -> Vec<Field> {
    let Ok(e) = crate::services::environment::env_settings(reads, env) else {
        return vec![field("database", "environment not configured")];
    };
    match crate::services::environment::migration_status(e).await {
        Err(err) => {
            let tools = tools_check(e, Err(err.0.clone())).await;
            vec![
                field("database", format!("UNREACHABLE or unreadable: {err}")),
                tools_field(&tools, env),
            ]
        }
        Ok(st) => {
            let server = st
                .server_version_num
                .ok_or_else(|| "not reported".to_string());
            let mut fields = status_fields(&st);
            fields.insert(1, tools_field(&tools_check(e, server).await, env));
            fields.extend(rehearsal_field(reads, env, e, &st).await);
            fields
        }
    }
}

/// The rehearsal of the set a deploy would apply now (by checksum): its state and summary, or
/// `not rehearsed`; nothing when nothing is pending.
async fn rehearsal_field(
    reads: Reads<'_>,
    env: &str,
    e: &crate::config::EnvironmentSettings,
    st: &StatusReport,
) -> Option<Field> {
    if st.deploy_would_apply.is_empty() {
        return None;
    }
    let text = match crate::services::pending::review_pending(e, st) {
        Err(err) => format!("unknown: {err}"),
        Ok(review) => {
            let digest = crate::core::dispatch::set_digest(&review.checksums);
            match reads.store.latest_rehearsal(env, &digest).await {
                Err(err) => format!("unknown: {err}"),
                Ok(None) => format!("not rehearsed (`rehearse {env}`)"),
                Ok(Some(r)) => rehearsal_text(&r, reads.clock.now_ms()),
            }
        }
    };
    Some(field("rehearsal of the pending set", text))
}

/// One rehearsal row as `status` shows it.
fn rehearsal_text(r: &crate::store::RehearsalRow, now: i64) -> String {
    let when = human::span(now - r.finished_at.unwrap_or(r.created_at));
    match r.state.as_str() {
        "queued" | "running" => format!("{} {} (since {when})", r.id, r.state),
        "passed" => format!(
            "{} passed {when} ago: {}",
            r.id,
            r.summary.as_deref().unwrap_or("")
        ),
        "failed" => format!(
            "{} FAILED {when} ago: {}",
            r.id,
            r.error.as_deref().unwrap_or("")
        ),
        other => format!(
            "{} {other} {when} ago{}",
            r.id,
            r.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
    }
}

/// A migration status report as fields.
pub fn status_fields(st: &StatusReport) -> Vec<Field> {
    let mut out = vec![field(
        "database",
        format!(
            "reachable, PostgreSQL {}{}",
            st.server_version.clone().unwrap_or_else(|| "?".into()),
            if st.has_migrations_table {
                ""
            } else {
                " (no _prisma_migrations table yet)"
            }
        ),
    )];
    out.push(field(
        "migrations",
        format!(
            "{} in the folder, {} applied",
            st.local_count,
            st.applied.len()
        ),
    ));
    out.push(field("pending", list(&st.pending)));
    let failed: Vec<String> = st.failed.iter().map(|f| f.name.clone()).collect();
    out.push(field("failed", list(&failed)));
    if !st.rolled_back.is_empty() {
        out.push(field(
            "rolled back (the next deploy applies them again)",
            list(&st.rolled_back),
        ));
    }
    if !st.edited_after_apply.is_empty() {
        out.push(field(
            "EDITED AFTER APPLY (checksum differs)",
            list(&st.edited_after_apply),
        ));
    }
    if !st.only_in_database.is_empty() {
        out.push(field(
            "only in the database (not in the folder)",
            list(&st.only_in_database),
        ));
    }
    if let Some(d) = &st.diverged {
        out.push(field(
            "DIVERGED",
            format!(
                "last common {}, not in database [{}], not in folder [{}]",
                d.last_common.clone().unwrap_or_else(|| "none".into()),
                d.not_in_database.join(", "),
                d.not_in_folder.join(", ")
            ),
        ));
    }
    if !st.deploy_would_apply.is_empty() {
        out.push(field("deploy would apply", list(&st.deploy_would_apply)));
    }
    out
}

/// The newest verified backup and its age.
pub async fn backup_field(reads: Reads<'_>, env: &str) -> anyhow::Result<Field> {
    let now = reads.clock.now_ms();
    let all = reads.store.list_backups(env).await?;
    Ok(field(
        "newest backup",
        match first_healthy(reads, &all).await {
            Some(b) => backup_line(b, now),
            None => "NONE verified".into(),
        },
    ))
}

/// The `status` report: migrations, newest backup, next scheduled backup, app and operations as label/value fields,
/// then the open requests, then the last finished operation.
pub async fn status_report(reads: Reads<'_>, env: &str) -> anyhow::Result<Report> {
    let mut now_fields = database_fields(reads, env).await;
    now_fields.push(backup_field(reads, env).await?);
    now_fields.push(field(
        "next scheduled backup",
        crate::services::backups::schedule::next_backup_text(reads, env),
    ));
    now_fields.extend(app_field(reads, env).await);
    operation_fields(reads, env, &mut now_fields).await?;
    let now = reads.clock.now_ms();
    let open: Vec<RequestRow> = open_requests(reads, now)
        .await?
        .into_iter()
        .filter(|r| r.env == env)
        .collect();
    now_fields.push(field("open requests", open.len().to_string()));
    now_fields.push(field(
        "monitoring",
        crate::services::monitoring::status_line(reads, env)
            .await?
            .unwrap_or_else(|| "no window open".into()),
    ));
    let mut sections = vec![Section {
        fields: now_fields,
        lines: open
            .iter()
            .map(|r| {
                format!(
                    "  {} {} by {}, expires in {}",
                    r.id,
                    kind_name(&r.kind_json),
                    r.requester,
                    human::span(r.expires_at - now)
                )
            })
            .collect(),
        ..Section::default()
    }];
    sections.extend(last_operation_section(reads, env).await?);
    Ok(Report {
        title: format!("dualkey status for {env}"),
        sections,
        buttons: vec![],
    })
}

/// The `operation` fields: each operation running in `env`, or `none running`.
async fn operation_fields(
    reads: Reads<'_>,
    env: &str,
    fields: &mut Vec<Field>,
) -> anyhow::Result<()> {
    let active: Vec<OperationRow> = reads
        .store
        .active_operations()
        .await?
        .into_iter()
        .filter(|o| o.env == env)
        .collect();
    if active.is_empty() {
        fields.push(field("operation", "none running"));
    }
    for o in &active {
        fields.push(field(
            "operation",
            format!(
                "{} {} ({})",
                o.id,
                kind_name(&o.kind_json),
                describe_state(o)
            ),
        ));
    }
    Ok(())
}

/// The section of the last finished operation in `env` (of the 20 most recent), if any.
async fn last_operation_section(reads: Reads<'_>, env: &str) -> anyhow::Result<Option<Section>> {
    let recent = reads.store.recent_operations(20).await?;
    Ok(recent
        .iter()
        .find(|o| o.env == env && o.state.is_final())
        .map(|last| Section {
            fields: vec![field(
                "last operation",
                format!(
                    "{} {} {}",
                    last.id,
                    kind_name(&last.kind_json),
                    describe_state(last)
                ),
            )],
            ..Section::default()
        }))
}
