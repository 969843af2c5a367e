//! The operator process's controllers: both reconcilers for every watched namespace,
//! run for as long as this replica leads, each reconcile measured and its panics
//! contained to the object it was about.

use std::fmt::Debug;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};

use super::context::{Context, Notice};
use super::kit::{api, backoff};
use super::options::{JobOptions, RunOptions};
use super::{encryption_key, oauth_client};
use crate::leader::{Role, RoleCell};
use crate::metrics::Metrics;
use crate::{Error, Result};

/// Runs both controllers until SIGTERM or Ctrl-C, then lets in-flight reconciles
/// finish and returns. With leader election, only while this replica holds the lease.
pub async fn run(
    client: Client,
    mut options: RunOptions,
    metrics: Arc<Metrics>,
    role: Arc<RoleCell>,
) -> Result<()> {
    if options.jobs.image.is_empty() {
        options.jobs.image = own_image(&client).await;
    }
    tracing::info!(image = %options.jobs.image, "re-encryption Jobs run this image");
    options.jobs.own_account = own_account(&client).await;
    let context = Arc::new(Context::new(
        client.clone(),
        options.instance.clone(),
        metrics.clone(),
    ));
    let controllers = Controllers {
        config: kube::runtime::controller::Config::default().concurrency(options.concurrency),
        context,
        clients: Arc::new(oauth_client::State::new(options.policy)),
        job_options: Arc::new(options.jobs.clone()),
    };
    let term = || run_controllers(&client, &options.namespaces, &controllers, &metrics);
    match options.election.clone() {
        Some(election) => {
            tracing::info!(
                lease = %format!("{}/{}", election.namespace, election.lease_name),
                identity = %election.identity,
                "leader election on"
            );
            crate::leader::lead(client.clone(), election, &role, term).await?;
        }
        None => {
            role.set(Role::Leading);
            term().await;
            role.set(Role::Stopping);
        }
    }
    tracing::info!("controllers stopped");
    Ok(())
}

/// What every term of the controllers runs with.
struct Controllers {
    config: kube::runtime::controller::Config,
    /// What both controllers share.
    context: Arc<Context>,
    /// The OAuthClient controller's own state.
    clients: Arc<oauth_client::State>,
    /// The EncryptionKey controller's: where and how re-encryption Jobs run.
    job_options: Arc<JobOptions>,
}

/// One term of the controllers: both of them for every watched namespace, until SIGTERM
/// (or until the future is dropped, when leadership is lost).
async fn run_controllers(
    client: &Client,
    namespaces: &[String],
    controllers: &Controllers,
    metrics: &Arc<Metrics>,
) {
    let Controllers {
        config,
        context,
        clients,
        job_options,
    } = controllers;
    let scopes = scopes(namespaces);
    clients.forget_unwatched();
    let mut running = Vec::new();
    let (mut client_caches, mut key_caches) = (Vec::new(), Vec::new());
    for scope in &scopes {
        let oauth_clients = oauth_client::controller(
            api(client, *scope),
            api(client, *scope),
            api(client, *scope),
            context.clone(),
            clients.clone(),
        );
        client_caches.push(oauth_clients.store());
        running.push(
            oauth_clients
                .with_config(config.clone())
                .shutdown_on_signal()
                .run(
                    move |object, context: Arc<Context>| {
                        let state = clients.clone();
                        async move {
                            let reconcile =
                                oauth_client::reconcile(object.clone(), context.clone(), state);
                            measured("OAuthClient", &context, object, reconcile).await
                        }
                    },
                    error_policy,
                    context.clone(),
                )
                .for_each(|result| async move { log_outcome("OAuthClient", result) })
                .boxed(),
        );
        let encryption_keys = encryption_key::controller(
            api(client, *scope),
            api(client, *scope),
            api(client, *scope),
            api(client, *scope),
            api(client, *scope),
            context.clone(),
        );
        key_caches.push(encryption_keys.store());
        running.push(
            encryption_keys
                .with_config(config.clone())
                .shutdown_on_signal()
                .run(
                    move |object, context: Arc<Context>| {
                        let job_options = job_options.clone();
                        async move {
                            let reconcile = encryption_key::reconcile(
                                object.clone(),
                                context.clone(),
                                job_options,
                            );
                            measured("EncryptionKey", &context, object, reconcile).await
                        }
                    },
                    error_policy,
                    context.clone(),
                )
                .for_each(|result| async move { log_outcome("EncryptionKey", result) })
                .boxed(),
        );
    }
    // The metrics read these caches only while this term lasts, however it ends.
    let _term = Term::begin(metrics.clone(), client_caches, key_caches);
    tracing::info!(
        namespaces = %if namespaces.is_empty() { "<all>".to_owned() } else { namespaces.join(",") },
        "controllers started"
    );
    futures::future::join_all(running).await;
}

