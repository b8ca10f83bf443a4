//! The command registry: one file per slash subcommand, one table ([`REGISTRY`]) that drives
//! parsing, `help` and platform registration (Discord options, Slack usage).
//!
//! Parsing is strict: every token is checked against a small character set before any command
//! sees it, names must exist (environments, requests), and missing or extra arguments are
//! errors that come back with the command's usage. Nothing here runs anything.
//!
//! A command arrives as text (Slack, the shell: `rollback X staging`) or as a subcommand with
//! named options (Discord: `rollback migration:X env:staging`). The text form's words are first
//! named by the command's `words` (its positional grammar only); from there both forms take the
//! same road: [`check_options`] (known names, safe words, fixed choices, integer ranges,
//! required options) and the command's `from_options` (environments, migrations, backup and
//! request ids through [`ParseCtx`], [`BackupId::parse`], [`RequestId::parse`]). So the two
//! forms cannot disagree, and options are never joined into a text line and parsed again.
//!
//! To add a command: write `src/core/command/NAME.rs` with a `///` usage line, an `Args`
//! struct, a `SPEC` (its options must agree with the usage line; a test checks), `words`,
//! `from_options` and its `run` (mini-redis style: the file holds the whole command); add it to
//! [`REGISTRY`], [`Command`] and [`Command::run`].

pub mod app;
pub mod approvals;
pub mod audit;
pub mod backup;
pub mod backups;
pub mod cancel;
pub mod checklist;
pub mod deploy;
pub mod emergency;
pub mod help;
pub mod monitor;
pub mod rehearse;
pub mod resolve;
pub mod restore;
pub mod rollback;
pub mod status;

mod parser;

pub use parser::{check_options, parse, parse_options, Options, ParseError};
pub(crate) use parser::{edit_distance, env_words, named, no_more};

use crate::config::Role;

/// Longest command text accepted, in bytes.
pub const MAX_COMMAND_BYTES: usize = 1000;

/// How an option's value is typed (Discord option type; Slack and the shell take words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionKind {
    /// One word (Discord STRING, type 3).
    String,
    /// A whole number (Discord INTEGER, type 4), within the option's `range` when it has one.
    Integer,
    /// Free words, the rest of a text command (Discord STRING): each word is checked like a
    /// token and the words are joined by one space.
    Words,
}

/// Where an option's choices come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choices {
    /// Any value (checked by the command).
    Any,
    /// A fixed list, named in the usage text (`applied|rolled-back`).
    Fixed(&'static [&'static str]),
    /// The configured environments (filled in at registration time).
    Environments,
    /// The command names of [`REGISTRY`].
    Commands,
}

/// A Discord option / Slack usage argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionSpec {
    /// Option name (lowercase), e.g. `env`.
    pub name: &'static str,
    /// One line for the platform's UI.
    pub description: &'static str,
    /// Whether it must be given.
    pub required: bool,
    /// Value type.
    pub kind: OptionKind,
    /// Allowed values, if restricted.
    pub choices: Choices,
    /// Whether the platform asks dualkey for suggestions while it is typed
    /// ([`crate::core::context::Core::complete`]).
    pub autocomplete: bool,
    /// Inclusive bounds of an [`OptionKind::Integer`].
    pub range: Option<(i64, i64)>,
}

impl OptionSpec {
    /// An optional one-word string option with no choices and no autocomplete.
    pub const fn string(name: &'static str, description: &'static str) -> OptionSpec {
        OptionSpec {
            name,
            description,
            required: false,
            kind: OptionKind::String,
            choices: Choices::Any,
            autocomplete: false,
            range: None,
        }
    }

    /// The same option, required.
    pub const fn required(mut self) -> OptionSpec {
        self.required = true;
        self
    }

    /// The same option, restricted to `choices`.
    pub const fn choices(mut self, choices: Choices) -> OptionSpec {
        self.choices = choices;
        self
    }

