//! What both reconcilers are built from: lean watches, status writes that leave an
//! unchanged object alone, the namespaced API of an object, and retry backoff.

use std::fmt::Debug;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::{self, Context};
use crate::{Error, Result};

/// The API of `K` in `namespace`, or in every namespace.
pub fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// A controller of the objects of `api` whose cache holds them without
/// `managedFields` and the last-applied annotation: neither is read, and at thousands
/// of objects they would be most of the cache. `deleted` is told of each object
/// deleted, to drop what is kept about it.
pub fn lean_controller<K>(
    api: Api<K>,
    deleted: impl Fn(&K) + Send + 'static,
) -> kube::runtime::Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    use futures::TryStreamExt;
    use kube::runtime::{WatchStreamExt, reflector};
    let (reader, writer) = reflector::store();
    let events = watcher::watcher(api, watcher_config())
        .default_backoff()
        .modify(|object: &mut K| strip(object.meta_mut()))
        .map_ok(move |event| {
            if let watcher::Event::Delete(object) = &event {
                deleted(object);
            }
            event
        });
    kube::runtime::Controller::for_stream(reflector(writer, events).applied_objects(), reader)
}

/// Drops what a cached object never needs.
fn strip(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// How every watch lists: in pages of 500, so that listing ten thousand objects at
/// start never holds them all in one response (a list at any resourceVersion would
/// ignore the page size).
pub fn watcher_config() -> watcher::Config {
    watcher::Config::default().page_size(500)
}

/// Delay before retry number `attempt` (from 1): 1s, 2s, 4s, … capped at five minutes.
pub fn backoff(attempt: u32) -> Duration {
    const CAP: Duration = Duration::from_secs(300);
    let exponent = attempt.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(CAP)
}

/// The object a status is computed from: `object` as cached, unless its status is not
/// the one this process last wrote for it — the cache lags behind that write (a
/// reconcile triggered by one of our own Secret writes), or someone else wrote since —
/// then the object read afresh. Computing from a lagging cache would write the same
/// status again, with new transition times.
pub async fn latest<K, S>(
    context: &Context,
    api: &Api<K>,
    object: &K,
    status: Option<&S>,
) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let Some(written) = context.last_status_written(object) else {
        return Ok(None);
    };
    if status.map(context::digest).transpose()? == Some(written) {
        return Ok(None);
    }
    Ok(Some(api.get(&object.name_any()).await?))
}

/// Writes `status` with server-side apply as `manager`, unless it already equals
/// `current`: re-reconciles of an unchanged object do not touch it at all, so GitOps
/// tools and watchers see no churn. They are compared as written: times go to the API
/// server in whole seconds, so a time computed now equals the one stored from it.
/// Returns what the write left of the object, `None` when nothing was written.
pub async fn apply_status<K, S>(
    context: &Context,
    api: &Api<K>,
    manager: &str,
    object: &K,
    current: Option<&S>,
    status: &S,
) -> Result<Option<StatusWritten>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let wanted = serde_json::to_value(status)?;
    if current.map(serde_json::to_value).transpose()?.as_ref() == Some(&wanted) {
        return Ok(None);
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(manager).force();
    let written = api
        .patch_status(&object.name_any(), &params, &Patch::Apply(&patch))
        .await?;
    context.status_written(object, context::digest(status)?);
    Ok(Some(StatusWritten {
        resource_version: written.resource_version(),
        generation: written.meta().generation,
    }))
}

/// What a status write left of an object. The write has no precondition, so the object
/// it returns may carry a newer spec than the status was computed from.
pub struct StatusWritten {
    /// The object's resourceVersion after the write.
    pub resource_version: Option<String>,
    /// The generation of the spec the object holds after the write.
    pub generation: Option<i64>,
}

/// The objects in `store` that sit in `object`'s namespace and are `wanted`: what a watch
/// on another kind maps to.
pub fn in_namespace_of<K, O>(
    store: &Store<K>,
    object: &O,
    wanted: impl Fn(&K) -> bool,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone,
    O: Resource,
{
    let namespace = object.meta().namespace.clone();
    store
        .state()
        .iter()
        .filter(|candidate| candidate.meta().namespace == namespace && wanted(candidate))
        .map(|candidate| ObjectRef::from_obj(candidate.as_ref()))
        .collect()
}

/// The namespaced API for `object`'s own namespace.
pub fn namespaced_api<K>(client: &Client, object: &K) -> Result<Api<K>>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    let namespace = object.namespace().ok_or(Error::MissingObjectField {
        kind: "namespaced object",
        field: "metadata.namespace",
    })?;
    Ok(Api::namespaced(client.clone(), &namespace))
}

/// The names of the `K`s (of any version of their group) among `object`'s owners.
pub fn owners_of<K: Resource<DynamicType = ()>>(object: &impl Resource) -> Vec<&str> {
    object
        .owner_references()
        .iter()
        .filter(|owner| {
            owner.kind == K::kind(&())
                && owner.api_version.split_once('/').map(|(group, _)| group)
                    == Some(K::group(&()).as_ref())
        })
        .map(|owner| owner.name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn owners_of_a_kind_are_matched_by_group_and_kind() {
        use k8s_openapi::api::core::v1::Secret;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let owner = |api_version: &str, kind: &str, name: &str| OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            ..OwnerReference::default()
        };
        let mut secret = Secret::default();
        secret.metadata.owner_references = Some(vec![
            owner("keyward.io/v1alpha1", "OAuthClient", "portal"),
            owner("keyward.io/v1", "OAuthClient", "billing"),
            owner("other.io/v1alpha1", "OAuthClient", "impostor"),
            owner("keyward.io/v1alpha1", "EncryptionKey", "apim"),
        ]);
        assert_eq!(
            owners_of::<crate::crd::OAuthClient>(&secret),
            ["portal", "billing"]
        );
        assert_eq!(owners_of::<crate::crd::EncryptionKey>(&secret), ["apim"]);
    }
}
