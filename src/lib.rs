//! keyward: a Kubernetes operator for the secrets of an API-management platform.
//!
//! - [`crd`]: the `OAuthClient` and `EncryptionKey` resources (group `keyward.io`).
//! - [`controller`]: the reconcilers and the operator process that runs them.
//! - [`names`]: the names derived for the objects of a key's rotations, within their limits.
//! - [`store`]: keyward's own Secrets, and the one safe way to write them.
//! - [`reencrypt`]: the re-encryption Job's run and the verification scan of a key rotation.
//! - [`status_report`]: `keyward status`, a key's or client's state from what the operator wrote.
//! - [`database`]: the census and online rewrite of WSO2 ciphertext in PostgreSQL and MySQL.
//! - [`telemetry`]: logging setup; [`metrics`]: Prometheus metrics.
//! - [`error`]: the error type.

pub mod controller;
pub mod crd;
pub mod crypto;
pub mod database;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod pacer;
pub mod reencrypt;
pub mod status_report;
pub mod store;
pub mod telemetry;
pub mod tools;
pub mod workload;

pub use error::{Error, Result};

/// The name keyward reports events as.
pub const FIELD_MANAGER: &str = "keyward";
