//! Whether a backup file is still the one that was written (size, mtime, SHA-256) and how a
//! backup is shown in one line; the newest healthy or verified backup of an environment.

use std::path::Path;

use crate::core::human;
use crate::core::ports::Reads;
use crate::dbops::backup::{self as bk};
use crate::store::{BackupRow, Store};

/// A catalog entry whose file has the recorded size but another modification time than when it
/// was verified: only its SHA-256 can tell (see [`backup_health_hashed`]). A copy of the same
/// bytes (a `cp` without `-p`, a restore from offsite storage) is still the backup.
pub const BACKUP_TOUCHED: &str = "touched";

/// How a catalog entry looks on disk right now (cheap: existence, size and modification time; no
/// read). `ok`, or `missing`, `changed` (another size), [`BACKUP_TOUCHED`] (same size, other
/// modification time: hash it), `unverified`, `failed`, `running`, `deleted`. The SHA-256 decides:
/// [`backup_health_hashed`] settles `touched`, and the full check runs before any restore.
pub fn backup_health(b: &BackupRow) -> &'static str {
    if b.deleted_at.is_some() {
        return "deleted";
    }
    match b.state.as_str() {
        "ok" => {}
        "running" => return "running",
        _ => return "failed",
    }
    match std::fs::metadata(&b.path) {
        Err(_) => "missing",
        Ok(m) if Some(m.len() as i64) != b.size_bytes => "changed",
        Ok(_) if b.verified_at.is_none() => "unverified",
        // Written to after it was verified, or a copy of it: only a hint to hash again (the
        // mtime alone never condemns a file). Compared for equality with the file's own time, so
        // clock differences between the bot and the file system do not matter.
        Ok(m) if b.file_mtime_ms.is_some() && modified_ms(&m) != b.file_mtime_ms => BACKUP_TOUCHED,
        Ok(_) => "ok",
    }
}

/// A file's modification time in ms, as the catalog records it.
pub fn modified_ms(m: &std::fs::Metadata) -> Option<i64> {
    m.modified()
        .ok()
        .map(|t| chrono::DateTime::<chrono::Utc>::from(t).timestamp_millis())
}

/// [`backup_health`], with a [`BACKUP_TOUCHED`] file hashed in full (a blocking-thread read):
/// `ok` when its SHA-256 is still the catalog's, `changed` otherwise. Lists, retention and
/// restore candidates use this, so a byte-identical copy with a new mtime stays a backup.
///
/// When the hash matches, the file's new modification time (read before hashing, and only if it
/// did not change while hashing) goes into the catalog
/// ([`crate::store::Store::refresh_backup_mtime`]), so the next look is cheap again instead of
/// reading the file end to end every time. Failing to record it only logs a warning.
pub async fn backup_health_hashed(store: &dyn Store, b: &BackupRow) -> &'static str {
    match backup_health(b) {
        BACKUP_TOUCHED => settle_touched(store, b).await,
        other => other,
    }
}

/// Hashes a [`BACKUP_TOUCHED`] file: `ok` (and its modification time recorded) or `changed`.
pub async fn settle_touched(store: &dyn Store, b: &BackupRow) -> &'static str {
    let mtime_now = || {
        std::fs::metadata(&b.path)
            .ok()
            .and_then(|m| modified_ms(&m))
    };
    let before = mtime_now();
    if !is_intact(b).await {
        return "changed";
    }
    let (Some(mtime), Some(sha256)) = (before, b.sha256.as_deref()) else {
        return "ok";
    };
    if mtime_now() != Some(mtime) {
        // Written to (or replaced) while it was read: the hash may not be that version's.
        tracing::debug!(backup = %b.id, "backup file changed while hashed; modification time not recorded");
        return "ok";
    }
    match store.refresh_backup_mtime(&b.id, sha256, mtime).await {
        Ok(true) => tracing::info!(
            backup = %b.id,
            file_mtime_ms = mtime,
            "backup file has a new modification time and the catalog's SHA-256; new modification time recorded"
        ),
        // Deleted by retention, or replaced, meanwhile: nothing to record.
        Ok(false) => {}
        Err(e) => tracing::warn!(
            backup = %b.id,
            error = %e,
            "could not record the backup file's new modification time; it is hashed again next time"
        ),
    }
    "ok"
}

/// The migrations recorded as applied when a backup was taken.
pub fn backup_migrations(b: &BackupRow) -> Vec<String> {
    serde_json::from_str(&b.migrations_json).unwrap_or_default()
}

/// A backup in one line: `b3f9a1c2b7 (scheduled, 5h ago, 12.0 MB)`.
pub fn backup_line(b: &BackupRow, now: i64) -> String {
    format!(
        "{} ({}, {} ago, {})",
        b.id,
        b.kind,
        human::age(now - b.started_at),
        human::bytes(b.size_bytes.unwrap_or(0) as u64)
    )
}

/// The first (newest) catalog entry whose file is healthy, hashing a touched one.
pub async fn first_healthy<'a>(reads: Reads<'_>, all: &'a [BackupRow]) -> Option<&'a BackupRow> {
    for b in all {
        if backup_health_hashed(reads.store, b).await == "ok" {
            return Some(b);
        }
    }
    None
}

/// The newest catalog entry of `env` whose file is healthy (a deleted or failed entry never
/// is: `backup_health` says so).
pub async fn newest_verified(reads: Reads<'_>, env: &str) -> anyhow::Result<Option<BackupRow>> {
    let all = reads.store.list_backups(env).await?;
    Ok(first_healthy(reads, &all).await.cloned())
}

/// True when the file still has the SHA-256 recorded in the catalog (a full read). The cheap
/// [`backup_health`] (size, modification time) lists backups; this decides before one is
/// offered for, or used in, a restore, and for a [`BACKUP_TOUCHED`] file.
pub async fn is_intact(b: &BackupRow) -> bool {
    match (bk::sha256_file(Path::new(&b.path)).await, &b.sha256) {
        (Ok((_, actual)), Some(expected)) => &actual == expected,
        _ => false,
    }
}
