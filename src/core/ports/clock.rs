//! The clock port: time, injected (the system clock in production, a settable one in tests).

/// A source of "now", in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Now, ms since the epoch.
    fn now_ms(&self) -> i64;
}
