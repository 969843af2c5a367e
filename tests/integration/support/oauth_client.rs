//! OAuthClients as the tests drive them: applied as a GitOps tool applies them, waited
//! on until Ready, and their credentials read and checked as an API gateway would.

use k8s_openapi::api::core::v1::Secret;
use keyward::crd::OAuthClient;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::api::{clients, secrets};
use super::{TestCluster, manifest, wait};

/// Applies OAuthClient `name` with `spec`, as a GitOps tool does.
pub async fn apply_client(cluster: &TestCluster, name: &str, spec: serde_json::Value) {
    manifest::apply_keyward(cluster, "OAuthClient", name, spec).await;
}

/// Waits until client `name` reports `Ready=status` with `reason` for its current
/// generation.
pub async fn client_until(
    cluster: &TestCluster,
    name: &str,
    status: &str,
    reason: &str,
) -> OAuthClient {
    wait::until_ready(&clients(cluster), name, status, reason).await
}

/// Waits until the client is `Ready` with `reason` and `want_version` (when given). The
/// status follows from the reason: `False` for a policy refusal (`…NotAllowed`) or a
/// missing or unready dependency (`…Missing`, `…NotReady`), else `True`.
pub async fn until_client_ready(
    cluster: &TestCluster,
    name: &str,
    reason: &str,
    want_version: Option<i64>,
) -> OAuthClient {
    let status = if reason.ends_with("NotAllowed")
        || reason.ends_with("Missing")
        || reason.ends_with("NotReady")
    {
        "False"
    } else {
        "True"
    };
    let what = format!("{name} is Ready={status} ({reason}) at version {want_version:?}");
    wait::until(&clients(cluster), name, &what, |client| {
        wait::ready(client) == Some((status.to_owned(), reason.to_owned()))
            && want_version.is_none_or(|version| {
                client.status.as_ref().and_then(|s| s.secret_version) == Some(version)
            })
    })
    .await
}

/// The client secret delivered in Secret `name`.
pub async fn delivered_secret(cluster: &TestCluster, name: &str) -> String {
    let secret = secrets(cluster)
        .get(name)
        .await
        .expect("delivery Secret exists");
    let data = secret.data.expect("delivery data");
    String::from_utf8(data["clientSecret"].0.clone()).expect("UTF-8 secret")
}

/// Runs `keyward verify --secret NAME -n NAMESPACE` with `presented` on stdin; returns the
/// exit code.
pub fn keyward_verify(cluster: &TestCluster, verifier: &str, presented: &str) -> i32 {
    let args = ["verify", "--secret", verifier, "-n", &cluster.namespace];
    let output = super::keyward(&args, presented.as_bytes());
    output.status.code().expect("exit code")
}

/// Every Secret in the cluster whose data contains `plaintext`, as namespace/name.
pub async fn secrets_holding(cluster: &TestCluster, plaintext: &str) -> Vec<String> {
    let all: Api<Secret> = Api::all(cluster.client.clone());
    all.list(&ListParams::default())
        .await
        .expect("secrets list")
        .into_iter()
        .filter(|secret| {
            secret.data.iter().flatten().any(|(_, value)| {
                value
                    .0
                    .windows(plaintext.len())
                    .any(|window| window == plaintext.as_bytes())
            })
        })
        .map(|secret| {
            format!(
                "{}/{}",
                secret.namespace().unwrap_or_default(),
                secret.name_any()
            )
        })
        .collect()
}
