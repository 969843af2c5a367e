//! Hashing client secrets and verifying presented secrets against a verifier record.
//!
//! A verifier record is self-describing: it names the algorithm that produced its hash,
//! so records made under an older default keep verifying after the default changes (the
//! per-record form of Apigee's "fallback algorithm"). During a grace period it also
//! holds the previous credential and when that stops verifying.
//!
//! Digests are unsalted, as the API managers that read these records compute them:
//! client secrets are high-entropy random strings, not passwords.
//!
//! A hashed record also carries the current secret's digest exactly as WSO2 API Manager
//! stores it (`{"hash":"<hex>","algorithm":"SHA-256"}`, docs/wso2-interop.md §5), so it
//! can be copied into WSO2's database as is. That text is derived from the record's own
//! hash and is checked against it on every read, never trusted on its own.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::jiff::Timestamp;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;

use super::SecretBytes;
use super::envelope::{Context, Envelope, EnvelopeError};
use super::keyring::Keyring;

/// A hash algorithm of verifier records. The resources name the same set
/// (`crd::oauth_client::HashAlgorithm`) and convert to this one, so the cryptography
/// does not depend on the API types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    Sha256,
    Sha384,
    Sha512,
    /// Legacy, kept for old verifiers.
    Sha1,
    /// Legacy, kept for old verifiers.
    Md5,
}

impl HashAlgorithm {
    /// Every algorithm, strongest first.
    pub const ALL: [Self; 5] = [
        Self::Sha256,
        Self::Sha384,
        Self::Sha512,
        Self::Sha1,
        Self::Md5,
    ];

    /// Whether the algorithm is kept only for legacy verifiers.
    pub fn is_legacy(self) -> bool {
        matches!(self, Self::Sha1 | Self::Md5)
    }

    /// The name as verifier records and manifests write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "SHA-256",
            Self::Sha384 => "SHA-384",
            Self::Sha512 => "SHA-512",
            Self::Sha1 => "SHA-1",
            Self::Md5 => "MD5",
        }
    }
}

/// Keys of a verifier record in a Secret's `data`.
pub mod keys {
    pub const CLIENT_ID: &str = "clientId";
    pub const SECRET_VERSION: &str = "secretVersion";
    pub const ALGORITHM: &str = "algorithm";
    pub const HASH: &str = "hash";
    pub const CLIENT_SECRET: &str = "clientSecret";
    pub const PREVIOUS_ALGORITHM: &str = "previousAlgorithm";
    pub const PREVIOUS_HASH: &str = "previousHash";
    pub const PREVIOUS_CLIENT_SECRET: &str = "previousClientSecret";
    pub const ENCRYPTED_CLIENT_SECRET: &str = "encryptedClientSecret";
    pub const PREVIOUS_ENCRYPTED_CLIENT_SECRET: &str = "previousEncryptedClientSecret";
    pub const PREVIOUS_EXPIRES_AT: &str = "previousExpiresAt";
    /// The current secret's hash as WSO2 stores it (see [`super::wso2_record`]). Only in
    /// hashed records, and only for the current secret: WSO2 keeps one secret per
    /// application, so a previous one has nowhere to go there.
    pub const WSO2_HASHED_SECRET: &str = "wso2HashedSecret";
}

/// WSO2's stored form of a hashed client secret. Serialized with serde_json, which writes
/// fields in declaration order and no whitespace: `hash` first, then `algorithm`, as
/// org.json 20250517 writes them for WSO2. Neither value ever needs escaping (lowercase
/// hex, and the algorithm names of [`HashAlgorithm::as_str`]).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Wso2Record<'a> {
    hash: &'a str,
    algorithm: &'a str,
}

/// The JSON text WSO2 API Manager stores for a secret whose `algorithm` digest is
/// `digest`: `{"hash":"<lowercase hex>","algorithm":"<name>"}`, byte for byte. WSO2
/// writes its configured algorithm name verbatim; keyward's names are Java's
/// `MessageDigest` names, which is what WSO2 is configured with, legacy ones included.
pub fn wso2_record(algorithm: HashAlgorithm, digest: &[u8]) -> Vec<u8> {
    let hash = hex::encode(digest);
    let record = Wso2Record {
        hash: &hash,
        algorithm: algorithm.as_str(),
    };
    // Two string fields: serializing to memory cannot fail.
    serde_json::to_vec(&record).unwrap_or_default()
}

