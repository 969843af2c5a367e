//! What keyward must never do, against the real control plane: destroy a key because
//! its EncryptionKey was deleted, take over a Secret it does not own, let the verifier
//! and the plaintext share a Secret, stop on a bad annotation, delete a Secret that
//! changed since it read it, leave workloads on an old distribution, ignore a rotation it
//! cannot perform, swap key material, call a record ready that no longer decrypts, echo
//! what a Secret holds in status or events, or call an encrypted client ready before the
//! pods hold its key.
//!
//! Each test is named after what a user relies on; the bad-manifest corpus covers the
//! mistakes the API server refuses at apply time.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use keyward::crd::{EncryptionKey, OAuthClient};
use keyward::crypto::secret::generate_client_id;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams,
    PostParams,
};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;

use crate::support::api::{clients, deployments, keys, secrets};
use crate::support::encryption_key::{apply_key, key_until, user_secret};
use crate::support::events::until_event;
use crate::support::oauth_client::{apply_client, client_until, delivered_secret, keyward_verify};
use crate::support::operator::operator;
use crate::support::workload::{deploy, deployment_manifest, rolled_out, running_pods};
use crate::support::{self, TestCluster, manifest, wait};

/// How long kube-controller-manager's garbage collector may take to collect what an
/// EncryptionKey owned: it notices a kind created after it started only at its next
/// discovery (every 30 s).
const GARBAGE_COLLECTION: Duration = Duration::from_secs(120);

/// An instant at the very end of the range timestamps can hold: adding any duration to it
/// overflows.
const LAST_INSTANT: &str = "9999-12-30T22:00:00Z";

/// An instant before year 1, which timestamps hold but the API server refuses in status.
const BEFORE_YEAR_ONE: &str = "-000001-06-01T00:00:00Z";

/// An instant past the end of that range.
const BEYOND_LAST_INSTANT: &str = "9999-12-31T23:59:59Z";

fn encrypted_under(key: &str) -> serde_json::Value {
    json!({"secretType": "Encrypted", "encryptionKeyRef": {"name": key}})
}

/// The message of condition `type_`.
fn message<K: wait::Conditioned>(object: &K, type_: &str) -> String {
    wait::find_condition(object, type_)
        .map(|condition| condition.message.clone())
        .unwrap_or_default()
}

/// When condition `type_` last changed status.
fn transition<K: wait::Conditioned>(object: &K, type_: &str) -> Option<Time> {
    wait::find_condition(object, type_).map(|condition| condition.last_transition_time.clone())
}

/// `(version, fingerprint)` of every key version the status lists.
fn versions(key: &EncryptionKey) -> Vec<(i64, String)> {
    key.status
        .iter()
        .flat_map(|status| &status.versions)
        .map(|version| (version.version, version.fingerprint.clone()))
        .collect()
}

/// The field managers of `object`, with the subresource each wrote (empty for the main
/// resource).
fn managers<K: Resource>(object: &K) -> Vec<(String, String)> {
    object
        .meta()
        .managed_fields
        .iter()
        .flatten()
        .map(|entry| {
            (
                entry.manager.clone().unwrap_or_default(),
                entry.subresource.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn has_manager<K: Resource>(object: &K, manager: &str, subresource: &str) -> bool {
    managers(object)
        .iter()
        .any(|(m, s)| m == manager && s == subresource)
}

/// Merge-patches `data[key]` of Secret `name` to `value`, as a user editing it would.
async fn set_secret_data(cluster: &TestCluster, name: &str, key: &str, value: &[u8]) -> Secret {
    let patch = json!({"data": {key: STANDARD.encode(value)}});
    secrets(cluster)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|error| panic!("Secret {name} patched: {error}"))
}

async fn annotate_secret(cluster: &TestCluster, name: &str, annotation: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {annotation: value}}});
    secrets(cluster)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|error| panic!("Secret {name} annotated: {error}"));
}

/// A string that appears nowhere unless a test put it there.
fn marker() -> String {
    format!("MARKER-{}", generate_client_id().expect("randomness"))
}

/// Asserts that `marker` appears neither in `status` nor in any event of the namespace.
async fn assert_marker_nowhere<S: Serialize>(
    cluster: &TestCluster,
    marker: &str,
    what: &str,
    status: &S,
) {
    let status = serde_json::to_string(status).expect("status serializes");
    assert!(
        !status.contains(marker),
        "{what}: Secret content appears in status ({} bytes of status)",
        status.len()
    );
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let echoing: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events list")
        .into_iter()
        .filter(|event| {
            serde_json::to_string(event)
                .expect("event serializes")
                .contains(marker)
        })
        .map(|event| {
            format!(
                "{} about {}",
                event.reason.unwrap_or_default(),
                event.involved_object.name.unwrap_or_default()
            )
        })
        .collect();
    assert!(
        echoing.is_empty(),
        "{what}: Secret content appears in events {echoing:?}"
    );
}

/// Deletes EncryptionKey `name` and waits until the garbage collector has removed what it
/// owned (its distribution Secret).
async fn delete_key(cluster: &TestCluster, name: &str) {
    keys(cluster)
        .delete(name, &DeleteParams::default())
        .await
        .expect("EncryptionKey deleted");
    wait::until_gone(&keys(cluster), name, "the EncryptionKey is deleted").await;
    wait::until_gone_within(
        &secrets(cluster),
        &format!("{name}-distribution"),
        "the garbage collector removes the distribution Secret",
        GARBAGE_COLLECTION,
    )
    .await;
}

