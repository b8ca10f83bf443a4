//! dualkey's event metrics (counters and histograms), recorded through the `metrics` facade
//! into one process-wide Prometheus recorder (`metrics-exporter-prometheus`, no listener of its
//! own: `/metrics` renders [`handle`]). The names are here so that every part of dualkey records
//! under the same ones; gauges read from the store are set at scrape time by `/metrics` itself.
//!
//! Labels are bounded: command names come from the command table, platforms and transports are
//! fixed sets, environments come from the config, outcomes are the constants below.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter `{command, outcome}`: chat commands handled.
pub const COMMANDS: &str = "dualkey_commands_total";
/// Counter `{outcome}`: votes (button clicks on request cards).
pub const VOTES: &str = "dualkey_votes_total";
/// Counter `{platform, outcome}`: outbox sends.
pub const DELIVERIES: &str = "dualkey_deliveries_total";
/// Counter `{platform}`: HTTP 429 answers from a chat platform.
pub const RATE_LIMITED: &str = "dualkey_rate_limited_total";
/// Histogram `{platform, transport}`: payload in at the adapter until its ack is out.
pub const ACK_LATENCY: &str = "dualkey_ack_latency_seconds";
/// Histogram `{kind, outcome}`: an operation's run, first step to final state.
pub const OPERATION_DURATION: &str = "dualkey_operation_duration_seconds";
/// Histogram `{action, outcome}`: one step's run.
pub const STEP_DURATION: &str = "dualkey_step_duration_seconds";
/// Histogram `{env, outcome}`: a backup, dump and verification.
pub const BACKUP_DURATION: &str = "dualkey_backup_duration_seconds";
/// Histogram `{env}`: the size of a verified backup file.
pub const BACKUP_SIZE: &str = "dualkey_backup_size_bytes";
/// Histogram `{kind}`: a request's creation until the vote that approved it.
pub const APPROVAL_WAIT: &str = "dualkey_request_approval_seconds";

/// The platforms whose 429 counters exist from the start (at 0).
pub const PLATFORMS: [&str; 2] = ["slack", "discord"];

const ACK_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0,
];
const RUN_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];
const SIZE_BUCKETS: &[f64] = &[1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12];
const WAIT_BUCKETS: &[f64] = &[
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once (later calls, from other cores of the same process,
/// return the same handle) and registers the 429 counters, which show 0 before the first 429.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let mut b = PrometheusBuilder::new();
        for (name, buckets) in [
            (ACK_LATENCY, ACK_BUCKETS),
            (OPERATION_DURATION, RUN_BUCKETS),
            (STEP_DURATION, RUN_BUCKETS),
            (BACKUP_DURATION, RUN_BUCKETS),
            (BACKUP_SIZE, SIZE_BUCKETS),
            (APPROVAL_WAIT, WAIT_BUCKETS),
        ] {
            b = b
                .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
                .expect("bucket lists are not empty");
        }
        let recorder = b.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics shows no events");
        }
        describe();
        for p in PLATFORMS {
            metrics::counter!(RATE_LIMITED, "platform" => p).increment(0);
        }
        handle
    })
}

/// The recorder's handle (installing it first if no core did).
pub fn handle() -> &'static PrometheusHandle {
    install()
}

fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        COMMANDS,
        "Chat commands handled, by command (from the command table, `unknown` when none) and outcome (ok, rejected, refused, declined, error)."
    );
    describe_counter!(
        VOTES,
        "Votes on approval requests by outcome (approve, deny, refused, repeated)."
    );
    describe_counter!(
        DELIVERIES,
        "Outbox sends to chat by platform and outcome (ok, rate_limited, transient, permanent)."
    );
    describe_counter!(RATE_LIMITED, "HTTP 429 answers from a chat platform's API.");
    describe_histogram!(
        ACK_LATENCY,
        Unit::Seconds,
        "From a payload's arrival at an adapter to its ack, by platform and transport (http, socket, gateway, shell)."
    );
    describe_histogram!(
        OPERATION_DURATION,
        Unit::Seconds,
        "Operation runs by kind and final state."
    );
    describe_histogram!(
        STEP_DURATION,
        Unit::Seconds,
        "Operation steps by action and outcome."
    );
    describe_histogram!(
        BACKUP_DURATION,
        Unit::Seconds,
        "Backups (dump and verification) by environment and outcome (ok, failed)."
    );
    describe_histogram!(
        BACKUP_SIZE,
        Unit::Bytes,
        "Size of verified backup files by environment."
    );
    describe_histogram!(
        APPROVAL_WAIT,
        Unit::Seconds,
        "From a request's creation to its approval, by operation kind."
    );
}

