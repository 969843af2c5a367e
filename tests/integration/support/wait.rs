//! Waiting on conditions with a timeout, never on sleeps.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use keyward::crd::{EncryptionKey, OAuthClient};
use kube::Resource;
use kube::api::Api;
use kube::runtime::wait::await_condition;
use serde::de::DeserializeOwned;

use super::WAIT;

/// Waits until `object/name` satisfies `test`, then returns it; panics with `what` after
/// [`WAIT`].
pub async fn until<K>(api: &Api<K>, name: &str, what: &str, test: impl Fn(&K) -> bool) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    until_within(api, name, what, WAIT, test).await
}

/// Waits up to `timeout` until `object/name` satisfies `test`, then returns it: for what
/// takes longer than [`WAIT`], such as a whole key rotation.
pub async fn until_within<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    test: impl Fn(&K) -> bool,
) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let condition = move |object: Option<&K>| object.is_some_and(&test);
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(Some(object))) => object,
        Ok(Ok(None)) => panic!("{name} disappeared while waiting until {what}"),
        Ok(Err(error)) => panic!("watch of {name} failed while waiting until {what}: {error}"),
        Err(_) => {
            // The whole object, status included, without the noise of managedFields.
            let last = api.get_opt(name).await.ok().flatten().map(|mut object| {
                object.meta_mut().managed_fields = None;
                format!("{object:?}")
            });
            panic!("timed out after {timeout:?} waiting until {what}; {name} was {last:?}")
        }
    }
}

/// Waits until `name` reports `Ready=status` with `reason` for its current generation.
pub async fn until_ready<K>(api: &Api<K>, name: &str, status: &str, reason: &str) -> K
where
    K: Conditioned + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let what = format!("{name} is Ready={status} ({reason})");
    until(api, name, &what, |object| {
        ready(object) == Some((status.to_owned(), reason.to_owned()))
    })
    .await
}

/// Waits until `name` no longer exists.
pub async fn until_gone<K>(api: &Api<K>, name: &str, what: &str)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    until_gone_within(api, name, what, WAIT).await;
}

/// Waits up to `timeout` until `name` no longer exists: for what takes longer than
/// [`WAIT`], such as kube-controller-manager's garbage collector discovering a kind
/// created after it started.
pub async fn until_gone_within<K>(api: &Api<K>, name: &str, what: &str, timeout: Duration)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let gone = |object: Option<&K>| object.is_none();
    tokio::time::timeout(timeout, await_condition(api.clone(), name, gone))
        .await
        .unwrap_or_else(|_| panic!("timed out after {timeout:?} waiting until {what}"))
        .unwrap_or_else(|error| panic!("watch of {name} failed: {error}"));
}

/// Polls `test` (something outside the API, such as a file a process writes) until it
/// holds; panics with `what` after `timeout`.
pub async fn until_true(what: &str, timeout: Duration, test: impl Fn() -> bool) {
    let polled = async {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        while !test() {
            every.tick().await;
        }
    };
    tokio::time::timeout(timeout, polled)
        .await
        .unwrap_or_else(|_| panic!("timed out after {timeout:?} waiting until {what}"));
}

/// A keyward resource, whose status conditions tests read.
pub trait Conditioned: Resource {
    fn conditions(&self) -> Option<&[Condition]>;
}

impl Conditioned for OAuthClient {
    fn conditions(&self) -> Option<&[Condition]> {
        self.status
            .as_ref()
            .map(|status| status.conditions.as_slice())
    }
}

impl Conditioned for EncryptionKey {
    fn conditions(&self) -> Option<&[Condition]> {
        self.status
            .as_ref()
            .map(|status| status.conditions.as_slice())
    }
}

/// The `Ready` condition's status and reason, if the object reports it for its current
/// generation.
pub fn ready<K: Conditioned>(object: &K) -> Option<(String, String)> {
    condition(object, "Ready")
}

/// The status and reason of the condition of `type_`, if the object reports it for its
/// current generation.
pub fn condition<K: Conditioned>(object: &K, type_: &str) -> Option<(String, String)> {
    let generation = object.meta().generation;
    object
        .conditions()?
        .iter()
        .find(|condition| condition.type_ == type_ && condition.observed_generation == generation)
        .map(|condition| (condition.status.clone(), condition.reason.clone()))
}

/// The condition of `type_`, whatever generation it was written for (unlike
/// [`condition`]): for what a test reads of it beyond status and reason.
pub fn find_condition<'a, K: Conditioned>(object: &'a K, type_: &str) -> Option<&'a Condition> {
    object
        .conditions()?
        .iter()
        .find(|condition| condition.type_ == type_)
}

/// The `Ready` reason of `object`, as [`ready`] finds it.
pub fn ready_reason<K: Conditioned>(object: &K) -> Option<String> {
    ready(object).map(|(_, reason)| reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An EncryptionKey at generation 2 whose `Ready` condition was written for
    /// `observed`.
    fn key_ready_for(observed: i64) -> EncryptionKey {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.io/v1alpha1", "kind": "EncryptionKey",
            "metadata": {"name": "apim", "generation": 2},
            "spec": {},
            "status": {"conditions": [{
                "type": "Ready", "status": "False", "reason": "KeyringMissing",
                "message": "the keyring Secret apim-keyring is gone",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": observed,
            }]},
        }))
        .expect("an EncryptionKey")
    }

    #[test]
    fn a_condition_counts_for_the_current_generation_only_but_can_be_found_for_any() {
        let current = key_ready_for(2);
        let expected = Some(("False".to_owned(), "KeyringMissing".to_owned()));
        assert_eq!(ready(&current), expected);
        assert_eq!(ready_reason(&current).as_deref(), Some("KeyringMissing"));

        let stale = key_ready_for(1);
        assert_eq!(ready(&stale), None, "written for an older generation");
        let found = find_condition(&stale, "Ready").expect("found whatever its generation");
        assert_eq!(found.message, "the keyring Secret apim-keyring is gone");
        assert!(find_condition(&stale, "Distributed").is_none());
    }
}
