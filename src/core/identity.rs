//! Identity: platform account -> canonical operator -> roles, from `[[operators]]`. The operator
//! id, never the platform account, is what the two-person rule compares.

use std::collections::{BTreeSet, HashMap};

use crate::config::{Role, Settings, UnknownUsers};
use crate::core::event::{Actor, Platform};

/// A resolved person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// Canonical id from config (`alice`); `None` for an unlisted person with viewer access.
    pub id: Option<String>,
    /// Effective roles.
    pub roles: BTreeSet<Role>,
}

impl Operator {
    /// True when the person may do what `role` allows. `operator` and `approver` imply viewer.
    pub fn can(&self, role: Role) -> bool {
        match role {
            Role::Viewer => !self.roles.is_empty(),
            r => self.roles.contains(&r),
        }
    }

    /// The id shown in audit lines (`?` for an unlisted viewer).
    pub fn label(&self) -> &str {
        self.id.as_deref().unwrap_or("?")
    }
}

/// Maps platform accounts to operators; fails closed.
#[derive(Debug, Clone)]
pub struct Directory {
    by_account: HashMap<(Platform, String), String>,
    roles: HashMap<String, BTreeSet<Role>>,
    unknown: UnknownUsers,
}

impl Directory {
    /// Builds the directory from validated settings. Shell accounts are operator ids.
    pub fn from_settings(s: &Settings) -> Directory {
        let mut by_account = HashMap::new();
        let mut roles = HashMap::new();
        for op in &s.operators {
            by_account.insert((Platform::Shell, op.id.clone()), op.id.clone());
            if let Some(a) = &op.slack {
                by_account.insert((Platform::Slack, a.clone()), op.id.clone());
            }
            if let Some(a) = &op.discord {
                by_account.insert((Platform::Discord, a.clone()), op.id.clone());
            }
            roles.insert(op.id.clone(), op.roles.iter().copied().collect());
        }
        Directory {
            by_account,
            roles,
            unknown: s.unknown_users,
        }
    }

    /// Resolves an actor. An unlisted account gets no roles unless `unknown_users = "viewer"`.
    pub fn resolve(&self, actor: &Actor) -> Operator {
        match self
            .by_account
            .get(&(actor.platform, actor.account.clone()))
        {
            Some(id) => Operator {
                id: Some(id.clone()),
                roles: self.roles.get(id).cloned().unwrap_or_default(),
            },
            None => Operator {
                id: None,
                roles: match self.unknown {
                    UnknownUsers::Viewer => [Role::Viewer].into_iter().collect(),
                    UnknownUsers::None => BTreeSet::new(),
                },
            },
        }
    }

    /// The chat accounts of operator `id` (Slack, Discord), for mentions on cards.
    pub fn accounts(&self, id: &str) -> Vec<(Platform, String)> {
        let mut out: Vec<(Platform, String)> = self
            .by_account
            .iter()
            .filter(|((p, _), op)| *p != Platform::Shell && op.as_str() == id)
            .map(|((p, a), _)| (*p, a.clone()))
            .collect();
        out.sort();
        out
    }

    /// True when `id` is a configured operator (for `shell --as`).
    pub fn knows(&self, id: &str) -> bool {
        self.roles.contains_key(id)
    }
}