/// Outcomes of [`COMMANDS`].
pub mod outcome {
    /// Ran.
    pub const OK: &str = "ok";
    /// Did not parse.
    pub const REJECTED: &str = "rejected";
    /// Not allowed (no operator, missing role).
    pub const REFUSED: &str = "refused";
    /// Ran and said no (cannot plan, environment busy).
    pub const DECLINED: &str = "declined";
    /// An internal fault.
    pub const ERROR: &str = "error";
}

/// Counts a command.
pub fn command(name: &'static str, outcome: &'static str) {
    metrics::counter!(COMMANDS, "command" => name, "outcome" => outcome).increment(1);
}

/// Counts a vote (`approve`, `deny`, `refused`, `repeated`).
pub fn vote(outcome: &'static str) {
    metrics::counter!(VOTES, "outcome" => outcome).increment(1);
}

/// Counts `n` outbox rows sent (or not) on `platform`.
pub fn delivery(platform: &str, outcome: &'static str, n: u64) {
    metrics::counter!(DELIVERIES, "platform" => platform.to_string(), "outcome" => outcome)
        .increment(n);
}

/// Counts a 429 from `platform`.
pub fn rate_limited(platform: &'static str) {
    metrics::counter!(RATE_LIMITED, "platform" => platform).increment(1);
}

/// Records an ack sent `since` its payload arrived.
pub fn ack(platform: &'static str, transport: &'static str, since: std::time::Instant) {
    metrics::histogram!(ACK_LATENCY, "platform" => platform, "transport" => transport)
        .record(since.elapsed().as_secs_f64());
}

/// Records an operation's run.
pub fn operation(kind: &'static str, outcome: &str, took: Duration) {
    metrics::histogram!(OPERATION_DURATION, "kind" => kind, "outcome" => outcome.to_string())
        .record(took.as_secs_f64());
}

/// Records a step's run.
pub fn step(action: &'static str, outcome: &'static str, took: Duration) {
    metrics::histogram!(STEP_DURATION, "action" => action, "outcome" => outcome)
        .record(took.as_secs_f64());
}

/// Records a backup; its size when it was verified.
pub fn backup(env: &str, took: Duration, verified_size: Option<u64>) {
    let outcome = if verified_size.is_some() {
        "ok"
    } else {
        "failed"
    };
    metrics::histogram!(BACKUP_DURATION, "env" => env.to_string(), "outcome" => outcome)
        .record(took.as_secs_f64());
    if let Some(size) = verified_size {
        metrics::histogram!(BACKUP_SIZE, "env" => env.to_string()).record(size as f64);
    }
}

/// Records the wait of a request approved `ms` after its creation.
pub fn approval_wait(kind: &'static str, ms: i64) {
    metrics::histogram!(APPROVAL_WAIT, "kind" => kind).record(ms.max(0) as f64 / 1000.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorder_is_installed_once_and_renders_events_with_their_buckets() {
        assert!(std::ptr::eq(install(), install()), "one handle per process");
        command("status", outcome::OK);
        ack("shell", "shell", std::time::Instant::now());
        let text = handle().render();
        assert!(
            text.contains("# TYPE dualkey_commands_total counter"),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("dualkey_commands_total{command=\"status\",outcome=\"ok\"} "))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(!line.ends_with(" 0"), "{line}");
        assert!(text.contains("# TYPE dualkey_ack_latency_seconds histogram"));
        assert!(text.contains(
            "dualkey_ack_latency_seconds_bucket{platform=\"shell\",transport=\"shell\",le=\"0.0005\"}"
        ));
        assert!(text.contains("dualkey_rate_limited_total{platform=\"discord\"} 0"));
    }
}
