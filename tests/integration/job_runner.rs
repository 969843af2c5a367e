//! `hack/job-runner.py` against the real control plane (see `support::jobs`): a Job's
//! pod runs as a local process authenticated as the Job's service account, and
//! kube-controller-manager's Job controller completes, retries and fails the Job from
//! the exit codes the runner reports.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::ListParams;
use serde_json::json;

use crate::support::{self, TestCluster, api, jobs, manifest, wait};

/// The service account the Jobs run as: it may only `get` ConfigMaps.
const ACCOUNT: &str = "reader";
const CONFIG_MAP: &str = "settings";

/// [`ACCOUNT`], its Role and RoleBinding, and the ConfigMap it may read.
async fn reader_account(cluster: &TestCluster) {
    let documents = [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT}}),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "get-config-maps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "reader-gets-config-maps"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "get-config-maps"},
            "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": cluster.namespace}],
        }),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIG_MAP}, "data": {"greeting": "hello from the config map"},
        }),
    ];
    for document in &documents {
        manifest::apply(
            &cluster.client,
            &cluster.namespace,
            "job-runner-test",
            document,
        )
        .await
        .expect("applies");
    }
}

/// Creates a Job of one `sh -c script` container on the job runner's node, run as
/// [`ACCOUNT`] with `$KUBECTL` naming kubectl, retried once.
async fn run_job(cluster: &TestCluster, name: &str, script: &str) {
    let document = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 1,
            "template": {"spec": {
                "restartPolicy": "Never",
                "serviceAccountName": ACCOUNT,
                "nodeSelector": jobs::node_selector(),
                "tolerations": [jobs::toleration()],
                "containers": [{
                    "name": "main",
                    "image": "keyward:test",
                    "command": ["sh", "-c", script],
                    "env": [{"name": "KUBECTL", "value": jobs::kubectl()}],
                }],
            }},
        },
    });
    manifest::apply(
        &cluster.client,
        &cluster.namespace,
        "job-runner-test",
        &document,
    )
    .await
    .expect("Job applies");
}

/// Whether the Job has the condition `type_` with status `True`.
fn job_is(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == type_ && condition.status == "True")
        })
}

/// The pods of the Job `name`, oldest first.
async fn job_pods(cluster: &TestCluster, name: &str) -> Vec<Pod> {
    let selector = format!("batch.kubernetes.io/job-name={name}");
    let mut pods = api::pods(cluster)
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("pods list")
        .items;
    pods.sort_by_key(|pod| pod.creation_timestamp());
    pods
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

/// The exit code and reason of the pod's terminated container.
fn terminated(pod: &Pod) -> Option<(i32, String)> {
    let state = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let terminated = state.state.as_ref()?.terminated.as_ref()?;
    Some((
        terminated.exit_code,
        terminated.reason.clone().unwrap_or_default(),
    ))
}

#[tokio::test]
async fn a_job_runs_as_its_service_account_and_completes() {
    let cluster = support::cluster("job-runner-complete").await;
    let runner = jobs::runner();
    let _log = runner.log_on_failure(&cluster.namespace);
    reader_account(&cluster).await;

    let script = format!(
        r#""$KUBECTL" get configmap {CONFIG_MAP} -n {} -o jsonpath='{{.data.greeting}}'"#,
        cluster.namespace
    );
    run_job(&cluster, "read", &script).await;
    let job = wait::until(&api::jobs(&cluster), "read", "the Job completes", |job| {
        job_is(job, "Complete")
    })
    .await;

    assert_eq!(job.status.and_then(|status| status.succeeded), Some(1));
    let pods = job_pods(&cluster, "read").await;
    assert_eq!(pods.len(), 1, "one pod, never retried");
    let node = pods[0]
        .spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_deref());
    assert_eq!(node, Some(jobs::NODE), "scheduled on the runner's node");
    assert_eq!(phase(&pods[0]), Some("Succeeded"));
    assert_eq!(terminated(&pods[0]), Some((0, "Completed".into())));
    let output = format!(
        "[{}/{}] hello from the config map",
        cluster.namespace,
        pods[0].name_any()
    );
    assert!(
        runner.log().contains(&output),
        "the pod read the ConfigMap; runner log:\n{}",
        runner.log_of(&cluster.namespace)
    );
}

