//! What the OAuthClient reconciler knows of the cluster: the verifier record and its
//! bookkeeping, the delivery Secret, the import source, the EncryptionKey and what
//! status last recorded — and how each is read from a Secret, without a cluster.
//!
//! Everything read from a Secret may be hostile (anyone who can edit Secrets in the
//! namespace can write it): an annotation that does not parse is named, never its
//! value, and taken as absent; reading never panics and never decides what to do about
//! it (that is [`super::decide`]'s).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::crd::OAuthClientStatus;
use crate::crd::oauth_client::{ImportSource as ImportFrom, SecretNames};
use crate::crypto::hash::keys;
use crate::crypto::secret::valid_client_id;
use crate::crypto::{Keyring, RecordError, SecretBytes, VerifierRecord};
use crate::store::keyring::KeyInUse;

/// Annotations keyward keeps on its Secrets.
pub mod annotations {
    /// Secret version a delivery Secret holds.
    pub const SECRET_VERSION: &str = "keyward.io/secret-version";
    /// `spec.rotation.generation` when the current secret was issued.
    pub const ROTATION_GENERATION: &str = "keyward.io/rotation-generation";
    /// When the current secret was issued.
    pub const ISSUED_AT: &str = "keyward.io/issued-at";
    /// When a delivery Secret was written.
    pub const WRITTEN_AT: &str = "keyward.io/written-at";
    /// When the delivery Secret was deleted after its TTL.
    pub const DELIVERY_DELETED_AT: &str = "keyward.io/delivery-deleted-at";
}

/// An annotation keyward did not write as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidAnnotation {
    /// The Secret that carries it.
    pub secret: String,
    pub annotation: &'static str,
    /// What is wrong, without the value.
    pub problem: &'static str,
}

/// Reads annotation `key` of `secret` as `T`: absent is `None`, unparsable an error
/// that names the annotation, never its value.
pub fn parse_annotation<T: std::str::FromStr>(
    secret: &str,
    annotations: &BTreeMap<String, String>,
    key: &'static str,
    what: &'static str,
) -> Result<Option<T>, InvalidAnnotation> {
    annotations
        .get(key)
        .map(|value| {
            value.parse().map_err(|_| InvalidAnnotation {
                secret: secret.to_owned(),
                annotation: key,
                problem: what,
            })
        })
        .transpose()
}

/// The verifier Secret as found.
#[derive(Debug)]
pub enum Verifier {
    Absent,
    Damaged(RecordError),
    Present(Box<IssuedRecord>),
}

/// An encrypted record, decrypted with its key.
#[derive(Debug)]
pub enum Opened {
    /// Not encrypted, or under another key than the spec names (a spec change).
    NotEncrypted,
    /// Decrypted; comparisons use it.
    Opened(VerifierRecord),
    /// Encrypted under the spec's key, which cannot decrypt it: altered, moved from
    /// another Secret, or its key version is gone.
    Undecryptable,
}

/// A readable verifier record and the bookkeeping kept beside it.
#[derive(Debug)]
pub struct IssuedRecord {
    pub record: VerifierRecord,
    pub opened: Opened,
    /// `spec.rotation.generation` when the current secret was issued.
    pub rotation_generation: i64,
    pub issued_at: Timestamp,
    /// When the delivery Secret was deleted after its TTL.
    pub delivery_deleted_at: Option<Timestamp>,
}

/// The delivery Secret as found.
#[derive(Debug)]
pub struct Delivered {
    pub secret_version: i64,
    pub client_id: String,
    pub secret: SecretBytes,
    pub written_at: Timestamp,
    /// The Secret's uid and resourceVersion: deleting it after its TTL is conditional on
    /// them, so a Secret re-created in between is never deleted.
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// The import source as found.
#[derive(Debug)]
pub enum ImportSource {
    NotConfigured,
    /// The Secret does not exist (yet).
    Missing,
    /// The Secret exists but lacks the key.
    MissingKey(String),
    /// The client id key holds no valid client id (the key's name).
    InvalidClientId(String),
    Present {
        secret: SecretBytes,
        client_id: Option<String>,
    },
}

/// Everything the decision needs from the cluster.
pub struct Observed {
    /// The names of the Secrets the client writes.
    pub names: SecretNames,
    pub verifier: Verifier,
    pub delivery: Option<Delivered>,
    pub import_source: ImportSource,
    /// Last `status.secretVersion`, so a re-issue after the verifier was deleted never
    /// reuses a version number.
    pub status_secret_version: Option<i64>,
    /// Last `status.rotationGeneration`, with the `status.secretVersion` it was recorded
    /// for: what keyward itself knew the current secret answers.
    pub status_rotation_generation: Option<RecordedGeneration>,
    /// A Secret keyward would write exists but belongs to someone else.
    pub foreign_secret: Option<String>,
    /// An annotation of the verifier or delivery Secret that keyward did not write.
    pub invalid_annotation: Option<InvalidAnnotation>,
    /// For `Encrypted` secrets: the referenced EncryptionKey and its keyring, or why it
    /// is not usable yet.
    pub key: Option<Result<KeyInUse, String>>,
}

/// The `spec.rotation.generation` status recorded as answered by one secret version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordedGeneration {
    pub secret_version: i64,
    pub rotation_generation: i64,
}

