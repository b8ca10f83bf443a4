//! What each step action does when the worker runs it: one function per action, grouped by kind
//! (app, backup, deploy, rollback, restore, resolve, checks), and the audit observer they share.

pub(crate) mod app;
pub(crate) mod audit;
pub(crate) mod backup;
pub(crate) mod checks;
pub(crate) mod deploy;
pub(crate) mod resolve;
pub(crate) mod restore;
pub(crate) mod rollback;
