//! The Helm chart renders what a real API server accepts, and runs the operator with the
//! flags its values ask for. `helm template` output goes through `kubectl apply
//! --dry-run=server`: the API server decodes, defaults, validates and admits every
//! object (CRDs, RBAC rules, the pod template) and stores nothing.

use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};

use crate::support::{self, chart, manifest};

/// The namespaces `ci/full-values.yaml` watches; the first also holds its Lease.
const FULL_VALUES_NAMESPACES: [&str; 2] = ["keyward-chart-team-a", "keyward-chart-team-b"];

#[tokio::test]
async fn the_chart_with_default_values_is_accepted_by_the_api_server() {
    let cluster = support::cluster("chart-default-values").await;
    let manifests = chart::template(&cluster.namespace, &[]);
    apply_dry_run(&manifests);
}

#[tokio::test]
async fn the_chart_with_every_option_set_is_accepted_by_the_api_server() {
    let cluster = support::cluster("chart-full-values").await;
    for namespace in FULL_VALUES_NAMESPACES {
        create_namespace(&cluster.client, namespace).await;
    }
    // The test control plane has no Prometheus Operator; its ServiceMonitor and
    // PrometheusRule CRDs, reduced to a schema that keeps any field, let the chart's
    // objects of those kinds be checked too.
    install_monitoring_crd(&cluster.client, "ServiceMonitor", "servicemonitors").await;
    install_monitoring_crd(&cluster.client, "PrometheusRule", "prometheusrules").await;
    let full_values = chart::dir().join("ci/full-values.yaml");
    let manifests = chart::template(
        &cluster.namespace,
        &["-f", full_values.to_str().expect("a UTF-8 path")],
    );
    apply_dry_run(&manifests);
}

/// A real `helm install` into a namespace that enforces the `restricted` Pod Security
/// Standard: the API server admits the operator's pods (kwok runs them), and the
/// release's two replicas, PodDisruptionBudget and Service come up.
#[tokio::test]
async fn an_installed_release_runs_two_replicas_under_the_restricted_pod_security_standard() {
    let cluster = support::cluster("chart-install").await;
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let labels = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": cluster.namespace, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }},
    });
    namespaces
        .patch(
            &cluster.namespace,
            &PatchParams::apply("chart-test").force(),
            &Patch::Apply(&labels),
        )
        .await
        .expect("the namespace enforces restricted");
    // The CRDs are the test control plane's already; the release is named after the
    // namespace, so its cluster-wide RBAC cannot clash with another test's.
    let release = cluster.namespace.clone();
    let output = Command::new(chart::helm())
        .args(["install", &release])
        .arg(chart::dir())
        .args(["--namespace", &cluster.namespace])
        .args(["--set", "crds.install=false", "--wait", "--timeout", "120s"])
        .env("KUBECONFIG", &support::control_plane().kubeconfig)
        .output()
        .expect("helm runs");
    assert!(
        output.status.success(),
        "helm install failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let selector = format!("app.kubernetes.io/instance={release}");
    let listed = ListParams::default().labels(&selector);
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let deployment = deployments
        .list(&listed)
        .await
        .expect("deployments")
        .items
        .pop()
        .expect("the release's Deployment");
    let status = deployment.status.expect("status");
    assert_eq!(status.available_replicas, Some(2), "both replicas run");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    assert_eq!(pods.list(&listed).await.expect("pods").items.len(), 2);
    let budgets: Api<PodDisruptionBudget> =
        Api::namespaced(cluster.client.clone(), &cluster.namespace);
    assert_eq!(
        budgets.list(&listed).await.expect("budgets").items.len(),
        1,
        "a PodDisruptionBudget guards the replicas"
    );
}

#[test]
fn the_operator_runs_with_the_flags_the_values_ask_for() {
    assert_eq!(
        operator_args(&chart::template("keyward", &[])),
        [
            "run",
            "--log-format=json",
            "--concurrency=32",
            "--metrics-addr=:8080",
            "--health-addr=:8081",
            "--leader-elect=true",
            "--leader-election-namespace=keyward",
            "--leader-election-lease=keyward",
            "--leader-election-lease-duration=15s",
            "--leader-election-renew-deadline=10s",
        ]
    );
    let full_values = chart::dir().join("ci/full-values.yaml");
    let full = chart::template(
        "keyward",
        &["-f", full_values.to_str().expect("a UTF-8 path")],
    );
    assert_eq!(
        operator_args(&full),
        [
            "run",
            "--log-format=text",
            "--concurrency=8",
            "--allow-legacy-algorithms",
            "--allow-plaintext-secrets",
            "--allow-job-templates",
            "--namespace=keyward-chart-team-a",
            "--namespace=keyward-chart-team-b",
            "--metrics-addr=:9090",
            "--health-addr=:9091",
            "--leader-elect=true",
            "--leader-election-namespace=keyward-chart-team-a",
            "--leader-election-lease=keyward-leader",
            "--leader-election-lease-duration=30s",
            "--leader-election-renew-deadline=20s",
            "--job-image=registry.example.com:5000/platform/keyward:0.1.0-rc.1",
            "--job-node-selector=keyward.io/job-runner=true",
            "--job-node-selector=kubernetes.io/os=linux",
            "--job-toleration=keyward.io/job-runner=true:NoSchedule",
            "--job-toleration=dedicated:NoExecute",
        ]
    );
    let single = chart::template(
        "keyward",
        &[
            "--set",
            "replicaCount=1",
            "--set",
            "leaderElection.enabled=false",
        ],
    );
    assert_eq!(
        operator_args(&single),
        [
            "run",
            "--log-format=json",
            "--concurrency=32",
            "--metrics-addr=:8080",
            "--health-addr=:8081",
            "--leader-elect=false",
        ]
    );
}