/// The keyring Secret of `key`, asserting that it survived its EncryptionKey's deletion.
async fn surviving_keyring(cluster: &TestCluster, key: &str) -> Secret {
    let keyring = secrets(cluster)
        .get_opt(&format!("{key}-keyring"))
        .await
        .expect("get")
        .unwrap_or_else(|| {
            panic!("the keyring Secret {key}-keyring was destroyed with its EncryptionKey")
        });
    assert!(
        keyring.owner_references().is_empty() && keyring.metadata.deletion_timestamp.is_none(),
        "the keyring Secret is being collected with its EncryptionKey: owners {:?}, deletion {:?}",
        keyring.owner_references(),
        keyring.metadata.deletion_timestamp
    );
    keyring
}

/// Where the pod template's containers mount the volume of EncryptionKey `key`.
fn mount_paths(deployment: &Deployment, key: &str) -> Vec<String> {
    let volume = format!("keyward-{key}");
    deployment
        .spec
        .iter()
        .filter_map(|spec| spec.template.spec.as_ref())
        .flat_map(|spec| &spec.containers)
        .flat_map(|container| container.volume_mounts.iter().flatten())
        .filter(|mount| mount.name == volume)
        .map(|mount| mount.mount_path.clone())
        .collect()
}

fn template_volumes(deployment: &Deployment) -> Vec<String> {
    deployment
        .spec
        .iter()
        .filter_map(|spec| spec.template.spec.as_ref())
        .flat_map(|spec| spec.volumes.iter().flatten())
        .map(|volume| volume.name.clone())
        .collect()
}

#[tokio::test]
async fn deleting_an_encryption_key_keeps_its_keyring_and_re_creating_it_adopts_the_same_key() {
    let cluster = support::cluster("key-outlives-resource").await;
    let _operator = operator(&cluster);
    apply_key(&cluster, "apim", json!({})).await;
    let first = key_until(&cluster, "apim", "True", "KeyDistributed").await;
    let original_versions = versions(&first);
    assert_eq!(original_versions.len(), 1, "one key version");
    apply_client(&cluster, "portal", encrypted_under("apim")).await;
    client_until(&cluster, "portal", "True", "Issued").await;
    let plaintext = delivered_secret(&cluster, "portal-credentials").await;
    let verifier = secrets(&cluster)
        .get("portal-verifier")
        .await
        .expect("verifier");
    assert_eq!(keyward_verify(&cluster, "portal-verifier", &plaintext), 0);

    // Deleting the resource collects what it rendered, never the key itself.
    delete_key(&cluster, "apim").await;
    let keyring = surviving_keyring(&cluster, "apim").await;
    let labels = keyring.labels();
    for (label, value) in [
        ("app.kubernetes.io/managed-by", "keyward"),
        ("keyward.io/encryption-key", "apim"),
        ("keyward.io/role", "keyring"),
    ] {
        assert_eq!(
            labels.get(label).map(String::as_str),
            Some(value),
            "keyring label {label}"
        );
    }

    // The same name again: the keyring is adopted, not replaced.
    apply_key(&cluster, "apim", json!({})).await;
    let adopted = key_until(&cluster, "apim", "True", "KeyDistributed").await;
    assert_ne!(adopted.uid(), first.uid(), "a new EncryptionKey object");
    assert_eq!(
        versions(&adopted),
        original_versions,
        "the re-created EncryptionKey holds the same key"
    );
    let distribution = secrets(&cluster)
        .get("apim-distribution")
        .await
        .expect("the distribution Secret is rendered again");
    assert!(
        distribution
            .owner_references()
            .iter()
            .any(|owner| Some(&owner.uid) == adopted.uid().as_ref()),
        "the new EncryptionKey owns its distribution Secret"
    );
    let client = client_until(&cluster, "portal", "True", "Issued").await;
    assert_eq!(
        client
            .status
            .as_ref()
            .and_then(|status| status.secret_version),
        Some(1),
        "no new secret was issued"
    );
    assert_eq!(
        keyward_verify(&cluster, "portal-verifier", &plaintext),
        0,
        "the encrypted record still decrypts and verifies"
    );
    assert_eq!(
        secrets(&cluster)
            .get("portal-verifier")
            .await
            .expect("verifier")
            .data,
        verifier.data,
        "the verifier record was not rewritten"
    );
}

