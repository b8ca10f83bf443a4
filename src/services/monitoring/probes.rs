//! Health probes (a GET with a short timeout) and the last lines of `app_logs`, as a reminder
//! card shows them.

use std::time::Instant;

use super::{LOGS_KEEP_BYTES, LOGS_TIMEOUT, LOG_LINES, LOG_LINE_CHARS, PROBE_TIMEOUT};

/// One health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// A 2xx answer within the timeout.
    pub ok: bool,
    /// `HTTP 200 in 12 ms`, or the error.
    pub summary: String,
}

/// GETs `url` with a short timeout: the status and latency, or the error.
pub async fn probe(url: &str) -> Probe {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .connect_timeout(PROBE_TIMEOUT)
            .build()
            .expect("a plain HTTP client builds")
    });
    let start = Instant::now();
    match client.get(url).send().await {
        Ok(resp) => {
            let ms = start.elapsed().as_millis();
            let status = resp.status();
            Probe {
                ok: status.is_success(),
                summary: format!("HTTP {} in {ms} ms", status.as_u16()),
            }
        }
        Err(e) => {
            let ms = start.elapsed().as_millis();
            let why = if e.is_timeout() {
                format!("no answer within {} s", PROBE_TIMEOUT.as_secs())
            } else if e.is_connect() {
                "connection failed".to_string()
            } else {
                "request failed".to_string()
            };
            // reqwest's chain names the cause (connection refused, DNS); the URL has no secret
            // worth hiding beyond what the config already shows, but keep it short.
            let mut cause = String::new();
            let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
            while let Some(s) = src {
                cause = s.to_string();
                src = s.source();
            }
            let cause: String = cause.chars().take(160).collect();
            Probe {
                ok: false,
                summary: if cause.is_empty() {
                    format!("error after {ms} ms: {why}")
                } else {
                    format!("error after {ms} ms: {why} ({cause})")
                },
            }
        }
    }
}

/// The last lines of `app_logs` (argv, never a shell; stdout and stderr read together into a
/// ring of their last [`LOGS_KEEP_BYTES`]; with a timeout after which the command is killed and
/// what it printed so far is shown), or why not.
pub(super) async fn app_logs(argv: &[String]) -> Result<Vec<String>, String> {
    match crate::dbops::app::capture(argv, LOGS_TIMEOUT, LOGS_KEEP_BYTES).await {
        Ok(out) => {
            let lines: Vec<&str> = out
                .lines
                .iter()
                .map(String::as_str)
                .filter(|l| !l.trim().is_empty())
                .collect();
            let start = lines.len().saturating_sub(LOG_LINES);
            let mut shown: Vec<String> = lines[start..]
                .iter()
                .map(|l| {
                    let l = crate::core::audit::redact(l);
                    if l.chars().count() > LOG_LINE_CHARS {
                        format!("{}…", l.chars().take(LOG_LINE_CHARS).collect::<String>())
                    } else {
                        l
                    }
                })
                .collect();
            if out.timed_out {
                shown.push(format!("(stopped after {} s)", LOGS_TIMEOUT.as_secs()));
            } else if !out.ok() {
                shown.push(format!(
                    "(app_logs exited with {})",
                    out.code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "a signal".into())
                ));
            }
            Ok(shown)
        }
        Err(e) => Err(e.to_string()),
    }
}
