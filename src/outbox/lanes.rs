//! Lanes and the lease: what this process knows about each lane (a pass delivering it, a hold,
//! the last call), the spacing learned from 429s per platform, and the `outbox` lease as one
//! delivering process holds it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::LEASE_MS;
use crate::core::context::Core;

/// How often a lane renews the `outbox` lease at most (well inside [`LEASE_MS`]).
const RENEW_MS: i64 = 1_000;

/// The narrowest spacing between two posts in a lane a 429 sets, and the widest the learning
/// goes (never wider than the 429's `Retry-After`).
const MIN_SPACING: Duration = Duration::from_millis(250);
const MAX_SPACING: Duration = Duration::from_secs(2);

/// The `outbox` lease as one delivering process holds it, renewed at most every `RENEW_MS`.
pub struct Lease {
    holder: String,
    renewed_at: tokio::sync::Mutex<Option<i64>>,
}

impl Lease {
    pub(super) fn new(holder: &str) -> Lease {
        Lease {
            holder: holder.to_string(),
            renewed_at: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether this process still holds the lease (renewing it when it is due).
    pub(super) async fn held(&self, core: &Core) -> anyhow::Result<bool> {
        let mut at = self.renewed_at.lock().await;
        let now = core.clock.now_ms();
        if let Some(t) = *at {
            if now >= t && now - t < RENEW_MS {
                return Ok(true);
            }
        }
        let held = core
            .store
            .try_lease("outbox", &self.holder, now, LEASE_MS)
            .await?;
        *at = held.then_some(now);
        Ok(held)
    }
}

/// What this process knows about one lane.
#[derive(Default)]
struct LaneState {
    /// A pass is delivering it.
    busy: bool,
    /// Held back until then (core clock, ms): a 429 or a failure.
    held_until: i64,
    /// When its last call started (for the spacing).
    last_call: Option<Instant>,
}

/// Lanes by (core, platform, channel), and the learned spacing by (core, platform).
#[derive(Default)]
struct Lanes {
    lanes: HashMap<(usize, String, String), LaneState>,
    spacing: HashMap<(usize, String), Duration>,
}

static LANES: Mutex<Option<Lanes>> = Mutex::new(None);

fn with_lanes<T>(f: impl FnOnce(&mut Lanes) -> T) -> T {
    let mut g = LANES.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(Lanes::default))
}

/// One lane of one core: its key in [`LANES`].
pub(super) struct Lane {
    key: (usize, String, String),
}

impl Lane {
    /// Claims the lane for one pass; `None` when another pass delivers it.
    pub(super) fn claim(core: &Core, platform: &str, channel: &str) -> Option<Lane> {
        let key = (
            core as *const Core as usize,
            platform.to_string(),
            channel.to_string(),
        );
        with_lanes(|l| {
            let st = l.lanes.entry(key.clone()).or_default();
            if st.busy {
                return None;
            }
            st.busy = true;
            Some(Lane { key })
        })
    }

    pub(super) fn held_until(&self) -> i64 {
        with_lanes(|l| l.lanes.get(&self.key).map_or(0, |s| s.held_until))
    }

    pub(super) fn hold(&self, until: i64) {
        with_lanes(|l| l.lanes.entry(self.key.clone()).or_default().held_until = until);
    }

    fn platform_key(&self) -> (usize, String) {
        (self.key.0, self.key.1.clone())
    }

    /// Waits until the platform's learned spacing has passed since this lane's last call,
    /// then records this call's start.
    pub(super) async fn pace(&self) {
        let wait = with_lanes(|l| {
            let spacing = l
                .spacing
                .get(&self.platform_key())
                .copied()
                .unwrap_or_default();
            let last = l.lanes.get(&self.key).and_then(|s| s.last_call);
            last.map(|t| spacing.saturating_sub(t.elapsed()))
                .unwrap_or_default()
        });
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        with_lanes(|l| {
            l.lanes.entry(self.key.clone()).or_default().last_call = Some(Instant::now())
        });
    }

    /// Learns from a post's outcome: a 429 that said wait `after` doubles the spacing (at least
    /// [`MIN_SPACING`], at most `after` and [`MAX_SPACING`]); a success narrows it by 2 %.
    pub(super) fn learn(&self, limited: Option<Duration>) {
        with_lanes(|l| {
            let s = l.spacing.entry(self.platform_key()).or_default();
            *s = match limited {
                Some(after) => (*s * 2).clamp(MIN_SPACING, after.clamp(MIN_SPACING, MAX_SPACING)),
                None if *s < Duration::from_millis(20) => Duration::ZERO,
                None => *s * 49 / 50,
            };
        })
    }

    /// Whether another pass delivers this lane (for the outbox task, which starts a pass per
    /// lane that is free and not held back).
    pub(super) fn busy_or_held(core: &Core, platform: &str, channel: &str, now: i64) -> bool {
        let key = (
            core as *const Core as usize,
            platform.to_string(),
            channel.to_string(),
        );
        with_lanes(|l| {
            l.lanes
                .get(&key)
                .is_some_and(|s| s.busy || s.held_until > now)
        })
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        with_lanes(|l| {
            if let Some(s) = l.lanes.get_mut(&self.key) {
                s.busy = false;
            }
        })
    }
}