/// The scopes the controllers run over: every namespace once (a namespace named twice
/// would get two controller sets acting on the same objects), or the whole cluster.
fn scopes(namespaces: &[String]) -> Vec<Option<&str>> {
    if namespaces.is_empty() {
        return vec![None];
    }
    let unique: std::collections::BTreeSet<&str> = namespaces.iter().map(String::as_str).collect();
    unique.into_iter().map(Some).collect()
}

/// Marks a term of the controllers in the metrics, from start to drop.
struct Term(Arc<Metrics>);

impl Term {
    fn begin(
        metrics: Arc<Metrics>,
        clients: Vec<Store<crate::crd::OAuthClient>>,
        keys: Vec<Store<crate::crd::EncryptionKey>>,
    ) -> Self {
        metrics.lead(clients, keys, true);
        Self(metrics)
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        self.0.lead(Vec::new(), Vec::new(), false);
    }
}

/// Runs one reconcile of `object`, counting it and its duration (and its error) in the
/// metrics. A panic inside it is caught and becomes a failed reconcile of that object
/// only (see [`panicked`]): whatever one object holds, the process keeps serving every
/// other, and the object is retried with backoff like any failure.
async fn measured<K: Resource<DynamicType = ()>>(
    controller: &'static str,
    context: &Context,
    object: Arc<K>,
    reconcile: impl std::future::Future<Output = Result<Action>>,
) -> Result<Action> {
    let started = std::time::Instant::now();
    // Nothing the reconcile shares outlives a panic in a broken state: the shared maps
    // behind mutexes are read through poisoning, and the caches are the watches'.
    let result = match std::panic::AssertUnwindSafe(reconcile).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => {
            let message = crate::telemetry::panic_message(payload.as_ref());
            Err(panicked(context, object.as_ref(), &message).await)
        }
    };
    context.metrics.reconciled(
        controller,
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    result
}

/// The image re-encryption Jobs run when the operator cannot read its own Pod: the
/// released image of this version, fully qualified, so no registry a node is configured
/// to search first can stand in for it.
pub const FALLBACK_IMAGE: &str = concat!("ghcr.io/keyward/keyward:", env!("CARGO_PKG_VERSION"));

/// Reports a reconcile of `object` that panicked: a log line naming the object and a
/// Warning Event on it. The panic's message comes from keyward's own code, never from a
/// value it read, so it may be logged (cut short, see
/// [`crate::telemetry::panic_message`]); it stays out of the Event, which any reader of
/// the namespace sees.
async fn panicked<K: Resource<DynamicType = ()>>(
    context: &Context,
    object: &K,
    message: &str,
) -> Error {
    let kind = K::kind(&()).into_owned();
    let name = format!(
        "{}/{}",
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.meta().name.as_deref().unwrap_or_default()
    );
    tracing::error!(kind, object = %name, panic = %message, "reconcile panicked; the object is retried, the operator keeps running");
    context
        .publish(
            object,
            Notice::warning(
                "ReconcilePanicked",
                "Reconcile",
                format!(
                    "keyward hit an internal error reconciling {kind} {name}; it retries with backoff. The operator log names the error: please report it"
                ),
            ),
        )
        .await;
    Error::ReconcilePanicked { kind, name }
}

