//! `dualkey serve` (the bot, optionally with a shell on this terminal) and `dualkey shell` (the
//! local shell alone), with the signal handling and the stdin reader they need.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use super::{err, load, out, Cli, UsageError};
use crate::adapters::shell::ShellOut;
use crate::config::DEFAULT_CONFIG_PATH;
use crate::console as shell;
use crate::startup::Application;

/// `dualkey serve [--shell-as NAME]`: the bot until ctrl-c or SIGTERM (or, with a shell, the end
/// of its input). Prints the start-up text of [`crate::welcome::serve_banner`] to stdout.
pub(super) async fn serve(cli: &Cli, shell_as: Option<&str>) -> anyhow::Result<ExitCode> {
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

/// `dualkey shell --as NAME`: the bot without chat adapters or listeners, fed by stdin; exit 1
/// when an operation the input started failed.
pub(super) async fn shell(cli: &Cli, as_operator: &str) -> anyhow::Result<ExitCode> {
    let s = load(cli)?;
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
