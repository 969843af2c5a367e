//! The Secrets an EncryptionKey owns — the keyring and the rendered distribution Secret —
//! and the user Secrets it reads (key source, key-encryption key).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};

use super::Problem;
use super::render::Rendered;
use crate::crd::EncryptionKey;
use crate::crypto::keyring::KeyError;
use crate::crypto::{KeyMaterial, Keyring};
use crate::{Error, FIELD_MANAGER, Result};

const KEYRING_FILE: &str = "keyring.json";
const KEY_LABEL: &str = "keyward.io/encryption-key";

pub use crate::controller::oauth_client::managed_selector;

/// Names of the Secrets an EncryptionKey writes.
pub struct SecretNames {
    pub keyring: String,
    pub distribution: String,
}

impl SecretNames {
    pub fn of(key: &EncryptionKey) -> Self {
        let name = key.name_any();
        Self {
            keyring: format!("{name}-keyring"),
            distribution: format!("{name}-distribution"),
        }
    }
}

/// Why key material from a user Secret cannot be used yet.
pub enum KeyProblem {
    Missing(String),
    MissingKey(String, String),
    Invalid(String, KeyError),
}

impl KeyProblem {
    /// As a status problem about `what` (`Source`, `KeyEncryptionKey`) named by `field`.
    pub fn named(self, what: &'static str, field: &str) -> Problem {
        let (reason, message) = match self {
            Self::Missing(name) => (
                if what == "Source" {
                    "SourceSecretMissing"
                } else {
                    "KeyEncryptionKeySecretMissing"
                },
                format!(
                    "waiting for Secret {name:?} named in {field}; no key is generated in its place"
                ),
            ),
            Self::MissingKey(name, key) => (
                if what == "Source" {
                    "SourceKeyMissing"
                } else {
                    "KeyEncryptionKeyMissing"
                },
                format!("Secret {name:?} named in {field} has no key {key:?}"),
            ),
            Self::Invalid(name, error) => (
                if what == "Source" {
                    "SourceKeyInvalid"
                } else {
                    "KeyEncryptionKeyInvalid"
                },
                format!("Secret {name:?} named in {field}: {error}"),
            ),
        };
        Problem {
            reason,
            message,
            degraded: false,
        }
    }
}

/// Reads 32 bytes of key material from `key` of Secret `name`.
pub async fn read_key(
    secrets: &Api<Secret>,
    name: &str,
    key: &str,
) -> Result<Result<KeyMaterial, KeyProblem>> {
    let Some(secret) = secrets.get_opt(name).await? else {
        return Ok(Err(KeyProblem::Missing(name.to_owned())));
    };
    let Some(value) = secret.data.as_ref().and_then(|data| data.get(key)) else {
        return Ok(Err(KeyProblem::MissingKey(name.to_owned(), key.to_owned())));
    };
    Ok(KeyMaterial::parse(&value.0).map_err(|error| KeyProblem::Invalid(name.to_owned(), error)))
}

/// The keyring Secret as found.
pub enum StoredKeyring {
    Absent,
    Foreign,
    Unreadable(KeyError),
    Present(Keyring),
}

/// Reads the keyring Secret, unwrapping with `kek`.
pub async fn read_keyring(
    secrets: &Api<Secret>,
    key: &EncryptionKey,
    name: &str,
    kek: Option<&KeyMaterial>,
) -> Result<StoredKeyring> {
    let Some(secret) = secrets.get_opt(name).await? else {
        return Ok(StoredKeyring::Absent);
    };
    if !is_owned_by(&secret, key) {
        return Ok(StoredKeyring::Foreign);
    }
    let Some(json) = secret.data.as_ref().and_then(|data| data.get(KEYRING_FILE)) else {
        return Ok(StoredKeyring::Unreadable(KeyError::Keyring(format!(
            "no {KEYRING_FILE:?} key"
        ))));
    };
    Ok(match Keyring::from_json(&json.0, kek) {
        Ok(keyring) => StoredKeyring::Present(keyring),
        Err(error) => StoredKeyring::Unreadable(error),
    })
}

/// Creates the keyring Secret. Create, not apply: should one appear concurrently, this
/// fails instead of overwriting it.
pub async fn create_keyring(
    secrets: &Api<Secret>,
    key: &EncryptionKey,
    name: &str,
    keyring: &Keyring,
    kek: Option<&KeyMaterial>,
) -> Result<()> {
    let json = keyring.to_stored_json(kek).map_err(Error::Key)?;
    let secret = owned_secret(
        key,
        name,
        "keyring",
        BTreeMap::from([(
            KEYRING_FILE.to_owned(),
            ByteString(json.as_bytes().to_vec()),
        )]),
    )?;
    secrets
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PostParams::default()
            },
            &secret,
        )
        .await?;
    Ok(())
}

/// Writes the distribution Secret pods mount, unless it already holds `rendered`.
pub async fn write_distribution(
    secrets: &Api<Secret>,
    key: &EncryptionKey,
    names: &SecretNames,
    rendered: &Rendered,
) -> Result<()> {
    let data = BTreeMap::from([(
        rendered.file_name.to_owned(),
        ByteString(rendered.content.as_bytes().to_vec()),
    )]);
    if let Some(existing) = secrets.get_opt(&names.distribution).await?
        && existing.data.as_ref() == Some(&data)
        && is_owned_by(&existing, key)
    {
        return Ok(());
    }
    let secret = owned_secret(key, &names.distribution, "distribution", data)?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    secrets
        .patch(&names.distribution, &params, &Patch::Apply(&secret))
        .await?;
    Ok(())
}

fn owned_secret(
    key: &EncryptionKey,
    name: &str,
    role: &str,
    data: BTreeMap<String, ByteString>,
) -> Result<Secret> {
    let owner = key
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectField {
            kind: "EncryptionKey",
            field: "metadata.uid",
        })?;
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            FIELD_MANAGER.to_owned(),
        ),
        (KEY_LABEL.to_owned(), key.name_any()),
        ("keyward.io/role".to_owned(), role.to_owned()),
    ]);
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    })
}

fn is_owned_by(secret: &Secret, key: &EncryptionKey) -> bool {
    let uid = key.uid();
    secret
        .owner_references()
        .iter()
        .any(|owner| Some(&owner.uid) == uid.as_ref())
}
