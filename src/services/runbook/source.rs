//! Where a restore reads from: a catalog backup or an external `.sql` file, found and checked
//! ([`restore_source`] for planning, [`restore_file`] for the step), and the newest backup that
//! fits a rollback or an emergency.

use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;

use crate::config::EnvironmentSettings;
use crate::core::operation::{PlannedStep, StepAction};
use crate::core::ports::Reads;
use crate::dbops;
use crate::dbops::backup::{self as bk, BackupKind};
use crate::services::backups::health::*;
use crate::services::environment::*;
use crate::services::runbook::step_builders::{app_step, backup_step};
use crate::store::BackupRow;

/// Where a restore reads from.
#[derive(Debug, Clone)]
pub struct RestoreSource {
    /// Catalog id or external file name.
    pub label: String,
    /// The file.
    pub path: PathBuf,
    /// Expected SHA-256: the catalog's, or (external files) the one read when the plan was made.
    pub sha256: Option<String>,
    /// True for a catalog entry (a custom-format dump), false for an external `.sql` file.
    pub catalog: bool,
    /// When it was taken (ms).
    pub taken_at: i64,
    /// The migrations applied in the backup (the catalog's record); `None` for an external file.
    pub migrations: Option<Vec<String>>,
    /// The target's write counters recorded with the backup (JSON), when there are any.
    pub write_stats_json: Option<String>,
}

impl RestoreSource {
    /// A catalog entry as a restore source.
    pub(super) fn from_row(b: &BackupRow) -> RestoreSource {
        RestoreSource {
            label: b.id.clone(),
            path: PathBuf::from(&b.path),
            sha256: b.sha256.clone(),
            catalog: true,
            taken_at: b.started_at,
            migrations: Some(backup_migrations(b)),
            write_stats_json: b.write_stats_json.clone(),
        }
    }

    /// The steps of every plan that restores this backup: a safety backup, stop the app,
    /// `before`, the restore (single transaction), `after`, and starting the app again (also
    /// after a failed restore). Without `app_stop`/`app_start` the app steps are left out and
    /// [`RestoreSource::app_warning`] goes on the card.
    pub(super) fn steps(
        &self,
        e: &EnvironmentSettings,
        safety: BackupKind,
        detail: String,
        before: Vec<PlannedStep>,
        after: Vec<PlannedStep>,
    ) -> Vec<PlannedStep> {
        let mut steps = vec![backup_step(safety, None)];
        steps.extend(app_step(e, true));
        steps.extend(before);
        steps.push(PlannedStep::new(
            "restore",
            detail,
            StepAction::Restore {
                backup: self.label.clone(),
                sha256: self.sha256.clone(),
            },
        ));
        steps.extend(after);
        steps.extend(app_step(e, false).map(PlannedStep::always));
        steps
    }

    /// The warning of every restoring plan in an environment where dualkey may not stop the
    /// app; `None` when it may.
    pub(super) fn app_warning(e: &EnvironmentSettings, env: &str) -> Option<String> {
        (!e.controls_app()).then(|| format!(
            "the app keeps running during the restore: environments.{env}.app_stop/app_start are not set, so dualkey does not stop it. Stop its writes yourself first, or they may fail or be lost while the restore runs"
        ))
    }

    /// The migrations restoring this backup un-applies: those applied now minus those applied
    /// in the backup, newest first. `None` for an external file (no record of its migrations).
    pub fn unapplies(&self, applied_now: &[String]) -> Option<Vec<String>> {
        let then = self.migrations.as_ref()?;
        Some(
            applied_now
                .iter()
                .rev()
                .filter(|m| !then.contains(m))
                .cloned()
                .collect(),
        )
    }

