//! Which PostgreSQL server the client tools can handle. A client dumps only servers up to its
//! own major version (`pg_dump: error: aborting because of server version mismatch`), and a
//! `pg_restore` reads only archives of a `pg_dump` no newer than itself; so `pg_dump`,
//! `pg_restore` and `psql` must each be of the server's major or newer.
//!
//! [`probe`] runs `TOOL --version` once per binary (path and modification time: a replaced
//! binary is asked again) and keeps the answer; [`ToolsCheck`] holds the answers with the
//! server's `server_version_num` and decides, without I/O, what is wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::tools::{locate, tool_command};

/// The tools every plan that backs up or restores runs.
pub const TOOLS: [&str; 3] = ["pg_dump", "pg_restore", "psql"];

/// A `--version` that has not answered after this long is reported as not runnable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A PostgreSQL version as `server_version_num`: 150020 for 15.20, 90624 for 9.6.24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgVersion(pub u32);

impl PgVersion {
    /// The major version as an ordered key (9.6 is 906, 15 is 1500).
    fn major_key(self) -> u32 {
        if self.0 >= 100_000 {
            self.0 / 10_000 * 100
        } else {
            self.0 / 100
        }
    }

    /// The major version in words: `15`, `9.6`.
    pub fn major(self) -> String {
        if self.0 >= 100_000 {
            (self.0 / 10_000).to_string()
        } else {
            format!("{}.{}", self.0 / 10_000, self.0 / 100 % 100)
        }
    }

    /// Parses the version a tool prints: `pg_dump (PostgreSQL) 15.20 (Debian 15.20-1)` gives
    /// 15.20; `18beta1` gives 18.0.
    pub fn from_version_output(out: &str) -> Option<PgVersion> {
        let line = out.lines().find(|l| l.contains("PostgreSQL"))?;
        let rest = line
            .split("PostgreSQL")
            .nth(1)?
            .trim_start_matches(')')
            .trim();
        let word = rest.split_whitespace().next()?;
        let nums: Vec<u32> = word
            .split('.')
            .map(|p| {
                let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u32>()
            })
            .take_while(Result::is_ok)
            .map(Result::unwrap_or_default)
            .collect();
        match nums.as_slice() {
            [] => None,
            [major, ..] if *major >= 10 => Some(PgVersion(
                major * 10_000 + nums.get(1).copied().unwrap_or(0),
            )),
            [major, minor, ..] => Some(PgVersion(
                major * 10_000 + minor * 100 + nums.get(2).copied().unwrap_or(0),
            )),
            [_] => None,
        }
    }
}

impl std::fmt::Display for PgVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 >= 100_000 {
            write!(f, "{}.{}", self.0 / 10_000, self.0 % 10_000)
        } else {
            write!(
                f,
                "{}.{}.{}",
                self.0 / 10_000,
                self.0 / 100 % 100,
                self.0 % 100
            )
        }
    }
}

/// What one tool answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolProbe {
    /// `pg_dump`, `pg_restore` or `psql`.
    pub tool: &'static str,
    /// Where it was found (`None`: not found).
    pub path: Option<PathBuf>,
    /// Its version, or why it is unknown (not found, cannot be run, unreadable answer).
    pub version: Result<PgVersion, String>,
}

type Cache = Mutex<HashMap<PathBuf, (Option<SystemTime>, Result<PgVersion, String>)>>;

fn cache() -> &'static Cache {
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Finds `tool` (see [`locate`]) and reads its version, asking the binary only when its path
/// or modification time is new, or when the last answer was a failure.
pub async fn probe(tool: &'static str, pg_bin_dir: Option<&Path>) -> ToolProbe {
    let path = match locate(tool, pg_bin_dir) {
        Ok(p) => p,
        Err(e) => {
            return ToolProbe {
                tool,
                path: None,
                version: Err(e.to_string()),
            }
        }
    };
    let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let cached = cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&path)
        .filter(|(t, _)| *t == mtime && mtime.is_some())
        .map(|(_, v)| v.clone());
    let version = match cached {
        Some(v) => v,
        None => {
            let v = ask_version(tool, &path).await;
            // Only an answer is kept: a failure (a timeout or a failed spawn under load) is
            // asked again next time, so it cannot refuse every plan until a restart.
            if v.is_ok() {
                cache()
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(path.clone(), (mtime, v.clone()));
            }
            v
        }
    };
    ToolProbe {
        tool,
        path: Some(path),
        version,
    }
}

/// Probes the three tools in `pg_bin_dir` (or the default places).
pub async fn probe_all(pg_bin_dir: Option<&Path>) -> Vec<ToolProbe> {
    let mut out = Vec::with_capacity(TOOLS.len());
    for t in TOOLS {
        out.push(probe(t, pg_bin_dir).await);
    }
    out
}

