//! EncryptionKeys as the tests drive them: applied as a GitOps tool applies them, waited
//! on until Ready or rotated, and their keyring read back as the operator stored it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use keyward::crd::EncryptionKey;
use keyward::crd::encryption_key::RotationPhase;
use keyward::crypto::Keyring;
use kube::api::{ObjectMeta, PostParams};
use serde_json::json;

use super::api::{keys, secrets};
use super::{TestCluster, manifest, wait};

/// How long a whole rotation may take: two rollouts on simulated nodes, a Job the Job
/// controller schedules and the runner starts, a scan and a third rollout.
pub const ROTATION: Duration = Duration::from_secs(240);

/// Applies EncryptionKey `name` with `spec`, as a GitOps tool does.
pub async fn apply_key(cluster: &TestCluster, name: &str, spec: serde_json::Value) {
    manifest::apply_keyward(cluster, "EncryptionKey", name, spec).await;
}

/// Waits until key `name` reports `Ready=status` with `reason` for its current generation.
pub async fn key_until(
    cluster: &TestCluster,
    name: &str,
    status: &str,
    reason: &str,
) -> EncryptionKey {
    wait::until_ready(&keys(cluster), name, status, reason).await
}

/// Waits until key `name` is Ready because it is distributed (`KeyDistributed`).
pub async fn until_distributed(cluster: &TestCluster, name: &str) -> EncryptionKey {
    wait::until(&keys(cluster), name, "the key is distributed", |key| {
        wait::ready(key) == Some(("True".into(), "KeyDistributed".into()))
    })
    .await
}

/// Applies `spec` of key `key` with its rotation generation set to `generation`, which
/// asks for a rotation.
pub async fn bump(cluster: &TestCluster, key: &str, spec: &serde_json::Value, generation: i64) {
    let mut spec = spec.clone();
    spec["rotation"]["generation"] = json!(generation);
    apply_key(cluster, key, spec).await;
}

/// Waits up to [`ROTATION`] until the rotation of `key` to version `target` has
/// succeeded.
pub async fn until_rotated(cluster: &TestCluster, key: &str, target: i64) -> EncryptionKey {
    wait::until_within(
        &keys(cluster),
        key,
        &format!("the rotation of {key} to version {target} has succeeded"),
        ROTATION,
        |key| {
            key.status
                .as_ref()
                .and_then(|status| status.rotation.as_ref())
                .is_some_and(|rotation| {
                    rotation.target_version == target && rotation.phase == RotationPhase::Succeeded
                })
        },
    )
    .await
}

/// The keyring of `key` as stored (unwrapped: these keys have no key-encryption key),
/// and the Secret that holds it.
pub async fn stored_keyring_and_secret(cluster: &TestCluster, key: &str) -> (Keyring, Secret) {
    let secret = secrets(cluster)
        .get(&format!("{key}-keyring"))
        .await
        .expect("keyring Secret");
    let json = &secret.data.as_ref().expect("data")["keyring.json"].0;
    (
        Keyring::from_json(json, None).expect("keyring parses"),
        secret,
    )
}

/// The keyring of `key` as stored.
pub async fn stored_keyring(cluster: &TestCluster, key: &str) -> Keyring {
    stored_keyring_and_secret(cluster, key).await.0
}

/// Creates Secret `name` holding `value` under data key `key`, as a user who brings key
/// material of their own writes it.
pub async fn user_secret(cluster: &TestCluster, name: &str, key: &str, value: &[u8]) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            key.into(),
            k8s_openapi::ByteString(value.to_vec()),
        )])),
        ..Secret::default()
    };
    secrets(cluster)
        .create(&PostParams::default(), &secret)
        .await
        .expect("user Secret created");
}
