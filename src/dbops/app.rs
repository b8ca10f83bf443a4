//! The configured app commands (`app_stop`, `app_start`, `app_status`, `app_logs`): real
//! processes started from argument vectors taken from the config, never from chat, with a
//! timeout after which the process is killed.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// What an app command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppOutput {
    /// Exit code (`None` when killed by a signal or the timeout).
    pub code: Option<i32>,
    /// The last lines of stdout and stderr, trimmed to a few hundred bytes.
    pub tail: String,
}

impl AppOutput {
    /// True when the command exited 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// App command failures that are not an exit code.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The argument vector is empty.
    #[error("the app command is empty; set it in the environment's config")]
    Empty,
    /// The program could not be started.
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// It ran too long and was killed.
    #[error("`{program}` did not finish within {secs}s and was killed")]
    Timeout { program: String, secs: u64 },
}

/// Keeps the last `max` bytes of `s`, on a char boundary, prefixed with `…` when cut.
pub fn tail_of(s: &str, max: usize) -> String {
    let s = s.trim_end();
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// The longest line [`capture`] keeps (the rest of a longer line is dropped).
pub const MAX_LINE_BYTES: usize = 4096;
/// How much of its output [`run`] reads back (its tail is then cut to a few hundred bytes).
const RUN_KEEP_BYTES: usize = 16 * 1024;

/// What [`capture`] read from a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Exit code (`None` when killed by a signal or the timeout).
    pub code: Option<i32>,
    /// The last lines of stdout and stderr together, in the order they were read, at most the
    /// `keep_bytes` given to [`capture`].
    pub lines: Vec<String>,
    /// The timeout hit: the command was killed, and `lines` is what it printed until then.
    pub timed_out: bool,
}

impl Captured {
    /// True when the command exited 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// The last lines read, at most `cap` bytes of them.
struct Ring {
    lines: std::collections::VecDeque<String>,
    bytes: usize,
    cap: usize,
}

impl Ring {
    fn push(&mut self, raw: &[u8]) {
        let line = String::from_utf8_lossy(raw).trim_end().to_string();
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > self.cap && self.lines.len() > 1 {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len() + 1;
            }
        }
    }
}

/// Reads `r` to its end, pushing each line into `ring` as it comes (a line longer than
/// [`MAX_LINE_BYTES`] is cut), so nothing but the ring's bound is held in memory.
async fn pump<R: tokio::io::AsyncRead + Unpin>(r: Option<R>, ring: &std::sync::Mutex<Ring>) {
    use tokio::io::AsyncReadExt as _;
    let Some(mut r) = r else { return };
    let mut buf = vec![0u8; 8192];
    let mut partial: Vec<u8> = Vec::new();
    let push = |line: &[u8]| ring.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut rest = &buf[..n];
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            let room = MAX_LINE_BYTES.saturating_sub(partial.len());
            partial.extend_from_slice(&rest[..i.min(room)]);
            push(&partial);
            partial.clear();
            rest = &rest[i + 1..];
        }
        let room = MAX_LINE_BYTES.saturating_sub(partial.len());
        partial.extend_from_slice(&rest[..rest.len().min(room)]);
    }
    if !partial.is_empty() {
        push(&partial);
    }
}

/// Runs `argv`, reading its stdout and stderr at the same time into a ring of their last lines
/// (at most `keep_bytes`), so a command that prints a lot (`kubectl logs` without `--tail`)
/// costs no more memory than that. When `timeout` hits (a command that never ends, such as
/// `kubectl logs -f`), the command is killed and what it printed until then is kept.
pub async fn capture(
    argv: &[String],
    timeout: Duration,
    keep_bytes: usize,
) -> Result<Captured, AppError> {
    let (program, args) = argv.split_first().ok_or(AppError::Empty)?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| AppError::Spawn {
            program: program.clone(),
            source,
        })?;
    let ring = std::sync::Mutex::new(Ring {
        lines: Default::default(),
        bytes: 0,
        cap: keep_bytes.max(1),
    });
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let work = async {
        tokio::join!(pump(stdout, &ring), pump(stderr, &ring));
        child.wait().await
    };
    let (code, timed_out) = match tokio::time::timeout(timeout, work).await {
        Ok(Ok(status)) => (status.code(), false),
        Ok(Err(source)) => {
            return Err(AppError::Spawn {
                program: program.clone(),
                source,
            })
        }
        Err(_) => {
            // Kills and reaps it; what was read stays in the ring.
            let _ = child.kill().await;
            (None, true)
        }
    };
    let lines = ring
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .lines
        .into();
    Ok(Captured {
        code,
        lines,
        timed_out,
    })
}

/// Runs `argv` with a timeout, capturing its output (bounded, see [`capture`]); killed at the
/// timeout, which is an error here.
pub async fn run(argv: &[String], timeout: Duration) -> Result<AppOutput, AppError> {
    let c = capture(argv, timeout, RUN_KEEP_BYTES).await?;
    if c.timed_out {
        return Err(AppError::Timeout {
            program: argv[0].clone(),
            secs: timeout.as_secs(),
        });
    }
    Ok(AppOutput {
        code: c.code,
        tail: tail_of(&c.lines.join("\n"), 600),
    })
}
