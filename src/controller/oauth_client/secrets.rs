//! The Secrets an OAuthClient owns — the verifier record and the delivery Secret — and
//! the import source it reads: reading them for the decision ([`load`], which hands
//! them to [`super::world`] to be understood), and writing them ([`SecretWriter`]),
//! through the one write path of [`crate::store`].

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta};
use kube::{Client, ResourceExt};

use super::settled::{Kind, Settled, WriteTicket};
use super::world::{
    self, Delivered, ImportSource, IssuedRecord, Observed, RecordedGeneration, Verifier,
    annotations,
};
use crate::crd::OAuthClient;
use crate::crd::oauth_client::{OAuthClientSpec, SecretNames, SecretType};
use crate::crypto::hash::keys;
use crate::crypto::{SecretBytes, VerifierRecord};
use crate::store::keyring::KeyInUse;
use crate::store::keyring_cache::KeyringCache;
use crate::store::{self, CLIENT_LABEL, KEY_LABEL, OAUTH_CLIENT_MANAGER};
use crate::{Error, Result};

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

/// What was read of the Secrets the client writes: only their metadata, which the write
/// path checks ownership and preconditions on; and every object the decision read, with
/// the resourceVersion it read (`None`: absent), or `None` when they cannot all be
/// named (a key that exists but cannot be used).
#[derive(Default)]
pub struct Existing {
    pub verifier: Option<ObjectMeta>,
    pub delivery: Option<ObjectMeta>,
    pub inputs: Option<Vec<(Kind, String, Option<String>)>>,
}

/// What a reconcile knows of its Secrets without reading them: the Secrets it wrote, as
/// the API server returned them, and the Secrets the watch of their namespace knows to
/// be absent.
///
/// A step starts from what the step before it wrote. A write that a concurrent change
/// follows is no loss: that change's watch event brings the client back, and a write
/// from a stale read fails its `resourceVersion` precondition. A Secret taken as absent
/// is only ever created, which fails if it exists after all; it is then marked present,
/// so the retry reads it.
pub struct Known<'a> {
    namespace: &'a str,
    settled: &'a Settled,
    written: std::sync::Mutex<BTreeMap<String, store::Read>>,
}

impl<'a> Known<'a> {
    pub fn new(namespace: &'a str, settled: &'a Settled) -> Self {
        Self {
            namespace,
            settled,
            written: std::sync::Mutex::default(),
        }
    }

    /// Keeps what a write of Secret `name` returned, and records its version as seen. A
    /// create (`existing` is `None`) that
    /// found the Secret there marks it present, so the retry reads it.
    fn record(
        &self,
        ticket: WriteTicket,
        name: &str,
        existing: Option<&ObjectMeta>,
        written: Result<store::Read>,
    ) -> Result<()> {
        match written {
            Ok(secret) => {
                // Seen now, not only when the watch shows it: until then, a reconcile
                // would take our own new Secret as absent.
                let version = secret.resource_version();
                self.settled
                    .wrote(ticket, self.namespace, name, version.as_deref());
                self.lock().insert(name.to_owned(), secret);
                Ok(())
            }
            Err(Error::Kube(kube::Error::Api(status)))
                if existing.is_none() && status.code == 409 =>
            {
                self.settled.present(self.namespace, name);
                Err(Error::Kube(kube::Error::Api(status)))
            }
            Err(error) => Err(error),
        }
    }

