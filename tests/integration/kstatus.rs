//! What GitOps tools make of keyward's status: cli-utils' kstatus (the library Flux,
//! kpt and `cli-utils` apply decide health with), run as the Go program in
//! `docs/kstatus/` on live objects. A ready resource is `Current`, one on its way — not
//! yet looked at by keyward, a rotation from the moment it is requested, a Secret that
//! may still come — is `InProgress`, and one only a person can help is `Failed`, so a
//! `wait` ends.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use keyward::crd::encryption_key::RotationPhase;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::watcher::watch_object;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::support::api::{clients, keys, secrets};
use crate::support::ciphertext::write_ciphertexts;
use crate::support::encryption_key::{
    ROTATION, apply_key, key_until, until_distributed, user_secret,
};
use crate::support::oauth_client::{apply_client, until_client_ready};
use crate::support::operator::{operator, operator_running_jobs};
use crate::support::workload::deploy;
use crate::support::{self, jobs, manifest, run_with_stdin};

/// kstatus' verdict on one object.
#[derive(Debug, Deserialize)]
struct Verdict {
    status: String,
    message: String,
}

/// The kstatus program, built once per test process into Cargo's scratch directory.
fn probe() -> &'static PathBuf {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let binary = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kstatus");
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/kstatus");
        let output = Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&binary)
            .arg(".")
            .current_dir(&source)
            .output()
            .expect("go runs (Go 1.24 or newer is needed for these tests)");
        assert!(
            output.status.success(),
            "go build of docs/kstatus fails: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        binary
    })
}

