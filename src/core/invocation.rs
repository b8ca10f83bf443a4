//! What a command file's `run` gets: the [`Invocation`] of one parsed, authorized command
//! (the core, the event, who sent it and how to answer), with the few calls commands share.

use crate::core::context::Core;
use crate::core::event::InboundEvent;
use crate::core::identity::Operator;
use crate::core::operation::OperationKind;
use crate::core::ports::{ReportRequest, Responder};
use crate::core::reply::Reply;

/// One parsed, authorized command being run: what a command file's `run` gets.
pub struct Invocation<'a> {
    /// The core.
    pub core: &'a Core,
    /// The event.
    pub ev: &'a InboundEvent,
    /// Who sent it.
    pub who: &'a Operator,
    /// How to answer the sender.
    pub out: &'a dyn Responder,
}

impl Invocation<'_> {
    /// Answers the sender with text only they see.
    pub async fn reply(&self, text: String) -> anyhow::Result<()> {
        self.out.respond(Reply::ephemeral(text)).await
    }

    /// Answers the sender with a report from the facts port.
    pub async fn report(&self, what: ReportRequest) -> anyhow::Result<()> {
        let r = self.core.facts.report(self.core.reads(), what).await?;
        self.out.respond(r).await
    }

    /// Plans an operation and records its request (or queues it when it needs no approval).
    pub async fn request(&self, kind: OperationKind, env: &str) -> anyhow::Result<()> {
        self.core
            .request_operation(self.ev, self.who, kind, env, self.out)
            .await
    }
}
