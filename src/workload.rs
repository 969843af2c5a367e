//! The part of an API-manager workload keyward owns — the key's volume (or environment
//! variable) and a pod-template annotation carrying the keyring hash — and the count of
//! pods that hold the current keyring.
//!
//! keyward server-side-applies only these fields under its own field manager, so the
//! fields a user or a GitOps tool owns are never touched, and re-applying their manifest
//! leaves keyward's fields in place.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::crd::encryption_key::{Distribution, Projection, RestartPolicy, WorkloadKind};

/// The pod-template annotation that carries the keyring hash of EncryptionKey `key_name`.
pub fn hash_annotation(key_name: &str) -> String {
    format!("keyward.io/keyring-hash.{key_name}")
}

/// The volume name of EncryptionKey `key_name` in pod templates.
pub fn volume_name(key_name: &str) -> String {
    format!("keyward-{key_name}")
}

/// What one EncryptionKey puts into pod templates.
pub struct TemplateProjection<'a> {
    pub key_name: &'a str,
    pub secret_name: &'a str,
    pub file_name: &'a str,
    pub keyring_hash: &'a str,
    pub distribution: &'a Distribution,
}

/// The server-side-apply patch that projects the key into workload `name`, whose pod
/// template has `containers`.
pub fn template_patch(
    kind: WorkloadKind,
    name: &str,
    containers: &[String],
    projection: &TemplateProjection<'_>,
) -> Value {
    let distribution = projection.distribution;
    let volume = volume_name(projection.key_name);
    let targeted = containers.iter().filter(|container| {
        distribution.containers.is_empty() || distribution.containers.contains(container)
    });
    let containers: Vec<Value> = targeted
        .map(|container| match distribution.projection {
            Projection::Volume => json!({
                "name": container,
                "volumeMounts": [{"name": volume, "mountPath": distribution.mount_path, "readOnly": true}],
            }),
            Projection::Env => json!({
                "name": container,
                "env": [{"name": distribution.env_name, "valueFrom": {"secretKeyRef": {"name": projection.secret_name, "key": projection.file_name}}}],
            }),
        })
        .collect();
    let mut pod_spec = json!({ "containers": containers });
    if distribution.projection == Projection::Volume {
        pod_spec["volumes"] =
            json!([{"name": volume, "secret": {"secretName": projection.secret_name}}]);
    }
    let mut template = json!({ "spec": pod_spec });
    // The hash on the template is what rolls the pods; without a rolling restart the
    // application reloads the mounted file itself.
    if distribution.restart == RestartPolicy::Rolling {
        template["metadata"] =
            json!({"annotations": {hash_annotation(projection.key_name): projection.keyring_hash}});
    }
    let kind = match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
    };
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {"template": template},
    })
}

/// Ready pods in `pods`, and how many of them hold keyring `hash` of EncryptionKey
/// `key_name`. Pods being deleted do not count.
pub fn pods_in_sync(
    pods: &[Pod],
    key_name: &str,
    hash: &str,
    restart: RestartPolicy,
) -> (i32, i32) {
    let annotation = hash_annotation(key_name);
    let volume = volume_name(key_name);
    let ready = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none() && is_ready(pod));
    let (mut in_sync, mut total) = (0, 0);
    for pod in ready {
        total += 1;
        let holds = match restart {
            RestartPolicy::Rolling => pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(&annotation))
                .is_some_and(|h| h == hash),
            // Without restarts the kubelet refreshes the mounted Secret in place; a pod
            // that mounts it holds what the Secret holds.
            RestartPolicy::None => pod
                .spec
                .as_ref()
                .is_some_and(|spec| spec.volumes.iter().flatten().any(|v| v.name == volume)),
        };
        if holds {
            in_sync += 1;
        }
    }
    (in_sync, total)
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distribution(json: Value) -> Distribution {
        serde_json::from_value(json).expect("distribution parses")
    }

    fn projection<'a>(distribution: &'a Distribution) -> TemplateProjection<'a> {
        TemplateProjection {
            key_name: "apim",
            secret_name: "apim-distribution",
            file_name: "deployment.toml",
            keyring_hash: "abc",
            distribution,
        }
    }

    #[test]
    fn a_volume_projection_mounts_the_secret_in_every_container_and_stamps_the_hash() {
        let distribution = distribution(json!({"format": "Wso2Toml", "mountPath": "/keys"}));
        let patch = template_patch(
            WorkloadKind::Deployment,
            "apim",
            &["apim".into(), "sidecar".into()],
            &projection(&distribution),
        );
        let template = &patch["spec"]["template"];
        assert_eq!(
            template["metadata"]["annotations"]["keyward.io/keyring-hash.apim"],
            "abc"
        );
        assert_eq!(
            template["spec"]["volumes"][0]["secret"]["secretName"],
            "apim-distribution"
        );
        assert_eq!(
            template["spec"]["containers"]
                .as_array()
                .expect("containers")
                .len(),
            2
        );
        assert_eq!(
            template["spec"]["containers"][1]["volumeMounts"][0]["mountPath"],
            "/keys"
        );
    }

    #[test]
    fn env_projection_targets_named_containers_only() {
        let distribution =
            distribution(json!({"format": "Hex", "projection": "Env", "containers": ["apim"]}));
        let containers = ["apim".to_owned(), "sidecar".to_owned()];
        let patch = template_patch(
            WorkloadKind::StatefulSet,
            "apim",
            &containers,
            &projection(&distribution),
        );
        assert_eq!(patch["kind"], "StatefulSet");
        let template = &patch["spec"]["template"];
        assert!(template["spec"].get("volumes").is_none());
        let containers = template["spec"]["containers"]
            .as_array()
            .expect("containers");
        assert_eq!(containers.len(), 1);
        assert_eq!(
            containers[0]["env"][0]["valueFrom"]["secretKeyRef"]["key"],
            "deployment.toml"
        );
    }

    #[test]
    fn without_restarts_the_template_carries_no_hash_to_roll_on() {
        let distribution = distribution(json!({"restart": "None"}));
        let patch = template_patch(
            WorkloadKind::Deployment,
            "apim",
            &["apim".into()],
            &projection(&distribution),
        );
        let template = &patch["spec"]["template"];
        assert!(template.get("metadata").is_none());
        assert_eq!(template["spec"]["volumes"][0]["name"], "keyward-apim");
    }
}
