//! RDS DB instances (`rds.kaws.io/v1alpha1 DBInstance`).

pub mod aws;
pub mod diff;
pub mod secrets;
pub mod types;

pub use types::{DBInstance, DBInstanceSpec, DBInstanceStatus};
