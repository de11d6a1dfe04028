//! kaws: a Kubernetes controller that keeps AWS resources matching Kubernetes objects.
#![forbid(unsafe_code)]

pub mod aws;
pub mod cli;
pub mod core;
pub mod crds;
pub mod fence;
pub mod http;
pub mod iam;
pub mod leader;
pub mod metrics;
pub mod resources;
pub mod run;
