//! End-to-end test support for kaws: a moto server, the real `kaws` binary, the repository's
//! test API server (or a real cluster via `KAWS_TEST_KUBECONFIG`), and helpers to drive them
//! with the real `kubectl` and the real AWS SDK.
#![forbid(unsafe_code)]

pub mod chaos;
pub mod cluster;
pub mod env;
pub mod fault_proxy;
pub mod fixtures;
pub mod kaws;
pub mod kubectl;
pub mod moto;

pub use env::{Env, unique_name};
