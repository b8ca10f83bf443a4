//! The Slack adapter (slack-morphism): Socket Mode (default) or HTTP mode, Block Kit cards,
//! messages through `chat.postMessage`, `chat.update`, `chat.postEphemeral` and `response_url`.

pub mod manifest;
pub mod render;

use std::sync::Arc;

use async_trait::async_trait;

use crate::adapters::{Adapter, DeliveryError, Outbound};
use crate::config::SlackSettings;
use crate::core::event::Platform;
use crate::core::reply::Reply;

/// The Slack adapter.
pub struct SlackAdapter {}

impl SlackAdapter {
    /// Builds the adapter from `[slack]`, reading its tokens from the environment.
    pub fn from_settings(_s: &SlackSettings) -> anyhow::Result<SlackAdapter> {
        anyhow::bail!("the Slack adapter is not built yet")
    }
}

#[async_trait]
impl Outbound for SlackAdapter {
    fn platform(&self) -> Platform {
        Platform::Slack
    }
    async fn post(&self, _channel: &str, _reply: &Reply) -> Result<String, DeliveryError> {
        Err(DeliveryError::Permanent("not built".into()))
    }
    async fn edit(&self, _c: &str, _m: &str, _r: &Reply) -> Result<(), DeliveryError> {
        Err(DeliveryError::Permanent("not built".into()))
    }
    async fn ephemeral(&self, _c: &str, _u: &str, _r: &Reply) -> Result<(), DeliveryError> {
        Err(DeliveryError::Permanent("not built".into()))
    }
}

#[async_trait]
impl Adapter for SlackAdapter {
    fn outbound(self: Arc<Self>) -> Arc<dyn Outbound> {
        self
    }
}