/// Reads a record as WSO2 stores it. Strict, as WSO2's own comparison is: anything but the
/// exact bytes [`wso2_record`] writes for its hash and algorithm is refused, so a record
/// accepted here is one WSO2 would match. Errors name [`keys::WSO2_HASHED_SECRET`], never
/// the text (which may be anything a hostile writer put there).
pub fn parse_wso2_record(text: &[u8]) -> Result<Credential, RecordError> {
    let invalid = |reason| RecordError::Invalid {
        key: keys::WSO2_HASHED_SECRET,
        reason,
    };
    let record: Wso2Record =
        serde_json::from_slice(text).map_err(|_| invalid("not WSO2's hashed-secret JSON"))?;
    let algorithm = parse_algorithm(record.algorithm).ok_or(RecordError::UnknownAlgorithm {
        key: keys::WSO2_HASHED_SECRET,
    })?;
    let digest = hex::decode(record.hash).map_err(|_| invalid("not hex"))?;
    if digest.len() != digest_len(algorithm) {
        return Err(invalid("wrong length for its algorithm"));
    }
    if wso2_record(algorithm, &digest) != text {
        return Err(invalid("not byte for byte what WSO2 writes"));
    }
    Ok(Credential::Hashed { algorithm, digest })
}

/// The digest of `data` under `algorithm`.
pub fn digest(algorithm: HashAlgorithm, data: &[u8]) -> Vec<u8> {
    match algorithm {
        HashAlgorithm::Sha256 => Sha256::digest(data).to_vec(),
        HashAlgorithm::Sha384 => Sha384::digest(data).to_vec(),
        HashAlgorithm::Sha512 => Sha512::digest(data).to_vec(),
        HashAlgorithm::Sha1 => Sha1::digest(data).to_vec(),
        HashAlgorithm::Md5 => Md5::digest(data).to_vec(),
    }
}

/// Length in bytes of a digest of `algorithm`.
fn digest_len(algorithm: HashAlgorithm) -> usize {
    match algorithm {
        HashAlgorithm::Sha256 => 32,
        HashAlgorithm::Sha384 => 48,
        HashAlgorithm::Sha512 => 64,
        HashAlgorithm::Sha1 => 20,
        HashAlgorithm::Md5 => 16,
    }
}

/// What the verifier keeps of one secret.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A digest of the secret and the algorithm that made it.
    Hashed {
        algorithm: HashAlgorithm,
        digest: Vec<u8>,
    },
    /// The secret itself, for verifiers allowed plaintext by policy.
    Plaintext(SecretBytes),
    /// The secret as AES-256-GCM ciphertext under an EncryptionKey, for verifiers that
    /// need it back. Verifying needs the keyring: see [`VerifierRecord::opened`].
    Encrypted(Envelope),
}

impl Credential {
    /// The credential that keeps `secret` hashed under `algorithm`.
    pub fn hashed(algorithm: HashAlgorithm, secret: &[u8]) -> Self {
        Self::Hashed {
            algorithm,
            digest: digest(algorithm, secret),
        }
    }

    /// Whether `presented` is the secret this credential keeps, compared in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        match self {
            Self::Hashed {
                algorithm,
                digest: expected,
            } => digest(*algorithm, presented)
                .as_slice()
                .ct_eq(expected.as_slice())
                .into(),
            Self::Plaintext(secret) => secret.ct_eq(presented),
            Self::Encrypted(_) => false,
        }
    }

    /// The credential that keeps `secret` encrypted under the keyring's primary version,
    /// bound to the verifier Secret `secret_name` in `namespace`.
    pub fn encrypted(
        keyring: &Keyring,
        namespace: &str,
        secret_name: &str,
        secret: &[u8],
    ) -> Result<Self, EnvelopeError> {
        Ok(Self::Encrypted(Envelope::seal(
            keyring,
            &context(namespace, secret_name),
            secret,
        )?))
    }

    /// The algorithm of a hashed credential.
    pub fn algorithm(&self) -> Option<HashAlgorithm> {
        match self {
            Self::Hashed { algorithm, .. } => Some(*algorithm),
            Self::Plaintext(_) | Self::Encrypted(_) => None,
        }
    }
}

/// The credential of the secret before the last rotation, and when it stops verifying.
#[derive(Clone, Debug)]
pub struct PreviousCredential {
    pub credential: Credential,
    pub expires_at: Timestamp,
}

/// A verifier record: what an API manager needs to check a client's secret.
#[derive(Clone, Debug)]
pub struct VerifierRecord {
    pub client_id: String,
    /// Increases by one with each new secret.
    pub secret_version: i64,
    pub current: Credential,
    pub previous: Option<PreviousCredential>,
}

