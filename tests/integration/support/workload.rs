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

#[cfg(test)]
mod tests {
    use super::*;

    /// A Deployment of `wanted` replicas at generation 2 whose status reports
    /// `observed` as its generation and every count of `status` (e.g. `readyReplicas`).
    fn deployment(wanted: i32, observed: i64, status: serde_json::Value) -> Deployment {
        let mut status = status;
        status["observedGeneration"] = json!(observed);
        serde_json::from_value(json!({
            "metadata": {"name": "apim", "generation": 2},
            "spec": {
                "replicas": wanted,
                "selector": {"matchLabels": {"app": "apim"}},
                "template": {"metadata": {"labels": {"app": "apim"}}},
            },
            "status": status,
        }))
        .expect("a Deployment")
    }

    fn all(count: i32) -> serde_json::Value {
        json!({
            "replicas": count, "updatedReplicas": count,
            "readyReplicas": count, "availableReplicas": count,
        })
    }

    #[test]
    fn a_deployment_is_rolled_out_once_every_replica_runs_the_observed_template_and_is_ready() {
        assert!(rolled_out(&deployment(2, 2, all(2)), 2));
        assert!(
            !rolled_out(&deployment(2, 1, all(2)), 2),
            "an older generation"
        );
        assert!(
            !rolled_out(&deployment(2, 2, all(3)), 2),
            "an old pod is left"
        );
        let updating = json!({"replicas": 2, "updatedReplicas": 1, "readyReplicas": 2});
        assert!(
            !rolled_out(&deployment(2, 2, updating), 2),
            "a pod runs the old template"
        );
        let unready = json!({"replicas": 2, "updatedReplicas": 2, "readyReplicas": 1});
        assert!(
            !rolled_out(&deployment(2, 2, unready), 2),
            "a pod is not ready"
        );
        let mut without_status = deployment(2, 2, all(2));
        without_status.status = None;
        assert!(!rolled_out(&without_status, 2), "no status yet");
    }

    #[test]
    fn rolled_out_and_available_also_wants_every_replica_the_spec_asks_for_available() {
        assert!(rolled_out_and_available(&deployment(2, 2, all(2))));
        assert!(
            !rolled_out_and_available(&deployment(3, 2, all(2))),
            "one replica short"
        );
        let unavailable = json!({
            "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 1,
        });
        assert!(rolled_out(&deployment(2, 2, unavailable.clone()), 2));
        assert!(
            !rolled_out_and_available(&deployment(2, 2, unavailable)),
            "a replica is not available yet"
        );
    }
}
