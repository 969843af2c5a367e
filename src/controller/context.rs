//! What both controllers share: the API client, the event recorder, the metrics and
//! per-object bookkeeping (failures in a row, the status last written). Each
//! controller's own state lives with it.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};

use crate::FIELD_MANAGER;

/// The state both controllers share.
pub struct Context {
    /// Client for the Kubernetes API.
    pub client: Client,
    /// The operator's metrics.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
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
            metrics,
            recorder,
            failures: Mutex::default(),
            written: Mutex::default(),
        }
    }

    /// Publishes `notice` as an Event about `object`. A failure to publish is logged, not
    /// returned: events are informational.
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, object: &K, notice: Notice) {
        let event = Event {
            type_: notice.type_,
            reason: notice.reason.to_owned(),
            note: Some(notice.note),
            action: notice.action.to_owned(),
            secondary: None,
        };
        let reason = notice.reason;
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

/// An Event keyward publishes about one of its objects. Its note is read by anyone who
/// may read the namespace's Events: it must never hold secret material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Normal, or Warning for what needs someone's attention.
    pub type_: EventType,
    /// Why, in one CamelCase word: the reason of the controller's vocabulary.
    pub reason: &'static str,
    /// What keyward did or tried, in one CamelCase word.
    pub action: &'static str,
    /// What happened, in a sentence naming the objects concerned.
    pub note: String,
}

impl Notice {
    /// A Normal Event: something keyward did.
    pub fn normal(reason: &'static str, action: &'static str, note: impl Into<String>) -> Self {
        Self {
            type_: EventType::Normal,
            reason,
            action,
            note: note.into(),
        }
    }

    /// A Warning Event: something that needs someone's attention.
    pub fn warning(reason: &'static str, action: &'static str, note: impl Into<String>) -> Self {
        Self {
            type_: EventType::Warning,
            ..Self::normal(reason, action, note)
        }
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