#[tokio::test]
async fn destroying_a_keyring_on_purpose_leaves_encrypted_clients_unready_and_never_reissues() {
    let cluster = support::cluster("key-destroyed").await;
    let _operator = operator(&cluster);
    apply_key(&cluster, "apim", json!({})).await;
    let first = key_until(&cluster, "apim", "True", "KeyDistributed").await;
    apply_client(&cluster, "portal", encrypted_under("apim")).await;
    client_until(&cluster, "portal", "True", "Issued").await;
    let plaintext = delivered_secret(&cluster, "portal-credentials").await;

    // Destroying a key takes two deliberate steps: the resource, then the keyring.
    delete_key(&cluster, "apim").await;
    match secrets(&cluster)
        .delete("apim-keyring", &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        // Already collected with its EncryptionKey: the test above proves that must not
        // happen; this one goes on to what follows a destroyed keyring.
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => panic!("keyring deleted: {error}"),
    }
    wait::until_gone(&secrets(&cluster), "apim-keyring", "the keyring is deleted").await;
    let waiting = wait::until(
        &clients(&cluster),
        "portal",
        "the client is not ready without its key",
        |client| wait::ready(client).is_some_and(|(status, _)| status == "False"),
    )
    .await;
    let not_ready_since = transition(&waiting, "Ready");
    let verifier = secrets(&cluster)
        .get("portal-verifier")
        .await
        .expect("verifier");
    let delivery = secrets(&cluster)
        .get("portal-credentials")
        .await
        .expect("delivery");

    // A new EncryptionKey of the same name has a new key, under which the record does
    // not decrypt: the client says so, and keeps its record for a human to decide.
    apply_key(&cluster, "apim", json!({})).await;
    let second = key_until(&cluster, "apim", "True", "KeyDistributed").await;
    assert_eq!(versions(&second).len(), 1);
    assert_ne!(
        versions(&second)[0].1,
        versions(&first)[0].1,
        "a destroyed key is not recreated: the new key has a new fingerprint"
    );
    let refused = client_until(&cluster, "portal", "False", "RecordUndecryptable").await;
    assert_eq!(
        transition(&refused, "Ready"),
        not_ready_since,
        "Ready never turned True in between"
    );
    assert_eq!(
        refused
            .status
            .as_ref()
            .and_then(|status| status.secret_version),
        Some(1),
        "no new secret was issued"
    );

    // Barrier: a client created later is issued, so the operator has seen everything.
    apply_client(&cluster, "barrier", json!({})).await;
    client_until(&cluster, "barrier", "True", "Issued").await;
    client_until(&cluster, "portal", "False", "RecordUndecryptable").await;
    for (name, before) in [
        ("portal-verifier", &verifier),
        ("portal-credentials", &delivery),
    ] {
        let now = secrets(&cluster).get(name).await.expect("Secret");
        assert_eq!(
            (now.resource_version(), &now.data),
            (before.resource_version(), &before.data),
            "{name} was not rewritten: no silent re-issue"
        );
    }
    assert_ne!(
        keyward_verify(&cluster, "portal-verifier", &plaintext),
        0,
        "the old secret no longer verifies"
    );
}

#[tokio::test]
async fn a_secret_named_like_a_keys_distribution_secret_is_never_taken_over() {
    let cluster = support::cluster("key-foreign-distribution").await;
    let _operator = operator(&cluster);
    // Someone else's Secret, owned by their ConfigMap, happens to have the name.
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let owner = config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("platform".into()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        )
        .await
        .expect("ConfigMap created");
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some("apim-distribution".into()),
            labels: Some(BTreeMap::from([("team".into(), "platform".into())])),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "platform".into(),
                uid: owner.uid().expect("uid"),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "deployment.toml".into(),
            ByteString(b"[encryption]\nkey = \"theirs\"\n".to_vec()),
        )])),
        ..Secret::default()
    };
    let foreign = secrets(&cluster)
        .create(&PostParams::default(), &foreign)
        .await
        .expect("foreign Secret created");

    apply_key(&cluster, "apim", json!({})).await;
    let refused = wait::until(
        &keys(&cluster),
        "apim",
        "apim is Ready=False (SecretConflict) with key version 1 recorded",
        |key| {
            wait::ready(key) == Some(("False".into(), "SecretConflict".into()))
                && versions(key).iter().any(|(version, _)| *version == 1)
        },
    )
    .await;
    assert_eq!(
        wait::condition(&refused, "Degraded"),
        Some(("True".into(), "SecretConflict".into()))
    );
    for type_ in ["Ready", "Degraded"] {
        let message = message(&refused, type_);
        assert!(
            message.contains("apim-distribution"),
            "{type_} names the Secret: {message}"
        );
    }
    let after = secrets(&cluster)
        .get("apim-distribution")
        .await
        .expect("foreign Secret");
    assert_eq!(after.data, foreign.data, "its data is untouched");
    assert_eq!(
        after.metadata.labels, foreign.metadata.labels,
        "its labels are untouched"
    );
    assert_eq!(
        after.metadata.owner_references, foreign.metadata.owner_references,
        "its owners are untouched"
    );

    // The key itself exists, written under the EncryptionKey controller's own manager.
    let keyring = secrets(&cluster)
        .get("apim-keyring")
        .await
        .expect("the keyring is created");
    assert!(
        has_manager(&keyring, "keyward-encryption-key", ""),
        "keyring managers: {:?}",
        managers(&keyring)
    );
    assert!(
        has_manager(&refused, "keyward-encryption-key", "status"),
        "EncryptionKey managers: {:?}",
        managers(&refused)
    );

    // The OAuthClient controller writes under a manager of its own.
    apply_client(&cluster, "portal", json!({})).await;
    let client = client_until(&cluster, "portal", "True", "Issued").await;
    assert!(
        has_manager(&client, "keyward-oauth-client", "status"),
        "OAuthClient managers: {:?}",
        managers(&client)
    );
    for name in ["portal-verifier", "portal-credentials"] {
        let secret = secrets(&cluster).get(name).await.expect("Secret");
        assert!(
            has_manager(&secret, "keyward-oauth-client", ""),
            "{name} managers: {:?}",
            managers(&secret)
        );
    }
}

