//! The part of an API-manager workload keyward owns — the key's volume (or environment
//! variable) and pod-template annotations carrying the keyring hash and the projection —
//! how the target workloads are found, and the count of pods that hold the current
//! keyring.
//!
//! keyward server-side-applies only these fields, under a field manager per
//! EncryptionKey, so the fields a user, a GitOps tool or another key owns are never
//! touched, re-applying their manifest leaves keyward's fields in place, and a changed
//! projection drops what the previous one added.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::Selector;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::crd::encryption_key::{
    Distribution, DistributionTarget, Projection, RestartPolicy, WorkloadKind,
};
use crate::{Error, Result};

/// The pod-template annotation that carries the keyring hash of EncryptionKey `key_name`.
pub fn hash_annotation(key_name: &str) -> String {
    format!("keyward.io/keyring-hash.{key_name}")
}

/// The pod-template annotation that carries a digest of how EncryptionKey `key_name` is
/// projected (format, file, mount path, variable, containers, restart policy), so a
/// changed `spec.distribution` is seen and applied.
pub fn projection_annotation(key_name: &str) -> String {
    format!("keyward.io/projection.{key_name}")
}

/// The volume name of EncryptionKey `key_name` in pod templates.
pub fn volume_name(key_name: &str) -> String {
    crate::names::volume_name(key_name)
}

/// What one EncryptionKey puts into pod templates.
pub struct TemplateProjection<'a> {
    pub key_name: &'a str,
    pub secret_name: &'a str,
    pub file_name: &'a str,
    pub keyring_hash: &'a str,
    pub distribution: &'a Distribution,
}

impl TemplateProjection<'_> {
    /// A short digest of everything that shapes the projection (not the key itself).
    pub fn digest(&self) -> String {
        let shape = json!({
            "distribution": self.distribution,
            "secret": self.secret_name,
            "file": self.file_name,
        });
        let digest = Sha256::digest(shape.to_string().as_bytes());
        hex::encode(&digest[..8])
    }
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
    let mut annotations =
        json!({ projection_annotation(projection.key_name): projection.digest() });
    // The hash on the template is what rolls the pods; without a rolling restart the
    // application reloads the mounted file itself.
    if distribution.restart == RestartPolicy::Rolling {
        annotations[hash_annotation(projection.key_name)] = json!(projection.keyring_hash);
    }
    let template = json!({ "metadata": {"annotations": annotations}, "spec": pod_spec });
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
/// `key_name` in the current projection. Pods being deleted do not count.
pub fn pods_in_sync(pods: &[Pod], projection: &TemplateProjection<'_>) -> (i32, i32) {
    let key_name = projection.key_name;
    let hash = projection.keyring_hash;
    let restart = projection.distribution.restart;
    let digest = projection.digest();
    let annotation = hash_annotation(key_name);
    let volume = volume_name(key_name);
    let ready = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none() && is_ready(pod));
    let (mut in_sync, mut total) = (0, 0);
    for pod in ready {
        total += 1;
        let projected = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&projection_annotation(key_name)))
            .is_some_and(|d| *d == digest);
        let holds = projected
            && match restart {
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

/// How far a key's distribution got: ready pods that hold it, ready pods (or pods asked
/// for, when more) of all targets, and the named targets that do not exist.
#[derive(Debug, Default)]
pub struct Rollout {
    pub pods_in_sync: i32,
    pub pods_total: i32,
    pub missing: Vec<String>,
}

/// Projects the key into every workload `targets` name or select in `namespace` (one
/// patch per workload whose template lacks the current projection, under the key's own
/// field manager) and counts the pods that hold it.
pub async fn roll_out(
    client: &Client,
    namespace: &str,
    targets: &[DistributionTarget],
    projection: &TemplateProjection<'_>,
) -> Result<Rollout> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let manager = crate::store::workload_manager(projection.key_name);
    let mut rollout = Rollout::default();
    for target in targets {
        let workloads = resolve(client, namespace, target).await?;
        // A target that finds no workload holds the key on no pod: never "in sync".
        if workloads.is_empty() {
            rollout.missing.push(match &target.name {
                Some(name) => format!("{:?} {name}", target.kind),
                None => format!("a {:?} matching spec.targets[].selector", target.kind),
            });
        }
        for workload in workloads {
            if workload.needs_patch(projection) {
                let patch = template_patch(
                    target.kind,
                    &workload.name,
                    &workload.containers,
                    projection,
                );
                workload
                    .apply(client, namespace, target.kind, &manager, &patch)
                    .await?;
            }
            let selected = pods
                .list(&ListParams::default().labels_from(&workload.selector))
                .await?;
            let (in_sync, total) = pods_in_sync(&selected.items, projection);
            rollout.pods_in_sync = rollout.pods_in_sync.saturating_add(in_sync);
            // Until every pod the workload asks for is ready, some are missing from sync.
            rollout.pods_total = rollout
                .pods_total
                .saturating_add(total.max(workload.replicas));
        }
    }
    Ok(rollout)
}