    /// The same option, answered by autocomplete.
    pub const fn autocomplete(mut self) -> OptionSpec {
        self.autocomplete = true;
        self
    }

    /// The fixed choices, if any.
    pub fn fixed_choices(&self) -> &'static [&'static str] {
        match self.choices {
            Choices::Fixed(c) => c,
            _ => &[],
        }
    }
}

/// One row of the command table.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    /// Subcommand name.
    pub name: &'static str,
    /// Usage after the slash command (`app stop|start|status [ENV]`).
    pub usage: &'static str,
    /// One line.
    pub summary: &'static str,
    /// Role needed to run it (requesting a destructive action needs `operator`; voting is
    /// checked separately).
    pub role: Role,
    /// Options, in order, for platform registration.
    pub options: &'static [OptionSpec],
    /// Names the words of a text command (Slack, the shell) by position: the words after the
    /// name become the same named options a Discord interaction carries. Only the grammar of
    /// the text form lives here; every value is checked by [`check_options`] and `from_options`.
    pub words: fn(&[&str], &ParseCtx) -> Result<Named, String>,
    /// Builds the command from checked, named options (both forms end here).
    pub from_options: fn(&Options, &ParseCtx) -> Result<Command, String>,
}

/// Option names and values as given, in order (`[("migration", "2024…"), ("env", "staging")]`).
pub type Named = Vec<(String, String)>;

/// Everything a parser may check names against.
#[derive(Debug, Clone)]
pub struct ParseCtx {
    /// Configured environment names.
    pub envs: Vec<String>,
    /// The environment used when none is named.
    pub default_env: String,
    /// Each environment's migrations folder and the migration (folder) names in it, read by
    /// the facts port when the command is parsed.
    pub migrations: std::collections::BTreeMap<
        String,
        (std::path::PathBuf, std::collections::BTreeSet<String>),
    >,
}

impl ParseCtx {
    /// Parses an optional environment argument: it must be a configured environment.
    pub fn env(&self, tok: Option<&str>) -> Result<EnvName, String> {
        match tok {
            None => Ok(EnvName(self.default_env.clone())),
            Some(t) if self.envs.iter().any(|e| e == t) => Ok(EnvName(t.to_string())),
            Some(t) => Err(format!(
                "unknown environment `{t}` (known: {})",
                self.envs.join(", ")
            )),
        }
    }
}

impl ParseCtx {
    /// A migration name that exists as a folder in `env`'s migrations folder.
    pub fn migration(&self, env: &EnvName, tok: &str) -> Result<MigrationName, String> {
        let (dir, names) = self
            .migrations
            .get(&env.0)
            .ok_or_else(|| format!("unknown environment `{}`", env.0))?;
        if names.contains(tok) {
            Ok(MigrationName(tok.to_string()))
        } else {
            Err(format!(
                "there is no migration `{tok}` in {} (`status` lists them)",
                dir.display()
            ))
        }
    }
}

/// A migration that exists in the environment's migrations folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationName(pub String);

/// A backup: a catalog id (`b` + 9 hex digits) or an external `.sql` file name. Existence is
/// checked against the catalog and the backup folder when the plan is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupId(pub String);

impl BackupId {
    /// Parses the shape of a backup id.
    pub fn parse(s: &str) -> Result<BackupId, String> {
        let catalog = s.len() == 10
            && s.starts_with('b')
            && s[1..]
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        let external = s.len() <= 200
            && s.ends_with(".sql")
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if catalog || external {
            Ok(BackupId(s.to_string()))
        } else {
            Err(format!("`{s}` is not a backup id (like b3f9a1c2b7) or an external .sql file name; `backups` lists them"))
        }
    }
}

/// A configured environment name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvName(pub String);