#[tokio::test]
async fn a_far_future_timestamp_annotation_is_reported_and_never_stops_the_operator() {
    let cluster = support::cluster("oauth-far-future").await;
    let mut first = operator(&cluster);
    // The minimum TTL for records whose issue time is damaged; an hour where the delivery
    // Secret itself is, so it is still there to be damaged.
    let cases = [
        (
            "issued-last",
            "verifier",
            "keyward.io/issued-at",
            LAST_INSTANT,
            "10s",
        ),
        (
            "issued-beyond",
            "verifier",
            "keyward.io/issued-at",
            BEYOND_LAST_INSTANT,
            "10s",
        ),
        (
            "written-last",
            "credentials",
            "keyward.io/written-at",
            LAST_INSTANT,
            "1h",
        ),
        (
            "written-beyond",
            "credentials",
            "keyward.io/written-at",
            BEYOND_LAST_INSTANT,
            "1h",
        ),
        // Far in the past: parses, but status could not even show it.
        (
            "issued-before-year-one",
            "verifier",
            "keyward.io/issued-at",
            BEFORE_YEAR_ONE,
            "10s",
        ),
    ];
    for (name, role, annotation, value, ttl) in cases {
        apply_client(
            &cluster,
            name,
            json!({"rotation": {"period": "1h"}, "deliverySecret": {"ttl": ttl}}),
        )
        .await;
        client_until(&cluster, name, "True", "Issued").await;
        let secret = format!("{name}-{role}");
        annotate_secret(&cluster, &secret, annotation, value).await;
        let reported = client_until(&cluster, name, "False", "AnnotationInvalid").await;
        let message = message(&reported, "Ready");
        assert!(
            message.contains(annotation) && message.contains(&secret),
            "the reason names the annotation and the Secret: {message}"
        );
        until_event(&cluster, name, Some("Warning"), "AnnotationInvalid").await;
        assert!(
            first.is_running(),
            "the operator stopped on {annotation}={value}"
        );
    }

    // The operator goes on serving other clients.
    apply_client(&cluster, "bystander", json!({})).await;
    client_until(&cluster, "bystander", "True", "Issued").await;
    assert!(first.is_running(), "the operator is still running");

    // A restarted operator reads the same annotations and stays up.
    let (status, log) = first.terminate(Duration::from_secs(30));
    assert!(status.success(), "operator exits cleanly: {status}\n{log}");
    let mut restarted = operator(&cluster);
    apply_client(&cluster, "after-restart", json!({})).await;
    client_until(&cluster, "after-restart", "True", "Issued").await;
    for (name, ..) in cases {
        client_until(&cluster, name, "False", "AnnotationInvalid").await;
    }
    assert!(restarted.is_running(), "the restarted operator is running");
}

/// Waits until `name` is Ready with a secret of `version` for its current generation.
async fn client_issued(cluster: &TestCluster, name: &str, version: i64) -> OAuthClient {
    wait::until(
        &clients(cluster),
        name,
        &format!("{name} is Ready with secret version {version}"),
        |client| {
            let status = client.status.as_ref();
            wait::ready(client) == Some(("True".into(), "Issued".into()))
                && status.and_then(|status| status.secret_version) == Some(version)
                && status.and_then(|status| status.observed_generation)
                    == client.metadata.generation
        },
    )
    .await
}

/// The rotation generation a client's verifier is annotated with.
async fn verifier_generation(cluster: &TestCluster, verifier: &str) -> Option<String> {
    secrets(cluster)
        .get(verifier)
        .await
        .expect("verifier Secret")
        .annotations()
        .get("keyward.io/rotation-generation")
        .cloned()
}

/// A verifier annotated with a rotation generation above the spec's counter would make
/// every bump up to it a no-op: it is reported (never Ready), and the rotation a user
/// requests after a leak still happens, whether the bump stops short of the claimed
/// generation or lands on it exactly.
#[tokio::test]
async fn a_rotation_generation_from_the_future_is_reported_and_never_cancels_a_requested_rotation()
{
    const ANNOTATION: &str = "keyward.io/rotation-generation";
    let cluster = support::cluster("oauth-future-generation").await;
    let mut operator = operator(&cluster);
    let spec = |generation: i64| json!({"rotation": {"generation": generation}});
    apply_client(&cluster, "portal", spec(0)).await;
    client_issued(&cluster, "portal", 1).await;
    let first = delivered_secret(&cluster, "portal-credentials").await;

    // Claimed from the future: reported on the client and in an Event, never Ready.
    annotate_secret(&cluster, "portal-verifier", ANNOTATION, "5").await;
    let reported = client_until(&cluster, "portal", "False", "AnnotationInvalid").await;
    let text = message(&reported, "Ready");
    assert!(
        text.contains(ANNOTATION) && text.contains("portal-verifier"),
        "the reason names the annotation and the Secret: {text}"
    );
    until_event(&cluster, "portal", Some("Warning"), "AnnotationInvalid").await;
    // Put back as keyward wrote it, the client is Ready again with the same secret.
    annotate_secret(&cluster, "portal-verifier", ANNOTATION, "0").await;
    client_issued(&cluster, "portal", 1).await;
    assert_eq!(keyward_verify(&cluster, "portal-verifier", &first), 0);

    // The secret leaks; the claim is back. A bump short of the claimed generation
    // rotates all the same: the old secret stops verifying, the new one verifies.
    annotate_secret(&cluster, "portal-verifier", ANNOTATION, "5").await;
    client_until(&cluster, "portal", "False", "AnnotationInvalid").await;
    apply_client(&cluster, "portal", spec(3)).await;
    client_issued(&cluster, "portal", 2).await;
    let second = delivered_secret(&cluster, "portal-credentials").await;
    assert_ne!(second, first);
    assert_eq!(keyward_verify(&cluster, "portal-verifier", &second), 0);
    assert_ne!(keyward_verify(&cluster, "portal-verifier", &first), 0);
    assert_eq!(
        verifier_generation(&cluster, "portal-verifier")
            .await
            .as_deref(),
        Some("3")
    );

    // A bump that lands exactly on the claimed generation rotates too.
    annotate_secret(&cluster, "portal-verifier", ANNOTATION, "9").await;
    client_until(&cluster, "portal", "False", "AnnotationInvalid").await;
    apply_client(&cluster, "portal", spec(9)).await;
    client_issued(&cluster, "portal", 3).await;
    let third = delivered_secret(&cluster, "portal-credentials").await;
    assert_eq!(keyward_verify(&cluster, "portal-verifier", &third), 0);
    assert_ne!(keyward_verify(&cluster, "portal-verifier", &second), 0);

    // A restarted operator, with nothing in memory, agrees: one secret per bump.
    let (status, log) = operator.terminate(Duration::from_secs(30));
    assert!(status.success(), "operator exits cleanly: {status}\n{log}");
    operator = self::operator(&cluster);
    let settled = client_issued(&cluster, "portal", 3).await;
    assert_eq!(
        settled
            .status
            .as_ref()
            .and_then(|status| status.rotation_generation),
        Some(9)
    );
    assert!(operator.is_running());
}