/// What kstatus makes of `object` as the API server serves it.
fn kstatus(object: &impl Serialize) -> Verdict {
    let json = serde_json::to_vec(object).expect("the object serializes");
    let output = run_with_stdin(Command::new(probe()), &json);
    assert!(
        output.status.success(),
        "kstatus fails: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("kstatus prints its verdict as JSON")
}

#[tokio::test]
async fn a_key_is_in_progress_from_the_moment_a_rotation_is_requested_until_it_succeeds() {
    let cluster = support::cluster("kstatus-rotation").await;
    let _operator = operator_running_jobs(&cluster, &[]);
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    deploy(&cluster, "apim", 2).await;
    let spec = json!({
        "targets": [{"kind": "Deployment", "name": "apim"}],
        "distribution": {"format": "Keyring"},
        "reencryption": {"writesPerSecond": 200},
    });
    apply_key(&cluster, "apim", spec.clone()).await;
    let ready = until_distributed(&cluster, "apim").await;
    let verdict = kstatus(&ready);
    assert_eq!(verdict.status, "Current", "{verdict:?}");
    write_ciphertexts(&cluster, "apim", 20).await;

    // The API server's answer to the bump is the key before the operator can act on it.
    let mut bumped = spec.clone();
    bumped["rotation"]["generation"] = json!(1);
    let document = json!({
        "apiVersion": "keyward.io/v1alpha1", "kind": "EncryptionKey",
        "metadata": {"name": "apim"}, "spec": bumped,
    });
    let requested = manifest::apply(&cluster.client, &cluster.namespace, "gitops", &document)
        .await
        .expect("the bump applies");
    let verdict = kstatus(&requested);
    assert_eq!(verdict.status, "InProgress", "{verdict:?}");
    assert!(verdict.message.contains("generation"), "{verdict:?}");

    // Every state the key is seen in until the rotation has succeeded is in progress;
    // the one that says it succeeded is current.
    let mut seen: Vec<(Option<RotationPhase>, String)> = Vec::new();
    let mut watched = watch_object(keys(&cluster), "apim").boxed();
    let rotated = tokio::time::timeout(ROTATION, async {
        while let Some(event) = watched.next().await {
            let Some(key) = event.expect("the watch of apim works") else {
                panic!("apim disappeared; seen {seen:?}")
            };
            let status = key.status.as_ref().expect("status");
            let rotation = status.rotation.as_ref();
            let phase = rotation.map(|rotation| rotation.phase);
            let verdict = kstatus(&key);
            let succeeded = rotation.is_some_and(|rotation| {
                rotation.target_version == 2 && rotation.phase == RotationPhase::Succeeded
            });
            if succeeded {
                assert_eq!(verdict.status, "Current", "{verdict:?}; seen {seen:?}");
                let phases = seen.iter().filter(|(phase, _)| phase.is_some()).count();
                assert!(phases > 0, "no rotation phase was seen: {seen:?}");
                return key;
            }
            assert_eq!(
                verdict.status, "InProgress",
                "{verdict:?} in phase {phase:?}; seen {seen:?}"
            );
            seen.push((phase, verdict.message));
        }
        panic!("the watch of apim ended; seen {seen:?}")
    })
    .await
    .unwrap_or_else(|_| panic!("the rotation did not succeed within {ROTATION:?}"));
    assert_eq!(
        rotated.status.as_ref().and_then(|s| s.primary_version),
        Some(2)
    );
}

#[tokio::test]
async fn a_refused_spec_is_failed_and_a_wait_for_a_secret_that_may_still_come_is_in_progress() {
    let cluster = support::cluster("kstatus-refused").await;
    let _operator = operator(&cluster);
    apply_client(&cluster, "legacy", json!({"hashAlgorithm": "MD5"})).await;
    apply_client(
        &cluster,
        "imported",
        json!({"importFrom": {"secretName": "imported-source", "clientIdKey": "clientId"}}),
    )
    .await;
    apply_key(
        &cluster,
        "supplied",
        json!({"source": {"secretRef": {"name": "supplied-key", "key": "key"}}}),
    )
    .await;
    user_secret(&cluster, "short-key", "key", b"0011223344").await;
    apply_key(
        &cluster,
        "malformed",
        json!({"source": {"secretRef": {"name": "short-key", "key": "key"}}}),
    )
    .await;

    // Refused for good: only a change by a person helps, and kstatus says so.
    let legacy = until_client_ready(&cluster, "legacy", "LegacyAlgorithmNotAllowed", None).await;
    let verdict = kstatus(&legacy);
    assert_eq!(verdict.status, "Failed", "{verdict:?}");
    assert!(
        verdict.message.contains("--allow-legacy-algorithms"),
        "the message says what to change: {verdict:?}"
    );
    let malformed = key_until(&cluster, "malformed", "False", "SourceKeyInvalid").await;
    let verdict = kstatus(&malformed);
    assert_eq!(verdict.status, "Failed", "{verdict:?}");
    assert!(verdict.message.contains("short-key"), "{verdict:?}");

    // Waiting for a Secret that a GitOps sync or a secrets tool may still create.
    let waiting = until_client_ready(&cluster, "imported", "ImportSourceMissing", None).await;
    let verdict = kstatus(&waiting);
    assert_eq!(verdict.status, "InProgress", "{verdict:?}");
    assert!(verdict.message.contains("imported-source"), "{verdict:?}");
    let waiting = key_until(&cluster, "supplied", "False", "SourceSecretMissing").await;
    let verdict = kstatus(&waiting);
    assert_eq!(verdict.status, "InProgress", "{verdict:?}");
    assert!(verdict.message.contains("supplied-key"), "{verdict:?}");

    // They come, and both are current.
    let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    user_secret(&cluster, "supplied-key", "key", hex_key.as_bytes()).await;
    let ready = key_until(&cluster, "supplied", "True", "KeyDistributed").await;
    let verdict = kstatus(&ready);
    assert_eq!(verdict.status, "Current", "{verdict:?}");
    // A secret of this test's own: other tests look for theirs in every namespace.
    let source = Secret {
        metadata: ObjectMeta {
            name: Some("imported-source".into()),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([
            ("clientId".into(), "imported-0001".into()),
            (
                "clientSecret".into(),
                "kstatus-imported-5c1e0f2a9b7d4e63".into(),
            ),
        ])),
        ..Secret::default()
    };
    secrets(&cluster)
        .create(&PostParams::default(), &source)
        .await
        .expect("import source created");
    let imported = until_client_ready(&cluster, "imported", "Imported", Some(1)).await;
    let verdict = kstatus(&imported);
    assert_eq!(verdict.status, "Current", "{verdict:?}");
}

#[tokio::test]
async fn a_resource_keyward_has_not_reported_on_yet_is_in_progress_and_current_once_ready() {
    let cluster = support::cluster("kstatus-unobserved").await;
    // No operator yet: what a `wait` right after the first apply sees.
    apply_key(&cluster, "fresh", json!({})).await;
    apply_client(&cluster, "fresh", json!({})).await;
    let key = keys(&cluster).get("fresh").await.expect("key");
    let client = clients(&cluster).get("fresh").await.expect("client");
    for (kind, observed, verdict) in [
        (
            "EncryptionKey",
            key.status.as_ref().and_then(|s| s.observed_generation),
            kstatus(&key),
        ),
        (
            "OAuthClient",
            client.status.as_ref().and_then(|s| s.observed_generation),
            kstatus(&client),
        ),
    ] {
        assert_eq!(
            observed,
            Some(0),
            "{kind}: the API server defaults the status"
        );
        assert_eq!(verdict.status, "InProgress", "{kind}: {verdict:?}");
    }

    let _operator = operator(&cluster);
    let key = key_until(&cluster, "fresh", "True", "KeyDistributed").await;
    assert_eq!(kstatus(&key).status, "Current");
    let client = until_client_ready(&cluster, "fresh", "Issued", Some(1)).await;
    assert_eq!(kstatus(&client).status, "Current");
}
