//! `GET /metrics`: the process-wide event metrics and the families read at scrape time (store
//! counts, newest healthy backup, last drill, slow clients).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

use super::slots::slow_clients;
use crate::core::context::Core;

/// What `/metrics` reads at scrape time: the store's counts, the newest healthy backup and the
/// last finished drill of each environment, and this process's counters.
struct Scrape {
    gauges: crate::store::Gauges,
    /// (env, started_at) of the newest healthy verified backup.
    newest_backup: Vec<(String, i64)>,
    /// (env, succeeded, finished at) of the last finished drill.
    last_drill: Vec<(String, bool, i64)>,
    now: i64,
    in_flight: usize,
}

impl Scrape {
    async fn read(core: &Core) -> anyhow::Result<Scrape> {
        let gauges = core.store.gauges().await?;
        let (mut newest_backup, mut last_drill) = (Vec::new(), Vec::new());
        for env in core.settings.environments.keys() {
            let all = core.store.list_backups(env).await?;
            // The newest verified backup whose file looks intact (stat only: a scrape never
            // reads a backup end to end nor writes to the store). A file with a new
            // modification time but its size counts until the scheduler's backup-age check,
            // which hashes it, says otherwise.
            let looks_healthy = |b: &&crate::store::BackupRow| {
                matches!(
                    crate::services::backups::health::backup_health(b),
                    "ok" | crate::services::backups::health::BACKUP_TOUCHED
                )
            };
            if let Some(b) = all.iter().find(looks_healthy) {
                newest_backup.push((env.clone(), b.started_at));
            }
            let drills = core.store.drills(env).await?;
            if let Some(d) = drills.iter().find(|d| d.state != "running") {
                let finished = d.started_at + d.duration_ms.unwrap_or(0);
                last_drill.push((env.clone(), d.state == "ok", finished));
            }
        }
        Ok(Scrape {
            gauges,
            newest_backup,
            last_drill,
            now: core.clock.now_ms(),
            in_flight: core.in_flight.load(std::sync::atomic::Ordering::SeqCst),
        })
    }

    /// Sets every scrape-time family on the current (local) recorder.
    fn record(&self, envs: &[String]) {
        use metrics::{counter, gauge};
        describe_scrape();
        let g = &self.gauges;
        let secs = |ms: i64| ms as f64 / 1000.0;
        for (state, n) in &g.requests {
            gauge!("dualkey_requests", "state" => state.clone()).set(*n as f64);
        }
        for (state, n) in &g.operations {
            gauge!("dualkey_operations", "state" => state.clone()).set(*n as f64);
        }
        for (platform, n) in &g.outbox_pending {
            gauge!("dualkey_outbox_pending", "platform" => platform.clone()).set(*n as f64);
        }
        for (env, state, n) in &g.backups {
            gauge!("dualkey_backups", "env" => env.clone(), "state" => state.clone())
                .set(*n as f64);
        }
        for (platform, channel, n, oldest) in &g.lanes {
            let lane = [("platform", platform.clone()), ("channel", channel.clone())];
            gauge!("dualkey_outbox_lane_depth", &lane).set(*n as f64);
            gauge!("dualkey_outbox_lane_oldest_age_seconds", &lane)
                .set(secs(self.now - oldest).max(0.0));
        }
        for env in envs {
            let open = g.open_windows.iter().find(|(e, _)| e == env);
            gauge!("dualkey_monitoring_windows_open", "env" => env.clone())
                .set(open.map_or(0.0, |(_, n)| *n as f64));
        }
        for (env, started_at) in &self.newest_backup {
            gauge!("dualkey_backup_newest_verified_age_seconds", "env" => env.clone())
                .set(secs(self.now - started_at).max(0.0));
        }
        for (env, ok, finished) in &self.last_drill {
            gauge!("dualkey_drill_last_success", "env" => env.clone()).set(u8::from(*ok));
            gauge!("dualkey_drill_last_timestamp_seconds", "env" => env.clone())
                .set(secs(*finished));
        }
        counter!("dualkey_audit_events_total").absolute(g.audit_seq.max(0) as u64);
        gauge!("dualkey_operations_in_flight").set(self.in_flight as f64);
        for (platform, n) in crate::adapters::signature_failures() {
            counter!("dualkey_signature_failures_total", "platform" => platform.as_str())
                .absolute(n);
        }
        for (phase, n) in slow_clients() {
            counter!("dualkey_http_slow_clients_total", "phase" => phase).absolute(n);
        }
    }
}

/// The help lines of the scrape-time families.
fn describe_scrape() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_gauge!("dualkey_requests", "Approval requests by state.");
    describe_gauge!("dualkey_operations", "Operations by state.");
    describe_gauge!(
        "dualkey_outbox_pending",
        "Chat messages not delivered yet (given-up ones included), by platform."
    );
    describe_gauge!(
        "dualkey_backups",
        "Backup catalog entries by environment and state."
    );
    describe_gauge!(
        "dualkey_outbox_lane_depth",
        "Chat messages waiting to be sent per lane (platform and channel)."
    );
    describe_gauge!(
        "dualkey_outbox_lane_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest message waiting in a lane."
    );
    describe_gauge!(
        "dualkey_monitoring_windows_open",
        "Open post-change monitoring windows by environment."
    );
    describe_gauge!(
        "dualkey_backup_newest_verified_age_seconds",
        Unit::Seconds,
        "Age of the newest verified backup with a healthy file, by environment (absent while there is none)."
    );
    describe_gauge!(
        "dualkey_drill_last_success",
        "1 when the last finished restore drill of the environment succeeded, 0 when it failed."
    );
    describe_gauge!(
        "dualkey_drill_last_timestamp_seconds",
        Unit::Seconds,
        "When the last finished restore drill of the environment ended (Unix time)."
    );
    describe_counter!("dualkey_audit_events_total", "Audit events written.");
    describe_gauge!(
        "dualkey_operations_in_flight",
        "Operations this process is running."
    );
    describe_counter!(
        "dualkey_signature_failures_total",
        "Chat requests refused for a bad, missing or stale signature since start."
    );
    describe_counter!("dualkey_http_slow_clients_total", "HTTP connections closed since start because the request head (idle kept-alive connections included), the body or the taking of an answer was too slow, or evicted to make room.");
}

/// `GET /metrics`: the process-wide event metrics ([`crate::core::meter`]) and the families
/// read at scrape time, rendered by `metrics-exporter-prometheus` (text format 0.0.4).
pub(super) async fn metrics_page(State(core): State<Arc<Core>>) -> impl IntoResponse {
    let content = [(header::CONTENT_TYPE, "text/plain; version=0.0.4")];
    let scrape = match Scrape::read(&core).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "metrics: store unavailable");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                content,
                "# state store unavailable\n".to_string(),
            );
        }
    };
    // A recorder of this scrape's own: a lane drained or a state left since the last scrape
    // leaves no stale series behind.
    let local = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let envs: Vec<String> = core.settings.environments.keys().cloned().collect();
    metrics::with_local_recorder(&local, || scrape.record(&envs));
    let mut out = crate::core::meter::handle().render();
    out.push_str(&local.handle().render());
    (StatusCode::OK, content, out)
}
