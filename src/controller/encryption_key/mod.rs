//! Reconciler of `EncryptionKey`: keeps the keyring Secret, renders the key for pods,
//! projects it into the target workloads and counts the pods that hold it.
//!
//! The keyring Secret is written once, when the first version is created, and never
//! regenerated: if status records versions but the keyring is gone or unreadable, the
//! key is `Degraded` and waits for the user to restore it, because a new key would make
//! every existing ciphertext unreadable. Key material never reaches a log line, an
//! event or status — only fingerprints do.

pub mod render;
mod secrets;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::Selector;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use super::{Context, apply_status, in_namespace_of, namespaced_api, watcher_config};
use crate::crd::encryption_key::{
    DistributionStatus, DistributionTarget, EncryptionKeyStatus, KeyVersionStatus, WorkloadKind,
};
use crate::crd::{ConditionStatus, ConditionType, EncryptionKey, find_condition, set_condition};
use crate::crypto::keyring::VersionState;
use crate::crypto::{KeyMaterial, Keyring};
use crate::workload::{self, TemplateProjection};
use crate::{Error, FIELD_MANAGER, Result};

/// How often an undistributed key is looked at again, besides the workload watches.
const DISTRIBUTION_RECHECK: Duration = Duration::from_secs(5);

/// The EncryptionKey controller: watches the keys, the Secrets they own or read, and
/// the workloads they target.
pub fn controller(
    api: Api<EncryptionKey>,
    secrets: Api<Secret>,
    deployments: Api<Deployment>,
    stateful_sets: Api<StatefulSet>,
) -> Controller<EncryptionKey> {
    let controller = Controller::new(api, watcher_config());
    let (sources, by_deployment, by_stateful_set) =
        (controller.store(), controller.store(), controller.store());
    controller
        .owns(
            secrets.clone(),
            watcher_config().labels(&secrets::managed_selector()),
        )
        .watches(secrets, watcher_config(), move |secret| {
            readers_of(&sources, &secret)
        })
        .watches(deployments, watcher_config(), move |deployment| {
            targeting(&by_deployment, WorkloadKind::Deployment, &deployment)
        })
        .watches(stateful_sets, watcher_config(), move |stateful_set| {
            targeting(&by_stateful_set, WorkloadKind::StatefulSet, &stateful_set)
        })
}

/// Keys whose source or key-encryption key is `secret`.
fn readers_of(store: &Store<EncryptionKey>, secret: &Secret) -> Vec<ObjectRef<EncryptionKey>> {
    let name = secret.name_any();
    in_namespace_of(store, secret, |key| {
        key.spec
            .source
            .as_ref()
            .is_some_and(|source| source.secret_ref.name == name)
            || key
                .spec
                .key_encryption_key_ref
                .as_ref()
                .is_some_and(|kek| kek.name == name)
    })
}

/// Keys with a target of `kind` that may select `workload`.
fn targeting<W: Resource>(
    store: &Store<EncryptionKey>,
    kind: WorkloadKind,
    workload: &W,
) -> Vec<ObjectRef<EncryptionKey>> {
    let name = workload.meta().name.clone().unwrap_or_default();
    in_namespace_of(store, workload, |key| {
        key.spec
            .targets
            .iter()
            .any(|target| target.kind == kind && target.name.as_ref().is_none_or(|n| *n == name))
    })
}

