//! Opening a PostgreSQL state store that cannot be reached: the real binary says why (the
//! driver's "connection refused"), once, with what to check, and exits at once instead of after
//! the pool's acquire timeout.

use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dualkey");

#[test]
fn an_unreachable_postgres_store_names_the_cause_once_and_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on the loopback: nothing listens there, so connecting is refused at once.
    let text = crate::support::test_config(
        "postgres://postgres@127.0.0.1:1/dualkey_store",
        &dir.path().join("marker.log"),
        1,
        0,
    );
    let config = dir.path().join("dualkey.toml");
    std::fs::write(&config, text).unwrap();
    for args in [&["backups"][..], &["serve"][..]] {
        let start = Instant::now();
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("DUALKEY_STORE_URL")
            .output()
            .unwrap();
        let took = start.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(
            stderr.to_lowercase().matches("connection refused").count(),
            1,
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("store.url"), "{args:?}: {stderr}");
        assert!(!stderr.contains("pool timed out"), "{args:?}: {stderr}");
        assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
    }
}
