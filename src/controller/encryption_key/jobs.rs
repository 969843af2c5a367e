//! The re-encryption Job of a rotation and what it runs with: a ServiceAccount and Role
//! of its own (get/list/update Secrets in the key's namespace, read its EncryptionKey,
//! report progress in one ConfigMap), and that progress ConfigMap. All owned by the
//! EncryptionKey; none is ever written over if someone else owns an object of its name.
//!
//! Every object here is made by name, so someone else may have made one of that name
//! first: one is used, replaced or deleted only when it carries the key's owner reference
//! and keyward's labels, and deleted only with its uid as a precondition, so an object
//! re-created in between under the same name is never the one deleted. The RoleBinding
//! that gives the ServiceAccount its rights exists only while a Job of the key runs: a
//! standing account that may update every Secret of the namespace would be there for any
//! pod creator to borrow.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, PodSecurityContext, PodSpec, PodTemplateSpec,
    SeccompProfile, SecurityContext, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions, PropagationPolicy};
use kube::core::NamespaceResourceScope;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::rotation::JobState;
use crate::controller::options::JobOptions;
use crate::crd::EncryptionKey;
use crate::store::{
    self, ENCRYPTION_KEY_MANAGER, KEY_LABEL, MANAGED_BY, MANAGED_BY_VALUE, ROLE_LABEL,
};
use crate::{Error, Result};

/// The role label of the objects a rotation's Jobs run with, and of the Jobs.
const REENCRYPTION_ROLE: &str = "reencryption";
/// The role label of the Secret handing an external Job the key versions.
const KEY_VERSIONS_ROLE: &str = "key-versions";

/// Whether `meta` is of an object keyward made for `key` in `role`: the key's owner
/// reference (by uid) and keyward's labels naming the key. Anyone who may create objects
/// in the namespace can pick a name keyward derives; only keyward makes both marks.
pub fn is_keywards(meta: &ObjectMeta, key: &EncryptionKey, role: &str) -> bool {
    let labels = meta.labels.as_ref();
    let label = |name: &str| {
        labels
            .and_then(|labels| labels.get(name))
            .map(String::as_str)
    };
    store::is_owned_by(meta, key)
        && label(MANAGED_BY) == Some(MANAGED_BY_VALUE)
        && label(ROLE_LABEL) == Some(role)
        && label(KEY_LABEL) == Some(key.name_any().as_str())
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
        labels: Some(store::labels(
            REENCRYPTION_ROLE,
            [(KEY_LABEL, key.name_any())],
        )),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    })
}

/// Whether [`bind`] replaces a RoleBinding of keyward's that exists.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Existing {
    /// Replaced whole, as a new attempt starts.
    Replace,
    /// Left as it is while it binds what keyward binds.
    Keep,
}

/// Creates `desired`, or replaces the object of its name whole if it is keyward's for
/// `key` ([`is_keywards`]); one that is not is [`Error::ObjectNotOwned`], left alone.
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
        Some(found) if is_keywards(found.meta(), key, REENCRYPTION_ROLE) => {
            // Replaced whole: a new attempt starts from clean progress.
            let mut desired = desired.clone();
            desired.meta_mut().resource_version = found.meta().resource_version.clone();
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
    bind(client, key, Existing::Replace).await?;
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

/// Gives the Jobs' ServiceAccount its Role, for as long as a Job of `key` runs.
async fn bind(client: &Client, key: &EncryptionKey, existing: Existing) -> Result<()> {
    let identity = identity_name(&key.name_any());
    let binding = RoleBinding {
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
    };
    if existing == Existing::Keep {
        let namespace = key.namespace().unwrap_or_default();
        let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &namespace);
        // Kept only as keyward made it: one bound to other subjects is put right.
        let found = bindings.get_opt(&identity).await?;
        if let Some(found) = found
            && is_keywards(&found.metadata, key, REENCRYPTION_ROLE)
            && found.subjects == binding.subjects
            && found.role_ref == binding.role_ref
        {
            return Ok(());
        }
    }
    ensure(client, key, &binding).await
}

