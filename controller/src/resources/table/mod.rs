//! DynamoDB tables (`dynamodb.kaws.io/v1alpha1 Table`).

pub mod aws;
pub mod diff;
pub mod types;

pub use types::{Table, TableSpec, TableStatus};