/// A request id of the form `r` + 9 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// Parses a request id (shape only; existence is checked against the store): `r` and 9 to
    /// 16 lowercase hex digits. dualkey makes 9; a longer, hex-only id (a mistyped or made-up
    /// one) is well-formed and gets "there is no request", not a shape error.
    pub fn parse(s: &str) -> Result<RequestId, String> {
        let ok = (10..=17).contains(&s.len())
            && s.starts_with('r')
            && s[1..]
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        if ok {
            Ok(RequestId(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is not a request id (like r3f9a1c2b7); `approvals` lists them"
            ))
        }
    }

    /// A new random id.
    pub fn generate() -> RequestId {
        RequestId(crate::core::human::new_id('r'))
    }
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `help [command]`
    Help(help::Args),
    /// `status [ENV]`
    Status(status::Args),
    /// `app stop|start|status [ENV]`
    App(app::Args),
    /// `approvals`
    Approvals(approvals::Args),
    /// `cancel REQUEST`
    Cancel(cancel::Args),
    /// `audit [N]` / `audit verify`
    Audit(audit::Args),
    /// `backup [ENV] [note...]`
    Backup(backup::Args),
    /// `backups [ENV]`
    Backups(backups::Args),
    /// `deploy [ENV]`
    Deploy(deploy::Args),
    /// `rehearse [ENV]`
    Rehearse(rehearse::Args),
    /// `rollback MIGRATION [ENV] [--strategy down|restore]`
    Rollback(rollback::Args),
    /// `restore BACKUP [ENV]`
    Restore(restore::Args),
    /// `resolve MIGRATION applied|rolled-back [ENV]`
    Resolve(resolve::Args),
    /// `emergency [ENV]`
    Emergency(emergency::Args),
    /// `checklist [ENV]`
    Checklist(checklist::Args),
    /// `monitor [ENV] [MINUTES]`
    Monitor(monitor::Args),
}

impl Command {
    /// The operation the command asks for, with its environment; `None` for read-only
    /// commands. Asking for an operation needs the operator role.
    pub fn operation(&self) -> Option<(crate::core::operation::OperationKind, &str)> {
        match self {
            Command::App(a) => app::operation(a).map(|k| (k, a.env.0.as_str())),
            Command::Backup(a) => Some((backup::operation(a), &a.env.0)),
            Command::Deploy(a) => Some((deploy::operation(a), &a.env.0)),
            Command::Rollback(a) => Some((rollback::operation(a), &a.env.0)),
            Command::Restore(a) => Some((restore::operation(a), &a.env.0)),
            Command::Resolve(a) => Some((resolve::operation(a), &a.env.0)),
            Command::Emergency(a) => Some((emergency::operation(a), &a.env.0)),
            Command::Help(_)
            | Command::Status(_)
            | Command::Backups(_)
            | Command::Rehearse(_)
            | Command::Checklist(_)
            | Command::Monitor(_)
            | Command::Approvals(_)
            | Command::Cancel(_)
            | Command::Audit(_) => None,
        }
    }

    /// Runs the command: each file's own `run`.
    pub async fn run(self, inv: &crate::core::invocation::Invocation<'_>) -> anyhow::Result<()> {
        match self {
            Command::Help(a) => help::run(inv, a).await,
            Command::Status(a) => status::run(inv, a).await,
            Command::App(a) => app::run(inv, a).await,
            Command::Approvals(a) => approvals::run(inv, a).await,
            Command::Cancel(a) => cancel::run(inv, a).await,
            Command::Audit(a) => audit::run(inv, a).await,
            Command::Backup(a) => backup::run(inv, a).await,
            Command::Backups(a) => backups::run(inv, a).await,
            Command::Deploy(a) => deploy::run(inv, a).await,
            Command::Rehearse(a) => rehearse::run(inv, a).await,
            Command::Rollback(a) => rollback::run(inv, a).await,
            Command::Restore(a) => restore::run(inv, a).await,
            Command::Resolve(a) => resolve::run(inv, a).await,
            Command::Emergency(a) => emergency::run(inv, a).await,
            Command::Checklist(a) => checklist::run(inv, a).await,
            Command::Monitor(a) => monitor::run(inv, a).await,
        }
    }
}