impl Observed {
    /// The keyring of the referenced EncryptionKey, when usable.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.key
            .as_ref()
            .and_then(|key| key.as_ref().ok())
            .map(|key| &key.keyring)
    }
}

impl IssuedRecord {
    /// The record to compare presented secrets with: decrypted when it is encrypted.
    pub fn comparable(&self) -> &VerifierRecord {
        match &self.opened {
            Opened::Opened(record) => record,
            Opened::NotEncrypted | Opened::Undecryptable => &self.record,
        }
    }
}

/// The `spec.rotation.generation` that `issued` is known to answer: as status recorded it
/// for this very secret version, else as the verifier's annotation says when that can be
/// keyward's (see [`generation_trusted`]). `None` when neither can be trusted.
pub fn known_generation(
    spec_generation: i64,
    issued: &IssuedRecord,
    observed: &Observed,
) -> Option<i64> {
    recorded_generation(issued, observed)
        .or(generation_trusted(spec_generation, issued, observed)
            .then_some(issued.rotation_generation))
}

/// What status recorded as answered by `issued`'s secret version, if it did.
fn recorded_generation(issued: &IssuedRecord, observed: &Observed) -> Option<i64> {
    observed
        .status_rotation_generation
        .filter(|recorded| recorded.secret_version == issued.record.secret_version)
        .map(|recorded| recorded.rotation_generation)
}

/// Whether the verifier's rotation-generation annotation can be keyward's: keyward writes
/// the spec's counter, which only grows, so it is no later than the spec, or (when the
/// user dropped the counter from the manifest, which the schema cannot refuse) it is what
/// status recorded for this secret.
pub fn generation_trusted(
    spec_generation: i64,
    issued: &IssuedRecord,
    observed: &Observed,
) -> bool {
    issued.rotation_generation <= spec_generation
        || recorded_generation(issued, observed) == Some(issued.rotation_generation)
}

/// The verifier as read from its Secret (`None`: absent, or someone else's): the record
/// with its bookkeeping annotations, decrypted when it is encrypted under `key`, the key
/// the spec names; and the first annotation that does not parse (its value is then
/// taken as absent, and the decision refuses to act on the record).
pub fn read_verifier(
    secret: Option<&Secret>,
    names: &SecretNames,
    key: Option<&KeyInUse>,
    namespace: &str,
) -> (Verifier, Option<InvalidAnnotation>) {
    let Some(secret) = secret else {
        return (Verifier::Absent, None);
    };
    match VerifierRecord::from_data(secret.data.as_ref().unwrap_or(&BTreeMap::new())) {
        Err(error) => (Verifier::Damaged(error), None),
        Ok(record) => {
            let (issued, invalid) = issued_record(secret, record, names, key, namespace);
            (Verifier::Present(Box::new(issued)), invalid)
        }
    }
}

/// `record` with the bookkeeping annotations of its Secret, decrypted when it is
/// encrypted under `key`; and the first annotation that does not parse.
pub fn issued_record(
    secret: &Secret,
    record: VerifierRecord,
    names: &SecretNames,
    key: Option<&KeyInUse>,
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
    let opened = Opened::of(&record, key, namespace, &names.verifier);
    let issued = IssuedRecord {
        record,
        opened,
        rotation_generation,
        issued_at,
        delivery_deleted_at,
    };
    (issued, invalid)
}

