//! IAM managed policies (`iam.kaws.io/v1alpha1 Policy`).

pub mod aws;
pub mod diff;
pub mod types;

pub use types::{Policy, PolicySpec, PolicyStatus};
