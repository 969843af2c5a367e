//! `keyward status` against the real control plane, run as the real binary: a key held
//! in the middle of a rotation shows its phase, versions and what it waits on; a client
//! in its grace period shows when the previous secret stops verifying; neither output
//! ever holds secret material; the command needs nothing beyond `get` on the resource,
//! and names the object it could not show.

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine;
use k8s_openapi::api::apps::v1::Deployment;
use keyward::crd::encryption_key::RotationPhase;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::access::kubeconfig_as;
use crate::support::api::{deployments, keys, secrets};
use crate::support::encryption_key::{
    ROTATION, apply_key, bump, stored_keyring, until_distributed,
};
use crate::support::oauth_client::{apply_client, delivered_secret, until_client_ready};
use crate::support::operator::{operator, operator_with_args};
use crate::support::workload::deploy;
use crate::support::{self, ControlPlane, TestCluster, wait};

/// Runs `keyward status` with `args`, authenticated as `kubeconfig` says.
fn status_as(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("status")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("keyward status runs")
}

/// Runs `keyward status` with `args` as the cluster's admin; returns its standard output,
/// asserting that it succeeded.
fn status(args: &[&str]) -> String {
    let output = status_as(&support::control_plane().kubeconfig, args);
    assert!(
        output.status.success(),
        "keyward status {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// `status(args)` with `-o json`, parsed.
fn status_json(args: &[&str]) -> Value {
    let text = status(&[args, &["-o", "json"]].concat());
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("JSON ({error}): {text}"))
}

/// Asserts that none of `secrets` appears in `output`.
fn assert_holds_none(output: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !output.contains(secret.as_str()),
            "keyward status printed secret material:\n{output}"
        );
    }
}

/// Pauses or resumes the rollouts of Deployment `name`.
async fn set_paused(cluster: &TestCluster, name: &str, paused: bool) {
    deployments(cluster)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": paused}})),
        )
        .await
        .expect("Deployment patched");
    let _: Deployment = wait::until(&deployments(cluster), name, "the pause is seen", |d| {
        d.status.as_ref().and_then(|s| s.observed_generation) == d.metadata.generation
    })
    .await;
}

