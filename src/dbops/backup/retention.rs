//! Backup retention: which catalog entries to delete, as a pure function of the entries and the
//! time, and the deletion of their files.
//!
//! The rule (SPEC section 6): `scheduled` and `manual` backups older than `retention_days` are
//! deleted, always keeping the newest `min_keep` verified ones. Decisions made here:
//!
//! - **Safety backups are never selected.** `pre-deploy`, `pre-rollback` and `pre-restore` backups
//!   are the restore points of the rollback `restore` strategy and of `/db emergency` (the newest
//!   verified backup taken before a migration); deleting them on a timer would silently remove the
//!   way back from a migration. There is one per operation, so they grow with deploys, not with
//!   time; they are removed by hand.
//! - **`min_keep` counts backups of any kind** that are verified and still on disk: a safety
//!   backup is as good a restore point as a scheduled one. Kept entries are the newest by
//!   `created_at`.
//! - **Unverified or missing entries never count toward `min_keep`.** Old `scheduled`/`manual`
//!   entries that failed verification or whose file disappeared are selected like any other (the
//!   file deletion then finds nothing to remove).
//! - "Older than" is strict: an entry exactly `retention_days` old is kept. Entries dated in the
//!   future (clock skew) are never older.

use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};

use super::BackupKind;

/// The retention settings of one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// `retention_days` (default 7).
    pub retention_days: u32,
    /// `min_keep` (default 3): the newest this many verified backups are always kept.
    pub min_keep: usize,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            retention_days: 7,
            min_keep: 3,
        }
    }
}

/// What retention needs to know about one catalog entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionEntry<Id> {
    /// The catalog id (returned as is when the entry is selected).
    pub id: Id,
    /// Why the backup was taken.
    pub kind: BackupKind,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
    /// Whether its verification succeeded.
    pub verified: bool,
    /// Whether its file is still on disk (with the recorded checksum, if the caller checked).
    pub exists: bool,
}

/// The ids of the entries retention deletes, oldest first (ties in input order).
pub fn select_for_deletion<Id: Clone>(
    entries: &[RetentionEntry<Id>],
    now: DateTime<Utc>,
    policy: RetentionPolicy,
) -> Vec<Id> {
    // Indices, newest first; a stable sort keeps input order among equal times.
    let mut newest_first: Vec<usize> = (0..entries.len()).collect();
    newest_first.sort_by(|&a, &b| entries[b].created_at.cmp(&entries[a].created_at));
    let protected: Vec<usize> = newest_first
        .iter()
        .copied()
        .filter(|&i| entries[i].verified && entries[i].exists)
        .take(policy.min_keep)
        .collect();

    let cutoff = now - Duration::days(i64::from(policy.retention_days));
    let mut selected: Vec<usize> = (0..entries.len())
        .filter(|i| !protected.contains(i))
        .filter(|&i| entries[i].kind.is_subject_to_retention())
        .filter(|&i| entries[i].created_at < cutoff)
        .collect();
    selected.sort_by(|&a, &b| entries[a].created_at.cmp(&entries[b].created_at));
    selected
        .into_iter()
        .map(|i| entries[i].id.clone())
        .collect()
}

/// What happened to one file that retention deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletedFile {
    /// The file was removed.
    Removed,
    /// There was no file to remove (already gone).
    AlreadyGone,
}

/// Deletes backup files (and any `.partial` twin), one result per path in order, then syncs each
/// folder that changed. A missing file is [`DeletedFile::AlreadyGone`], not an error.
pub fn delete_backup_files(paths: &[PathBuf]) -> Vec<io::Result<DeletedFile>> {
    let mut dirs: Vec<&Path> = Vec::new();
    let results = paths
        .iter()
        .map(|p| {
            let mut partial = p.clone().into_os_string();
            partial.push(super::PARTIAL_SUFFIX);
            let _ = std::fs::remove_file(PathBuf::from(partial));
            match std::fs::remove_file(p) {
                Ok(()) => {
                    if let Some(d) = p.parent() {
                        if !dirs.contains(&d) {
                            dirs.push(d);
                        }
                    }
                    Ok(DeletedFile::Removed)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DeletedFile::AlreadyGone),
                Err(e) => Err(e),
            }
        })
        .collect();
    for d in dirs {
        let d = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        };
        let _ = std::fs::File::open(d).and_then(|f| f.sync_all());
    }
    results
}
