//! Who the measured clients are: a ServiceAccount bound to `cluster-admin`, as an
//! operator is in a cluster, never the test admin.
//!
//! The test admin belongs to `system:masters`, which API Priority and Fairness exempts
//! from every limit. An operator's ServiceAccount falls under the `service-accounts`
//! flow schema (priority level `workload-low`) instead, with the API server's default
//! limits. The operator, the Rust baseline, kubectl, the re-encryption Job (its own
//! ServiceAccount) and the sealed-secrets controller all run under such identities, so
//! they meet the same limits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

/// The identity's namespace and name.
const NAMESPACE: &str = "keyward-bench";
const NAME: &str = "operator";

/// A ServiceAccount's credentials for the benchmark's clients.
pub struct Identity {
    /// A kubeconfig for the same server and CA as the admin's, with the token.
    pub kubeconfig: PathBuf,
    /// The bearer token (the sealed-secrets controller reads it from a file).
    pub token: String,
    /// The API server's CA certificate, PEM.
    pub ca_pem: Vec<u8>,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
}

/// Creates the ServiceAccount, binds it to `cluster-admin`, and writes a kubeconfig with
/// a token valid for four hours into `dir`.
pub async fn service_account(admin: &Client, admin_kubeconfig: &Path, dir: &Path) -> Identity {
    let params = PatchParams::apply("keyward-bench").force();
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(admin.clone())
        .patch(NAMESPACE, &params, &Patch::Apply(&namespace))
        .await
        .expect("namespace applies");
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), NAMESPACE);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts
        .patch(NAME, &params, &Patch::Apply(&account))
        .await
        .expect("ServiceAccount applies");
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some("keyward-bench-operator".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "cluster-admin".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: NAME.into(),
            namespace: Some(NAMESPACE.into()),
            ..Subject::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .patch("keyward-bench-operator", &params, &Patch::Apply(&binding))
        .await
        .expect("ClusterRoleBinding applies");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(4 * 3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request(NAME, &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("a token")
        .token;

    let text = std::fs::read_to_string(admin_kubeconfig).expect("admin kubeconfig");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    let cluster = &config["clusters"][0]["cluster"];
    let server = cluster["server"].as_str().expect("server").to_owned();
    let ca_data = cluster["certificate-authority-data"]
        .as_str()
        .expect("certificate-authority-data")
        .to_owned();
    use base64::Engine;
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(ca_data.trim())
        .expect("base64 CA");
    let user = BTreeMap::from([("token", token.clone())]);
    config["users"][0]["user"] = serde_yaml::to_value(user).expect("YAML");
    let kubeconfig = dir.join("operator.kubeconfig");
    std::fs::write(&kubeconfig, serde_yaml::to_string(&config).expect("YAML"))
        .expect("kubeconfig written");
    Identity {
        kubeconfig,
        token,
        ca_pem,
        server,
    }
}

/// A client authenticated as `identity`.
pub async fn client(identity: &Identity) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(&identity.kubeconfig).expect("parses");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("valid kubeconfig");
    Client::try_from(config).expect("client")
}
