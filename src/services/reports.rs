//! Read-only reports built from facts: `status` (including what Prisma's status hides), the
//! backup catalog, the app status, open approvals, and the migration safety checklist.

use std::time::Duration;

use crate::config::EnvironmentSettings;
use crate::core::approval::RequestState;
use crate::core::dispatch::Core;
use crate::core::dispatch::{describe_state, kind_name};
use crate::core::human;
use crate::core::operation::Plan;
use crate::core::reply::{Button, ButtonStyle, Reply, Report, Section, Table};
use crate::dbops;
use crate::dbops::backup::{PgVersion, ToolsCheck};
use crate::dbops::prisma::StatusReport;
use crate::services::backups::health::{backup_health_hashed, backup_migrations};
use crate::services::backups::health::{backup_line, first_healthy};
use crate::store::{BackupRow, OperationRow, RequestRow};

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// A report row: (label, value).
pub type Field = (String, String);

fn field(label: &str, value: impl Into<String>) -> Field {
    (label.to_string(), value.into())
}

/// Fields as the text the CLI prints: one `label: value` line each.
pub fn fields_text(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Migration fields for `status`: reachability and version, the client tools against that
/// version, then applied, pending, failed, rolled back (due again), edited after apply, only in
/// the database, diverged.
pub async fn database_fields(core: &Core, env: &str) -> Vec<Field> {
    let Ok(e) = crate::services::environment::env_settings(core, env) else {
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
            fields
        }
    }
}

