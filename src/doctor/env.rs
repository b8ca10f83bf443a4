//! One environment: the database (and its TLS), the client tools against the server, the
//! migrations folder against `_prisma_migrations`, the backup folder, the app commands and the
//! health URL.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use sqlx::{ConnectOptions, Connection};

use super::{Line, CALL_TIMEOUT};
use crate::config::{redact_password_params, EnvironmentSettings};
use crate::dbops::backup::{PgUrl, PgVersion, ToolsCheck};

/// Every check of environment `name`, in order.
pub async fn checks(name: &str, e: &EnvironmentSettings) -> Vec<Line> {
    let (db_line, db) = database(name, e).await;
    let server = db.as_ref().map(|(_, v)| *v);
    vec![
        db_line,
        tools(name, e, server).await,
        migrations(name, e, db.as_ref().map(|(u, _)| u)).await,
        backup_dir(name, e),
        app_commands(name, e),
        health(name, e).await,
    ]
}

/// Connects to the database: the line, and the URL with the server version when it answered.
async fn database(name: &str, e: &EnvironmentSettings) -> (Line, Option<(SecretString, u32)>) {
    let what = format!("{name} database");
    let url = match e.database_url() {
        Ok(u) => u,
        Err(_) => {
            let var = &e.database_url_env;
            return (
                Line::fail(what, format!("{var} is not set"), format!("export {var} with the database URL (postgres://user:password@host:5432/db); environments.{name}.database_url_env names the variable")),
                None,
            );
        }
    };
    let fix = format!("check the URL in {} (host, port, user, password, database, sslmode) and that the server accepts this host", e.database_url_env);
    let tls = match PgUrl::parse(url.expose_secret()) {
        Ok(t) => t,
        Err(err) => {
            return (
                Line::fail(
                    what,
                    format!("the URL in {} is unusable: {err}", e.database_url_env),
                    fix,
                ),
                None,
            )
        }
    };
    match connect(url.expose_secret()).await {
        Err(err) => (
            Line::fail(
                what,
                format!("unreachable: {}", redact_password_params(&err)),
                fix,
            ),
            None,
        ),
        Ok((num, ssl)) => {
            let tls_text = match ssl {
                Some(v) => format!("TLS in use ({v})"),
                None => "no TLS".to_string(),
            };
            let line = Line::ok(
                what,
                format!(
                    "reachable: PostgreSQL {}, database {}, sslmode={}, {tls_text}",
                    PgVersion(num),
                    tls.database(),
                    tls.effective_ssl_mode().as_str()
                ),
            );
            (line, Some((url, num)))
        }
    }
}

/// One connection as dualkey makes them: the server version and the TLS version when the
/// session is encrypted (from `pg_stat_ssl`).
async fn connect(url: &str) -> Result<(u32, Option<String>), String> {
    let opts = crate::dbops::prisma::connect_options(url).map_err(|e| e.to_string())?;
    let mut conn = match tokio::time::timeout(CALL_TIMEOUT, opts.connect()).await {
        Err(_) => return Err(format!("no connection within {} s", CALL_TIMEOUT.as_secs())),
        Ok(r) => r.map_err(|e| e.to_string())?,
    };
    let num = conn.server_version_num();
    let ssl: Result<(bool, Option<String>), sqlx::Error> =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.close()).await;
    let num = num.ok_or("the server did not report its version")?;
    Ok((
        num,
        ssl.ok()
            .filter(|(on, _)| *on)
            .map(|(_, v)| v.unwrap_or_else(|| "?".into())),
    ))
}

/// `pg_dump`, `pg_restore`, `psql`: found, runnable, and not older than the server.
async fn tools(name: &str, e: &EnvironmentSettings, server: Option<u32>) -> Line {
    let what = format!("{name} client tools");
    let check = ToolsCheck::read(
        e.pg_bin_dir.as_deref(),
        server.map(PgVersion).ok_or_else(|| "unknown".to_string()),
    )
    .await;
    if let Some(problem) = check.problem(name) {
        let (problem, fix) = match problem.split_once(". Fix: ") {
            Some((p, f)) => (p.to_string(), f.to_string()),
            None => (problem, format!("set environments.{name}.pg_bin_dir")),
        };
        return Line::fail(what, problem, fix);
    }
    match server {
        Some(s) => Line::ok(
            what,
            format!("{} can handle PostgreSQL {}", check.summary(), PgVersion(s)),
        ),
        None => Line::warn(
            what,
            format!(
                "{} found; not compared with the server (its version is unknown)",
                check.summary()
            ),
            "",
        ),
    }
}

