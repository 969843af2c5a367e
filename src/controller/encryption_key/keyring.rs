//! The keyring Secret's changes: creating it with version 1, storing it again wrapped
//! under a key-encryption key added later, and storing the shape a rotation's phase
//! needs. The keyring is created once and never regenerated; every later write carries
//! the resource version it was read at, so a keyring changed in between is never
//! written over.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;

use super::reasons;
use crate::controller::context::{Context, Notice};
use crate::crd::EncryptionKey;
use crate::crypto::{KeyMaterial, Keyring};
use crate::store::keyring as keyring_store;
use crate::{Error, Result};

/// Creates the keyring with version 1 from `material`, or from fresh material.
pub async fn create(
    context: &Context,
    key: &EncryptionKey,
    secrets: &Api<Secret>,
    material: Option<KeyMaterial>,
    kek: Option<&KeyMaterial>,
    now: Timestamp,
) -> Result<Keyring> {
    let (material, origin) = match material {
        Some(material) => {
            let source = key
                .spec
                .source
                .as_ref()
                .map(|source| source.secret_ref.name.as_str())
                .unwrap_or_default();
            (material, format!("taken from Secret {source:?}"))
        }
        None => (
            KeyMaterial::generate()?,
            "generated from the operating system's CSPRNG".to_owned(),
        ),
    };
    let name = key.name_any();
    let keyring = Keyring::new(&name, material, now);
    keyring_store::create(secrets, &name, &keyring, kek).await?;
    let fingerprint = keyring
        .primary()
        .map_err(Error::Key)?
        .material
        .fingerprint();
    let note = format!(
        "created key version 1 (fingerprint {fingerprint}), {origin}, in Secret {:?}",
        keyring_store::secret_name(&name)
    );
    context
        .publish(
            key,
            Notice::normal(reasons::KEY_CREATED, reasons::CREATE, note),
        )
        .await;
    Ok(keyring)
}

/// Stores `keyring`, read in the clear at `resource_version`, again wrapped under the
/// key-encryption key `spec.keyEncryptionKeyRef` names.
pub async fn wrap(
    context: &Context,
    key: &EncryptionKey,
    secrets: &Api<Secret>,
    keyring: &Keyring,
    resource_version: Option<String>,
    kek: Option<&KeyMaterial>,
) -> Result<()> {
    let name = key.name_any();
    keyring_store::update(secrets, &name, resource_version, keyring, kek).await?;
    let note = format!(
        "stored the keyring in Secret {:?} wrapped under spec.keyEncryptionKeyRef",
        keyring_store::secret_name(&name)
    );
    context
        .publish(
            key,
            Notice::normal(reasons::KEYRING_WRAPPED, reasons::WRAP, note),
        )
        .await;
    Ok(())
}
