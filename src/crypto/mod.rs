//! Pure cryptography: secret generation, hashing and verification of client secrets,
//! the AES-256-GCM keyring, the ciphertext envelope, and WSO2's own ciphertext format.
//!
//! Nothing here talks to a cluster, logs, or formats secret material: secrets live in
//! [`secret::SecretBytes`], which zeroizes on drop and prints as `[redacted]`, and every
//! comparison of secrets or digests is constant-time.

pub mod envelope;
pub mod hash;
pub mod keyring;
pub mod secret;
pub mod wso2;

pub use hash::{
    Credential, HashAlgorithm, PreviousCredential, RecordError, Verdict, VerifierRecord,
};
pub use keyring::{KeyMaterial, Keyring, VersionState};
pub use secret::SecretBytes;
