//! What every reconcile shares: the API client, the operator's policy, the event
//! recorder and per-object retry bookkeeping.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};

use super::oauth_client::decide::Policy;
use crate::FIELD_MANAGER;

/// Shared state of the controllers.
pub struct Context {
    /// Client for the Kubernetes API.
    pub client: Client,
    /// What the operator's flags allow.
    pub policy: Policy,
    /// Where and how re-encryption Jobs run.
    pub jobs: super::encryption_key::jobs::JobOptions,
    /// Keyrings shared by the OAuthClients encrypting under them.
    pub keyrings: std::sync::Arc<crate::store::keyring_cache::KeyringCache>,
    /// Secret names chosen by specs, and the objects that chose them.
    pub secret_index: std::sync::Arc<super::index::SecretIndex>,
    /// The operator's metrics.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The answers of OAuthClient reconciles that nothing has changed since.
    pub settled: std::sync::Arc<super::oauth_client::settled::Settled>,
    recorder: Recorder,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Digest of the status last written per object, to tell a lagging cache from a
    /// real change (see `apply_status`).
    written: Mutex<HashMap<String, u64>>,
}

impl Context {
    /// A context around `client`, reporting events as `instance` (the pod name).
    pub fn new(
        client: Client,
        policy: Policy,
        jobs: super::encryption_key::jobs::JobOptions,
        instance: Option<String>,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance,
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            policy,
            jobs,
            metrics,
            secret_index: std::sync::Arc::default(),
            keyrings: std::sync::Arc::default(),
            settled: std::sync::Arc::default(),
            recorder,
            failures: Mutex::default(),
            written: Mutex::default(),
        }
    }

    /// Publishes an event about `object`. `note` must never hold secret material. A
    /// failure to publish is logged, not returned: events are informational.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, reason, "cannot publish event");
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

impl Context {
    /// Drops what is kept about `object`, deleted.
    pub fn forget<K: Resource<DynamicType = ()>>(&self, object: &K) {
        let key = key(object);
        let failures = self.failures.lock();
        failures.unwrap_or_else(|p| p.into_inner()).remove(&key);
        let written = self.written.lock();
        written.unwrap_or_else(|p| p.into_inner()).remove(&key);
    }

    /// The digest of the status last written for `object`, if any.
    pub fn last_status_written<K: Resource<DynamicType = ()>>(&self, object: &K) -> Option<u64> {
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        written.get(&key(object)).copied()
    }

    /// Records that a status with `digest` was written for `object`.
    pub fn status_written<K: Resource<DynamicType = ()>>(&self, object: &K, digest: u64) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        written.insert(key(object), digest);
    }
}

/// A digest of `value`'s JSON form: equal values, equal digests.
pub fn digest<T: serde::Serialize>(value: &T) -> Result<u64, serde_json::Error> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(value)?.hash(&mut hasher);
    Ok(hasher.finish())
}

fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    ObjectRef::from_obj(object).to_string()
}
