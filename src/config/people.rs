//! Who may do what: the [`Role`]s, `unknown_users`, the `[approvals]` rule and the
//! `[[operators]]` list.

use std::time::Duration;

use serde::Deserialize;

use super::HumanDuration;

/// A person's role (SPEC section 3).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only commands.
    Viewer,
    /// May request any action and run backups.
    Operator,
    /// May vote on other people's requests.
    Approver,
}

/// What people not listed in `[[operators]]` get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownUsers {
    /// Nothing at all (the default).
    #[default]
    None,
    /// Read-only commands.
    Viewer,
}

/// `[approvals]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalSettings {
    /// Votes needed besides the requester.
    pub required: u32,
    /// How long a request stays open.
    pub ttl: HumanDuration,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        ApprovalSettings {
            required: 1,
            ttl: HumanDuration(Duration::from_secs(15 * 60)),
        }
    }
}

/// One `[[operators]]` block: a person, their platform accounts and roles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSettings {
    /// Canonical identity (used for the two-person rule).
    pub id: String,
    /// Slack user id.
    #[serde(default)]
    pub slack: Option<String>,
    /// Discord user id.
    #[serde(default)]
    pub discord: Option<String>,
    /// Roles.
    pub roles: Vec<Role>,
}