/// The migrations folder is readable and agrees with `_prisma_migrations`: nothing applied that
/// the folder lacks, no script edited after it was applied, no failed migration.
async fn migrations(name: &str, e: &EnvironmentSettings, url: Option<&SecretString>) -> Line {
    let what = format!("{name} migrations");
    let dir = &e.migrations_dir;
    let folder = crate::dbops::prisma::list_migrations(dir);
    if !folder.dir_exists {
        return Line::fail(what, format!("migrations_dir {} cannot be read", dir.display()), format!("set environments.{name}.migrations_dir to your prisma/migrations folder (relative paths start from the folder dualkey runs in)"));
    }
    let Some(url) = url else {
        return Line::warn(
            what,
            format!(
                "{}: {} migrations; not compared with the database (not reachable)",
                dir.display(),
                folder.migrations.len()
            ),
            "",
        );
    };
    let st = match crate::dbops::prisma::status(url.expose_secret(), dir).await {
        Ok(st) => st,
        Err(err) => {
            return Line::fail(
                what,
                format!(
                    "_prisma_migrations cannot be read: {}",
                    redact_password_params(&err.to_string())
                ),
                "check that the database user may read _prisma_migrations",
            )
        }
    };
    let mut problems = Vec::new();
    if !st.only_in_database.is_empty() {
        problems.push(format!(
            "applied in the database but missing from {}: {}",
            dir.display(),
            st.only_in_database.join(", ")
        ));
    }
    if !st.edited_after_apply.is_empty() {
        problems.push(format!(
            "migration.sql changed after it was applied (checksum mismatch): {}",
            st.edited_after_apply.join(", ")
        ));
    }
    if !st.failed.is_empty() {
        let names: Vec<&str> = st.failed.iter().map(|f| f.name.as_str()).collect();
        problems.push(format!("failed in the database: {}", names.join(", ")));
    }
    if !st.missing_script.is_empty() {
        problems.push(format!(
            "no readable migration.sql: {}",
            st.missing_script.join(", ")
        ));
    }
    if let Some(err) = &st.prisma_error {
        problems.push(
            err.to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        );
    }
    if !problems.is_empty() {
        return Line::fail(what, problems.join("; "), format!("point environments.{name}.migrations_dir at the folder this database was migrated from (the same commit); for a failed migration see `/db status {name}` and `/db resolve`"));
    }
    Line::ok(
        what,
        format!(
            "{}: {} local, {} applied, {} pending",
            dir.display(),
            st.local_count,
            st.applied.len(),
            st.deploy_would_apply.len()
        ),
    )
}

/// The backup folder (`backup_dir/<env>`, or the nearest folder above it that exists: backups
/// create it) takes a file, and has room for two of the newest backup.
fn backup_dir(name: &str, e: &EnvironmentSettings) -> Line {
    let what = format!("{name} backup_dir");
    let env_dir = e.backup_dir.join(name);
    let Some(dir) = existing_ancestor(&env_dir) else {
        return Line::fail(
            what,
            format!("no folder of {} exists", env_dir.display()),
            format!(
                "create {} or set environments.{name}.backup_dir",
                e.backup_dir.display()
            ),
        );
    };
    if let Err(err) = probe_write(&dir) {
        return Line::fail(what, format!("{} is not writable: {err}", dir.display()), format!("let the user dualkey runs as write in {} (chown/chmod), or set environments.{name}.backup_dir", dir.display()));
    }
    let free = match free_bytes(&dir) {
        Ok(f) => f,
        Err(err) => {
            return Line::warn(
                what,
                format!("{} is writable; free space unknown: {err}", dir.display()),
                "",
            )
        }
    };
    let newest = newest_backup(&env_dir);
    let place = if env_dir.is_dir() {
        env_dir.display().to_string()
    } else {
        format!(
            "{} (made by the first backup) in {}",
            env_dir.display(),
            dir.display()
        )
    };
    match newest {
        Some((file, size)) if free < size.saturating_mul(2) => Line::fail(
            what,
            format!("{} has {} free; the newest backup ({file}) is {}, and a new one needs room for twice that", dir.display(), crate::core::human::bytes(free), crate::core::human::bytes(size)),
            format!("free space on that disk (fewer backups: environments.{name}.retention_days, min_keep) or move backup_dir to a bigger one"),
        ),
        Some((file, size)) => Line::ok(what, format!("{place} writable, {} free (≥ 2 × the newest backup {file}, {})", crate::core::human::bytes(free), crate::core::human::bytes(size))),
        None => Line::ok(what, format!("{place} writable, {} free (no backup yet)", crate::core::human::bytes(free))),
    }
}

