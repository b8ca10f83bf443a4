//! Before a restore reads a byte: the file's format (from its first bytes and its extension) and
//! whether the `psql` found can enter restricted mode.

use std::io::{self, Read};
use std::path::Path;

use super::{DumpFormat, RestoreError};
use crate::dbops::backup::tools;
use crate::dbops::backup::verify::{has_custom_magic, CUSTOM_MAGIC};

/// Tells a custom-format dump (by its `PGDMP` magic) from a plain `.sql` file (by its extension).
pub fn detect_format(path: &Path) -> Result<DumpFormat, RestoreError> {
    match has_custom_magic(path) {
        Ok(true) => return Ok(DumpFormat::Custom),
        Ok(false) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RestoreError::Missing(path.to_path_buf()))
        }
        Err(error) => {
            return Err(RestoreError::Io {
                action: "read",
                path: path.to_path_buf(),
                error,
            })
        }
    }
    format_from(false, path)
}

/// The format, given whether the file starts with the custom-format magic.
pub(super) fn format_from(custom_magic: bool, path: &Path) -> Result<DumpFormat, RestoreError> {
    if custom_magic {
        return Ok(DumpFormat::Custom);
    }
    let is_sql = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("sql"));
    if is_sql {
        Ok(DumpFormat::PlainSql)
    } else {
        Err(RestoreError::UnsupportedFormat(path.to_path_buf()))
    }
}

/// Reads up to the length of the custom-format magic from the start of `file`.
pub(super) fn read_head(file: &mut std::fs::File) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; CUSTOM_MAGIC.len()];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(n);
    Ok(head)
}

/// Whether this psql knows `\restrict` (its command help lists it).
pub(super) async fn psql_has_restrict(psql: &Path) -> Result<(), RestoreError> {
    let spawn = |error| RestoreError::Spawn {
        tool: "psql",
        error,
    };
    let help = tools::tool_command(psql)
        .arg("--help=commands")
        .output()
        .await
        .map_err(spawn)?;
    if String::from_utf8_lossy(&help.stdout).contains("\\restrict") {
        return Ok(());
    }
    let version = tools::tool_command(psql)
        .arg("--version")
        .output()
        .await
        .map_err(spawn)?;
    let version = String::from_utf8_lossy(&version.stdout)
        .trim()
        .chars()
        .take(80)
        .collect();
    Err(RestoreError::PsqlWithoutRestrict { version })
}
