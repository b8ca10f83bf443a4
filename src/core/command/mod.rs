//! The command registry: one file per slash subcommand, one table ([`REGISTRY`]) that drives
//! parsing, `help` and platform registration (Discord options, Slack usage).
//!
//! Parsing is strict: every token is checked against a small character set before any command
//! sees it, names must exist (environments, requests), and missing or extra arguments are
//! errors that come back with the command's usage. Nothing here runs anything.
//!
//! To add a command: write `src/core/command/NAME.rs` with a `///` usage line, an `Args`
//! struct, a `SPEC`, a strict `parse` and its `run` (mini-redis style: the file holds the whole
//! command); add it to [`REGISTRY`], [`Command`] and [`Command::run`].

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
pub mod resolve;
pub mod restore;
pub mod rollback;
pub mod status;

use crate::config::Role;

/// Longest command text accepted, in bytes.
pub const MAX_COMMAND_BYTES: usize = 1000;

/// A Discord option / Slack usage argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionSpec {
    /// Option name (lowercase), e.g. `env`.
    pub name: &'static str,
    /// One line for the platform's UI.
    pub description: &'static str,
    /// Whether it must be given.
    pub required: bool,
    /// Fixed choices, if any.
    pub choices: &'static [&'static str],
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
    /// Strict parser for the arguments after the name.
    pub parse: fn(&[&str], &ParseCtx) -> Result<Command, String>,
}

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
            | Command::Checklist(_)
            | Command::Monitor(_)
            | Command::Approvals(_)
            | Command::Cancel(_)
            | Command::Audit(_) => None,
        }
    }

    /// Runs the command: each file's own `run`.
    pub async fn run(self, inv: &crate::core::dispatch::Invocation<'_>) -> anyhow::Result<()> {
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

/// A rejected command: what was wrong and, when the command is known, its usage.
#[derive(Debug, Clone)]
pub struct ParseError {
    /// The command, when it was recognised.
    pub command: Option<&'static CommandSpec>,
    /// What was wrong.
    pub message: String,
}

impl ParseError {
    /// The text shown to the user; `slash` is the configured command (`/db`).
    pub fn render(&self, slash: &str) -> String {
        match self.command {
            Some(c) => format!("{}\nusage: {slash} {}", self.message, c.usage),
            None => format!(
                "{}\nTry `{slash} help` for the list of commands.",
                self.message
            ),
        }
    }
}

fn allowed_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '=')
}

/// Splits and checks the text after the slash command; never panics.
pub fn parse(text: &str, ctx: &ParseCtx) -> Result<(&'static CommandSpec, Command), ParseError> {
    let err = |command, message: String| ParseError { command, message };
    if text.len() > MAX_COMMAND_BYTES {
        return Err(err(
            None,
            format!(
                "command too long ({} bytes; the limit is {MAX_COMMAND_BYTES})",
                text.len()
            ),
        ));
    }
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    let Some((&name, args)) = tokens.split_first() else {
        return Err(err(None, "no command given".into()));
    };
    let spec = spec(name).ok_or_else(|| {
        let shown: String = name.chars().take(40).collect();
        err(
            None,
            format!("unknown command `{}`", shown.escape_default()),
        )
    })?;
    for t in args {
        if let Some(bad) = t.chars().find(|c| !allowed_char(*c)) {
            let shown: String = t.chars().take(40).collect();
            return Err(err(
                Some(spec),
                format!(
                    "unexpected character `{}` in `{}`",
                    bad.escape_default(),
                    shown.escape_default()
                ),
            ));
        }
        if t.contains("..") {
            return Err(err(Some(spec), format!("`{t}` is not a valid name")));
        }
    }
    (spec.parse)(args, ctx)
        .map(|c| (spec, c))
        .map_err(|m| err(Some(spec), m))
}

/// The optional `ENV` option shared by most commands.
pub const ENV_OPTION: OptionSpec = OptionSpec {
    name: "env",
    description: "environment (default: the configured one)",
    required: false,
    choices: &[],
};

/// Parses `[ENV]` and nothing else.
pub(crate) fn only_env(args: &[&str], ctx: &ParseCtx) -> Result<EnvName, String> {
    let env = ctx.env(args.first().copied())?;
    no_more(args.get(1..).unwrap_or_default())?;
    Ok(env)
}

/// Edit distance between two short strings (for "did you mean").
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Fails when arguments are left over.
pub(crate) fn no_more(rest: &[&str]) -> Result<(), String> {
    match rest.first() {
        None => Ok(()),
        Some(t) => Err(format!("unexpected argument `{t}`")),
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
            for o in s.options {
                let shown = o.name.to_uppercase();
                let in_usage =
                    s.usage.contains(&shown) || o.choices.iter().all(|c| s.usage.contains(c));
                assert!(
                    in_usage,
                    "{}: option {} missing from usage `{}`",
                    s.name, o.name, s.usage
                );
            }
            let help = help::render_all("/db");
            assert!(help.contains(s.usage), "help lacks {}", s.usage);
        }
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
        fn accepted_tokens_only_use_safe_characters(s in "[a-z ;'\"./$`|&]{0,40}") {
            if let Ok((spec, _)) = parse(&s, &ctx()) {
                prop_assert!(!s.contains(';') && !s.contains('\'') && !s.contains('"') && !s.contains('/') && !s.contains('$'));
                prop_assert!(REGISTRY.iter().any(|r| r.name == spec.name));
            }
        }
    }
}