    /// Secret `name` as written, once; else absent if the watch knows so; else read
    /// from the cluster.
    async fn take_or_get(&self, secrets: &Api<Secret>, name: &str) -> Result<Option<store::Read>> {
        let written = self.lock().remove(name);
        match written {
            Some(secret) => Ok(Some(secret)),
            None if self.settled.known_absent(self.namespace, name) => Ok(None),
            None => store::get(secrets, name).await,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, store::Read>> {
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Reads everything the decision needs, fresh from the API server or as this reconcile
/// just wrote it (the keyring of an `Encrypted` client from `keyrings` while it holds
/// the current one).
pub async fn load(
    client: &Client,
    keyrings: &KeyringCache,
    resource: &OAuthClient,
    names: SecretNames,
    known: &Known<'_>,
) -> Result<(Observed, Existing)> {
    let namespace = resource.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let spec = &resource.spec;
    let key = match (spec.secret_type, &spec.encryption_key_ref) {
        (SecretType::Encrypted, Some(reference)) => Some(
            store::keyring::load_key(client, &namespace, &reference.name, Some(keyrings)).await?,
        ),
        _ => None,
    };
    let verifier_secret = known.take_or_get(&secrets, &names.verifier).await?;
    let delivery_secret = match spec.import_from {
        None => known.take_or_get(&secrets, &names.delivery).await?,
        Some(_) => None,
    };
    let import_secret = match &spec.import_from {
        Some(import) => store::get(&secrets, &import.secret_name).await?,
        None => None,
    };
    let loaded = Loaded {
        key,
        verifier: verifier_secret.as_ref(),
        delivery: delivery_secret.as_ref(),
        import_source: import_secret.as_ref(),
    };
    let existing = Existing {
        verifier: loaded.verifier.map(|secret| secret.metadata.clone()),
        delivery: loaded.delivery.map(|secret| secret.metadata.clone()),
        inputs: loaded.inputs(&names, spec),
    };
    let observed = loaded.observed(resource, names, &namespace);
    Ok((observed, existing))
}

/// `secret`, when `resource` owns it: the content of someone else's Secret is no
/// record of keyward's.
fn owned<'a>(secret: Option<&'a store::Read>, resource: &OAuthClient) -> Option<&'a Secret> {
    secret
        .filter(|secret| store::is_owned_by(&secret.metadata, resource))
        .map(|secret| &**secret)
}

/// The objects one [`load`] read (`None`: absent, or not read).
struct Loaded<'a> {
    key: Option<std::result::Result<KeyInUse, String>>,
    verifier: Option<&'a store::Read>,
    delivery: Option<&'a store::Read>,
    import_source: Option<&'a store::Read>,
}

impl Loaded<'_> {
    /// What the decision needs of what was read. Secrets someone else owns are not
    /// read for their content, only named as in the way.
    fn observed(self, resource: &OAuthClient, names: SecretNames, namespace: &str) -> Observed {
        // The delivery Secret is named before the verifier when both are in the way.
        let foreign_secret = [self.delivery, self.verifier]
            .into_iter()
            .flatten()
            .find(|secret| !store::is_owned_by(&secret.metadata, resource))
            .map(|secret| secret.name_any());
        let key = self.key.as_ref().and_then(|key| key.as_ref().ok());
        let (verifier, mut invalid_annotation) =
            world::read_verifier(owned(self.verifier, resource), &names, key, namespace);
        let delivery =
            owned(self.delivery, resource).and_then(|secret| match world::delivered(secret) {
                Ok(delivered) => delivered,
                Err(invalid) => {
                    invalid_annotation.get_or_insert(invalid);
                    None
                }
            });
        let import_source = match &resource.spec.import_from {
            None => ImportSource::NotConfigured,
            Some(import) => ImportSource::read(import, self.import_source.map(|secret| &**secret)),
        };
        let status = resource.status.as_ref();
        Observed {
            names,
            verifier,
            delivery,
            import_source,
            status_secret_version: status.and_then(|status| status.secret_version),
            status_rotation_generation: RecordedGeneration::in_status(status),
            foreign_secret,
            invalid_annotation,
            key: self.key,
        }
    }

