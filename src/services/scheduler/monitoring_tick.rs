//! The monitoring job: every few seconds, under the scheduler's lease, the open monitoring
//! windows post their due reminders and probe failures ([`crate::services::monitoring::tick`]).

use super::Scheduler;

impl Scheduler {
    /// One pass over the open monitoring windows.
    pub(super) async fn monitoring_tick(&self) -> anyhow::Result<()> {
        crate::services::monitoring::tick(&self.core).await
    }
}