/// All commands, in help order.
pub const REGISTRY: &[CommandSpec] = &[
    help::SPEC,
    status::SPEC,
    backup::SPEC,
    backups::SPEC,
    deploy::SPEC,
    rehearse::SPEC,
    rollback::SPEC,
    restore::SPEC,
    resolve::SPEC,
    app::SPEC,
    emergency::SPEC,
    checklist::SPEC,
    monitor::SPEC,
    approvals::SPEC,
    cancel::SPEC,
    audit::SPEC,
];

/// Finds a command by name.
pub fn spec(name: &str) -> Option<&'static CommandSpec> {
    REGISTRY.iter().find(|s| s.name == name)
}

/// The optional `ENV` option shared by most commands.
pub const ENV_OPTION: OptionSpec =
    OptionSpec::string("env", "environment (default: the configured one)")
        .choices(Choices::Environments);

/// The usage grammar, read back for tests: each argument of a usage line (`MIGRATION`, `[ENV]`,
/// `applied|rolled-back`, `[--strategy down|restore]`, `[N|verify]`, `[NOTE...]`).
#[cfg(test)]
pub(crate) mod usage {
    use super::{CommandSpec, OptionSpec};

    /// One argument of a usage line.
    #[derive(Debug)]
    pub struct Arg {
        /// As written.
        pub shown: String,
        /// The option it names (uppercase word or `--flag`), if it names one.
        pub name: Option<String>,
        /// Not bracketed and not one of several alternatives.
        pub required: bool,
        /// Literal choices (`applied|rolled-back`).
        pub choices: Vec<&'static str>,
        /// `NOTE...`: the rest of the line.
        pub rest: bool,
    }

