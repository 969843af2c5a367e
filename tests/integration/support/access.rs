//! Acting as someone with fewer rights than the admin: a ServiceAccount of the test's
//! namespace with exactly the rules a test gives it, and a kubeconfig that authenticates
//! as it, for running the `keyward` binary with those rights and no more.

use std::path::PathBuf;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::Kubeconfig;
use serde_json::json;

use super::{TestCluster, control_plane};

/// How long a token lasts: longer than any test.
const TOKEN_SECONDS: i64 = 3600;

/// Creates ServiceAccount `account` in the test's namespace, bound to a Role of `rules`
/// (RBAC PolicyRules as JSON; none for an account that may do nothing), and returns a
/// kubeconfig that authenticates as it, its context's namespace the test's.
pub async fn kubeconfig_as(
    cluster: &TestCluster,
    account: &str,
    rules: serde_json::Value,
) -> PathBuf {
    let namespace = &cluster.namespace;
    let params = PostParams::default();
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), namespace);
    let service_account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(account.to_owned()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts
        .create(&params, &service_account)
        .await
        .expect("ServiceAccount created");
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": account},
        "rules": rules,
    }))
    .expect("a Role");
    Api::<Role>::namespaced(cluster.client.clone(), namespace)
        .create(&params, &role)
        .await
        .expect("Role created");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": account},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }))
    .expect("a RoleBinding");
    Api::<RoleBinding>::namespaced(cluster.client.clone(), namespace)
        .create(&params, &binding)
        .await
        .expect("RoleBinding created");
    let token = service_account_token(cluster, namespace, account).await;
    write_kubeconfig(namespace, account, &token)
}

/// A token of `namespace/account` from the TokenRequest API, as a kubelet gets one for a
/// pod's projected volume.
pub async fn service_account_token(
    cluster: &TestCluster,
    namespace: &str,
    account: &str,
) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(TOKEN_SECONDS),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("the API server issues a token for {namespace}/{account}: {e}"))
        .status
        .expect("a TokenRequest status")
        .token
}

/// A kubeconfig for the admin kubeconfig's server and CA that authenticates as `account`
/// with `token`, its context's namespace `namespace`.
pub fn write_kubeconfig(namespace: &str, account: &str, token: &str) -> PathBuf {
    let admin =
        Kubeconfig::read_from(&control_plane().kubeconfig).expect("the admin kubeconfig parses");
    let cluster = admin
        .clusters
        .first()
        .and_then(|cluster| cluster.cluster.clone())
        .expect("the admin kubeconfig names a cluster");
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": cluster.server,
            "certificate-authority-data": cluster.certificate_authority_data,
        }}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {
            "cluster": "test", "user": account, "namespace": namespace,
        }}],
        "current-context": account,
    });
    let path = std::env::temp_dir().join(format!("keyward-test-{namespace}-{account}.kubeconfig"));
    std::fs::write(&path, config.to_string()).expect("kubeconfig written");
    path
}
