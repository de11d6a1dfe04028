//! EC2 instances (`ec2.kaws.io/v1alpha1 Instance`).

pub mod aws;
pub mod diff;
pub mod types;

pub use types::{Instance, InstanceSpec, InstanceStatus};
