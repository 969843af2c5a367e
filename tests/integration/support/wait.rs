//! Waiting on conditions with a timeout, never on sleeps.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
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
    let condition = move |object: Option<&K>| object.is_some_and(&test);
    match tokio::time::timeout(WAIT, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(Some(object))) => object,
        Ok(Ok(None)) => panic!("{name} disappeared while waiting until {what}"),
        Ok(Err(error)) => panic!("watch of {name} failed while waiting until {what}: {error}"),
        Err(_) => {
            let last = api
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .map(|object| format!("{:?}", object.meta()));
            panic!("timed out after {WAIT:?} waiting until {what}; {name} was {last:?}")
        }
    }
}

/// Waits until `name` no longer exists.
pub async fn until_gone<K>(api: &Api<K>, name: &str, what: &str)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let gone = |object: Option<&K>| object.is_none();
    tokio::time::timeout(WAIT, await_condition(api.clone(), name, gone))
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting until {what}"))
        .unwrap_or_else(|error| panic!("watch of {name} failed: {error}"));
}

/// The condition of `type_` among `conditions`, if the object reports it for its current
/// generation.
pub fn current_condition<'a, K: Resource>(
    object: &K,
    conditions: &'a [Condition],
    type_: &str,
) -> Option<&'a Condition> {
    let generation = object.meta().generation;
    conditions
        .iter()
        .find(|condition| condition.type_ == type_ && condition.observed_generation == generation)
}
