//! Discord's REST API for messages and interaction responses: channel messages with the bot
//! token (`POST/PATCH /channels/{id}/messages…`, and a DM channel for messages only one person
//! may see), and the interaction endpoints (`POST /interactions/{id}/{token}/callback`,
//! `PATCH /webhooks/{app}/{token}/messages/@original`, `POST /webhooks/{app}/{token}`), each
//! under a timeout, every failure mapped onto [`DeliveryError`].
//!
//! These calls go through reqwest (the client serenity itself uses) rather than serenity's
//! `Http`: with serenity's rate limiter off (it ignores `api_base_url` otherwise), a 429 comes
//! back from serenity as an `ErrorResponse` that has dropped the body's `retry_after` and
//! `global` and every header, and those are what the outbox needs. The gateway and the command
//! registration use serenity's `Http` ([`super::http::client`]).
//!
//! A 429 with `global: true` (or `X-RateLimit-Global`) holds back every bot-token call, in every
//! channel, until it has passed: those calls answer [`DeliveryError::RateLimited`] at once
//! without reaching Discord. Interaction endpoints are not bound to the global limit (Discord's
//! rate-limit docs) and are not held back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::adapters::DeliveryError;

/// How long one Discord call may take before it counts as a transient failure.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait assumed when a 429 names none.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
/// The longest wait a 429 may impose on the outbox (a broken `retry_after` must not stop
/// delivery for days).
const MAX_RETRY: Duration = Duration::from_secs(15 * 60);

/// The REST client with the bot token (never shown: this type has no `Debug`).
pub struct Transport {
    client: reqwest::Client,
    /// `{api_base_url}/api/v10`.
    api: String,
    token: SecretString,
    /// Until when a global 429 holds back bot-token calls.
    global_until: Mutex<Option<Instant>>,
}

/// Which rate limit a call counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// The bot token: bound to the global limit.
    Bot,
    /// An interaction token (in the URL): no `Authorization` header, not bound to the global
    /// limit.
    Interaction,
}

impl Transport {
    /// A client for `api_base_url` (`https://discord.com`, a proxy, or `http://…` for a local
    /// stand-in; no trailing slash needed).
    pub fn new(api_base_url: &str, token: SecretString) -> anyhow::Result<Transport> {
        let base = api_base_url.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            anyhow::bail!("discord.api_base_url must start with https:// (or http:// for a local stand-in), got `{base}`");
        }
        let client = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!(
                "DiscordBot (https://github.com/dualkey, ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .build()?;
        Ok(Transport {
            client,
            api: format!("{base}/api/v10"),
            token: token.clone(),
            global_until: Mutex::new(None),
        })
    }

    /// `POST /channels/{channel}/messages`; returns the message id.
    pub async fn post_message(&self, channel: &str, body: &Value) -> Result<String, DeliveryError> {
        let path = format!("/channels/{}/messages", seg(channel)?);
        let res = self
            .call(Method::POST, &path, Some(body), Auth::Bot)
            .await?;
        message_id(&res, "create message")
    }

    /// `PATCH /channels/{channel}/messages/{message}` with the bot token (which, unlike an
    /// interaction token, never expires).
    pub async fn edit_message(
        &self,
        channel: &str,
        message: &str,
        body: &Value,
    ) -> Result<(), DeliveryError> {
        let path = format!("/channels/{}/messages/{}", seg(channel)?, seg(message)?);
        self.call(Method::PATCH, &path, Some(body), Auth::Bot)
            .await
            .map(|_| ())
    }

