//! Approval rules (SPEC section 3) as pure functions: who may vote, when a request is complete,
//! who may cancel. The store repeats the essential conditions in its conditional write, so a
//! race between two clicks cannot get around them.

use serde::{Deserialize, Serialize};

use crate::config::Role;
use crate::core::identity::Operator;
use crate::core::operation::UnknownState;

/// States of an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for votes.
    Pending,
    /// Enough votes: an operation was queued.
    Approved,
    /// An approver said no.
    Denied,
    /// Withdrawn.
    Cancelled,
    /// Nobody voted in time.
    Expired,
}

impl RequestState {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Cancelled => "cancelled",
            RequestState::Expired => "expired",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<RequestState> {
        Some(match s {
            "pending" => RequestState::Pending,
            "approved" => RequestState::Approved,
            "denied" => RequestState::Denied,
            "cancelled" => RequestState::Cancelled,
            "expired" => RequestState::Expired,
            _ => return None,
        })
    }
}

impl std::fmt::Display for RequestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RequestState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, UnknownState> {
        RequestState::parse(s).ok_or_else(|| UnknownState::new("request", s))
    }
}

/// Compares with a stored name, so `req.state == "pending"` reads as it did with text rows.
impl PartialEq<str> for RequestState {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for RequestState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<RequestState> for str {
    fn eq(&self, other: &RequestState) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<RequestState> for &str {
    fn eq(&self, other: &RequestState) -> bool {
        *self == other.as_str()
    }
}

/// A vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Approve.
    Approve,
    /// Deny (one deny ends the request).
    Deny,
}

impl Decision {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }
}

/// The facts about a request that the rules need.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    /// Current state.
    pub state: RequestState,
    /// Operator id of the requester.
    pub requester: &'a str,
    /// Expiry, ms since the epoch.
    pub expires_at_ms: i64,
}

/// Why a vote was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteRefusal {
    /// No such request.
    #[error("there is no request `{0}`; `approvals` lists the open ones")]
    Unknown(String),
    /// Not listed or no approver role.
    #[error("you are not an approver; ask someone with the approver role")]
    NotApprover,
    /// Two-person rule.
    #[error("you asked for this yourself; another approver must vote (two-person rule)")]
    Requester,
    /// Too late.
    #[error("this request expired; ask again if it is still needed")]
    Expired,
    /// Already decided.
    #[error("this request is already {0}; votes are closed")]
    Closed(&'static str),
}

/// Decides whether `voter` may vote on a request at `now_ms`.
pub fn judge_vote(
    req: &RequestFacts<'_>,
    voter: &Operator,
    now_ms: i64,
) -> Result<(), VoteRefusal> {
    if !voter.can(Role::Approver) || voter.id.is_none() {
        return Err(VoteRefusal::NotApprover);
    }
    if voter.id.as_deref() == Some(req.requester) {
        return Err(VoteRefusal::Requester);
    }
    match req.state {
        RequestState::Pending if now_ms >= req.expires_at_ms => Err(VoteRefusal::Expired),
        RequestState::Pending => Ok(()),
        RequestState::Expired => Err(VoteRefusal::Expired),
        other => Err(VoteRefusal::Closed(other.as_str())),
    }
}

/// True when `approvals` votes (from people other than the requester) satisfy `required`.
pub fn is_complete(approvals: i64, required: i64) -> bool {
    required >= 1 && approvals >= required
}

/// Why a cancel was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelRefusal {
    /// Neither the requester nor an approver.
    #[error("only the requester or an approver may cancel a request")]
    NotAllowed,
    /// Not pending.
    #[error("this request is already {0}; nothing to cancel")]
    Closed(&'static str),
}

/// Decides whether `who` may withdraw a request.
pub fn judge_cancel(
    req: &RequestFacts<'_>,
    who: &Operator,
    now_ms: i64,
) -> Result<(), CancelRefusal> {
    let is_requester = who.id.as_deref() == Some(req.requester);
    let is_approver = who.can(Role::Approver) && who.id.is_some();
    if !is_requester && !is_approver {
        return Err(CancelRefusal::NotAllowed);
    }
    match req.state {
        RequestState::Pending if now_ms >= req.expires_at_ms => {
            Err(CancelRefusal::Closed("expired"))
        }
        RequestState::Pending => Ok(()),
        other => Err(CancelRefusal::Closed(other.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_state_reads_and_compares_as_its_stored_name() {
        for st in [
            RequestState::Pending,
            RequestState::Approved,
            RequestState::Denied,
            RequestState::Cancelled,
            RequestState::Expired,
        ] {
            assert_eq!(st.as_str().parse::<RequestState>(), Ok(st));
            assert_eq!(st.to_string(), st.as_str());
            assert!(st == st.as_str() && st.as_str() == st);
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
        assert!(RequestState::Pending != "approved");
        let e = "Pending".parse::<RequestState>().unwrap_err();
        assert_eq!(e.to_string(), "unknown request state \"Pending\"");
    }

    fn op(id: &str, roles: &[Role]) -> Operator {
        Operator {
            id: Some(id.into()),
            roles: roles.iter().copied().collect(),
        }
    }

    #[test]
    fn vote_rules_table() {
        let pending = RequestFacts {
            state: RequestState::Pending,
            requester: "alice",
            expires_at_ms: 1000,
        };
        let bob = op("bob", &[Role::Approver]);
        assert_eq!(judge_vote(&pending, &bob, 999), Ok(()));
        assert_eq!(judge_vote(&pending, &bob, 1000), Err(VoteRefusal::Expired));
        assert_eq!(
            judge_vote(&pending, &op("alice", &[Role::Approver]), 1),
            Err(VoteRefusal::Requester)
        );
        assert_eq!(
            judge_vote(&pending, &op("carol", &[Role::Viewer, Role::Operator]), 1),
            Err(VoteRefusal::NotApprover)
        );
        let unknown_viewer = Operator {
            id: None,
            roles: [Role::Approver].into_iter().collect(),
        };
        assert_eq!(
            judge_vote(&pending, &unknown_viewer, 1),
            Err(VoteRefusal::NotApprover)
        );
        for (st, name) in [
            (RequestState::Denied, "denied"),
            (RequestState::Approved, "approved"),
            (RequestState::Cancelled, "cancelled"),
        ] {
            let r = RequestFacts {
                state: st,
                ..pending.clone()
            };
            assert_eq!(judge_vote(&r, &bob, 1), Err(VoteRefusal::Closed(name)));
        }
    }

    #[test]
    fn completeness_needs_required_votes() {
        assert!(!is_complete(0, 1));
        assert!(is_complete(1, 1));
        assert!(!is_complete(1, 2));
        assert!(!is_complete(5, 0));
    }

    #[test]
    fn cancel_rules() {
        let pending = RequestFacts {
            state: RequestState::Pending,
            requester: "alice",
            expires_at_ms: 1000,
        };
        assert_eq!(
            judge_cancel(&pending, &op("alice", &[Role::Operator]), 1),
            Ok(())
        );
        assert_eq!(
            judge_cancel(&pending, &op("bob", &[Role::Approver]), 1),
            Ok(())
        );
        assert_eq!(
            judge_cancel(&pending, &op("carol", &[Role::Operator]), 1),
            Err(CancelRefusal::NotAllowed)
        );
    }
}
