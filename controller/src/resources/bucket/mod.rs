//! S3 buckets (`s3.kaws.io/v1alpha1 Bucket`).

pub mod aws;
pub mod diff;
pub mod types;

pub use types::{Bucket, BucketSpec, BucketStatus};