#[tokio::test]
async fn a_key_held_mid_rotation_shows_its_phase_versions_and_what_it_waits_on() {
    let cluster = support::cluster("status-key").await;
    // Re-encryption Jobs go to a node that does not exist: the rotation holds in
    // Reencrypting with its Job never started.
    let _operator = operator_with_args(
        &cluster,
        &["--job-node-selector", "keyward.io/status-test=nowhere"],
    );
    deploy(&cluster, "apim", 2).await;
    let spec = json!({
        "targets": [{"kind": "Deployment", "name": "apim"}],
        "distribution": {"format": "Keyring"},
        "rotation": {"period": "720h"},
    });
    apply_key(&cluster, "apim", spec.clone()).await;
    until_distributed(&cluster, "apim").await;
    let ns = cluster.namespace.as_str();

    // With its rollouts paused, no pod of the Deployment can take version 2: staging
    // waits on both.
    set_paused(&cluster, "apim", true).await;
    bump(&cluster, "apim", &spec, 1).await;
    wait::until_within(
        &keys(&cluster),
        "apim",
        "staging waits on the pods",
        ROTATION,
        |key| {
            key.status.as_ref().is_some_and(|status| {
                status
                    .rotation
                    .as_ref()
                    .is_some_and(|rotation| rotation.phase == RotationPhase::Staging)
                    && status.distribution.as_ref().is_some_and(|d| {
                        d.versions == [1, 2] && d.pods_total == 2 && d.pods_in_sync == 0
                    })
            })
        },
    )
    .await;
    let staging = status_json(&["ek", "apim", "-n", ns]);
    assert_eq!(staging["rotation"]["phase"], "Staging");
    assert_eq!(
        staging["rotation"]["waitingOn"],
        "2 of 2 pods to hold version 2 (decrypt-only)"
    );
    let text = status(&["encryptionkey", "apim", "--namespace", ns]);
    assert!(
        text.contains("  waiting on:     2 of 2 pods to hold version 2 (decrypt-only)\n"),
        "{text}"
    );
    assert!(
        text.contains("Pods in sync:     0/2 ready pods hold"),
        "{text}"
    );

    // Resumed, the pods take version 2, it is promoted, and the rotation holds before
    // its re-encryption Job runs.
    set_paused(&cluster, "apim", false).await;
    wait::until_within(
        &keys(&cluster),
        "apim",
        "the rotation re-encrypts",
        ROTATION,
        |key| {
            key.status
                .as_ref()
                .and_then(|status| status.rotation.as_ref())
                .is_some_and(|rotation| {
                    rotation.phase == RotationPhase::Reencrypting && rotation.job_name.is_some()
                })
        },
    )
    .await;
    let key = keys(&cluster).get("apim").await.expect("the key");
    let job = key
        .status
        .as_ref()
        .and_then(|status| status.rotation.as_ref())
        .and_then(|rotation| rotation.job_name.clone())
        .expect("a Job name");

    let report = status_json(&["EK", "apim", "-n", ns]);
    assert_eq!(report["reportVersion"], 1);
    assert_eq!(report["kind"], "EncryptionKey");
    assert_eq!(report["namespace"], ns);
    assert_eq!(report["name"], "apim");
    assert_eq!(report["primaryVersion"], 2);
    let versions: Vec<(i64, &str)> = report["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().expect("a number"),
                v["state"].as_str().expect("a state"),
            )
        })
        .collect();
    assert_eq!(versions, [(2, "Primary"), (1, "DecryptOnly")]);
    for (reported, recorded) in report["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .zip(key.status.as_ref().expect("status").versions.iter().rev())
    {
        assert_eq!(reported["fingerprint"], recorded.fingerprint.as_str());
    }
    let rotation = &report["rotation"];
    assert_eq!(rotation["phase"], "Reencrypting");
    assert_eq!(rotation["targetVersion"], 2);
    assert_eq!(rotation["previousVersion"], 1);
    assert_eq!(rotation["trigger"], "Requested");
    assert_eq!(rotation["attempt"], 1);
    assert_eq!(rotation["jobName"], job.as_str());
    assert!(rotation["secondsInPhase"].as_i64().is_some_and(|s| s >= 0));
    assert_eq!(
        rotation["waitingOn"],
        format!("Job {job} to re-encrypt to version 2: no progress reported yet").as_str()
    );
    assert_eq!(report["distribution"]["podsInSync"], 2);
    assert_eq!(report["distribution"]["podsTotal"], 2);
    let next = report["nextRotation"]["inSeconds"]
        .as_i64()
        .expect("a next rotation");
    assert!((719 * 3600..=720 * 3600).contains(&next), "{next}");
    let conditions: Vec<&str> = report["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .map(|c| c["type"].as_str().expect("a type"))
        .collect();
    assert!(
        conditions.contains(&"Ready") && conditions.contains(&"Rotating"),
        "{conditions:?}"
    );
    let reasons: Vec<&str> = report["events"]
        .as_array()
        .expect("events were listed")
        .iter()
        .map(|e| e["reason"].as_str().expect("a reason"))
        .collect();
    assert!(reasons.contains(&"RotationStarted"), "{reasons:?}");

    let text = status(&["ek", "apim", "-n", ns]);
    for line in [
        format!("EncryptionKey {ns}/apim\n"),
        "Primary version:  2\n".to_owned(),
        "Rotation:         Reencrypting to version 2 from 1 (Requested), attempt 1\n".to_owned(),
        format!(
            "  waiting on:     Job {job} to re-encrypt to version 2: no progress reported yet\n"
        ),
        "Pods in sync:     2/2 ready pods hold the current keyring (versions 1, 2)\n".to_owned(),
        "Next rotation:    ".to_owned(),
        "RotationStarted".to_owned(),
    ] {
        assert!(text.contains(&line), "{line:?} in:\n{text}");
    }
    let table: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|line| !line.starts_with("Versions:"))
        .skip(2)
        .take(2)
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(table[0][..2], ["2", "Primary"]);
    assert_eq!(table[1][..2], ["1", "DecryptOnly"]);

    // Neither form holds key material, in any encoding the keyring or pods carry it.
    let keyring = stored_keyring(&cluster, "apim").await;
    let material: Vec<String> = keyring
        .versions
        .iter()
        .flat_map(|version| {
            let bytes = version.material.expose();
            [
                hex::encode(bytes),
                base64::engine::general_purpose::STANDARD.encode(bytes),
            ]
        })
        .collect();
    assert_eq!(material.len(), 4);
    assert_holds_none(&text, &material);
    assert_holds_none(&report.to_string(), &material);

    let missing = status_as(
        &support::control_plane().kubeconfig,
        &["ek", "no-such-key", "-n", ns],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr),
        format!("keyward: EncryptionKey {ns}/no-such-key not found\n")
    );
}