    /// The arguments of `usage` after the command name.
    pub fn args(usage: &'static str) -> Vec<Arg> {
        let mut groups: Vec<(&'static str, bool)> = Vec::new();
        let mut rest = usage.split_once(' ').map(|(_, r)| r).unwrap_or("").trim();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').expect("unclosed [ in usage");
                groups.push((&r[..end], false));
                rest = r[end + 1..].trim_start();
            } else {
                let end = rest.find(' ').unwrap_or(rest.len());
                groups.push((&rest[..end], true));
                rest = rest[end..].trim_start();
            }
        }
        let mut out = Vec::new();
        for (g, required) in groups {
            let (flag, body) = match g.strip_prefix("--") {
                Some(f) => {
                    let (n, b) = f.split_once(' ').expect("--flag VALUE");
                    (Some(n.to_string()), b)
                }
                None => (None, g),
            };
            let parts: Vec<&'static str> = body.split('|').collect();
            let alternatives = parts.len() > 1;
            let literals: Vec<&'static str> = parts
                .iter()
                .copied()
                .filter(|p| !p.chars().any(|c| c.is_ascii_uppercase()))
                .collect();
            for p in parts
                .iter()
                .filter(|p| p.chars().any(|c| c.is_ascii_uppercase()))
            {
                let word = p.trim_end_matches("...");
                out.push(Arg {
                    shown: g.to_string(),
                    name: Some(word.to_lowercase()),
                    required: required && !alternatives,
                    choices: Vec::new(),
                    rest: p.ends_with("..."),
                });
            }
            if !literals.is_empty() {
                let whole = literals.len() == parts.len();
                out.push(Arg {
                    shown: g.to_string(),
                    name: flag,
                    required: required && whole,
                    choices: literals,
                    rest: false,
                });
            }
        }
        out
    }

    /// The option an argument stands for: by name, or by its literal choices.
    pub fn option_for(spec: &CommandSpec, a: &Arg) -> Option<&'static OptionSpec> {
        spec.options.iter().find(|o| match &a.name {
            Some(n) => o.name == n,
            None => !a.choices.is_empty() && o.fixed_choices() == a.choices.as_slice(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx() -> ParseCtx {
        let dir = std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/taskflow/prisma/migrations"
        ));
        ParseCtx {
            envs: vec!["production".into(), "staging".into()],
            default_env: "production".into(),
            migrations: ["production", "staging"]
                .into_iter()
                .map(|e| {
                    let names = std::fs::read_dir(&dir)
                        .unwrap()
                        .filter_map(Result::ok)
                        .filter(|d| d.path().is_dir())
                        .map(|d| d.file_name().to_string_lossy().into_owned())
                        .collect();
                    (e.to_string(), (dir.clone(), names))
                })
                .collect(),
        }
    }

    #[test]
    fn usage_and_registration_options_agree() {
        for s in REGISTRY {
            assert!(
                s.usage.starts_with(s.name),
                "{} usage must start with its name",
                s.name
            );
            let args = usage::args(s.usage);
            let mut matched = Vec::new();
            for a in &args {
                let o = usage::option_for(s, a).unwrap_or_else(|| {
                    panic!("{}: `{}` in the usage has no option", s.name, a.shown)
                });
                assert_eq!(
                    o.required, a.required,
                    "{}: option {} required={} but the usage says `{}`",
                    s.name, o.name, o.required, a.shown
                );
                assert_eq!(
                    o.fixed_choices(),
                    a.choices.as_slice(),
                    "{}: choices of {}",
                    s.name,
                    o.name
                );
                assert_eq!(
                    o.kind == OptionKind::Words,
                    a.rest,
                    "{}: {} takes the rest",
                    s.name,
                    o.name
                );
                matched.push(o.name);
            }
            for o in s.options {
                assert_eq!(
                    matched.iter().filter(|m| **m == o.name).count(),
                    1,
                    "{}: option {} must appear once in the usage `{}`",
                    s.name,
                    o.name,
                    s.usage
                );
            }
            let help = help::render_all("/db");
            assert!(help.contains(s.usage), "help lacks {}", s.usage);
        }
    }

    /// The same command typed as text and sent as named options gives the same [`Command`]
    /// (or both fail), for every registry row.
    #[test]
    fn text_and_options_give_the_same_command() {
        let ctx = ctx();
        let m = "20250201000000_add_comments";
        assert!(
            ctx.migrations["production"].1.contains(m),
            "fixture changed"
        );
        let rows: &[(&str, &[(&str, &str)])] = &[
            ("help", &[]),
            ("help rollback", &[("command", "rollback")]),
            ("help nosuch", &[("command", "nosuch")]),
            ("status", &[]),
            ("status staging", &[("env", "staging")]),
            ("status nowhere", &[("env", "nowhere")]),
            ("rehearse", &[]),
            ("rehearse staging", &[("env", "staging")]),
            ("rehearse nowhere", &[("env", "nowhere")]),
            ("backup", &[]),
            ("backup staging", &[("env", "staging")]),
            (
                "backup staging before cleanup",
                &[("env", "staging"), ("note", "before cleanup")],
            ),
            ("backup before cleanup", &[("note", "before  cleanup")]),
            ("backups staging", &[("env", "staging")]),
            ("deploy", &[]),
            ("deploy staging", &[("env", "staging")]),
            ("rollback 20250201000000_add_comments", &[("migration", m)]),
            (
                "rollback 20250201000000_add_comments staging --strategy restore",
                &[
                    ("migration", m),
                    ("env", "staging"),
                    ("strategy", "restore"),
                ],
            ),
            (
                "rollback 20250201000000_add_comments --strategy=down",
                &[("strategy", "down"), ("migration", m)],
            ),
            (
                "rollback 20250201000000_add_comments --strategy up",
                &[("migration", m), ("strategy", "up")],
            ),
            (
                "rollback nosuch_migration",
                &[("migration", "nosuch_migration")],
            ),
            ("restore b0123456ab", &[("backup", "b0123456ab")]),
            (
                "restore old.sql staging",
                &[("backup", "old.sql"), ("env", "staging")],
            ),
            ("restore nonsense", &[("backup", "nonsense")]),
            (
                "resolve 20250201000000_add_comments applied",
                &[("migration", m), ("as", "applied")],
            ),
            (
                "resolve 20250201000000_add_comments rolled-back staging",
                &[("as", "rolled-back"), ("migration", m), ("env", "staging")],
            ),
            (
                "resolve 20250201000000_add_comments maybe",
                &[("migration", m), ("as", "maybe")],
            ),
            ("app stop", &[("action", "stop")]),
            (
                "app status staging",
                &[("action", "status"), ("env", "staging")],
            ),
            ("app explode", &[("action", "explode")]),
            ("emergency staging", &[("env", "staging")]),
            ("monitor", &[]),
            ("monitor 20", &[("minutes", "20")]),
            (
                "monitor staging 45",
                &[("env", "staging"), ("minutes", "45")],
            ),
            ("monitor staging 0", &[("env", "staging"), ("minutes", "0")]),
            ("checklist", &[]),
            ("approvals", &[]),
            ("cancel r0123456ab", &[("request", "r0123456ab")]),
            ("cancel r123", &[("request", "r123")]),
            ("audit", &[]),
            ("audit 5", &[("n", "5")]),
            ("audit 0", &[("n", "0")]),
            ("audit 101", &[("n", "101")]),
            ("audit verify", &[("action", "verify")]),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (text, options) in rows {
            let name = text.split(' ').next().unwrap();
            seen.insert(name);
            let options: Vec<(String, String)> = options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let a = parse(text, &ctx).map(|(s, c)| (s.name, c));
            let b = parse_options(name, &options, &ctx).map(|(s, c)| (s.name, c));
            match (&a, &b) {
                (Ok(x), Ok(y)) => assert_eq!(x, y, "{text}"),
                (Err(x), Err(y)) => {
                    assert_eq!(x.command.map(|c| c.name), Some(name), "{text}");
                    assert_eq!(y.command.map(|c| c.name), Some(name), "{text}");
                }
                _ => panic!("{text}: text gave {a:?}, options gave {b:?}"),
            }
        }
        for s in REGISTRY {
            assert!(seen.contains(s.name), "no table row for {}", s.name);
        }
    }

    #[test]
    fn structured_options_are_checked_like_text() {
        let ctx = ctx();
        let opts = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let bad: &[Case] = &[
            ("status", &[("envv", "staging")], "unknown option `envv`"),
            (
                "status",
                &[("env", "staging"), ("env", "staging")],
                "given twice",
            ),
            ("approvals", &[("env", "staging")], "takes no options"),
            (
                "rollback",
                &[("env", "staging")],
                "missing option `migration`",
            ),
            (
                "resolve",
                &[("migration", "20250201000000_add_comments")],
                "missing option `as`",
            ),
            (
                "resolve",
                &[("migration", "20250201000000_add_comments"), ("as", "done")],
                "is not applied or rolled-back",
            ),
            (
                "app",
                &[("action", "stop"), ("env", "..production")],
                "is not a valid name",
            ),
            (
                "app",
                &[("action", "stop"), ("env", "production;rm")],
                "unexpected character",
            ),
            (
                "app",
                &[("action", "stop"), ("env", "production extra")],
                "unexpected argument `extra`",
            ),
            ("status", &[("env", "")], "is empty"),
            ("cancel", &[("request", "r123")], "is not a request id"),
            (
                "restore",
                &[("backup", "../../etc/passwd")],
                "unexpected character `/`",
            ),
            (
                "rollback",
                &[("migration", "nosuch")],
                "there is no migration `nosuch`",
            ),
            (
                "status",
                &[("env", "nowhere")],
                "unknown environment `nowhere`",
            ),
            ("audit", &[("n", "5"), ("action", "verify")], "not both"),
            ("audit", &[("n", "1000")], "not a number from 1 to 100"),
            ("nosuch", &[], "unknown command `nosuch`"),
        ];
        for (name, given, want) in bad {
            let e = parse_options(name, &opts(given), &ctx).unwrap_err();
            assert!(e.message.contains(want), "{name} {given:?}: {}", e.message);
            let shown = e.render("/db");
            if *name != "nosuch" {
                assert!(shown.contains("usage: /db"), "{shown}");
            }
        }
        let long = "a".repeat(MAX_COMMAND_BYTES + 1);
        let e = parse_options("backup", &opts(&[("note", &long)]), &ctx).unwrap_err();
        assert!(e.message.contains("too long"), "{}", e.message);
    }

    #[test]
    fn hostile_input_is_rejected_with_usage() {
        let hostile = [
            "",
            "   ",
            "app stop ../production",
            "app stop production;rm",
            "app stop 'production'",
            "app stop \"production\"",
            "app stop prod`id`",
            "app stop $(id)",
            "app stop production extra",
            "app explode",
            "status ../../etc/passwd",
            "status производство",
            "status production\u{0}",
            "cancel r123",
            "cancel ../r123456789",
            "audit -5",
            "audit 99999999999999999999",
            "audit verify now",
            "drop table",
            "help nosuch",
        ];
        for h in hostile {
            assert!(parse(h, &ctx()).is_err(), "accepted hostile input {h:?}");
        }
        let long = format!("status {}", "a".repeat(10_000));
        let e = parse(&long, &ctx()).unwrap_err();
        assert!(e.message.contains("too long"));
    }

    #[test]
    fn good_input_parses() {
        assert_eq!(
            parse("status", &ctx()).unwrap().1,
            Command::Status(status::Args {
                env: EnvName("production".into())
            })
        );
        assert_eq!(
            parse("app stop staging", &ctx()).unwrap().1,
            Command::App(app::Args {
                action: app::AppAction::Stop,
                env: EnvName("staging".into())
            })
        );
        assert!(matches!(
            parse("audit verify", &ctx()).unwrap().1,
            Command::Audit(audit::Args::Verify)
        ));
        assert!(matches!(
            parse("audit 5", &ctx()).unwrap().1,
            Command::Audit(audit::Args::Tail(5))
        ));
        let typo = parse("backup prodution before cleanup", &ctx()).unwrap_err();
        assert!(
            typo.message.contains("did you mean `production`"),
            "{}",
            typo.message
        );
        assert!(matches!(
            parse("backup before cleanup", &ctx()).unwrap().1,
            Command::Backup(_)
        ));
        assert!(matches!(
            parse("cancel r0123456ab", &ctx()).unwrap().1,
            Command::Cancel(_)
        ));
    }

    proptest! {
        #[test]
        fn the_parser_never_panics(s in "\\PC{0,300}") {
            let _ = parse(&s, &ctx());
        }

        #[test]
        fn structured_options_never_panic(
            name in "[a-z]{0,10}",
            opts in proptest::collection::vec(("[a-z]{0,8}", "\\PC{0,40}"), 0..6),
        ) {
            let names = ["help", "status", "backup", "rollback", "restore", "resolve", "app", "audit", "cancel"];
            let _ = parse_options(&name, &opts, &ctx());
            for n in names {
                if let Ok((_, cmd)) = parse_options(n, &opts, &ctx()) {
                    // Whatever was accepted only carries safe characters.
                    let shown = format!("{cmd:?}");
                    prop_assert!(!shown.contains(';') && !shown.contains('/') && !shown.contains('$'), "{shown}");
                }
            }
        }

        #[test]
        fn accepted_tokens_only_use_safe_characters(s in "[a-z ;'\"./$`|&]{0,40}") {
            if let Ok((spec, _)) = parse(&s, &ctx()) {
                prop_assert!(!s.contains(';') && !s.contains('\'') && !s.contains('"') && !s.contains('/') && !s.contains('$'));
                prop_assert!(REGISTRY.iter().any(|r| r.name == spec.name));
            }
        }
    }
}
