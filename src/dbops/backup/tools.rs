//! Finding and starting the PostgreSQL client tools (`pg_dump`, `pg_restore`, `psql`).
//!
//! Processes are started with argument vectors only, stdin closed, `--no-password` (a tool must never
//! sit waiting for a password on a terminal) and `kill_on_drop`, so a cancelled future takes its child
//! with it. What a failed tool printed on stderr is summarised for the user with the password and any
//! `user:password@` in it redacted.
//!
//! Children die with the bot: every tool is started through [`tool_command`] (or [`command`],
//! which uses it), which on Linux asks the kernel to SIGKILL the child when its parent dies
//! (`PR_SET_PDEATHSIG`). A SIGKILLed, OOM-killed or crashed dualkey therefore leaves no
//! `pg_dump`, `pg_restore` or `psql` working on for an operation that no longer exists (and a
//! restore's `psql`, killed, never commits: see `restore.rs`).
//!
//! Invariant, because the kernel ties the parent-death signal to the *thread* that forked the
//! child, not to the process: children are spawned only from async tasks (`Command::spawn` runs
//! on the calling thread, a runtime worker that lives as long as the runtime), never from inside
//! `spawn_blocking` or `block_in_place`, whose threads exit after a few seconds idle and would take
//! the child with them. Blocking threads may read and write a child's pipes; they never start one.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use secrecy::ExposeSecret;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, Command};

use super::url::PgUrl;

/// Where dualkey looks for the PostgreSQL tools when no directory is configured and they are not
/// on `PATH`: `/usr/lib/postgresql/<major>/bin`, newest major first (Debian/Ubuntu layout).
pub const DEBIAN_PG_LIB: &str = "/usr/lib/postgresql";

/// A PostgreSQL client tool could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{tool} not found ({searched})")]
pub struct ToolNotFound {
    /// The tool's name, e.g. `pg_dump`.
    pub tool: &'static str,
    /// Where it was looked for, in words.
    pub searched: String,
}

/// Finds `tool`: in `pg_bin_dir` only when one is configured, otherwise on `PATH`, then in
/// `/usr/lib/postgresql/<major>/bin` (newest major first).
pub fn locate(tool: &'static str, pg_bin_dir: Option<&Path>) -> Result<PathBuf, ToolNotFound> {
    if let Some(dir) = pg_bin_dir {
        let p = dir.join(tool);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(ToolNotFound {
                tool,
                searched: format!("in the configured directory {}", dir.display()),
            })
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(tool);
            if is_executable(&p) {
                return Ok(p);
            }
        }
    }
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_PG_LIB)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((n, e.path().join("bin").join(tool)))
        })
        .collect();
    majors.sort_by_key(|m| std::cmp::Reverse(m.0));
    majors
        .into_iter()
        .map(|(_, p)| p)
        .find(|p| is_executable(p))
        .ok_or(ToolNotFound {
            tool,
            searched: format!("on PATH or in {DEBIAN_PG_LIB}/*/bin"),
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A command for `program` aimed at `url`'s database: connection arguments are appended by the
/// caller (after its own options), the environment is cleaned and carries the password. Built on
/// [`tool_command`], so the child dies with the bot.
pub(crate) fn command(program: &Path, url: &PgUrl) -> Command {
    let mut cmd = tool_command(program);
    for (k, v) in url.child_env() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd
}

/// The one way dualkey starts a PostgreSQL tool (also for `--help`/`--version` probes and
/// verification): stdin closed, `kill_on_drop`, and on Linux a parent-death SIGKILL (see the
/// module doc for the invariant: spawn it from an async task, never a blocking thread).
pub(crate) fn tool_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    die_with_parent(&mut cmd);
    cmd
}

/// Makes the child receive SIGKILL when the thread that spawns it (and so the bot) dies.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    // Recorded before the fork: if the parent died between fork and prctl, the child has
    // already been re-parented (to init or a subreaper) and the signal would never come.
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only calls async-signal-safe
    // functions (prctl, getppid, _exit); it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(127);
            }
            Ok(())
        });
    }
}

/// Elsewhere there is no parent-death signal; `kill_on_drop` still covers a cancelled future.
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

/// A path as a command-line operand: a relative path starting with `-` gets a `./` so that it
/// cannot be read as an option.
pub(crate) fn path_arg(p: &Path) -> PathBuf {
    if p.is_relative() && p.as_os_str().as_encoded_bytes().first() == Some(&b'-') {
        Path::new(".").join(p)
    } else {
        p.to_path_buf()
    }
}

/// Keeps at most this many bytes of a child's stderr (the tail, where the error is).
const STDERR_KEEP: usize = 64 * 1024;

