//! Where a key's projection would collide with what a workload already has, against the
//! real control plane with kwok's pods: a second key at the same mount path, a user's own
//! mount or variable in keyward's place, a `containers` entry naming no container. Each
//! is refused with a reason that names the workload, the container and the holder;
//! nothing of the holder's is taken over; the key is not `Distributed` and its encrypted
//! clients are not `Ready`; fixing the spec clears it.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodSpec;
use keyward::crd::EncryptionKey;
use serde_json::json;

use crate::support::api::{clients, deployments, keys};
use crate::support::encryption_key::apply_key;
use crate::support::events::until_event;
use crate::support::operator::operator;
use crate::support::wait::until_ready;
use crate::support::workload::{deploy, deployment_manifest, rolled_out, running_pods};
use crate::support::{self, manifest, wait};

/// Condition `type_` of `key`, as (status, reason, message).
fn condition(key: &EncryptionKey, type_: &str) -> (String, String, String) {
    wait::find_condition(key, type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// Asserts that `key` is refused for `reason`: Degraded, not Distributed, not Ready,
/// with a message naming each of `named`.
fn assert_refused(key: &EncryptionKey, reason: &str, named: &[&str]) {
    for type_ in ["Ready", "Distributed"] {
        let (status, found, _) = condition(key, type_);
        assert_eq!(
            (status.as_str(), found.as_str()),
            ("False", reason),
            "{type_}"
        );
    }
    let (status, found, message) = condition(key, "Degraded");
    assert_eq!((status.as_str(), found.as_str()), ("True", reason));
    for name in named {
        assert!(message.contains(name), "{name:?} is named in {message:?}");
    }
}

fn template(deployment: &Deployment) -> PodSpec {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.clone())
        .expect("pod template spec")
}

/// What container `container` of `spec` mounts at `path`: the volume's name and the
/// Secret it projects, if it projects one.
fn mounted_at(spec: &PodSpec, container: &str, path: &str) -> Option<(String, Option<String>)> {
    let mount = spec
        .containers
        .iter()
        .find(|c| c.name == container)?
        .volume_mounts
        .iter()
        .flatten()
        .find(|mount| mount.mount_path == path)?;
    let secret = spec
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == mount.name)
        .and_then(|volume| volume.secret.as_ref())
        .and_then(|secret| secret.secret_name.clone());
    Some((mount.name.clone(), secret))
}

/// Whether `spec` has a volume projecting Secret `secret`.
fn projects(spec: &PodSpec, secret: &str) -> bool {
    spec.volumes.iter().flatten().any(|volume| {
        volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref())
            == Some(secret)
    })
}

