//! The re-encryption Job of a rotation and what it runs with: a ServiceAccount and Role
//! of its own (get/list/update Secrets in the key's namespace, read its EncryptionKey,
//! report progress in one ConfigMap), and that progress ConfigMap. All owned by the
//! EncryptionKey; none is ever written over if someone else owns an object of its name.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, PodSecurityContext, PodSpec, PodTemplateSpec,
    SeccompProfile, SecurityContext, ServiceAccount, Toleration,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, PropagationPolicy};
use kube::core::NamespaceResourceScope;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::rotation::JobState;
use crate::crd::EncryptionKey;
use crate::crd::encryption_key::ReencryptionProgress;
use crate::store::{self, ENCRYPTION_KEY_MANAGER, KEY_LABEL};
use crate::{Error, Result};

/// Where and how the operator runs re-encryption Jobs (operator flags).
#[derive(Clone, Debug, Default)]
pub struct JobOptions {
    /// Container image of the Job: keyward itself.
    pub image: String,
    /// Node selector of the Job's pod.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the Job's pod.
    pub tolerations: Vec<Toleration>,
    /// Whether `spec.reencryption.jobTemplate` may run: whoever may edit an
    /// EncryptionKey could otherwise run any image under any ServiceAccount of the
    /// namespace through the operator.
    pub allow_templates: bool,
}

/// Exit code of `keyward reencrypt` when some values do not decrypt: retrying cannot
/// help, so the Job fails at once.
const UNDECRYPTABLE_EXIT_CODE: i32 = 3;

pub use crate::names::{external_job_name, identity_name, progress_name, versions_secret_name};

fn meta(key: &EncryptionKey, name: &str) -> Result<ObjectMeta> {
    let owner = key
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectField {
            kind: "EncryptionKey",
            field: "metadata.uid",
        })?;
    Ok(ObjectMeta {
        name: Some(name.to_owned()),
        namespace: key.namespace(),
        labels: Some(store::labels("reencryption", [(KEY_LABEL, key.name_any())])),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    })
}

/// Creates `desired` unless an object of its name exists; one that exists must be owned
/// by `key`.
async fn ensure<K>(client: &Client, key: &EncryptionKey, desired: &K) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let namespace = key.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let name = desired.meta().name.clone().unwrap_or_default();
    match api.get_opt(&name).await? {
        Some(existing) if store::is_owned_by(existing.meta(), key) => {
            // Replaced whole: a new attempt starts from clean progress.
            let mut desired = desired.clone();
            desired.meta_mut().resource_version = existing.meta().resource_version.clone();
            let params = PostParams {
                field_manager: Some(ENCRYPTION_KEY_MANAGER.to_owned()),
                ..PostParams::default()
            };
            api.replace(&name, &params, &desired).await?;
            Ok(())
        }
        Some(_) => Err(Error::ObjectNotOwned {
            kind: K::kind(&()).into_owned(),
            name,
        }),
        None => {
            let params = PostParams {
                field_manager: Some(ENCRYPTION_KEY_MANAGER.to_owned()),
                ..PostParams::default()
            };
            api.create(&params, desired).await?;
            Ok(())
        }
    }
}

