//! The chart's RBAC is what the operator runs on: the chart's ServiceAccount, ClusterRole
//! and bindings (or its Roles, for a namespaced install) are applied as `helm template`
//! renders them, and the operator runs as that ServiceAccount, with a token from the
//! TokenRequest API, and the leader-election flags the chart's Deployment gives it. It
//! issues clients, distributes keys and rotates one without a single refusal, while
//! `kubectl auth can-i` shows what the same ServiceAccount may not do.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ServiceAccount;
use keyward::crd::{EncryptionKey, OAuthClient};
use kube::api::{Api, PostParams};
use kube::config::Kubeconfig;
use serde_json::json;

use crate::encryption_key::deploy;
use crate::oauth_client::{delivered_secret, keyward_verify};
use crate::rotation::{bump, job_placement, until_rotated, write_ciphertexts};
use crate::support::{self, Operator, TestCluster, chart, jobs, manifest, wait};

/// How long the operator's token lives: longer than any test here runs.
const TOKEN_SECONDS: i64 = 3600;

/// The chart installed as a release of its own, and how to run the operator as it would.
struct Install {
    /// The release namespace, which holds the ServiceAccount.
    namespace: String,
    /// The chart's ServiceAccount.
    service_account: String,
    /// The kinds of the rendered RBAC objects, in order.
    kinds: Vec<String>,
    /// The namespaces the chart's Deployment tells the operator to watch.
    watch_namespaces: Vec<String>,
    /// The chart's leader-election flags, as its Deployment passes them.
    leader_election_args: Vec<String>,
    /// A kubeconfig that authenticates as the ServiceAccount.
    kubeconfig: PathBuf,
}

impl Install {
    /// `system:serviceaccount:<namespace>:<name>`, as `kubectl --as` names it.
    fn user(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }

