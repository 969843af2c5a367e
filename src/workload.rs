//! The part of an API-manager workload keyward owns — the key's volume (or environment
//! variable) and pod-template annotations carrying the keyring hash and the projection —
//! how the target workloads are found, and the count of pods that hold the current
//! keyring.
//!
//! keyward server-side-applies only these fields, under a field manager per
//! EncryptionKey, so the fields a user, a GitOps tool or another key owns are never
//! touched, re-applying their manifest leaves keyward's fields in place, and a changed
//! projection drops what the previous one added.
//!
//! Server-side apply merges a container's mounts by path and its variables by name, so
//! applying a mount at a path someone else uses would silently take that mount over.
//! Before it writes, keyward therefore checks that every place its projection needs (the
//! volume name, the mount path or the variable name in each targeted container) is free
//! or already this key's, and writes nothing to a workload where one is not; the patch
//! carries the resourceVersion it was checked against, so two keys checking at once
//! cannot both win. A key's own entries are recognised by what they point at: its
//! volume (named by [`volume_name`]) projects its distribution Secret, and its variable
//! reads that Secret.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, PodTemplateSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::Selector;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::crd::encryption_key::{
    Distribution, DistributionTarget, KeyFormat, Projection, RestartPolicy, WSO2_KEY_ENTRY,
    WSO2_OLD_KEY_ENTRY, WorkloadKind,
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
    /// The environment variables of an `Env` projection: WSO2's two keys for
    /// `Wso2Toml`, the rendered key otherwise.
    pub fn variables(&self) -> Vec<Variable<'_>> {
        let distribution = self.distribution;
        let key = Variable {
            name: &distribution.env_name,
            entry: self.file_name,
            field: "spec.distribution.envName",
        };
        match distribution.format {
            KeyFormat::Wso2Toml => vec![
                Variable {
                    entry: WSO2_KEY_ENTRY,
                    ..key
                },
                Variable {
                    name: &distribution.old_key_env_name,
                    entry: WSO2_OLD_KEY_ENTRY,
                    field: "spec.distribution.oldKeyEnvName",
                },
            ],
            _ => vec![key],
        }
    }

    /// A short digest of everything that shapes the projection (not the key itself).
    pub fn digest(&self) -> String {
        let mut distribution = json!(self.distribution);
        // `oldKeyEnvName` shapes only WSO2's variables: elsewhere it is left out, so the
        // projections that existed before it keep their digest and no pod restarts.
        let wso2_variables = self.distribution.format == KeyFormat::Wso2Toml
            && self.distribution.projection == Projection::Env;
        if !wso2_variables && let Some(fields) = distribution.as_object_mut() {
            fields.remove("oldKeyEnvName");
        }
        let shape = json!({
            "distribution": distribution,
            "secret": self.secret_name,
            "file": self.file_name,
        });
        let digest = Sha256::digest(shape.to_string().as_bytes());
        hex::encode(&digest[..8])
    }
}

/// An environment variable a projection sets from the distribution Secret.
#[derive(Clone, Copy, Debug)]
pub struct Variable<'a> {
    pub name: &'a str,
    /// The distribution Secret's entry it reads.
    pub entry: &'a str,
    /// The spec field that names it.
    pub field: &'static str,
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
            Projection::Env => {
                let env: Vec<Value> = projection
                    .variables()
                    .into_iter()
                    .map(|variable| json!({"name": variable.name, "valueFrom": {"secretKeyRef": {"name": projection.secret_name, "key": variable.entry}}}))
                    .collect();
                json!({"name": container, "env": env})
            }
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

/// Where an entry of a pod template sits, for saying what is in the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A pod volume of this name.
    Volume(String),
    /// A volume mount at this path, in a container.
    MountPath(String),
    /// A mount at `inner`, inside the key's `mount_path`: the key's volume is read-only,
    /// so the container could not be started with both.
    Beneath { mount_path: String, inner: String },
    /// A read-only mount at `outer` that the key's `mount_path` lies inside: the key's
    /// mount point could not be made in it.
    ReadOnlyAbove { mount_path: String, outer: String },
    /// An environment variable of this name, in a container, and the spec field that
    /// names it.
    EnvName { name: String, field: &'static str },
}

/// Why a key is not (fully) projected into a workload: a fault of the spec or of the
/// cluster that waiting does not cure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// A `spec.distribution.containers` entry names no container of `workloads`.
    ContainerNotFound {
        container: String,
        workloads: Vec<String>,
    },
    /// A place the projection needs in `workload` is taken by `holder`, which is not
    /// this key's; keyward takes nothing over.
    Conflict {
        workload: String,
        container: Option<String>,
        place: Place,
        holder: String,
    },
}