#[tokio::test]
async fn changing_how_a_key_is_distributed_reaches_every_pod_in_one_rollout() {
    let cluster = support::cluster("key-distribution-change").await;
    let _operator = operator(&cluster);
    deploy(&cluster, "apim", 2).await;
    let targets = json!([{"kind": "Deployment", "name": "apim"}]);
    apply_key(&cluster, "apim", json!({"targets": targets})).await;
    key_until(&cluster, "apim", "True", "KeyDistributed").await;
    let before = wait::until(
        &deployments(&cluster),
        "apim",
        "the first rollout is complete",
        |deployment| rolled_out(deployment, 2),
    )
    .await;
    assert_eq!(mount_paths(&before, "apim"), vec!["/etc/keyward"]);

    apply_key(
        &cluster,
        "apim",
        json!({"targets": targets, "distribution": {"format": "Hex", "mountPath": "/opt/keys"}}),
    )
    .await;
    wait::until(
        &deployments(&cluster),
        "apim",
        "the pod template mounts the key at /opt/keys",
        |deployment| mount_paths(deployment, "apim") == vec!["/opt/keys"],
    )
    .await;
    key_until(&cluster, "apim", "True", "KeyDistributed").await;
    let after = wait::until(
        &deployments(&cluster),
        "apim",
        "the second rollout is complete",
        |deployment| rolled_out(deployment, 2),
    )
    .await;
    assert_eq!(
        after.metadata.generation,
        before.metadata.generation.map(|generation| generation + 1),
        "exactly one template change"
    );
    let pods = running_pods(&cluster, "apim").await;
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        let mounts: Vec<&str> = pod
            .spec
            .iter()
            .flat_map(|spec| &spec.containers)
            .flat_map(|container| container.volume_mounts.iter().flatten())
            .filter(|mount| mount.name == "keyward-apim")
            .map(|mount| mount.mount_path.as_str())
            .collect();
        assert_eq!(mounts, vec!["/opt/keys"], "pod {}", pod.name_any());
    }
    let rendered = secrets(&cluster)
        .get("apim-distribution")
        .await
        .expect("distribution")
        .data
        .expect("data");
    let hex_key = &rendered.get("key.hex").expect("the key rendered as Hex").0;
    assert_eq!(hex_key.len(), 64);
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        vec!["key.hex"],
        "the former rendering (deployment.toml) left no copy of the key behind"
    );
}

#[tokio::test]
async fn changing_a_clients_secret_type_leaves_one_usable_credential_in_the_verifier() {
    let cluster = support::cluster("oauth-type-change").await;
    let _operator = operator(&cluster);
    apply_key(&cluster, "apim", json!({})).await;
    key_until(&cluster, "apim", "True", "KeyDistributed").await;
    apply_client(&cluster, "portal", json!({})).await;
    client_until(&cluster, "portal", "True", "Issued").await;
    apply_client(
        &cluster,
        "portal",
        json!({"secretType": "Encrypted", "encryptionKeyRef": {"name": "apim"}}),
    )
    .await;
    let encrypted = wait::until(
        &clients(&cluster),
        "portal",
        "the client is issued again, encrypted",
        |client| {
            wait::ready(client) == Some(("True".into(), "Issued".into()))
                && client.status.as_ref().and_then(|s| s.secret_version) == Some(2)
        },
    )
    .await;
    assert!(encrypted.status.is_some());
    let data = secrets(&cluster)
        .get("portal-verifier")
        .await
        .expect("verifier")
        .data
        .expect("data");
    assert!(data.contains_key("encryptedClientSecret"));
    assert!(
        !data.contains_key("hash") && !data.contains_key("algorithm"),
        "the hashed form is gone from the verifier: {:?}",
        data.keys().collect::<Vec<_>>()
    );
    let secret = delivered_secret(&cluster, "portal-credentials").await;
    assert_eq!(keyward_verify(&cluster, "portal-verifier", &secret), 0);
}

