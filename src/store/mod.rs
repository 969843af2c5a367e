//! keyward's own Secrets as the cluster keeps them: their labels, the one write path that
//! refuses to take over a Secret keyward does not own, deletion that spares a Secret
//! re-created in between, and the keyring and distribution Secrets of EncryptionKeys.
//!
//! The reconcilers and the hand tools go through this layer; it never decides what to
//! write, only how to write it safely. Every Secret's data that passes through here is
//! wiped from memory once the request is made.

pub mod distribution;
pub mod keyring;
pub mod keyring_cache;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use zeroize::Zeroize;

use crate::{Error, Result};

/// Label on every Secret keyward writes.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "keyward";
/// What a keyward Secret is for: `verifier`, `delivery`, `keyring`, `distribution`.
pub const ROLE_LABEL: &str = "keyward.io/role";
/// The OAuthClient a Secret belongs to.
pub const CLIENT_LABEL: &str = "keyward.io/oauth-client";
/// The EncryptionKey a Secret belongs to, or whose ciphertext it holds (the default
/// selector of the Secrets a key rotation re-encrypts).
pub const KEY_LABEL: &str = "keyward.io/encryption-key";

/// Field manager of the OAuthClient controller's writes.
pub const OAUTH_CLIENT_MANAGER: &str = "keyward-oauth-client";
/// Field manager of the EncryptionKey controller's writes to its Secrets and status.
pub const ENCRYPTION_KEY_MANAGER: &str = "keyward-encryption-key";

/// Field manager of EncryptionKey `key_name`'s projection into workloads. One per key:
/// server-side apply replaces a manager's whole field set, so two keys targeting one
/// workload under a shared manager would remove each other's volumes.
pub fn workload_manager(key_name: &str) -> String {
    format!("{ENCRYPTION_KEY_MANAGER}/{key_name}")
}

/// Label selector of every Secret keyward manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE}")
}

/// The labels of a keyward Secret with `role`, plus `extra`.
pub fn labels(
    role: &str,
    extra: impl IntoIterator<Item = (&'static str, String)>,
) -> BTreeMap<String, String> {
    [
        (MANAGED_BY, MANAGED_BY_VALUE.to_owned()),
        (ROLE_LABEL, role.to_owned()),
    ]
    .into_iter()
    .chain(extra)
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

/// Whether the object of `meta` has an owner reference to `owner` (by uid).
pub fn is_owned_by<K: Resource>(meta: &ObjectMeta, owner: &K) -> bool {
    let uid = owner.meta().uid.as_ref();
    uid.is_some()
        && meta
            .owner_references
            .iter()
            .flatten()
            .any(|reference| Some(&reference.uid) == uid)
}

/// An opaque Secret named `name` with `labels`, `annotations`, `data` and, when given,
/// `owner` as its controller.
pub fn secret<K: Resource<DynamicType = ()>>(
    name: &str,
    owner: Option<&K>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    data: BTreeMap<String, ByteString>,
) -> Result<Secret> {
    let owner_references = match owner {
        None => None,
        Some(owner) => Some(vec![owner.controller_owner_ref(&()).ok_or(
            Error::MissingObjectField {
                kind: "owner",
                field: "metadata.uid",
            },
        )?]),
    };
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references,
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    })
}

/// What [`write_owned`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// The Secret now holds what was asked.
    Done,
    /// A Secret of that name exists and is not keyward's to write: nothing was written.
    Conflict,
}

/// Writes `desired` (a whole Secret keyward owns) as `manager`, given what was read of
/// it (`existing`) and the test of ownership (`owns`).
///
/// The one write path of keyward's Secrets. Absent: created, which fails rather than
/// overwrite a Secret that appeared in between. Present and owned: replaced whole — the
/// Secret is keyward's, so nothing another hand or an older write left in it survives —
/// with the `resourceVersion` that was checked as a precondition, so ownership cannot
/// change between the check and the write. Present and not owned: left alone. The data
/// of `desired` is wiped afterwards.
pub async fn write_owned(
    secrets: &Api<Secret>,
    manager: &str,
    desired: Secret,
    existing: Option<&ObjectMeta>,
    owns: impl Fn(&ObjectMeta) -> bool,
) -> Result<Written> {
    let written = write_owned_read_back(secrets, manager, desired, existing, owns).await?;
    Ok(match written {
        Some(_) => Written::Done,
        None => Written::Conflict,
    })
}

/// [`write_owned`], returning the Secret as the API server stored it (`None`: not
/// keyward's to write), so the caller can go on from it without reading it again.
pub async fn write_owned_read_back(
    secrets: &Api<Secret>,
    manager: &str,
    mut desired: Secret,
    existing: Option<&ObjectMeta>,
    owns: impl Fn(&ObjectMeta) -> bool,
) -> Result<Option<Read>> {
    let result = write(secrets, manager, &mut desired, existing, owns).await;
    wipe(&mut desired);
    result
}

async fn write(
    secrets: &Api<Secret>,
    manager: &str,
    desired: &mut Secret,
    existing: Option<&ObjectMeta>,
    owns: impl Fn(&ObjectMeta) -> bool,
) -> Result<Option<Read>> {
    let name = desired.name_any();
    let params = PostParams {
        field_manager: Some(manager.to_owned()),
        ..PostParams::default()
    };
    let written = match existing {
        None => secrets.create(&params, desired).await?,
        Some(existing) if !owns(existing) => return Ok(None),
        Some(existing) => {
            desired.metadata.resource_version = existing.resource_version.clone();
            secrets.replace(&name, &params, desired).await?
        }
    };
    Ok(Some(Read(written)))
}

/// Deletes the Secret `observed` was read from, only if it is still that very object,
/// unchanged (uid and resourceVersion preconditions). `false`: it is gone, or was
/// replaced or changed since, and was left alone.
pub async fn delete_unchanged(secrets: &Api<Secret>, observed: &Secret) -> Result<bool> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: observed.uid(),
            resource_version: observed.resource_version(),
        }),
        ..DeleteParams::default()
    };
    match secrets.delete(&observed.name_any(), &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Overwrites the data of `secret` in memory with zeros.
pub fn wipe(secret: &mut Secret) {
    for value in secret.data.iter_mut().flat_map(|data| data.values_mut()) {
        value.0.zeroize();
    }
    if let Some(data) = secret.string_data.as_mut() {
        for value in data.values_mut() {
            value.zeroize();
        }
    }
}

/// A Secret read from the cluster whose data is wiped when it is dropped.
pub struct Read(pub Secret);

impl Drop for Read {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl std::ops::Deref for Read {
    type Target = Secret;
    fn deref(&self) -> &Secret {
        &self.0
    }
}

/// Reads Secret `name`, if it exists; its data is wiped when the result is dropped.
pub async fn get(secrets: &Api<Secret>, name: &str) -> Result<Option<Read>> {
    Ok(secrets.get_opt(name).await?.map(Read))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wiping_zeroes_every_data_value_in_place() {
        let mut secret = Secret {
            data: Some(BTreeMap::from([(
                "key".to_owned(),
                ByteString(b"material".to_vec()),
            )])),
            ..Secret::default()
        };
        wipe(&mut secret);
        let value = &secret.data.as_ref().expect("data")["key"].0;
        assert!(value.iter().all(|byte| *byte == 0) || value.is_empty());
    }

    #[test]
    fn each_key_projects_into_workloads_under_a_manager_of_its_own() {
        assert_ne!(workload_manager("apim"), workload_manager("audit"));
        assert!(workload_manager("apim").starts_with(ENCRYPTION_KEY_MANAGER));
    }
}
