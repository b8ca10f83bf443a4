//! The audit trail (SPEC section 8): events that form a SHA-256 hash chain. Each event's hash
//! covers the previous hash and every stored field of the event, so altering, removing or
//! reordering a row breaks the chain at that row. Details are redacted before they are stored.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::ports::{Store, StoreResult};

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event about to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    /// Canonical operator id, when known.
    pub operator: Option<String>,
    /// `platform:account`, when the event came from chat.
    pub account: Option<String>,
    /// Environment, when the event concerns one.
    pub env: Option<String>,
    /// What happened (`command`, `request.created`, `vote.refused`, `step.started`...).
    pub action: String,
    /// Details (redacted before storage).
    pub details: serde_json::Value,
}

impl NewAudit {
    /// An event with no actor (system events).
    pub fn system(action: &str, env: Option<&str>, details: serde_json::Value) -> NewAudit {
        NewAudit {
            operator: None,
            account: None,
            env: env.map(str::to_string),
            action: action.to_string(),
            details,
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number, 1-based, no gaps.
    pub seq: i64,
    /// Time, ms since the epoch.
    pub at_ms: i64,
    /// Canonical operator id.
    pub operator: Option<String>,
    /// `platform:account`.
    pub account: Option<String>,
    /// Environment.
    pub env: Option<String>,
    /// What happened.
    pub action: String,
    /// Details as stored (JSON text).
    pub details: String,
    /// Hash of the previous event.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

/// The hash of an event: SHA-256 over a JSON array of the previous hash and every field.
// Every stored column is an argument on purpose: the hash must cover exactly these fields.
#[allow(clippy::too_many_arguments)]
pub fn chain_hash(
    prev_hash: &str,
    seq: i64,
    at_ms: i64,
    operator: Option<&str>,
    account: Option<&str>,
    env: Option<&str>,
    action: &str,
    details: &str,
) -> String {
    let material =
        serde_json::json!([prev_hash, seq, at_ms, operator, account, env, action, details]);
    hex::encode(Sha256::digest(material.to_string().as_bytes()))
}

impl AuditRecord {
    /// The hash this record should have given its own `prev_hash`.
    pub fn expected_hash(&self) -> String {
        chain_hash(
            &self.prev_hash,
            self.seq,
            self.at_ms,
            self.operator.as_deref(),
            self.account.as_deref(),
            self.env.as_deref(),
            &self.action,
            &self.details,
        )
    }

    /// One line for chat and `audit [N]`.
    pub fn render(&self) -> String {
        let at = crate::core::human::time(self.at_ms);
        let who = match (&self.operator, &self.account) {
            (Some(o), Some(a)) => format!("{o} ({a})"),
            (Some(o), None) => o.clone(),
            (None, Some(a)) => a.clone(),
            (None, None) => "dualkey".into(),
        };
        let env = self
            .env
            .as_deref()
            .map(|e| format!(" [{e}]"))
            .unwrap_or_default();
        format!(
            "#{} {at} {who}{env} {} {}",
            self.seq, self.action, self.details
        )
    }
}

/// The first broken link found by [`Verifier`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at event #{seq}: {reason}")]
pub struct BrokenLink {
    /// The first bad event.
    pub seq: i64,
    /// What is wrong with it.
    pub reason: String,
}

/// Walks the chain in sequence order, page by page.
#[derive(Debug, Clone)]
pub struct Verifier {
    prev_hash: String,
    next_seq: i64,
    /// Events checked so far.
    pub checked: i64,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            prev_hash: GENESIS_HASH.to_string(),
            next_seq: 1,
            checked: 0,
        }
    }
}

impl Verifier {
    /// Checks the next record.
    pub fn check(&mut self, r: &AuditRecord) -> Result<(), BrokenLink> {
        let fail = |reason: String| Err(BrokenLink { seq: r.seq, reason });
        if r.seq != self.next_seq {
            return Err(BrokenLink {
                seq: self.next_seq,
                reason: format!(
                    "event #{} is missing (found #{} next)",
                    self.next_seq, r.seq
                ),
            });
        }
        if r.prev_hash != self.prev_hash {
            return fail("its prev_hash does not match the previous event's hash (an event before it was removed or altered)".into());
        }
        if r.expected_hash() != r.hash {
            return fail("its content does not match its hash (the row was altered)".into());
        }
        self.prev_hash = r.hash.clone();
        self.next_seq += 1;
        self.checked += 1;
        Ok(())
    }