#[tokio::test]
async fn a_selector_that_matches_no_workload_is_never_distributed() {
    let cluster = support::cluster("key-selector-nothing").await;
    let _operator = operator(&cluster);
    apply_key(
        &cluster,
        "apim",
        json!({"targets": [{"kind": "Deployment", "selector": {"matchLabels": {"app": "nothing"}}}]}),
    )
    .await;
    key_until(&cluster, "apim", "False", "TargetNotFound").await;
    apply_client(
        &cluster,
        "portal",
        json!({"secretType": "Encrypted", "encryptionKeyRef": {"name": "apim"}}),
    )
    .await;
    client_until(&cluster, "portal", "False", "KeyNotDistributed").await;
}

#[tokio::test]
async fn two_keys_distributed_to_one_deployment_keep_each_others_volumes() {
    let cluster = support::cluster("key-two-keys").await;
    let _operator = operator(&cluster);
    deploy(&cluster, "apim", 2).await;
    let targets = json!([{"kind": "Deployment", "name": "apim"}]);
    apply_key(&cluster, "apim", json!({"targets": targets})).await;
    key_until(&cluster, "apim", "True", "KeyDistributed").await;
    apply_key(
        &cluster,
        "audit",
        json!({"targets": targets, "distribution": {"mountPath": "/etc/keyward-audit"}}),
    )
    .await;
    key_until(&cluster, "audit", "True", "KeyDistributed").await;
    key_until(&cluster, "apim", "True", "KeyDistributed").await;

    let deployment = deployments(&cluster).get("apim").await.expect("Deployment");
    let volumes = template_volumes(&deployment);
    for volume in ["keyward-apim", "keyward-audit"] {
        assert!(
            volumes.iter().any(|v| v == volume),
            "the pod template keeps {volume}: {volumes:?}"
        );
    }
    for manager in [
        "keyward-encryption-key/apim",
        "keyward-encryption-key/audit",
    ] {
        assert!(
            has_manager(&deployment, manager, ""),
            "each key patches under its own manager: {:?}",
            managers(&deployment)
        );
    }

    // Nothing keeps rolling: a barrier later, the template is the same.
    apply_key(&cluster, "barrier", json!({})).await;
    key_until(&cluster, "barrier", "True", "KeyDistributed").await;
    let settled = wait::until(
        &deployments(&cluster),
        "apim",
        "the rollout is complete",
        |deployment| rolled_out(deployment, 2),
    )
    .await;
    assert_eq!(
        settled.metadata.generation, deployment.metadata.generation,
        "the two keys do not take turns rewriting the template"
    );
    for pod in running_pods(&cluster, "apim").await {
        let names: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|spec| spec.volumes.iter().flatten())
            .map(|volume| volume.name.clone())
            .collect();
        for volume in ["keyward-apim", "keyward-audit"] {
            assert!(
                names.iter().any(|n| n == volume),
                "pod {} mounts {volume}",
                pod.name_any()
            );
        }
    }
}

#[tokio::test]
async fn a_rotation_counter_is_acted_on_only_when_bumped_after_the_key_exists() {
    let cluster = support::cluster("key-rotation-counter").await;
    let _operator = operator(&cluster);
    // Created with a counter above zero: that is where the key starts, not a request.
    apply_key(&cluster, "apim", json!({"rotation": {"generation": 3}})).await;
    let ready = key_until(&cluster, "apim", "True", "KeyDistributed").await;
    let status = ready.status.as_ref().expect("status");
    assert_eq!(status.rotation_generation, Some(3));
    assert!(status.rotation.is_none(), "no rotation at creation");
    assert_eq!(versions(&ready).len(), 1);

    // A bump starts one: the new version is staged, then promoted, and the old one
    // stays in the keyring for the ciphertext still under it.
    apply_key(&cluster, "apim", json!({"rotation": {"generation": 4}})).await;
    // The default format (Wso2Toml) carries the old key beside the new one, so the start
    // is no warning (single-key formats warn; see the rotation's unit tests).
    let started = until_event(&cluster, "apim", Some("Normal"), "RotationStarted").await;
    assert!(
        started
            .message
            .unwrap_or_default()
            .contains("staging it on every pod")
    );
    let promoted = wait::until(&keys(&cluster), "apim", "version 2 is primary", |key| {
        key.status.as_ref().and_then(|s| s.primary_version) == Some(2)
    })
    .await;
    let status = promoted.status.as_ref().expect("status");
    let rotation = status.rotation.as_ref().expect("rotation");
    assert_eq!(rotation.target_version, 2);
    assert_eq!(rotation.previous_version, 1);
    assert_eq!(status.rotation_generation, Some(4));
    let states: Vec<(i64, &str)> = status
        .versions
        .iter()
        .map(|version| (version.version, version.state.as_str()))
        .collect();
    assert_eq!(states, vec![(1, "DecryptOnly"), (2, "Primary")]);
}

