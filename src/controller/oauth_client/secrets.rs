//! The Secrets an OAuthClient owns — the verifier record and the delivery Secret — and
//! the import source it reads: names, reads and server-side-applied writes.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::decide::{Delivered, ImportSource, IssuedRecord, Observed, Verifier};
use crate::controller::encryption_key;
use crate::crd::OAuthClient;
use crate::crd::oauth_client::SecretType;
use crate::crypto::hash::keys;
use crate::crypto::{SecretBytes, VerifierRecord};
use crate::{Error, FIELD_MANAGER, Result};

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const CLIENT_LABEL: &str = "keyward.io/oauth-client";
const ROLE_LABEL: &str = "keyward.io/role";
const KEY_LABEL: &str = "keyward.io/encryption-key";
const SECRET_VERSION: &str = "keyward.io/secret-version";
const ROTATION_GENERATION: &str = "keyward.io/rotation-generation";
const ISSUED_AT: &str = "keyward.io/issued-at";
const WRITTEN_AT: &str = "keyward.io/written-at";
const DELIVERY_DELETED_AT: &str = "keyward.io/delivery-deleted-at";

/// Label selector of every Secret keyward manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={}", FIELD_MANAGER)
}

/// Names of the Secrets an OAuthClient writes.
pub struct SecretNames {
    pub verifier: String,
    pub delivery: String,
}

impl SecretNames {
    /// The names from the spec, defaulting to `<name>-verifier` and `<name>-credentials`.
    pub fn of(client: &OAuthClient) -> Self {
        let name = client.name_any();
        let verifier = client
            .spec
            .verifier_secret
            .as_ref()
            .and_then(|secret| secret.name.clone());
        let delivery = client
            .spec
            .delivery_secret
            .as_ref()
            .and_then(|secret| secret.name.clone());
        Self {
            verifier: verifier.unwrap_or_else(|| format!("{name}-verifier")),
            delivery: delivery.unwrap_or_else(|| format!("{name}-credentials")),
        }
    }
}

/// What keyward keeps beside the verifier record, as annotations of its Secret.
pub struct Bookkeeping {
    pub rotation_generation: i64,
    pub issued_at: Timestamp,
    pub delivery_deleted_at: Option<Timestamp>,
}

impl Bookkeeping {
    /// The bookkeeping of an existing record, unchanged.
    pub fn of(issued: &IssuedRecord) -> Self {
        Self {
            rotation_generation: issued.rotation_generation,
            issued_at: issued.issued_at,
            delivery_deleted_at: issued.delivery_deleted_at,
        }
    }
}

/// Reads everything the decision needs, fresh from the API server.
pub async fn load(
    secrets: &Api<Secret>,
    client: &OAuthClient,
    names: &SecretNames,
) -> Result<Observed> {
    let namespace = client.namespace().unwrap_or_default();
    let keyring = match (client.spec.secret_type, &client.spec.encryption_key_ref) {
        (SecretType::Encrypted, Some(reference)) => Some(
            encryption_key::load_keyring(
                &secrets.clone().into_client(),
                &namespace,
                &reference.name,
            )
            .await?,
        ),
        _ => None,
    };
    let usable_keyring = keyring.as_ref().and_then(|keyring| keyring.as_ref().ok());
    let mut foreign_secret = None;
    let mut owned = |secret: Option<Secret>| match secret {
        Some(secret) if !is_owned_by(&secret, client) => {
            foreign_secret = Some(secret.name_any());
            None
        }
        secret => secret,
    };
    let verifier_secret = owned(secrets.get_opt(&names.verifier).await?);
    let delivery_secret = if client.spec.import_from.is_none() {
        owned(secrets.get_opt(&names.delivery).await?)
    } else {
        None
    };
    let verifier = match verifier_secret {
        None => Verifier::Absent,
        Some(secret) => {
            match VerifierRecord::from_data(secret.data.as_ref().unwrap_or(&BTreeMap::new())) {
                Ok(record) => Verifier::Present(Box::new(IssuedRecord {
                    rotation_generation: annotation(&secret, ROTATION_GENERATION)
                        .and_then(|value| value.parse().ok())
                        .unwrap_or(0),
                    issued_at: annotation(&secret, ISSUED_AT)
                        .and_then(|value| value.parse().ok())
                        .or_else(|| secret.creation_timestamp().map(|time| time.0))
                        .unwrap_or(Timestamp::UNIX_EPOCH),
                    delivery_deleted_at: annotation(&secret, DELIVERY_DELETED_AT)
                        .and_then(|value| value.parse().ok()),
                    opened: usable_keyring
                        .filter(|_| record.encryption_key().is_some())
                        .and_then(|keyring| {
                            record.opened(keyring, &namespace, &names.verifier).ok()
                        }),
                    record,
                })),
                Err(error) => Verifier::Damaged(error),
            }
        }
    };
    let delivery = delivery_secret.and_then(|secret| delivered(&secret));
    let import_source = match &client.spec.import_from {
        None => ImportSource::NotConfigured,
        Some(import) => match secrets.get_opt(&import.secret_name).await? {
            None => ImportSource::Missing,
            Some(source) => {
                let data = source.data.unwrap_or_default();
                match data.get(&import.secret_key) {
                    None => ImportSource::MissingKey(import.secret_key.clone()),
                    Some(secret) => ImportSource::Present {
                        secret: SecretBytes::new(secret.0.clone()),
                        client_id: import
                            .client_id_key
                            .as_ref()
                            .and_then(|key| data.get(key))
                            .and_then(|id| String::from_utf8(id.0.clone()).ok()),
                    },
                }
            }
        },
    };
    let status_secret_version = client
        .status
        .as_ref()
        .and_then(|status| status.secret_version);
    Ok(Observed {
        verifier,
        delivery,
        import_source,
        status_secret_version,
        foreign_secret,
        keyring,
    })
}

