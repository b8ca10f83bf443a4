//! Suggestions for an option while it is being typed (Discord autocomplete): migration names
//! from the environment's migrations folder, backup ids from the catalog, open request ids.
//! One folder read or one store query per call, so it answers well inside Discord's 3 s.

use crate::core::command::{self, EnvName};
use crate::core::context::Core;
use crate::core::dispatch::kind_name;
use crate::core::human;

/// Most suggestions a platform shows (Discord's limit).
pub const MAX_SUGGESTIONS: usize = 25;

/// Longest label or value a suggestion may have (Discord's limit, in characters).
pub const MAX_SUGGESTION_CHARS: usize = 100;

impl Core {
    /// Suggestions `(label, value)` for option `option` of `command` while `partial` is typed,
    /// newest first, at most [`MAX_SUGGESTIONS`]: every known value containing `partial`
    /// (ignoring case). `env` is the environment option given so far; a missing or unknown one
    /// means the default environment. Options without autocomplete get none.
    pub async fn complete(
        &self,
        command: &str,
        option: &str,
        partial: &str,
        env: Option<&str>,
    ) -> Vec<(String, String)> {
        let wanted = command::spec(command)
            .and_then(|s| s.options.iter().find(|o| o.name == option))
            .is_some_and(|o| o.autocomplete);
        if !wanted {
            return Vec::new();
        }
        let env = self
            .parse_ctx_envs()
            .env(env)
            .unwrap_or_else(|_| EnvName(self.settings.default_env().to_string()))
            .0;
        let needle = partial.trim().to_lowercase();
        let matches = |v: &str| v.to_lowercase().contains(&needle);
        let candidates: Vec<(String, String)> = match option {
            "migration" => self.migration_candidates(&env, &matches),
            "backup" => self.backup_candidates(&env, &matches).await,
            "request" => self.request_candidates(&matches).await,
            _ => Vec::new(),
        };
        candidates
            .into_iter()
            .filter(|(_, v)| v.chars().count() <= MAX_SUGGESTION_CHARS)
            .map(|(l, v)| (l.chars().take(MAX_SUGGESTION_CHARS).collect(), v))
            .take(MAX_SUGGESTIONS)
            .collect()
    }

    /// Migration names of `env`'s folder that `matches`, newest first.
    fn migration_candidates(
        &self,
        env: &str,
        matches: &impl Fn(&str) -> bool,
    ) -> Vec<(String, String)> {
        let Some(e) = self.settings.environments.get(env) else {
            return Vec::new();
        };
        // Folder names start with their timestamp: reverse order is newest first.
        self.facts
            .migration_names(&e.migrations_dir)
            .into_iter()
            .rev()
            .filter(|n| matches(n))
            .map(|n| (n.clone(), n))
            .collect()
    }

    /// Good, undeleted backups of `env` whose id `matches`, labelled with kind, age, size and
    /// note.
    async fn backup_candidates(
        &self,
        env: &str,
        matches: &(impl Fn(&str) -> bool + Sync),
    ) -> Vec<(String, String)> {
        match self.store.list_backups(env).await {
            Ok(rows) => {
                let now = self.clock.now_ms();
                rows.into_iter()
                    .filter(|b| b.state == "ok" && b.deleted_at.is_none() && matches(&b.id))
                    .map(|b| {
                        let mut label = format!(
                            "{} · {} · {} ago",
                            b.id,
                            b.kind,
                            human::age(now - b.started_at)
                        );
                        if let Some(n) = b.size_bytes {
                            label.push_str(&format!(" · {}", human::bytes(n.max(0) as u64)));
                        }
                        if let Some(note) = b.note.as_deref().filter(|n| !n.is_empty()) {
                            label.push_str(&format!(" · {note}"));
                        }
                        (label, b.id)
                    })
                    .collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, "autocomplete: cannot list backups");
                Vec::new()
            }
        }
    }

    /// Pending requests whose id `matches`, newest first, labelled with kind, environment and
    /// requester.
    async fn request_candidates(
        &self,
        matches: &(impl Fn(&str) -> bool + Sync),
    ) -> Vec<(String, String)> {
        match self
            .store
            .list_requests(Some(crate::core::approval::RequestState::Pending), 200)
            .await
        {
            Ok(mut rows) => {
                rows.sort_by_key(|r| std::cmp::Reverse(r.created_at));
                rows.into_iter()
                    .filter(|r| matches(&r.id))
                    .map(|r| {
                        let label = format!(
                            "{} · {} in {} · by {}",
                            r.id,
                            kind_name(&r.kind_json),
                            r.env,
                            r.requester
                        );
                        (label, r.id)
                    })
                    .collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, "autocomplete: cannot list requests");
                Vec::new()
            }
        }
    }

    /// The environment names a command may name (no migrations folder read).
    fn parse_ctx_envs(&self) -> command::ParseCtx {
        command::ParseCtx {
            envs: self.settings.environments.keys().cloned().collect(),
            default_env: self.settings.default_env().to_string(),
            migrations: Default::default(),
        }
    }
}