/// The outcome of checking a presented secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The current secret.
    Current,
    /// The previous secret, inside its grace period.
    Previous,
    /// Neither.
    Rejected,
}

impl VerifierRecord {
    /// Checks `presented` against the current credential and, until it expires at `now`,
    /// the previous one. Both comparisons always run, in constant time.
    pub fn verify(&self, presented: &[u8], now: Timestamp) -> Verdict {
        let current = self.current.matches(presented);
        let previous = self.previous.as_ref().is_some_and(|previous| {
            previous.credential.matches(presented) & (now < previous.expires_at)
        });
        match (current, previous) {
            (true, _) => Verdict::Current,
            (false, true) => Verdict::Previous,
            (false, false) => Verdict::Rejected,
        }
    }

    /// The record with encrypted credentials decrypted, ready to [`verify`](Self::verify).
    /// `namespace` and `secret_name` locate the verifier Secret, which the ciphertext is
    /// bound to.
    pub fn opened(
        &self,
        keyring: &Keyring,
        namespace: &str,
        secret_name: &str,
    ) -> Result<Self, EnvelopeError> {
        let open = |credential: &Credential| match credential {
            Credential::Encrypted(envelope) => Ok::<_, EnvelopeError>(Credential::Plaintext(
                envelope.open(keyring, &context(namespace, secret_name))?,
            )),
            other => Ok(other.clone()),
        };
        let previous = match &self.previous {
            Some(previous) => Some(PreviousCredential {
                credential: open(&previous.credential)?,
                expires_at: previous.expires_at,
            }),
            None => None,
        };
        Ok(Self {
            current: open(&self.current)?,
            previous,
            ..self.clone()
        })
    }

    /// The EncryptionKey an encrypted record depends on.
    pub fn encryption_key(&self) -> Option<&str> {
        match &self.current {
            Credential::Encrypted(envelope) => Some(&envelope.key_name),
            _ => None,
        }
    }

    /// The record as Secret `data`.
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        let mut put = |key: &str, value: Vec<u8>| {
            data.insert(key.to_owned(), ByteString(value));
        };
        put(keys::CLIENT_ID, self.client_id.clone().into_bytes());
        put(
            keys::SECRET_VERSION,
            self.secret_version.to_string().into_bytes(),
        );
        put_credential(&mut put, &self.current, CURRENT);
        if let Credential::Hashed { algorithm, digest } = &self.current {
            put(keys::WSO2_HASHED_SECRET, wso2_record(*algorithm, digest));
        }
        if let Some(previous) = &self.previous {
            put_credential(&mut put, &previous.credential, PREVIOUS);
            put(
                keys::PREVIOUS_EXPIRES_AT,
                previous.expires_at.to_string().into_bytes(),
            );
        }
        data
    }

    /// Parses a record from Secret `data`, strictly: anything missing or malformed is an
    /// error naming the key.
    pub fn from_data(data: &BTreeMap<String, ByteString>) -> Result<Self, RecordError> {
        let client_id =
            text(data, keys::CLIENT_ID)?.ok_or(RecordError::Missing(keys::CLIENT_ID))?;
        if !super::secret::valid_client_id(&client_id) {
            return Err(RecordError::Invalid {
                key: keys::CLIENT_ID,
                reason: "not a client id (8 to 255 characters of A-Z a-z 0-9 . _ ~ -)",
            });
        }
        let version =
            text(data, keys::SECRET_VERSION)?.ok_or(RecordError::Missing(keys::SECRET_VERSION))?;
        let secret_version = version
            .parse::<i64>()
            .ok()
            .filter(|version| *version >= 1)
            .ok_or(RecordError::Invalid {
                key: keys::SECRET_VERSION,
                reason: "not a positive integer",
            })?;
        let current = read_credential(data, CURRENT)?.ok_or(RecordError::Missing(keys::HASH))?;
        check_wso2_record(data, &current)?;
        let previous = match read_credential(data, PREVIOUS)? {
            None => None,
            Some(credential) => {
                let expires_at = text(data, keys::PREVIOUS_EXPIRES_AT)?
                    .ok_or(RecordError::Missing(keys::PREVIOUS_EXPIRES_AT))?
                    .parse::<Timestamp>()
                    .map_err(|_| RecordError::Invalid {
                        key: keys::PREVIOUS_EXPIRES_AT,
                        reason: "not an RFC 3339 timestamp",
                    })?;
                Some(PreviousCredential {
                    credential,
                    expires_at,
                })
            }
        };
        Ok(Self {
            client_id,
            secret_version,
            current,
            previous,
        })
    }
}