fn delivered(secret: &Secret) -> Option<Delivered> {
    let data = secret.data.as_ref()?;
    Some(Delivered {
        secret_version: annotation(secret, SECRET_VERSION)?.parse().ok()?,
        written_at: annotation(secret, WRITTEN_AT)?.parse().ok()?,
        client_id: String::from_utf8(data.get(keys::CLIENT_ID)?.0.clone()).ok()?,
        secret: SecretBytes::new(data.get(keys::CLIENT_SECRET)?.0.clone()),
    })
}

fn annotation<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret.annotations().get(key).map(String::as_str)
}

fn is_owned_by(secret: &Secret, client: &OAuthClient) -> bool {
    let uid = client.uid();
    secret
        .owner_references()
        .iter()
        .any(|owner| Some(&owner.uid) == uid.as_ref())
}

/// Writes the delivery Secret: the client id and the plaintext secret, for the client
/// application.
pub async fn write_delivery(
    secrets: &Api<Secret>,
    client: &OAuthClient,
    names: &SecretNames,
    client_id: &str,
    secret: &SecretBytes,
    version: i64,
    now: Timestamp,
) -> Result<()> {
    let data = BTreeMap::from([
        (
            keys::CLIENT_ID.to_owned(),
            ByteString(client_id.as_bytes().to_vec()),
        ),
        (
            keys::CLIENT_SECRET.to_owned(),
            ByteString(secret.expose().to_vec()),
        ),
    ]);
    let annotations = BTreeMap::from([
        (SECRET_VERSION.to_owned(), version.to_string()),
        (WRITTEN_AT.to_owned(), now.to_string()),
    ]);
    apply(
        secrets,
        client,
        &names.delivery,
        "delivery",
        None,
        annotations,
        data,
    )
    .await
}

/// Writes the verifier record and its bookkeeping.
pub async fn write_verifier(
    secrets: &Api<Secret>,
    client: &OAuthClient,
    names: &SecretNames,
    record: &VerifierRecord,
    bookkeeping: &Bookkeeping,
) -> Result<()> {
    let mut annotations = BTreeMap::from([
        (SECRET_VERSION.to_owned(), record.secret_version.to_string()),
        (
            ROTATION_GENERATION.to_owned(),
            bookkeeping.rotation_generation.to_string(),
        ),
        (ISSUED_AT.to_owned(), bookkeeping.issued_at.to_string()),
    ]);
    if let Some(deleted_at) = bookkeeping.delivery_deleted_at {
        annotations.insert(DELIVERY_DELETED_AT.to_owned(), deleted_at.to_string());
    }
    // Encrypted records carry their key's label, the default selector of the Secrets a
    // key rotation re-encrypts.
    let key_label = record
        .encryption_key()
        .map(|key| (KEY_LABEL.to_owned(), key.to_owned()));
    apply(
        secrets,
        client,
        &names.verifier,
        "verifier",
        key_label,
        annotations,
        record.to_data(),
    )
    .await
}

/// Deletes the delivery Secret; already gone is fine.
pub async fn delete_delivery(secrets: &Api<Secret>, name: &str) -> Result<()> {
    match secrets.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

async fn apply(
    secrets: &Api<Secret>,
    client: &OAuthClient,
    name: &str,
    role: &str,
    extra_label: Option<(String, String)>,
    annotations: BTreeMap<String, String>,
    data: BTreeMap<String, ByteString>,
) -> Result<()> {
    let owner = client
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectField {
            kind: "OAuthClient",
            field: "metadata.uid",
        })?;
    let labels = BTreeMap::from([
        (MANAGED_BY.to_owned(), FIELD_MANAGER.to_owned()),
        (CLIENT_LABEL.to_owned(), client.name_any()),
        (ROLE_LABEL.to_owned(), role.to_owned()),
    ]);
    let labels: BTreeMap<String, String> = labels.into_iter().chain(extra_label).collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    secrets.patch(name, &params, &Patch::Apply(&secret)).await?;
    Ok(())
}