#[tokio::test]
async fn a_client_in_its_grace_period_shows_until_when_the_previous_secret_verifies() {
    let cluster = support::cluster("status-client").await;
    let _operator = operator(&cluster);
    let ns = cluster.namespace.as_str();
    let spec = |generation: i64| {
        json!({
            "rotation": {"generation": generation, "gracePeriod": "1h"},
            "deliverySecret": {"ttl": "10m"},
        })
    };
    apply_client(&cluster, "portal", spec(0)).await;
    until_client_ready(&cluster, "portal", "Issued", Some(1)).await;
    let first = delivered_secret(&cluster, "portal-credentials").await;
    apply_client(&cluster, "portal", spec(1)).await;
    let rotated = until_client_ready(&cluster, "portal", "Issued", Some(2)).await;
    let second = delivered_secret(&cluster, "portal-credentials").await;
    assert_ne!(first, second);
    let recorded = rotated.status.as_ref().expect("status");
    let valid_until = serde_json::to_value(&recorded.previous_secret_expires_at).expect("JSON");
    assert!(valid_until.is_string(), "a grace period in status");
    let client_id = recorded.client_id.clone().expect("a client id");

    let report = status_json(&["oac", "portal", "-n", ns]);
    assert_eq!(report["reportVersion"], 1);
    assert_eq!(report["kind"], "OAuthClient");
    assert_eq!(report["clientId"], client_id.as_str());
    assert_eq!(report["secretType"], "Hashed");
    assert_eq!(report["secretVersion"], 2);
    assert_eq!(report["hashAlgorithm"], "SHA-256");
    assert_eq!(report["ready"]["status"], "True");
    assert_eq!(report["ready"]["reason"], "Issued");
    assert_eq!(report["grace"]["previousSecretValidUntil"], valid_until);
    let left = report["grace"]["secondsLeft"]
        .as_i64()
        .expect("seconds left");
    assert!((3000..=3600).contains(&left), "{left}");
    assert_eq!(report["delivery"]["secretName"], "portal-credentials");
    assert_eq!(report["delivery"]["ttl"], "600s");
    assert_eq!(report["delivery"]["deletedAt"], Value::Null);
    assert_eq!(report["verifierSecretName"], "portal-verifier");
    assert_eq!(report["import"], Value::Null);
    assert!(
        report["events"]
            .as_array()
            .is_some_and(|events| !events.is_empty())
    );

    let text = status(&["OAuthClient", "portal", "-n", ns]);
    let valid_until = valid_until.as_str().expect("a time");
    for line in [
        format!("OAuthClient {ns}/portal\n"),
        format!("Client id:        {client_id}\n"),
        "Secret version:   2\n".to_owned(),
        "Hash algorithm:   SHA-256\n".to_owned(),
        format!("Grace period:     the previous secret verifies until {valid_until} (in "),
        "Delivery Secret:  portal-credentials (deleted 600s after it is written)\n".to_owned(),
        "Verifier Secret:  portal-verifier\n".to_owned(),
    ] {
        assert!(text.contains(&line), "{line:?} in:\n{text}");
    }

    // Neither secret, nor the hashes the verifier holds, ever shows.
    let verifier = secrets(&cluster)
        .get("portal-verifier")
        .await
        .expect("verifier");
    let data = verifier.data.expect("verifier data");
    let mut material = vec![first, second];
    for field in ["hash", "previousHash"] {
        let value = String::from_utf8(data[field].0.clone()).expect("UTF-8");
        material.push(value);
    }
    assert_holds_none(&text, &material);
    assert_holds_none(&report.to_string(), &material);
}

