//! The Secrets an OAuthClient owns — the verifier record and the delivery Secret — and
//! the import source it reads: what is read of them for the decision, and the Secrets
//! it writes, through the one write path of [`crate::store`].

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta};
use kube::{Client, ResourceExt};

use super::decide::{
    Delivered, ImportSource, InvalidAnnotation, IssuedRecord, Observed, Opened, RecordedGeneration,
    Verifier, annotations, parse_annotation,
};
use super::settled::{Kind, Settled, WriteTicket};
use crate::crd::OAuthClient;
use crate::crd::oauth_client::{SecretNames, SecretType};
use crate::crypto::hash::keys;
use crate::crypto::secret::valid_client_id;
use crate::crypto::{SecretBytes, VerifierRecord};
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
    let mut inputs = Vec::new();
    // A key that is missing or cannot be used yet is not described by its version
    // alone (its keyring may be what is missing), so that answer is not remembered.
    let mut memorable = true;
    match &key {
        Some(Ok(in_use)) => inputs.push((
            Kind::EncryptionKey,
            in_use.key.name_any(),
            in_use.key.resource_version(),
        )),
        Some(Err(_)) => memorable = false,
        None => {}
    }
    let mut existing = Existing::default();
    let mut foreign_secret = None;
    let mut invalid_annotation = None;
    let verifier_secret = known.take_or_get(&secrets, &names.verifier).await?;
    let delivery_secret = match spec.import_from {
        None => known.take_or_get(&secrets, &names.delivery).await?,
        Some(_) => None,
    };
    inputs.push((
        Kind::Secret,
        names.verifier.clone(),
        verifier_secret
            .as_ref()
            .and_then(|secret| secret.resource_version()),
    ));
    if spec.import_from.is_none() {
        inputs.push((
            Kind::Secret,
            names.delivery.clone(),
            delivery_secret
                .as_ref()
                .and_then(|secret| secret.resource_version()),
        ));
    }
    for (secret, slot) in [
        (&verifier_secret, &mut existing.verifier),
        (&delivery_secret, &mut existing.delivery),
    ] {
        if let Some(secret) = secret {
            if !store::is_owned_by(&secret.metadata, resource) {
                foreign_secret = Some(secret.name_any());
            }
            *slot = Some(secret.metadata.clone());
        }
    }
    let owned = |secret: Option<store::Read>| {
        secret.filter(|secret| store::is_owned_by(&secret.metadata, resource))
    };
    let verifier = match owned(verifier_secret) {
        None => Verifier::Absent,
        Some(secret) => {
            match VerifierRecord::from_data(secret.data.as_ref().unwrap_or(&BTreeMap::new())) {
                Err(error) => Verifier::Damaged(error),
                Ok(record) => {
                    let (issued, invalid) =
                        issued_record(&secret, record, &names, &key, &namespace);
                    invalid_annotation = invalid;
                    Verifier::Present(Box::new(issued))
                }
            }
        }
    };
    let delivery = match owned(delivery_secret) {
        None => None,
        Some(secret) => match delivered(&secret) {
            Ok(delivered) => delivered,
            Err(invalid) => {
                invalid_annotation.get_or_insert(invalid);
                None
            }
        },
    };
    let import_source = match &spec.import_from {
        None => ImportSource::NotConfigured,
        Some(import) => match store::get(&secrets, &import.secret_name).await? {
            None => {
                inputs.push((Kind::Secret, import.secret_name.clone(), None));
                ImportSource::Missing
            }
            Some(source) => {
                inputs.push((
                    Kind::Secret,
                    import.secret_name.clone(),
                    source.resource_version(),
                ));
                let data = source.data.as_ref();
                let value = |key: &str| data.and_then(|data| data.get(key));
                match value(&import.secret_key) {
                    None => ImportSource::MissingKey(import.secret_key.clone()),
                    Some(secret) => {
                        let client_id = import.client_id_key.as_ref().and_then(|key| {
                            value(key).map(|id| {
                                std::str::from_utf8(&id.0)
                                    .ok()
                                    .filter(|id| valid_client_id(id))
                                    .map(str::to_owned)
                                    .ok_or_else(|| key.clone())
                            })
                        });
                        match client_id.transpose() {
                            Err(key) => ImportSource::InvalidClientId(key),
                            Ok(client_id) => ImportSource::Present {
                                secret: SecretBytes::new(secret.0.clone()),
                                client_id,
                            },
                        }
                    }
                }
            }
        },
    };
    let status_secret_version = resource
        .status
        .as_ref()
        .and_then(|status| status.secret_version);
    let status_rotation_generation = resource.status.as_ref().and_then(|status| {
        Some(RecordedGeneration {
            secret_version: status.secret_version?,
            rotation_generation: status.rotation_generation?,
        })
    });
    existing.inputs = memorable.then_some(inputs);
    let observed = Observed {
        names,
        verifier,
        delivery,
        import_source,
        status_secret_version,
        status_rotation_generation,
        foreign_secret,
        invalid_annotation,
        key,
    };
    Ok((observed, existing))
}