    /// Checks that the chain ends where the store's head says it does (catches a truncated tail).
    pub fn finish(&self, head_seq: i64, head_hash: &str) -> Result<(), BrokenLink> {
        if head_seq != self.next_seq - 1 || (head_seq > 0 && head_hash != self.prev_hash) {
            return Err(BrokenLink {
                seq: self.next_seq,
                reason: format!(
                    "the chain ends at #{} but the recorded head is #{head_seq} (events were removed from the end)",
                    self.next_seq - 1
                ),
            });
        }
        Ok(())
    }
}

/// A chain head recorded outside the store (`SEQ:HASH`), for `dualkey audit verify --head`.
///
/// Whoever can write the store can rewrite events and recompute every hash after them, so an
/// intact chain alone proves nothing about its past. A head kept elsewhere (the log line of
/// [`log_head`], later a chat post) pins it: SHA-256 links event `seq` to every event before
/// it, so if event `seq` still has `hash`, nothing up to it was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Sequence number of the recorded event (1-based).
    pub seq: i64,
    /// Its hash, 64 lowercase hex digits.
    pub hash: String,
}

impl std::str::FromStr for ChainHead {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown: String = s.chars().take(80).collect();
        let bad = |why: &str| {
            format!("`{shown}` is not a head: {why}; write SEQ:HASH, the event number and its 64-hex-digit hash as logged in `audit head seq=N hash=H`")
        };
        if s.trim().is_empty() {
            return Err(bad("it is empty"));
        }
        let (seq, hash) = s
            .split_once(':')
            .ok_or_else(|| bad("no `:` between SEQ and HASH"))?;
        let seq: i64 = seq
            .trim()
            .parse()
            .map_err(|_| bad("SEQ must be a whole number from 1 to 9223372036854775807"))?;
        if seq < 1 {
            return Err(bad("SEQ starts at 1"));
        }
        let hash = hash.trim().to_ascii_lowercase();
        if !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad(
                "HASH must be 64 hex digits (0-9, a-f), and it has other characters",
            ));
        }
        if hash.len() != 64 {
            return Err(bad(&format!(
                "HASH must be 64 hex digits, not {}",
                hash.len()
            )));
        }
        Ok(ChainHead { seq, hash })
    }
}

impl ChainHead {
    /// Compares the stored event at `self.seq` (`None` when there is none) with this head.
    pub fn check(&self, found: Option<&AuditRecord>) -> Result<(), BrokenLink> {
        match found {
            None => Err(BrokenLink {
                seq: self.seq,
                reason: format!(
                    "the recorded head is event #{} but the store has no such event (events were removed, or this is another store)",
                    self.seq
                ),
            }),
            Some(r) if r.hash != self.hash => Err(BrokenLink {
                seq: self.seq,
                reason: format!(
                    "event #{} has hash {} but the recorded head says {}: the chain up to #{} was rewritten",
                    self.seq, r.hash, self.hash, self.seq
                ),
            }),
            Some(_) => Ok(()),
        }
    }
}

/// Logs the chain head in one stable, greppable form: `audit head seq=N hash=H`. Logged at
/// every start and whenever an event whose seq is a multiple of [`HEAD_LOG_EVERY`] commits, so
/// the log keeps heads that `dualkey audit verify --head N:H` can check the store against.
pub fn log_head(seq: i64, hash: &str) {
    tracing::info!("{}", head_line(seq, hash));
}

/// The chain head as logged and posted to the audit channels: `audit head seq=N hash=H`
/// (`dualkey audit verify --head N:H` checks the store against it).
pub fn head_line(seq: i64, hash: &str) -> String {
    format!("audit head seq={seq} hash={hash}")
}

/// How often (in events) the head is logged.
pub const HEAD_LOG_EVERY: i64 = 100;

