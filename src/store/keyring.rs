//! The keyring Secret of an EncryptionKey (`<name>-keyring`) and the user Secrets key
//! material is read from (a key source, a key-encryption key).
//!
//! The keyring is the only copy of a key's material, so it outlives its EncryptionKey:
//! it carries no owner reference for the garbage collector to follow, only labels that
//! tie it to the key's name, and an EncryptionKey re-created under that name adopts it.
//! Destroying key material is a deliberate `kubectl delete secret`, never a side effect.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use super::keyring_cache::KeyringCache;
use super::{ENCRYPTION_KEY_MANAGER, KEY_LABEL, MANAGED_BY, MANAGED_BY_VALUE, ROLE_LABEL};
use crate::crd::EncryptionKey;
use crate::crypto::keyring::KeyError;
use crate::crypto::{KeyMaterial, Keyring};
use crate::{Error, Result};

/// The data key of the keyring JSON.
pub const KEYRING_FILE: &str = "keyring.json";
const ROLE: &str = "keyring";

/// Name of the keyring Secret of EncryptionKey `key_name`.
pub fn secret_name(key_name: &str) -> String {
    format!("{key_name}-keyring")
}

/// Whether `secret` is the keyring of EncryptionKey `key_name`: keyward's labels say so.
pub fn is_keyring_of(secret: &Secret, key_name: &str) -> bool {
    let labels = secret.labels();
    labels.get(MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_VALUE)
        && labels.get(ROLE_LABEL).map(String::as_str) == Some(ROLE)
        && labels.get(KEY_LABEL).map(String::as_str) == Some(key_name)
}

/// The keyring Secret as found.
pub enum Stored {
    /// No Secret of that name.
    Absent,
    /// A Secret of that name that is not a keyring of this key.
    Foreign,
    /// The keyring Secret exists but cannot be used.
    Unreadable(KeyError),
    /// The keyring, the Secret's `resourceVersion` (the precondition of an update) and
    /// whether any key in it is stored unwrapped.
    Present {
        keyring: Keyring,
        resource_version: Option<String>,
        unwrapped: bool,
    },
}

/// Reads the keyring of EncryptionKey `key_name`, unwrapping it with `kek`; first drops
/// any owner reference it carries.
pub async fn load(
    secrets: &Api<Secret>,
    key_name: &str,
    kek: Option<&KeyMaterial>,
) -> Result<Stored> {
    let Some(secret) = super::get(secrets, &secret_name(key_name)).await? else {
        return Ok(Stored::Absent);
    };
    if !is_keyring_of(&secret, key_name) {
        return Ok(Stored::Foreign);
    }
    let mut resource_version = secret.resource_version();
    if !secret.owner_references().is_empty() {
        resource_version = retain(secrets, &secret).await?;
    }
    let Some(json) = secret.data.as_ref().and_then(|data| data.get(KEYRING_FILE)) else {
        return Ok(Stored::Unreadable(KeyError::Keyring(format!(
            "it has no {KEYRING_FILE:?} key"
        ))));
    };
    Ok(match Keyring::from_json(&json.0, kek) {
        Ok(keyring) if keyring.name != key_name => Stored::Unreadable(KeyError::Keyring(
            "it belongs to another EncryptionKey".to_owned(),
        )),
        Ok(keyring) => Stored::Present {
            keyring,
            resource_version,
            unwrapped: Keyring::stored_unwrapped(&json.0),
        },
        Err(error) => Stored::Unreadable(error),
    })
}

fn keyring_secret(key_name: &str, keyring: &Keyring, kek: Option<&KeyMaterial>) -> Result<Secret> {
    let json = keyring.to_stored_json(kek).map_err(Error::Key)?;
    let data = BTreeMap::from([(
        KEYRING_FILE.to_owned(),
        ByteString(json.as_bytes().to_vec()),
    )]);
    super::secret::<EncryptionKey>(
        &secret_name(key_name),
        None,
        super::labels(ROLE, [(KEY_LABEL, key_name.to_owned())]),
        BTreeMap::new(),
        data,
    )
}

/// Creates the keyring Secret of EncryptionKey `key_name`. Create, not apply: should one
/// appear concurrently, this fails instead of overwriting it.
pub async fn create(
    secrets: &Api<Secret>,
    key_name: &str,
    keyring: &Keyring,
    kek: Option<&KeyMaterial>,
) -> Result<()> {
    let secret = keyring_secret(key_name, keyring, kek)?;
    super::write_owned(secrets, ENCRYPTION_KEY_MANAGER, secret, None, |_| false).await?;
    Ok(())
}

/// Replaces the keyring of EncryptionKey `key_name` with `keyring`, only if the Secret
/// is still at `resource_version` (what the caller read and decided from). Owner
/// references are dropped, so the keyring outlives the EncryptionKey.
pub async fn update(
    secrets: &Api<Secret>,
    key_name: &str,
    resource_version: Option<String>,
    keyring: &Keyring,
    kek: Option<&KeyMaterial>,
) -> Result<()> {
    let mut secret = keyring_secret(key_name, keyring, kek)?;
    secret.metadata.resource_version = resource_version;
    secret.metadata.owner_references = Some(Vec::new());
    let params = kube::api::PostParams {
        field_manager: Some(ENCRYPTION_KEY_MANAGER.to_owned()),
        ..Default::default()
    };
    let result = secrets
        .replace(&secret_name(key_name), &params, &secret)
        .await;
    super::wipe(&mut secret);
    result?;
    Ok(())
}

