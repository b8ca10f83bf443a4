//! The `[server]` (HTTP listeners and their deadlines) and `[store]` (the state store URL)
//! sections.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::{redact_url, HumanDuration};

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// HTTP listen address.
    pub listen: String,
    /// Connections served at once; more wait until one closes.
    pub max_connections: std::num::NonZeroUsize,
    /// Time a client has to send a request's headers; slower connections are closed.
    pub header_read_timeout: HumanDuration,
    /// Time a client has, once its headers are in, to send the whole body; a slower one gets
    /// `408` and its connection is closed.
    pub body_read_timeout: HumanDuration,
    /// Address of the admin listener serving `/healthz`, `/readyz` and `/metrics` apart from
    /// the chat endpoints; empty (the default) serves them on `listen`.
    pub admin_listen: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:8080".into(),
            max_connections: std::num::NonZeroUsize::new(256).expect("256 is not zero"),
            header_read_timeout: HumanDuration(Duration::from_secs(10)),
            body_read_timeout: HumanDuration(Duration::from_secs(10)),
            admin_listen: String::new(),
        }
    }
}

/// `[store]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `sqlite://...` or `postgres://...`; may hold a password, so `Debug` redacts it.
    pub url: String,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: "sqlite://data/dualkey.db".into(),
        }
    }
}

impl fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSettings")
            .field("url", &redact_url(&self.url))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_url_passwords_are_redacted_in_debug() {
        let s = StoreSettings {
            url: "postgres://dk:s3cret@db:5432/dualkey".into(),
        };
        let d = format!("{s:?}");
        assert!(!d.contains("s3cret"), "{d}");
        assert!(d.contains("dk:***@db:5432"), "{d}");
    }
}