/// Makes sure the Jobs' ServiceAccount holds its Role while a Job runs: a rotation
/// resumed by another replica or after a restart finds it as the Job left it, or
/// restores it.
pub async fn keep_bound(client: &Client, key: &EncryptionKey) -> Result<()> {
    bind(client, key, Existing::Keep).await
}

/// Takes the Jobs' ServiceAccount's rights away once no Job of `key` should run (the
/// phase ended, the attempt failed, the rotation finished); already gone is fine.
pub async fn unbind(client: &Client, key: &EncryptionKey) -> Result<()> {
    let namespace = key.namespace().unwrap_or_default();
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &namespace);
    let owned = |meta: &ObjectMeta| is_keywards(meta, key, REENCRYPTION_ROLE);
    delete_owned(
        &bindings,
        &identity_name(&key.name_any()),
        owned,
        &DeleteParams::default(),
    )
    .await
}

/// Creates `job` in `key`'s namespace; one an earlier reconcile created is fine, one of
/// that name that is not `key`'s is [`Error::ObjectNotOwned`].
async fn create_job(client: &Client, key: &EncryptionKey, job: &Job) -> Result<()> {
    let namespace = key.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let params = PostParams {
        field_manager: Some(ENCRYPTION_KEY_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match jobs.create(&params, job).await {
        Ok(_) => Ok(()),
        // Created by an earlier reconcile that did not see it yet, or by someone else.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let name = job.metadata.name.clone().unwrap_or_default();
            match jobs.get_metadata_opt(&name).await? {
                Some(found) if store::is_owned_by(&found.metadata, key) => Ok(()),
                // Gone again: the next reconcile creates it.
                None => Ok(()),
                Some(_) => Err(Error::ObjectNotOwned {
                    kind: "Job".to_owned(),
                    name,
                }),
            }
        }
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
    let labels = store::labels(REENCRYPTION_ROLE, [(KEY_LABEL, key_name.clone())]);
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

/// Deletes object `name` if it is still the one `owned` accepts, with its uid as a
/// precondition, so an object re-created under that name in between is left alone.
/// Absent, not owned, or gone or replaced meanwhile: nothing is deleted, and that is fine.
async fn delete_owned<K>(
    api: &Api<K>,
    name: &str,
    owned: impl Fn(&ObjectMeta) -> bool,
    params: &DeleteParams,
) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(found) = api.get_metadata_opt(name).await? else {
        return Ok(());
    };
    if !owned(&found.metadata) {
        tracing::debug!(
            name,
            "leaving an object of a derived name alone: it is not keyward's"
        );
        return Ok(());
    }
    delete_exactly(api, name, found.metadata.uid.clone(), params).await
}

/// Deletes object `name` only if its uid is still `uid`; already gone or replaced is fine.
async fn delete_exactly<K>(
    api: &Api<K>,
    name: &str,
    uid: Option<String>,
    params: &DeleteParams,
) -> Result<()>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..params.clone()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Deletes the Jobs of `key`'s rotations other than `keep` (those of earlier attempts)
/// and their pods.
pub async fn remove_others(client: &Client, key: &EncryptionKey, keep: &[&str]) -> Result<()> {
    let namespace = key.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let selector = format!(
        "{ROLE_LABEL}={REENCRYPTION_ROLE},{KEY_LABEL}={}",
        key.name_any()
    );
    let params = kube::api::ListParams::default().labels(&selector);
    let delete = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    for job in jobs.list_metadata(&params).await? {
        let name = job.name_any();
        if !keep.contains(&name.as_str()) && store::is_owned_by(&job.metadata, key) {
            delete_exactly(&jobs, &name, job.metadata.uid.clone(), &delete).await?;
        }
    }
    Ok(())
}

/// The progress the Jobs of `key` reported, if any, parsed as untrusted input (see
/// [`super::progress`]). A ConfigMap of that name that keyward did not make for the key
/// (put in its place while a Job ran) reports nothing.
pub async fn progress(
    client: &Client,
    key: &EncryptionKey,
) -> Result<Option<super::progress::Reported>> {
    let namespace = key.namespace().unwrap_or_default();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let Some(config_map) = config_maps.get_opt(&progress_name(&key.name_any())).await? else {
        return Ok(None);
    };
    if !is_keywards(&config_map.metadata, key, REENCRYPTION_ROLE) {
        return Ok(None);
    }
    Ok(super::progress::parse(&config_map.data.unwrap_or_default()))
}

/// `spec.reencryption.jobTemplate` as a Job template. What the parser says of a template
/// that does not parse goes to the log only: it may quote the template's values, and the
/// refusal reaches status and Events.
fn parse_template(
    key_name: &str,
    template: serde_json::Value,
) -> std::result::Result<k8s_openapi::api::batch::v1::JobTemplateSpec, String> {
    serde_json::from_value(template).map_err(|error| {
        tracing::warn!(key = key_name, %error, "spec.reencryption.jobTemplate does not parse as a batch/v1 Job template");
        "it does not parse as a batch/v1 Job template (the operator's log says where)".to_owned()
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

/// The ServiceAccount a pod of `pod` runs as: `serviceAccountName`, else the deprecated
/// `serviceAccount` (which the API server copies into it), else `default`.
pub fn effective_account(pod: Option<&PodSpec>) -> &str {
    fn named(name: Option<&String>) -> Option<&str> {
        name.map(String::as_str).filter(|name| !name.is_empty())
    }
    pod.and_then(|pod| {
        named(pod.service_account_name.as_ref()).or_else(|| named(pod.service_account.as_ref()))
    })
    .unwrap_or("default")
}

/// Why a Job template may not run as ServiceAccount `account` of `namespace`, if it may
/// not: as any key's re-encryption account (each may update every Secret of its
/// namespace while a rotation runs), or as the operator's own (`own`, namespace and
/// name), whose rights span every namespace it watches.
pub fn refused_account(
    account: &str,
    namespace: &str,
    own: Option<&(String, String)>,
) -> Option<String> {
    if account.ends_with("-reencrypt") {
        return Some(format!(
            "it may not run as ServiceAccount {account:?}: accounts named *-reencrypt are the built-in re-encryption's"
        ));
    }
    if own
        .is_some_and(|(own_namespace, own_name)| own_namespace == namespace && own_name == account)
    {
        return Some(format!(
            "it may not run as ServiceAccount {account:?}: that is the operator's own"
        ));
    }
    None
}

/// The labels of the external Job: the template's, with keyward's over them, so a
/// template can never make a Job look like another key's or like none of keyward's.
fn external_labels(
    template: Option<BTreeMap<String, String>>,
    keywards: Option<BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut labels = template.unwrap_or_default();
    labels.extend(keywards.unwrap_or_default());
    labels
}

/// Creates the Secret handing the external Job the old and new versions: one of that
/// name must be keyward's for `key` (one made by an earlier reconcile), else
/// [`Error::ObjectNotOwned`] and nothing is written or mounted.
async fn create_versions_secret(
    client: &Client,
    key: &EncryptionKey,
    handed: &crate::crypto::Keyring,
    old: &str,
    target: i64,
) -> Result<String> {
    let key_name = key.name_any();
    let namespace = key.namespace().unwrap_or_default();
    let secret_name = versions_secret_name(&key_name, target);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &namespace);
    let json = handed.to_json().map_err(Error::Key)?;
    let data = BTreeMap::from([
        (
            "keyring.json".to_owned(),
            k8s_openapi::ByteString(json.as_bytes().to_vec()),
        ),
        (
            "oldVersions".to_owned(),
            k8s_openapi::ByteString(old.as_bytes().to_vec()),
        ),
        (
            "newVersion".to_owned(),
            k8s_openapi::ByteString(target.to_string().into_bytes()),
        ),
    ]);
    let secret = store::secret(
        &secret_name,
        Some(key),
        store::labels(KEY_VERSIONS_ROLE, [(KEY_LABEL, key_name.clone())]),
        BTreeMap::new(),
        data,
    )?;
    // Created, never written over: a Secret of this name that is there already is
    // keyward's from an earlier reconcile of this step, or someone else's.
    let created =
        store::write_owned(&secrets, ENCRYPTION_KEY_MANAGER, secret, None, |_| false).await;
    match created {
        Ok(_) => Ok(secret_name),
        Err(Error::Kube(kube::Error::Api(status))) if status.code == 409 => {
            match secrets.get_metadata_opt(&secret_name).await? {
                Some(found) if is_keywards(&found.metadata, key, KEY_VERSIONS_ROLE) => {
                    Ok(secret_name)
                }
                Some(_) => Err(Error::ObjectNotOwned {
                    kind: "Secret".to_owned(),
                    name: secret_name,
                }),
                // Deleted in between: the next reconcile creates it.
                None => Err(Error::Kube(kube::Error::Api(status))),
            }
        }
        Err(error) => Err(error),
    }
}

/// Creates the Secret with the old and new versions (unless it exists) and the external
/// Job from `spec.reencryption.jobTemplate`.
pub async fn start_external(
    client: &Client,
    key: &EncryptionKey,
    options: &JobOptions,
    keyring: &crate::crypto::Keyring,
    target: i64,
    job_name: &str,
) -> Result<()> {
    let Some(template) = key.spec.reencryption.job_template.clone() else {
        return Ok(());
    };
    let template = parse_template(&key.name_any(), template).map_err(Error::JobTemplate)?;
    let namespace = key.namespace().unwrap_or_default();
    let pod = template
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref());
    let account = effective_account(pod);
    if let Some(refusal) = refused_account(account, &namespace, options.own_account.as_ref()) {
        return Err(Error::JobTemplate(refusal));
    }
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
    let secret_name = create_versions_secret(client, key, &handed, &old, target).await?;
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
    let template_labels = template.metadata.and_then(|meta| meta.labels);
    metadata.labels = Some(external_labels(template_labels, metadata.labels.take()));
    let job = Job {
        metadata,
        spec: Some(spec),
        ..Job::default()
    };
    create_job(client, key, &job).await
}

/// Deletes the Secret that handed the external Job its keys, if it is keyward's;
/// already gone is fine, and one of that name that is someone else's is left alone.
pub async fn remove_versions_secret(
    client: &Client,
    key: &EncryptionKey,
    target: i64,
) -> Result<()> {
    let namespace = key.namespace().unwrap_or_default();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &namespace);
    let name = versions_secret_name(&key.name_any(), target);
    let owned = |meta: &ObjectMeta| is_keywards(meta, key, KEY_VERSIONS_ROLE);
    delete_owned(&secrets, &name, owned, &DeleteParams::default()).await
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_template_that_does_not_parse_is_refused_without_the_parsers_words_or_its_values() {
        let template = serde_json::json!({
            "spec": {"template": {"spec": {"containers": "hunter2-in-a-template"}}}
        });
        let refusal = parse_template("apim", template).expect_err("not a Job template");
        assert!(refusal.contains("does not parse as a batch/v1 Job template"));
        assert!(
            !refusal.contains("hunter2") && !refusal.contains("invalid type"),
            "{refusal}"
        );
    }

    use kube::api::ObjectMeta;

    use super::*;

    fn pod(name: Option<&str>, deprecated: Option<&str>) -> PodSpec {
        PodSpec {
            service_account_name: name.map(str::to_owned),
            service_account: deprecated.map(str::to_owned),
            ..PodSpec::default()
        }
    }

    #[test]
    fn the_effective_account_is_the_name_else_the_deprecated_field_else_default() {
        assert_eq!(effective_account(None), "default");
        assert_eq!(effective_account(Some(&pod(None, None))), "default");
        assert_eq!(effective_account(Some(&pod(Some(""), Some("")))), "default");
        assert_eq!(
            effective_account(Some(&pod(None, Some("apim-reencrypt")))),
            "apim-reencrypt"
        );
        assert_eq!(
            effective_account(Some(&pod(Some(""), Some("apim-reencrypt")))),
            "apim-reencrypt"
        );
        assert_eq!(
            effective_account(Some(&pod(Some("external"), Some("apim-reencrypt")))),
            "external"
        );
    }

    #[test]
    fn a_template_may_run_as_neither_a_reencrypt_account_nor_the_operators_own() {
        let own = ("keyward-system".to_owned(), "keyward".to_owned());
        assert!(refused_account("external", "apps", Some(&own)).is_none());
        assert!(refused_account("default", "apps", Some(&own)).is_none());
        // Any key's, not only this one's: each may update every Secret of the namespace.
        for account in ["apim-reencrypt", "other-key-reencrypt"] {
            let refusal = refused_account(account, "apps", Some(&own)).expect("refused");
            assert!(refusal.contains(account), "{refusal}");
        }
        assert!(refused_account("keyward", "keyward-system", Some(&own)).is_some());
        // The operator's account is only its own in its namespace.
        assert!(refused_account("keyward", "apps", Some(&own)).is_none());
        assert!(refused_account("keyward", "keyward-system", None).is_none());
    }

    #[test]
    fn template_labels_never_replace_keywards() {
        let template = BTreeMap::from([
            (ROLE_LABEL.to_owned(), "verifier".to_owned()),
            (KEY_LABEL.to_owned(), "other".to_owned()),
            (MANAGED_BY.to_owned(), "Helm".to_owned()),
            ("team".to_owned(), "payments".to_owned()),
        ]);
        let keywards = store::labels(REENCRYPTION_ROLE, [(KEY_LABEL, "apim".to_owned())]);
        let labels = external_labels(Some(template), Some(keywards.clone()));
        for (name, value) in &keywards {
            assert_eq!(labels.get(name), Some(value), "{name}");
        }
        assert_eq!(labels.get("team").map(String::as_str), Some("payments"));
    }

    #[test]
    fn only_an_object_with_the_keys_owner_reference_and_keywards_labels_is_keywards() {
        let key = EncryptionKey {
            metadata: ObjectMeta {
                name: Some("apim".to_owned()),
                namespace: Some("apps".to_owned()),
                uid: Some("uid-of-apim".to_owned()),
                ..ObjectMeta::default()
            },
            spec: serde_json::from_value(serde_json::json!({})).expect("spec"),
            status: None,
        };
        let ours = meta(&key, "apim-versions-v2").expect("meta");
        assert!(is_keywards(&ours, &key, REENCRYPTION_ROLE));
        assert!(!is_keywards(&ours, &key, KEY_VERSIONS_ROLE));
        let unowned = ObjectMeta {
            owner_references: None,
            ..ours.clone()
        };
        assert!(!is_keywards(&unowned, &key, REENCRYPTION_ROLE));
        let unlabelled = ObjectMeta {
            labels: None,
            ..ours.clone()
        };
        assert!(!is_keywards(&unlabelled, &key, REENCRYPTION_ROLE));
        // A client's verifier of that name: owned by the client, not the key.
        let verifier = ObjectMeta {
            name: Some("apim-versions-v2".to_owned()),
            labels: Some(store::labels("verifier", [])),
            ..ObjectMeta::default()
        };
        assert!(!is_keywards(&verifier, &key, KEY_VERSIONS_ROLE));
    }
}