/// Drops the owner references of a keyring (written before keyrings were retained, or
/// restored from such a backup), so the garbage collector never takes it with its
/// EncryptionKey — whether or not the keyring can be read. Returns the new
/// `resourceVersion`.
async fn retain(secrets: &Api<Secret>, secret: &Secret) -> Result<Option<String>> {
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": secret.resource_version(), "ownerReferences": null},
    });
    let params = PatchParams {
        field_manager: Some(ENCRYPTION_KEY_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let retained = secrets
        .patch(&secret.name_any(), &params, &Patch::Merge(&patch))
        .await?;
    Ok(retained.resource_version())
}

/// Why key material from a user Secret cannot be used (yet).
#[derive(Debug)]
pub enum KeyProblem {
    /// The Secret does not exist.
    Missing(String),
    /// The Secret has no such key: Secret name, key.
    MissingKey(String, String),
    /// The value is not a 256-bit key.
    Invalid(String, KeyError),
}

/// Reads 32 bytes of key material from `key` of user Secret `name`.
pub async fn read_key(
    secrets: &Api<Secret>,
    name: &str,
    key: &str,
) -> Result<Result<KeyMaterial, KeyProblem>> {
    let Some(secret) = super::get(secrets, name).await? else {
        return Ok(Err(KeyProblem::Missing(name.to_owned())));
    };
    let Some(value) = secret.data.as_ref().and_then(|data| data.get(key)) else {
        return Ok(Err(KeyProblem::MissingKey(name.to_owned(), key.to_owned())));
    };
    Ok(KeyMaterial::parse(&value.0).map_err(|error| KeyProblem::Invalid(name.to_owned(), error)))
}

/// An EncryptionKey as another resource (or a hand tool) uses it: the resource and its
/// keyring.
pub struct KeyInUse {
    pub key: EncryptionKey,
    pub keyring: Keyring,
}

impl KeyInUse {
    /// Whether every ready pod of the key's targets holds `version`: the key reports
    /// `Distributed=True` for its current generation (not for targets it had before)
    /// and its distributed keyring carries that version.
    pub fn distributed(&self, version: i64) -> bool {
        let Some(status) = self.key.status.as_ref() else {
            return false;
        };
        let generation = self.key.metadata.generation;
        let in_sync =
            crate::crd::find_condition(&status.conditions, crate::crd::ConditionType::Distributed)
                .is_some_and(|condition| {
                    crate::crd::is_true(condition) && condition.observed_generation == generation
                });
        in_sync
            && status
                .distribution
                .as_ref()
                .is_some_and(|distribution| distribution.versions.contains(&version))
    }
}

/// Whether `key`'s status lists exactly `keyring`'s versions, states and fingerprints.
fn status_describes(key: &EncryptionKey, keyring: &Keyring) -> bool {
    let Some(status) = &key.status else {
        return false;
    };
    status.versions.len() == keyring.versions.len()
        && status
            .versions
            .iter()
            .zip(&keyring.versions)
            .all(|(shown, held)| {
                shown.version == held.version
                    && shown.state == held.state.as_str()
                    && shown.fingerprint == held.material.fingerprint()
            })
}

/// EncryptionKey `name` in `namespace` and its keyring, for resources that encrypt under
/// it and for the hand tools; `Err` says, for status, why it is not usable yet. With a
/// `cache`, the keyring is read from the cluster only when the cache lacks it.
pub async fn load_key(
    client: &Client,
    namespace: &str,
    name: &str,
    cache: Option<&KeyringCache>,
) -> Result<Result<KeyInUse, String>> {
    let keys: Api<EncryptionKey> = Api::namespaced(client.clone(), namespace);
    let Some(key) = keys.get_opt(name).await? else {
        return Ok(Err(format!(
            "EncryptionKey {name:?} named in spec.encryptionKeyRef does not exist"
        )));
    };
    // A cached keyring serves only while the key's status describes exactly it: in the
    // moment between a rotation's keyring write and its status write, or before the
    // watch has dropped the entry, the keyring is read afresh.
    if let Some(keyring) = cache
        .and_then(|cache| cache.get(namespace, name))
        .filter(|keyring| status_describes(&key, keyring))
    {
        return Ok(Ok(KeyInUse { key, keyring }));
    }
    let mut sources = vec![secret_name(name)];
    sources.extend(
        key.spec
            .key_encryption_key_ref
            .as_ref()
            .map(|reference| reference.name.clone()),
    );
    let since = cache.map(|cache| cache.begin(namespace, &sources));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let kek = match &key.spec.key_encryption_key_ref {
        None => None,
        Some(reference) => match read_key(&secrets, &reference.name, &reference.key).await? {
            Ok(kek) => Some(kek),
            Err(_) => {
                return Ok(Err(format!(
                    "EncryptionKey {name:?} cannot read its key-encryption key"
                )));
            }
        },
    };
    Ok(match load(&secrets, name, kek.as_ref()).await? {
        Stored::Present { keyring, .. } => {
            if let (Some(cache), Some(since)) = (cache, since)
                && status_describes(&key, &keyring)
            {
                cache.insert(since, namespace, name, keyring.clone(), sources);
            }
            Ok(KeyInUse { key, keyring })
        }
        _ => Err(format!("EncryptionKey {name:?} has no usable keyring")),
    })
}
