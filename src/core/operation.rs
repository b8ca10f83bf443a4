//! Operations (SPEC section 4): what an approved request becomes. An operation has a kind, a
//! plan (steps, warnings and the facts it was computed from, hashed into a fingerprint), and a
//! state: queued -> running (step k) -> succeeded | failed, or cancelled / interrupted.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::reply::Warning;

/// What an operation does. Stored as JSON; new kinds are added as variants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OperationKind {
    /// Run the environment's `app_stop` command.
    AppStop,
    /// Run the environment's `app_start` command.
    AppStart,
    /// An on-demand verified backup.
    Backup {
        /// Free-text note from the requester.
        note: Option<String>,
    },
    /// Pre-deploy backup, then apply pending migrations as `prisma migrate deploy` would.
    Deploy,
    /// Un-apply a migration and every migration applied after it.
    Rollback {
        /// The migration to un-apply (exists in the folder or the table).
        migration: String,
        /// `down`, `restore`, or `None` to pick the safe one.
        strategy: Option<RollbackStrategy>,
    },
    /// Restore a backup (catalog id, or an external `.sql` file name).
    Restore {
        /// Backup id or external file name.
        backup: String,
    },
    /// Prisma's `migrate resolve`.
    Resolve {
        /// The migration.
        migration: String,
        /// `true`: `--applied`; `false`: `--rolled-back`.
        applied: bool,
    },
    /// The emergency procedure as one plan.
    Emergency,
}

/// How a rollback un-applies migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RollbackStrategy {
    /// Run each migration's `down.sql`, newest first.
    Down,
    /// Restore the newest verified backup taken before the migration.
    Restore,
}

impl OperationKind {
    /// Short name used in audit lines and cards (`app-stop`).
    pub fn name(&self) -> &'static str {
        match self {
            OperationKind::AppStop => "app-stop",
            OperationKind::AppStart => "app-start",
            OperationKind::Backup { .. } => "backup",
            OperationKind::Deploy => "deploy",
            OperationKind::Rollback { .. } => "rollback",
            OperationKind::Restore { .. } => "restore",
            OperationKind::Resolve { .. } => "resolve",
            OperationKind::Emergency => "emergency",
        }
    }

    /// Whether the kind needs a two-person approval before it runs (`deploy` per
    /// `deploy_needs_approval`).
    pub fn needs_approval(&self, deploy_needs_approval: bool) -> bool {
        match self {
            OperationKind::AppStart | OperationKind::Backup { .. } => false,
            OperationKind::Deploy => deploy_needs_approval,
            OperationKind::AppStop
            | OperationKind::Rollback { .. }
            | OperationKind::Restore { .. }
            | OperationKind::Resolve { .. }
            | OperationKind::Emergency => true,
        }
    }
}

/// What a step does, as data the worker executes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum StepAction {
    /// `app_stop`.
    AppStop,
    /// `app_start`.
    AppStart,
    /// A verified backup of this kind (`manual`, `pre-deploy`, `pre-rollback`, `pre-restore`).
    Backup {
        /// Backup kind.
        kind: String,
        /// Note for the catalog.
        note: Option<String>,
    },
    /// Apply exactly these pending migrations with exactly these scripts: a different pending
    /// list or a changed `migration.sql` stops the step before anything is applied.
    Deploy {
        /// The migrations the approvers saw, in order.
        migrations: Vec<String>,
        /// The same migrations with the checksum of the `migration.sql` the approvers saw. Empty
        /// in plans stored before checksums were pinned: such a step is refused, never run
        /// unpinned.
        #[serde(default)]
        pinned: Vec<PinnedMigration>,
    },
    /// Run `down.sql` files newest first, down to `migration`.
    RollbackDown {
        /// The oldest migration to un-apply.
        migration: String,
        /// The rollback plan's fingerprint (re-checked under the lock).
        fingerprint: String,
    },
    /// Restore a backup (catalog id or external file name).
    Restore {
        /// Backup id or external file name.
        backup: String,
        /// The SHA-256 the plan was made with; the file must still have it.
        #[serde(default)]
        sha256: Option<String>,
    },
    /// `migrate resolve`.
    Resolve {
        /// The migration.
        migration: String,
        /// `--applied` when true, `--rolled-back` otherwise.
        applied: bool,
    },
    /// Mark every failed migration row rolled back.
    ClearFailed,
    /// Record the damage assessment (status, tables) in the audit trail.
    Assess,
}