/// `path` itself or the nearest folder above it that exists.
fn existing_ancestor(path: &Path) -> Option<PathBuf> {
    let path = if path.is_relative() {
        std::env::current_dir().ok()?.join(path)
    } else {
        path.to_path_buf()
    };
    path.ancestors().find(|p| p.is_dir()).map(Path::to_path_buf)
}

/// Creates, writes and deletes a probe file in `dir`.
fn probe_write(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let probe = dir.join(format!(".dualkey-doctor-{}", std::process::id()));
    let written = std::fs::File::create_new(&probe).and_then(|mut f| {
        f.write_all(b"dualkey doctor write probe\n")?;
        f.sync_all()
    });
    let removed = std::fs::remove_file(&probe);
    written?;
    removed
}

/// Bytes available to an unprivileged user on the file system holding `dir` (`statvfs`).
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The newest backup in the folder: dualkey's newest dump, else the newest external `.sql`.
fn newest_backup(env_dir: &Path) -> Option<(String, u64)> {
    use crate::dbops::backup::{list_dumps, list_external};
    if let Some(d) = list_dumps(env_dir).ok().and_then(|l| l.into_iter().next()) {
        return Some((d.file_name, d.size_bytes));
    }
    list_external(env_dir)
        .ok()
        .and_then(|l| l.into_iter().next())
        .map(|x| (x.file_name, x.size_bytes))
}

/// `app_stop`, `app_start`, `app_status`, `app_logs`: each program exists (on `PATH`, or as a
/// path) and may be run.
fn app_commands(name: &str, e: &EnvironmentSettings) -> Line {
    let what = format!("{name} app commands");
    let set: Vec<(&str, &Vec<String>)> = [
        ("app_stop", &e.app_stop),
        ("app_start", &e.app_start),
        ("app_status", &e.app_status),
        ("app_logs", &e.app_logs),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v.as_ref()?)))
    .collect();
    if set.is_empty() {
        return Line::warn(what, "none configured: dualkey never stops or starts the app", format!("optional: set environments.{name}.app_stop and app_start (argv lists) so restores stop the app"));
    }
    let missing: Vec<String> = set
        .iter()
        .filter_map(|(k, argv)| {
            let prog = argv.first().map(String::as_str).unwrap_or("");
            (!program_found(prog)).then(|| format!("{k} `{prog}`"))
        })
        .collect();
    if missing.is_empty() {
        let progs: Vec<String> = set.iter().map(|(k, a)| format!("{k} {}", a[0])).collect();
        Line::ok(what, format!("found: {}", progs.join(", ")))
    } else {
        Line::fail(what, format!("not found or not executable: {}", missing.join(", ")), format!("install it, put it on PATH for the user dualkey runs as, or give its full path in environments.{name}"))
    }
}

/// Whether `prog` names an executable file: a path when it has a `/`, else on `PATH`.
fn program_found(prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if prog.is_empty() {
        return false;
    }
    if prog.contains('/') {
        return exec(Path::new(prog));
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| exec(&d.join(prog))))
        .unwrap_or(false)
}

/// `health_url` answers 2xx within the probe timeout.
async fn health(name: &str, e: &EnvironmentSettings) -> Line {
    let what = format!("{name} health_url");
    let Some(url) = e.health_url.as_deref().filter(|u| !u.trim().is_empty()) else {
        return Line::warn(
            what,
            "not configured: monitoring windows cannot probe the app",
            format!("optional: set environments.{name}.health_url to the app's health endpoint"),
        );
    };
    let p = crate::services::monitoring::probe(url).await;
    // A health URL may carry credentials (`https://user:token@…`, `?password=`).
    let url = crate::config::redact_url(url);
    if p.ok {
        Line::ok(what, format!("{url}: {}", p.summary))
    } else {
        Line::fail(
            what,
            format!("{url}: {}", p.summary),
            format!(
                "check that the app runs and answers there, or fix environments.{name}.health_url"
            ),
        )
    }
}