async fn ask_version(tool: &str, path: &Path) -> Result<PgVersion, String> {
    let run = tool_command(path).arg("--version").output();
    let out = match tokio::time::timeout(PROBE_TIMEOUT, run).await {
        Err(_) => {
            return Err(format!(
                "{} cannot be run: `--version` gave no answer within {} s",
                path.display(),
                PROBE_TIMEOUT.as_secs()
            ))
        }
        Ok(Err(e)) => return Err(format!("{} cannot be run: {e}", path.display())),
        Ok(Ok(o)) => o,
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{} cannot be run: `{tool} --version` ended with {}: {}",
            path.display(),
            super::tools::describe_status(&out.status),
            super::tools::summarize_stderr(&out.stderr, None)
        ));
    }
    PgVersion::from_version_output(&text).ok_or_else(|| {
        format!(
            "{} is not a PostgreSQL {tool}: its version cannot be read from `{}`",
            path.display(),
            text.trim().chars().take(120).collect::<String>()
        )
    })
}

/// The tools of one environment and its server, as read: decides what is wrong without I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolsCheck {
    /// The server's version, or why it could not be read.
    pub server: Result<PgVersion, String>,
    /// `pg_dump`, `pg_restore`, `psql`.
    pub tools: Vec<ToolProbe>,
}

impl ToolsCheck {
    /// The tools in `pg_bin_dir` (or the default places; versions cached per binary) against
    /// `server`, the server's version as already read, or why it is unknown.
    pub async fn read(pg_bin_dir: Option<&Path>, server: Result<PgVersion, String>) -> ToolsCheck {
        ToolsCheck {
            server,
            tools: probe_all(pg_bin_dir).await,
        }
    }

    /// What is wrong with the tools for this server, in one paragraph ending with the fix, or
    /// `None` when all is well: each tool that is missing or cannot be run (or whose version
    /// cannot be read), then those of a major older than the server's, with both versions.
    /// `env` names the setting to change. A server whose version is unknown is no problem of
    /// the tools.
    pub fn problem(&self, env: &str) -> Option<String> {
        let mut parts: Vec<String> = self
            .tools
            .iter()
            .filter_map(|t| t.version.as_ref().err().map(|e| format!("{}: {e}", t.tool)))
            .collect();
        let server = self.server.as_ref().ok();
        let old: Vec<(&ToolProbe, PgVersion)> = self
            .tools
            .iter()
            .filter_map(|t| Some((t, *t.version.as_ref().ok()?)))
            .filter(|(_, v)| server.is_some_and(|s| v.major_key() < s.major_key()))
            .collect();
        if let (Some(s), Some(_)) = (server, old.first()) {
            let dirs: Vec<Option<&Path>> = old
                .iter()
                .map(|(t, _)| t.path.as_deref().and_then(Path::parent))
                .collect();
            let names: Vec<String> = old
                .iter()
                .map(|(t, v)| match &t.path {
                    Some(p) if dirs.windows(2).any(|w| w[0] != w[1]) => {
                        format!("{} {v} ({})", t.tool, p.display())
                    }
                    _ => format!("{} {v}", t.tool),
                })
                .collect();
            let place = match dirs.first() {
                Some(Some(d)) if dirs.windows(2).all(|w| w[0] == w[1]) => {
                    format!(" in {}", d.display())
                }
                _ => String::new(),
            };
            parts.push(format!(
                "{}{place} {} older than the server of {env} (PostgreSQL {s}); a client dumps only servers up to its own major version, and restores only the dumps of a client no newer than itself",
                and_list(&names),
                if names.len() == 1 { "is" } else { "are" },
            ));
        }
        if parts.is_empty() {
            return None;
        }
        let client = match server {
            Some(s) => format!("a PostgreSQL {} client or newer", s.major()),
            None => "a PostgreSQL client of the server's major version or newer".into(),
        };
        Some(format!(
            "{}. Fix: set environments.{env}.pg_bin_dir to the bin folder of {client} (Debian/Ubuntu: {}/<major>/bin)",
            parts.join("; "),
            super::tools::DEBIAN_PG_LIB
        ))
    }

