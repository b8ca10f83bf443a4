//! Logging: human-readable to stderr locally, JSON lines when `DUALKEY_LOG_FORMAT=json`.
//! The level comes from `RUST_LOG` (default `info`, `warn` for the shell so replies stay clean).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing.
pub fn init(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let json = std::env::var("DUALKEY_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colours only for a terminal: files, journald and pipes get plain text.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