/// The keyring of EncryptionKey `name` in `namespace`, for other resources that encrypt
/// under it; `Err` says, for status, why it is not usable yet.
pub async fn load_keyring(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Result<Keyring, String>> {
    let keys: Api<EncryptionKey> = Api::namespaced(client.clone(), namespace);
    let Some(key) = keys.get_opt(name).await? else {
        return Ok(Err(format!(
            "EncryptionKey {name:?} named in spec.encryptionKeyRef does not exist"
        )));
    };
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let kek = match &key.spec.key_encryption_key_ref {
        None => None,
        Some(reference) => {
            match secrets::read_key(&secrets_api, &reference.name, &reference.key).await? {
                Ok(kek) => Some(kek),
                Err(_) => {
                    return Ok(Err(format!(
                        "EncryptionKey {name:?} cannot read its key-encryption key"
                    )));
                }
            }
        }
    };
    let keyring_name = secrets::SecretNames::of(&key).keyring;
    Ok(
        match secrets::read_keyring(&secrets_api, &key, &keyring_name, kek.as_ref()).await? {
            secrets::StoredKeyring::Present(keyring) => Ok(keyring),
            _ => Err(format!("EncryptionKey {name:?} has no usable keyring yet")),
        },
    )
}

/// A reason the key cannot be ready, and whether it is a fault (`Degraded`) rather than
/// something to wait for.
struct Problem {
    reason: &'static str,
    message: String,
    degraded: bool,
}

/// Brings one EncryptionKey up to date.
pub async fn reconcile(key: Arc<EncryptionKey>, context: Arc<Context>) -> Result<Action> {
    let namespace = key.namespace().ok_or(Error::MissingObjectField {
        kind: "EncryptionKey",
        field: "metadata.namespace",
    })?;
    let secrets_api: Api<Secret> = Api::namespaced(context.client.clone(), &namespace);
    let names = secrets::SecretNames::of(&key);
    let now = Timestamp::now();

    let keyring = match load_or_create_keyring(&key, &context, &secrets_api, &names, now).await? {
        Ok(keyring) => keyring,
        Err(problem) => {
            report(&context, &key, Found::Problem(problem), now).await?;
            context.record_success(key.as_ref());
            return Ok(Action::await_change());
        }
    };
    let rendered = render::render(&keyring, key.spec.distribution.format).map_err(Error::Key)?;
    secrets::write_distribution(&secrets_api, &key, &names, &rendered).await?;
    let hash = keyring.distribution_hash();
    let distribution = distribute(
        &context,
        &key,
        &namespace,
        &names,
        rendered.file_name,
        &hash,
    )
    .await?;
    let outcome = outcome(&distribution.status, &distribution.missing);
    let distributed = outcome.distributed;
    let found = Found::Keyring {
        keyring: &keyring,
        progress: distribution.status,
        outcome,
    };
    report(&context, &key, found, now).await?;
    context.record_success(key.as_ref());
    Ok(if distributed {
        Action::await_change()
    } else {
        Action::requeue(DISTRIBUTION_RECHECK)
    })
}

/// The keyring, created from the source (or fresh material) the first time; or why there
/// is none.
async fn load_or_create_keyring(
    key: &EncryptionKey,
    context: &Context,
    secrets_api: &Api<Secret>,
    names: &secrets::SecretNames,
    now: Timestamp,
) -> Result<Result<Keyring, Problem>> {
    let kek = match &key.spec.key_encryption_key_ref {
        None => None,
        Some(reference) => {
            match secrets::read_key(secrets_api, &reference.name, &reference.key).await? {
                Ok(kek) => Some(kek),
                Err(problem) => {
                    return Ok(Err(
                        problem.named("KeyEncryptionKey", "spec.keyEncryptionKeyRef")
                    ));
                }
            }
        }
    };
    let recorded_versions = key
        .status
        .as_ref()
        .is_some_and(|status| !status.versions.is_empty());
    match secrets::read_keyring(secrets_api, key, &names.keyring, kek.as_ref()).await? {
        secrets::StoredKeyring::Present(keyring) => return Ok(Ok(keyring)),
        secrets::StoredKeyring::Foreign => {
            return Ok(Err(Problem {
                reason: "SecretConflict",
                message: format!(
                    "Secret {:?} exists and is not owned by this EncryptionKey; keyward will not overwrite it",
                    names.keyring
                ),
                degraded: true,
            }));
        }
        secrets::StoredKeyring::Unreadable(error) => {
            return Ok(Err(Problem {
                reason: "KeyringUnreadable",
                message: format!(
                    "keyring Secret {:?} cannot be read ({error}); restore it from backup — keyward never replaces a keyring",
                    names.keyring
                ),
                degraded: true,
            }));
        }
        secrets::StoredKeyring::Absent if recorded_versions => {
            return Ok(Err(Problem {
                reason: "KeyringMissing",
                message: format!(
                    "keyring Secret {:?} is gone but status records key versions; restore it from backup — a new key would make existing ciphertext unreadable",
                    names.keyring
                ),
                degraded: true,
            }));
        }
        secrets::StoredKeyring::Absent => {}
    }
    let (material, origin) = match &key.spec.source {
        None => (
            KeyMaterial::generate()?,
            "generated from the operating system's CSPRNG".to_owned(),
        ),
        Some(source) => {
            match secrets::read_key(secrets_api, &source.secret_ref.name, &source.secret_ref.key)
                .await?
            {
                Ok(material) => (
                    material,
                    format!("taken from Secret {:?}", source.secret_ref.name),
                ),
                Err(problem) => return Ok(Err(problem.named("Source", "spec.source.secretRef"))),
            }
        }
    };
    let keyring = Keyring::new(&key.name_any(), material, now);
    secrets::create_keyring(secrets_api, key, &names.keyring, &keyring, kek.as_ref()).await?;
    let fingerprint = keyring
        .primary()
        .map_err(Error::Key)?
        .material
        .fingerprint();
    let note = format!(
        "created key version 1 (fingerprint {fingerprint}), {origin}, in Secret {:?}",
        names.keyring
    );
    context
        .publish(key, EventType::Normal, "KeyCreated", "Create", note)
        .await;
    Ok(Ok(keyring))
}

/// Projects the key into every target workload and counts the pods that hold it.
async fn distribute(
    context: &Context,
    key: &EncryptionKey,
    namespace: &str,
    names: &secrets::SecretNames,
    file_name: &str,
    hash: &str,
) -> Result<Rollout> {
    let key_name = key.name_any();
    let projection = TemplateProjection {
        key_name: &key_name,
        secret_name: &names.distribution,
        file_name,
        keyring_hash: hash,
        distribution: &key.spec.distribution,
    };
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), namespace);
    let (mut pods_in_sync, mut pods_total) = (0, 0);
    let mut missing = Vec::new();
    for target in &key.spec.targets {
        let workloads = resolve(context, namespace, target).await?;
        if let (Some(name), true) = (&target.name, workloads.is_empty()) {
            missing.push(format!("{:?} {name}", target.kind));
        }
        for workload in workloads {
            if workload.needs_patch(&key_name, hash, &key.spec.distribution) {
                let patch = workload::template_patch(
                    target.kind,
                    &workload.name,
                    &workload.containers,
                    &projection,
                );
                workload
                    .apply(context, namespace, target.kind, &patch)
                    .await?;
            }
            let selected = pods
                .list(&ListParams::default().labels_from(&workload.selector))
                .await?;
            let (in_sync, total) = workload::pods_in_sync(
                &selected.items,
                &key_name,
                hash,
                key.spec.distribution.restart,
            );
            pods_in_sync += in_sync;
            // Until every pod the workload asks for is ready, some are missing from sync.
            pods_total += total.max(workload.replicas);
        }
    }
    let status = DistributionStatus {
        keyring_hash: Some(hash.to_owned()),
        pods_in_sync,
        pods_total,
    };
    Ok(Rollout { status, missing })
}

