//! The core's ports: what it needs from the world, defined here and implemented by the outer
//! layers (`store` for [`Store`], `clock` for [`Clock`], `services` for [`Facts`], adapters for [`Responder`]).

pub mod clock;
pub mod facts;
pub mod rows;
pub mod store;

pub use clock::Clock;
pub use facts::{Facts, Reads, ReportRequest, Responder};
pub use rows::*;
pub use store::{Backend, Store, StoreError, StoreResult, Tx};
