//! What deploy and resolve report, below both of them and below `render`: the deploy's outcome
//! and where it stopped, and which way a resolve goes.

use super::error::PrismaUserError;
use crate::dbops::sessions::SessionInfo;
use serde::Serialize;
use std::time::Duration;

/// Why a deploy stopped part-way.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DeployStopReason {
    /// The script failed (P3018); the migration's row is failed.
    ScriptFailed {
        /// The P3018 error with the PostgreSQL error.
        error: PrismaUserError,
    },
    /// The script could not be read (P3015); nothing was written for it.
    ScriptUnreadable {
        /// The P3015 error.
        error: PrismaUserError,
    },
    /// The observer asked to stop; nothing was written for `migration`.
    Observer {
        /// The observer's reason.
        message: String,
    },
    /// Every try ran out of `lock_timeout` waiting for a lock ([`DeployOptions`]): nothing of
    /// `migration` was applied and it has no `_prisma_migrations` row, so there is nothing to
    /// resolve; it is still pending.
    LockTimeout {
        /// How many times it was tried.
        tries: u32,
        /// The `lock_timeout` each try ran under.
        lock_timeout_ms: u64,
        /// The sessions that held the lock it waited for (seen from a second connection while
        /// it waited; empty when they could not be seen).
        holders: Vec<SessionInfo>,
    },
}

impl DeployStopReason {
    /// The lock-timeout text: what waited, for how long, who held the lock, and that nothing
    /// was applied.
    fn lock_timeout_text(
        migration: &str,
        tries: u32,
        lock_timeout_ms: u64,
        holders: &[SessionInfo],
    ) -> String {
        let who = if holders.is_empty() {
            "the session holding it could not be seen".to_string()
        } else {
            let list: Vec<String> = holders.iter().map(ToString::to_string).collect();
            format!("held by {}", list.join("; "))
        };
        format!(
            "{migration} could not get its lock within lock_timeout {} ({tries} {}): {who}. Nothing of it was applied and _prisma_migrations has no row for it, so there is nothing to resolve; deploy again once that session is done",
            crate::config::format_duration(Duration::from_millis(lock_timeout_ms)),
            if tries == 1 { "try" } else { "tries" },
        )
    }
}

/// Where and why a deploy stopped.
#[derive(Debug, Clone, Serialize)]
pub struct DeployStop {
    /// The migration that failed, or that was not started.
    pub migration: String,
    /// Why.
    #[serde(flatten)]
    pub reason: DeployStopReason,
}

impl DeployStop {
    /// The stop as the CLI prints it on stderr.
    pub fn cli_stderr(&self) -> String {
        match &self.reason {
            DeployStopReason::ScriptFailed { error }
            | DeployStopReason::ScriptUnreadable { error } => error.cli_stderr(),
            DeployStopReason::Observer { message } => {
                format!("Error: stopped by the caller: {message}\n")
            }
            DeployStopReason::LockTimeout { .. } => format!("Error: {}\n", self.message()),
        }
    }

    /// One line for a card or a log: Prisma's message for Prisma's stops, else dualkey's.
    pub fn message(&self) -> String {
        match &self.reason {
            DeployStopReason::ScriptFailed { error }
            | DeployStopReason::ScriptUnreadable { error } => error.message.clone(),
            DeployStopReason::Observer { message } => format!("stopped by the caller: {message}"),
            DeployStopReason::LockTimeout {
                tries,
                lock_timeout_ms,
                holders,
            } => DeployStopReason::lock_timeout_text(
                &self.migration,
                *tries,
                *lock_timeout_ms,
                holders,
            ),
        }
    }

    /// The Prisma error, when the stop is one Prisma would report.
    pub fn prisma_error(&self) -> Option<&PrismaUserError> {
        match &self.reason {
            DeployStopReason::ScriptFailed { error }
            | DeployStopReason::ScriptUnreadable { error } => Some(error),
            DeployStopReason::Observer { .. } | DeployStopReason::LockTimeout { .. } => None,
        }
    }
}

/// How a deploy runs each migration beyond what Prisma does. The default is Prisma exactly (no
/// timeouts, no retry; [`super::deploy`] and [`super::deploy_prisma_cli`] always use it).
#[derive(Debug, Clone, Copy)]
pub struct DeployOptions {
    /// `lock_timeout` of every migration statement; `None`: the server's setting.
    pub lock_timeout: Option<Duration>,
    /// `statement_timeout` of every migration statement; `None`: the server's setting.
    pub statement_timeout: Option<Duration>,
    /// Tries after the first one when a migration runs out of `lock_timeout`.
    pub lock_retries: u32,
    /// The pause before retry `n` (1-based).
    pub backoff: fn(u32) -> Duration,
    /// Under Prisma's advisory lock, before the first write: stop with
    /// [`super::PrismaError::DumpRunning`] (nothing written) when a `pg_dump` session runs on
    /// the target (closes the gap between a caller's wait for dumps and the lock).
    pub refuse_under_dump: bool,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            lock_timeout: None,
            statement_timeout: None,
            lock_retries: 0,
            backoff: |_| Duration::ZERO,
            refuse_under_dump: false,
        }
    }
}

impl DeployOptions {
    /// Whether these are Prisma's own behaviour (no timeout set by dualkey).
    pub fn is_prisma(&self) -> bool {
        self.lock_timeout.is_none() && self.statement_timeout.is_none()
    }
}

/// Result of a deploy that got past its preconditions.
#[derive(Debug, Clone, Serialize)]
pub struct DeployOutcome {
    /// Number of local migration folders.
    pub migrations_found: usize,
    /// Migrations applied by this deploy, in order.
    pub applied: Vec<String>,
    /// Set when the deploy stopped before applying everything pending.
    pub stopped: Option<DeployStop>,
}

impl DeployOutcome {
    /// True when every pending migration was applied.
    pub fn is_success(&self) -> bool {
        self.stopped.is_none()
    }
}

/// Which way to resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResolveAction {
    /// `--applied`: record as applied without running it.
    Applied,
    /// `--rolled-back`: mark the failed rows rolled back.
    RolledBack,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_timeout_names_the_holder_and_says_nothing_was_applied() {
        let stop = DeployStop {
            migration: "20250115000000_add_task_priority".into(),
            reason: DeployStopReason::LockTimeout {
                tries: 6,
                lock_timeout_ms: 5000,
                holders: vec![SessionInfo {
                    pid: 4242,
                    application: "psql".into(),
                    state: "idle in transaction".into(),
                    xact_age_s: 192,
                    query: "SELECT count(*) FROM \"Task\"".into(),
                }],
            },
        };
        assert_eq!(
            stop.message(),
            "20250115000000_add_task_priority could not get its lock within lock_timeout 5s (6 tries): held by pid 4242 (psql, idle in transaction, in a transaction for 3m12s): SELECT count(*) FROM \"Task\". Nothing of it was applied and _prisma_migrations has no row for it, so there is nothing to resolve; deploy again once that session is done"
        );
        assert!(stop.prisma_error().is_none());
        assert!(stop
            .cli_stderr()
            .starts_with("Error: 20250115000000_add_task_priority"));
    }
}