    /// The card line that names what the restore un-applies (and brings back: migrations
    /// applied in the backup but not now). `applied_now` is `Err(why)` when the status could not
    /// be read.
    pub(super) fn unapply_warning(&self, applied_now: &Result<Vec<String>, StepError>) -> String {
        let applied_now = match applied_now {
            Ok(a) => a.as_slice(),
            Err(why) => {
                return format!(
                    "restoring {} un-applies unknown migrations: {why}",
                    self.label
                )
            }
        };
        let (Some(gone), Some(then)) = (self.unapplies(applied_now), &self.migrations) else {
            return format!(
                "restoring {} un-applies unknown migrations: an external file has no catalog record of them ({} applied now)",
                self.label,
                applied_now.len()
            );
        };
        let mut line = if gone.is_empty() {
            format!("restoring {} un-applies no migration", self.label)
        } else {
            format!(
                "restoring {} un-applies {} migration(s), newest first: {}",
                self.label,
                gone.len(),
                gone.join(", ")
            )
        };
        let back: Vec<&String> = then.iter().filter(|m| !applied_now.contains(m)).collect();
        if !back.is_empty() {
            line.push_str(&format!(
                "; it brings back {} migration(s) applied in the backup but not now: {}",
                back.len(),
                back.iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        line
    }

    /// About how many rows were written since the backup, naming the most written tables, or
    /// `unknown (why)`.
    /// I/O: reads the target's write counters now (see [`super::planning::gather`]).
    pub(super) async fn write_estimate(&self, e: &EnvironmentSettings) -> String {
        const UNKNOWN_OLD: &str = "unknown (backup taken before dualkey recorded write counters, or they could not be read when it was taken)";
        if !self.catalog {
            return "unknown (an external file: dualkey recorded no write counters with it)".into();
        }
        let Some(json) = &self.write_stats_json else {
            return UNKNOWN_OLD.into();
        };
        let Ok(then) = serde_json::from_str::<dbops::stats::WriteStats>(json) else {
            return "unknown (the write counters recorded with the backup are unreadable)".into();
        };
        let current = match database_url(e) {
            Ok(url) => dbops::stats::read(url.expose_secret()).await,
            Err(err) => return format!("unknown ({err})"),
        };
        match current {
            Ok(current) => dbops::stats::estimate(&then, &current).describe(3),
            Err(err) => format!("unknown ({err})"),
        }
    }

    /// The plan fact that pins the backup's content.
    pub(super) fn fact(&self) -> String {
        format!(
            "backup {} sha256 {}",
            self.label,
            self.sha256.clone().unwrap_or_default()
        )
    }
}

/// The last line `pg_dump` writes to a plain SQL dump that it finished.
pub(super) const PLAIN_DUMP_TRAILER: &str = "-- PostgreSQL database dump complete";

/// Whether a plain `.sql` file ends with pg_dump's completion line (its last 4 KiB are read).
pub(super) fn ends_like_a_complete_plain_dump(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let tail = (|| -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(4096)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(buf)
    })();
    tail.is_ok_and(|t| String::from_utf8_lossy(&t).contains(PLAIN_DUMP_TRAILER))
}

/// Finds a restorable backup by catalog id or external `.sql` file name; refuses missing,
/// changed, failed or unverified ones.
pub async fn restore_source(
    reads: Reads<'_>,
    env: &str,
    name: &str,
) -> Result<RestoreSource, StepError> {
    let e = env_settings(reads, env)?;
    if name.ends_with(".sql") {
        let dir = e.backup_dir.join(env);
        let found = bk::list_external(&dir)
            .map_err(|err| StepError(format!("cannot list {}: {err}", dir.display())))?
            .into_iter()
            .find(|x| x.file_name == name)
            .ok_or_else(|| {
                StepError(format!(
                    "there is no external backup `{name}` in {}; `backups` lists them",
                    dir.display()
                ))
            })?;
        // Pin the reviewed content: the SHA-256 is part of the plan's facts, so a file replaced
        // after approval changes the fingerprint.
        let (_, sha) = bk::sha256_file(&found.path)
            .await
            .map_err(|err| StepError(format!("cannot read {name}: {err}")))?;
        return Ok(RestoreSource {
            label: name.into(),
            path: found.path,
            sha256: Some(sha),
            catalog: false,
            taken_at: found.modified.timestamp_millis(),
            migrations: None,
            write_stats_json: None,
        });
    }
    let b = reads
        .store
        .get_backup(name)
        .await
        .map_err(|err| StepError(err.to_string()))?
        .filter(|b| b.env == env)
        .ok_or_else(|| {
            StepError(format!(
                "there is no backup `{name}` in {env}; `backups` lists them"
            ))
        })?;
    let state = match backup_health(&b) {
        "ok" | BACKUP_TOUCHED if is_intact(&b).await => "ok",
        "ok" | BACKUP_TOUCHED => "changed (its SHA-256 differs from the catalog)",
        other => other,
    };
    if state != "ok" {
        return Err(StepError(format!(
            "backup {name} is {state} and cannot be restored"
        )));
    }
    Ok(RestoreSource::from_row(&b))
}

/// The file of the backup a restore step names, with the catalog's SHA-256 (external `.sql`
/// files have none; their approved hash is in the step). Cheap: catalog and file system only;
/// the content is checked while it streams into the restore.
pub(super) async fn restore_file(
    reads: Reads<'_>,
    env: &str,
    name: &str,
) -> Result<(PathBuf, Option<String>), StepError> {
    if name.ends_with(".sql") {
        let e = env_settings(reads, env)?;
        let dir = e.backup_dir.join(env);
        let found = bk::list_external(&dir)
            .map_err(|err| StepError(format!("cannot list {}: {err}", dir.display())))?
            .into_iter()
            .find(|x| x.file_name == name)
            .ok_or_else(|| {
                StepError(format!(
                    "external backup {name} is no longer in {}; nothing was restored",
                    dir.display()
                ))
            })?;
        return Ok((found.path, None));
    }
    let b = reads
        .store
        .get_backup(name)
        .await
        .map_err(|err| StepError(err.to_string()))?
        .filter(|b| b.env == env)
        .ok_or_else(|| StepError(format!("there is no backup `{name}` in {env}")))?;
    match backup_health(&b) {
        // Size or modification time differ: the streaming SHA-256 check decides.
        "ok" | "changed" | BACKUP_TOUCHED => Ok((PathBuf::from(&b.path), b.sha256.clone())),
        state => Err(StepError(format!(
            "backup {name} is {state} and cannot be restored; nothing was restored"
        ))),
    }
}

/// The newest healthy, verified backup of `env` that satisfies `pred`; a missing file, or one
/// whose SHA-256 changed, is never offered.
pub(super) async fn newest_backup(
    reads: Reads<'_>,
    env: &str,
    pred: impl Fn(&BackupRow) -> bool,
) -> Result<Option<BackupRow>, StepError> {
    let all = reads
        .store
        .list_backups(env)
        .await
        .map_err(|e| StepError(e.to_string()))?;
    for b in all {
        if matches!(backup_health(&b), "ok" | BACKUP_TOUCHED) && pred(&b) && is_intact(&b).await {
            return Ok(Some(b));
        }
    }
    Ok(None)
}
