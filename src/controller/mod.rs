//! The reconcilers and the operator process that runs them, in rooms that only ever
//! import downwards:
//!
//! - [`runtime`] runs both controllers for every watched namespace, in leadership terms;
//! - [`encryption_key`] and [`oauth_client`] are the two reconcilers, each reading as
//!   load → decide → act → status, with its own state;
//! - [`kit`] and [`context`] are what both share: watches, status writes, the namespaced
//!   API, backoff; the client, the event recorder, per-object bookkeeping;
//! - [`options`] are the operator's flags as the controllers read them.
//!
//! Status is written with server-side apply under each controller's own field manager
//! (see [`crate::store`]); `spec` is never written.

pub mod context;
pub mod encryption_key;
pub mod kit;
pub mod oauth_client;
pub mod options;
pub mod runtime;

pub use context::Context;
pub use options::{JobOptions, Policy, RunOptions};
pub use runtime::run;
