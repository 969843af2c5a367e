//! The rotation of an EncryptionKey, in four parts with one direction between them:
//! [`machine`] decides (pure: the recorded rotation and what the cluster shows in, the
//! one next step out), [`act`] carries out that step, [`cluster`] creates, reads and
//! deletes the rotation's objects on the API server, and [`build`] builds them (pure).
//! [`progress`] reads what a re-encryption Job reports, as untrusted input, and [`scan`]
//! counts the ciphertext left under each version.
//!
//! This is where keyward could lose data: every transition is recorded in status before
//! it is acted on, so a restarted operator resumes exactly where it was, and no version
//! leaves the pods while a scan still finds ciphertext under it.

pub mod act;
pub mod build;
pub mod cluster;
pub mod machine;
pub mod progress;
pub mod scan;

pub use act::{Counted, Pods, Retirement, Turn, apply_reshape, before_retiring, rotate};
pub use machine::{Reshape, reshape};