#[tokio::test]
async fn re_creating_an_encryption_key_with_other_key_material_is_refused_and_keeps_the_keyring() {
    let cluster = support::cluster("key-source-mismatch").await;
    let _operator = operator(&cluster);
    apply_key(&cluster, "apim", json!({})).await;
    key_until(&cluster, "apim", "True", "KeyDistributed").await;
    delete_key(&cluster, "apim").await;
    let keyring = surviving_keyring(&cluster, "apim").await;

    let other_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    user_secret(&cluster, "apim-key", "key", other_key.as_bytes()).await;
    apply_key(
        &cluster,
        "apim",
        json!({"source": {"secretRef": {"name": "apim-key", "key": "key"}}}),
    )
    .await;
    let refused = key_until(&cluster, "apim", "False", "SourceMismatch").await;
    assert_eq!(
        wait::condition(&refused, "Degraded"),
        Some(("True".into(), "SourceMismatch".into()))
    );
    let after = secrets(&cluster)
        .get("apim-keyring")
        .await
        .expect("keyring");
    assert_eq!(after.data, keyring.data, "the keyring is unchanged");
}

#[tokio::test]
async fn an_encrypted_record_that_no_longer_decrypts_is_reported_and_never_reissued() {
    let cluster = support::cluster("oauth-undecryptable").await;
    let _operator = operator(&cluster);
    apply_key(&cluster, "apim", json!({})).await;
    key_until(&cluster, "apim", "True", "KeyDistributed").await;
    for name in ["a", "b"] {
        apply_client(&cluster, name, encrypted_under("apim")).await;
    }
    for name in ["a", "b"] {
        client_until(&cluster, name, "True", "Issued").await;
    }
    let delivery = secrets(&cluster)
        .get("a-credentials")
        .await
        .expect("delivery");
    let other = secrets(&cluster)
        .get("b-verifier")
        .await
        .expect("verifier")
        .data
        .expect("data")["encryptedClientSecret"]
        .0
        .clone();

    // A valid envelope, but bound to b's verifier Secret: it cannot decrypt in a's.
    let written = set_secret_data(&cluster, "a-verifier", "encryptedClientSecret", &other).await;
    client_until(&cluster, "a", "False", "RecordUndecryptable").await;
    until_event(&cluster, "a", Some("Warning"), "RecordUndecryptable").await;

    // Barrier: a client created later is issued, so the operator has seen everything.
    apply_client(&cluster, "barrier", json!({})).await;
    client_until(&cluster, "barrier", "True", "Issued").await;
    let refused = client_until(&cluster, "a", "False", "RecordUndecryptable").await;
    assert_eq!(
        refused
            .status
            .as_ref()
            .and_then(|status| status.secret_version),
        Some(1),
        "no new secret was issued"
    );
    assert_eq!(
        secrets(&cluster)
            .get("a-verifier")
            .await
            .expect("verifier")
            .data,
        written.data,
        "the verifier keeps what was written to it"
    );
    let delivery_now = secrets(&cluster)
        .get("a-credentials")
        .await
        .expect("delivery");
    assert_eq!(
        (delivery_now.resource_version(), &delivery_now.data),
        (delivery.resource_version(), &delivery.data),
        "the delivery Secret is unchanged"
    );
}

#[tokio::test]
async fn an_unreadable_keyring_is_reported_without_echoing_what_it_holds() {
    let cluster = support::cluster("key-unreadable-keyring").await;
    let _operator = operator(&cluster);
    let marker = marker();
    let cases = [
        (
            "wrong-value",
            json!({"format": marker, "name": "wrong-value", "versions": []}),
        ),
        ("wrong-type", json!({"versions": marker})),
        ("unknown-field", json!({ marker.as_str(): 1 })),
    ];
    for (name, _) in &cases {
        apply_key(&cluster, name, json!({})).await;
    }
    for (name, content) in &cases {
        key_until(&cluster, name, "True", "KeyDistributed").await;
        let text = serde_json::to_vec(content).expect("JSON");
        set_secret_data(&cluster, &format!("{name}-keyring"), "keyring.json", &text).await;
    }
    for (name, _) in &cases {
        let degraded = wait::until(
            &keys(&cluster),
            name,
            "the key is Degraded (KeyringUnreadable)",
            |key| {
                wait::condition(key, "Degraded")
                    == Some(("True".into(), "KeyringUnreadable".into()))
            },
        )
        .await;
        assert_marker_nowhere(&cluster, &marker, name, &degraded.status).await;
    }
}

#[tokio::test]
async fn an_unreadable_verifier_record_is_reported_without_echoing_what_it_holds() {
    let cluster = support::cluster("oauth-unreadable-verifier").await;
    let _operator = operator(&cluster);
    let marker = marker();
    apply_client(&cluster, "portal", json!({})).await;
    client_until(&cluster, "portal", "True", "Issued").await;
    let algorithm = format!("{}{marker}{}", "A".repeat(5_000), "Z".repeat(5_000));
    set_secret_data(
        &cluster,
        "portal-verifier",
        "algorithm",
        algorithm.as_bytes(),
    )
    .await;
    let refused = client_until(&cluster, "portal", "False", "VerifierRecordInvalid").await;
    assert_marker_nowhere(&cluster, &marker, "portal", &refused.status).await;
}