#[tokio::test]
async fn a_job_is_refused_what_its_service_account_may_not_do_and_fails_after_its_retry() {
    let cluster = support::cluster("job-runner-forbidden").await;
    let runner = jobs::runner();
    let _log = runner.log_on_failure(&cluster.namespace);
    reader_account(&cluster).await;

    // The runner's admin kubeconfig could list Secrets; the pod's service account may not.
    let script = format!(r#""$KUBECTL" get secrets -n {}"#, cluster.namespace);
    run_job(&cluster, "list-secrets", &script).await;
    let job = wait::until(
        &api::jobs(&cluster),
        "list-secrets",
        "the Job fails",
        |job| job_is(job, "Failed"),
    )
    .await;

    assert_eq!(
        job.status.and_then(|status| status.failed),
        Some(2),
        "backoffLimit 1: the pod and one retry"
    );
    let pods = job_pods(&cluster, "list-secrets").await;
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        assert_eq!(phase(pod), Some("Failed"), "{}", pod.name_any());
        assert_eq!(
            terminated(pod),
            Some((1, "Error".into())),
            "{}",
            pod.name_any()
        );
    }
    let forbidden = format!(
        "User \"system:serviceaccount:{}:{ACCOUNT}\" cannot list resource \"secrets\"",
        cluster.namespace
    );
    let log = runner.log_of(&cluster.namespace);
    assert_eq!(
        log.matches(&forbidden).count(),
        2,
        "each pod was refused as the service account; runner log:\n{log}"
    );
}

#[tokio::test]
async fn a_killed_job_pod_fails_with_exit_code_137_and_the_job_controller_starts_another() {
    let cluster = support::cluster("job-runner-kill").await;
    let runner = jobs::runner();
    let _log = runner.log_on_failure(&cluster.namespace);
    reader_account(&cluster).await;
    let jobs = api::jobs(&cluster);
    let pods = api::pods(&cluster);

    run_job(&cluster, "sleeper", "sleep 30").await;
    wait::until(&jobs, "sleeper", "the Job has a pod", |job| {
        job.status.as_ref().and_then(|status| status.active) == Some(1)
    })
    .await;
    let first = job_pods(&cluster, "sleeper").await[0].name_any();
    wait::until(&pods, &first, "the pod runs", |pod| {
        phase(pod) == Some("Running")
    })
    .await;

    runner.kill_jobs_in(&cluster.namespace);
    let killed = wait::until(&pods, &first, "the killed pod fails", |pod| {
        phase(pod) == Some("Failed")
    })
    .await;
    assert_eq!(terminated(&killed), Some((137, "Error".into())));

    let job = wait::until(
        &jobs,
        "sleeper",
        "the Job controller starts a second pod",
        |job| {
            job.status
                .as_ref()
                .is_some_and(|status| status.failed == Some(1) && status.active == Some(1))
        },
    )
    .await;
    assert!(!job_is(&job, "Failed"), "one retry is left");
    let second = job_pods(&cluster, "sleeper")
        .await
        .into_iter()
        .map(|pod| pod.name_any())
        .find(|name| *name != first)
        .expect("a second pod");
    wait::until(&pods, &second, "the second pod runs", |pod| {
        phase(pod) == Some("Running")
    })
    .await;

    // Killed again, the Job has used up its backoffLimit.
    runner.kill_jobs_in(&cluster.namespace);
    let job = wait::until(&jobs, "sleeper", "the Job fails", |job| {
        job_is(job, "Failed")
    })
    .await;
    assert_eq!(job.status.and_then(|status| status.failed), Some(2));
    let second = pods.get(&second).await.expect("second pod");
    assert_eq!(terminated(&second), Some((137, "Error".into())));
}
