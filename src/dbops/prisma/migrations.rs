//! The migrations folder as the Prisma CLI reads it (`listMigrations` in 6.19.3 and 7.x).
//!
//! * Every immediate subdirectory is a migration; plain files are ignored and so are symbolic
//!   links, even to directories (`Dirent.isDirectory()` is false for them). There is no name
//!   validation: a directory without `migration.sql` still counts.
//! * A folder that cannot be read lists as empty (the CLI swallows `readdir` errors), so a wrong
//!   path reads as "no migrations"; callers that want to be stricter check
//!   [`MigrationsFolder::dir_exists`].
//! * Names are sorted like JavaScript `localeCompare` (see [`super::collation`]).
//! * `migration.sql` is decoded as UTF-8 with invalid bytes replaced (what Node does), and that
//!   text is what gets checksummed and executed.
//! * `migration_lock.toml`: the first line starting with `provider`, minus a leading
//!   `provider = ` and surrounding quotes; a lock file without such a line reads as
//!   `<PROVIDER NOT FOUND>`; no lock file means no check.
//!
//! dualkey addition: `down.sql` beside `migration.sql` is the reverse script used by the `down`
//! rollback strategy.

use super::collation::compare_migration_names;
use super::error::{PrismaError, PrismaUserError};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The provider name Prisma uses for PostgreSQL, compared with `migration_lock.toml`.
pub const POSTGRESQL_PROVIDER: &str = "postgresql";

/// File name of a migration's script.
pub const MIGRATION_SCRIPT: &str = "migration.sql";

/// File name of a migration's reverse script (dualkey's `down` strategy).
pub const DOWN_SCRIPT: &str = "down.sql";

/// File name of the lock file at the top of the migrations folder.
pub const LOCK_FILE: &str = "migration_lock.toml";

/// One migration folder.
#[derive(Debug, Clone, Serialize)]
pub struct LocalMigration {
    /// The folder name, which is the migration name (`20240101000000_init`).
    pub name: String,
    /// The folder's path.
    pub path: PathBuf,
    /// `migration.sql` decoded as UTF-8-lossy, or `None` when it could not be read.
    #[serde(skip)]
    pub script: Option<String>,
    /// Whether a `down.sql` file is present.
    pub has_down_sql: bool,
}

impl LocalMigration {
    /// Prisma's checksum of `migration.sql`, if readable.
    pub fn checksum(&self) -> Option<String> {
        self.script.as_deref().map(super::checksum::render_checksum)
    }

    /// The script, or P3015 the way Prisma raises it when it needs a missing script.
    pub fn script_or_p3015(&self) -> Result<&str, PrismaUserError> {
        self.script
            .as_deref()
            .ok_or_else(|| PrismaUserError::migration_file_not_found(MIGRATION_SCRIPT))
    }

    /// Path of `down.sql` (whether or not it exists).
    pub fn down_sql_path(&self) -> PathBuf {
        self.path.join(DOWN_SCRIPT)
    }

    /// Reads `down.sql` as UTF-8-lossy; `Ok(None)` when it does not exist.
    pub fn read_down_sql(&self) -> Result<Option<String>, PrismaError> {
        let path = self.down_sql_path();
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PrismaError::Io { path, source }),
        }
    }
}

/// The migrations folder: its migrations in Prisma's order and its lock file.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationsFolder {
    /// The folder that was listed.
    pub dir: PathBuf,
    /// Whether that folder could be read at all.
    pub dir_exists: bool,
    /// `migration_lock.toml` as text, if present and readable.
    pub lock_file: Option<String>,
    /// The migrations, sorted like Prisma sorts them.
    pub migrations: Vec<LocalMigration>,
}

impl MigrationsFolder {
    /// The migration with this exact name.
    pub fn get(&self, name: &str) -> Option<&LocalMigration> {
        self.migrations.iter().find(|m| m.name == name)
    }

    /// The migration names in Prisma's order.
    pub fn names(&self) -> Vec<&str> {
        self.migrations.iter().map(|m| m.name.as_str()).collect()
    }

    /// The provider named by `migration_lock.toml`, read like the schema engine does;
    /// `None` when there is no lock file.
    pub fn lock_provider(&self) -> Option<String> {
        self.lock_file.as_deref().map(read_provider)
    }

    /// P3019 when the lock file names a provider other than `postgresql`.
    pub fn check_provider(&self) -> Result<(), PrismaUserError> {
        match self.lock_provider() {
            Some(found) if found != POSTGRESQL_PROVIDER => Err(PrismaUserError::provider_switched(
                POSTGRESQL_PROVIDER,
                &found,
            )),
            _ => Ok(()),
        }
    }
}

fn read_provider(content: &str) -> String {
    content
        .lines()
        .find(|line| line.starts_with("provider"))
        .map(|line| line.trim_start_matches("provider = ").trim_matches('"'))
        .unwrap_or("<PROVIDER NOT FOUND>")
        .to_owned()
}

/// Lists the migrations folder like the Prisma CLI (see the module docs). Never fails on a
/// missing or unreadable folder (Prisma lists it as empty); unreadable scripts are recorded as
/// `script: None` and only become P3015 when an operation needs them.
pub fn list_migrations(dir: &Path) -> MigrationsFolder {
    let lock_file = std::fs::read(dir.join(LOCK_FILE))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let (dir_exists, entries) = match std::fs::read_dir(dir) {
        Ok(rd) => (true, rd.filter_map(Result::ok).collect::<Vec<_>>()),
        Err(_) => (false, Vec::new()),
    };
    let mut migrations: Vec<LocalMigration> = entries
        .into_iter()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| {
            let path = e.path();
            let script = std::fs::read(path.join(MIGRATION_SCRIPT))
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let has_down_sql = path.join(DOWN_SCRIPT).is_file();
            LocalMigration {
                name: e.file_name().to_string_lossy().into_owned(),
                path,
                script,
                has_down_sql,
            }
        })
        .collect();
    migrations.sort_by(|a, b| compare_migration_names(&a.name, &b.name));
    MigrationsFolder {
        dir: dir.to_path_buf(),
        dir_exists,
        lock_file,
        migrations,
    }
}