/// The verifier record with its bookkeeping annotations, decrypted when it is encrypted
/// under the key the spec names; and the first annotation that does not parse (its
/// value is then taken as absent, and the decision refuses to act on the record).
fn issued_record(
    secret: &Secret,
    record: VerifierRecord,
    names: &SecretNames,
    key: &Option<std::result::Result<store::keyring::KeyInUse, String>>,
    namespace: &str,
) -> (IssuedRecord, Option<InvalidAnnotation>) {
    let annotations = secret.annotations();
    let name = &names.verifier;
    let mut invalid = None;
    let rotation_generation: i64 = lenient(
        name,
        annotations,
        annotations::ROTATION_GENERATION,
        "is not an integer",
        &mut invalid,
    )
    .unwrap_or(0);
    if rotation_generation < 0 {
        invalid.get_or_insert(InvalidAnnotation {
            secret: name.clone(),
            annotation: annotations::ROTATION_GENERATION,
            problem: "is negative",
        });
    }
    let issued_at = lenient(
        name,
        annotations,
        annotations::ISSUED_AT,
        "is not an RFC 3339 time",
        &mut invalid,
    )
    .or_else(|| secret.creation_timestamp().map(|time| time.0))
    .unwrap_or(Timestamp::UNIX_EPOCH);
    let delivery_deleted_at = lenient(
        name,
        annotations,
        annotations::DELIVERY_DELETED_AT,
        "is not an RFC 3339 time",
        &mut invalid,
    );
    let key = key.as_ref().and_then(|key| key.as_ref().ok());
    let opened = match (record.encryption_key(), key) {
        (Some(sealed_under), Some(key)) if sealed_under == key.keyring.name => {
            match record.opened(&key.keyring, namespace, &names.verifier) {
                Ok(opened) => Opened::Opened(opened),
                Err(_) => Opened::Undecryptable,
            }
        }
        _ => Opened::NotEncrypted,
    };
    let issued = IssuedRecord {
        record,
        opened,
        rotation_generation,
        issued_at,
        delivery_deleted_at,
    };
    (issued, invalid)
}

/// Annotation `key` as `T`; one that does not parse is taken as absent and kept in
/// `invalid` (the first one only).
fn lenient<T: std::str::FromStr>(
    secret: &str,
    annotations: &BTreeMap<String, String>,
    key: &'static str,
    what: &'static str,
    invalid: &mut Option<InvalidAnnotation>,
) -> Option<T> {
    parse_annotation(secret, annotations, key, what).unwrap_or_else(|error| {
        invalid.get_or_insert(error);
        None
    })
}

