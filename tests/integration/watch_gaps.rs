//! What changes while keyward's watches are away — the API server restarted, etcd
//! compacted past the resourceVersion they had reached, so they must list everything
//! again and no event tells of what was deleted meanwhile — is noticed all the same.
//!
//! Each test has a control plane of its own: taking the API server away would disturb
//! every other test on the shared one.

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use keyward::crd::{EncryptionKey, OAuthClient};
use kube::api::Api;
use serde_json::json;

use crate::support::oauth_client::delivered_secret;
use crate::support::{self, ControlPlane, Operator, TestCluster, manifest, wait};

/// How long what follows an outage may take: each watch backs off while the API server
/// is away (kube-runtime's default: up to about a minute between attempts, with jitter),
/// and the 410 Gone it then meets is one more failure to back off from before it lists
/// everything again.
const AFTER_OUTAGE: Duration = Duration::from_secs(300);

/// Deletes `/registry/secrets/NAMESPACE/NAME` in etcd behind the API server's back (it
/// is stopped), then compacts etcd's history up to that deletion: a watch that comes back
/// from before it gets 410 Gone and lists again, and no event tells of the deletion.
fn delete_in_etcd_and_compact(control_plane: &ControlPlane, namespace: &str, secret: &str) {
    let etcd = control_plane.etcd_url();
    let key = STANDARD.encode(format!("/registry/secrets/{namespace}/{secret}"));
    let deleted = etcd_call(&etcd, "kv/deleterange", json!({ "key": key }));
    assert_eq!(deleted["deleted"], "1", "etcd held {secret}: {deleted}");
    let revision = deleted["header"]["revision"]
        .as_str()
        .expect("etcd reports its revision")
        .to_owned();
    etcd_call(
        &etcd,
        "kv/compaction",
        json!({ "revision": revision, "physical": true }),
    );
}

/// POSTs `body` to etcd's JSON gateway at `/v3/PATH`.
fn etcd_call(etcd: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let output = Command::new("curl")
        .args(["--silent", "--fail", "--max-time", "10", "-X", "POST"])
        .arg(format!("{etcd}/v3/{path}"))
        .arg("--data")
        .arg(body.to_string())
        .output()
        .expect("curl runs");
    assert!(output.status.success(), "etcd answers {path}");
    serde_json::from_slice(&output.stdout).expect("etcd answers JSON")
}

/// Takes the API server away, deletes `secret` meanwhile, and brings it back.
async fn delete_while_watches_are_away(
    control_plane: &ControlPlane,
    cluster: &TestCluster,
    secret: &str,
) {
    control_plane.stop_apiserver();
    wait::until_true("the API server is down", support::WAIT, || {
        support::http::get(&format!("{}/readyz", server(control_plane))).is_none()
    })
    .await;
    delete_in_etcd_and_compact(control_plane, &cluster.namespace, secret);
    control_plane.start_apiserver().await;
}

fn server(control_plane: &ControlPlane) -> String {
    let kubeconfig = std::fs::read_to_string(&control_plane.kubeconfig).expect("kubeconfig");
    kubeconfig
        .lines()
        .find_map(|line| line.trim().strip_prefix("server: "))
        .expect("the kubeconfig names its server")
        .to_owned()
}

/// Without leader election, so that the outage ends no leadership term (a new term
/// starts from nothing): what is proven is the watches' own relisting.
fn operator(control_plane: &ControlPlane, cluster: &TestCluster) -> Operator {
    Operator::start(
        &control_plane.kubeconfig,
        &cluster.namespace,
        &["--leader-elect", "false"],
    )
}

#[tokio::test]
async fn a_verifier_deleted_while_the_watches_were_away_is_repaired_after_they_list_again() {
    let control_plane = ControlPlane::start_private("verifier-gap");
    let cluster = support::cluster_on(&control_plane, "verifier-gap").await;
    let _operator = operator(&control_plane, &cluster);
    manifest::apply_keyward(&cluster, "OAuthClient", "billing", json!({})).await;
    let clients: Api<OAuthClient> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let issued = |version: i64| {
        move |client: &OAuthClient| {
            wait::ready(client) == Some(("True".to_owned(), "Issued".to_owned()))
                && client.status.as_ref().and_then(|s| s.secret_version) == Some(version)
        }
    };
    wait::until(&clients, "billing", "billing is issued", issued(1)).await;

    delete_while_watches_are_away(&control_plane, &cluster, "billing-verifier").await;

    wait::until_within(
        &clients,
        "billing",
        "billing is issued again, with a verifier",
        AFTER_OUTAGE,
        issued(2),
    )
    .await;
    let presented = delivered_secret(&cluster, "billing-credentials").await;
    let args = [
        "verify",
        "--secret",
        "billing-verifier",
        "-n",
        &cluster.namespace,
    ];
    let verified = support::keyward_on(&control_plane, &args, presented.as_bytes());
    assert_eq!(
        verified.status.code(),
        Some(0),
        "the repaired verifier verifies the secret delivered with it"
    );
}

#[tokio::test]
async fn a_keyring_deleted_while_the_watches_were_away_is_never_used_from_memory() {
    let control_plane = ControlPlane::start_private("keyring-gap");
    let cluster = support::cluster_on(&control_plane, "keyring-gap").await;
    let _operator = operator(&control_plane, &cluster);
    manifest::apply_keyward(&cluster, "EncryptionKey", "apim", json!({})).await;
    let keys: Api<EncryptionKey> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    wait::until(&keys, "apim", "apim is distributed", |key| {
        wait::ready(key) == Some(("True".to_owned(), "KeyDistributed".to_owned()))
    })
    .await;
    let encrypted = json!({"secretType": "Encrypted", "encryptionKeyRef": {"name": "apim"}});
    manifest::apply_keyward(&cluster, "OAuthClient", "portal", encrypted).await;
    let clients: Api<OAuthClient> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    wait::until(&clients, "portal", "portal is issued", |client| {
        wait::ready(client) == Some(("True".to_owned(), "Issued".to_owned()))
    })
    .await;

    delete_while_watches_are_away(&control_plane, &cluster, "apim-keyring").await;

    // The client, whose record only that keyring decrypts, is no longer ready: no keyring
    // remembered from before the gap stands in for it. The key reports it missing.
    let unready = "portal is not ready without its keyring";
    wait::until_within(&clients, "portal", unready, AFTER_OUTAGE, |client| {
        wait::ready(client).is_some_and(|(status, _)| status == "False")
    })
    .await;
    let missing = "apim reports its keyring missing";
    wait::until_within(&keys, "apim", missing, AFTER_OUTAGE, |key| {
        wait::condition(key, "Degraded") == Some(("True".to_owned(), "KeyringMissing".to_owned()))
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    assert!(
        secrets
            .get_opt("apim-keyring")
            .await
            .expect("read")
            .is_none(),
        "no keyring is made up in place of the lost one"
    );
}