#[tokio::test]
async fn a_second_key_at_a_mount_path_another_key_holds_is_refused_and_takes_nothing_over() {
    let cluster = support::cluster("key-conflict").await;
    let _operator = operator(&cluster);
    deploy(&cluster, "apim", 2).await;
    let targets = json!([{"kind": "Deployment", "name": "apim"}]);
    apply_key(&cluster, "first", json!({"targets": targets})).await;
    until_ready(&keys(&cluster), "first", "True", "KeyDistributed").await;
    let before = wait::until(
        &deployments(&cluster),
        "apim",
        "the first key's rollout is complete",
        |deployment| rolled_out(deployment, 2),
    )
    .await;
    let first_mount = mounted_at(&template(&before), "apim", "/etc/keyward")
        .expect("the first key is mounted at the default path");
    assert_eq!(first_mount.1.as_deref(), Some("first-distribution"));

    // The second key, with the same defaults, and a client encrypted under it.
    apply_key(&cluster, "second", json!({"targets": targets})).await;
    manifest::apply_keyward(
        &cluster,
        "OAuthClient",
        "portal",
        json!({"secretType": "Encrypted", "encryptionKeyRef": {"name": "second"}}),
    )
    .await;
    let second = until_ready(&keys(&cluster), "second", "False", "DistributionConflict").await;
    assert_refused(
        &second,
        "DistributionConflict",
        &[
            "Deployment apim",
            "container \"apim\"",
            "\"/etc/keyward\"",
            "first-distribution",
            "EncryptionKey \"first\"",
            "spec.distribution.mountPath",
        ],
    );
    until_event(&cluster, "second", Some("Warning"), "DistributionConflict").await;
    until_ready(&clients(&cluster), "portal", "False", "KeyNotDistributed").await;

    // Nothing of the first key's changed: its mount, its pods, its status.
    let after = deployments(&cluster).get("apim").await.expect("Deployment");
    assert_eq!(
        after.metadata.generation, before.metadata.generation,
        "the refused key did not touch the pod template"
    );
    let spec = template(&after);
    assert_eq!(mounted_at(&spec, "apim", "/etc/keyward"), Some(first_mount));
    assert!(!projects(&spec, "second-distribution"));
    for pod in running_pods(&cluster, "apim").await {
        let spec = pod.spec.expect("pod spec");
        assert_eq!(
            mounted_at(&spec, "apim", "/etc/keyward").and_then(|(_, secret)| secret),
            Some("first-distribution".to_owned()),
            "every pod still holds the first key"
        );
    }
    until_ready(&keys(&cluster), "first", "True", "KeyDistributed").await;

    // A mount path of its own: the second key distributes, the client is ready, both
    // keys reach every pod.
    apply_key(
        &cluster,
        "second",
        json!({"targets": targets, "distribution": {"mountPath": "/etc/keyward-second"}}),
    )
    .await;
    until_ready(&keys(&cluster), "second", "True", "KeyDistributed").await;
    let second = keys(&cluster).get("second").await.expect("second key");
    assert_eq!(condition(&second, "Degraded").0, "False");
    until_ready(&clients(&cluster), "portal", "True", "Issued").await;
    until_ready(&keys(&cluster), "first", "True", "KeyDistributed").await;
    wait::until(
        &deployments(&cluster),
        "apim",
        "the second key's rollout is complete",
        |deployment| rolled_out(deployment, 2),
    )
    .await;
    for pod in running_pods(&cluster, "apim").await {
        let spec = pod.spec.expect("pod spec");
        for (path, secret) in [
            ("/etc/keyward", "first-distribution"),
            ("/etc/keyward-second", "second-distribution"),
        ] {
            assert_eq!(
                mounted_at(&spec, "apim", path).and_then(|(_, secret)| secret),
                Some(secret.to_owned()),
                "{path}"
            );
        }
    }
}

#[tokio::test]
async fn two_keys_applied_at_once_at_one_mount_path_leave_exactly_one_mounted() {
    let cluster = support::cluster("key-conflict-race").await;
    let _operator = operator(&cluster);
    deploy(&cluster, "apim", 1).await;
    let targets = json!([{"kind": "Deployment", "name": "apim"}]);
    // One GitOps sync applies both.
    tokio::join!(
        apply_key(&cluster, "left", json!({"targets": targets})),
        apply_key(&cluster, "right", json!({"targets": targets})),
    );
    let settled = |key: &EncryptionKey| {
        let (_, reason, _) = condition(key, "Ready");
        reason == "KeyDistributed" || reason == "DistributionConflict"
    };
    let left = wait::until(&keys(&cluster), "left", "left settles", settled).await;
    let right = wait::until(&keys(&cluster), "right", "right settles", settled).await;
    let reasons = [condition(&left, "Ready").1, condition(&right, "Ready").1];
    let winner = match reasons.each_ref().map(String::as_str) {
        ["KeyDistributed", "DistributionConflict"] => "left",
        ["DistributionConflict", "KeyDistributed"] => "right",
        other => panic!("exactly one key wins the mount path, not {other:?}"),
    };
    let spec = template(&deployments(&cluster).get("apim").await.expect("Deployment"));
    assert_eq!(
        mounted_at(&spec, "apim", "/etc/keyward").and_then(|(_, secret)| secret),
        Some(format!("{winner}-distribution"))
    );
    let loser = if winner == "left" { "right" } else { "left" };
    assert!(!projects(&spec, &format!("{loser}-distribution")));
}

