//! IAM instance profiles (`iam.kaws.io/v1alpha1 InstanceProfile`).

pub mod aws;
pub mod diff;
pub mod types;

pub use types::{InstanceProfile, InstanceProfileSpec, InstanceProfileStatus};
