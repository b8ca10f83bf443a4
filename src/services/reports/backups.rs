//! The `backups` report: the catalog with each entry's health and last drill, and external
//! `.sql` files.

use crate::core::human;
use crate::core::ports::Reads;
use crate::core::reply::{Reply, Report, Section, Table};
use crate::dbops;
use crate::services::backups::health::{backup_health_hashed, backup_migrations};
use crate::store::BackupRow;

/// The `backups` report: catalog entries (with their health) and external `.sql` files, as a
/// table (id, kind, age, size, state, migrations applied then).
pub async fn backups_report(reads: Reads<'_>, env: &str) -> anyhow::Result<Report> {
    let now = reads.clock.now_ms();
    let all = reads.store.list_backups(env).await?;
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
    let drills = reads.store.drills(env).await?;
    let shown: Vec<&BackupRow> = all.iter().filter(|b| b.deleted_at.is_none()).collect();
    for b in shown.iter().take(50) {
        let health = backup_health_hashed(reads.store, b).await;
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
    if let Ok(e) = crate::services::environment::env_settings(reads, env) {
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
pub async fn backups_text(reads: Reads<'_>, env: &str) -> anyhow::Result<String> {
    Ok(Reply::report(backups_report(reads, env).await?).to_text())
}
