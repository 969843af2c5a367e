//! Pure cryptography: secret generation, hashing and verification of client secrets.
//!
//! Nothing here talks to a cluster, logs, or formats secret material: secrets live in
//! [`secret::SecretBytes`], which zeroizes on drop and prints as `[redacted]`, and every
//! comparison of secrets or digests is constant-time.

pub mod hash;
pub mod secret;

pub use hash::{Credential, PreviousCredential, RecordError, Verdict, VerifierRecord};
pub use secret::SecretBytes;