    /// A direct message to `user`: opens (or finds) the DM channel (`POST /users/@me/channels`)
    /// and posts there.
    pub async fn direct_message(&self, user: &str, body: &Value) -> Result<String, DeliveryError> {
        let dm = self
            .call(
                Method::POST,
                "/users/@me/channels",
                Some(&serde_json::json!({ "recipient_id": seg(user)? })),
                Auth::Bot,
            )
            .await?;
        let channel = dm
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| DeliveryError::Permanent("discord create DM: no channel id".into()))?
            .to_string();
        self.post_message(&channel, body).await
    }

    /// `POST /interactions/{id}/{token}/callback`: the initial response (the ack).
    pub async fn interaction_callback(
        &self,
        id: &str,
        token: &str,
        body: &Value,
    ) -> Result<(), DeliveryError> {
        let path = format!("/interactions/{}/{}/callback", seg(id)?, seg(token)?);
        self.call(Method::POST, &path, Some(body), Auth::Interaction)
            .await
            .map(|_| ())
    }

    /// `PATCH /webhooks/{app}/{token}/messages/@original`: replaces the deferred response.
    pub async fn edit_original(
        &self,
        app: &str,
        token: &str,
        body: &Value,
    ) -> Result<(), DeliveryError> {
        let path = format!("/webhooks/{}/{}/messages/@original", seg(app)?, seg(token)?);
        self.call(Method::PATCH, &path, Some(body), Auth::Interaction)
            .await
            .map(|_| ())
    }

    /// `POST /webhooks/{app}/{token}`: a follow-up message to an interaction.
    pub async fn followup(
        &self,
        app: &str,
        token: &str,
        body: &Value,
    ) -> Result<(), DeliveryError> {
        let path = format!("/webhooks/{}/{}", seg(app)?, seg(token)?);
        self.call(Method::POST, &path, Some(body), Auth::Interaction)
            .await
            .map(|_| ())
    }

    /// How long a global rate limit still holds back bot-token calls, if it does.
    pub fn global_hold(&self) -> Option<Duration> {
        let mut g = self.global_until.lock().unwrap_or_else(|e| e.into_inner());
        match *g {
            Some(until) if until > Instant::now() => Some(until - Instant::now()),
            Some(_) => {
                *g = None;
                None
            }
            None => None,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        auth: Auth,
    ) -> Result<Value, DeliveryError> {
        let what = describe(&method, path);
        if auth == Auth::Bot {
            if let Some(left) = self.global_hold() {
                return Err(DeliveryError::RateLimited(left));
            }
        }
        let mut req = self.client.request(method, format!("{}{path}", self.api));
        if auth == Auth::Bot {
            req = req.header(
                reqwest::header::AUTHORIZATION,
                format!("Bot {}", self.token.expose_secret()),
            );
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = match req.send().await {
            Ok(r) => r,
            // Connection refused or reset, DNS, TLS, timeout: worth retrying.
            // (Without the URL: an interaction token is a credential.)
            Err(e) => {
                return Err(DeliveryError::Transient(format!(
                    "discord {what}: {}",
                    network_error(&e.without_url())
                )))
            }
        };
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        let err = map_status(&what, status, &headers, &text);
        if status == StatusCode::TOO_MANY_REQUESTS {
            crate::core::meter::rate_limited("discord");
        }
        if let (DeliveryError::RateLimited(after), true) = (&err, is_global(&headers, &text)) {
            if auth == Auth::Bot {
                let until = Instant::now() + *after;
                let mut g = self.global_until.lock().unwrap_or_else(|e| e.into_inner());
                if g.is_none_or(|t| t < until) {
                    *g = Some(until);
                }
                tracing::warn!(retry_after = ?after, "discord: global rate limit; every channel waits");
            }
        }
        Err(err)
    }
}

/// A path segment (a snowflake or an interaction token): refused when it could change the
/// path (a `/`, `?`, `#`, `%` or whitespace), so configuration or payload text never reaches
/// another endpoint.
fn seg(s: &str) -> Result<&str, DeliveryError> {
    let ok = !s.is_empty()
        && s.len() <= 512
        && !s.chars().all(|c| c == '.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(s)
    } else {
        // Never quote it: it may be an interaction token.
        Err(DeliveryError::Permanent(format!(
            "a path segment of {} characters is not a Discord id or token",
            s.chars().count()
        )))
    }
}

/// `METHOD /path` with interaction tokens cut out (they are credentials for 15 minutes).
fn describe(method: &Method, path: &str) -> String {
    let shown: Vec<&str> = path
        .split('/')
        .map(|p| if p.len() > 40 { "<token>" } else { p })
        .collect();
    format!("{method} {}", shown.join("/"))
}

fn message_id(res: &Value, what: &str) -> Result<String, DeliveryError> {
    res.get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            DeliveryError::Permanent(format!("discord {what}: no message id in the answer"))
        })
}

