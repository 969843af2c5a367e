//! keyward: a Kubernetes operator for the secrets of an API-management platform.
//!
//! - [`crd`]: the `OAuthClient` and `EncryptionKey` resources (group `keyward.io`).
//! - [`controller`]: the reconcilers and the operator process that runs them.
//! - [`telemetry`]: logging setup.
//! - [`error`]: the error type.

pub mod controller;
pub mod crd;
pub mod crypto;
pub mod error;
pub mod telemetry;
pub mod tools;
pub mod workload;

pub use error::{Error, Result};

/// The field manager keyward writes with, and the name it reports events as.
pub const FIELD_MANAGER: &str = "keyward";