impl Blocked {
    /// The status reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ContainerNotFound { .. } => "ContainerNotFound",
            Self::Conflict { .. } => "DistributionConflict",
        }
    }
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ContainerNotFound {
                container,
                workloads,
            } => write!(
                formatter,
                "spec.distribution.containers names {container:?}, which is no container of {}",
                listed(workloads)
            ),
            Self::Conflict {
                workload,
                container,
                place,
                holder,
            } => {
                let within = match container {
                    Some(container) => format!("{workload} container {container:?}"),
                    None => workload.clone(),
                };
                let (what, field) = match place {
                    Place::Volume(name) => (format!("volume {name:?}"), "the workload's volume"),
                    Place::MountPath(path) => {
                        (format!("mountPath {path:?}"), "spec.distribution.mountPath")
                    }
                    Place::Beneath { mount_path, inner } => (
                        format!("{inner:?}, inside mountPath {mount_path:?} (a read-only volume),"),
                        "spec.distribution.mountPath",
                    ),
                    Place::ReadOnlyAbove { mount_path, outer } => (
                        format!(
                            "mountPath {mount_path:?} lies inside the read-only mount at {outer:?}, which"
                        ),
                        "spec.distribution.mountPath",
                    ),
                    Place::EnvName { name, field } => (format!("env var {name:?}"), *field),
                };
                write!(
                    formatter,
                    "{within}: {what} is already used by {holder}; keyward takes nothing over: change {field} (or the workload) so they differ"
                )
            }
        }
    }
}

/// At most a few names, then how many more: status messages stay short.
fn listed(names: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// The containers of `spec` that `distribution` targets: those it names, or all.
fn targeted<'s>(spec: &'s PodSpec, distribution: &Distribution) -> Vec<&'s Container> {
    spec.containers
        .iter()
        .filter(|container| {
            distribution.containers.is_empty() || distribution.containers.contains(&container.name)
        })
        .collect()
}

/// A mount path as the container sees it: repeated and trailing slashes and `.`
/// segments do not make a different directory.
fn normalised_path(path: &str) -> String {
    let segments: Vec<&str> = path
        .split('/')
        .filter(|segment| !segment.is_empty() && *segment != ".")
        .collect();
    format!("/{}", segments.join("/"))
}

/// Whether normalised `path` lies strictly inside normalised `directory`.
fn is_inside(path: &str, directory: &str) -> bool {
    path != directory
        && (directory == "/"
            || path
                .strip_prefix(directory)
                .is_some_and(|rest| rest.starts_with('/')))
}

/// Whether `mount` is read-only in the container: asked to be, or of a volume kind the
/// kubelet always mounts read-only.
fn is_read_only(spec: &PodSpec, mount: &k8s_openapi::api::core::v1::VolumeMount) -> bool {
    mount.read_only == Some(true)
        || spec
            .volumes
            .iter()
            .flatten()
            .find(|volume| volume.name == mount.name)
            .is_some_and(|volume| {
                volume.secret.is_some()
                    || volume.config_map.is_some()
                    || volume.downward_api.is_some()
                    || volume.projected.is_some()
            })
}

/// Whether `volume` is this key's: it projects the key's distribution Secret.
fn is_own_volume(volume: &Volume, projection: &TemplateProjection<'_>) -> bool {
    volume.name == volume_name(projection.key_name)
        && volume
            .secret
            .as_ref()
            .and_then(|secret| secret.secret_name.as_deref())
            == Some(projection.secret_name)
}

/// Whether `env` is this key's: it reads the key's distribution Secret.
fn is_own_env(env: &EnvVar, projection: &TemplateProjection<'_>) -> bool {
    env.value.is_none()
        && env
            .value_from
            .as_ref()
            .and_then(|from| from.secret_key_ref.as_ref())
            .is_some_and(|reference| reference.name == projection.secret_name)
}

/// The EncryptionKey whose distribution Secret `secret` is, if the name says so.
fn key_of_secret(secret: &str) -> Option<&str> {
    secret
        .strip_suffix("-distribution")
        .filter(|key| crate::store::distribution::secret_name(key) == secret)
}

/// What a Secret of the holder is, with the key it distributes when it is one's.
fn describe_secret(secret: &str) -> String {
    match key_of_secret(secret) {
        Some(key) => format!("Secret {secret:?}, EncryptionKey {key:?}'s"),
        None => format!("Secret {secret:?}"),
    }
}

/// Volume `name` of `spec`, as a holder: its name and what it projects.
fn describe_volume(spec: &PodSpec, name: &str) -> String {
    let volume = spec.volumes.iter().flatten().find(|v| v.name == name);
    let source = volume.and_then(|volume| {
        if let Some(secret) = volume.secret.as_ref() {
            return secret.secret_name.as_deref().map(describe_secret);
        }
        if let Some(config_map) = volume.config_map.as_ref() {
            return Some(format!("ConfigMap {:?}", config_map.name));
        }
        volume.empty_dir.as_ref().map(|_| "an emptyDir".to_owned())
    });
    match source {
        Some(source) => format!("volume {name:?} ({source})"),
        None => format!("volume {name:?}"),
    }
}

/// Environment variable `env`, as a holder: where its value comes from, never the value.
fn describe_env(env: &EnvVar) -> String {
    let from = env.value_from.as_ref();
    let source = if let Some(reference) = from.and_then(|from| from.secret_key_ref.as_ref()) {
        describe_secret(&reference.name)
    } else if let Some(reference) = from.and_then(|from| from.config_map_key_ref.as_ref()) {
        format!("ConfigMap {:?}", reference.name)
    } else if from.is_some() {
        "a field or resource reference".to_owned()
    } else {
        "a value set in the pod template".to_owned()
    };
    format!("a variable of that name ({source})")
}