/// The environment's `pg_dump`, `pg_restore` and `psql` (versions cached per binary) against
/// the server's version as already read (no connection of its own).
async fn tools_check(e: &EnvironmentSettings, server: Result<u32, String>) -> ToolsCheck {
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

fn tools_field(check: &ToolsCheck, env: &str) -> Field {
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
pub async fn backup_field(core: &Core, env: &str) -> anyhow::Result<Field> {
    let now = core.clock.now_ms();
    let all = core.store.list_backups(env).await?;
    Ok(field(
        "newest backup",
        match first_healthy(core, &all).await {
            Some(b) => backup_line(b, now),
            None => "NONE verified".into(),
        },
    ))
}

/// The app status command's result, or why there is none; `None` for an unknown environment.
pub async fn app_field(core: &Core, env: &str) -> Option<Field> {
    let e = crate::services::environment::env_settings(core, env).ok()?;
    let Some(argv) = &e.app_status else {
        return Some(field(
            "app",
            format!(
                "unknown (environments.{env}.app_status is not set; dualkey {} the app in {env})",
                if e.controls_app() {
                    "can still stop and start"
                } else {
                    "does not stop or start"
                }
            ),
        ));
    };
    let timeout = Duration::from_secs(e.app_timeout_secs.min(10));
    Some(field(
        "app",
        match dbops::app::run(argv, timeout).await {
            Ok(o) if o.ok() => dbops::app::tail_of(&o.tail, 200),
            Ok(o) => format!(
                "status command exited {}: {}",
                o.code.map(|c| c.to_string()).unwrap_or("by signal".into()),
                dbops::app::tail_of(&o.tail, 200)
            ),
            Err(err) => err.to_string(),
        },
    ))
}

/// The `backups` report: catalog entries (with their health) and external `.sql` files, as a
/// table (id, kind, age, size, state, migrations applied then).
pub async fn backups_report(core: &Core, env: &str) -> anyhow::Result<Report> {
    let now = core.clock.now_ms();
    let all = core.store.list_backups(env).await?;
    let mut table = Table {
        columns: [
            "id",
            "kind",
            "age",
            "size",
            "state",
            "migrations",
            "last drill",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![],
    };
    let drills = core.store.drills(env).await?;
    let shown: Vec<&BackupRow> = all.iter().filter(|b| b.deleted_at.is_none()).collect();
    for b in shown.iter().take(50) {
        let health = backup_health_hashed(core.store.as_ref(), b).await;
        let migs = backup_migrations(b);
        table.rows.push(vec![
            b.id.clone(),
            b.kind.clone(),
            format!("{} ago", human::age(now - b.started_at)),
            human::bytes(b.size_bytes.unwrap_or(0) as u64),
            health.to_string(),
            format!(
                "{}{}",
                migs.len(),
                migs.last()
                    .map(|m| format!(" (last {m})"))
                    .unwrap_or_default()
            ),
            last_drill(&drills, &b.id, now),
        ]);
    }
    if let Ok(e) = crate::services::environment::env_settings(core, env) {
        if let Ok(ext) = dbops::backup::list_external(&e.backup_dir.join(env)) {
            for x in ext {
                table.rows.push(vec![
                    x.file_name.clone(),
                    "external .sql".into(),
                    format!("{} ago", human::age(now - x.modified.timestamp_millis())),
                    human::bytes(x.size_bytes),
                    "restored with psql".into(),
                    "unknown".into(),
                    "-".into(),
                ]);
            }
        }
    }
    let mut section = Section::default();
    if table.rows.is_empty() {
        section.lines.push("none in the catalog".into());
    } else {
        section.table = Some(table);
    }
    Ok(Report {
        title: format!("backups of {env}"),
        sections: vec![section],
        buttons: vec![],
    })
}

/// The newest restore drill of backup `id` (drills newest first): `ok 2h ago, restored in 3s`,
/// `FAILED 1d ago: <error>`, `running`, or `-`.
fn last_drill(drills: &[crate::store::DrillRow], id: &str, now: i64) -> String {
    match drills.iter().find(|d| d.backup_id == id) {
        None => "-".into(),
        Some(d) => match d.state.as_str() {
            "ok" => format!(
                "ok {} ago, restored in {}",
                human::age(now - d.started_at),
                human::span(d.restore_ms.unwrap_or(0))
            ),
            "running" => "running".into(),
            _ => format!(
                "FAILED {} ago: {}",
                human::age(now - d.started_at),
                d.error.as_deref().unwrap_or("unknown error")
            ),
        },
    }
}

/// The `backups` report as text (for `dualkey backups`).
pub async fn backups_text(core: &Core, env: &str) -> anyhow::Result<String> {
    Ok(Reply::report(backups_report(core, env).await?).to_text())
}

/// The migration safety checklist: each item ticked from a fact.
pub async fn checklist_report(core: &Core, env: &str) -> anyhow::Result<Report> {
    let e =
        crate::services::environment::env_settings(core, env).map_err(|e| anyhow::anyhow!(e.0))?;
    let now = core.clock.now_ms();
    let mut items: Vec<(bool, String)> = Vec::new();
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
            match crate::services::runbook::review_pending(e, st) {
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
                }
                Err(err) => items.push((false, format!("pending migrations readable ({err})"))),
            }
            if let Some(staging) = &e.require_staging {
                let ok =
                    crate::services::runbook::missing_on_staging(core, e, &st.deploy_would_apply)
                        .await
                        .is_ok_and(|m| m.is_empty());
                items.push((
                    ok,
                    format!("pending migrations already deployed to {staging}"),
                ));
            }
        }
    }
    let max_age = core.settings.schedule.max_backup_age.0.as_millis() as i64;
    let backups = core.store.list_backups(env).await?;
    match first_healthy(core, &backups).await {
        Some(b) => items.push((
            now - b.started_at <= max_age,
            format!(
                "a verified backup younger than {} ({} is {} old)",
                crate::config::format_duration(core.settings.schedule.max_backup_age.0),
                b.id,
                human::age(now - b.started_at)
            ),
        )),
        None => items.push((false, "a verified backup exists (none)".into())),
    }
    let busy: Vec<String> = core
        .store
        .active_operations()
        .await?
        .into_iter()
        .filter(|o| o.env == env)
        .map(|o| o.id)
        .collect();
    items.push((
        busy.is_empty(),
        format!("no operation running in {env} ({})", list(&busy)),
    ));
    // Without an app_status command there is nothing to check (teams on Kubernetes or a PaaS).
    if e.app_status.is_some() {
        let app = app_field(core, env)
            .await
            .map(|(k, v)| format!("{k}: {v}"))
            .unwrap_or_default();
        items.push((
            !app.contains("exited")
                && !app.contains("cannot start")
                && !app.contains("did not finish"),
            format!("app status command works ({app})"),
        ));
    }
    let passed = items.iter().filter(|(ok, _)| *ok).count();
    Ok(Report {
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
    })
}

