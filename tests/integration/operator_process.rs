//! The operator process against the real control plane: it registers both controllers,
//! reports in status what it does (and does not yet do), leaves unchanged objects alone
//! and shuts down cleanly on SIGTERM.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition as K8sCondition;
use keyward::crd::{ConditionType, EncryptionKey, OAuthClient, find_condition};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::support::{self, Operator, WAIT, manifest};

/// True once `Ready` reports `reason` for the object's current generation.
fn ready_reason<K>(
    reason: &'static str,
    conditions: fn(&K) -> Option<&Vec<K8sCondition>>,
) -> impl Condition<K>
where
    K: Resource,
{
    move |object: Option<&K>| {
        object.is_some_and(|object| {
            let generation = object.meta().generation;
            conditions(object)
                .and_then(|conditions| find_condition(conditions, ConditionType::Ready))
                .is_some_and(|ready| {
                    ready.reason == reason && ready.observed_generation == generation
                })
        })
    }
}

fn oauth_client_conditions(client: &OAuthClient) -> Option<&Vec<K8sCondition>> {
    client.status.as_ref().map(|status| &status.conditions)
}

fn encryption_key_conditions(key: &EncryptionKey) -> Option<&Vec<K8sCondition>> {
    key.status.as_ref().map(|status| &status.conditions)
}

#[tokio::test]
async fn the_operator_reports_status_leaves_unchanged_objects_alone_and_stops_on_sigterm() {
    let cluster = support::cluster("operator-process").await;
    let kubeconfig = &support::control_plane().kubeconfig;
    let operator = Operator::start(kubeconfig, &cluster.namespace, &[]);

    let client_manifest = json!({
        "apiVersion": "keyward.io/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "portal"}, "spec": {"hashAlgorithm": "SHA-512"},
    });
    let key_manifest = json!({
        "apiVersion": "keyward.io/v1alpha1", "kind": "EncryptionKey",
        "metadata": {"name": "apim"}, "spec": {"targets": [{"kind": "Deployment", "name": "apim"}]},
    });
    for document in [&client_manifest, &key_manifest] {
        manifest::apply(&cluster.client, &cluster.namespace, "gitops", document)
            .await
            .expect("applies");
    }

    let clients: Api<OAuthClient> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let keys: Api<EncryptionKey> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let client_reported = await_condition(
        clients.clone(),
        "portal",
        ready_reason("NotImplemented", oauth_client_conditions),
    );
    let key_reported = await_condition(
        keys.clone(),
        "apim",
        ready_reason("NotImplemented", encryption_key_conditions),
    );
    tokio::time::timeout(WAIT, async {
        tokio::try_join!(client_reported, key_reported)
    })
    .await
    .expect("both resources report status in time")
    .expect("watches work");

    // Re-applying unchanged manifests, as a GitOps tool does on every sync, changes nothing.
    let before = (
        clients.get("portal").await.expect("get").resource_version(),
        keys.get("apim").await.expect("get").resource_version(),
    );
    for _ in 0..5 {
        for document in [&client_manifest, &key_manifest] {
            manifest::apply(&cluster.client, &cluster.namespace, "gitops", document)
                .await
                .expect("re-applies");
        }
    }
    // A later change of another object is a barrier: once the operator has reconciled it,
    // it has seen every earlier event too.
    let barrier = json!({
        "apiVersion": "keyward.io/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "barrier"}, "spec": {},
    });
    manifest::apply(&cluster.client, &cluster.namespace, "gitops", &barrier)
        .await
        .expect("applies");
    tokio::time::timeout(
        WAIT,
        await_condition(
            clients.clone(),
            "barrier",
            ready_reason("NotImplemented", oauth_client_conditions),
        ),
    )
    .await
    .expect("barrier reconciled in time")
    .expect("watch works");
    let after = (
        clients.get("portal").await.expect("get").resource_version(),
        keys.get("apim").await.expect("get").resource_version(),
    );
    assert_eq!(
        before, after,
        "re-applying unchanged manifests changed the objects"
    );

    let client = clients.get("portal").await.expect("get");
    let ready = find_condition(
        &client.status.as_ref().expect("status").conditions,
        ConditionType::Ready,
    )
    .expect("Ready");
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("does not issue"),
        "the message says what is missing: {}",
        ready.message
    );
    assert!(
        client.spec.client_id.is_none(),
        "the operator never writes spec"
    );

    let (status, log) = operator.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "operator exits cleanly on SIGTERM: {status}\n{log}"
    );
    assert!(
        log.contains("controllers started") && log.contains("controllers stopped"),
        "log:\n{log}"
    );
}

#[tokio::test]
async fn deleting_an_oauth_client_garbage_collects_objects_it_owns() {
    let cluster = support::cluster("garbage-collection").await;
    let clients: Api<OAuthClient> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let document = json!({
        "apiVersion": "keyward.io/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "owner"}, "spec": {},
    });
    manifest::apply(&cluster.client, &cluster.namespace, "gitops", &document)
        .await
        .expect("applies");
    let owner = clients.get("owner").await.expect("get");

    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let owned = ConfigMap {
        metadata: ObjectMeta {
            name: Some("owned".into()),
            owner_references: Some(vec![
                owner.controller_owner_ref(&()).expect("owner reference"),
            ]),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    let owned = config_maps
        .create(&PostParams::default(), &owned)
        .await
        .expect("owned object created");

    clients
        .delete("owner", &DeleteParams::default())
        .await
        .expect("owner deleted");
    let uid = owned.uid().expect("uid");
    let collected = await_condition(
        config_maps,
        "owned",
        kube::runtime::conditions::is_deleted(&uid),
    );
    tokio::time::timeout(WAIT, collected)
        .await
        .expect("kube-controller-manager's garbage collector removes the owned object in time")
        .expect("watch works");
}