/// Distribution progress, and the named targets that do not exist.
struct Rollout {
    status: DistributionStatus,
    missing: Vec<String>,
}

/// A target workload, reduced to what distribution needs.
struct Workload {
    name: String,
    /// Pods the workload asks for.
    replicas: i32,
    containers: Vec<String>,
    selector: Selector,
    /// The current pod template's annotations and volume names.
    annotations: std::collections::BTreeMap<String, String>,
    volumes: Vec<String>,
}

impl Workload {
    fn from_template(
        name: String,
        replicas: i32,
        selector: &LabelSelector,
        template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
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
    fn needs_patch(
        &self,
        key_name: &str,
        hash: &str,
        distribution: &crate::crd::encryption_key::Distribution,
    ) -> bool {
        use crate::crd::encryption_key::{Projection, RestartPolicy};
        let hash_current = distribution.restart == RestartPolicy::None
            || self
                .annotations
                .get(&workload::hash_annotation(key_name))
                .is_some_and(|h| h == hash);
        let volume_present = distribution.projection == Projection::Env
            || self.volumes.contains(&workload::volume_name(key_name));
        !(hash_current && volume_present)
    }

    async fn apply(
        &self,
        context: &Context,
        namespace: &str,
        kind: WorkloadKind,
        patch: &serde_json::Value,
    ) -> Result<()> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match kind {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(context.client.clone(), namespace);
                api.patch(&self.name, &params, &Patch::Apply(patch)).await?;
            }
            WorkloadKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(context.client.clone(), namespace);
                api.patch(&self.name, &params, &Patch::Apply(patch)).await?;
            }
        }
        Ok(())
    }
}

