//! The operator process against the real control plane: it runs both controllers,
//! leaves unchanged objects alone and shuts down cleanly on SIGTERM.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use keyward::crd::{EncryptionKey, OAuthClient};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::support::{self, Operator, manifest, wait};

#[tokio::test]
async fn the_operator_runs_both_controllers_leaves_unchanged_objects_alone_and_stops_on_sigterm() {
    let cluster = support::cluster("operator-process").await;
    let operator = Operator::start(
        &support::control_plane().kubeconfig,
        &cluster.namespace,
        &[],
    );

    let key_manifest = json!({
        "apiVersion": "keyward.io/v1alpha1", "kind": "EncryptionKey",
        "metadata": {"name": "apim"}, "spec": {"targets": [{"kind": "Deployment", "name": "apim"}]},
    });
    let client_manifest = json!({
        "apiVersion": "keyward.io/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "portal"}, "spec": {},
    });
    for document in [&key_manifest, &client_manifest] {
        manifest::apply(&cluster.client, &cluster.namespace, "gitops", document)
            .await
            .expect("applies");
    }
    let keys: Api<EncryptionKey> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let clients: Api<OAuthClient> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    wait::until(
        &keys,
        "apim",
        "the EncryptionKey reports a missing target",
        |key| wait::ready_reason(key).as_deref() == Some("TargetNotFound"),
    )
    .await;
    wait::until(&clients, "portal", "the OAuthClient is issued", |client| {
        wait::ready_reason(client).as_deref() == Some("Issued")
    })
    .await;

    // Re-applying the unchanged manifest, as a GitOps tool does on every sync, changes
    // nothing; the OAuthClient issued after it is the barrier that proves the operator
    // has seen those events.
    let before = keys.get("apim").await.expect("get").resource_version();
    for _ in 0..5 {
        manifest::apply(&cluster.client, &cluster.namespace, "gitops", &key_manifest)
            .await
            .expect("re-applies");
    }
    let barrier = json!({
        "apiVersion": "keyward.io/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "barrier"}, "spec": {},
    });
    manifest::apply(&cluster.client, &cluster.namespace, "gitops", &barrier)
        .await
        .expect("applies");
    wait::until(&clients, "barrier", "the barrier is issued", |client| {
        wait::ready_reason(client).as_deref() == Some("Issued")
    })
    .await;
    assert_eq!(
        keys.get("apim").await.expect("get").resource_version(),
        before,
        "re-applying changed the object"
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
    config_maps
        .create(&PostParams::default(), &owned)
        .await
        .expect("owned object created");
    clients
        .delete("owner", &DeleteParams::default())
        .await
        .expect("owner deleted");
    wait::until_gone(
        &config_maps,
        "owned",
        "kube-controller-manager's garbage collector removes the owned object",
    )
    .await;
    assert!(owner.uid().is_some());
}