impl StepAction {
    /// The action's stored name (`app-stop`, `rollback-down`): the `action` label of
    /// `dualkey_step_duration_seconds`.
    pub fn name(&self) -> &'static str {
        match self {
            StepAction::AppStop => "app-stop",
            StepAction::AppStart => "app-start",
            StepAction::Backup { .. } => "backup",
            StepAction::Deploy { .. } => "deploy",
            StepAction::RollbackDown { .. } => "rollback-down",
            StepAction::Restore { .. } => "restore",
            StepAction::Resolve { .. } => "resolve",
            StepAction::ClearFailed => "clear-failed",
            StepAction::Assess => "assess",
        }
    }
}

/// A migration as approved: its name and Prisma's checksum (SHA-256, hex) of its `migration.sql`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedMigration {
    /// The migration (folder) name.
    pub migration: String,
    /// The checksum of the script the approvers saw.
    pub checksum: String,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// Short name (`stop app`).
    pub name: String,
    /// What exactly runs (`docker compose stop backend`).
    pub detail: String,
    /// What the worker does.
    pub action: StepAction,
    /// Runs even after an earlier step failed (starting the app again after a failed restore).
    #[serde(default)]
    pub always: bool,
}

impl PlannedStep {
    /// A step that stops the operation when an earlier one failed.
    pub fn new(
        name: impl Into<String>,
        detail: impl Into<String>,
        action: StepAction,
    ) -> PlannedStep {
        PlannedStep {
            name: name.into(),
            detail: detail.into(),
            action,
            always: false,
        }
    }

    /// Marks the step to run even after a failure.
    pub fn always(mut self) -> PlannedStep {
        self.always = true;
        self
    }
}

/// A plan: computed when the request is made and again right before the first step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// One line for humans.
    pub summary: String,
    /// Steps in order.
    pub steps: Vec<PlannedStep>,
    /// Data-loss and other warnings, each with its severity (plans stored before severities
    /// hold plain strings, read back as cautions).
    pub warnings: Vec<Warning>,
    /// The facts the plan depends on (applied migrations, backup ids, app commands...).
    pub facts: Vec<String>,
    /// SHA-256 over kind, environment, steps and facts (first 16 hex digits shown). Warnings
    /// and the summary are derived from those and not hashed.
    pub fingerprint: String,
}

impl Plan {
    /// Builds a plan and computes its fingerprint.
    pub fn new(
        kind: &OperationKind,
        env: &str,
        summary: String,
        steps: Vec<PlannedStep>,
        warnings: Vec<Warning>,
        facts: Vec<String>,
    ) -> Plan {
        // Only what the plan does and the facts it rests on are hashed: warnings and the summary
        // may carry times ("taken 2h ago") that change while a request waits for its vote.
        let material = serde_json::json!({
            "kind": kind, "env": env, "steps": steps, "facts": facts,
        });
        let fingerprint = hex::encode(Sha256::digest(material.to_string().as_bytes()));
        Plan {
            summary,
            steps,
            warnings,
            facts,
            fingerprint,
        }
    }

    /// The short fingerprint shown on cards.
    pub fn short_fingerprint(&self) -> &str {
        &self.fingerprint[..16]
    }

