//! The shell wired to the rest of the bot: [`run`] starts the shell adapter's input loop
//! ([`crate::adapters::shell::run`]) with the real outbox and worker behind its [`Settle`] port.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::AsyncBufRead;

use crate::adapters::shell::{self, FailedOperation, Settle, ShellOut};
use crate::core::context::Core;
use crate::services::worker::Worker;

/// The shell's [`Settle`] port over the outbox and the worker.
pub struct OutboxAndWorker;

#[async_trait]
impl Settle for OutboxAndWorker {
    async fn deliver_due(&self, core: &Core, out: &ShellOut) -> anyhow::Result<()> {
        crate::outbox::deliver_due(core, out).await?;
        Ok(())
    }

    async fn idle(&self, core: &Core) -> anyhow::Result<bool> {
        Worker::idle(core).await
    }
}

/// Runs the shell loop over `input` until end of input, then waits for started work. With
/// `greet` (stdin is a terminal) it first says who you act as and how to start. Returns the
/// operations started during this session (requested or approved from this shell) that failed
/// or were interrupted.
pub async fn run<R: AsyncBufRead + Unpin>(
    core: Arc<Core>,
    out: ShellOut,
    start_as: &str,
    greet: bool,
    input: R,
) -> anyhow::Result<Vec<FailedOperation>> {
    shell::run(core, out, start_as, greet, input, &OutboxAndWorker).await
}
