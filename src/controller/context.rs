//! What every reconcile shares: the API client and per-object retry bookkeeping.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};

/// Shared state of the controllers.
pub struct Context {
    /// Client for the Kubernetes API.
    pub client: Client,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context around `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            failures: Mutex::default(),
        }
    }

    /// Counts one more failure of `object` and returns how many in a row it has had.
    pub fn record_failure<K: Resource<DynamicType = ()>>(&self, object: &K) -> u32 {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(key(object)).or_default();
        *count = count.saturating_add(1);
        *count
    }

    /// Forgets the failures of `object` after it reconciled.
    pub fn record_success<K: Resource<DynamicType = ()>>(&self, object: &K) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.remove(&key(object));
    }
}

fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    ObjectRef::from_obj(object).to_string()
}