    /// Explains how `newer` differs from `self` (for a stale-plan refusal).
    pub fn diff(&self, newer: &Plan) -> String {
        let gone: Vec<&String> = self
            .facts
            .iter()
            .filter(|f| !newer.facts.contains(f))
            .collect();
        let new: Vec<&String> = newer
            .facts
            .iter()
            .filter(|f| !self.facts.contains(f))
            .collect();
        let mut parts = Vec::new();
        if !gone.is_empty() {
            parts.push(format!(
                "no longer true: {}",
                gone.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        if !new.is_empty() {
            parts.push(format!(
                "now true: {}",
                new.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        if parts.is_empty() {
            parts.push("the steps changed".into());
        }
        parts.join(" / ")
    }
}

/// Operation states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationState {
    /// Approved (or needing no approval), waiting for the worker.
    Queued,
    /// A worker runs it; `current_step` says which step.
    Running,
    /// All steps succeeded.
    Succeeded,
    /// A step failed, or the plan changed before the first step.
    Failed,
    /// Withdrawn before it ran.
    Cancelled,
    /// The bot died while it ran; never resumed by itself.
    Interrupted,
}

impl OperationState {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::Queued => "queued",
            OperationState::Running => "running",
            OperationState::Succeeded => "succeeded",
            OperationState::Failed => "failed",
            OperationState::Cancelled => "cancelled",
            OperationState::Interrupted => "interrupted",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<OperationState> {
        Some(match s {
            "queued" => OperationState::Queued,
            "running" => OperationState::Running,
            "succeeded" => OperationState::Succeeded,
            "failed" => OperationState::Failed,
            "cancelled" => OperationState::Cancelled,
            "interrupted" => OperationState::Interrupted,
            _ => return None,
        })
    }

    /// True when no further transition is possible.
    pub fn is_final(self) -> bool {
        !matches!(self, OperationState::Queued | OperationState::Running)
    }

    /// The transitions the state machine allows.
    pub fn can_become(self, next: OperationState) -> bool {
        use OperationState::*;
        matches!(
            (self, next),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Queued, Failed)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Interrupted)
        )
    }
}

impl std::fmt::Display for OperationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OperationState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, UnknownState> {
        OperationState::parse(s).ok_or_else(|| UnknownState::new("operation", s))
    }
}

/// A text that names no state of a request or an operation (from `str::parse`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} state {text:?}")]
pub struct UnknownState {
    /// `request` or `operation`.
    pub what: &'static str,
    /// The text that was parsed.
    pub text: String,
}

impl UnknownState {
    /// The error for `text`, which names no state of a `what`.
    pub fn new(what: &'static str, text: &str) -> UnknownState {
        UnknownState {
            what,
            text: text.into(),
        }
    }
}

/// Compares with a stored name, so `op.state == "succeeded"` reads as it did with text rows.
impl PartialEq<str> for OperationState {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for OperationState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<OperationState> for str {
    fn eq(&self, other: &OperationState) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<OperationState> for &str {
    fn eq(&self, other: &OperationState) -> bool {
        *self == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_state_reads_and_compares_as_its_stored_name() {
        use OperationState::*;
        for st in [Queued, Running, Succeeded, Failed, Cancelled, Interrupted] {
            assert_eq!(st.as_str().parse::<OperationState>(), Ok(st));
            assert_eq!(st.to_string(), st.as_str());
            assert!(st == st.as_str() && *st.as_str() == st);
        }
        assert!(Succeeded != "failed");
        let e = "done".parse::<OperationState>().unwrap_err();
        assert_eq!(e.to_string(), "unknown operation state \"done\"");
    }

    #[test]
    fn a_step_actions_name_is_its_stored_tag() {
        let s = String::new;
        for a in [
            StepAction::AppStop,
            StepAction::AppStart,
            StepAction::Backup {
                kind: s(),
                note: None,
            },
            StepAction::Deploy {
                migrations: vec![],
                pinned: vec![],
            },
            StepAction::RollbackDown {
                migration: s(),
                fingerprint: s(),
            },
            StepAction::Restore {
                backup: s(),
                sha256: None,
            },
            StepAction::Resolve {
                migration: s(),
                applied: true,
            },
            StepAction::ClearFailed,
            StepAction::Assess,
        ] {
            assert_eq!(serde_json::to_value(&a).unwrap()["action"], a.name());
        }
    }

    #[test]
    fn fingerprint_changes_with_facts_and_not_otherwise() {
        let k = OperationKind::AppStop;
        let plan = |env: &str, fact: &str, warning: &str| {
            let step = vec![PlannedStep::new("stop", "x", StepAction::AppStop)];
            Plan::new(
                &k,
                env,
                "s".into(),
                step,
                vec![crate::core::reply::Warning::caution(warning)],
                vec![fact.into()],
            )
        };
        let a = plan("production", "argv=x", "taken 2m ago");
        let b = plan("production", "argv=x", "taken 5m ago");
        let c = plan("production", "argv=y", "taken 2m ago");
        let d = plan("staging", "argv=x", "taken 2m ago");
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
        assert_ne!(a.fingerprint, d.fingerprint);
        assert!(a.diff(&c).contains("argv=y"));
    }

    #[test]
    fn a_deploy_step_stored_before_checksums_reads_with_no_pins() {
        let old = r#"{"action":"deploy","migrations":["20250101000000_init"]}"#;
        let a: StepAction = serde_json::from_str(old).unwrap();
        assert_eq!(
            a,
            StepAction::Deploy {
                migrations: vec!["20250101000000_init".into()],
                pinned: vec![],
            }
        );
    }

    #[test]
    fn final_states_do_not_move() {
        use OperationState::*;
        for s in [Succeeded, Failed, Cancelled, Interrupted] {
            for n in [Queued, Running, Succeeded, Failed, Cancelled, Interrupted] {
                assert!(!s.can_become(n), "{s:?} -> {n:?}");
            }
        }
        assert!(Running.can_become(Interrupted));
        assert!(!Queued.can_become(Interrupted));
    }
}
