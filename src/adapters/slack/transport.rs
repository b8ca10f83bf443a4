//! Slack's Web API and `response_url` hooks through slack-morphism: `chat.postMessage`,
//! `chat.update`, `chat.postEphemeral` and a POST to an event's `response_url`, each under a
//! timeout, with Slack's failures mapped onto [`DeliveryError`]. No rate control in
//! slack-morphism: the outbox retries (honouring `Retry-After`) and keeps per-channel order.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use crate::adapters::DeliveryError;

/// How long one Slack call may take before it counts as a transient failure.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Slack API error codes worth retrying; every other `{"ok":false,"error":..}` is permanent.
const TRANSIENT_CODES: &[&str] = &[
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

/// The Web API client with the bot token (never shown: this type has no `Debug`).
pub struct Transport {
    client: Arc<SlackHyperClient>,
    bot_token: SecretString,
}

impl Transport {
    /// A client for the Web API at `api_base_url` (`https://slack.com/api`; no trailing slash
    /// needed). Plain `http://` is allowed only when the configured URL is `http://` (a
    /// stand-in); otherwise the connector is https-only, `response_url` hooks included.
    pub fn new(api_base_url: &str, bot_token: SecretString) -> anyhow::Result<Transport> {
        let base = api_base_url.trim_end_matches('/');
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| anyhow::anyhow!("loading the system's TLS root certificates: {e}"))?;
        let https = if base.starts_with("http://") {
            builder.https_or_http().enable_http1().build()
        } else if base.starts_with("https://") {
            builder.https_only().enable_http1().build()
        } else {
            anyhow::bail!("slack.api_base_url must start with https:// (or http:// for a local stand-in), got `{base}`");
        };
        let connector = SlackClientHyperConnector::with_connector(https).with_slack_api_url(base);
        Ok(Transport {
            client: Arc::new(SlackClient::new(connector)),
            bot_token,
        })
    }

    /// The slack-morphism client (for the Socket Mode listener).
    pub fn client(&self) -> Arc<SlackHyperClient> {
        self.client.clone()
    }

    fn token(&self) -> SlackApiToken {
        SlackApiToken::new(self.bot_token.expose_secret().to_string().into())
    }

    /// `chat.postMessage`; returns the message's `ts`.
    pub async fn post_message(
        &self,
        channel: &str,
        content: SlackMessageContent,
    ) -> Result<String, DeliveryError> {
        let token = self.token();
        let session = self.client.open_session(&token);
        let req = SlackApiChatPostMessageRequest::new(channel.to_string().into(), content);
        let res = timed("chat.postMessage", session.chat_post_message(&req)).await?;
        Ok(res.ts.value().to_string())
    }

    /// `chat.update` of message `ts` in `channel`.
    pub async fn update(
        &self,
        channel: &str,
        ts: &str,
        content: SlackMessageContent,
    ) -> Result<(), DeliveryError> {
        let token = self.token();
        let session = self.client.open_session(&token);
        let req = SlackApiChatUpdateRequest::new(
            channel.to_string().into(),
            content,
            ts.to_string().into(),
        );
        timed("chat.update", session.chat_update(&req)).await?;
        Ok(())
    }

    /// `chat.postEphemeral` to `user` in `channel`.
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        content: SlackMessageContent,
    ) -> Result<(), DeliveryError> {
        let token = self.token();
        let session = self.client.open_session(&token);
        let req = SlackApiChatPostEphemeralRequest::new(
            channel.to_string().into(),
            user.to_string().into(),
            content,
        );
        timed("chat.postEphemeral", session.chat_post_ephemeral(&req)).await?;
        Ok(())
    }

    /// POSTs `content` to an event's `response_url` as a new message (`replace_original:
    /// false`), ephemeral or in the channel. slack-morphism's webhook request has no
    /// `response_type`, so the body is built here and sent through its connector.
    pub async fn respond_url(
        &self,
        response_url: &str,
        content: SlackMessageContent,
        ephemeral: bool,
    ) -> Result<(), DeliveryError> {
        let url: SlackResponseUrl = SlackResponseUrl::new(
            response_url
                .parse()
                .map_err(|e| DeliveryError::Permanent(format!("bad response_url: {e}")))?,
        );
        let body = response_body(&content, ephemeral)
            .map_err(|e| DeliveryError::Permanent(format!("encoding the reply: {e}")))?;
        let span = tracing::Span::none();
        let context = SlackClientApiCallContext {
            rate_control_params: None,
            token: None,
            tracing_span: &span,
            // The URL is a credential for this one event: slack-morphism logs it redacted.
            is_sensitive_url: true,
        };
        let fut = self
            .client
            .http_api
            .connector
            .http_post_uri::<_, serde_json::Value>(url.value().clone(), &body, context);
        timed("response_url", fut).await?;
        Ok(())
    }
}

/// The JSON body of a `response_url` POST: the message (`text`, `blocks`) plus
/// `response_type` and `replace_original: false`.
pub fn response_body(
    content: &SlackMessageContent,
    ephemeral: bool,
) -> serde_json::Result<serde_json::Value> {
    let mut body = serde_json::to_value(content)?;
    if let serde_json::Value::Object(map) = &mut body {
        map.insert(
            "response_type".into(),
            (if ephemeral { "ephemeral" } else { "in_channel" }).into(),
        );
        map.insert("replace_original".into(), false.into());
    }
    Ok(body)
}

async fn timed<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, SlackClientError>>,
) -> Result<T, DeliveryError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(map_error(what, &e)),
        Err(_) => Err(DeliveryError::Transient(format!(
            "slack {what}: no answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

/// Maps a slack-morphism failure onto the outbox's retry classes.
pub fn map_error(what: &str, e: &SlackClientError) -> DeliveryError {
    match e {
        SlackClientError::RateLimitError(r) => {
            crate::core::meter::rate_limited("slack");
            DeliveryError::RateLimited(r.retry_after.unwrap_or(Duration::from_secs(1)))
        }
        SlackClientError::ApiError(api) => {
            if TRANSIENT_CODES.contains(&api.code.as_str()) {
                DeliveryError::Transient(format!("slack {what}: {}", api.code))
            } else {
                DeliveryError::Permanent(format!("slack {what}: {}", api.code))
            }
        }
        SlackClientError::HttpError(h) => {
            let status = h.status_code;
            if status.is_server_error() || status.as_u16() == 408 {
                DeliveryError::Transient(format!("slack {what}: HTTP {status}"))
            } else {
                let body: String = h
                    .http_response_body
                    .as_deref()
                    .unwrap_or("")
                    .chars()
                    .take(80)
                    .collect();
                DeliveryError::Permanent(format!("slack {what}: HTTP {status} {body}"))
            }
        }
        // Connection refused or reset, DNS, TLS: the network, worth retrying.
        SlackClientError::HttpProtocolError(_)
        | SlackClientError::EndOfStream(_)
        | SlackClientError::SystemError(_)
        | SlackClientError::SocketModeProtocolError(_) => {
            DeliveryError::Transient(format!("slack {what}: {}", short(e)))
        }
        // An answer that does not parse will not parse better next time.
        SlackClientError::ProtocolError(_) => {
            DeliveryError::Permanent(format!("slack {what}: unreadable answer"))
        }
    }
}

/// An error's text without response bodies, cut short.
fn short(e: &SlackClientError) -> String {
    let s = e.to_string();
    let s = s.split(". Body:").next().unwrap_or_default();
    s.chars().take(160).collect()
}