/// The data keys of one credential slot.
struct Slot {
    algorithm: &'static str,
    hash: &'static str,
    secret: &'static str,
    encrypted: &'static str,
}

const CURRENT: Slot = Slot {
    algorithm: keys::ALGORITHM,
    hash: keys::HASH,
    secret: keys::CLIENT_SECRET,
    encrypted: keys::ENCRYPTED_CLIENT_SECRET,
};

const PREVIOUS: Slot = Slot {
    algorithm: keys::PREVIOUS_ALGORITHM,
    hash: keys::PREVIOUS_HASH,
    secret: keys::PREVIOUS_CLIENT_SECRET,
    encrypted: keys::PREVIOUS_ENCRYPTED_CLIENT_SECRET,
};

/// Where an encrypted credential lives. Current and previous share the field, so a
/// rotation moves the ciphertext between slots without re-encrypting it.
fn context<'a>(namespace: &'a str, secret_name: &'a str) -> Context<'a> {
    Context {
        namespace,
        name: secret_name,
        field: keys::CLIENT_SECRET,
    }
}

/// The associated-data field an envelope stored under `data_key` of a Secret is bound
/// to. A verifier record keeps its current and previous ciphertext under
/// `encryptedClientSecret` and `previousEncryptedClientSecret`, both sealed for
/// `clientSecret` (see [`Credential::encrypted`]), so a rotation of the client secret moves ciphertext
/// between the two without re-encrypting it. Every other key is bound to its own name,
/// as `keyward encrypt --context NAMESPACE/NAME/FIELD` seals it.
pub fn envelope_field(data_key: &str) -> &str {
    match data_key {
        keys::ENCRYPTED_CLIENT_SECRET | keys::PREVIOUS_ENCRYPTED_CLIENT_SECRET => {
            keys::CLIENT_SECRET
        }
        other => other,
    }
}

fn put_credential(put: &mut impl FnMut(&str, Vec<u8>), credential: &Credential, slot: Slot) {
    match credential {
        Credential::Hashed { algorithm, digest } => {
            put(slot.algorithm, algorithm.as_str().as_bytes().to_vec());
            put(slot.hash, hex::encode(digest).into_bytes());
        }
        Credential::Plaintext(secret) => put(slot.secret, secret.expose().to_vec()),
        Credential::Encrypted(envelope) => put(slot.encrypted, envelope.to_string().into_bytes()),
    }
}

fn read_credential(
    data: &BTreeMap<String, ByteString>,
    slot: Slot,
) -> Result<Option<Credential>, RecordError> {
    let forms = [slot.hash, slot.secret, slot.encrypted]
        .into_iter()
        .filter(|key| data.contains_key(*key))
        .count();
    if forms > 1 {
        return Err(RecordError::Invalid {
            key: slot.secret,
            reason: "present beside another form of the credential",
        });
    }
    if let Some(secret) = data.get(slot.secret) {
        return Ok(Some(Credential::Plaintext(SecretBytes::new(
            secret.0.clone(),
        ))));
    }
    if let Some(envelope) = text(data, slot.encrypted)? {
        let envelope = Envelope::parse(&envelope).map_err(|_| RecordError::Invalid {
            key: slot.encrypted,
            reason: "not a keyward envelope",
        })?;
        return Ok(Some(Credential::Encrypted(envelope)));
    }
    if !data.contains_key(slot.hash) {
        return Ok(None);
    }
    let name = text(data, slot.algorithm)?.ok_or(RecordError::Missing(slot.algorithm))?;
    let algorithm = parse_algorithm(&name).ok_or(RecordError::UnknownAlgorithm {
        key: slot.algorithm,
    })?;
    let encoded = text(data, slot.hash)?.ok_or(RecordError::Missing(slot.hash))?;
    let digest = hex::decode(&encoded).map_err(|_| RecordError::Invalid {
        key: slot.hash,
        reason: "not hex",
    })?;
    if digest.len() != digest_len(algorithm) {
        return Err(RecordError::Invalid {
            key: slot.hash,
            reason: "wrong length for its algorithm",
        });
    }
    Ok(Some(Credential::Hashed { algorithm, digest }))
}

