//! Block Kit rendering of neutral replies (placeholder: the text fallback only).

use slack_morphism::prelude::*;

use crate::core::reply::Reply;

/// A reply as a Slack message: Block Kit blocks plus the `text` fallback.
pub fn message(reply: &Reply) -> SlackMessageContent {
    SlackMessageContent::new().with_text(reply.to_text())
}