    /// The operator as the ServiceAccount, watching `namespace`, with re-encryption Jobs
    /// on the job runner's node and the chart's leader election.
    fn operator(&self, namespace: &str) -> Operator {
        let mut args: Vec<String> = job_placement().into();
        args.extend(self.leader_election_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Operator::start(&self.kubeconfig, namespace, &args)
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// Installs the chart's ServiceAccount and RBAC in `namespace`, with `values` (helm
/// arguments), and writes a kubeconfig that authenticates as the ServiceAccount.
async fn install(cluster: &TestCluster, namespace: &str, values: &[&str]) -> Install {
    // ClusterRoles are cluster-scoped: the release is named after its (generated)
    // namespace, so no two tests share one.
    let release = namespace;
    let render = |templates: &[&str]| {
        let mut args = values.to_vec();
        for template in templates {
            args.extend(["--show-only", template]);
        }
        chart::template_release(release, namespace, &args)
    };
    let rbac = render(&["templates/serviceaccount.yaml", "templates/rbac.yaml"]);
    kubectl_apply(&rbac);
    let documents = manifest::documents(&rbac);
    let kinds = documents
        .iter()
        .map(|document| document["kind"].as_str().expect("a kind").to_owned())
        .collect();
    let service_account = documents
        .iter()
        .find(|document| document["kind"] == "ServiceAccount")
        .and_then(|document| document["metadata"]["name"].as_str())
        .expect("the chart renders a ServiceAccount")
        .to_owned();

    let deployment = manifest::documents(&render(&["templates/deployment.yaml"]))
        .into_iter()
        .find(|document| document["kind"] == "Deployment")
        .expect("the chart renders a Deployment");
    let args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("the operator's args")
        .iter()
        .map(|arg| arg.as_str().expect("string args").to_owned())
        .collect();
    let watch_namespaces = args
        .iter()
        .filter_map(|arg| arg.strip_prefix("--namespace="))
        .map(str::to_owned)
        .collect();
    let leader_election_args: Vec<String> = args
        .iter()
        .filter(|arg| arg.starts_with("--leader-elect"))
        .cloned()
        .collect();
    assert!(
        leader_election_args.contains(&"--leader-elect=true".to_owned()),
        "the chart elects a leader by default: {args:?}"
    );

    let token = service_account_token(cluster, namespace, &service_account).await;
    let kubeconfig = write_kubeconfig(namespace, &token);
    Install {
        namespace: namespace.to_owned(),
        service_account,
        kinds,
        watch_namespaces,
        leader_election_args,
        kubeconfig,
    }
}

/// `kubectl apply --server-side` of `manifests` as the cluster's admin.
fn kubectl_apply(manifests: &str) {
    let mut kubectl = Command::new(jobs::kubectl())
        .arg("--kubeconfig")
        .arg(&support::control_plane().kubeconfig)
        .args([
            "apply",
            "--server-side",
            "--field-manager=keyward-tests",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    kubectl
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifests.as_bytes())
        .expect("manifests written");
    let output = kubectl.wait_with_output().expect("kubectl exits");
    assert!(
        output.status.success(),
        "the chart's RBAC does not apply: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A token of `namespace/name` from the TokenRequest API, as a kubelet gets one for a
/// pod's projected volume.
async fn service_account_token(cluster: &TestCluster, namespace: &str, name: &str) -> String {
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
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("the API server issues a token for the chart's ServiceAccount")
        .status
        .expect("a TokenRequest status")
        .token
}

/// A kubeconfig for the admin kubeconfig's server and CA that authenticates with `token`.
fn write_kubeconfig(namespace: &str, token: &str) -> PathBuf {
    let admin = Kubeconfig::read_from(&support::control_plane().kubeconfig)
        .expect("the admin kubeconfig parses");
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
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {
            "cluster": "test", "user": "operator", "namespace": namespace,
        }}],
        "current-context": "operator",
    });
    let path = std::env::temp_dir().join(format!("keyward-test-{namespace}-operator.kubeconfig"));
    std::fs::write(&path, config.to_string()).expect("kubeconfig written");
    path
}

/// The lines of `log` that tell of a request the API server refused.
fn refusals(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| {
            let line = line.to_ascii_lowercase();
            line.contains("forbidden") || line.contains("code: 403")
        })
        .collect()
}

/// Asserts that the operator, and the Jobs it ran in `namespace`, were never refused.
fn assert_never_refused(operator: &Operator, namespace: &str) {
    let log = operator.log();
    let refused = refusals(&log);
    assert!(
        refused.is_empty(),
        "the API server refused the operator:\n{}",
        refused.join("\n")
    );
    let jobs_log = jobs::runner().log_of(namespace);
    let refused = refusals(&jobs_log);
    assert!(
        refused.is_empty(),
        "the API server refused a re-encryption Job:\n{}",
        refused.join("\n")
    );
}

/// Asks `kubectl auth can-i QUESTION --as=USER` (as the admin, who may impersonate) for
/// each question and asserts every answer is `expected`. A question kubectl warns about
/// (a resource the API server does not serve) fails, rather than passing as a "no";
/// questions on cluster-scoped kinds therefore say `-A`, else kubectl asks in the
/// kubeconfig's namespace and warns.
fn assert_answers(user: &str, expected: &str, questions: &[String]) {
    let wrong: Vec<String> = questions
        .iter()
        .filter_map(|question| {
            let output = Command::new(jobs::kubectl())
                .arg("--kubeconfig")
                .arg(&support::control_plane().kubeconfig)
                .args(["auth", "can-i"])
                .args(question.split_whitespace())
                .arg(format!("--as={user}"))
                .output()
                .expect("kubectl runs");
            let answer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            let warning = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            (answer != expected || !warning.is_empty())
                .then(|| format!("can-i {question}: {answer:?} {warning}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{user} should be answered {expected:?}:\n{}",
        wrong.join("\n")
    );
}

async fn until_issued(cluster: &TestCluster, name: &str) {
    let clients: Api<OAuthClient> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    wait::until(&clients, name, "the client is issued", |client| {
        wait::ready(client) == Some(("True".into(), "Issued".into()))
    })
    .await;
}

async fn until_distributed(cluster: &TestCluster, name: &str) {
    let keys: Api<EncryptionKey> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    wait::until(&keys, name, "the key is distributed", |key| {
        wait::ready(key) == Some(("True".into(), "KeyDistributed".into()))
    })
    .await;
}

/// Applies an OAuthClient, waits until it is issued and checks that its delivered
/// secret verifies.
async fn issue_and_verify(cluster: &TestCluster, name: &str, spec: serde_json::Value) {
    manifest::apply_keyward(cluster, "OAuthClient", name, spec).await;
    until_issued(cluster, name).await;
    let secret = delivered_secret(cluster, &format!("{name}-credentials")).await;
    assert_eq!(
        keyward_verify(cluster, &format!("{name}-verifier"), &secret),
        0,
        "{name}'s delivered secret verifies"
    );
}

#[tokio::test]
async fn a_cluster_wide_install_runs_every_scenario_on_the_charts_rbac_and_no_more() {
    let cluster = support::cluster("chart-rbac-cluster").await;
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    let install = install(&cluster, &cluster.namespace, &[]).await;
    assert_eq!(
        install.kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding"
        ],
        "the default install grants a ClusterRole, and a Role for its Lease"
    );
    assert!(install.watch_namespaces.is_empty(), "it watches everything");
    // It watches the test's namespace only, leaving other tests' resources alone; its
    // rights are the ClusterRole's all the same.
    let operator = install.operator(&cluster.namespace);

    issue_and_verify(&cluster, "portal", json!({})).await;

    deploy(&cluster, "apim", 2).await;
    let spec = json!({
        "targets": [{"kind": "Deployment", "name": "apim"}],
        "distribution": {"format": "Keyring"},
        "reencryption": {"writesPerSecond": 200},
    });
    manifest::apply_keyward(&cluster, "EncryptionKey", "apim", spec.clone()).await;
    until_distributed(&cluster, "apim").await;
    issue_and_verify(
        &cluster,
        "introspection",
        json!({"secretType": "Encrypted", "encryptionKeyRef": {"name": "apim"}}),
    )
    .await;

    // A rotation: the operator grants the re-encryption Job its own ServiceAccount, Role
    // and RoleBinding, which Kubernetes allows only for rights the operator holds itself
    // (it has neither `escalate` nor `bind`), and the Job runs as that ServiceAccount.
    let ciphertexts = write_ciphertexts(&cluster, "apim", 50).await;
    bump(&cluster, "apim", &spec, 1).await;
    let rotated = until_rotated(&cluster, "apim", 2).await;
    let rotation = rotated
        .status
        .as_ref()
        .and_then(|status| status.rotation.as_ref())
        .expect("rotation status");
    let progress = rotation.progress.as_ref().expect("progress");
    assert_eq!(progress.failed, 0);
    assert!(
        progress.done >= i64::try_from(ciphertexts.len()).expect("a count"),
        "the Job re-encrypted every value: {progress:?}"
    );
    let job: Job = Api::namespaced(cluster.client.clone(), &cluster.namespace)
        .get(rotation.job_name.as_deref().expect("job name"))
        .await
        .expect("the Job exists");
    assert_eq!(
        job.spec
            .and_then(|spec| spec.template.spec)
            .and_then(|spec| spec.service_account_name)
            .as_deref(),
        Some("apim-reencrypt")
    );
    let secret = delivered_secret(&cluster, "introspection-credentials").await;
    assert_eq!(
        keyward_verify(&cluster, "introspection-verifier", &secret),
        0,
        "the Encrypted client verifies after the rotation"
    );
    assert_never_refused(&operator, &cluster.namespace);

    let namespace = &cluster.namespace;
    let user = install.user();
    assert_answers(
        &user,
        "no",
        &[
            "delete customresourcedefinitions.apiextensions.k8s.io -A".to_owned(),
            "update customresourcedefinitions.apiextensions.k8s.io -A".to_owned(),
            format!("create pods --subresource=exec -n {namespace}"),
            format!("create pods -n {namespace}"),
            format!("delete pods -n {namespace}"),
            "delete namespaces -A".to_owned(),
            "create clusterroles.rbac.authorization.k8s.io -A".to_owned(),
            "create clusterrolebindings.rbac.authorization.k8s.io -A".to_owned(),
            format!("escalate roles.rbac.authorization.k8s.io -n {namespace}"),
            format!("bind roles.rbac.authorization.k8s.io -n {namespace}"),
            "bind clusterroles.rbac.authorization.k8s.io -A".to_owned(),
            "impersonate users -A".to_owned(),
            format!("impersonate serviceaccounts -n {namespace}"),
            format!("update encryptionkeys.keyward.io -n {namespace}"),
            format!("patch encryptionkeys.keyward.io -n {namespace}"),
            format!("delete encryptionkeys.keyward.io -n {namespace}"),
            format!("update oauthclients.keyward.io -n {namespace}"),
            format!("delete oauthclients.keyward.io -n {namespace}"),
            format!("create deployments.apps -n {namespace}"),
            format!("update deployments.apps -n {namespace}"),
            format!("delete deployments.apps -n {namespace}"),
            "get nodes -A".to_owned(),
            format!("create serviceaccounts --subresource=token -n {namespace}"),
            format!("delete serviceaccounts -n {namespace}"),
            format!("delete leases.coordination.k8s.io -n {namespace}"),
        ],
    );
    assert_answers(
        &user,
        "yes",
        &[
            format!("patch encryptionkeys.keyward.io --subresource=status -n {namespace}"),
            format!("patch oauthclients.keyward.io --subresource=status -n {namespace}"),
            format!("create secrets -n {namespace}"),
            format!("create roles.rbac.authorization.k8s.io -n {namespace}"),
            format!("create jobs.batch -n {namespace}"),
        ],
    );
}

#[tokio::test]
async fn a_namespaced_install_works_in_its_namespaces_and_reads_nothing_outside_them() {
    let cluster = support::cluster("chart-rbac-namespaced").await;
    let release_namespace = cluster.namespace.clone();
    let team = TestCluster {
        client: cluster.client.clone(),
        namespace: support::create_namespace(&cluster.client, "chart-rbac-team").await,
    };
    let other = support::create_namespace(&cluster.client, "chart-rbac-other").await;
    let _log = jobs::runner().log_on_failure(&team.namespace);
    let watch = format!("watchNamespaces={{{}}}", team.namespace);
    let install = install(
        &cluster,
        &release_namespace,
        &["--set", "rbac.namespaced=true", "--set", &watch],
    )
    .await;
    assert!(
        !install.kinds.iter().any(|kind| kind.starts_with("Cluster")),
        "a namespaced install grants nothing cluster-wide: {:?}",
        install.kinds
    );
    assert_eq!(
        install.watch_namespaces,
        std::slice::from_ref(&team.namespace)
    );
    assert!(
        install
            .leader_election_args
            .contains(&format!("--leader-election-namespace={release_namespace}")),
        "the Lease is in the release namespace: {:?}",
        install.leader_election_args
    );
    let operator = install.operator(&team.namespace);

    issue_and_verify(&team, "portal", json!({})).await;
    deploy(&team, "apim", 1).await;
    manifest::apply_keyward(
        &team,
        "EncryptionKey",
        "apim",
        json!({"targets": [{"kind": "Deployment", "name": "apim"}]}),
    )
    .await;
    until_distributed(&team, "apim").await;
    assert_never_refused(&operator, &team.namespace);

    let team = &team.namespace;
    let user = install.user();
    let lease = install
        .leader_election_args
        .iter()
        .find_map(|arg| arg.strip_prefix("--leader-election-lease="))
        .expect("the chart names the Lease");
    assert_answers(
        &user,
        "no",
        &[
            format!("get secrets -n {other}"),
            format!("create secrets -n {other}"),
            format!("get secrets -n {release_namespace}"),
            "get secrets -n kube-system".to_owned(),
            "list secrets --all-namespaces".to_owned(),
            "list oauthclients.keyward.io --all-namespaces".to_owned(),
            "list encryptionkeys.keyward.io --all-namespaces".to_owned(),
            format!("list oauthclients.keyward.io -n {other}"),
            format!("patch deployments.apps -n {other}"),
            format!("create roles.rbac.authorization.k8s.io -n {other}"),
            format!("list pods -n {release_namespace}"),
            format!("patch leases.coordination.k8s.io/someone-elses -n {release_namespace}"),
        ],
    );
    assert_answers(
        &user,
        "yes",
        &[
            format!("get secrets -n {team}"),
            format!("patch oauthclients.keyward.io --subresource=status -n {team}"),
            format!("get pods -n {release_namespace}"),
            format!("patch leases.coordination.k8s.io/{lease} -n {release_namespace}"),
        ],
    );
}