/// Makes sure the identity and the progress ConfigMap exist, then creates Job
/// `job_name` re-encrypting towards `target` (the keyring's primary).
pub async fn start(
    client: &Client,
    key: &EncryptionKey,
    options: &JobOptions,
    job_name: &str,
    target: i64,
) -> Result<()> {
    let key_name = key.name_any();
    let identity = identity_name(&key_name);
    let progress = progress_name(&key_name);
    ensure(
        client,
        key,
        &ServiceAccount {
            metadata: meta(key, &identity)?,
            automount_service_account_token: Some(true),
            ..ServiceAccount::default()
        },
    )
    .await?;
    let rule = |groups: &str, resources: &str, verbs: &[&str], names: Option<&str>| PolicyRule {
        api_groups: Some(vec![groups.to_owned()]),
        resources: Some(vec![resources.to_owned()]),
        verbs: verbs.iter().map(|verb| (*verb).to_owned()).collect(),
        resource_names: names.map(|name| vec![name.to_owned()]),
        ..PolicyRule::default()
    };
    ensure(
        client,
        key,
        &Role {
            metadata: meta(key, &identity)?,
            rules: Some(vec![
                rule("", "secrets", &["get", "list", "update"], None),
                rule(
                    "",
                    "configmaps",
                    &["get", "update", "patch"],
                    Some(&progress),
                ),
                rule("keyward.io", "encryptionkeys", &["get"], Some(&key_name)),
            ]),
        },
    )
    .await?;
    ensure(
        client,
        key,
        &RoleBinding {
            metadata: meta(key, &identity)?,
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_owned(),
                kind: "Role".to_owned(),
                name: identity.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_owned(),
                name: identity.clone(),
                namespace: key.namespace(),
                ..Subject::default()
            }]),
        },
    )
    .await?;
    ensure(
        client,
        key,
        &ConfigMap {
            metadata: meta(key, &progress)?,
            data: Some(BTreeMap::from([(
                "targetVersion".to_owned(),
                target.to_string(),
            )])),
            ..ConfigMap::default()
        },
    )
    .await?;
    let job = job(key, options, job_name, &identity, &progress)?;
    create_job(client, key, &job).await
}

/// Creates `job` in `key`'s namespace; one an earlier reconcile created is fine.
async fn create_job(client: &Client, key: &EncryptionKey, job: &Job) -> Result<()> {
    let namespace = key.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let params = PostParams {
        field_manager: Some(ENCRYPTION_KEY_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match jobs.create(&params, job).await {
        Ok(_) => Ok(()),
        // Created by an earlier reconcile that did not see it yet.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn job(
    key: &EncryptionKey,
    options: &JobOptions,
    job_name: &str,
    identity: &str,
    progress: &str,
) -> Result<Job> {
    let key_name = key.name_any();
    let namespace = key.namespace().unwrap_or_default();
    let reencryption = &key.spec.reencryption;
    let mut args = vec![
        "reencrypt".to_owned(),
        "--key".to_owned(),
        format!("{namespace}/{key_name}"),
        "--batch-size".to_owned(),
        reencryption.batch_size.to_string(),
        "--writes-per-second".to_owned(),
        reencryption.writes_per_second.to_string(),
        "--progress".to_owned(),
        progress.to_owned(),
    ];
    if let Some(selector) = selector(key)? {
        args.extend(["--selector".to_owned(), selector]);
    }
    let labels = store::labels("reencryption", [(KEY_LABEL, key_name.clone())]);
    let container = Container {
        name: "reencrypt".to_owned(),
        image: Some(options.image.clone()),
        command: Some(vec!["keyward".to_owned()]),
        args: Some(args),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let mut metadata = meta(key, job_name)?;
    metadata.namespace = None;
    Ok(Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            // A pod that never starts (image, quota, admission) fails the Job in time,
            // and the rotation retries with a reason instead of waiting forever.
            active_deadline_seconds: Some(3600),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "FailJob".to_owned(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        operator: "In".to_owned(),
                        values: vec![UNDECRYPTABLE_EXIT_CODE],
                        container_name: None,
                    }),
                    on_pod_conditions: None,
                }],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(identity.to_owned()),
                    restart_policy: Some("Never".to_owned()),
                    node_selector: (!options.node_selector.is_empty())
                        .then(|| options.node_selector.clone()),
                    tolerations: (!options.tolerations.is_empty())
                        .then(|| options.tolerations.clone()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

/// `spec.reencryption.selector` as a label selector string, when set.
pub fn selector(key: &EncryptionKey) -> Result<Option<String>> {
    key.spec
        .reencryption
        .selector
        .clone()
        .map(|selector| {
            kube::core::Selector::try_from(selector)
                .map(|selector| selector.to_string())
                .map_err(|_| Error::MissingObjectField {
                    kind: "EncryptionKey",
                    field: "spec.reencryption.selector",
                })
        })
        .transpose()
}

/// The state of Job `name`.
pub async fn state(client: &Client, key: &EncryptionKey, name: &str) -> Result<JobState> {
    let namespace = key.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let Some(job) = jobs.get_opt(name).await? else {
        return Ok(JobState::Absent);
    };
    // A Job of that name that is not the key's is not its re-encryption, whatever it did.
    if !store::is_owned_by(job.meta(), key) {
        return Err(Error::ObjectNotOwned {
            kind: "Job".to_owned(),
            name: name.to_owned(),
        });
    }
    let condition = |type_: &str| {
        job.status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == type_ && c.status == "True")
            })
    };
    Ok(if condition("Complete") {
        JobState::Succeeded
    } else if condition("Failed") {
        JobState::Failed
    } else {
        JobState::Running
    })
}

/// Deletes Job `name` and its pods (a failed attempt); already gone is fine.
pub async fn remove(client: &Client, namespace: &str, name: &str) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    delete_if_present(&jobs, name, &params).await
}