fn network_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {CALL_TIMEOUT:?}")
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        let s = e.to_string();
        s.chars().take(160).collect()
    }
}

/// Whether a 429 is the global limit: the body's `global: true` or `X-RateLimit-Global`.
fn is_global(headers: &reqwest::header::HeaderMap, body: &str) -> bool {
    let header = headers
        .get("x-ratelimit-global")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let body = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("global").and_then(Value::as_bool))
        .unwrap_or(false);
    header || body
}

/// Maps an unsuccessful answer: 429 → [`DeliveryError::RateLimited`] after the body's
/// `retry_after` (float seconds) or the `Retry-After` header; 5xx and 408 → transient; anything
/// else (401, 403, 404, 400…) → permanent, with Discord's message and code.
pub fn map_status(
    what: &str,
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> DeliveryError {
    let json: Option<Value> = serde_json::from_str(body).ok();
    if status == StatusCode::TOO_MANY_REQUESTS {
        let from_body = json
            .as_ref()
            .and_then(|v| v.get("retry_after"))
            .and_then(Value::as_f64);
        let from_header = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok());
        let secs = from_body.or(from_header);
        let after = secs
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(DEFAULT_RETRY)
            .min(MAX_RETRY);
        return DeliveryError::RateLimited(after);
    }
    let message = json
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
        .map(|m| m.chars().take(120).collect::<String>())
        .unwrap_or_else(|| body.chars().take(80).collect());
    let code = json
        .as_ref()
        .and_then(|v| v.get("code"))
        .and_then(Value::as_i64)
        .map(|c| format!(" (code {c})"))
        .unwrap_or_default();
    let text = format!("discord {what}: HTTP {} {message}{code}", status.as_u16());
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        DeliveryError::Transient(text)
    } else {
        DeliveryError::Permanent(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn a_429_waits_for_retry_after_from_the_body_or_the_header() {
        let h = HeaderMap::new();
        let e = map_status(
            "x",
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            r#"{"message":"You are being rate limited.","retry_after":1.5,"global":false}"#,
        );
        assert!(matches!(e, DeliveryError::RateLimited(d) if d == Duration::from_millis(1500)));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        let e = map_status("x", StatusCode::TOO_MANY_REQUESTS, &h, "not json");
        assert!(matches!(e, DeliveryError::RateLimited(d) if d == Duration::from_secs(3)));
        let e = map_status("x", StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), "");
        assert!(matches!(e, DeliveryError::RateLimited(d) if d == DEFAULT_RETRY));
        assert!(is_global(
            &HeaderMap::new(),
            r#"{"retry_after":1,"global":true}"#
        ));
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-global", HeaderValue::from_static("true"));
        assert!(is_global(&h, ""));
        assert!(!is_global(&HeaderMap::new(), r#"{"retry_after":1}"#));
    }

    #[test]
    fn server_errors_are_transient_and_client_errors_permanent_with_discords_message() {
        let h = HeaderMap::new();
        assert!(matches!(
            map_status("x", StatusCode::BAD_GATEWAY, &h, ""),
            DeliveryError::Transient(_)
        ));
        for s in [
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::NOT_FOUND,
        ] {
            let e = map_status(
                "POST /channels/1/messages",
                s,
                &h,
                r#"{"message":"Missing Access","code":50001}"#,
            );
            match e {
                DeliveryError::Permanent(m) => {
                    assert!(m.contains("Missing Access") && m.contains("50001"), "{m}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn path_segments_and_descriptions_never_carry_tokens_or_slashes() {
        assert!(seg("123456789012345678").is_ok());
        assert!(seg("aW50ZXJhY3Rpb246MTIz.abc-_").is_ok());
        for bad in ["", "1/2", "1?x", "..%2f", "a b", ".."] {
            assert!(seg(bad).is_err(), "{bad}");
        }
        let token = "a".repeat(80);
        let d = describe(
            &Method::PATCH,
            &format!("/webhooks/1/{token}/messages/@original"),
        );
        assert!(!d.contains(&token), "{d}");
        assert!(d.contains("<token>"), "{d}");
    }
}
