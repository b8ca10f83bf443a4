//! The command line: `dualkey [--config FILE] <serve|shell|doctor|config check|audit verify|audit export|slack manifest|discord register|...>`.
//! `--config` works before or after the subcommand. User mistakes exit with code 2 and a
//! message naming what is wrong; a broken audit chain exits with 1 (so does `audit verify --head`
//! with a head that does not match or is not a head at all), and so does `shell` when an
//! operation its input started failed (each is named on stderr).
//!
//! Output goes through [`out`] and [`err`], never `println!`: a reader that closes the pipe
//! early (`dualkey status --format json | head -1`) ends the command quietly with exit code
//! 141, the status a shell shows for a writer cut off by SIGPIPE, instead of a panic. SIGPIPE
//! itself stays ignored, so a closed pipe to a child (`pg_restore | psql`) is an error dualkey
//! handles rather than a signal that kills it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::adapters::shell::ShellOut;
use crate::config::{Settings, DEFAULT_CONFIG_PATH};
use crate::console as shell;
use crate::core::audit::{BrokenLink, ChainHead};
use crate::core::dispatch::verify_chain;
use crate::startup::Application;

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

/// `dualkey serve [--shell-as NAME]`: the bot until ctrl-c or SIGTERM (or, with a shell, the end
/// of its input). Prints the start-up text of [`crate::welcome::serve_banner`] to stdout.
async fn serve(cli: &Cli, shell_as: Option<&str>) -> anyhow::Result<ExitCode> {
    let s = load(cli)?;
    // With a shell on this terminal the banner says them; a log keeps them otherwise.
    if shell_as.is_none() {
        for w in s.warnings() {
            tracing::warn!("{w}");
        }
    }
    let server = s.server.clone();
    let app = Application::build(s).await?;
    let core = app.core();
    if let Some(name) = shell_as {
        if !core.directory.knows(name) {
            return Err(UsageError(format!(
                "`{name}` is not an operator in the config ([[operators]] id)"
            ))
            .into());
        }
    }
    let listeners = crate::server::Listeners::bind(&server)
        .await
        .map_err(UsageError)?;
    let at = crate::welcome::Listening {
        main: listeners.main.local_addr()?,
        admin: match &listeners.admin {
            Some(l) => Some(l.local_addr()?),
            None => None,
        },
    };
    let adapters = app
        .chat_adapters()
        .map_err(|e| UsageError(format!("{e:#}")))?;
    let config = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    // Before the banner: whoever reads it may signal at once.
    let stop = shutdown_signal();
    out(format_args!(
        "{}",
        crate::welcome::serve_banner(&core.settings, &config, &at, shell_as)
    ))?;
    log_start(&at, adapters.is_empty() && shell_as.is_none());
    let Some(name) = shell_as else {
        app.run_until_stopped(adapters, Some(listeners), stop)
            .await?;
        return Ok(ExitCode::SUCCESS);
    };
    serve_with_shell(app, adapters, listeners, stop, name).await
}

