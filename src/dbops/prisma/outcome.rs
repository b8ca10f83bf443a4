//! What deploy and resolve report, below both of them and below `render`: the deploy's outcome
//! and where it stopped, and which way a resolve goes.

use super::error::PrismaUserError;
use serde::Serialize;

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
        }
    }

    /// The Prisma error, when the stop is one Prisma would report.
    pub fn prisma_error(&self) -> Option<&PrismaUserError> {
        match &self.reason {
            DeployStopReason::ScriptFailed { error }
            | DeployStopReason::ScriptUnreadable { error } => Some(error),
            DeployStopReason::Observer { .. } => None,
        }
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