/// A record's WSO2 form, when present, must be exactly what its own hash yields: it is
/// derived data, and a copy that disagrees would have WSO2 accept another secret than
/// keyward does. Absent is fine (records written before it existed gain it on their
/// next write). A non-hashed record has no digest to show, so the key there is refused.
fn check_wso2_record(
    data: &BTreeMap<String, ByteString>,
    current: &Credential,
) -> Result<(), RecordError> {
    let Some(stored) = data.get(keys::WSO2_HASHED_SECRET) else {
        return Ok(());
    };
    let Credential::Hashed { algorithm, digest } = current else {
        return Err(RecordError::Invalid {
            key: keys::WSO2_HASHED_SECRET,
            reason: "present in a record that is not hashed",
        });
    };
    let expected = wso2_record(*algorithm, digest);
    if bool::from(expected.as_slice().ct_eq(stored.0.as_slice())) {
        Ok(())
    } else {
        Err(RecordError::Invalid {
            key: keys::WSO2_HASHED_SECRET,
            reason: "not the record's hash as WSO2 stores it",
        })
    }
}

fn text(
    data: &BTreeMap<String, ByteString>,
    key: &'static str,
) -> Result<Option<String>, RecordError> {
    data.get(key)
        .map(|value| {
            String::from_utf8(value.0.clone()).map_err(|_| RecordError::Invalid {
                key,
                reason: "not UTF-8",
            })
        })
        .transpose()
}

/// The algorithm named `name` as records write it (`SHA-256`, …, `MD5`).
pub fn parse_algorithm(name: &str) -> Option<HashAlgorithm> {
    HashAlgorithm::ALL
        .into_iter()
        .find(|algorithm| algorithm.as_str() == name)
}

