//! `core` decides: platform-neutral events and replies, identities and roles, the command
//! registry, approval rules, the operation state machine, the audit chain and the dispatcher
//! that ties them together. Nothing here names a chat SDK, and nothing imports an outer module:
//! what the core needs from the world is a port in [`ports`], implemented outside.
//!
//! [`context::Core`] is the dispatcher's context; [`dispatch`] runs commands, requests and votes
//! on it, and builds cards; [`invocation::Invocation`] is what a command's `run` gets;
//! [`window`] holds the monitoring window rules; [`notify::enqueue_posts`] queues a post to
//! channels; [`routing`] picks the channels.

pub mod approval;
pub mod audit;
pub mod command;
pub mod complete;
pub mod context;
pub mod dispatch;
pub mod event;
pub mod human;
pub mod identity;
pub mod invocation;
pub mod meter;
pub mod notify;
pub mod operation;
pub mod ports;
pub mod reply;
pub mod routing;
pub mod window;