#[tokio::test]
async fn an_imported_client_id_that_is_no_client_id_is_refused_without_echoing_it() {
    let cluster = support::cluster("oauth-import-client-id").await;
    let _operator = operator(&cluster);
    let marker = marker();
    let source = Secret {
        metadata: ObjectMeta {
            name: Some("legacy-app-source".into()),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([
            ("clientId".into(), format!("legacy app {marker}")),
            (
                "clientSecret".into(),
                "key-safety-import-7f3e9a1c2b4d6e8f".into(),
            ),
        ])),
        ..Secret::default()
    };
    secrets(&cluster)
        .create(&PostParams::default(), &source)
        .await
        .expect("source created");
    apply_client(
        &cluster,
        "legacy-app",
        json!({"importFrom": {"secretName": "legacy-app-source", "clientIdKey": "clientId"}}),
    )
    .await;
    let refused = client_until(&cluster, "legacy-app", "False", "ImportClientIdInvalid").await;
    assert_marker_nowhere(&cluster, &marker, "legacy-app", &refused.status).await;
}

#[tokio::test]
async fn an_encrypted_client_is_ready_only_once_every_pod_holds_its_key() {
    let cluster = support::cluster("key-not-yet-distributed").await;
    let _operator = operator(&cluster);
    // Pods no node accepts: the key cannot reach them.
    let mut unschedulable = deployment_manifest("apim", 2);
    unschedulable["spec"]["template"]["spec"]["nodeSelector"] =
        json!({"keyward.io/no-such-node": "true"});
    manifest::apply(
        &cluster.client,
        &cluster.namespace,
        "argocd",
        &unschedulable,
    )
    .await
    .expect("Deployment applies");
    apply_key(
        &cluster,
        "apim",
        json!({"targets": [{"kind": "Deployment", "name": "apim"}]}),
    )
    .await;
    key_until(&cluster, "apim", "False", "Distributing").await;
    apply_client(&cluster, "portal", encrypted_under("apim")).await;
    wait::until(
        &clients(&cluster),
        "portal",
        "portal is Ready=False (KeyNotDistributed) with its secret issued",
        |client| {
            wait::ready(client) == Some(("False".into(), "KeyNotDistributed".into()))
                && wait::condition(client, "SecretIssued")
                    .is_some_and(|(status, _)| status == "True")
        },
    )
    .await;

    // The GitOps tool fixes its manifest: the pods start, get the key, the client is ready.
    manifest::apply(
        &cluster.client,
        &cluster.namespace,
        "argocd",
        &deployment_manifest("apim", 2),
    )
    .await
    .expect("Deployment re-applied");
    wait::until(
        &deployments(&cluster),
        "apim",
        "the pods are ready",
        |deployment| rolled_out(deployment, 2),
    )
    .await;
    key_until(&cluster, "apim", "True", "KeyDistributed").await;
    client_until(&cluster, "portal", "True", "Issued").await;
    let plaintext = delivered_secret(&cluster, "portal-credentials").await;
    assert_eq!(keyward_verify(&cluster, "portal-verifier", &plaintext), 0);

    // Status says which key versions the distributed keyring carries.
    let resource = ApiResource::erase::<EncryptionKey>(&());
    let raw: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &resource);
    let key = raw.get("apim").await.expect("EncryptionKey");
    let distributed = &key.data["status"]["distribution"]["versions"];
    assert!(
        distributed
            .as_array()
            .is_some_and(|versions| versions.contains(&json!(1))),
        "status.distribution.versions lists version 1: {distributed}"
    );
}

// Needs `keyward::store::delete_unchanged`, which the fixed operator adds: comment this
// test out to build against code without it.
#[tokio::test]
async fn deleting_a_delivery_secret_never_deletes_one_that_changed_since_it_was_read() {
    let cluster = support::cluster("store-delete-unchanged").await;
    let secrets = secrets(&cluster);
    let secret = |value: &str| Secret {
        metadata: ObjectMeta {
            name: Some("portal-credentials".into()),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([("clientSecret".into(), value.into())])),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &secret("first"))
        .await
        .expect("created");
    let stale = secrets.get("portal-credentials").await.expect("read");

    // Replaced since it was read: same name, another object.
    secrets
        .delete("portal-credentials", &DeleteParams::default())
        .await
        .expect("deleted");
    wait::until_gone(&secrets, "portal-credentials", "the Secret is deleted").await;
    secrets
        .create(&PostParams::default(), &secret("second"))
        .await
        .expect("re-created");
    let deleted = keyward::store::delete_unchanged(&secrets, &stale)
        .await
        .expect("the request succeeds");
    assert!(!deleted, "a replaced Secret is not deleted");
    let current = secrets
        .get("portal-credentials")
        .await
        .expect("still there");
    assert_eq!(
        current.data.as_ref().expect("data")["clientSecret"].0,
        b"second"
    );

    // Changed in place since it was read.
    let patch = json!({"stringData": {"clientSecret": "third"}});
    secrets
        .patch(
            "portal-credentials",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("changed");
    let deleted = keyward::store::delete_unchanged(&secrets, &current)
        .await
        .expect("the request succeeds");
    assert!(!deleted, "a changed Secret is not deleted");
    assert!(
        secrets
            .get_opt("portal-credentials")
            .await
            .expect("get")
            .is_some()
    );

    // Unchanged since it was read: deleted; and once gone, nothing to do.
    let fresh = secrets.get("portal-credentials").await.expect("read");
    let deleted = keyward::store::delete_unchanged(&secrets, &fresh)
        .await
        .expect("the request succeeds");
    assert!(deleted, "an unchanged Secret is deleted");
    wait::until_gone(&secrets, "portal-credentials", "the Secret is deleted").await;
    let deleted = keyward::store::delete_unchanged(&secrets, &fresh)
        .await
        .expect("the request succeeds");
    assert!(!deleted, "a Secret that is gone is not deleted again");
}