#[tokio::test]
async fn status_needs_only_get_on_the_resource_and_names_what_it_may_not_read() {
    let cluster = support::cluster("status-access").await;
    apply_client(&cluster, "portal", json!({})).await;
    let ns = cluster.namespace.as_str();

    // Only `get` on the resource: the report shows (from the context's namespace), its
    // Events are left out.
    let reader = kubeconfig_as(
        &cluster,
        "status-reader",
        json!([{"apiGroups": ["keyward.io"], "resources": ["oauthclients", "encryptionkeys"], "verbs": ["get"]}]),
    )
    .await;
    let shown = status_as(&reader, &["oac", "portal"]);
    assert!(shown.status.success(), "{shown:?}");
    let text = String::from_utf8(shown.stdout).expect("UTF-8");
    assert!(
        text.starts_with(&format!("OAuthClient {ns}/portal\n")),
        "{text}"
    );
    assert!(text.contains("Ready:            unknown"), "{text}");
    assert!(text.contains("Events:           not shown"), "{text}");

    // No right at all: refused, naming the object.
    let nobody = kubeconfig_as(&cluster, "status-nobody", json!([])).await;
    let refused = status_as(&nobody, &["ek", "apim"]);
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.starts_with(&format!(
            "keyward: not allowed to get EncryptionKey {ns}/apim: "
        )),
        "{message}"
    );

    // A kind it does not know is refused before any request, naming those it knows.
    let unknown = status_as(&reader, &["deployment", "apim"]);
    assert_eq!(unknown.status.code(), Some(2));
    let message = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        message.contains("invalid value 'deployment'")
            && message.contains("encryptionkey")
            && message.contains("oauthclient"),
        "{message}"
    );
}

#[test]
fn status_help_documents_every_argument_and_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["status", "--help"])
        .output()
        .expect("keyward status --help runs");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("UTF-8");
    for mention in [
        "<KIND>",
        "<NAME>",
        "encryptionkey",
        "oauthclient",
        "ek",
        "oac",
        "-n, --namespace <NAMESPACE>",
        "the kubeconfig context's namespace",
        "-o, --output <OUTPUT>",
        "text:",
        "json:",
        "reportVersion",
        "never a Secret",
        "Exits 0",
        "Examples:",
        "keyward status ek apim -n wso2",
    ] {
        assert!(help.contains(mention), "{mention:?} in:\n{help}");
    }
}

#[tokio::test]
async fn status_on_a_cluster_without_keywards_crds_says_the_kind_is_not_served() {
    // A control plane of its own, where the CRDs were never installed.
    let control_plane = ControlPlane::start_private("status-no-crds");
    let output = status_as(&control_plane.kubeconfig, &["ek", "apim", "-n", "default"]);
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.starts_with(
            "keyward: the API server does not serve EncryptionKey (keyward.io/v1alpha1): are keyward's CRDs installed?"
        ),
        "{message}"
    );
}
