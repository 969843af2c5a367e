//! The objects of a rotation on the API server: creates the re-encryption Jobs and what
//! they run with (built by [`super::build`]), reads a Job's state and the progress it
//! reported, and deletes them when their step is over. All are owned by the
//! EncryptionKey; none is ever written over if someone else owns an object of its name.
//!
//! Every object here is made by name, so someone else may have made one of that name
//! first: one is used, replaced or deleted only when it carries the key's owner reference
//! and keyward's labels, and deleted only with its uid as a precondition, so an object
//! re-created in between under the same name is never the one deleted. The RoleBinding
//! that gives the ServiceAccount its rights exists only while a Job of the key runs: a
//! standing account that may update every Secret of the namespace would be there for any
//! pod creator to borrow.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions, PropagationPolicy};
use kube::core::NamespaceResourceScope;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::{self, KEY_VERSIONS_ROLE, REENCRYPTION_ROLE, is_keywards};
use super::machine::JobState;
use crate::controller::options::JobOptions;
use crate::crd::EncryptionKey;
use crate::crypto::Keyring;
use crate::names::{identity_name, progress_name, versions_secret_name};
use crate::store::{self, ENCRYPTION_KEY_MANAGER, KEY_LABEL, ROLE_LABEL};
use crate::{Error, Result};

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
    pass: build::Pass,
) -> Result<()> {
    ensure(client, key, &build::service_account(key)?).await?;
    ensure(client, key, &build::role(key)?).await?;
    bind(client, key, Existing::Replace).await?;
    ensure(client, key, &build::progress_config_map(key, target)?).await?;
    let job = build::job(key, options, job_name, pass)?;
    create_job(client, key, &job).await
}

/// Gives the Jobs' ServiceAccount its Role, for as long as a Job of `key` runs.
async fn bind(client: &Client, key: &EncryptionKey, existing: Existing) -> Result<()> {
    let binding = build::role_binding(key)?;
    if existing == Existing::Keep {
        let namespace = key.namespace().unwrap_or_default();
        let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &namespace);
        // Kept only as keyward made it: one bound to other subjects is put right.
        let found = bindings.get_opt(&identity_name(&key.name_any())).await?;
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

/// Creates the Secret handing the external Job the old and new versions: one of that
/// name must be keyward's for `key` (one made by an earlier reconcile), else
/// [`Error::ObjectNotOwned`] and nothing is written or mounted.
async fn create_versions_secret(
    client: &Client,
    key: &EncryptionKey,
    handed: &Keyring,
    old: &str,
    target: i64,
) -> Result<String> {
    let namespace = key.namespace().unwrap_or_default();
    let secret_name = versions_secret_name(&key.name_any(), target);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = build::versions_secret(key, handed, old, target)?;
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
    keyring: &Keyring,
    target: i64,
    job_name: &str,
) -> Result<()> {
    let Some(template) = key.spec.reencryption.job_template.clone() else {
        return Ok(());
    };
    let template = build::parse_template(&key.name_any(), template).map_err(Error::JobTemplate)?;
    if let Some(refusal) = build::refused_template(key, &template, options) {
        return Err(Error::JobTemplate(refusal));
    }
    let (handed, old) = build::handed_versions(keyring, target);
    let secret_name = create_versions_secret(client, key, &handed, &old, target).await?;
    let job = build::external_job(key, template, job_name, &secret_name, &old, target)?;
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
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let name = versions_secret_name(&key.name_any(), target);
    let owned = |meta: &ObjectMeta| is_keywards(meta, key, KEY_VERSIONS_ROLE);
    delete_owned(&secrets, &name, owned, &DeleteParams::default()).await
}