/// The workloads `target` names or selects.
async fn resolve(
    context: &Context,
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
            let api: Api<Deployment> = Api::namespaced(context.client.clone(), namespace);
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
            let api: Api<StatefulSet> = Api::namespaced(context.client.clone(), namespace);
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

/// What distribution progress means for the `Distributed` and `Ready` conditions.
struct Outcome {
    distributed: bool,
    distributed_condition: (ConditionStatus, &'static str),
    ready_condition: (ConditionStatus, &'static str),
    summary: String,
}

/// Distributed only when every named target exists and every pod it asks for is ready
/// with the current keyring.
fn outcome(progress: &DistributionStatus, missing: &[String]) -> Outcome {
    let (in_sync, total) = (progress.pods_in_sync, progress.pods_total);
    let counted = format!("{in_sync}/{total} ready pods of the targets hold the current keyring");
    if !missing.is_empty() {
        return Outcome {
            distributed: false,
            distributed_condition: (ConditionStatus::False, "TargetNotFound"),
            ready_condition: (ConditionStatus::False, "TargetNotFound"),
            summary: format!(
                "spec.targets names {} which does not exist; {counted}",
                missing.join(", ")
            ),
        };
    }
    let distributed = in_sync == total;
    Outcome {
        distributed,
        distributed_condition: if distributed {
            (ConditionStatus::True, "InSync")
        } else {
            (ConditionStatus::False, "RollingOut")
        },
        ready_condition: if distributed {
            (ConditionStatus::True, "KeyDistributed")
        } else {
            (ConditionStatus::False, "Distributing")
        },
        summary: counted,
    }
}

/// What a reconcile found, for status.
enum Found<'a> {
    /// Something keeps the key from being ready.
    Problem(Problem),
    /// The keyring, how far its distribution got, and what that means.
    Keyring {
        keyring: &'a Keyring,
        progress: DistributionStatus,
        outcome: Outcome,
    },
}

/// Writes status from what the reconcile found, with an event on each transition a user
/// would want to see.
async fn report(
    context: &Context,
    key: &EncryptionKey,
    found: Found<'_>,
    now: Timestamp,
) -> Result<()> {
    let api: Api<EncryptionKey> = namespaced_api(&context.client, key)?;
    let generation = key.meta().generation;
    let previous = key
        .status
        .as_ref()
        .map(|status| status.conditions.as_slice())
        .unwrap_or_default();
    let was = |type_: ConditionType| {
        find_condition(previous, type_).map(|c| (c.status.clone(), c.reason.clone()))
    };
    let mut status: EncryptionKeyStatus = key.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    match found {
        Found::Problem(problem) => {
            let conditions = &mut status.conditions;
            let message = problem.message;
            set_condition(
                conditions,
                ConditionType::Ready,
                ConditionStatus::False,
                problem.reason,
                message.clone(),
                generation,
                now,
            );
            let (degraded, reason) = if problem.degraded {
                (ConditionStatus::True, problem.reason)
            } else {
                (ConditionStatus::False, "AsExpected")
            };
            set_condition(
                conditions,
                ConditionType::Degraded,
                degraded,
                reason,
                message.clone(),
                generation,
                now,
            );
            let newly_degraded = was(ConditionType::Degraded)
                != Some(("True".to_owned(), problem.reason.to_owned()));
            if problem.degraded && newly_degraded {
                context
                    .publish(
                        key,
                        EventType::Warning,
                        problem.reason,
                        "Reconcile",
                        message,
                    )
                    .await;
            }
        }
        Found::Keyring {
            keyring,
            progress,
            outcome,
        } => {
            status.keyring_secret_name = Some(secrets::SecretNames::of(key).keyring);
            status.primary_version = keyring.primary().ok().map(|primary| primary.version);
            status.versions = keyring.versions.iter().map(version_status).collect();
            status.distribution = Some(progress);
            let conditions = &mut status.conditions;
            let (state, reason) = outcome.distributed_condition;
            set_condition(
                conditions,
                ConditionType::Distributed,
                state,
                reason,
                outcome.summary.clone(),
                generation,
                now,
            );
            let (ready, reason) = outcome.ready_condition;
            set_condition(
                conditions,
                ConditionType::Ready,
                ready,
                reason,
                outcome.summary.clone(),
                generation,
                now,
            );
            set_condition(
                conditions,
                ConditionType::Degraded,
                ConditionStatus::False,
                "AsExpected",
                "",
                generation,
                now,
            );
            let was_distributed =
                was(ConditionType::Distributed).is_some_and(|(status, _)| status == "True");
            if outcome.distributed && !was_distributed {
                context
                    .publish(
                        key,
                        EventType::Normal,
                        "Distributed",
                        "Distribute",
                        outcome.summary,
                    )
                    .await;
            }
        }
    }
    apply_status(&api, key, key.status.as_ref(), &status).await
}

/// One keyring version as status shows it: never the material, only its fingerprint.
fn version_status(version: &crate::crypto::keyring::KeyVersion) -> KeyVersionStatus {
    let state = match version.state {
        VersionState::Primary => "Primary",
        VersionState::DecryptOnly => "DecryptOnly",
        VersionState::Retired => "Retired",
    };
    KeyVersionStatus {
        version: version.version,
        state: state.to_owned(),
        created_at: Time(version.created_at),
        fingerprint: version.material.fingerprint(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(pods_in_sync: i32, pods_total: i32) -> DistributionStatus {
        DistributionStatus {
            keyring_hash: None,
            pods_in_sync,
            pods_total,
        }
    }

    #[test]
    fn distributed_needs_every_pod_in_sync_and_every_named_target_present() {
        assert!(outcome(&progress(3, 3), &[]).distributed);
        let rolling = outcome(&progress(2, 3), &[]);
        assert!(!rolling.distributed);
        assert_eq!(rolling.ready_condition.1, "Distributing");
        let missing = outcome(&progress(0, 0), &["Deployment apim".to_owned()]);
        assert!(!missing.distributed);
        assert_eq!(missing.distributed_condition.1, "TargetNotFound");
        assert!(missing.summary.contains("Deployment apim"));
    }
}
