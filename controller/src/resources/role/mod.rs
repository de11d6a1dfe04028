//! IAM roles (`iam.kaws.io/v1alpha1 Role`).

pub mod aws;
pub mod diff;
pub mod types;

pub use types::{Role, RoleSpec, RoleStatus};
