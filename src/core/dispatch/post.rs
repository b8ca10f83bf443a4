//! Posting and the audit trail: audit events (with their audit-channel lines), chat posts and
//! card posts and edits queued in the outbox, and the channels a card or an alert goes to.

use anyhow::Context as _;

use crate::config::Route;
use crate::core::audit::{AuditRecord, NewAudit};
use crate::core::context::Core;
use crate::core::event::{ChannelRef, MessageRef};
use crate::core::notify::enqueue_posts;
use crate::core::ports::{NewOutbox, StoreResult, Tx};
use crate::core::reply::Reply;

impl Core {
    /// Appends an audit event inside `tx` and queues it for the audit channels of its
    /// environment (`audit_channel`, per platform, overridable per environment). Every 100th
    /// event also queues the chain head, so `audit verify --head` can be checked against chat.
    pub async fn audit_tx(&self, tx: &mut Box<dyn Tx>, ev: NewAudit) -> StoreResult<AuditRecord> {
        let now = self.clock.now_ms();
        let rec = tx.append_audit(&ev, now).await?;
        let channels =
            crate::core::routing::route(&self.settings, Route::Audit, rec.env.as_deref());
        if channels.is_empty() {
            return Ok(rec);
        }
        let mut lines = vec![(Some(rec.seq), Reply::public(rec.render()))];
        if rec.seq % 100 == 0 {
            lines.push((
                None,
                Reply::public(crate::core::audit::head_line(rec.seq, &rec.hash)),
            ));
        }
        for channel in &channels {
            for (seq, line) in &lines {
                tx.enqueue_audit_line(&audit_row(channel, line), *seq, now)
                    .await?;
            }
        }
        Ok(rec)
    }

    /// Appends one audit event in its own transaction.
    pub async fn audit(&self, ev: NewAudit) -> StoreResult<AuditRecord> {
        let mut tx = self.store.begin().await?;
        let rec = self.audit_tx(&mut tx, ev).await?;
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok(rec)
    }

    /// Queues the chain head (`audit head seq=N hash=H`) for every audit channel; posted at
    /// start-up.
    pub async fn post_audit_head(&self) -> anyhow::Result<()> {
        let (seq, hash) = self.store.audit_head().await?;
        let line = Reply::public(crate::core::audit::head_line(seq, &hash));
        let mut tx = self.store.begin().await?;
        for channel in crate::core::routing::route(&self.settings, Route::Audit, None) {
            tx.enqueue_audit_line(&audit_row(&channel, &line), None, self.clock.now_ms())
                .await?;
        }
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok(())
    }

    /// Queues a new message in a channel.
    pub async fn post(&self, channel: &ChannelRef, reply: &Reply) -> anyhow::Result<()> {
        self.enqueue(channel, "post", None, None, reply).await
    }

    /// Posts card `key` (`request:<id>`, `operation:<id>`) to every channel in `channels` that
    /// does not have it yet (duplicates are skipped). Later [`Core::edit_card`] calls update every copy.
    pub async fn post_card(
        &self,
        key: &str,
        channels: &[ChannelRef],
        reply: &Reply,
    ) -> anyhow::Result<()> {
        let now = self.clock.now_ms();
        let payload = serde_json::to_string(reply)?;
        let mut tx = self.store.begin().await?;
        enqueue_posts(tx.as_mut(), channels, &payload, Some(key), now).await?;
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok(())
    }

    /// Queues an edit of every copy of card `key`. Returns false when the card was never
    /// posted through [`Core::post_card`] (cards of older versions: see `legacy`).
    /// Edits of one copy collapse at delivery: only the newest is sent.
    pub async fn edit_card(&self, key: &str, reply: &Reply) -> anyhow::Result<bool> {
        let now = self.clock.now_ms();
        let payload = serde_json::to_string(reply)?;
        let mut tx = self.store.begin().await?;
        let copies = tx.card_channels(key).await?;
        for (platform, channel) in &copies {
            tx.enqueue_outbox(&card_row(key, platform, channel, "edit", &payload), now)
                .await?;
        }
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok(!copies.is_empty())
    }

    /// Edits a card: every copy posted through [`Core::post_card`], or else the one message a
    /// version before card keys recorded (`message_json`, a stored [`MessageRef`]).
    pub(super) async fn edit_card_or_legacy(
        &self,
        key: &str,
        legacy: Option<&str>,
        reply: &Reply,
    ) -> anyhow::Result<()> {
        if self.edit_card(key, reply).await? {
            return Ok(());
        }
        if let Some(message_json) = legacy {
            let msg: MessageRef =
                serde_json::from_str(message_json).context("stored message reference")?;
            self.enqueue(&msg.channel, "edit", Some(msg.id.clone()), None, reply)
                .await?;
        }
        Ok(())
    }

    async fn enqueue(
        &self,
        channel: &ChannelRef,
        op: &str,
        message_id: Option<String>,
        card_key: Option<String>,
        reply: &Reply,
    ) -> anyhow::Result<()> {
        let mut tx = self.store.begin().await?;
        tx.enqueue_outbox(
            &NewOutbox {
                platform: channel.platform.as_str().into(),
                channel: channel.id.clone(),
                op: op.into(),
                message_id,
                payload: serde_json::to_string(reply)?,
                card_key,
            },
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok(())
    }

    /// `origin` (where the command was typed, if known) and then the channels `route` names for
    /// `env` (one per enabled platform), without repeats: where a card or an alert goes.
    pub fn channels_for(
        &self,
        origin: Option<&ChannelRef>,
        route: Route,
        env: &str,
    ) -> Vec<ChannelRef> {
        let mut out: Vec<ChannelRef> = origin.into_iter().cloned().collect();
        for c in crate::core::routing::route(&self.settings, route, Some(env)) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }
}
/// An audit line (or chain head line) posted to an audit channel.
fn audit_row(channel: &ChannelRef, line: &Reply) -> NewOutbox {
    NewOutbox {
        platform: channel.platform.as_str().into(),
        channel: channel.id.clone(),
        op: "post".into(),
        message_id: None,
        payload: serde_json::to_string(line).expect("reply serializes"),
        card_key: None,
    }
}

/// An outbox row that posts or edits (`op`) card `key` in one channel.
fn card_row(key: &str, platform: &str, channel: &str, op: &str, payload: &str) -> NewOutbox {
    NewOutbox {
        platform: platform.into(),
        channel: channel.into(),
        op: op.into(),
        message_id: None,
        payload: payload.into(),
        card_key: Some(key.into()),
    }
}
