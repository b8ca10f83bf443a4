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

/// Runs `argv` with a timeout, capturing its output.
pub async fn run(argv: &[String], timeout: Duration) -> Result<AppOutput, AppError> {
    let (program, args) = argv.split_first().ok_or(AppError::Empty)?;
    let child = Command::new(program)
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
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            let err = String::from_utf8_lossy(&out.stderr);
            if !err.trim().is_empty() {
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&err);
            }
            Ok(AppOutput {
                code: out.status.code(),
                tail: tail_of(&text, 600),
            })
        }
        Ok(Err(source)) => Err(AppError::Spawn {
            program: program.clone(),
            source,
        }),
        Err(_) => Err(AppError::Timeout {
            program: program.clone(),
            secs: timeout.as_secs(),
        }),
    }
}
