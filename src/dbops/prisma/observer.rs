//! Progress reporting for `deploy` and the `down` rollback: the caller sees each migration before
//! it is touched and after it is done, so it can audit every step and edit its chat message.
//!
//! Any `FnMut(&Event) + Send` closure is an observer that never stops the work. Implement
//! [`ProgressObserver`] on your own type to do async work per event (write an audit row) or to
//! stop: returning `Err(reason)` stops the work at the next safe point (see each operation).

/// Receives progress events of type `E`.
#[async_trait::async_trait]
pub trait ProgressObserver<E: Sync>: Send {
    /// Called for each event, in order. `Err(reason)` asks the operation to stop.
    async fn on_event(&mut self, event: &E) -> Result<(), String>;
}

#[async_trait::async_trait]
impl<E, F> ProgressObserver<E> for F
where
    E: Sync,
    F: FnMut(&E) + Send,
{
    async fn on_event(&mut self, event: &E) -> Result<(), String> {
        self(event);
        Ok(())
    }
}

/// An observer that ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

#[async_trait::async_trait]
impl<E: Sync> ProgressObserver<E> for NoProgress {
    async fn on_event(&mut self, _event: &E) -> Result<(), String> {
        Ok(())
    }
}