#[tokio::test]
async fn a_users_own_mount_or_variable_in_keywards_place_is_refused_and_left_as_it_is() {
    let cluster = support::cluster("key-user-conflict").await;
    let _operator = operator(&cluster);
    // The user's Deployment mounts its own configuration where keyward mounts by default.
    let mut own_mount = deployment_manifest("apim", 1);
    own_mount["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "config", "mountPath": "/etc/keyward"}]);
    own_mount["spec"]["template"]["spec"]["volumes"] = json!([{"name": "config", "emptyDir": {}}]);
    manifest::apply(&cluster.client, &cluster.namespace, "argocd", &own_mount)
        .await
        .expect("Deployment applies");
    // Another sets a variable of keyward's default name itself.
    let mut own_variable = deployment_manifest("gateway", 1);
    own_variable["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "KEYWARD_ENCRYPTION_KEY", "value": "the-users-own-value"}]);
    manifest::apply(&cluster.client, &cluster.namespace, "argocd", &own_variable)
        .await
        .expect("Deployment applies");
    for name in ["apim", "gateway"] {
        wait::until(&deployments(&cluster), name, "the pods are ready", |d| {
            rolled_out(d, 1)
        })
        .await;
    }
    let generations = |deployment: &Deployment| deployment.metadata.generation;
    let apim_before = deployments(&cluster).get("apim").await.expect("apim");
    let gateway_before = deployments(&cluster).get("gateway").await.expect("gateway");

    apply_key(
        &cluster,
        "apim",
        json!({"targets": [{"kind": "Deployment", "name": "apim"}]}),
    )
    .await;
    let env = |name: &str| json!({"projection": "Env", "format": "Hex", "envName": name});
    let gateway_targets = json!([{"kind": "Deployment", "name": "gateway"}]);
    apply_key(
        &cluster,
        "gateway",
        json!({"targets": gateway_targets, "distribution": env("KEYWARD_ENCRYPTION_KEY")}),
    )
    .await;
    let apim = until_ready(&keys(&cluster), "apim", "False", "DistributionConflict").await;
    assert_refused(
        &apim,
        "DistributionConflict",
        &[
            "Deployment apim",
            "container \"apim\"",
            "\"/etc/keyward\"",
            "volume \"config\"",
        ],
    );
    let gateway = until_ready(&keys(&cluster), "gateway", "False", "DistributionConflict").await;
    assert_refused(
        &gateway,
        "DistributionConflict",
        &[
            "Deployment gateway",
            "\"KEYWARD_ENCRYPTION_KEY\"",
            "spec.distribution.envName",
        ],
    );
    let status = serde_json::to_string(&gateway.status).expect("status serializes");
    assert!(
        !status.contains("the-users-own-value"),
        "the user's value never reaches status"
    );

    let apim_after = deployments(&cluster).get("apim").await.expect("apim");
    assert_eq!(generations(&apim_after), generations(&apim_before));
    assert_eq!(
        mounted_at(&template(&apim_after), "apim", "/etc/keyward"),
        Some(("config".to_owned(), None)),
        "the user's mount is left as it is"
    );
    let gateway_after = deployments(&cluster).get("gateway").await.expect("gateway");
    assert_eq!(generations(&gateway_after), generations(&gateway_before));
    let variable = template(&gateway_after).containers[0]
        .env
        .iter()
        .flatten()
        .find(|env| env.name == "KEYWARD_ENCRYPTION_KEY")
        .cloned()
        .expect("the user's variable");
    assert_eq!(variable.value.as_deref(), Some("the-users-own-value"));
    assert!(variable.value_from.is_none());

    // Places of their own: both keys distribute, the user's entries stay.
    apply_key(
        &cluster,
        "apim",
        json!({"targets": [{"kind": "Deployment", "name": "apim"}], "distribution": {"mountPath": "/opt/keys"}}),
    )
    .await;
    apply_key(
        &cluster,
        "gateway",
        json!({"targets": gateway_targets, "distribution": env("GATEWAY_KEY")}),
    )
    .await;
    until_ready(&keys(&cluster), "apim", "True", "KeyDistributed").await;
    until_ready(&keys(&cluster), "gateway", "True", "KeyDistributed").await;
    let apim_spec = template(&deployments(&cluster).get("apim").await.expect("apim"));
    assert_eq!(
        mounted_at(&apim_spec, "apim", "/etc/keyward"),
        Some(("config".to_owned(), None))
    );
    assert_eq!(
        mounted_at(&apim_spec, "apim", "/opt/keys").and_then(|(_, secret)| secret),
        Some("apim-distribution".to_owned())
    );
    let gateway_spec = template(&deployments(&cluster).get("gateway").await.expect("gateway"));
    let names: Vec<(String, Option<String>)> = gateway_spec.containers[0]
        .env
        .iter()
        .flatten()
        .map(|env| (env.name.clone(), env.value.clone()))
        .collect();
    assert_eq!(
        names,
        vec![
            (
                "KEYWARD_ENCRYPTION_KEY".to_owned(),
                Some("the-users-own-value".to_owned())
            ),
            ("GATEWAY_KEY".to_owned(), None),
        ]
    );
}

#[tokio::test]
async fn a_containers_entry_naming_no_container_is_an_error_until_it_is_corrected() {
    let cluster = support::cluster("key-container-typo").await;
    let _operator = operator(&cluster);
    let before = deploy(&cluster, "apim", 2).await;
    let targets = json!([{"kind": "Deployment", "name": "apim"}]);
    apply_key(
        &cluster,
        "apim",
        json!({"targets": targets, "distribution": {"containers": ["apmi"]}}),
    )
    .await;
    let key = until_ready(&keys(&cluster), "apim", "False", "ContainerNotFound").await;
    assert_refused(&key, "ContainerNotFound", &["\"apmi\"", "Deployment apim"]);
    let (_, _, message) = condition(&key, "Degraded");
    assert!(!message.contains("more"), "said once: {message}");
    until_event(&cluster, "apim", Some("Warning"), "ContainerNotFound").await;
    let after = deployments(&cluster).get("apim").await.expect("Deployment");
    assert_eq!(
        after.metadata.generation, before.metadata.generation,
        "nothing projected, no rollout for nothing"
    );

    apply_key(
        &cluster,
        "apim",
        json!({"targets": targets, "distribution": {"containers": ["apim"]}}),
    )
    .await;
    let key = until_ready(&keys(&cluster), "apim", "True", "KeyDistributed").await;
    assert_eq!(condition(&key, "Degraded").0, "False");
    let distribution = key
        .status
        .as_ref()
        .and_then(|status| status.distribution.clone())
        .expect("distribution");
    assert_eq!((distribution.pods_in_sync, distribution.pods_total), (2, 2));
}

#[tokio::test]
async fn a_mount_taken_from_a_distributed_key_is_reported_and_not_taken_back() {
    use kube::api::{Patch, PatchParams};
    let cluster = support::cluster("key-mount-taken").await;
    let _operator = operator(&cluster);
    deploy(&cluster, "apim", 2).await;
    apply_key(
        &cluster,
        "apim",
        json!({"targets": [{"kind": "Deployment", "name": "apim"}]}),
    )
    .await;
    until_ready(&keys(&cluster), "apim", "True", "KeyDistributed").await;

    // The GitOps tool's next revision mounts the workload's own volume at that path and
    // syncs with force, as Argo CD's server-side sync does.
    let mut revision = deployment_manifest("apim", 2);
    revision["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "config", "mountPath": "/etc/keyward"}]);
    revision["spec"]["template"]["spec"]["volumes"] = json!([{"name": "config", "emptyDir": {}}]);
    let taken = deployments(&cluster)
        .patch(
            "apim",
            &PatchParams::apply("argocd").force(),
            &Patch::Apply(&revision),
        )
        .await
        .expect("the revision syncs");
    assert_eq!(
        mounted_at(&template(&taken), "apim", "/etc/keyward").map(|(name, _)| name),
        Some("config".to_owned())
    );

    // The pods still carry the key's annotations; they no longer mount it.
    let key = until_ready(&keys(&cluster), "apim", "False", "DistributionConflict").await;
    assert_refused(
        &key,
        "DistributionConflict",
        &["Deployment apim", "\"/etc/keyward\"", "volume \"config\""],
    );
    let settled = wait::until(
        &deployments(&cluster),
        "apim",
        "the revision's rollout is complete",
        |deployment| rolled_out(deployment, 2),
    )
    .await;
    assert_eq!(
        settled.metadata.generation, taken.metadata.generation,
        "keyward did not take the mount back"
    );
    // A pod that does not mount the key does not hold it, whatever its annotations say.
    wait::until(
        &keys(&cluster),
        "apim",
        "no pod of the revision counts as holding the key",
        |key| {
            key.status
                .as_ref()
                .and_then(|status| status.distribution.as_ref())
                .is_some_and(|d| (d.pods_in_sync, d.pods_total) == (0, 2))
        },
    )
    .await;
}