/// The delivery Secret's content; `None` when it holds no complete credential.
fn delivered(secret: &Secret) -> std::result::Result<Option<Delivered>, InvalidAnnotation> {
    let name = secret.name_any();
    let annotations = secret.annotations();
    let secret_version = parse_annotation(
        &name,
        annotations,
        annotations::SECRET_VERSION,
        "is not an integer",
    )?;
    let written_at = parse_annotation(
        &name,
        annotations,
        annotations::WRITTEN_AT,
        "is not an RFC 3339 time",
    )?;
    let Some(data) = secret.data.as_ref() else {
        return Ok(None);
    };
    let (Some(secret_version), Some(written_at)) = (secret_version, written_at) else {
        return Ok(None);
    };
    // A client id that is not one is an incomplete delivery: it would reach status,
    // events and the verifier record.
    let client_id = data
        .get(keys::CLIENT_ID)
        .and_then(|id| String::from_utf8(id.0.clone()).ok())
        .filter(|id| valid_client_id(id));
    let plaintext = data.get(keys::CLIENT_SECRET);
    Ok(client_id
        .zip(plaintext)
        .map(|(client_id, plaintext)| Delivered {
            secret_version,
            written_at,
            client_id,
            secret: SecretBytes::new(plaintext.0.clone()),
            uid: secret.uid(),
            resource_version: secret.resource_version(),
        }))
}

/// Writes the delivery Secret: the client id and the plaintext secret, for the client
/// application.
#[allow(clippy::too_many_arguments)]
pub async fn write_delivery(
    secrets: &Api<Secret>,
    client: &OAuthClient,
    names: &SecretNames,
    existing: &Existing,
    client_id: &str,
    secret: &SecretBytes,
    version: i64,
    now: Timestamp,
    known: &Known<'_>,
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
    let ticket = known.settled.begin_write();
    let written = write(
        secrets,
        client,
        &names.delivery,
        existing.delivery.as_ref(),
        "delivery",
        None,
        annotations,
        data,
    )
    .await;
    known.record(ticket, &names.delivery, existing.delivery.as_ref(), written)
}

