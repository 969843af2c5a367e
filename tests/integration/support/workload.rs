//! The workloads keys are distributed to: a Deployment applied as a GitOps tool applies
//! it, run on kwok's simulated nodes, and how tests tell that it has rolled out.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use serde_json::json;

use super::api::{deployments, pods};
use super::{TestCluster, manifest, wait};

/// Deployment `name` of `replicas` pods of one container, `apim`, selected by the label
/// `app=<name>`.
pub fn deployment_manifest(name: &str, replicas: i32) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "apim", "image": "wso2/wso2am:4.3.0"}]},
            },
        },
    })
}

/// Applies the Deployment as a GitOps tool does (its own field manager) and waits until
/// all its pods are ready on the simulated nodes.
pub async fn deploy(cluster: &TestCluster, name: &str, replicas: i32) -> Deployment {
    manifest::apply(
        &cluster.client,
        &cluster.namespace,
        "argocd",
        &deployment_manifest(name, replicas),
    )
    .await
    .expect("Deployment applies");
    wait::until(
        &deployments(cluster),
        name,
        "the Deployment's pods are ready",
        |deployment| {
            deployment
                .status
                .as_ref()
                .and_then(|status| status.ready_replicas)
                == Some(replicas)
        },
    )
    .await
}

/// Whether every pod of `deployment` runs its current template and is ready.
pub fn rolled_out(deployment: &Deployment, replicas: i32) -> bool {
    let Some(status) = deployment.status.as_ref() else {
        return false;
    };
    status.observed_generation == deployment.metadata.generation
        && status.replicas == Some(replicas)
        && status.updated_replicas == Some(replicas)
        && status.ready_replicas == Some(replicas)
}

/// Whether the Deployment has rolled out its current template to every replica its spec
/// asks for, each ready and available, and no pod of an older one is left.
pub fn rolled_out_and_available(deployment: &Deployment) -> bool {
    let wanted = deployment.spec.as_ref().and_then(|spec| spec.replicas);
    let Some(status) = deployment.status.as_ref() else {
        return false;
    };
    status.observed_generation == deployment.metadata.generation
        && status.updated_replicas == wanted
        && status.ready_replicas == wanted
        && status.available_replicas == wanted
        && status.replicas == wanted
}

/// The pods of Deployment `app` that are not being deleted.
pub async fn running_pods(cluster: &TestCluster, app: &str) -> Vec<Pod> {
    pods(cluster)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect()
}