/// What in `spec` of `workload` keeps the key's projection out: a listed container it
/// lacks altogether, or a place the projection needs that is not free and not this
/// key's. Empty: the projection can be applied without taking anything over.
pub fn obstacles(
    workload: &str,
    spec: &PodSpec,
    projection: &TemplateProjection<'_>,
) -> Vec<Blocked> {
    let distribution = projection.distribution;
    let containers = targeted(spec, distribution);
    if containers.is_empty() {
        return distribution
            .containers
            .iter()
            .map(|container| Blocked::ContainerNotFound {
                container: container.clone(),
                workloads: vec![workload.to_owned()],
            })
            .collect();
    }
    let conflict = |container: Option<&str>, place: Place, holder: String| Blocked::Conflict {
        workload: workload.to_owned(),
        container: container.map(str::to_owned),
        place,
        holder,
    };
    let mut found = Vec::new();
    match distribution.projection {
        Projection::Volume => {
            let volume = volume_name(projection.key_name);
            let taken = spec
                .volumes
                .iter()
                .flatten()
                .filter(|v| v.name == volume && !is_own_volume(v, projection));
            for _ in taken {
                let holder = format!("another {}", describe_volume(spec, &volume));
                found.push(conflict(None, Place::Volume(volume.clone()), holder));
            }
            let wanted = normalised_path(&distribution.mount_path);
            for container in containers {
                let mounts = container.volume_mounts.iter().flatten();
                for mount in mounts.filter(|mount| mount.name != volume) {
                    let path = normalised_path(&mount.mount_path);
                    let place = if path == wanted {
                        Place::MountPath(mount.mount_path.clone())
                    } else if is_inside(&path, &wanted) {
                        Place::Beneath {
                            mount_path: distribution.mount_path.clone(),
                            inner: mount.mount_path.clone(),
                        }
                    } else if is_inside(&wanted, &path) && is_read_only(spec, mount) {
                        Place::ReadOnlyAbove {
                            mount_path: distribution.mount_path.clone(),
                            outer: mount.mount_path.clone(),
                        }
                    } else {
                        continue;
                    };
                    found.push(conflict(
                        Some(&container.name),
                        place,
                        describe_volume(spec, &mount.name),
                    ));
                }
            }
        }
        Projection::Env => {
            let ours = projection.variables();
            for container in containers {
                let variables = container.env.iter().flatten();
                for env in variables.filter(|env| !is_own_env(env, projection)) {
                    let Some(variable) = ours.iter().find(|variable| env.name == variable.name)
                    else {
                        continue;
                    };
                    found.push(conflict(
                        Some(&container.name),
                        Place::EnvName {
                            name: env.name.clone(),
                            field: variable.field,
                        },
                        describe_env(env),
                    ));
                }
            }
        }
    }
    found
}

/// Entries of `spec.distribution.containers` that name no container of any of
/// `workloads`, given as (workload, its container names). An entry some workload has is
/// fine: one key may serve workloads whose containers are named differently.
pub fn unmatched_containers(
    distribution: &Distribution,
    workloads: &[(String, Vec<String>)],
) -> Vec<Blocked> {
    if workloads.is_empty() {
        return Vec::new();
    }
    distribution
        .containers
        .iter()
        .filter(|wanted| {
            !workloads
                .iter()
                .any(|(_, containers)| containers.contains(wanted))
        })
        .map(|container| Blocked::ContainerNotFound {
            container: container.clone(),
            workloads: workloads.iter().map(|(name, _)| name.clone()).collect(),
        })
        .collect()
}

/// Whether every container of `containers` in `spec` really receives the key as
/// `projection` says: mounts the key's volume (which projects its Secret) at the mount
/// path, or reads the variable from its Secret.
pub fn carries(spec: &PodSpec, containers: &[String], projection: &TemplateProjection<'_>) -> bool {
    let distribution = projection.distribution;
    let container = |name: &String| spec.containers.iter().find(|c| c.name == *name);
    match distribution.projection {
        Projection::Volume => {
            let volume = volume_name(projection.key_name);
            let wanted = normalised_path(&distribution.mount_path);
            let has_volume = spec
                .volumes
                .iter()
                .flatten()
                .any(|v| is_own_volume(v, projection));
            has_volume
                && containers.iter().all(|name| {
                    container(name).is_some_and(|container| {
                        container.volume_mounts.iter().flatten().any(|mount| {
                            mount.name == volume && normalised_path(&mount.mount_path) == wanted
                        })
                    })
                })
        }
        Projection::Env => {
            let variables = projection.variables();
            containers.iter().all(|name| {
                container(name).is_some_and(|container| {
                    variables.iter().all(|variable| {
                        container.env.iter().flatten().any(|env| {
                            env.name == variable.name
                                && is_own_env(env, projection)
                                && env
                                    .value_from
                                    .as_ref()
                                    .and_then(|from| from.secret_key_ref.as_ref())
                                    .is_some_and(|reference| reference.key == variable.entry)
                        })
                    })
                })
            })
        }
    }
}