impl Opened {
    /// `record` opened with `key` when it is sealed under that very key (the one the
    /// spec names) in the verifier Secret `verifier` of `namespace`.
    fn of(
        record: &VerifierRecord,
        key: Option<&KeyInUse>,
        namespace: &str,
        verifier: &str,
    ) -> Self {
        match (record.encryption_key(), key) {
            (Some(sealed_under), Some(key)) if sealed_under == key.keyring.name => {
                match record.opened(&key.keyring, namespace, verifier) {
                    Ok(opened) => Self::Opened(opened),
                    Err(_) => Self::Undecryptable,
                }
            }
            _ => Self::NotEncrypted,
        }
    }
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
pub fn delivered(secret: &Secret) -> Result<Option<Delivered>, InvalidAnnotation> {
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

impl ImportSource {
    /// The import source `import` names, as `source` holds it (`None`: absent).
    pub fn read(import: &ImportFrom, source: Option<&Secret>) -> Self {
        let Some(source) = source else {
            return Self::Missing;
        };
        let data = source.data.as_ref();
        let value = |key: &str| data.and_then(|data| data.get(key));
        let Some(secret) = value(&import.secret_key) else {
            return Self::MissingKey(import.secret_key.clone());
        };
        let client_id = import
            .client_id_key
            .as_ref()
            .and_then(|key| value(key).map(|id| client_id_in(id).ok_or_else(|| key.clone())));
        match client_id.transpose() {
            Err(key) => Self::InvalidClientId(key),
            Ok(client_id) => Self::Present {
                secret: SecretBytes::new(secret.0.clone()),
                client_id,
            },
        }
    }
}

/// The client id `value` holds, if it is one.
fn client_id_in(value: &ByteString) -> Option<String> {
    std::str::from_utf8(&value.0)
        .ok()
        .filter(|id| valid_client_id(id))
        .map(str::to_owned)
}

impl RecordedGeneration {
    /// The generation `status` recorded, with the secret version it recorded it for.
    pub fn in_status(status: Option<&OAuthClientStatus>) -> Option<Self> {
        let status = status?;
        Some(Self {
            secret_version: status.secret_version?,
            rotation_generation: status.rotation_generation?,
        })
    }
}

/// What the decision and status tests build their worlds from.
#[cfg(test)]
pub mod fixtures {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::crd::oauth_client::OAuthClientSpec;
    use crate::crypto::{Credential, HashAlgorithm};

    /// `second` seconds after 1970.
    pub fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid timestamp")
    }

    /// A spec as its manifest would say it.
    pub fn spec(json: serde_json::Value) -> OAuthClientSpec {
        serde_json::from_value(json).expect("spec parses")
    }

    /// A hashed record of `version`, issued at `issued_at` for `rotation_generation`.
    pub fn issued(version: i64, rotation_generation: i64, issued_at: i64) -> IssuedRecord {
        IssuedRecord {
            record: VerifierRecord {
                client_id: "portal-client".into(),
                secret_version: version,
                current: Credential::hashed(HashAlgorithm::Sha256, b"secret"),
                previous: None,
            },
            opened: Opened::NotEncrypted,
            rotation_generation,
            issued_at: at(issued_at),
            delivery_deleted_at: None,
        }
    }

    /// Client `portal` with `verifier` and nothing else in its namespace.
    pub fn observed(verifier: Verifier) -> Observed {
        Observed {
            names: SecretNames::of("portal", &spec(serde_json::json!({}))),
            verifier,
            delivery: None,
            import_source: ImportSource::NotConfigured,
            status_secret_version: None,
            status_rotation_generation: None,
            foreign_secret: None,
            invalid_annotation: None,
            key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;

    fn secret(annotations: &[(&str, &str)], data: &[(&str, &[u8])]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("portal-client".to_owned()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(key, value)| ((*key).to_owned(), ByteString(value.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn an_annotation_is_absent_parsed_or_named_without_its_value() {
        let annotations = BTreeMap::from([
            (annotations::SECRET_VERSION.to_owned(), "7".to_owned()),
            (annotations::ISSUED_AT.to_owned(), "SECRET-VALUE".to_owned()),
        ]);
        let read = |key| parse_annotation::<i64>("portal-verifier", &annotations, key, "is odd");
        assert_eq!(read(annotations::SECRET_VERSION), Ok(Some(7)));
        assert_eq!(read(annotations::WRITTEN_AT), Ok(None));
        let error = read(annotations::ISSUED_AT).expect_err("does not parse");
        assert_eq!(
            error,
            InvalidAnnotation {
                secret: "portal-verifier".to_owned(),
                annotation: annotations::ISSUED_AT,
                problem: "is odd",
            }
        );
        assert!(!format!("{error:?}").contains("SECRET-VALUE"));
    }

    #[test]
    fn a_delivery_counts_only_when_complete() {
        let annotated = [
            (annotations::SECRET_VERSION, "2"),
            (annotations::WRITTEN_AT, "2026-01-01T00:00:00Z"),
        ];
        let complete = [
            (keys::CLIENT_ID, b"portal-client".as_slice()),
            (keys::CLIENT_SECRET, b"secret".as_slice()),
        ];
        let delivered = delivered(&secret(&annotated, &complete))
            .expect("annotations parse")
            .expect("complete");
        assert_eq!(
            (delivered.secret_version, delivered.client_id.as_str()),
            (2, "portal-client")
        );
        assert_eq!(delivered.secret.expose(), b"secret");
        // No version yet, or a client id that is none: not a delivery.
        let unversioned = secret(&annotated[1..], &complete);
        assert!(matches!(super::delivered(&unversioned), Ok(None)));
        let bad_id = [
            (keys::CLIENT_ID, b"no".as_slice()),
            (keys::CLIENT_SECRET, b"secret".as_slice()),
        ];
        assert!(matches!(
            super::delivered(&secret(&annotated, &bad_id)),
            Ok(None)
        ));
        let hostile = [(annotations::SECRET_VERSION, "two"), annotated[1]];
        let error = super::delivered(&secret(&hostile, &complete)).expect_err("refused");
        assert_eq!(error.annotation, annotations::SECRET_VERSION);
    }

    #[test]
    fn an_import_source_says_what_it_lacks() {
        let import: ImportFrom = serde_json::from_value(serde_json::json!({
            "secretName": "source", "clientIdKey": "clientId"}))
        .expect("import parses");
        assert!(matches!(
            ImportSource::read(&import, None),
            ImportSource::Missing
        ));
        let empty = secret(&[], &[]);
        assert!(matches!(
            ImportSource::read(&import, Some(&empty)),
            ImportSource::MissingKey(key) if key == "clientSecret"
        ));
        let bad_id = secret(&[], &[("clientSecret", b"secret"), ("clientId", b"a b")]);
        assert!(matches!(
            ImportSource::read(&import, Some(&bad_id)),
            ImportSource::InvalidClientId(key) if key == "clientId"
        ));
        let present = secret(
            &[],
            &[("clientSecret", b"secret"), ("clientId", b"portal-client")],
        );
        match ImportSource::read(&import, Some(&present)) {
            ImportSource::Present { secret, client_id } => {
                assert_eq!(secret.expose(), b"secret");
                assert_eq!(client_id.as_deref(), Some("portal-client"));
            }
            other => panic!("expected a present source, got {other:?}"),
        }
    }

    #[test]
    fn a_verifier_is_absent_damaged_or_read_with_its_bookkeeping() {
        let names = SecretNames::of("portal", &fixtures::spec(serde_json::json!({})));
        let (absent, invalid) = read_verifier(None, &names, None, "apps");
        assert!(matches!(absent, Verifier::Absent) && invalid.is_none());
        let (damaged, _) = read_verifier(Some(&secret(&[], &[])), &names, None, "apps");
        assert!(matches!(damaged, Verifier::Damaged(_)), "{damaged:?}");
        let record = fixtures::issued(3, 0, 0).record;
        let mut stored = secret(
            &[
                (annotations::ROTATION_GENERATION, "-1"),
                (annotations::ISSUED_AT, "2026-01-01T00:00:00Z"),
            ],
            &[],
        );
        stored.data = Some(record.to_data());
        let (present, invalid) = read_verifier(Some(&stored), &names, None, "apps");
        let Verifier::Present(issued) = present else {
            panic!("expected a record, got {present:?}");
        };
        assert_eq!(issued.record.secret_version, 3);
        assert_eq!(issued.issued_at.to_string(), "2026-01-01T00:00:00Z");
        assert!(matches!(issued.opened, Opened::NotEncrypted));
        assert_eq!(
            invalid.map(|invalid| (invalid.annotation, invalid.problem)),
            Some((annotations::ROTATION_GENERATION, "is negative"))
        );
    }
}