    /// Every object read, with the resourceVersion it was read at (`None`: absent); or
    /// `None` when a key is missing or cannot be used yet, which its version alone does
    /// not describe (its keyring may be what is missing), so that answer is not
    /// remembered.
    fn inputs(
        &self,
        names: &SecretNames,
        spec: &OAuthClientSpec,
    ) -> Option<Vec<(Kind, String, Option<String>)>> {
        let version =
            |secret: Option<&store::Read>| secret.and_then(|secret| secret.resource_version());
        let mut inputs = Vec::new();
        match &self.key {
            Some(Ok(in_use)) => inputs.push((
                Kind::EncryptionKey,
                in_use.key.name_any(),
                in_use.key.resource_version(),
            )),
            Some(Err(_)) => return None,
            None => {}
        }
        inputs.push((Kind::Secret, names.verifier.clone(), version(self.verifier)));
        match &spec.import_from {
            None => inputs.push((Kind::Secret, names.delivery.clone(), version(self.delivery))),
            Some(import) => inputs.push((
                Kind::Secret,
                import.secret_name.clone(),
                version(self.import_source),
            )),
        }
        Some(inputs)
    }
}

/// The EncryptionKey an encrypted verifier record is sealed under, when its Secret no
/// longer carries that key's label: rotations find the ciphertext they must re-encrypt
/// and count by that label, so a verifier that lost it (anyone who may edit Secrets can
/// remove a label) would be left under a version about to be retired.
pub fn missing_key_label(verifier: &Verifier, meta: Option<&ObjectMeta>) -> Option<String> {
    let Verifier::Present(issued) = verifier else {
        return None;
    };
    let key = issued.record.encryption_key()?;
    let labelled = meta
        .and_then(|meta| meta.labels.as_ref())
        .and_then(|labels| labels.get(KEY_LABEL))
        .is_some_and(|label| label == key);
    (!labelled).then(|| key.to_owned())
}

/// Where one step writes the client's Secrets: their names, what was read of them (the
/// write path checks ownership and preconditions on it), and what the reconcile keeps of
/// what it wrote.
pub struct SecretWriter<'a> {
    pub api: &'a Api<Secret>,
    pub client: &'a OAuthClient,
    pub names: &'a SecretNames,
    pub existing: &'a Existing,
    pub known: &'a Known<'a>,
}