/// Ready pods in `pods`, and how many of them hold keyring `hash` of EncryptionKey
/// `key_name` in the current projection, in every one of `containers` (the workload's
/// targeted containers). Pods being deleted do not count.
pub fn pods_in_sync(
    pods: &[Pod],
    containers: &[String],
    projection: &TemplateProjection<'_>,
) -> (i32, i32) {
    let key_name = projection.key_name;
    let hash = projection.keyring_hash;
    let restart = projection.distribution.restart;
    let digest = projection.digest();
    let annotation = hash_annotation(key_name);
    let ready = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none() && is_ready(pod));
    let (mut in_sync, mut total) = (0, 0);
    for pod in ready {
        total += 1;
        let annotations = pod.metadata.annotations.as_ref();
        let projected = annotations
            .and_then(|a| a.get(&projection_annotation(key_name)))
            .is_some_and(|d| *d == digest);
        // The annotations say what the pod was started for; its spec says what it really
        // received, which another writer of the template may have changed.
        let received = pod
            .spec
            .as_ref()
            .is_some_and(|spec| carries(spec, containers, projection));
        let holds = projected
            && received
            && match restart {
                RestartPolicy::Rolling => annotations
                    .and_then(|a| a.get(&annotation))
                    .is_some_and(|h| h == hash),
                // Without restarts the kubelet refreshes the mounted Secret in place; a pod
                // that mounts it holds what the Secret holds.
                RestartPolicy::None => true,
            };
        if holds {
            in_sync += 1;
        }
    }
    (in_sync, total)
}

/// How far a key's distribution got: ready pods that hold it, ready pods (or pods asked
/// for, when more) of all targets, the named targets that do not exist, and what keeps
/// the key out of the workloads that do.
#[derive(Debug, Default)]
pub struct Rollout {
    pub pods_in_sync: i32,
    pub pods_total: i32,
    pub missing: Vec<String>,
    pub blocked: Vec<Blocked>,
}

/// How often a rollout starts over when a workload changed between its check and its
/// patch (the patch is conditional on what was checked).
const CHANGED_WHILE_CHECKING_RETRIES: u32 = 3;

/// Projects the key into every workload `targets` name or select in `namespace` (one
/// patch per workload whose template lacks the current projection, under the key's own
/// field manager, never where a place it needs is taken) and counts the pods that hold
/// it.
pub async fn roll_out(
    client: &Client,
    namespace: &str,
    targets: &[DistributionTarget],
    projection: &TemplateProjection<'_>,
) -> Result<Rollout> {
    let mut attempt = 0;
    loop {
        match roll_out_once(client, namespace, targets, projection).await {
            Err(Error::Kube(kube::Error::Api(status)))
                if status.code == 409 && attempt < CHANGED_WHILE_CHECKING_RETRIES =>
            {
                attempt += 1;
            }
            result => return result,
        }
    }
}

async fn roll_out_once(
    client: &Client,
    namespace: &str,
    targets: &[DistributionTarget],
    projection: &TemplateProjection<'_>,
) -> Result<Rollout> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let manager = crate::store::workload_manager(projection.key_name);
    let mut rollout = Rollout::default();
    let mut workloads: Vec<Workload> = Vec::new();
    for target in targets {
        let resolved = resolve(client, namespace, target).await?;
        // A target that finds no workload holds the key on no pod: never "in sync".
        if resolved.is_empty() {
            rollout.missing.push(match &target.name {
                Some(name) => format!("{:?} {name}", target.kind),
                None => format!("a {:?} matching spec.targets[].selector", target.kind),
            });
        }
        // Two targets may find one workload: it is patched and counted once.
        for workload in resolved {
            if !workloads
                .iter()
                .any(|w| w.kind == workload.kind && w.name == workload.name)
            {
                workloads.push(workload);
            }
        }
    }
    let containers: Vec<(String, Vec<String>)> = workloads
        .iter()
        .map(|workload| (workload.label(), workload.container_names()))
        .collect();
    rollout.blocked = unmatched_containers(projection.distribution, &containers);
    for workload in &workloads {
        let blocked = obstacles(&workload.label(), &workload.spec, projection);
        if blocked.is_empty() && workload.needs_patch(projection) {
            let patch = template_patch(
                workload.kind,
                &workload.name,
                &workload.container_names(),
                projection,
            );
            workload.apply(client, namespace, &manager, patch).await?;
        }
        // A container no workload has is already reported, for all of them: said once.
        for found in blocked {
            if !rollout.blocked.contains(&found) {
                rollout.blocked.push(found);
            }
        }
        let selected = pods
            .list(&ListParams::default().labels_from(&workload.selector))
            .await?;
        let targeted = workload.targeted_names(projection.distribution);
        let (in_sync, total) = pods_in_sync(&selected.items, &targeted, projection);
        rollout.pods_in_sync = rollout.pods_in_sync.saturating_add(in_sync);
        // Until every pod the workload asks for is ready, some are missing from sync.
        rollout.pods_total = rollout
            .pods_total
            .saturating_add(total.max(workload.replicas));
    }
    Ok(rollout)
}

/// A target workload, reduced to what distribution needs.
struct Workload {
    kind: WorkloadKind,
    name: String,
    /// The version the checks read, on which the patch is conditional.
    resource_version: Option<String>,
    /// Pods the workload asks for.
    replicas: i32,
    selector: Selector,
    /// The current pod template's annotations and spec.
    annotations: BTreeMap<String, String>,
    spec: PodSpec,
}

