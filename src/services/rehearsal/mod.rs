//! Rehearsals: the pending migrations applied to a restored copy of the newest verified backup
//! before anyone approves a deploy (`[deploy] rehearsal`). `engine` restores, applies and
//! measures on a scratch database and drops it; `runner` queues them off the interaction path,
//! one per environment under a lease, and puts the result on the request's card.

pub mod engine;
pub mod runner;
