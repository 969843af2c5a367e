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
    /// The operator's metrics.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    recorder: Recorder,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
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
            recorder,
            failures: Mutex::default(),
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

fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    ObjectRef::from_obj(object).to_string()
}