/// The PrometheusRule and the dashboard's ConfigMap need the Prometheus operator and a
/// Grafana sidecar: the chart renders them only when asked.
#[test]
fn the_alerts_and_the_dashboard_render_only_when_enabled() {
    let kinds = |manifests: &str| -> Vec<String> {
        manifest::documents(manifests)
            .iter()
            .map(|document| document["kind"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let default = kinds(&chart::template("keyward", &[]));
    assert!(!default.iter().any(|kind| kind == "PrometheusRule"));
    assert!(!default.iter().any(|kind| kind == "ConfigMap"));
    let enabled = kinds(&chart::template(
        "keyward",
        &[
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "grafanaDashboard.enabled=true",
        ],
    ));
    assert_eq!(enabled.iter().filter(|k| *k == "PrometheusRule").count(), 1);
    assert_eq!(enabled.iter().filter(|k| *k == "ConfigMap").count(), 1);
}

/// The ConfigMap holds the dashboard file byte for byte, under the sidecar's label and
/// with the labels and annotations the values add.
#[test]
fn the_dashboard_configmap_carries_the_dashboard_file_as_it_is() {
    let manifests = chart::template(
        "keyward",
        &[
            "--set",
            "grafanaDashboard.enabled=true",
            "--set",
            "grafanaDashboard.namespace=monitoring",
            "--set",
            "grafanaDashboard.annotations.grafana_folder=Security",
        ],
    );
    let documents = manifest::documents(&manifests);
    let config_map = documents
        .iter()
        .find(|document| document["kind"] == "ConfigMap")
        .expect("the dashboard's ConfigMap");
    let file = std::fs::read_to_string(chart::dir().join("files/keyward-dashboard.json"))
        .expect("the dashboard file");
    assert!(
        config_map["data"]["keyward-dashboard.json"].as_str() == Some(file.as_str()),
        "the ConfigMap's keyward-dashboard.json is not files/keyward-dashboard.json as it is"
    );
    let metadata = &config_map["metadata"];
    assert_eq!(metadata["namespace"], "monitoring");
    assert_eq!(metadata["labels"]["grafana_dashboard"], "1");
    assert_eq!(metadata["annotations"]["grafana_folder"], "Security");
}

/// Runs the real binary with `args` and no cluster to reach: it must get past parsing
/// them (and their validation) and fail only when connecting.
fn assert_the_binary_accepts(args: &[String]) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("keyward runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to the Kubernetes API"),
        "keyward refused the chart's arguments {args:?}: {stderr}"
    );
}

/// The arguments of the `keyward` container of the rendered Deployment.
fn operator_args(manifests: &str) -> Vec<String> {
    let args = rendered_args(manifests);
    assert_the_binary_accepts(&args);
    args
}

fn rendered_args(manifests: &str) -> Vec<String> {
    let deployment = manifest::documents(manifests)
        .into_iter()
        .find(|document| document["kind"] == "Deployment")
        .expect("the chart renders a Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    let keyward = containers
        .iter()
        .find(|container| container["name"] == "keyward")
        .expect("a container named keyward");
    keyward["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|arg| arg.as_str().expect("string args").to_owned())
        .collect()
}

/// `kubectl apply --dry-run=server` of `manifests`; every object must be accepted.
fn apply_dry_run(manifests: &str) {
    let output = support::kubectl(
        &["apply", "--dry-run=server", "-f", "-"],
        manifests.as_bytes(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the API server refused part of the chart:\n{}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let accepted = stdout
        .lines()
        .filter(|line| line.ends_with("(server dry run)"))
        .count();
    assert_eq!(
        accepted,
        manifest::documents(manifests).len(),
        "every rendered object went through the API server:\n{stdout}"
    );
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("namespace {name} cannot be created: {error}"),
    }
}

/// A Prometheus Operator CRD of `kind` (plural `plural`) whose schema keeps any field.
async fn install_monitoring_crd(client: &kube::Client, kind: &str, plural: &str) {
    let name = format!("{plural}.monitoring.coreos.com");
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": plural,
                "singular": kind.to_lowercase(),
            },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true,
                }},
            }],
        },
    }))
    .expect("a CustomResourceDefinition");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply("keyward-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap_or_else(|error| panic!("the {kind} CRD does not apply: {error}"));
    let established = await_condition(crds, &name, conditions::is_crd_established());
    tokio::time::timeout(support::WAIT, established)
        .await
        .unwrap_or_else(|_| panic!("the {kind} CRD is not established in time"))
        .expect("CRD watch works");
}