/// Deletes object `name`; one already gone is fine.
async fn delete_if_present<K>(api: &Api<K>, name: &str, params: &DeleteParams) -> Result<()>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Deletes the Jobs of `key`'s rotations other than `keep` (those of earlier attempts)
/// and their pods.
pub async fn remove_others(client: &Client, key: &EncryptionKey, keep: &[&str]) -> Result<()> {
    let namespace = key.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let selector = format!(
        "{}=reencryption,{KEY_LABEL}={}",
        store::ROLE_LABEL,
        key.name_any()
    );
    let params = kube::api::ListParams::default().labels(&selector);
    for job in jobs.list(&params).await? {
        let name = job.name_any();
        if !keep.contains(&name.as_str()) && store::is_owned_by(job.meta(), key) {
            remove(client, &namespace, &name).await?;
        }
    }
    Ok(())
}

/// The progress the Jobs of `key_name` reported, if any. Only numbers and
/// namespace/name/field entries are read, and malformed ones are skipped.
pub async fn progress(
    client: &Client,
    namespace: &str,
    key_name: &str,
) -> Result<Option<ReencryptionProgress>> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let Some(config_map) = config_maps.get_opt(&progress_name(key_name)).await? else {
        return Ok(None);
    };
    let data = config_map.data.unwrap_or_default();
    let number = |key: &str| {
        data.get(key)
            .and_then(|value| value.trim().parse::<i64>().ok())
            .unwrap_or(0)
    };
    if !data.contains_key("done") {
        return Ok(None);
    }
    let failures = data
        .get("failures")
        .map(|text| {
            text.lines()
                .filter(|line| valid_location(line))
                .take(20)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(ReencryptionProgress {
        total: number("total"),
        done: number("done"),
        failed: number("failed"),
        contended: number("contended").clamp(0, number("failed")),
        failures,
    }))
}

/// Whether `text` is a namespace/name/field location (object names and a data key),
/// never anything else the ConfigMap might have been made to hold.
fn valid_location(text: &str) -> bool {
    let parts: Vec<&str> = text.split('/').collect();
    parts.len() == 3
        && text.len() <= 600
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        })
}

/// Where the external Job's containers find the key versions.
const VERSIONS_MOUNT: &str = "/var/run/keyward/key-versions";

/// The state of a rotation step's Jobs together: failed if one failed, absent while one
/// is still to be created, succeeded once all have.
pub fn combined(states: &[JobState]) -> JobState {
    if states.contains(&JobState::Failed) {
        JobState::Failed
    } else if states.contains(&JobState::Absent) {
        JobState::Absent
    } else if states.contains(&JobState::Running) {
        JobState::Running
    } else {
        JobState::Succeeded
    }
}

