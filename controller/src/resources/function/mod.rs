//! Lambda functions (`lambda.kaws.io/v1alpha1 Function`).

pub mod aws;
pub mod diff;
pub mod types;

pub use types::{Function, FunctionSpec, FunctionStatus};
