//! Backup file names and what is found in an environment's backup folder: dualkey's own `.dump`
//! files, external plain `.sql` dumps, and `.partial` leftovers of a bot that died mid-dump.
//!
//! These are quick, blocking directory reads (a backup folder holds tens of files).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDateTime, Utc};

use super::BackupKind;

/// Suffix of a dump that is still being written.
pub const PARTIAL_SUFFIX: &str = ".partial";

const TS_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// The file name of a dump: `<database>_<UTC yyyymmddTHHMMSSZ>_<kind>.dump`.
///
/// The database name is made safe for a file name: characters other than ASCII letters, digits,
/// `-` and `_` become `_` (so `../x` cannot leave the folder), and an empty result becomes `db`.
pub fn dump_file_name(database: &str, started_at: DateTime<Utc>, kind: BackupKind) -> String {
    let mut db: String = database
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if db.is_empty() {
        db.push_str("db");
    }
    format!(
        "{db}_{}_{}.dump",
        started_at.format(TS_FORMAT),
        kind.as_str()
    )
}

/// What a dump's file name says: database (as written in the name), start time and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDumpName {
    /// The database part of the name (made file-name safe by [`dump_file_name`]).
    pub database: String,
    /// When the dump started (UTC, whole seconds).
    pub started_at: DateTime<Utc>,
    /// Why it was taken.
    pub kind: BackupKind,
}

/// Reads a name written by [`dump_file_name`]; `None` for any other name.
pub fn parse_dump_file_name(name: &str) -> Option<ParsedDumpName> {
    let stem = name.strip_suffix(".dump")?;
    let (rest, kind) = stem.rsplit_once('_')?;
    let kind = kind.parse::<BackupKind>().ok()?;
    let (database, ts) = rest.rsplit_once('_')?;
    if database.is_empty() {
        return None;
    }
    let started_at = NaiveDateTime::parse_from_str(ts, TS_FORMAT).ok()?.and_utc();
    Some(ParsedDumpName {
        database: database.to_string(),
        started_at,
        kind,
    })
}

/// A dualkey dump found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpFileInfo {
    /// Full path.
    pub path: PathBuf,
    /// File name.
    pub file_name: String,
    /// What the name says.
    pub name: ParsedDumpName,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// A plain-SQL dump found in a backup folder (the runbook's `pg_dump > backup_pre_migration_<ts>.sql`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalBackup {
    /// Full path.
    pub path: PathBuf,
    /// File name.
    pub file_name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Last modification time.
    pub modified: DateTime<Utc>,
}

/// Regular files in `dir` (symbolic links are skipped: a link could point anywhere), with their
/// names and metadata; a missing folder is an empty one.
fn regular_files(dir: &Path) -> io::Result<Vec<(PathBuf, String, std::fs::Metadata)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let meta = match std::fs::symlink_metadata(entry.path()) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.file_type().is_file() {
            out.push((entry.path(), name, meta));
        }
    }
    Ok(out)
}

/// Plain `.sql` files (any case of the extension) in an environment's backup folder, newest first.
/// A folder that does not exist has none.
pub fn list_external(env_dir: &Path) -> io::Result<Vec<ExternalBackup>> {
    let mut out: Vec<ExternalBackup> = regular_files(env_dir)?
        .into_iter()
        .filter(|(_, name, _)| {
            name.len() > 4
                && name.is_char_boundary(name.len() - 4)
                && name[name.len() - 4..].eq_ignore_ascii_case(".sql")
        })
        .map(|(path, file_name, meta)| ExternalBackup {
            path,
            file_name,
            size_bytes: meta.len(),
            modified: meta
                .modified()
                .map(DateTime::<Utc>::from)
                .unwrap_or(DateTime::UNIX_EPOCH),
        })
        .collect();
    out.sort_by(|a, b| {
        b.modified
            .cmp(&a.modified)
            .then_with(|| b.file_name.cmp(&a.file_name))
    });
    Ok(out)
}

/// dualkey's dumps (`*.dump` with a name from [`dump_file_name`]) in an environment's backup
/// folder, newest first: for reconciling the catalog with the disk.
pub fn list_dumps(env_dir: &Path) -> io::Result<Vec<DumpFileInfo>> {
    let mut out: Vec<DumpFileInfo> = regular_files(env_dir)?
        .into_iter()
        .filter_map(|(path, file_name, meta)| {
            let name = parse_dump_file_name(&file_name)?;
            Some(DumpFileInfo {
                path,
                file_name,
                name,
                size_bytes: meta.len(),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.name
            .started_at
            .cmp(&a.name.started_at)
            .then_with(|| b.file_name.cmp(&a.file_name))
    });
    Ok(out)
}

/// Removes `*.dump.partial` files in `env_dir` not modified for `older_than`: what a bot killed
/// mid-dump (SIGKILL, power loss) leaves behind. A dump that is running keeps its `.partial`
/// fresh, so a generous `older_than` (minutes) never touches one. Returns the removed paths.
pub fn cleanup_partials(env_dir: &Path, older_than: Duration) -> io::Result<Vec<PathBuf>> {
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for (path, name, meta) in regular_files(env_dir)? {
        if !name.ends_with(&format!(".dump{PARTIAL_SUFFIX}")) {
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if age < older_than {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn dump_names_round_trip() {
        let t = Utc.with_ymd_and_hms(2024, 3, 9, 2, 0, 5).unwrap();
        for kind in BackupKind::ALL {
            let name = dump_file_name("task_flow", t, kind);
            let parsed = parse_dump_file_name(&name).unwrap();
            assert_eq!(
                parsed,
                ParsedDumpName {
                    database: "task_flow".into(),
                    started_at: t,
                    kind
                }
            );
        }
        assert_eq!(
            dump_file_name("taskflow", t, BackupKind::PreDeploy),
            "taskflow_20240309T020005Z_pre-deploy.dump"
        );
    }

    #[test]
    fn hostile_database_names_stay_in_the_folder() {
        let t = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        for (db, expected) in [
            ("../../etc/passwd", "______etc_passwd"),
            ("a/b", "a_b"),
            ("", "db"),
            (".hidden", "_hidden"),
            ("My DB;rm -rf", "My_DB_rm_-rf"),
            ("tâche", "t_che"),
        ] {
            let name = dump_file_name(db, t, BackupKind::Manual);
            assert_eq!(name, format!("{expected}_20240101T000000Z_manual.dump"));
            assert!(!name.contains('/') && !name.starts_with('.'));
        }
    }

    #[test]
    fn other_names_are_not_dumps() {
        for name in [
            "backup_pre_migration_20240101.sql",
            "db_20240101T000000Z_weekly.dump",
            "db_20241301T000000Z_manual.dump",
            "_20240101T000000Z_manual.dump",
            "db_20240101T000000Z_manual.dump.partial",
            "db_manual.dump",
        ] {
            assert_eq!(parse_dump_file_name(name), None, "{name}");
        }
    }
}
