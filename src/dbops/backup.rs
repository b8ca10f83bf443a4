//! Backups of a target database: `pg_dump -Fc` to a checksummed file, verification with
//! `pg_restore`, restore, the runbook's external plain-SQL dumps, and retention.
//!
//! Everything here is a real process started with an argument vector, never a shell string. The
//! database URL is a secret: it is parsed ([`PgUrl`]) and handed to the tools as
//! `--host/--port/--username/--dbname` arguments, with the password only in the child's
//! `PGPASSWORD`; it never appears in an error, a log line or a `Debug` string.
//!
//! Layout of a backup folder (SPEC section 6):
//!
//! ```text
//! <backup_dir>/<env>/<database>_<UTC yyyymmddTHHMMSSZ>_<kind>.dump    dualkey's custom-format dumps
//! <backup_dir>/<env>/<database>_<...>_<kind>.dump.partial             only while a dump is running
//! <backup_dir>/<env>/*.sql                                            external plain-SQL dumps
//! ```
//!
//! - [`dump()`]: `pg_dump -Fc` streamed into `<file>.partial` with SHA-256 computed on the way,
//!   fsynced and renamed; a failed, killed or cancelled dump leaves no file at all.
//!   [`dump_verified`] (every backup dualkey takes) also feeds the same bytes, as they are
//!   written, to `pg_restore`, which reads every block: a dump it cannot read is not kept.
//! - [`verify()`]: the file is there, its SHA-256 matches and `pg_restore` reads all of it.
//! - [`restore()`]: the app's schema replaced by the backup's in one transaction that dualkey
//!   commits itself, only after the file (opened once, hashed while it streams) was read to its
//!   end, matched the expected SHA-256 and `pg_restore` succeeded (custom dumps decoded by
//!   `pg_restore --clean --if-exists` from stdin, plain `.sql` files as they are, psql in
//!   restricted mode), so a failed, killed or tampered restore changes nothing.
//! - [`drill()`]: a restore drill into a scratch database `<db>_dualkey_drill`, dropped after.
//!   [`ScratchKind`] / [`Scratch`]: the scratch-database machinery it shares with deploy
//!   rehearsals (`<db>_dualkey_rehearsal`), with the same safety rules.
//! - [`list_external`]: the runbook's `pg_dump > backup_pre_migration_<ts>.sql` files.
//! - [`select_for_deletion`] / [`delete_backup_files`]: retention as a pure function plus the deletion.
//! - [`PgUrl`] / [`database_name`]: URL parsing.

mod copy;
mod drill;
mod dump;
mod files;
mod restore;
mod retention;
mod tool_versions;
mod tools;
mod url;
mod verify;

use std::fmt;
use std::str::FromStr;

pub use drill::{
    drill, drop_stale, scratch_name, url_for_database, DrillError, DrillOutcome, Scratch,
    ScratchKind, DRILL_SUFFIX, REHEARSAL_SUFFIX, SCRATCH_MARK,
};
pub use dump::{dump, dump_verified, DumpError, DumpOutcome, DumpProgress, DumpRequest};
pub use files::{
    cleanup_partials, dump_file_name, list_dumps, list_external, parse_dump_file_name,
    DumpFileInfo, ExternalBackup, ParsedDumpName, PARTIAL_SUFFIX,
};
pub use restore::{
    detect_format, restore, restore_with, DumpFormat, RestoreError, RestoreOptions, RestoreOutcome,
};
pub use retention::{
    delete_backup_files, select_for_deletion, DeletedFile, RetentionEntry, RetentionPolicy,
};
pub use tool_versions::{probe_all, PgVersion, ToolProbe, ToolsCheck};
pub use tools::{describe_status, locate, ToolNotFound, DEBIAN_PG_LIB};
pub use url::{database_name, PgUrl, UrlError};
pub use verify::{sha256_file, verify, verify_archive, Verified, VerifyError};

/// Why a backup was taken; part of its file name and of the catalog entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupKind {
    /// Taken by the backup schedule (`schedule.backup_cron`).
    Scheduled,
    /// Asked for with `/db backup`.
    Manual,
    /// Taken automatically before `/db deploy` applies anything.
    PreDeploy,
    /// The safety backup before a rollback.
    PreRollback,
    /// The safety backup before a restore (or an emergency).
    PreRestore,
}

impl BackupKind {
    /// Every kind, in a stable order.
    pub const ALL: [BackupKind; 5] = [
        BackupKind::Scheduled,
        BackupKind::Manual,
        BackupKind::PreDeploy,
        BackupKind::PreRollback,
        BackupKind::PreRestore,
    ];

    /// The kind as written in file names, the catalog and chat: `scheduled`, `pre-deploy`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Scheduled => "scheduled",
            BackupKind::Manual => "manual",
            BackupKind::PreDeploy => "pre-deploy",
            BackupKind::PreRollback => "pre-rollback",
            BackupKind::PreRestore => "pre-restore",
        }
    }

    /// Whether retention may delete backups of this kind (only `scheduled` and `manual`; see
    /// [`select_for_deletion`]).
    pub fn is_subject_to_retention(self) -> bool {
        matches!(self, BackupKind::Scheduled | BackupKind::Manual)
    }
}

impl fmt::Display for BackupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the backup kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backup kind {0:?} (expected scheduled, manual, pre-deploy, pre-rollback or pre-restore)")]
pub struct UnknownBackupKind(pub String);

impl FromStr for BackupKind {
    type Err = UnknownBackupKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackupKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownBackupKind(s.chars().take(40).collect()))
    }
}

/// Checks that an environment name can be used as one folder name under the backup directory:
/// 1 to 64 characters from `A-Z a-z 0-9 _ - .`, not starting with `.`.
pub fn check_env_name(env: &str) -> Result<(), InvalidEnvName> {
    let ok = !env.is_empty()
        && env.len() <= 64
        && !env.starts_with('.')
        && env
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(InvalidEnvName(env.chars().take(64).collect()))
    }
}

/// An environment name that cannot be a backup folder name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "environment name {0:?} cannot be used as a backup folder (use letters, digits, '_', '-', '.')"
)]
pub struct InvalidEnvName(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_text_and_serde() {
        for k in BackupKind::ALL {
            assert_eq!(k.as_str().parse::<BackupKind>().unwrap(), k);
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert!("Scheduled".parse::<BackupKind>().is_err());
        assert!("pre_deploy".parse::<BackupKind>().is_err());
    }

    #[test]
    fn env_names_that_could_escape_the_backup_folder_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            ".hidden",
            "prod\0",
            "pröd",
            &"x".repeat(65),
        ] {
            assert!(check_env_name(bad).is_err(), "{bad:?}");
        }
        for good in ["production", "staging-2", "eu_west.1"] {
            assert!(check_env_name(good).is_ok(), "{good:?}");
        }
    }
}