/// A target workload, reduced to what distribution needs.
struct Workload {
    name: String,
    /// Pods the workload asks for.
    replicas: i32,
    containers: Vec<String>,
    selector: Selector,
    /// The current pod template's annotations and volume names.
    annotations: BTreeMap<String, String>,
    volumes: Vec<String>,
}

impl Workload {
    fn from_template(
        name: String,
        replicas: i32,
        selector: &LabelSelector,
        template: Option<&PodTemplateSpec>,
    ) -> Result<Self> {
        let spec = template.and_then(|template| template.spec.as_ref());
        let selector =
            Selector::try_from(selector.clone()).map_err(|_| Error::MissingObjectField {
                kind: "workload",
                field: "spec.selector",
            })?;
        Ok(Self {
            name,
            replicas,
            containers: spec
                .map(|spec| spec.containers.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default(),
            selector,
            annotations: template
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.annotations.clone())
                .unwrap_or_default(),
            volumes: spec
                .and_then(|spec| spec.volumes.as_ref())
                .map(|v| v.iter().map(|v| v.name.clone()).collect())
                .unwrap_or_default(),
        })
    }

    /// Whether the pod template lacks the current projection. Checking first keeps an
    /// unchanged key from writing to the workload at all.
    fn needs_patch(&self, projection: &TemplateProjection<'_>) -> bool {
        let key_name = projection.key_name;
        let distribution = projection.distribution;
        let annotated = |annotation: String, value: &str| {
            self.annotations
                .get(&annotation)
                .is_some_and(|v| v == value)
        };
        let hash_current = distribution.restart == RestartPolicy::None
            || annotated(hash_annotation(key_name), projection.keyring_hash);
        let projection_current = annotated(projection_annotation(key_name), &projection.digest());
        let volume_present = distribution.projection == Projection::Env
            || self.volumes.contains(&volume_name(key_name));
        !(hash_current && projection_current && volume_present)
    }

    async fn apply(
        &self,
        client: &Client,
        namespace: &str,
        kind: WorkloadKind,
        manager: &str,
        patch: &Value,
    ) -> Result<()> {
        let params = PatchParams::apply(manager).force();
        match kind {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
                api.patch(&self.name, &params, &Patch::Apply(patch)).await?;
            }
            WorkloadKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
                api.patch(&self.name, &params, &Patch::Apply(patch)).await?;
            }
        }
        Ok(())
    }
}

/// The workloads `target` names or selects.
async fn resolve(
    client: &Client,
    namespace: &str,
    target: &DistributionTarget,
) -> Result<Vec<Workload>> {
    let params = match &target.selector {
        Some(selector) => ListParams::default().labels_from(
            &Selector::try_from(selector.clone()).map_err(|_| Error::MissingObjectField {
                kind: "EncryptionKey",
                field: "spec.targets[].selector",
            })?,
        ),
        None => ListParams::default().fields(&format!(
            "metadata.name={}",
            target.name.as_deref().unwrap_or_default()
        )),
    };
    let mut workloads = Vec::new();
    match target.kind {
        WorkloadKind::Deployment => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            for deployment in api.list(&params).await? {
                let spec = deployment.spec.as_ref();
                let selector = spec.map(|spec| spec.selector.clone()).unwrap_or_default();
                let replicas = spec.and_then(|spec| spec.replicas).unwrap_or(1);
                workloads.push(Workload::from_template(
                    deployment.name_any(),
                    replicas,
                    &selector,
                    spec.map(|spec| &spec.template),
                )?);
            }
        }
        WorkloadKind::StatefulSet => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
            for stateful_set in api.list(&params).await? {
                let spec = stateful_set.spec.as_ref();
                let selector = spec.map(|spec| spec.selector.clone()).unwrap_or_default();
                let replicas = spec.and_then(|spec| spec.replicas).unwrap_or(1);
                workloads.push(Workload::from_template(
                    stateful_set.name_any(),
                    replicas,
                    &selector,
                    spec.map(|spec| &spec.template),
                )?);
            }
        }
    }
    Ok(workloads)
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
        let annotations = &template["metadata"]["annotations"];
        assert!(annotations.get("keyward.io/keyring-hash.apim").is_none());
        assert!(annotations.get("keyward.io/projection.apim").is_some());
        assert_eq!(template["spec"]["volumes"][0]["name"], "keyward-apim");
    }

    #[test]
    fn a_changed_distribution_changes_the_projection_digest_and_the_keyring_does_not() {
        let before = distribution(json!({"format": "Wso2Toml"}));
        let after = distribution(json!({"format": "Wso2Toml", "mountPath": "/opt/keys"}));
        let digest = projection(&before).digest();
        assert_ne!(digest, projection(&after).digest());
        let mut rotated = projection(&before);
        rotated.keyring_hash = "def";
        assert_eq!(digest, rotated.digest());
    }
}
