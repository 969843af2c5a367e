//! The reconcilers and the operator process that runs them.
//!
//! Each reconciler reads as load → decide → apply → report; the decisions are pure
//! functions in the reconciler's module. Status is written with server-side apply under
//! each controller's own field manager (see [`crate::store`]); `spec` is never written.

pub mod context;
pub mod encryption_key;
pub mod oauth_client;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use context::Context;

use crate::{Error, Result};

/// Options of the operator process.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Watch one namespace only; `None` watches all.
    pub namespace: Option<String>,
    /// What the operator allows.
    pub policy: oauth_client::decide::Policy,
    /// Name events are reported under (the pod name in a cluster).
    pub instance: Option<String>,
    /// Where and how re-encryption Jobs run.
    pub jobs: encryption_key::jobs::JobOptions,
}

/// Runs both controllers until SIGTERM or Ctrl-C, then lets in-flight reconciles
/// finish and returns.
pub async fn run(client: Client, mut options: RunOptions) -> Result<()> {
    if options.jobs.image.is_empty() {
        options.jobs.image = own_image(&client).await;
    }
    tracing::info!(image = %options.jobs.image, "re-encryption Jobs run this image");
    let context = Arc::new(Context::new(
        client.clone(),
        options.policy,
        options.jobs.clone(),
        options.instance.clone(),
    ));
    let oauth_clients = oauth_client::controller(
        api(&client, &options),
        api(&client, &options),
        api(&client, &options),
    )
    .shutdown_on_signal()
    .run(oauth_client::reconcile, error_policy, context.clone())
    .for_each(|result| async move { log_outcome("OAuthClient", result) });
    let encryption_keys = encryption_key::controller(
        api(&client, &options),
        api(&client, &options),
        api(&client, &options),
        api(&client, &options),
        api(&client, &options),
    )
    .shutdown_on_signal()
    .run(encryption_key::reconcile, error_policy, context)
    .for_each(|result| async move { log_outcome("EncryptionKey", result) });
    tracing::info!(
        namespace = options.namespace.as_deref().unwrap_or("<all>"),
        "controllers started"
    );
    futures::join!(oauth_clients, encryption_keys);
    tracing::info!("controllers stopped");
    Ok(())
}

/// The image the operator itself runs, read from its Pod ($POD_NAMESPACE/$POD_NAME): the
/// re-encryption Job runs the same binary. Outside a Pod, `keyward:<version>`.
async fn own_image(client: &Client) -> String {
    let fallback = concat!("keyward:", env!("CARGO_PKG_VERSION")).to_owned();
    let (Ok(namespace), Ok(name)) = (std::env::var("POD_NAMESPACE"), std::env::var("POD_NAME"))
    else {
        return fallback;
    };
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &namespace);
    match pods.get(&name).await {
        Ok(pod) => pod
            .spec
            .and_then(|spec| {
                let containers = spec.containers;
                containers
                    .iter()
                    .find(|container| container.name == "keyward")
                    .or(containers.first())
                    .and_then(|container| container.image.clone())
            })
            .unwrap_or(fallback),
        Err(error) => {
            tracing::warn!(%error, "cannot read the operator's own Pod; Jobs run {fallback}");
            fallback
        }
    }
}

fn api<K>(client: &Client, options: &RunOptions) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    K::DynamicType: Default,
{
    match &options.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

fn watcher_config() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

/// Logs what the controller stream reports. Reconcile failures are logged once, by
/// [`error_policy`], with the retry delay; the rest (watch and queue errors) here.
fn log_outcome<T: Debug, Q: std::error::Error + 'static>(
    kind: &str,
    result: Result<T, kube::runtime::controller::Error<Error, Q>>,
) {
    match result {
        Ok(object) => tracing::debug!(kind, ?object, "reconciled"),
        Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
        Err(error) => tracing::warn!(kind, %error, "controller error"),
    }
}

/// Retries a failed reconcile with exponential backoff, per object.
fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    let attempt = context.record_failure(object.as_ref());
    let delay = backoff(attempt);
    tracing::warn!(
        kind = %K::kind(&()), namespace = ?object.namespace(), name = %object.name_any(),
        error = %error, reason = error.metric_label(), retry_in = ?delay, "reconcile failed"
    );
    Action::requeue(delay)
}

/// Delay before retry number `attempt` (from 1): 1s, 2s, 4s, … capped at five minutes.
pub fn backoff(attempt: u32) -> Duration {
    const CAP: Duration = Duration::from_secs(300);
    let exponent = attempt.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(CAP)
}

/// Writes `status` with server-side apply as `manager`, unless it already equals
/// `current`.
///
/// Skipping the identical write keeps re-reconciles of an unchanged object from
/// touching it at all, so GitOps tools and watchers see no churn.
async fn apply_status<K, S>(
    api: &Api<K>,
    manager: &str,
    object: &K,
    current: Option<&S>,
    status: &S,
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(manager).force();
    api.patch_status(&object.name_any(), &params, &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// The objects in `store` that sit in `object`'s namespace and are `wanted`: what a watch
/// on another kind maps to.
fn in_namespace_of<K, O>(
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
fn namespaced_api<K>(client: &Client, object: &K) -> Result<Api<K>>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    let namespace = object.namespace().ok_or(Error::MissingObjectField {
        kind: "namespaced object",
        field: "metadata.namespace",
    })?;
    Ok(Api::namespaced(client.clone(), &namespace))
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
}