/// Reads a child's stderr to the end in the background, keeping the last [`STDERR_KEEP`] bytes.
pub(crate) fn collect_stderr(stderr: Option<ChildStderr>) -> tokio::task::JoinHandle<Vec<u8>> {
    collect_tail(stderr)
}

/// Reads a child's output stream to the end in the background, keeping the last
/// [`STDERR_KEEP`] bytes.
pub(crate) fn collect_tail<R>(stderr: Option<R>) -> tokio::task::JoinHandle<Vec<u8>>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut kept = Vec::new();
        let Some(mut stderr) = stderr else {
            return kept;
        };
        let mut buf = vec![0u8; 8192];
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 2 * STDERR_KEEP {
                        kept.drain(..kept.len() - STDERR_KEEP);
                    }
                }
            }
        }
        if kept.len() > STDERR_KEEP {
            kept.drain(..kept.len() - STDERR_KEEP);
        }
        kept
    })
}

/// Waits for a child started with piped stderr and returns its status and summarised stderr.
pub(crate) async fn wait_with_stderr(
    mut child: Child,
    url: Option<&PgUrl>,
) -> std::io::Result<(ExitStatus, String)> {
    let stderr = collect_stderr(child.stderr.take());
    let status = child.wait().await?;
    let err = stderr.await.unwrap_or_default();
    Ok((status, summarize_stderr(&err, url)))
}

/// How a process ended, in words: `exit code 1` or `killed by signal 9`.
pub fn describe_status(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown exit status".to_string(),
    }
}

/// The last lines of a tool's stderr, joined with `; `, at most ~800 characters, with secrets
/// removed: the URL's password, and anything of the form `user:password@` in a URL.
pub(crate) fn summarize_stderr(stderr: &[u8], url: Option<&PgUrl>) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(6)..];
    let mut s = tail.join("; ");
    if let Some(p) = url.and_then(PgUrl::password) {
        let p = p.expose_secret();
        if p.len() >= 3 {
            s = s.replace(p, "***");
        }
    }
    s = redact_url_passwords(&s);
    const MAX: usize = 800;
    if s.len() > MAX {
        let mut cut = s.len() - MAX;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s = format!("...{}", &s[cut..]);
    }
    s
}

/// Replaces the password of every `scheme://user:password@` in `s` with `***`.
pub(crate) fn redact_url_passwords(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'')
            .unwrap_or(after.len());
        let authority = &after[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_summary_removes_secrets() {
        let url = PgUrl::parse("postgres://app:hunter22@h/db").unwrap();
        let err = b"pg_dump: error: connection to postgres://app:other-secret@h:5432/db failed\n\
                    pg_dump: detail: password hunter22 rejected\n";
        let s = summarize_stderr(err, Some(&url));
        assert!(!s.contains("hunter22"), "{s}");
        assert!(!s.contains("other-secret"), "{s}");
        assert!(s.contains("postgres://app:***@h:5432/db"), "{s}");
    }

    #[test]
    fn stderr_summary_keeps_the_tail_and_is_bounded() {
        let url = PgUrl::parse("postgres://app@h/db").unwrap();
        let mut err = String::new();
        for i in 0..100 {
            err.push_str(&format!("line {i} {}\n", "é".repeat(100)));
        }
        let s = summarize_stderr(err.as_bytes(), Some(&url));
        assert!(s.len() <= 810);
        assert!(s.ends_with(&"é".repeat(100)));
        assert!(s.contains("line 99"));
    }

    #[test]
    fn operands_starting_with_a_dash_get_a_prefix() {
        assert_eq!(path_arg(Path::new("-rf.dump")), PathBuf::from("./-rf.dump"));
        assert_eq!(path_arg(Path::new("/tmp/-x")), PathBuf::from("/tmp/-x"));
        assert_eq!(path_arg(Path::new("a.dump")), PathBuf::from("a.dump"));
    }

    /// The parent-death signal, and why children must not be spawned from short-lived threads:
    /// the kernel sends it when the *thread* that forked the child ends.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_tool_is_killed_when_the_thread_that_started_it_ends() {
        let pid = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let child = tool_command(Path::new("sleep")).arg("20").spawn().unwrap();
                let pid = child.id().unwrap();
                // Not dropped: kill_on_drop must not be what ends it.
                std::mem::forget(child);
                pid
            })
        })
        .join()
        .unwrap();
        let mut status = 0;
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        assert_eq!(r, pid as libc::pid_t);
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
            "status {status:#x}"
        );
    }

    #[test]
    fn a_configured_directory_without_the_tool_is_an_error() {
        let dir = std::env::temp_dir().join("dualkey-no-such-pg-bin");
        let err = locate("pg_dump", Some(&dir)).unwrap_err();
        assert_eq!(err.tool, "pg_dump");
    }
}
