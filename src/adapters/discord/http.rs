//! The serenity REST client every Discord call goes through (registration, messages,
//! interaction responses), pointed at `discord.api_base_url`.

use serenity::http::{Http, HttpBuilder};
use serenity::model::id::ApplicationId;

/// A REST client for `base_url` (`https://discord.com` or a proxy / test server).
///
/// serenity's own rate limiter is off: it ignores the base URL (it always calls discord.com)
/// and retries 429s without limit. A 429 comes back as an error instead, and the outbox waits
/// for its `retry_after` (per channel, or for every channel when it is global), the same
/// against Discord and against a stand-in.
pub fn client(base_url: &str, token: &str, application_id: Option<u64>) -> Http {
    let mut b = HttpBuilder::new(token)
        .proxy(base_url.trim_end_matches('/'))
        .ratelimiter_disabled(true);
    if let Some(id) = application_id.filter(|id| *id != 0) {
        b = b.application_id(ApplicationId::new(id));
    }
    b.build()
}
