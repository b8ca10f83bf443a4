//! The migration safety checklist: each item ticked from a fact (database, tools, migration
//! history, pending migrations with their lock review, long transactions, staging, backup age,
//! running operations, app status).

use super::app::app_field;
use super::list;
use super::tools::{tools_check, tools_verdict};
use crate::config::EnvironmentSettings;
use crate::core::human;
use crate::core::ports::Reads;
use crate::core::reply::{Report, Section};
use crate::dbops::lockreview::ScriptReview;
use crate::dbops::prisma::StatusReport;
use crate::services::backups::health::first_healthy;
use crate::services::runbook::planning::{
    columns_on_target, connect, flagged_on_large_tables, read_live,
};

/// A checklist item: ticked or not, and its text.
type Item = (bool, String);

/// The migration safety checklist: each item ticked from a fact.
pub async fn checklist_report(reads: Reads<'_>, env: &str) -> anyhow::Result<Report> {
    let e =
        crate::services::environment::env_settings(reads, env).map_err(|e| anyhow::anyhow!(e.0))?;
    let now = reads.clock.now_ms();
    let mut items: Vec<Item> = Vec::new();
    let st = crate::services::environment::migration_status(e).await;
    let server = match &st {
        Ok(st) => st
            .server_version_num
            .ok_or_else(|| "not reported".to_string()),
        Err(err) => Err(err.0.clone()),
    };
    let (tools_ok, tools_line) = tools_verdict(&tools_check(e, server).await, env);
    match &st {
        Err(err) => {
            items.push((false, format!("database reachable ({err})")));
            items.push((tools_ok, format!("client tools: {tools_line}")));
        }
        Ok(st) => {
            items.push((
                true,
                format!(
                    "database reachable (PostgreSQL {})",
                    st.server_version.clone().unwrap_or_default()
                ),
            ));
            items.push((tools_ok, format!("client tools: {tools_line}")));
            history_items(st, &mut items);
            pending_items(reads, e, st, &mut items).await;
        }
    }
    items.push(backup_item(reads, env, now).await?);
    items.push(busy_item(reads, env).await?);
    // Without an app_status command there is nothing to check (teams on Kubernetes or a PaaS).
    if e.app_status.is_some() {
        items.push(app_item(reads, env).await);
    }
    Ok(checklist(env, items))
}

/// The migration history items: no failed migration, folder and database agree, none edited
/// after it was applied.
fn history_items(st: &StatusReport, items: &mut Vec<Item>) {
    items.push((
        st.failed.is_empty(),
        format!(
            "no failed migrations ({})",
            list(&st.failed.iter().map(|f| f.name.clone()).collect::<Vec<_>>())
        ),
    ));
    items.push((
        st.diverged.is_none() && st.only_in_database.is_empty(),
        "folder and database histories agree".into(),
    ));
    items.push((
        st.edited_after_apply.is_empty(),
        format!(
            "no migration edited after it was applied ({})",
            list(&st.edited_after_apply)
        ),
    ));
}

/// The pending migration items: each has a down.sql, none loses data, and (with
/// `require_staging`) all are already deployed to staging.
async fn pending_items(
    reads: Reads<'_>,
    e: &EnvironmentSettings,
    st: &StatusReport,
    items: &mut Vec<Item>,
) {
    match crate::services::pending::review_pending(e, st) {
        Ok(review) => {
            items.push((
                review.no_down.is_empty(),
                format!(
                    "every pending migration has a down.sql (missing: {})",
                    list(&review.no_down)
                ),
            ));
            items.push((
                review.data_loss.is_empty(),
                format!(
                    "no data-loss statements in pending migrations ({})",
                    list(&review.data_loss)
                ),
            ));
            lock_items(reads, e, st, review.locks, items).await;
        }
        Err(err) => items.push((false, format!("pending migrations readable ({err})"))),
    }
    if let Some(staging) = &e.require_staging {
        let ok = crate::services::pending::missing_on_staging(reads, e, &st.deploy_would_apply)
            .await
            .is_ok_and(|m| m.is_empty());
        items.push((
            ok,
            format!("pending migrations already deployed to {staging}"),
        ));
    }
}

/// The lock review's items: no pending statement that blocks reads or writes of a large table
/// (the warnings of the deploy card), and no transaction open on the target for longer than
/// `[deploy] long_transaction` (a migration would wait for it). Read as for the card: the
/// review knows the target's column types, sizes and sessions come from one connection.
async fn lock_items(
    reads: Reads<'_>,
    e: &EnvironmentSettings,
    st: &StatusReport,
    mut scripts: Vec<(String, ScriptReview)>,
    items: &mut Vec<Item>,
) {
    let deploy = &reads.settings.deploy;
    let mut target = connect(e).await;
    if let Some(known) = columns_on_target(&mut target, &scripts).await {
        if let Ok(again) = crate::services::pending::review_pending_with(e, st, &known) {
            scripts = again.locks;
        }
    }
    let live = read_live(target, deploy, &scripts).await;
    let large = flagged_on_large_tables(&scripts, &live);
    items.push((
        large.is_empty(),
        format!(
            "no pending statement blocks reads or writes of a large table ({})",
            list(&large)
        ),
    ));
    let over = crate::config::format_duration(deploy.long_transaction.0);
    items.push(match &live.long_transactions {
        Ok(sessions) => (
            sessions.is_empty(),
            format!(
                "no transaction open on the target for over {over} ({})",
                list(&sessions.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            ),
        ),
        Err(why) => (
            false,
            format!("open transactions on the target readable ({why})"),
        ),
    });
}

/// A verified backup younger than `schedule.max_backup_age`.
async fn backup_item(reads: Reads<'_>, env: &str, now: i64) -> anyhow::Result<Item> {
    let max_age = reads.settings.schedule.max_backup_age.0.as_millis() as i64;
    let backups = reads.store.list_backups(env).await?;
    Ok(match first_healthy(reads, &backups).await {
        Some(b) => (
            now - b.started_at <= max_age,
            format!(
                "a verified backup younger than {} ({} is {} old)",
                crate::config::format_duration(reads.settings.schedule.max_backup_age.0),
                b.id,
                human::age(now - b.started_at)
            ),
        ),
        None => (false, "a verified backup exists (none)".into()),
    })
}

/// No operation running in `env`.
async fn busy_item(reads: Reads<'_>, env: &str) -> anyhow::Result<Item> {
    let busy: Vec<String> = reads
        .store
        .active_operations()
        .await?
        .into_iter()
        .filter(|o| o.env == env)
        .map(|o| o.id)
        .collect();
    Ok((
        busy.is_empty(),
        format!("no operation running in {env} ({})", list(&busy)),
    ))
}

/// The app status command works.
async fn app_item(reads: Reads<'_>, env: &str) -> Item {
    let app = app_field(reads, env)
        .await
        .map(|(k, v)| format!("{k}: {v}"))
        .unwrap_or_default();
    (
        !app.contains("exited") && !app.contains("cannot start") && !app.contains("did not finish"),
        format!("app status command works ({app})"),
    )
}

/// The checklist as a report: `[x]` or `[ ]` per item, the count ticked in the title.
fn checklist(env: &str, items: Vec<Item>) -> Report {
    let passed = items.iter().filter(|(ok, _)| *ok).count();
    Report {
        title: format!(
            "migration safety checklist for {env}: {passed}/{} ok",
            items.len()
        ),
        sections: vec![Section {
            lines: items
                .into_iter()
                .map(|(ok, text)| format!("[{}] {text}", if ok { "x" } else { " " }))
                .collect(),
            ..Section::default()
        }],
        buttons: vec![],
    }
}
