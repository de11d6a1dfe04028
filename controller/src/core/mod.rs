//! What every kind shares: API fields, conditions, errors, ownership, backoff, Events and the
//! reconcile driver.

pub mod admission;
pub mod api;
pub mod backoff;
pub mod batch;
pub mod conditions;
pub mod documents;
pub mod driver;
pub mod error;
pub mod events;
pub mod loop_guard;
pub mod names;
pub mod own_writes;
pub mod ownership;
pub mod policy;
pub mod references;
pub mod registry;
pub mod runner;
pub mod secrets;
pub mod status_writes;
