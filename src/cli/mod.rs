//! The command line: `dualkey [--config FILE] <serve|shell|doctor|config check|audit verify|audit export|slack manifest|discord register|...>`.
//! `--config` works before or after the subcommand. User mistakes exit with code 2 and a
//! message naming what is wrong; a broken audit chain exits with 1 (so does `audit verify --head`
//! with a head that does not match or is not a head at all), and so does `shell` when an
//! operation its input started failed (each is named on stderr).
//!
//! Output goes through `out` and `err`, never `println!`: a reader that closes the pipe
//! early (`dualkey status --format json | head -1`) ends the command quietly with exit code
//! 141, the status a shell shows for a writer cut off by SIGPIPE, instead of a panic. SIGPIPE
//! itself stays ignored, so a closed pipe to a child (`pg_restore | psql`) is an error dualkey
//! handles rather than a signal that kills it.
//!
//! Layout: the clap definitions, the output helpers, [`main`] and [`run`] here; one file per
//! group of subcommands: `serve.rs` (`serve`, `shell`), `setup.rs` (`config check`, `slack
//! manifest`, `discord register`, `doctor`), `db.rs` (`status`, `backup`, `backups`) and
//! `audit.rs` (`audit verify`, `audit export`).

mod audit;
mod db;
mod serve;
mod setup;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Settings, DEFAULT_CONFIG_PATH};

/// dualkey: the Prisma + PostgreSQL migration runbook as chat commands, behind two-person approval.
#[derive(Debug, Parser)]
#[command(name = "dualkey", version, about, long_about = None)]
pub struct Cli {
    /// Config file (default: config/dualkey.toml). Accepted before or after the subcommand.
    #[arg(long, global = true, value_name = "FILE", env = "DUALKEY_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Cmd,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the bot: state store, worker, outbox delivery and the enabled adapters, until SIGTERM or ctrl-c.
    /// On start it prints how to talk to it (each platform, this terminal, the HTTP listeners)
    /// and what is missing in the config and the environment.
    Serve {
        /// Also read commands from this terminal, as this operator (from [[operators]]), in the
        /// same process: the shell's `/db ...`, `as NAME` and `click BUTTON-ID` lines, next to
        /// the chat platforms. End of input (ctrl-d) stops serve, as ctrl-c does.
        #[arg(long, value_name = "OPERATOR")]
        shell_as: Option<String>,
    },
    /// Try dualkey locally: read `/db ...`, `as NAME` and `click BUTTON-ID` lines from stdin.
    /// Exits 1 when an operation the input started failed.
    Shell {
        /// The operator (from [[operators]]) you act as at first.
        #[arg(long = "as", value_name = "OPERATOR")]
        as_operator: String,
    },
    /// Migration status of an environment, natively (no Node). `--format prisma` prints what
    /// `prisma migrate status` prints from `N migrations found in prisma/migrations` onward, on the
    /// same streams, with the same exit code.
    Status {
        /// Environment (default: default_environment).
        #[arg(long, value_name = "ENV")]
        env: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: StatusFormat,
    },
    /// Take a verified backup now (pg_dump -Fc) and record it in the catalog.
    Backup {
        /// Environment (default: default_environment).
        #[arg(long, value_name = "ENV")]
        env: Option<String>,
        /// A note kept with the backup.
        #[arg(long)]
        note: Option<String>,
    },
    /// List the backup catalog and external .sql files.
    Backups {
        /// Environment (default: default_environment).
        #[arg(long, value_name = "ENV")]
        env: Option<String>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Slack tools.
    Slack {
        #[command(subcommand)]
        command: SlackCmd,
    },
    /// Discord tools.
    Discord {
        #[command(subcommand)]
        command: DiscordCmd,
    },
    /// Check the set-up for real (tokens, channels, databases, tools, folders), one line per
    /// check; exit 1 when any fails.
    ///
    /// Each line is `ok   WHAT: ...`, `warn WHAT: ... — fix: ...` (not configured, or not
    /// checkable) or `FAIL WHAT: PROBLEM — fix: FIX`. Exits 1 when any check fails, 0 otherwise.
    /// Reads only (a probe file in each backup folder is created and deleted); tokens and
    /// database URLs are never printed.
    ///
    /// Checks: the state store (reachable, schema migrations current); Slack when enabled (bot
    /// token via auth.test, app token and Socket Mode via apps.connections.open or the signing
    /// secret in HTTP mode, the bot's membership of each configured channel, slack.command
    /// against manifest.yml beside the config); Discord when enabled (bot token, each channel
    /// visible with View Channel, Send Messages and Embed Links, the registered command against
    /// the command table); per environment: database reachable and its TLS, pg_dump,
    /// pg_restore and psql against the server, migrations_dir against _prisma_migrations,
    /// backup_dir writable with room for twice the newest backup, app commands found,
    /// health_url answering.
    #[command(after_help = "Examples:\n  dualkey doctor\n  dualkey doctor --env staging")]
    Doctor {
        /// Check only this environment (the store, Slack and Discord are always checked).
        #[arg(long, value_name = "ENV")]
        env: Option<String>,
    },
}

/// `dualkey discord ...`
#[derive(Debug, Subcommand)]
pub enum DiscordCmd {
    /// Register the slash command (`slack.command` without the `/`, default `/db`) with its
    /// subcommands and typed options, from the same command table as `help`. A bulk overwrite:
    /// it replaces every command this application has in that scope.
    ///
    /// Global (the default without `discord.guild_id`): in every guild the bot is in; Discord
    /// clients may take a while to show changes. Guild (`--guild ID`, or `discord.guild_id`): in
    /// that guild only, updated at once; best while trying dualkey out. Needs
    /// `discord.application_id` and the bot token in the variable named by
    /// `discord.bot_token_env` (DISCORD_BOT_TOKEN). Run it again after adding an environment:
    /// the `env` choices are the configured environments.
    #[command(
        after_help = "Examples:\n  DISCORD_BOT_TOKEN=... dualkey discord register --guild 123456789012345678\n  \
                            DISCORD_BOT_TOKEN=... dualkey discord register --global"
    )]
    Register {
        /// Register in this guild (server) only; default `discord.guild_id` when it is set.
        #[arg(long, value_name = "ID", conflicts_with = "global")]
        guild: Option<String>,
        /// Register globally even when `discord.guild_id` is set.
        #[arg(long)]
        global: bool,
    },
}

