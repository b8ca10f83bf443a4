//! Chat posts through the outbox: [`enqueue_posts`] queues one post per channel inside a
//! transaction, so the posts go out exactly when that transaction commits.

use crate::core::event::ChannelRef;
use crate::core::ports::{NewOutbox, StoreResult, Tx};

/// Queues a post of `payload` (a serialized [`Reply`](crate::core::reply::Reply)) in every
/// channel of `channels`, inside `tx`, at `now`.
///
/// With a `card_key`, the post is that card: each copy is registered under the key first
/// (later edits of the card reach every copy), and a channel that already has the card is
/// skipped. Without one, every channel gets the post.
pub async fn enqueue_posts(
    tx: &mut dyn Tx,
    channels: &[ChannelRef],
    payload: &str,
    card_key: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    for c in channels {
        if let Some(key) = card_key {
            if !tx.register_card(key, c.platform.as_str(), &c.id).await? {
                continue;
            }
        }
        tx.enqueue_outbox(
            &NewOutbox {
                platform: c.platform.as_str().into(),
                channel: c.id.clone(),
                op: "post".into(),
                message_id: None,
                payload: payload.into(),
                card_key: card_key.map(str::to_string),
            },
            now,
        )
        .await?;
    }
    Ok(())
}