/// Removes secrets from free text: passwords in URLs and Slack/Discord-looking tokens.
pub fn redact(text: &str) -> String {
    let text = &crate::config::redact_password_params(text);
    let mut out = String::with_capacity(text.len());
    for word in text.split_inclusive(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
        let w = if word.contains("://") && word.contains('@') {
            crate::config::redact_url(word)
        } else if ["xoxb-", "xoxp-", "xapp-", "xoxa-"]
            .iter()
            .any(|p| word.starts_with(p))
        {
            "***".to_string()
                + &word[word
                    .trim_end_matches(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                    .len()..]
        } else {
            word.to_string()
        };
        out.push_str(&w);
    }
    out
}

/// Redacts every string inside a JSON value.
pub fn redact_json(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => serde_json::Value::String(redact(s)),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.iter().map(redact_json).collect())
        }
        serde_json::Value::Object(o) => {
            serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), redact_json(v))).collect())
        }
        other => other.clone(),
    }
}

/// Walks the whole audit chain; `Ok(Ok(n))` when intact, `Ok(Err(first broken link))` when not.
pub async fn verify_chain(store: &dyn Store) -> StoreResult<Result<i64, BrokenLink>> {
    // Read the head first and verify up to it: events appended while we read (the bot keeps
    // working) are not mistaken for a broken chain.
    let (head_seq, head_hash) = store.audit_head().await?;
    let mut v = Verifier::default();
    let mut after = 0;
    'pages: loop {
        let page = store.audit_page(after, 1000).await?;
        if page.is_empty() {
            break;
        }
        for r in &page {
            if r.seq > head_seq {
                break 'pages;
            }
            if let Err(b) = v.check(r) {
                return Ok(Err(b));
            }
        }
        after = page.last().map(|r| r.seq).unwrap_or(after);
    }
    Ok(v.finish(head_seq, &head_hash).map(|_| v.checked))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(prev: &str, seq: i64, action: &str) -> AuditRecord {
        let details = "{}".to_string();
        let hash = chain_hash(prev, seq, 1, None, None, None, action, &details);
        AuditRecord {
            seq,
            at_ms: 1,
            operator: None,
            account: None,
            env: None,
            action: action.into(),
            details,
            prev_hash: prev.into(),
            hash,
        }
    }

    #[test]
    fn verifier_names_the_first_bad_event() {
        let a = rec(GENESIS_HASH, 1, "a");
        let b = rec(&a.hash, 2, "b");
        let mut c = rec(&b.hash, 3, "c");
        let mut v = Verifier::default();
        v.check(&a).unwrap();
        v.check(&b).unwrap();
        c.action = "tampered".into();
        assert_eq!(v.check(&c).unwrap_err().seq, 3);
    }

    #[test]
    fn a_head_parses_strictly() {
        let h = format!("12:{}", "Ab".repeat(32));
        let head: ChainHead = h.parse().unwrap();
        assert_eq!((head.seq, head.hash), (12, "ab".repeat(32)));
        for bad in [
            "",
            "12",
            "x:ab",
            "0:ab",
            "-1:ab",
            "3:abc",
            &format!("3:{}", "g".repeat(64)),
        ] {
            let e = bad.parse::<ChainHead>().unwrap_err();
            assert!(e.contains("SEQ:HASH"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_head_names_a_rewritten_or_missing_event() {
        let a = rec(GENESIS_HASH, 1, "a");
        let head = ChainHead {
            seq: 1,
            hash: a.hash.clone(),
        };
        assert!(head.check(Some(&a)).is_ok());
        let other = ChainHead {
            seq: 1,
            hash: "0".repeat(64),
        };
        assert!(other
            .check(Some(&a))
            .unwrap_err()
            .reason
            .contains("rewritten"));
        assert!(head
            .check(None)
            .unwrap_err()
            .reason
            .contains("no such event"));
    }

    #[test]
    fn redaction_hides_url_passwords_and_tokens() {
        let s = redact("failed on postgres://app:hunter2@db/x with token xoxb-123-abc done");
        assert!(!s.contains("hunter2") && !s.contains("xoxb-123"), "{s}");
        assert!(s.contains("postgres://app:***@db/x"), "{s}");
    }
}
