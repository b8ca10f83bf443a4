//! `adapters` talk: the only place platform payloads and SDK types appear. Each adapter
//! verifies and acknowledges platform events, turns them into [`crate::core::event::InboundEvent`]s
//! for the dispatcher, answers through a [`crate::core::dispatch::Responder`], and delivers
//! outbox messages through [`crate::outbox::ChatOut`].
//!
//! Today: [`shell`], a local terminal adapter. Slack and Discord plug in the same way.

pub mod shell;
