//! What the OAuthClient controller keeps between reconciles, its own and no one
//! else's: the operator's policy, the answers nothing has changed since, the Secret
//! names specs chose, and the keyrings its clients encrypt under.

use std::sync::Arc;

use super::index::SecretIndex;
use super::settled::Settled;
use crate::controller::options::Policy;
use crate::store::keyring_cache::KeyringCache;

/// The OAuthClient controller's own state.
#[derive(Default)]
pub struct State {
    /// What the operator's flags allow.
    pub policy: Policy,
    /// The answers of reconciles that nothing has changed since.
    pub settled: Arc<Settled>,
    /// Secret names chosen by specs, and the objects that chose them.
    pub secret_index: Arc<SecretIndex>,
    /// Keyrings shared by the clients encrypting under them.
    pub keyrings: Arc<KeyringCache>,
}

impl State {
    /// A state with nothing remembered yet, under `policy`.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// Forgets what watch events kept current: at the start of a term, the events
    /// of the time spent standing by were not seen.
    pub fn forget_unwatched(&self) {
        self.keyrings.clear();
        self.settled.clear();
    }
}