/// `dualkey slack ...`
#[derive(Debug, Subcommand)]
pub enum SlackCmd {
    /// Print a Slack app manifest (YAML) for this config: the slash command from
    /// `slack.command`, the bot scopes `commands`, `chat:write`, `channels:read` and `groups:read`, interactivity for the
    /// buttons, and Socket Mode or, with `slack.mode = "http"`, the request URLs under --url.
    /// Paste it at https://api.slack.com/apps -> Create New App -> From an app manifest.
    #[command(after_help = "Examples:\n  dualkey slack manifest > manifest.yml\n  \
                            dualkey slack manifest --url https://dualkey.example.com > manifest.yml   (HTTP mode)")]
    Manifest {
        /// HTTP mode only: the public HTTPS address Slack reaches dualkey at (for example
        /// https://your.host); the manifest adds /slack/commands and /slack/interactions.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
}

/// Formats of `dualkey status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// Exactly like `prisma migrate status` (from the `N migrations found` line on).
    Prisma,
    /// The full report as JSON.
    Json,
    /// Human-readable lines, as in chat.
    Text,
}

/// `dualkey config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate the config file and say exactly which key is wrong.
    Check,
}

/// `dualkey audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Check the hash chain; exit 1 and name the first bad event when it is broken.
    Verify {
        /// A head recorded elsewhere (a log line `audit head seq=N hash=H`, a chat post), as
        /// `SEQ:HASH`: event SEQ must still have hash HASH. Catches a chain that was rewritten
        /// with every hash recomputed, which a plain verify accepts.
        /// Exits 1, naming what is wrong, when it does not match or is not a head at all.
        #[arg(long, value_name = "SEQ:HASH", allow_hyphen_values = true)]
        head: Option<String>,
    },
    /// Write every audit event as JSON lines.
    Export {
        /// Output file (default: stdout).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// A user mistake: printed without a backtrace, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Standard output was closed by its reader: the command stops quietly (exit 141).
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct OutputClosed;

/// Exit code after [`OutputClosed`]: 128 + SIGPIPE, what a shell reports for a cut-off writer.
const EXIT_OUTPUT_CLOSED: u8 = 141;

/// Maps a write error on standard output: a closed pipe becomes [`OutputClosed`].
fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        OutputClosed.into()
    } else {
        anyhow::Error::new(e).context("writing to standard output")
    }
}

/// Writes `text` and a newline to standard output and flushes it.
fn out(text: impl std::fmt::Display) -> anyhow::Result<()> {
    let mut w = std::io::stdout().lock();
    writeln!(w, "{text}")
        .and_then(|_| w.flush())
        .map_err(stdout_error)
}

/// Writes `text` to standard error; a closed standard error is ignored (nobody can read it).
fn err(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

fn pick_env(s: &Settings, env: &Option<String>) -> anyhow::Result<String> {
    let name = env.clone().unwrap_or_else(|| s.default_env().to_string());
    if !s.environments.contains_key(&name) {
        return Err(UsageError(format!(
            "unknown environment `{name}` (known: {})",
            s.environments
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    }
    Ok(name)
}

fn load(cli: &Cli) -> anyhow::Result<Settings> {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    Settings::load(&path).map_err(|e| UsageError(e.to_string()).into())
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if matches!(
        cli.command,
        Cmd::Shell { .. } | Cmd::Doctor { .. } | Cmd::Serve { shell_as: Some(_) }
    ) {
        "warn"
    } else {
        "info"
    };
    crate::telemetry::init(level);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            err(format_args!("error: cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(run(cli));
    // The exit code is decided: background work left in the runtime (a store pool's tasks, a
    // blocking task) may delay the exit a moment but never hold it, nor change the code.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(code) => code,
        Err(e) => {
            if e.downcast_ref::<OutputClosed>().is_some() {
                ExitCode::from(EXIT_OUTPUT_CLOSED)
            } else if let Some(u) = e.downcast_ref::<UsageError>() {
                err(format_args!("error: {u}"));
                ExitCode::from(2)
            } else {
                err(format_args!("error: {e:#}"));
                ExitCode::from(1)
            }
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Cmd::Config {
            command: ConfigCmd::Check,
        } => setup::config_check(&cli).await,
        Cmd::Slack {
            command: SlackCmd::Manifest { url },
        } => setup::slack_manifest(&cli, url.as_deref()),
        Cmd::Discord {
            command: DiscordCmd::Register { guild, global },
        } => setup::discord_register(&cli, guild, global).await,
        Cmd::Serve { shell_as } => serve::serve(&cli, shell_as.as_deref()).await,
        Cmd::Doctor { env } => setup::doctor(&cli, env).await,
        Cmd::Shell { as_operator } => serve::shell(&cli, as_operator).await,
        Cmd::Status { env, format } => db::status(&cli, env, format).await,
        Cmd::Backup { env, note } => db::backup(&cli, env, note).await,
        Cmd::Backups { env } => db::backups(&cli, env).await,
        Cmd::Audit { command } => audit::audit(&cli, command).await,
    }
}
