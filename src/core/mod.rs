//! `core` decides: platform-neutral events and replies, identities and roles, the command
//! registry, approval rules, the operation state machine, the audit chain and the dispatcher
//! that ties them together. Nothing here names a chat SDK.

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