/// Pending requests that have not expired yet, newest first.
async fn open_requests(core: &Core, now: i64) -> anyhow::Result<Vec<RequestRow>> {
    Ok(core
        .store
        .list_requests(Some(RequestState::Pending), 100)
        .await?
        .into_iter()
        .filter(|r| r.expires_at > now)
        .collect())
}

/// The `status` report: migrations, newest backup, next scheduled backup, app and operations as label/value fields,
/// then the open requests, then the last finished operation.
pub async fn status_report(core: &Core, env: &str) -> anyhow::Result<Report> {
    let mut now_fields = database_fields(core, env).await;
    now_fields.push(backup_field(core, env).await?);
    now_fields.push(field(
        "next scheduled backup",
        crate::services::backups::schedule::next_backup_text(core, env),
    ));
    now_fields.extend(app_field(core, env).await);
    let active: Vec<OperationRow> = core
        .store
        .active_operations()
        .await?
        .into_iter()
        .filter(|o| o.env == env)
        .collect();
    if active.is_empty() {
        now_fields.push(field("operation", "none running"));
    }
    for o in &active {
        now_fields.push(field(
            "operation",
            format!(
                "{} {} ({})",
                o.id,
                kind_name(&o.kind_json),
                describe_state(o)
            ),
        ));
    }
    let now = core.clock.now_ms();
    let open: Vec<RequestRow> = open_requests(core, now)
        .await?
        .into_iter()
        .filter(|r| r.env == env)
        .collect();
    now_fields.push(field("open requests", open.len().to_string()));
    now_fields.push(field(
        "monitoring",
        crate::services::monitoring::status_line(core, env)
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
    let recent = core.store.recent_operations(20).await?;
    if let Some(last) = recent.iter().find(|o| o.env == env && o.state.is_final()) {
        sections.push(Section {
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
        });
    }
    Ok(Report {
        title: format!("dualkey status for {env}"),
        sections,
        buttons: vec![],
    })
}

/// The `approvals` report: open requests with their plans, votes, expiry, and each one's
/// approve and deny buttons.
pub async fn approvals_report(core: &Core) -> anyhow::Result<Reply> {
    let now = core.clock.now_ms();
    let open = open_requests(core, now).await?;
    if open.is_empty() {
        return Ok(Reply::ephemeral("No open requests."));
    }
    let mut report = Report {
        title: format!("{} open request(s):", open.len()),
        sections: vec![],
        buttons: vec![],
    };
    for r in open {
        let plan: Plan = serde_json::from_str(&r.plan_json)?;
        let votes = core.store.votes(&r.id).await?;
        let approvals = votes.iter().filter(|v| v.decision == "approve").count();
        let mut lines = vec!["Plan:".to_string()];
        for (i, s) in plan.steps.iter().enumerate() {
            lines.push(format!("  {}. {}: {}", i + 1, s.name, s.detail));
        }
        report.sections.push(Section {
            heading: Some(format!(
                "{} [{}] {} by {}: {approvals}/{} votes, expires in {}, fingerprint {}",
                r.id,
                r.env,
                plan.summary,
                r.requester,
                r.required_votes,
                human::span(r.expires_at - now),
                plan.short_fingerprint(),
            )),
            lines,
            warnings: plan.warnings.clone(),
            ..Section::default()
        });
        report.buttons.push(Button::new(
            format!("approve:{}", r.id),
            format!("Approve {}", r.id),
            ButtonStyle::Primary,
        ));
        report.buttons.push(Button::new(
            format!("deny:{}", r.id),
            format!("Deny {}", r.id),
            ButtonStyle::Danger,
        ));
    }
    Ok(Reply::report(report))
}

/// `app status ENV` as a report.
pub async fn app_report(core: &Core, env: &str) -> Reply {
    Reply::report(Report {
        title: format!("app in {env}"),
        sections: vec![Section {
            fields: app_field(core, env).await.into_iter().collect(),
            ..Section::default()
        }],
        buttons: vec![],
    })
}