/// `serve --shell-as NAME` once started: the shell as one more adapter of this process (its
/// replies print here, its loop reads this terminal). Whichever ends first, the input or a
/// signal (`stop`), stops serve; exit 1 when an operation the shell started failed.
async fn serve_with_shell(
    app: Application,
    mut adapters: Vec<Arc<dyn crate::adapters::Adapter>>,
    listeners: crate::server::Listeners,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    name: &str,
) -> anyhow::Result<ExitCode> {
    let core = app.core();
    let shell_out = ShellOut::stdout();
    adapters.push(Arc::new(shell_out.clone()));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let mut runner = tokio::spawn(
        app.run_until_stopped(adapters, Some(listeners), async move {
            tokio::select! {
                _ = stop => {}
                _ = done_rx => {}
            }
        }),
    );
    use std::io::IsTerminal;
    let greet = std::io::stdin().is_terminal();
    let input = tokio::io::BufReader::new(stdin_pipe());
    let failed = tokio::select! {
        r = shell::run(core, shell_out, name, greet, input) => r,
        // A signal stopped the bot while the shell waited for input.
        r = &mut runner => {
            r.context("background tasks")??;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let _ = done_tx.send(());
    runner.await.context("background tasks")??;
    let failed = failed?;
    for (id, error) in &failed {
        err(format_args!("error: operation {id} failed: {error}"));
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The start in the log, for a container's or a service manager's log reader (the banner is
/// on stdout): where it listens, and that no chat adapter runs when `no_chat`.
fn log_start(at: &crate::welcome::Listening, no_chat: bool) {
    if no_chat {
        tracing::info!(
            "no chat adapter is enabled (slack.enabled, discord.enabled); type commands into `dualkey serve --shell-as NAME`, or stop serve and use `dualkey shell --as NAME`"
        );
    }
    let (admin, routes) = match at.admin {
        Some(a) => (
            a.to_string(),
            "GET /healthz; on the admin port GET /healthz, GET /readyz, GET /metrics",
        ),
        None => ("none".into(), "GET /healthz, GET /readyz, GET /metrics"),
    };
    tracing::info!(listen = %at.main, admin = %admin, "dualkey running; HTTP: {routes}; stop with ctrl-c or SIGTERM");
}

/// Standard input as an async reader fed by a plain thread, so a read blocked on the terminal
/// never holds up the runtime's shutdown after ctrl-c (tokio's own stdin reads on the blocking
/// pool, which the shutdown waits for). The end of input, or a read error, ends the stream.
fn stdin_pipe() -> tokio::io::DuplexStream {
    let (reader, mut writer) = tokio::io::duplex(64 * 1024);
    let runtime = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        use std::io::Read;
        use tokio::io::AsyncWriteExt;
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 8192];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if runtime.block_on(writer.write_all(&buf[..n])).is_err() {
                return;
            }
        }
    });
    reader
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

/// Installs the SIGTERM and SIGINT (ctrl-c) handlers now, so a signal that arrives before the
/// returned future is first polled still counts, and returns the wait for either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Cmd::Config {
            command: ConfigCmd::Check,
        } => {
            let s = load(&cli)?;
            out(format_args!(
                "config OK: {} ({} operator(s), environments: {}; store {})",
                s.source.display(),
                s.operators.len(),
                s.environments
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                crate::config::redact_url(&s.store.url)
            ))?;
            for w in s.warnings() {
                out(format_args!("warning: {w}"))?;
            }
            for w in crate::services::reports::tool_warnings(&s).await {
                out(format_args!("warning: {w}"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Slack {
            command: SlackCmd::Manifest { url },
        } => {
            let s = load(&cli)?;
            let yaml = crate::adapters::slack::manifest::manifest(&s, url.as_deref())
                .map_err(UsageError)?;
            out(yaml.trim_end())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Discord {
            command: DiscordCmd::Register { guild, global },
        } => {
            use crate::adapters::discord::register::{self, Scope};
            let s = load(&cli)?;
            let guild = match (guild, *global) {
                (Some(g), _) => Some(g.clone()),
                (None, false) if !s.discord.guild_id.trim().is_empty() => {
                    Some(s.discord.guild_id.trim().to_string())
                }
                _ => None,
            };
            let scope = match guild {
                None => Scope::Global,
                Some(g) => Scope::Guild(g.parse().ok().filter(|g| *g != 0).ok_or_else(|| {
                    UsageError(format!(
                        "`{g}` is not a guild id (a number; Discord: right-click the server, Copy Server ID)"
                    ))
                })?),
            };
            if s.discord.application_id.trim().parse::<u64>().is_err() {
                return Err(UsageError(
                    "discord.application_id is not set: put the Application ID from https://discord.com/developers/applications (General Information) in the config".into(),
                )
                .into());
            }
            let var = &s.discord.bot_token_env;
            let token = std::env::var(var)
                .ok()
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| {
                    UsageError(format!(
                        "the bot token is not set: export {var} (discord.bot_token_env) with the token from the Bot page of your Discord application"
                    ))
                })?;
            let names = register::register(&s, token.trim(), scope).await?;
            let name = register::command_name(&s);
            match scope {
                Scope::Global => out(format_args!(
                    "registered /{name} globally ({} subcommands); Discord clients may take a while to show changes",
                    names.len()
                ))?,
                Scope::Guild(g) => out(format_args!(
                    "registered /{name} in guild {g} ({} subcommands)",
                    names.len()
                ))?,
            }
            for n in names {
                out(format_args!("  {n}"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Serve { shell_as } => serve(&cli, shell_as.as_deref()).await,
        Cmd::Doctor { env } => {
            let s = load(&cli)?;
            let only = match env {
                Some(_) => Some(pick_env(&s, env)?),
                None => None,
            };
            let failed = crate::doctor::run(&s, only.as_deref(), &mut |line| out(line)).await?;
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Shell { as_operator } => {
            let s = load(&cli)?;
            let app = Application::build(s).await?;
            let core = app.core();
            if !core.directory.knows(as_operator) {
                return Err(UsageError(format!(
                    "`{as_operator}` is not an operator in the config ([[operators]] id)"
                ))
                .into());
            }
            let out = ShellOut::stdout();
            let outs: Vec<Arc<dyn crate::adapters::Adapter>> = vec![Arc::new(out.clone())];
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let runner = tokio::spawn(app.run_until_stopped(outs, None, async move {
                let _ = done_rx.await;
            }));
            use std::io::IsTerminal;
            let greet = std::io::stdin().is_terminal();
            let result = shell::run(
                core,
                out,
                as_operator,
                greet,
                tokio::io::BufReader::new(tokio::io::stdin()),
            )
            .await;
            let _ = done_tx.send(());
            runner.await.context("background tasks")??;
            let failed = result?;
            if failed.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            for (id, error) in &failed {
                err(format_args!("error: operation {id} failed: {error}"));
            }
            Ok(ExitCode::from(1))
        }
        Cmd::Status { env, format } => {
            let s = load(&cli)?;
            let env = pick_env(&s, env)?;
            let e = &s.environments[&env];
            let url = e.database_url().map_err(UsageError)?;
            use secrecy::ExposeSecret;
            match format {
                StatusFormat::Prisma => {
                    let out = crate::dbops::prisma::status_prisma_cli(
                        url.expose_secret(),
                        &e.migrations_dir,
                    )
                    .await;
                    let mut w = std::io::stdout().lock();
                    w.write_all(out.stdout.as_bytes())
                        .and_then(|_| w.flush())
                        .map_err(stdout_error)?;
                    let _ = std::io::stderr().lock().write_all(out.stderr.as_bytes());
                    Ok(ExitCode::from(out.exit_code.clamp(0, 255) as u8))
                }
                StatusFormat::Json | StatusFormat::Text => {
                    let st = crate::dbops::prisma::status(url.expose_secret(), &e.migrations_dir)
                        .await
                        .map_err(|err| {
                            anyhow::anyhow!("cannot read the migration status of {env}: {err}")
                        })?;
                    if *format == StatusFormat::Json {
                        out(serde_json::to_string_pretty(&st)?)?;
                    } else {
                        out(crate::services::reports::fields_text(
                            &crate::services::reports::status_fields(&st),
                        ))?;
                    }
                    Ok(if st.prisma_exit_code == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    })
                }
            }
        }
        Cmd::Backup { env, note } => {
            let s = load(&cli)?;
            let env = pick_env(&s, env)?;
            let app = Application::build(s).await?;
            let core = app.core();
            let b = crate::services::backups::take::take_manual_backup(
                &core,
                &env,
                "cli",
                note.clone(),
                None,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            out(format_args!(
                "backup {} ok: {} ({} bytes, sha256 {})",
                b.id,
                b.path,
                b.size_bytes.unwrap_or(0),
                b.sha256.unwrap_or_default()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Backups { env } => {
            let s = load(&cli)?;
            let env = pick_env(&s, env)?;
            let core = Application::read_only_core(s).await?;
            out(crate::services::reports::backups_text(&core, &env).await?)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Audit { command } => {
            let s = load(&cli)?;
            // Parse `--head` before opening the store. A head that is not one cannot vouch for
            // the chain: the verification fails, exit 1 as for a head that does not match (a
            // script checking `audit verify --head "$H" || alert` must not read a typo as
            // anything else), with the reason on stderr.
            let anchor = match command {
                AuditCmd::Verify { head: Some(h) } => {
                    match h.parse::<crate::core::audit::ChainHead>() {
                        Ok(a) => Some(a),
                        Err(e) => {
                            err(format_args!("error: --head: {e}"));
                            return Ok(ExitCode::from(1));
                        }
                    }
                }
                _ => None,
            };
            let store = crate::store::open(&s.store.url)
                .await
                .context("opening the state store")?;
            match command {
                AuditCmd::Verify { .. } => {
                    let verdict = match verify_chain(store.as_ref()).await? {
                        Ok(n) => match &anchor {
                            Some(a) => verify_head(store.as_ref(), a).await?.map(|_| n),
                            None => Ok(n),
                        },
                        Err(b) => Err(b),
                    };
                    match verdict {
                        Ok(n) => {
                            match &anchor {
                                Some(a) => out(format_args!(
                                    "audit chain intact: {n} events verified; event #{} has the recorded head's hash",
                                    a.seq
                                ))?,
                                None => out(format_args!("audit chain intact: {n} events verified"))?,
                            }
                            Ok(ExitCode::SUCCESS)
                        }
                        Err(b) => {
                            // The verdict outranks a closed standard output (`| grep -q`):
                            // exit 1 either way, the reason then on stderr.
                            if out(format_args!("AUDIT CHAIN BROKEN: {b}")).is_err() {
                                err(format_args!("AUDIT CHAIN BROKEN: {b}"));
                            }
                            Ok(ExitCode::from(1))
                        }
                    }
                }
                AuditCmd::Export { output } => {
                    let mut w: Box<dyn Write> = match output {
                        Some(p) => Box::new(std::io::BufWriter::new(
                            std::fs::File::create(p)
                                .with_context(|| format!("creating {}", p.display()))?,
                        )),
                        None => Box::new(std::io::stdout().lock()),
                    };
                    // A closed pipe ends the export quietly; a file error says which file.
                    let to_stdout = output.is_none();
                    let wrap = |e: std::io::Error| {
                        if to_stdout {
                            stdout_error(e)
                        } else {
                            anyhow::Error::new(e).context("writing the export")
                        }
                    };
                    let mut after = 0;
                    loop {
                        let page = store.audit_page(after, 1000).await?;
                        if page.is_empty() {
                            break;
                        }
                        for r in &page {
                            writeln!(w, "{}", serde_json::to_string(r)?).map_err(wrap)?;
                        }
                        after = page.last().map(|r| r.seq).unwrap_or(after);
                    }
                    w.flush().map_err(wrap)?;
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}

/// Checks an intact chain against a head recorded elsewhere: event `head.seq` must exist and
/// carry `head.hash`. The chain after it was verified link by link already, so together they
/// prove that nothing up to the recorded head was rewritten and nothing after it was altered.
async fn verify_head(
    store: &dyn crate::store::Store,
    head: &ChainHead,
) -> anyhow::Result<Result<(), BrokenLink>> {
    let found = store.audit_page(head.seq - 1, 1).await?;
    Ok(head.check(found.first().filter(|r| r.seq == head.seq)))
}