/// A verifier record that cannot be read. Messages name the key, never its value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("verifier record has no {0:?}")]
    Missing(&'static str),
    #[error("verifier record's {key:?} is {reason}")]
    Invalid {
        key: &'static str,
        reason: &'static str,
    },
    /// The name itself is not kept: it is text from the Secret, and messages reach
    /// status and events.
    #[error(
        "verifier record's {key:?} names an unknown algorithm (known: SHA-256, SHA-384, SHA-512, SHA-1, MD5)"
    )]
    UnknownAlgorithm { key: &'static str },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [HashAlgorithm; 5] = HashAlgorithm::ALL;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid timestamp")
    }

    fn record(current: Credential, previous: Option<PreviousCredential>) -> VerifierRecord {
        VerifierRecord {
            client_id: "portal-client".into(),
            secret_version: 2,
            current,
            previous,
        }
    }

    #[test]
    fn digests_match_known_vectors() {
        let abc = |algorithm| hex::encode(digest(algorithm, b"abc"));
        assert_eq!(
            abc(HashAlgorithm::Sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            abc(HashAlgorithm::Sha1),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(abc(HashAlgorithm::Md5), "900150983cd24fb0d6963f7d28e17f72");
        assert!(abc(HashAlgorithm::Sha384).starts_with("cb00753f45a35e8b"));
        assert!(abc(HashAlgorithm::Sha512).starts_with("ddaf35a193617aba"));
        for algorithm in ALL {
            assert_eq!(digest(algorithm, b"abc").len(), digest_len(algorithm));
        }
    }

    #[test]
    fn verifier_ciphertext_is_bound_to_the_client_secret_field_and_other_keys_to_themselves() {
        assert_eq!(
            envelope_field(keys::ENCRYPTED_CLIENT_SECRET),
            keys::CLIENT_SECRET
        );
        assert_eq!(
            envelope_field(keys::PREVIOUS_ENCRYPTED_CLIENT_SECRET),
            keys::CLIENT_SECRET
        );
        assert_eq!(envelope_field("apiKey"), "apiKey");
        assert_eq!(envelope_field(keys::CLIENT_SECRET), keys::CLIENT_SECRET);
        assert_eq!(envelope_field(keys::HASH), keys::HASH);
    }

    #[test]
    fn both_slots_of_an_encrypted_record_open_with_the_field_of_their_data_key() {
        let keyring = Keyring::new(
            "apim",
            crate::crypto::KeyMaterial::parse(&[b'c'; 64]).expect("hex key"),
            at(0),
        );
        let sealed = |secret: &[u8]| {
            Credential::encrypted(&keyring, "apps", "portal-verifier", secret).expect("seals")
        };
        let previous = PreviousCredential {
            credential: sealed(b"old"),
            expires_at: at(100),
        };
        let data = record(sealed(b"new"), Some(previous)).to_data();
        for (data_key, plaintext) in [
            (keys::ENCRYPTED_CLIENT_SECRET, &b"new"[..]),
            (keys::PREVIOUS_ENCRYPTED_CLIENT_SECRET, &b"old"[..]),
        ] {
            let text = std::str::from_utf8(&data[data_key].0).expect("UTF-8");
            let context = Context {
                namespace: "apps",
                name: "portal-verifier",
                field: envelope_field(data_key),
            };
            let opened = Envelope::parse(text)
                .expect("parses")
                .open(&keyring, &context)
                .expect("opens");
            assert_eq!(opened.expose(), plaintext, "{data_key}");
        }
    }

    #[test]
    fn previous_secret_verifies_only_until_it_expires() {
        let previous = PreviousCredential {
            credential: Credential::hashed(HashAlgorithm::Sha1, b"old"),
            expires_at: at(100),
        };
        let record = record(
            Credential::hashed(HashAlgorithm::Sha256, b"new"),
            Some(previous),
        );
        assert_eq!(record.verify(b"new", at(50)), Verdict::Current);
        assert_eq!(record.verify(b"old", at(50)), Verdict::Previous);
        assert_eq!(record.verify(b"old", at(100)), Verdict::Rejected);
        assert_eq!(record.verify(b"new", at(100)), Verdict::Current);
        assert_eq!(record.verify(b"other", at(50)), Verdict::Rejected);
    }

    #[test]
    fn plaintext_credentials_verify_and_never_print() {
        let record = record(
            Credential::Plaintext(SecretBytes::new(b"s3cret-value".to_vec())),
            None,
        );
        assert_eq!(record.verify(b"s3cret-value", at(0)), Verdict::Current);
        assert_eq!(record.verify(b"s3cret-valuf", at(0)), Verdict::Rejected);
        assert!(!format!("{record:?}").contains("s3cret"));
    }

    #[test]
    fn the_record_names_its_algorithm_and_never_holds_a_hashed_secret() {
        let record = record(
            Credential::hashed(HashAlgorithm::Sha384, b"top-secret"),
            None,
        );
        let data = record.to_data();
        assert_eq!(data[keys::ALGORITHM].0, b"SHA-384");
        assert!(!data.contains_key(keys::CLIENT_SECRET));
        assert!(
            data.values()
                .all(|value| !value.0.windows(10).any(|w| w == b"top-secret"))
        );
    }

    #[test]
    fn malformed_records_are_refused_naming_the_key() {
        let good = record(Credential::hashed(HashAlgorithm::Sha256, b"x"), None).to_data();
        let broken = |key: &str, value: Option<&[u8]>| {
            let mut data = good.clone();
            match value {
                Some(value) => data.insert(key.to_owned(), ByteString(value.to_vec())),
                None => data.remove(key),
            };
            VerifierRecord::from_data(&data).expect_err("refused")
        };
        assert_eq!(
            broken(keys::CLIENT_ID, None),
            RecordError::Missing(keys::CLIENT_ID)
        );
        assert_eq!(broken(keys::HASH, None), RecordError::Missing(keys::HASH));
        assert_eq!(
            broken(keys::ALGORITHM, None),
            RecordError::Missing(keys::ALGORITHM)
        );
        assert!(matches!(
            broken(keys::ALGORITHM, Some(b"SHA-3")),
            RecordError::UnknownAlgorithm { .. }
        ));
        assert!(matches!(
            broken(keys::HASH, Some(b"zz")),
            RecordError::Invalid {
                key: keys::HASH,
                ..
            }
        ));
        assert!(matches!(
            broken(keys::HASH, Some(b"abcd")),
            RecordError::Invalid {
                key: keys::HASH,
                ..
            }
        ));
        assert!(matches!(
            broken(keys::SECRET_VERSION, Some(b"0")),
            RecordError::Invalid { .. }
        ));
        assert!(matches!(
            broken(keys::CLIENT_SECRET, Some(b"x")),
            RecordError::Invalid { .. }
        ));
        assert!(matches!(
            broken(keys::PREVIOUS_HASH, Some(&[0u8; 32].map(|_| b'a'))),
            RecordError::Missing(keys::PREVIOUS_ALGORITHM)
        ));
        let message = broken(keys::HASH, Some(b"not-hex-secretish")).to_string();
        assert!(
            !message.contains("secretish"),
            "errors never echo values: {message}"
        );
    }

    /// WSO2's record for `secret`, written out by hand from digests computed here.
    fn wso2_text(hex_digest: &str, algorithm: &str) -> Vec<u8> {
        format!(r#"{{"hash":"{hex_digest}","algorithm":"{algorithm}"}}"#).into_bytes()
    }

    #[test]
    fn wso2_records_are_org_jsons_bytes_for_sha256_and_sha512() {
        let secret = "Zb3-client_secret.~value";
        let sha256 = hex::encode(Sha256::digest(secret.as_bytes()));
        let sha512 = hex::encode(Sha512::digest(secret.as_bytes()));
        let record = |algorithm| {
            let Credential::Hashed { digest, .. } =
                Credential::hashed(algorithm, secret.as_bytes())
            else {
                unreachable!("hashed")
            };
            wso2_record(algorithm, &digest)
        };
        assert_eq!(record(HashAlgorithm::Sha256), wso2_text(&sha256, "SHA-256"));
        assert_eq!(record(HashAlgorithm::Sha512), wso2_text(&sha512, "SHA-512"));
        assert_eq!(
            wso2_record(HashAlgorithm::Sha256, &Sha256::digest(b"abc")),
            br#"{"hash":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","algorithm":"SHA-256"}"#
        );
        assert_eq!(
            wso2_record(HashAlgorithm::Md5, &digest(HashAlgorithm::Md5, b"abc")),
            br#"{"hash":"900150983cd24fb0d6963f7d28e17f72","algorithm":"MD5"}"#
        );
    }

    #[test]
    fn hashed_records_carry_wso2s_form_of_the_current_secret_only() {
        let previous = PreviousCredential {
            credential: Credential::hashed(HashAlgorithm::Sha1, b"old"),
            expires_at: at(100),
        };
        let data = record(
            Credential::hashed(HashAlgorithm::Sha384, b"new"),
            Some(previous),
        )
        .to_data();
        let sha384 = hex::encode(Sha384::digest(b"new"));
        assert_eq!(
            data[keys::WSO2_HASHED_SECRET].0,
            wso2_text(&sha384, "SHA-384")
        );
        assert_eq!(
            data.keys().filter(|key| key.contains("wso2")).count(),
            1,
            "one WSO2 record, for the current secret"
        );
        let plaintext = record(
            Credential::Plaintext(SecretBytes::new(b"s3cret".to_vec())),
            None,
        );
        assert!(!plaintext.to_data().contains_key(keys::WSO2_HASHED_SECRET));
    }

    #[test]
    fn encrypted_records_never_carry_a_hash_of_their_secret() {
        let keyring = Keyring::new(
            "apim",
            crate::crypto::KeyMaterial::parse(&[b'c'; 64]).expect("hex key"),
            at(0),
        );
        let sealed = Credential::encrypted(&keyring, "apps", "portal-verifier", b"top-secret")
            .expect("seals");
        let data = record(sealed, None).to_data();
        assert!(!data.contains_key(keys::WSO2_HASHED_SECRET));
        let digest_hex = hex::encode(Sha256::digest(b"top-secret"));
        assert!(
            data.values()
                .all(|value| !String::from_utf8_lossy(&value.0).contains(&digest_hex))
        );
    }

    #[test]
    fn a_wso2_record_must_be_what_the_records_own_hash_yields() {
        let good = record(Credential::hashed(HashAlgorithm::Sha256, b"x"), None).to_data();
        VerifierRecord::from_data(&good).expect("consistent");
        let mut old = good.clone();
        old.remove(keys::WSO2_HASHED_SECRET);
        VerifierRecord::from_data(&old).expect("records from before the key still read");
        let other = hex::encode(Sha256::digest(b"y"));
        let sha512_of_x = hex::encode(Sha512::digest(b"x"));
        let sha256_of_x = hex::encode(Sha256::digest(b"x"));
        let hostile: Vec<Vec<u8>> = vec![
            wso2_text(&other, "SHA-256"),
            wso2_text(&sha512_of_x, "SHA-512"),
            wso2_text(&sha256_of_x.to_uppercase(), "SHA-256"),
            format!(r#"{{"algorithm":"SHA-256","hash":"{sha256_of_x}"}}"#).into_bytes(),
            format!(r#"{{"hash": "{sha256_of_x}", "algorithm": "SHA-256"}}"#).into_bytes(),
            [wso2_text(&sha256_of_x, "SHA-256"), b"\n".to_vec()].concat(),
            b"".to_vec(),
            b"x".to_vec(),
            vec![0xff, 0xfe, 0x00],
            b"{\"hash\":\"secretish\"".to_vec(),
        ];
        for value in hostile {
            let mut data = good.clone();
            data.insert(keys::WSO2_HASHED_SECRET.to_owned(), ByteString(value));
            let error = VerifierRecord::from_data(&data).expect_err("inconsistent");
            assert!(
                matches!(
                    error,
                    RecordError::Invalid {
                        key: keys::WSO2_HASHED_SECRET,
                        ..
                    }
                ),
                "{error:?}"
            );
            assert!(!error.to_string().contains("secretish"));
        }
        let plaintext = record(Credential::Plaintext(SecretBytes::new(b"x".to_vec())), None);
        let mut data = plaintext.to_data();
        data.insert(
            keys::WSO2_HASHED_SECRET.to_owned(),
            ByteString(wso2_text(&sha256_of_x, "SHA-256")),
        );
        assert!(matches!(
            VerifierRecord::from_data(&data),
            Err(RecordError::Invalid {
                key: keys::WSO2_HASHED_SECRET,
                ..
            })
        ));
    }

    #[test]
    fn wso2_records_parse_only_in_the_exact_form_wso2_writes() {
        for algorithm in ALL {
            let text = wso2_record(algorithm, &digest(algorithm, b"secret"));
            let credential = parse_wso2_record(&text).expect("parses");
            assert!(credential.matches(b"secret"));
            assert!(!credential.matches(b"secreT"));
            assert_eq!(credential.algorithm(), Some(algorithm));
        }
        let sha256 = hex::encode(Sha256::digest(b"secret"));
        let refused = |text: &[u8]| parse_wso2_record(text).expect_err("refused");
        assert!(matches!(
            refused(&wso2_text(&sha256, "SHA-3")),
            RecordError::UnknownAlgorithm { .. }
        ));
        assert!(matches!(
            refused(&wso2_text(&sha256, "sha-256")),
            RecordError::UnknownAlgorithm { .. }
        ));
        assert!(matches!(
            refused(&wso2_text(&sha256[..62], "SHA-256")),
            RecordError::Invalid { .. }
        ));
        assert!(matches!(
            refused(format!(r#"{{"hash":"{sha256}","algorithm":"SHA-256","extra":1}}"#).as_bytes()),
            RecordError::Invalid { .. }
        ));
        let message = refused(br#"{"hash":"s3cret-value","algorithm":"SHA-256"}"#).to_string();
        assert!(!message.contains("s3cret"), "{message}");
    }

    proptest! {
        #[test]
        fn records_round_trip_and_verify_for_every_algorithm(
            secret in proptest::collection::vec(any::<u8>(), 1..96),
            other in proptest::collection::vec(any::<u8>(), 1..96),
            algorithm in proptest::sample::select(ALL.to_vec()),
            previous_algorithm in proptest::sample::select(ALL.to_vec()),
        ) {
            let previous = PreviousCredential { credential: Credential::hashed(previous_algorithm, &other), expires_at: at(1_000) };
            let original = record(Credential::hashed(algorithm, &secret), Some(previous));
            let parsed = VerifierRecord::from_data(&original.to_data()).expect("round trip");
            prop_assert_eq!(parsed.verify(&secret, at(10)), Verdict::Current);
            if secret != other {
                prop_assert_eq!(parsed.verify(&other, at(10)), Verdict::Previous);
                prop_assert_eq!(parsed.verify(&other, at(1_000)), Verdict::Rejected);
            }
            prop_assert_eq!(parsed.to_data(), original.to_data());
        }

        #[test]
        fn arbitrary_data_never_panics_the_parser(
            entries in proptest::collection::btree_map(
                proptest::sample::select(vec![keys::CLIENT_ID, keys::SECRET_VERSION, keys::ALGORITHM, keys::HASH, keys::CLIENT_SECRET, keys::PREVIOUS_ALGORITHM, keys::PREVIOUS_HASH, keys::PREVIOUS_EXPIRES_AT, keys::WSO2_HASHED_SECRET]),
                proptest::collection::vec(any::<u8>(), 0..80),
                0..8,
            )
        ) {
            let data = entries.into_iter().map(|(key, value)| (key.to_owned(), ByteString(value))).collect();
            let _ = VerifierRecord::from_data(&data);
        }

        #[test]
        fn arbitrary_text_never_panics_the_wso2_parser(text in proptest::collection::vec(any::<u8>(), 0..160)) {
            let _ = parse_wso2_record(&text);
        }
    }
}