/// Creates the Secret with the old and new versions (unless it exists) and the external
/// Job from `spec.reencryption.jobTemplate`.
pub async fn start_external(
    client: &Client,
    key: &EncryptionKey,
    keyring: &crate::crypto::Keyring,
    target: i64,
    job_name: &str,
) -> Result<()> {
    let Some(template) = key.spec.reencryption.job_template.clone() else {
        return Ok(());
    };
    let template: k8s_openapi::api::batch::v1::JobTemplateSpec =
        serde_json::from_value(template).map_err(|error| Error::JobTemplate(error.to_string()))?;
    let account = template
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .and_then(|pod| pod.service_account_name.as_deref());
    if account == Some(identity_name(&key.name_any()).as_str()) {
        return Err(Error::JobTemplate(
            "it may not run as the built-in re-encryption's ServiceAccount".to_owned(),
        ));
    }
    let key_name = key.name_any();
    let namespace = key.namespace().unwrap_or_default();
    let secret_name = versions_secret_name(&key_name, target);
    let mut handed = keyring.clone();
    handed
        .versions
        .retain(|version| version.state != crate::crypto::VersionState::Retired);
    let old: Vec<String> = handed
        .versions
        .iter()
        .filter(|version| version.version != target)
        .map(|version| version.version.to_string())
        .collect();
    let old = old.join(",");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &namespace);
    if store::get(&secrets, &secret_name).await?.is_none() {
        let json = handed.to_json().map_err(Error::Key)?;
        let data = BTreeMap::from([
            (
                "keyring.json".to_owned(),
                k8s_openapi::ByteString(json.as_bytes().to_vec()),
            ),
            (
                "oldVersions".to_owned(),
                k8s_openapi::ByteString(old.clone().into_bytes()),
            ),
            (
                "newVersion".to_owned(),
                k8s_openapi::ByteString(target.to_string().into_bytes()),
            ),
        ]);
        let secret = store::secret(
            &secret_name,
            Some(key),
            store::labels("key-versions", [(KEY_LABEL, key_name.clone())]),
            BTreeMap::new(),
            data,
        )?;
        let owns = |meta: &ObjectMeta| store::is_owned_by(meta, key);
        store::write_owned(&secrets, ENCRYPTION_KEY_MANAGER, secret, None, owns).await?;
    }
    let mut spec = template.spec.unwrap_or_default();
    let pod = spec.template.spec.get_or_insert_with(PodSpec::default);
    let env = [
        ("KEYWARD_KEY_VERSIONS_SECRET", secret_name.clone()),
        ("KEYWARD_OLD_VERSIONS", old),
        ("KEYWARD_NEW_VERSION", target.to_string()),
    ];
    for container in &mut pod.containers {
        let vars = container.env.get_or_insert_with(Vec::new);
        for (name, value) in &env {
            vars.push(k8s_openapi::api::core::v1::EnvVar {
                name: (*name).to_owned(),
                value: Some(value.clone()),
                ..Default::default()
            });
        }
        container.volume_mounts.get_or_insert_with(Vec::new).push(
            k8s_openapi::api::core::v1::VolumeMount {
                name: "keyward-key-versions".to_owned(),
                mount_path: VERSIONS_MOUNT.to_owned(),
                read_only: Some(true),
                ..Default::default()
            },
        );
    }
    pod.volumes
        .get_or_insert_with(Vec::new)
        .push(k8s_openapi::api::core::v1::Volume {
            name: "keyward-key-versions".to_owned(),
            secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
                secret_name: Some(secret_name),
                ..Default::default()
            }),
            ..Default::default()
        });
    let mut metadata = meta(key, job_name)?;
    metadata.namespace = None;
    let template_labels = template
        .metadata
        .and_then(|meta| meta.labels)
        .unwrap_or_default();
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(template_labels);
    let job = Job {
        metadata,
        spec: Some(spec),
        ..Job::default()
    };
    create_job(client, key, &job).await
}

/// Deletes the Secret that handed the external Job its keys; already gone is fine.
pub async fn remove_versions_secret(
    client: &Client,
    key: &EncryptionKey,
    target: i64,
) -> Result<()> {
    let namespace = key.namespace().unwrap_or_default();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &namespace);
    let name = versions_secret_name(&key.name_any(), target);
    delete_if_present(&secrets, &name, &DeleteParams::default()).await
}