/// Writes the verifier record and its bookkeeping.
pub async fn write_verifier(
    secrets: &Api<Secret>,
    client: &OAuthClient,
    names: &SecretNames,
    existing: &Existing,
    record: &VerifierRecord,
    bookkeeping: &Bookkeeping,
    known: &Known<'_>,
) -> Result<()> {
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
    let ticket = known.settled.begin_write();
    let written = write(
        secrets,
        client,
        &names.verifier,
        existing.verifier.as_ref(),
        "verifier",
        key_label,
        annotations,
        record.to_data(),
    )
    .await;
    known.record(ticket, &names.verifier, existing.verifier.as_ref(), written)
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

/// Puts the label of `key` back on the verifier, at the resourceVersion it was read at
/// (a change since fails the write, and the retry reads again).
pub async fn relabel_verifier(
    secrets: &Api<Secret>,
    names: &SecretNames,
    existing: &Existing,
    key: &str,
    known: &Known<'_>,
) -> Result<()> {
    let Some(meta) = existing.verifier.as_ref() else {
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
    let ticket = known.settled.begin_write();
    let written = secrets
        .patch(&names.verifier, &params, &kube::api::Patch::Merge(&patch))
        .await
        .map(store::Read)
        .map_err(Error::from);
    known.record(ticket, &names.verifier, Some(meta), written)
}

#[allow(clippy::too_many_arguments)]
async fn write(
    secrets: &Api<Secret>,
    client: &OAuthClient,
    name: &str,
    existing: Option<&ObjectMeta>,
    role: &str,
    extra_label: Option<(&'static str, String)>,
    annotations: BTreeMap<String, String>,
    data: BTreeMap<String, ByteString>,
) -> Result<store::Read> {
    let labels = store::labels(
        role,
        [(CLIENT_LABEL, client.name_any())]
            .into_iter()
            .chain(extra_label),
    );
    let secret = store::secret(name, Some(client), labels, annotations, data)?;
    let owns = |meta: &ObjectMeta| store::is_owned_by(meta, client);
    store::write_owned_read_back(secrets, OAUTH_CLIENT_MANAGER, secret, existing, owns)
        .await?
        .ok_or_else(|| Error::SecretNotOwned {
            name: name.to_owned(),
        })
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_encrypted_verifier_without_its_keys_label_is_found_and_no_other() {
        use crate::controller::oauth_client::decide::{IssuedRecord, Opened};
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

    use super::*;
    use crate::controller::oauth_client::decide::{self, Step};
    use crate::controller::options::Policy;
    use crate::crypto::{Credential, HashAlgorithm};
    use proptest::prelude::*;

    /// The annotations keyward reads from its Secrets, each as its own keys name it.
    const READ: [&str; 5] = [
        annotations::SECRET_VERSION,
        annotations::ROTATION_GENERATION,
        annotations::ISSUED_AT,
        annotations::WRITTEN_AT,
        annotations::DELIVERY_DELETED_AT,
    ];

    /// A value: anything at all, or something close to what keyward writes.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            any::<i64>().prop_map(|number| number.to_string()),
            any::<i128>().prop_map(|number| number.to_string()),
            (-377_705_116_800_i64..=253_402_207_200_i64).prop_map(|second| {
                Timestamp::from_second(second)
                    .map_or_else(|_| second.to_string(), |at| at.to_string())
            }),
            "[-+0-9TZ:. ]{0,40}",
        ]
    }

    fn annotated() -> impl Strategy<Value = BTreeMap<String, String>> {
        let key = prop_oneof![
            proptest::sample::select(READ.to_vec()).prop_map(str::to_owned),
            any::<String>(),
        ];
        proptest::collection::btree_map(key, value(), 0..8)
    }

    fn secret(
        name: &str,
        annotations: BTreeMap<String, String>,
        data: BTreeMap<String, ByteString>,
    ) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("apps".to_owned()),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..Secret::default()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever a namespace editor writes into the annotations of a client's verifier
        /// and delivery Secrets, reading them and deciding from them never panics, and a
        /// rotation generation above the spec's is never taken as answered.
        #[test]
        fn any_annotations_are_read_and_decided_on_without_a_panic(
            verifier_annotations in annotated(),
            delivery_annotations in annotated(),
            spec_generation in prop_oneof![0_i64..10, any::<i64>().prop_map(i64::abs)],
            now in -377_705_116_800_i64..=253_402_207_200_i64,
            grace in proptest::option::of(0_u64..2_592_000),
            ttl in proptest::option::of(10_u64..1_000_000),
            period in proptest::option::of(3600_u64..100_000_000),
        ) {
            let spec: crate::crd::oauth_client::OAuthClientSpec = serde_json::from_value(serde_json::json!({
                "rotation": {
                    "generation": spec_generation,
                    "gracePeriod": grace.map(|seconds| format!("{seconds}s")),
                    "period": period.map(|seconds| format!("{seconds}s")),
                },
                "deliverySecret": {"ttl": ttl.map(|seconds| format!("{seconds}s"))},
            }))
            .expect("spec");
            let names = SecretNames::of("portal", &spec);
            let record = VerifierRecord {
                client_id: "portal-client".into(),
                secret_version: 3,
                current: Credential::hashed(HashAlgorithm::Sha256, b"secret"),
                previous: None,
            };
            let verifier = secret(&names.verifier, verifier_annotations, record.to_data());
            let (issued, invalid_annotation) =
                issued_record(&verifier, record, &names, &None, "apps");
            let delivery = secret(
                &names.delivery,
                delivery_annotations,
                BTreeMap::from([
                    (keys::CLIENT_ID.to_owned(), ByteString(b"portal-client".to_vec())),
                    (keys::CLIENT_SECRET.to_owned(), ByteString(b"secret".to_vec())),
                ]),
            );
            let (delivery, invalid_annotation) = match delivered(&delivery) {
                Ok(delivery) => (delivery, invalid_annotation),
                Err(invalid) => (None, invalid_annotation.or(Some(invalid))),
            };
            let above_spec = issued.rotation_generation > spec_generation;
            let observed = decide::Observed {
                names,
                verifier: decide::Verifier::Present(Box::new(issued)),
                delivery,
                import_source: decide::ImportSource::NotConfigured,
                status_secret_version: Some(3),
                status_rotation_generation: None,
                foreign_secret: None,
                invalid_annotation,
                key: None,
            };
            let now = Timestamp::from_second(now).expect("in range");
            let step = decide::next_step(&spec, &observed, Policy::default(), now);
            if above_spec {
                prop_assert!(
                    matches!(&step, Step::Refuse { reason: "AnnotationInvalid", .. }),
                    "{step:?}"
                );
            }
        }
    }
}
