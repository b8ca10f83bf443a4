//! Migration checksums, exactly as Prisma's schema engine computes and compares them
//! (`schema-connector/src/checksum.rs`).
//!
//! The stored value is the lowercase hex SHA-256 of the script as the CLI read it (UTF-8 with
//! invalid bytes replaced by U+FFFD, BOM kept), never normalised. A stored value matches a script
//! when it equals the checksum of the script, of the script with CRLF turned into LF, or of the
//! script with every LF turned into CRLF (an existing CRLF becomes CR CR LF: copied literally).
//! A non-empty stored value whose length is not 64 is compared in the old, non-zero-padded hex
//! format (prisma-engines#1887).

use sha2::{Digest, Sha256};
use std::fmt::Write as _;

const CHECKSUM_STR_LEN: usize = 64;

fn compute(script: &str) -> [u8; 32] {
    Sha256::digest(script.as_bytes()).into()
}

fn format_padded(bytes: &[u8; 32]) -> String {
    hex::encode(bytes)
}

fn format_old(bytes: &[u8; 32]) -> String {
    let mut s = String::with_capacity(64);
    for b in bytes {
        let _ = write!(s, "{b:x}");
    }
    s
}

/// The checksum Prisma stores for `script`: 64 lowercase hex characters.
pub fn render_checksum(script: &str) -> String {
    format_padded(&compute(script))
}

/// The legacy, non-zero-padded rendering (`{:x}` per byte) some old tables still hold.
pub fn render_checksum_legacy(script: &str) -> String {
    format_old(&compute(script))
}

/// Whether `script` matches the stored `checksum`, with Prisma's line-ending tolerance and legacy
/// format handling.
pub fn script_matches_checksum(script: &str, checksum: &str) -> bool {
    let legacy = !checksum.is_empty() && checksum.len() != CHECKSUM_STR_LEN;
    let matches = |digest: [u8; 32]| {
        let rendered = if legacy {
            format_old(&digest)
        } else {
            format_padded(&digest)
        };
        rendered == checksum
    };
    matches(compute(script))
        || matches(compute(&script.replace("\r\n", "\n")))
        || matches(compute(&script.replace('\n', "\r\n")))
}