impl SecretWriter<'_> {
    /// Writes the delivery Secret: the client id and the plaintext secret, for the client
    /// application.
    pub async fn delivery(
        &self,
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
            (annotations::SECRET_VERSION.to_owned(), version.to_string()),
            (annotations::WRITTEN_AT.to_owned(), now.to_string()),
        ]);
        let existing = self.existing.delivery.as_ref();
        let ticket = self.known.settled.begin_write();
        let written = self
            .write(
                &self.names.delivery,
                existing,
                "delivery",
                None,
                annotations,
                data,
            )
            .await;
        self.known
            .record(ticket, &self.names.delivery, existing, written)
    }

    /// Writes the verifier record and its bookkeeping.
    pub async fn verifier(&self, record: &VerifierRecord, bookkeeping: &Bookkeeping) -> Result<()> {
        let mut annotations = BTreeMap::from([
            (
                annotations::ROTATION_GENERATION.to_owned(),
                bookkeeping.rotation_generation.to_string(),
            ),
            (
                annotations::ISSUED_AT.to_owned(),
                bookkeeping.issued_at.to_string(),
            ),
            (
                annotations::SECRET_VERSION.to_owned(),
                record.secret_version.to_string(),
            ),
        ]);
        if let Some(deleted_at) = bookkeeping.delivery_deleted_at {
            annotations.insert(
                annotations::DELIVERY_DELETED_AT.to_owned(),
                deleted_at.to_string(),
            );
        }
        // Encrypted records carry their key's label, the default selector of the Secrets a
        // key rotation re-encrypts.
        let key_label = record
            .encryption_key()
            .map(|key| (KEY_LABEL, key.to_owned()));
        let existing = self.existing.verifier.as_ref();
        let ticket = self.known.settled.begin_write();
        let written = self
            .write(
                &self.names.verifier,
                existing,
                "verifier",
                key_label,
                annotations,
                record.to_data(),
            )
            .await;
        self.known
            .record(ticket, &self.names.verifier, existing, written)
    }

    /// Puts the label of `key` back on the verifier, at the resourceVersion it was read at
    /// (a change since fails the write, and the retry reads again).
    pub async fn relabel_verifier(&self, key: &str) -> Result<()> {
        let Some(meta) = self.existing.verifier.as_ref() else {
            return Ok(());
        };
        let patch = serde_json::json!({
            "metadata": {
                "labels": { KEY_LABEL: key },
                "resourceVersion": meta.resource_version,
            }
        });
        let params = kube::api::PatchParams {
            field_manager: Some(OAUTH_CLIENT_MANAGER.to_owned()),
            ..kube::api::PatchParams::default()
        };
        let ticket = self.known.settled.begin_write();
        let written = self
            .api
            .patch(
                &self.names.verifier,
                &params,
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .map(store::Read)
            .map_err(Error::from);
        self.known
            .record(ticket, &self.names.verifier, Some(meta), written)
    }

    /// Deletes the delivery Secret `delivered` was read from, and only that very Secret:
    /// one re-created in between stays. `false`: it was gone or had changed.
    pub async fn delete_delivery(&self, delivered: &Delivered) -> Result<bool> {
        let expired = Secret {
            metadata: ObjectMeta {
                name: Some(self.names.delivery.clone()),
                uid: delivered.uid.clone(),
                resource_version: delivered.resource_version.clone(),
                ..Default::default()
            },
            ..Secret::default()
        };
        store::delete_unchanged(self.api, &expired).await
    }

    /// Writes Secret `name` of the client in `role`, over `existing` as it was read.
    async fn write(
        &self,
        name: &str,
        existing: Option<&ObjectMeta>,
        role: &str,
        extra_label: Option<(&'static str, String)>,
        annotations: BTreeMap<String, String>,
        data: BTreeMap<String, ByteString>,
    ) -> Result<store::Read> {
        let client = self.client;
        let labels = store::labels(
            role,
            [(CLIENT_LABEL, client.name_any())]
                .into_iter()
                .chain(extra_label),
        );
        let secret = store::secret(name, Some(client), labels, annotations, data)?;
        let owns = |meta: &ObjectMeta| store::is_owned_by(meta, client);
        store::write_owned_read_back(self.api, OAUTH_CLIENT_MANAGER, secret, existing, owns)
            .await?
            .ok_or_else(|| Error::SecretNotOwned {
                name: name.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encrypted_verifier_without_its_keys_label_is_found_and_no_other() {
        use crate::controller::oauth_client::world::Opened;
        use crate::crypto::{Credential, HashAlgorithm};
        let record = |current: Credential| {
            Verifier::Present(Box::new(IssuedRecord {
                record: VerifierRecord {
                    client_id: "portal-client".into(),
                    secret_version: 1,
                    current,
                    previous: None,
                },
                opened: Opened::NotEncrypted,
                rotation_generation: 0,
                issued_at: Timestamp::UNIX_EPOCH,
                delivery_deleted_at: None,
            }))
        };
        let envelope = crate::crypto::envelope::Envelope::parse(
            "keyward:v1:apim:1:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA",
        );
        let Ok(envelope) = envelope else {
            panic!("a test envelope parses: {envelope:?}");
        };
        let encrypted = record(Credential::Encrypted(envelope));
        let labelled = |value: &str| ObjectMeta {
            labels: Some(BTreeMap::from([(KEY_LABEL.to_owned(), value.to_owned())])),
            ..ObjectMeta::default()
        };
        assert_eq!(
            missing_key_label(&encrypted, Some(&ObjectMeta::default())),
            Some("apim".to_owned())
        );
        assert_eq!(
            missing_key_label(&encrypted, Some(&labelled("other"))),
            Some("apim".to_owned())
        );
        assert_eq!(missing_key_label(&encrypted, Some(&labelled("apim"))), None);
        let hashed = record(Credential::hashed(HashAlgorithm::Sha256, b"secret"));
        assert_eq!(
            missing_key_label(&hashed, Some(&ObjectMeta::default())),
            None
        );
        assert_eq!(missing_key_label(&Verifier::Absent, None), None);
    }
}