/// The image the operator itself runs, read from its Pod ($POD_NAMESPACE/$POD_NAME): the
/// re-encryption Job runs the same binary. Outside a Pod, [`FALLBACK_IMAGE`].
async fn own_image(client: &Client) -> String {
    let fallback = FALLBACK_IMAGE.to_owned();
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

/// The ServiceAccount the operator itself runs as (namespace, name), read from its Pod
/// ($POD_NAMESPACE/$POD_NAME), which no Job template may borrow. Outside a Pod, none.
async fn own_account(client: &Client) -> Option<(String, String)> {
    let (Ok(namespace), Ok(name)) = (std::env::var("POD_NAMESPACE"), std::env::var("POD_NAME"))
    else {
        return None;
    };
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &namespace);
    match pods.get(&name).await {
        Ok(pod) => {
            let account = encryption_key::rotation::build::effective_account(pod.spec.as_ref());
            Some((namespace, account.to_owned()))
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the operator's own Pod to learn its ServiceAccount");
            None
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_namespace_named_twice_is_watched_once() {
        let named = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert_eq!(scopes(&named(&[])), vec![None]);
        assert_eq!(
            scopes(&named(&["apps", "billing", "apps"])),
            vec![Some("apps"), Some("billing")]
        );
    }

    #[test]
    fn the_fallback_image_names_its_registry_and_version() {
        let (repository, tag) = FALLBACK_IMAGE.rsplit_once(':').expect("a tag");
        let registry = repository.split('/').next().unwrap_or_default();
        assert!(
            registry.contains('.'),
            "{FALLBACK_IMAGE} names a registry host"
        );
        assert_eq!(tag, env!("CARGO_PKG_VERSION"));
    }

    /// A context whose API server refuses every connection: the Event of a panic is
    /// attempted and its failure only logged.
    fn offline_context() -> Arc<Context> {
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("URL"));
        let client = Client::try_from(config).expect("client");
        Arc::new(Context::new(client, None, Arc::new(Metrics::new())))
    }

    #[tokio::test]
    async fn a_reconcile_that_panics_fails_its_object_is_counted_and_backs_off() {
        let context = offline_context();
        let mut client: crate::crd::OAuthClient = serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.io/v1alpha1",
            "kind": "OAuthClient",
            "metadata": {"namespace": "apps", "name": "portal"},
            "spec": {},
        }))
        .expect("an OAuthClient");
        client.metadata.uid = Some("0a4c".to_owned());
        let client = Arc::new(client);
        let reconcile = async {
            let (failed, contended) = (std::hint::black_box(-1_i64), 0);
            let _ = contended.clamp(0, failed);
            Ok(Action::await_change())
        };
        let result = measured("OAuthClient", &context, client.clone(), reconcile).await;
        let error = result.expect_err("the panic is a failed reconcile");
        assert!(
            matches!(&error, Error::ReconcilePanicked { kind, name } if kind == "OAuthClient" && name == "apps/portal"),
            "{error:?}"
        );
        assert_eq!(error.metric_label(), "reconcile_panicked");
        let metrics = context.metrics.encode();
        assert!(
            metrics
                .lines()
                .any(|line| line.contains("reconcile_panicked")
                    && line.contains("OAuthClient")
                    && line.ends_with(" 1")),
            "{metrics}"
        );
        // It backs off like any failure, and the next reconcile of it runs as usual.
        let first = error_policy(client.clone(), &error, context.clone());
        let second = error_policy(client.clone(), &error, context.clone());
        assert_eq!(first, Action::requeue(Duration::from_secs(1)));
        assert_eq!(second, Action::requeue(Duration::from_secs(2)));
        let again = measured("OAuthClient", &context, client, async {
            Ok(Action::await_change())
        })
        .await;
        assert!(again.is_ok());
    }

    #[test]
    fn the_release_profile_unwinds_so_a_panic_fails_one_reconcile_only() {
        let manifest: toml::Table =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
                .expect("Cargo.toml")
                .parse()
                .expect("Cargo.toml parses");
        let profiles = manifest
            .get("profile")
            .and_then(|profiles| profiles.as_table());
        for (name, profile) in profiles.into_iter().flatten() {
            assert_ne!(
                profile.get("panic").and_then(|panic| panic.as_str()),
                Some("abort"),
                "profile {name} aborts on panic: a panic in one reconcile would stop the operator"
            );
        }
        // Nor may the release build or the image ask for it behind the manifest's back.
        for file in [
            "hack/release-build.sh",
            "Containerfile",
            ".cargo/config.toml",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let text = std::fs::read_to_string(path).unwrap_or_default();
            assert!(
                !text.replace(' ', "").contains("panic=abort")
                    && !text.replace(' ', "").contains("panic=\"abort\""),
                "{file} builds with panic=abort"
            );
        }
    }
}