impl Workload {
    fn from_template(
        kind: WorkloadKind,
        metadata: &ObjectMeta,
        replicas: i32,
        selector: &LabelSelector,
        template: Option<&PodTemplateSpec>,
    ) -> Result<Self> {
        let selector =
            Selector::try_from(selector.clone()).map_err(|_| Error::MissingObjectField {
                kind: "workload",
                field: "spec.selector",
            })?;
        Ok(Self {
            kind,
            name: metadata.name.clone().unwrap_or_default(),
            resource_version: metadata.resource_version.clone(),
            replicas,
            selector,
            annotations: template
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.annotations.clone())
                .unwrap_or_default(),
            spec: template
                .and_then(|template| template.spec.clone())
                .unwrap_or_default(),
        })
    }

    /// How messages name the workload.
    fn label(&self) -> String {
        format!("{:?} {}", self.kind, self.name)
    }

    fn container_names(&self) -> Vec<String> {
        self.spec
            .containers
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    /// The names of the containers `distribution` targets in this workload.
    fn targeted_names(&self, distribution: &Distribution) -> Vec<String> {
        targeted(&self.spec, distribution)
            .into_iter()
            .map(|c| c.name.clone())
            .collect()
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
        let carried = carries(&self.spec, &self.targeted_names(distribution), projection);
        !(hash_current && projection_current && carried)
    }

    /// Applies `patch`, on condition that the workload is still the version checked.
    async fn apply(
        &self,
        client: &Client,
        namespace: &str,
        manager: &str,
        mut patch: Value,
    ) -> Result<()> {
        if let Some(version) = &self.resource_version {
            patch["metadata"]["resourceVersion"] = json!(version);
        }
        let params = PatchParams::apply(manager).force();
        match self.kind {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
                api.patch(&self.name, &params, &Patch::Apply(&patch))
                    .await?;
            }
            WorkloadKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
                api.patch(&self.name, &params, &Patch::Apply(&patch))
                    .await?;
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
                    target.kind,
                    &deployment.metadata,
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
                    target.kind,
                    &stateful_set.metadata,
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
        let distribution = distribution(json!({"format": "Keyring", "restart": "None"}));
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

    fn pod_spec(containers: Value, volumes: Value) -> PodSpec {
        serde_json::from_value(json!({"containers": containers, "volumes": volumes}))
            .expect("pod spec parses")
    }

    /// The `apim` key's own projection, as a previous reconcile left it.
    fn own_volume() -> Value {
        json!({"name": "keyward-apim", "secret": {"secretName": "apim-distribution"}})
    }

    fn another_keys_volume() -> Value {
        json!({"name": "keyward-first", "secret": {"secretName": "first-distribution"}})
    }

    #[test]
    fn another_keys_mount_at_the_mount_path_is_a_conflict_naming_who_holds_it() {
        let distribution = distribution(json!({}));
        let spec = pod_spec(
            json!([{"name": "apim", "image": "x", "volumeMounts": [{"name": "keyward-first", "mountPath": "/etc/keyward"}]}]),
            json!([another_keys_volume()]),
        );
        let found = obstacles("Deployment apim", &spec, &projection(&distribution));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].reason(), "DistributionConflict");
        let message = found[0].to_string();
        for named in [
            "Deployment apim",
            "container \"apim\"",
            "\"/etc/keyward\"",
            "\"keyward-first\"",
            "EncryptionKey \"first\"",
            "spec.distribution.mountPath",
        ] {
            assert!(message.contains(named), "{named} in {message}");
        }
        assert!(!carries(
            &spec,
            &["apim".into()],
            &projection(&distribution)
        ));
    }

    #[test]
    fn a_users_mount_at_the_same_directory_spelled_differently_is_a_conflict() {
        let distribution = distribution(json!({}));
        for path in ["/etc/keyward/", "//etc/keyward", "/etc/./keyward"] {
            let spec = pod_spec(
                json!([{"name": "apim", "image": "x", "volumeMounts": [{"name": "config", "mountPath": path}]}]),
                json!([{"name": "config", "configMap": {"name": "apim-config"}}]),
            );
            let found = obstacles("Deployment apim", &spec, &projection(&distribution));
            assert_eq!(found.len(), 1, "{path}: {found:?}");
            assert!(found[0].to_string().contains("ConfigMap \"apim-config\""));
        }
    }

    #[test]
    fn a_mount_inside_the_keys_read_only_volume_or_around_it_read_only_is_a_conflict() {
        let distribution = distribution(json!({"mountPath": "/home/wso2carbon/keyward"}));
        let projection = projection(&distribution);
        let with_mount = |path: &str, volume: Value| {
            pod_spec(
                json!([{"name": "apim", "image": "x", "volumeMounts": [{"name": "other", "mountPath": path}]}]),
                json!([volume]),
            )
        };
        let writable = json!({"name": "other", "emptyDir": {}});
        let config = json!({"name": "other", "configMap": {"name": "apim-config"}});
        let inner = with_mount("/home/wso2carbon/keyward/tls", writable.clone());
        let found = obstacles("Deployment apim", &inner, &projection);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .to_string()
                .contains("\"/home/wso2carbon/keyward/tls\"")
        );
        let read_only_parent = with_mount("/home/wso2carbon", config);
        let found = obstacles("Deployment apim", &read_only_parent, &projection);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .to_string()
                .contains("read-only mount at \"/home/wso2carbon\"")
        );
        for free in [
            with_mount("/home/wso2carbon", writable.clone()),
            with_mount("/home/wso2carbon/keyward-logs", writable.clone()),
            with_mount("/home/wso2carbon/key", writable),
        ] {
            assert!(obstacles("Deployment apim", &free, &projection).is_empty());
        }
    }

    #[test]
    fn the_keys_own_projection_is_no_conflict_and_is_carried() {
        let distribution = distribution(json!({}));
        let spec = pod_spec(
            json!([{"name": "apim", "image": "x", "volumeMounts": [
                {"name": "keyward-apim", "mountPath": "/etc/keyward", "readOnly": true},
                {"name": "keyward-first", "mountPath": "/etc/keyward-first"},
            ]}]),
            json!([own_volume(), another_keys_volume()]),
        );
        let projection = projection(&distribution);
        assert!(obstacles("Deployment apim", &spec, &projection).is_empty());
        assert!(carries(&spec, &["apim".into()], &projection));
    }

    #[test]
    fn the_keys_own_mount_at_its_former_path_is_replaced_not_flagged() {
        let moved = distribution(json!({"mountPath": "/opt/keys"}));
        let spec = pod_spec(
            json!([{"name": "apim", "image": "x", "volumeMounts": [{"name": "keyward-apim", "mountPath": "/etc/keyward"}]}]),
            json!([own_volume()]),
        );
        let projection = projection(&moved);
        assert!(obstacles("Deployment apim", &spec, &projection).is_empty());
        assert!(
            !carries(&spec, &["apim".into()], &projection),
            "the old path is not the new projection"
        );
    }

    #[test]
    fn a_users_volume_in_the_keys_volume_name_is_a_conflict() {
        let distribution = distribution(json!({"mountPath": "/opt/keys"}));
        let spec = pod_spec(
            json!([{"name": "apim", "image": "x"}]),
            json!([{"name": "keyward-apim", "emptyDir": {}}]),
        );
        let found = obstacles("Deployment apim", &spec, &projection(&distribution));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].to_string().contains("an emptyDir"));
    }

    #[test]
    fn a_users_variable_of_the_env_name_is_a_conflict_that_never_shows_its_value() {
        let distribution = distribution(json!({"format": "Hex", "projection": "Env"}));
        let spec = pod_spec(
            json!([{"name": "apim", "image": "x", "env": [{"name": "KEYWARD_ENCRYPTION_KEY", "value": "users-own-value"}]}]),
            json!([]),
        );
        let found = obstacles("StatefulSet apim", &spec, &projection(&distribution));
        assert_eq!(found.len(), 1, "{found:?}");
        let message = found[0].to_string();
        assert!(
            message.contains("env var \"KEYWARD_ENCRYPTION_KEY\""),
            "{message}"
        );
        assert!(message.contains("spec.distribution.envName"), "{message}");
        assert!(!message.contains("users-own-value"), "{message}");
    }

    #[test]
    fn wso2_by_environment_sets_both_keys_from_the_distribution_secret() {
        let distribution = distribution(json!({"format": "Wso2Toml", "projection": "Env"}));
        let projection = projection(&distribution);
        let patch = template_patch(
            WorkloadKind::Deployment,
            "apim",
            &["apim".into()],
            &projection,
        );
        let env = &patch["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(
            *env,
            json!([
                {"name": "KEYWARD_ENCRYPTION_KEY", "valueFrom": {"secretKeyRef": {"name": "apim-distribution", "key": "key"}}},
                {"name": "KEYWARD_ENCRYPTION_OLD_KEY", "valueFrom": {"secretKeyRef": {"name": "apim-distribution", "key": "old_key"}}},
            ])
        );
        let spec = |env: Value| {
            pod_spec(
                json!([{"name": "apim", "image": "x", "env": env}]),
                json!([]),
            )
        };
        assert!(carries(&spec(env.clone()), &["apim".into()], &projection));
        // A pod holding only the current key (as one rendered before old_key) does not
        // count: WSO2 would fall back to a key of its own for old_key.
        assert!(!carries(
            &spec(json!([env[0].clone()])),
            &["apim".into()],
            &projection
        ));
    }

    #[test]
    fn a_users_variable_of_the_old_key_name_is_a_conflict_naming_its_field() {
        let distribution = distribution(json!({"format": "Wso2Toml", "projection": "Env"}));
        let spec = pod_spec(
            json!([{"name": "apim", "image": "x", "env": [{"name": "KEYWARD_ENCRYPTION_OLD_KEY", "value": "users-own-value"}]}]),
            json!([]),
        );
        let found = obstacles("Deployment apim", &spec, &projection(&distribution));
        assert_eq!(found.len(), 1, "{found:?}");
        let message = found[0].to_string();
        assert!(
            message.contains("spec.distribution.oldKeyEnvName"),
            "{message}"
        );
        assert!(!message.contains("users-own-value"), "{message}");
    }

    #[test]
    fn projections_from_before_the_old_key_variable_keep_their_digest() {
        // The digest as it was computed before `oldKeyEnvName` existed: a changed digest
        // would restart every targeted workload on upgrade.
        for (format, projection_kind) in [("Wso2Toml", "Volume"), ("Hex", "Env")] {
            let distribution =
                distribution(json!({"format": format, "projection": projection_kind}));
            let before = json!({
                "distribution": {
                    "format": format,
                    "projection": projection_kind,
                    "mountPath": "/etc/keyward",
                    "envName": "KEYWARD_ENCRYPTION_KEY",
                    "restart": "Rolling",
                },
                "secret": "apim-distribution",
                "file": "deployment.toml",
            });
            let expected = hex::encode(&Sha256::digest(before.to_string().as_bytes())[..8]);
            assert_eq!(
                projection(&distribution).digest(),
                expected,
                "{format} {projection_kind}"
            );
        }
        // Where it shapes the variables, renaming it changes the digest.
        let wso2 = |name: &str| {
            distribution(json!({"format": "Wso2Toml", "projection": "Env", "oldKeyEnvName": name}))
        };
        let (one, other) = (wso2("OLD_A"), wso2("OLD_B"));
        assert_ne!(projection(&one).digest(), projection(&other).digest());
    }

    #[test]
    fn the_keys_own_variable_is_no_conflict_and_is_carried_with_the_current_file() {
        let distribution = distribution(json!({"format": "Hex", "projection": "Env"}));
        let own = |file: &str| {
            pod_spec(
                json!([{"name": "apim", "image": "x", "env": [{"name": "KEYWARD_ENCRYPTION_KEY",
                    "valueFrom": {"secretKeyRef": {"name": "apim-distribution", "key": file}}}]}]),
                json!([]),
            )
        };
        let projection = projection(&distribution);
        assert!(obstacles("Deployment apim", &own("key.base64"), &projection).is_empty());
        assert!(carries(
            &own("deployment.toml"),
            &["apim".into()],
            &projection
        ));
        assert!(!carries(&own("key.base64"), &["apim".into()], &projection));
    }

    #[test]
    fn a_listed_container_the_workload_lacks_is_reported_not_skipped() {
        let distribution = distribution(json!({"containers": ["typo"]}));
        let spec = pod_spec(json!([{"name": "apim", "image": "x"}]), json!([]));
        let found = obstacles("Deployment apim", &spec, &projection(&distribution));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].reason(), "ContainerNotFound");
        let message = found[0].to_string();
        assert!(message.contains("\"typo\"") && message.contains("Deployment apim"));
    }

    #[test]
    fn a_listed_container_must_exist_in_some_target_workload() {
        let distribution = distribution(json!({"containers": ["apim", "gateway", "typo"]}));
        let workloads = [
            ("Deployment apim".to_owned(), vec!["apim".to_owned()]),
            ("Deployment gateway".to_owned(), vec!["gateway".to_owned()]),
        ];
        let found = unmatched_containers(&distribution, &workloads);
        assert_eq!(found.len(), 1, "{found:?}");
        let message = found[0].to_string();
        assert!(message.contains("\"typo\""), "{message}");
        assert!(unmatched_containers(&distribution, &[]).is_empty());
    }

    #[test]
    fn only_targeted_containers_are_checked_and_must_carry_the_key() {
        let distribution = distribution(json!({"containers": ["apim"]}));
        let spec = pod_spec(
            json!([
                {"name": "apim", "image": "x", "volumeMounts": [{"name": "keyward-apim", "mountPath": "/etc/keyward"}]},
                {"name": "sidecar", "image": "y", "volumeMounts": [{"name": "data", "mountPath": "/etc/keyward"}]},
            ]),
            json!([own_volume(), {"name": "data", "emptyDir": {}}]),
        );
        let projection = projection(&distribution);
        assert!(obstacles("Deployment apim", &spec, &projection).is_empty());
        assert!(carries(&spec, &["apim".into()], &projection));
        assert!(!carries(
            &spec,
            &["apim".into(), "sidecar".into()],
            &projection
        ));
    }

    /// `spec` after server-side apply merges `patch` into it: volumes by name, each
    /// container's mounts by path and variables by name.
    fn merged(spec: &PodSpec, patch: &Value) -> PodSpec {
        let mut merged = serde_json::to_value(spec).expect("spec serializes");
        let patch = &patch["spec"]["template"]["spec"];
        let merge = |list: &mut Value, entries: &Value, key: &str| {
            if list.is_null() {
                *list = json!([]);
            }
            let list = list.as_array_mut().expect("a list");
            for entry in entries.as_array().into_iter().flatten() {
                list.retain(|existing| existing[key] != entry[key]);
                list.push(entry.clone());
            }
        };
        merge(&mut merged["volumes"], &patch["volumes"], "name");
        for container in patch["containers"].as_array().into_iter().flatten() {
            let containers = merged["containers"].as_array_mut().expect("containers");
            let target = containers
                .iter_mut()
                .find(|c| c["name"] == container["name"])
                .expect("the patch names existing containers");
            merge(
                &mut target["volumeMounts"],
                &container["volumeMounts"],
                "mountPath",
            );
            merge(&mut target["env"], &container["env"], "name");
        }
        serde_json::from_value(merged).expect("merged spec parses")
    }

    fn arbitrary_template() -> impl proptest::strategy::Strategy<Value = PodSpec> {
        use proptest::prelude::*;
        let paths = prop::sample::select(vec![
            "/etc/keyward",
            "/etc/keyward/",
            "/etc//keyward",
            "/etc/keyward/tls",
            "/etc",
            "/etc/keyward-audit",
            "/opt/keys",
            "/var/data",
        ]);
        let names = prop::sample::select(vec!["keyward-apim", "keyward-first", "config", "data"]);
        let env_names = prop::sample::select(vec!["KEYWARD_ENCRYPTION_KEY", "GATEWAY_KEY", "HOME"]);
        let sources =
            prop::sample::select(vec!["apim-distribution", "first-distribution", "literal"]);
        let mount = (paths, names.clone(), any::<bool>()).prop_map(|(path, name, read_only)| {
            json!({"name": name, "mountPath": path, "readOnly": read_only})
        });
        let env = (env_names, sources).prop_map(|(name, source)| match source {
            "literal" => json!({"name": name, "value": "x"}),
            secret => json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": "deployment.toml"}}}),
        });
        let container = (
            prop::sample::select(vec!["apim", "sidecar"]),
            prop::collection::vec(mount, 0..4),
            prop::collection::vec(env, 0..3),
        )
            .prop_map(|(name, mounts, env)| {
                let mut unique_mounts: Vec<Value> = Vec::new();
                for mount in mounts {
                    if !unique_mounts.iter().any(|m| m["mountPath"] == mount["mountPath"]) {
                        unique_mounts.push(mount);
                    }
                }
                let mut unique_env: Vec<Value> = Vec::new();
                for variable in env {
                    if !unique_env.iter().any(|e| e["name"] == variable["name"]) {
                        unique_env.push(variable);
                    }
                }
                json!({"name": name, "image": "x", "volumeMounts": unique_mounts, "env": unique_env})
            });
        let volume = (
            names,
            prop::sample::select(vec!["own", "first", "empty", "config"]),
        )
            .prop_map(|(name, kind)| match kind {
                "own" => json!({"name": name, "secret": {"secretName": "apim-distribution"}}),
                "first" => json!({"name": name, "secret": {"secretName": "first-distribution"}}),
                "empty" => json!({"name": name, "emptyDir": {}}),
                _ => json!({"name": name, "configMap": {"name": "apim-config"}}),
            });
        (
            prop::collection::vec(container, 1..3),
            prop::collection::vec(volume, 0..3),
        )
            .prop_map(|(containers, volumes)| {
                let mut seen = Vec::new();
                let containers: Vec<Value> = containers
                    .into_iter()
                    .filter(|c| {
                        let fresh = !seen.contains(&c["name"]);
                        seen.push(c["name"].clone());
                        fresh
                    })
                    .collect();
                let mut names = Vec::new();
                let volumes: Vec<Value> = volumes
                    .into_iter()
                    .filter(|v| {
                        let fresh = !names.contains(&v["name"]);
                        names.push(v["name"].clone());
                        fresh
                    })
                    .collect();
                pod_spec(json!(containers), json!(volumes))
            })
    }

    proptest::proptest! {
        /// Wherever the check lets the key in, its patch takes nothing over: every entry
        /// of the template that was not the key's is still there, the key is carried,
        /// and its own projection is never in its own way afterwards.
        #[test]
        fn a_projection_the_check_admits_takes_nothing_over_and_is_never_its_own_conflict(
            spec in arbitrary_template(),
            env in proptest::bool::ANY,
            listed in proptest::option::of(proptest::sample::select(vec!["apim", "sidecar"])),
        ) {
            let mut shape = if env {
                json!({"format": "Hex", "projection": "Env"})
            } else {
                json!({})
            };
            if let Some(container) = listed {
                shape["containers"] = json!([container]);
            }
            let distribution = distribution(shape);
            let projection = projection(&distribution);
            proptest::prop_assume!(obstacles("Deployment apim", &spec, &projection).is_empty());
            let names: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
            let patch = template_patch(WorkloadKind::Deployment, "apim", &names, &projection);
            let after = merged(&spec, &patch);
            let targeted: Vec<String> = targeted(&after, &distribution)
                .into_iter()
                .map(|c| c.name.clone())
                .collect();
            proptest::prop_assert!(carries(&after, &targeted, &projection));
            proptest::prop_assert!(obstacles("Deployment apim", &after, &projection).is_empty());
            for (before, now) in spec.containers.iter().zip(&after.containers) {
                for mount in before.volume_mounts.iter().flatten() {
                    let kept = now.volume_mounts.iter().flatten().any(|m| m == mount);
                    proptest::prop_assert!(kept || mount.name == volume_name("apim"), "{mount:?} taken over");
                }
                for variable in before.env.iter().flatten() {
                    let kept = now.env.iter().flatten().any(|e| e == variable);
                    proptest::prop_assert!(kept || is_own_env(variable, &projection), "{variable:?} taken over");
                }
            }
            for volume in spec.volumes.iter().flatten() {
                let kept = after.volumes.iter().flatten().any(|v| v == volume);
                proptest::prop_assert!(kept || is_own_volume(volume, &projection), "{volume:?} taken over");
            }
        }
    }
}
