//! An in-memory adapter for tests, after errbot's test backend: [`MemoryAdapter::push`] hands
//! an event to the dispatcher through the same [`Inbound`] contract as every adapter, and
//! [`MemoryAdapter::pop`] returns what dualkey said, in order (posts, edits, ephemerals and
//! replies through the response handle).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::adapters::{Adapter, DeliveryError, Handled, Inbound, Outbound};
use crate::core::event::{InboundEvent, Platform};
use crate::core::reply::Reply;

/// Something dualkey said through the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// A new message in a channel, with the id it got.
    Post {
        channel: String,
        id: String,
        reply: Reply,
    },
    /// An edit of a message.
    Edit {
        channel: String,
        id: String,
        reply: Reply,
    },
    /// A message to one person.
    Ephemeral {
        channel: String,
        user: String,
        reply: Reply,
    },
}

impl Said {
    /// The reply.
    pub fn reply(&self) -> &Reply {
        match self {
            Said::Post { reply, .. } | Said::Edit { reply, .. } | Said::Ephemeral { reply, .. } => {
                reply
            }
        }
    }
}

/// The in-memory adapter; pretends to be `platform`.
pub struct MemoryAdapter {
    platform: Platform,
    said: Mutex<VecDeque<Said>>,
    next: AtomicU64,
}

impl MemoryAdapter {
    /// A new adapter speaking as `platform`.
    pub fn new(platform: Platform) -> Arc<MemoryAdapter> {
        Arc::new(MemoryAdapter {
            platform,
            said: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(1),
        })
    }

    /// Hands `ev` to the dispatcher and waits until it is handled.
    pub async fn push(&self, inbound: &Inbound, ev: InboundEvent) -> anyhow::Result<Handled> {
        Ok(inbound.submit(ev).0.await?)
    }

    /// The oldest thing said that was not popped yet.
    pub fn pop(&self) -> Option<Said> {
        self.lock().pop_front()
    }

    /// Everything said and not popped yet, oldest first.
    pub fn drain(&self) -> Vec<Said> {
        self.lock().drain(..).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Said>> {
        self.said.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Outbound for MemoryAdapter {
    fn platform(&self) -> Platform {
        self.platform
    }

    async fn post(&self, channel: &str, reply: &Reply) -> Result<String, DeliveryError> {
        let id = self.next.fetch_add(1, Ordering::SeqCst).to_string();
        self.lock().push_back(Said::Post {
            channel: channel.into(),
            id: id.clone(),
            reply: reply.clone(),
        });
        Ok(id)
    }

    async fn edit(
        &self,
        channel: &str,
        message_id: &str,
        reply: &Reply,
    ) -> Result<(), DeliveryError> {
        self.lock().push_back(Said::Edit {
            channel: channel.into(),
            id: message_id.into(),
            reply: reply.clone(),
        });
        Ok(())
    }

    async fn ephemeral(
        &self,
        channel: &str,
        user: &str,
        reply: &Reply,
    ) -> Result<(), DeliveryError> {
        self.lock().push_back(Said::Ephemeral {
            channel: channel.into(),
            user: user.into(),
            reply: reply.clone(),
        });
        Ok(())
    }
}

impl Adapter for MemoryAdapter {}