    /// The tools and their versions in one line: `pg_dump 18.6, pg_restore 18.6, psql 18.6
    /// (/opt/pg18/bin)` (the folder of the first one found).
    pub fn summary(&self) -> String {
        let versions: Vec<String> = self
            .tools
            .iter()
            .map(|t| match &t.version {
                Ok(v) => format!("{} {v}", t.tool),
                Err(_) => format!("{} ?", t.tool),
            })
            .collect();
        let dir = self
            .tools
            .iter()
            .find_map(|t| t.path.as_deref().and_then(Path::parent))
            .map(|d| format!(" ({})", d.display()))
            .unwrap_or_default();
        format!("{}{dir}", versions.join(", "))
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_of(tool: &'static str, v: u32) -> ToolProbe {
        ToolProbe {
            tool,
            path: Some(PathBuf::from(format!("/usr/lib/postgresql/15/bin/{tool}"))),
            version: Ok(PgVersion(v)),
        }
    }

    #[test]
    fn versions_are_read_from_what_the_tools_print() {
        let v = |s| PgVersion::from_version_output(s);
        assert_eq!(
            v("pg_dump (PostgreSQL) 15.20 (Debian 15.20-1.pgdg120+1)"),
            Some(PgVersion(150020))
        );
        assert_eq!(v("psql (PostgreSQL) 18.6"), Some(PgVersion(180006)));
        assert_eq!(
            v("pg_restore (PostgreSQL) 18beta1"),
            Some(PgVersion(180000))
        );
        assert_eq!(v("pg_dump (PostgreSQL) 9.6.24"), Some(PgVersion(90624)));
        assert_eq!(v("mysqldump  Ver 8.0"), None);
        assert_eq!(PgVersion(90624).major(), "9.6");
        assert_eq!(PgVersion(180006).to_string(), "18.6");
        assert!(PgVersion(90624).major_key() < PgVersion(100_000).major_key());
    }

    #[test]
    fn a_client_older_than_the_server_major_is_named_with_both_versions_and_the_fix() {
        let check = ToolsCheck {
            server: Ok(PgVersion(180006)),
            tools: vec![
                probe_of("pg_dump", 150020),
                probe_of("pg_restore", 180001),
                probe_of("psql", 190000),
            ],
        };
        assert_eq!(
            check.problem("production").unwrap(),
            "pg_dump 15.20 in /usr/lib/postgresql/15/bin is older than the server of production (PostgreSQL 18.6); a client dumps only servers up to its own major version, and restores only the dumps of a client no newer than itself. Fix: set environments.production.pg_bin_dir to the bin folder of a PostgreSQL 18 client or newer (Debian/Ubuntu: /usr/lib/postgresql/<major>/bin)"
        );
        // A newer minor of the same major is fine; so is an unknown server.
        let same = ToolsCheck {
            server: Ok(PgVersion(150025)),
            tools: vec![probe_of("pg_dump", 150020)],
        };
        assert_eq!(same.problem("production"), None);
        let unknown = ToolsCheck {
            server: Err("unreachable".into()),
            tools: vec![probe_of("pg_dump", 150020)],
        };
        assert_eq!(unknown.problem("production"), None);
    }

    #[test]
    fn a_tool_that_cannot_be_found_or_run_is_a_problem() {
        let check = ToolsCheck {
            server: Ok(PgVersion(160004)),
            tools: vec![ToolProbe {
                tool: "psql",
                path: None,
                version: Err("psql not found (in the configured directory /x)".into()),
            }],
        };
        assert_eq!(
            check.problem("staging").unwrap(),
            "psql: psql not found (in the configured directory /x). Fix: set environments.staging.pg_bin_dir to the bin folder of a PostgreSQL 16 client or newer (Debian/Ubuntu: /usr/lib/postgresql/<major>/bin)"
        );
    }

    #[tokio::test]
    async fn a_binary_that_is_not_a_postgresql_tool_is_reported_and_only_an_answer_is_cached_by_mtime(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("pg_dump");
        let write = |body: &str| {
            std::fs::write(&fake, format!("#!/bin/sh\n{body}\n")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        write("echo 'not a database tool'");
        let p = probe("pg_dump", Some(dir.path())).await;
        let err = p.version.unwrap_err();
        assert!(err.contains("is not a PostgreSQL pg_dump"), "{err}");
        // Replaced (a new mtime): asked again.
        write("echo 'pg_dump (PostgreSQL) 17.2'");
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&fake)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let p = probe("pg_dump", Some(dir.path())).await;
        assert_eq!(p.version, Ok(PgVersion(170002)));
        write("exit 3");
        std::fs::File::options()
            .write(true)
            .open(&fake)
            .unwrap()
            .set_modified(later + Duration::from_secs(5))
            .unwrap();
        let p = probe("pg_dump", Some(dir.path())).await;
        let err = p.version.unwrap_err();
        assert!(
            err.contains("cannot be run") && err.contains("exit code 3"),
            "{err}"
        );
        // A failure is not kept: the same binary (same mtime) that answers now is asked again.
        let same = later + Duration::from_secs(5);
        let set = |t: SystemTime| {
            std::fs::File::options()
                .write(true)
                .open(&fake)
                .unwrap()
                .set_modified(t)
                .unwrap()
        };
        write("echo 'pg_dump (PostgreSQL) 18.1'");
        set(same);
        let p = probe("pg_dump", Some(dir.path())).await;
        assert_eq!(p.version, Ok(PgVersion(180001)));
        // An answer is kept while the mtime stays.
        write("exit 3");
        set(same);
        let p = probe("pg_dump", Some(dir.path())).await;
        assert_eq!(p.version, Ok(PgVersion(180001)));
    }
}
