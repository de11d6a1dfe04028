//! One module tree per kind, each the same shape: `types` (API), `diff` (pure), `aws` (calls).

pub mod bucket;
pub mod dbinstance;
pub mod function;
pub mod instance;
pub mod table;
