//! AES-256 key material and the versioned keyring an EncryptionKey keeps.
//!
//! A keyring is a list of versions, each with a state: `Primary` (new ciphertext is
//! written under it; exactly one), `DecryptOnly` (staged before promotion, or kept after
//! retirement for ciphertext that still lives elsewhere) and `Retired` (no longer held by
//! pods). Fingerprints identify key material without revealing it.
//!
//! At rest the keyring may be wrapped under a key-encryption key (KEK). Wrapping uses
//! AES-256-GCM — already the product's cipher, so no second primitive to trust — with a
//! fresh random nonce per key and associated data that binds the wrapped key to its
//! keyring name and version under a domain-separation label, so a wrapped key cannot be
//! swapped into another version or keyring unnoticed. (AES-KW would avoid the nonce but
//! adds a primitive and buys nothing here: keys are few and nonces are random 96-bit.)

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::secret::{RandomError, fill_random};

/// Length of an AES-256 key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const MAX_NAME_LEN: usize = 253;
const WRAP_LABEL: &[u8] = b"keyward.io keyring key wrap v1";
const FINGERPRINT_LABEL: &[u8] = b"keyward.io key fingerprint v1";

/// 32 bytes of AES-256 key material: zeroized on drop, printed as `[redacted]`.
#[derive(Clone)]
pub struct KeyMaterial(Zeroizing<[u8; KEY_LEN]>);

impl KeyMaterial {
    /// Fresh key material from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, RandomError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(key.as_mut_slice())?;
        Ok(Self(key))
    }

    fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return None;
        }
        key.copy_from_slice(bytes);
        Some(Self(key))
    }

    /// Parses user-supplied material: 64 hex characters (`openssl rand -hex 32`) or the
    /// base64 of 32 bytes (`openssl rand -base64 32`), surrounding whitespace ignored.
    pub fn parse(text: &[u8]) -> Result<Self, KeyError> {
        let text = Zeroizing::new(text.trim_ascii().to_vec());
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        // Base64 of 32 bytes always ends in '=', so an all-hex text is hex.
        let bytes = if text.len().is_multiple_of(2) && text.iter().all(u8::is_ascii_hexdigit) {
            Zeroizing::new(hex::decode(&*text).map_err(|_| KeyError::Malformed)?)
        } else {
            Zeroizing::new(STANDARD.decode(&*text).map_err(|_| KeyError::Malformed)?)
        };
        Self::from_slice(&bytes).ok_or(KeyError::WrongLength(bytes.len()))
    }

    /// The key itself. Call only where it is used, never to log it.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A short, non-secret identifier of the material: the first 16 hex characters of a
    /// domain-separated SHA-256, so it can be shown in status and compared by people.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(FINGERPRINT_LABEL);
        hasher.update(self.0.as_slice());
        hex::encode(&hasher.finalize()[..8])
    }

    pub(crate) fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(*self.0))
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyMaterial([redacted], fingerprint {})",
            self.fingerprint()
        )
    }
}

/// Why key material was refused. Never includes the material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is neither 64 hex characters nor base64")]
    Malformed,
    #[error("the key has {0} bytes; AES-256 needs exactly 32")]
    WrongLength(usize),
    #[error("the keyring is not valid keyring JSON: {0}")]
    Keyring(String),
    #[error("the keyring has no version {0}")]
    UnknownVersion(i64),
    #[error("the keyring has {0} primary versions; it needs exactly one")]
    Primaries(usize),
    #[error("cannot unwrap key version {0}: wrong key-encryption key, or the keyring was altered")]
    Unwrap(i64),
    #[error("cannot seal key material: {0}")]
    Seal(&'static str),
    #[error(
        "WSO2 holds two keys, but the keyring has {0} decrypt-only versions besides the primary"
    )]
    TooManyForWso2(usize),
}

/// The state of one key version.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionState {
    /// New ciphertext is written under this version.
    Primary,
    /// Decrypts, never encrypts.
    DecryptOnly,
    /// Kept only in the stored keyring; pods no longer hold it.
    Retired,
}

impl VersionState {
    /// The state's name, as EncryptionKey status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "Primary",
            Self::DecryptOnly => "DecryptOnly",
            Self::Retired => "Retired",
        }
    }
}

/// One version of the key.
#[derive(Clone, Debug)]
pub struct KeyVersion {
    pub version: i64,
    pub state: VersionState,
    pub created_at: Timestamp,
    pub material: KeyMaterial,
}

/// The versions of one EncryptionKey.
#[derive(Clone, Debug)]
pub struct Keyring {
    /// The EncryptionKey's name; ciphertext names it.
    pub name: String,
    pub versions: Vec<KeyVersion>,
}

/// The keyring's JSON form, as stored and as the `Keyring` distribution format.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyringFile {
    format: String,
    name: String,
    versions: Vec<KeyVersionFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyVersionFile {
    version: i64,
    state: VersionState,
    created_at: Timestamp,
    fingerprint: String,
    /// Base64 key material (plain keyrings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<Zeroizing<String>>,
    /// Base64 of nonce ‖ AES-256-GCM(KEK, key) (wrapped keyrings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped_key: Option<String>,
}

const FORMAT: &str = "keyward.io/keyring/v1";

/// The highest version a keyring read from a Secret may hold: far more rotations than
/// any key will see, and far enough from the end of `i64` that staging always numbers
/// a new version.
pub const MAX_VERSION: i64 = 2_147_483_647;

impl Keyring {
    /// A keyring whose only version, 1, is primary.
    pub fn new(name: &str, material: KeyMaterial, now: Timestamp) -> Self {
        let first = KeyVersion {
            version: 1,
            state: VersionState::Primary,
            created_at: now,
            material,
        };
        Self {
            name: name.to_owned(),
            versions: vec![first],
        }
    }

    /// The primary version.
    pub fn primary(&self) -> Result<&KeyVersion, KeyError> {
        let mut primaries = self
            .versions
            .iter()
            .filter(|v| v.state == VersionState::Primary);
        match (primaries.next(), primaries.next()) {
            (Some(primary), None) => Ok(primary),
            _ => Err(KeyError::Primaries(
                self.versions
                    .iter()
                    .filter(|v| v.state == VersionState::Primary)
                    .count(),
            )),
        }
    }

    /// WSO2 API Manager's two keys for this keyring: `key`, the primary, and `old_key`,
    /// the one decrypt-only version (a rotation has at most one: the new version while
    /// staged, the previous one once promoted), or the primary again when there is none.
    /// WSO2 holds no more than two keys: a keyring with more decrypt-only versions is
    /// refused, since guessing would leave values unreadable.
    pub fn wso2_keys(&self) -> Result<(&KeyVersion, &KeyVersion), KeyError> {
        let primary = self.primary()?;
        let decrypt_only: Vec<&KeyVersion> = self
            .versions
            .iter()
            .filter(|version| version.state == VersionState::DecryptOnly)
            .collect();
        match decrypt_only[..] {
            [] => Ok((primary, primary)),
            [old] => Ok((primary, old)),
            _ => Err(KeyError::TooManyForWso2(decrypt_only.len())),
        }
    }

    /// Adds fresh `material` as the next version, `DecryptOnly` (staged: pods learn to
    /// decrypt with it before anything is written under it); returns its number.
    pub fn stage(&mut self, material: KeyMaterial, now: Timestamp) -> i64 {
        let version = self
            .versions
            .iter()
            .map(|v| v.version)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        self.versions.push(KeyVersion {
            version,
            state: VersionState::DecryptOnly,
            created_at: now,
            material,
        });
        version
    }

    /// Makes `version` the primary; the former primary stays, decrypt-only.
    pub fn promote(&mut self, version: i64) -> Result<(), KeyError> {
        self.version(version)?;
        for v in &mut self.versions {
            v.state = if v.version == version {
                VersionState::Primary
            } else if v.state == VersionState::Primary {
                VersionState::DecryptOnly
            } else {
                v.state
            };
        }
        Ok(())
    }

    /// Retires every version but the primary, and drops the material of retired
    /// versions beyond the newest `keep`. Only once nothing is encrypted under them.
    pub fn retire_all_but_primary(&mut self, keep: usize) -> Result<(), KeyError> {
        let primary = self.primary()?.version;
        for v in &mut self.versions {
            if v.version != primary {
                v.state = VersionState::Retired;
            }
        }
        let mut retired: Vec<i64> = self
            .versions
            .iter()
            .filter(|v| v.state == VersionState::Retired)
            .map(|v| v.version)
            .collect();
        retired.sort_unstable_by(|a, b| b.cmp(a));
        let dropped: Vec<i64> = retired.into_iter().skip(keep).collect();
        self.versions.retain(|v| !dropped.contains(&v.version));
        Ok(())
    }

    /// Version `version`, if the keyring has it.
    pub fn version(&self, version: i64) -> Result<&KeyVersion, KeyError> {
        self.versions
            .iter()
            .find(|v| v.version == version)
            .ok_or(KeyError::UnknownVersion(version))
    }

    /// The keyring as JSON, with plain key material (for pods and the cipher tool).
    pub fn to_json(&self) -> Result<Zeroizing<String>, KeyError> {
        self.serialize(|version| Ok(KeyVersionFile::plain(version)))
    }

    /// The keyring as it is stored: wrapped under `kek` when there is one.
    pub fn to_stored_json(&self, kek: Option<&KeyMaterial>) -> Result<Zeroizing<String>, KeyError> {
        match kek {
            Some(kek) => self.to_wrapped_json(kek),
            None => self.to_json(),
        }
    }

    /// Whether stored keyring JSON keeps any key unwrapped (so a key-encryption key the
    /// spec asks for is not yet applied). Call after [`Keyring::from_json`] accepted it.
    pub fn stored_unwrapped(json: &[u8]) -> bool {
        serde_json::from_slice::<KeyringFile>(json)
            .is_ok_and(|file| file.versions.iter().any(|version| version.key.is_some()))
    }

    /// The keyring as JSON with every key wrapped under `kek`.
    pub fn to_wrapped_json(&self, kek: &KeyMaterial) -> Result<Zeroizing<String>, KeyError> {
        self.serialize(|version| {
            let mut nonce = [0u8; NONCE_LEN];
            fill_random(&mut nonce).map_err(|_| KeyError::Seal("no randomness for the nonce"))?;
            let aad = wrap_aad(&self.name, version.version);
            let sealed = kek
                .cipher()
                .encrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: version.material.expose(),
                        aad: &aad,
                    },
                )
                .map_err(|_| KeyError::Seal("AES-GCM refused the input"))?;
            let mut blob = nonce.to_vec();
            blob.extend_from_slice(&sealed);
            Ok(KeyVersionFile {
                key: None,
                wrapped_key: Some(STANDARD.encode(blob)),
                ..KeyVersionFile::plain(version)
            })
        })
    }

    fn serialize(
        &self,
        version_file: impl Fn(&KeyVersion) -> Result<KeyVersionFile, KeyError>,
    ) -> Result<Zeroizing<String>, KeyError> {
        let versions = self
            .versions
            .iter()
            .map(version_file)
            .collect::<Result<Vec<_>, _>>()?;
        let file = KeyringFile {
            format: FORMAT.to_owned(),
            name: self.name.clone(),
            versions,
        };
        let json = serde_json::to_string_pretty(&file)
            .map_err(|_| KeyError::Seal("cannot serialize the keyring"))?;
        Ok(Zeroizing::new(json))
    }

    /// Parses keyring JSON, unwrapping keys with `kek` where they are wrapped. Strict:
    /// unknown fields, a fingerprint that does not match its key, duplicate versions or
    /// anything but one primary are errors.
    pub fn from_json(json: &[u8], kek: Option<&KeyMaterial>) -> Result<Self, KeyError> {
        let file: KeyringFile = serde_json::from_slice(json)
            .map_err(|error| KeyError::Keyring(json_problem(&error)))?;
        if file.format != FORMAT {
            return Err(KeyError::Keyring(format!("its format is not {FORMAT:?}")));
        }
        if !valid_key_name(&file.name) {
            return Err(KeyError::Keyring(
                "its name is not a Kubernetes object name".to_owned(),
            ));
        }
        let mut versions = Vec::with_capacity(file.versions.len());
        for entry in file.versions {
            let material = match (&entry.key, &entry.wrapped_key, kek) {
                (Some(key), None, _) => KeyMaterial::parse(key.as_bytes())?,
                (None, Some(wrapped), Some(kek)) => {
                    unwrap(kek, &file.name, entry.version, wrapped)?
                }
                (None, Some(_), None) => {
                    return Err(KeyError::Keyring(format!(
                        "version {} is wrapped and no key-encryption key was given",
                        entry.version
                    )));
                }
                _ => {
                    return Err(KeyError::Keyring(format!(
                        "version {} needs exactly one of key and wrappedKey",
                        entry.version
                    )));
                }
            };
            // Status shows creation times, and the API refuses times before year 1.
            if entry.created_at < Timestamp::UNIX_EPOCH {
                return Err(KeyError::Keyring(format!(
                    "version {} was created before 1970",
                    entry.version
                )));
            }
            if material.fingerprint() != entry.fingerprint {
                return Err(KeyError::Keyring(format!(
                    "version {} does not match its fingerprint",
                    entry.version
                )));
            }
            if versions
                .iter()
                .any(|v: &KeyVersion| v.version == entry.version)
                || entry.version < 1
            {
                return Err(KeyError::Keyring(format!(
                    "version {} is repeated or not positive",
                    entry.version
                )));
            }
            // Versions count rotations from 1; one near the end of i64 was not written
            // by keyward, and the next rotation could not number its version.
            if entry.version > MAX_VERSION {
                return Err(KeyError::Keyring(format!(
                    "version {} is above {MAX_VERSION}",
                    entry.version
                )));
            }
            versions.push(KeyVersion {
                version: entry.version,
                state: entry.state,
                created_at: entry.created_at,
                material,
            });
        }
        let keyring = Self {
            name: file.name,
            versions,
        };
        keyring.primary()?;
        Ok(keyring)
    }

    /// A digest of everything pods must hold (name, versions, states and material), to
    /// stamp on pod templates and compare across pods. Reveals nothing of the keys.
    pub fn distribution_hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"keyward.io keyring hash v1\0");
        hasher.update(self.name.as_bytes());
        for version in self
            .versions
            .iter()
            .filter(|v| v.state != VersionState::Retired)
        {
            hasher.update(version.version.to_be_bytes());
            hasher.update([version.state as u8]);
            hasher.update(version.material.fingerprint().as_bytes());
        }
        hex::encode(&hasher.finalize()[..16])
    }
}

impl KeyVersionFile {
    fn plain(version: &KeyVersion) -> Self {
        Self {
            version: version.version,
            state: version.state,
            created_at: version.created_at,
            fingerprint: version.material.fingerprint(),
            key: Some(Zeroizing::new(STANDARD.encode(version.material.expose()))),
            wrapped_key: None,
        }
    }
}

fn wrap_aad(name: &str, version: i64) -> Vec<u8> {
    [
        WRAP_LABEL,
        b"\0",
        name.as_bytes(),
        b"\0",
        version.to_string().as_bytes(),
    ]
    .concat()
}

fn unwrap(
    kek: &KeyMaterial,
    name: &str,
    version: i64,
    wrapped: &str,
) -> Result<KeyMaterial, KeyError> {
    let blob = STANDARD
        .decode(wrapped)
        .map_err(|_| KeyError::Unwrap(version))?;
    if blob.len() != NONCE_LEN + KEY_LEN + 16 {
        return Err(KeyError::Unwrap(version));
    }
    let (nonce, sealed) = blob.split_at(NONCE_LEN);
    let nonce = Nonce::try_from(nonce).map_err(|_| KeyError::Unwrap(version))?;
    let aad = wrap_aad(name, version);
    let key = Zeroizing::new(
        kek.cipher()
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| KeyError::Unwrap(version))?,
    );
    KeyMaterial::from_slice(&key).ok_or(KeyError::Unwrap(version))
}

/// What is wrong with keyring JSON, by category and position only: serde's own messages
/// quote the offending value, and this text reaches status and events.
fn json_problem(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match error.classify() {
        Category::Io => "cannot be read",
        Category::Syntax => "is not JSON",
        Category::Data => "has a missing, unknown or mistyped field",
        Category::Eof => "ends too early",
    };
    format!(
        "it {what} (line {}, column {})",
        error.line(),
        error.column()
    )
}

/// Whether `name` can name a key: a Kubernetes object name.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> KeyMaterial {
        KeyMaterial::from_slice(&[byte; KEY_LEN]).expect("32 bytes")
    }

    #[test]
    fn a_rotation_stages_promotes_and_retires_keeping_what_retention_asks() {
        let key = || KeyMaterial::generate().expect("key");
        let mut keyring = Keyring::new("apim", key(), Timestamp::UNIX_EPOCH);
        for expected in 2..=4 {
            let staged = keyring.stage(key(), Timestamp::UNIX_EPOCH);
            assert_eq!(staged, expected);
            assert_eq!(
                keyring.version(staged).expect("staged").state,
                VersionState::DecryptOnly
            );
            assert_eq!(keyring.primary().expect("primary").version, expected - 1);
            keyring.promote(staged).expect("promoted");
            assert_eq!(keyring.primary().expect("primary").version, expected);
            assert_eq!(
                keyring.version(expected - 1).expect("old").state,
                VersionState::DecryptOnly
            );
            keyring.retire_all_but_primary(2).expect("retired");
        }
        let states: Vec<(i64, VersionState)> = keyring
            .versions
            .iter()
            .map(|v| (v.version, v.state))
            .collect();
        assert_eq!(
            states,
            vec![
                (2, VersionState::Retired),
                (3, VersionState::Retired),
                (4, VersionState::Primary)
            ]
        );
        assert!(keyring.promote(9).is_err());
    }

    #[test]
    fn a_wrapped_keyring_is_told_from_a_plain_one() {
        let keyring = Keyring::new(
            "apim",
            KeyMaterial::generate().expect("key"),
            Timestamp::UNIX_EPOCH,
        );
        let kek = KeyMaterial::generate().expect("kek");
        let plain = keyring.to_json().expect("plain");
        let wrapped = keyring.to_wrapped_json(&kek).expect("wrapped");
        assert!(Keyring::stored_unwrapped(plain.as_bytes()));
        assert!(!Keyring::stored_unwrapped(wrapped.as_bytes()));
    }

    #[test]
    fn user_keys_are_accepted_as_hex_or_base64_and_anything_else_is_refused() {
        let hex_key = "00".repeat(31) + "ff\n";
        assert_eq!(
            KeyMaterial::parse(hex_key.as_bytes())
                .expect("hex")
                .expose()[31],
            0xff
        );
        let base64_key = STANDARD.encode([7u8; 32]);
        assert_eq!(
            KeyMaterial::parse(base64_key.as_bytes())
                .expect("base64")
                .expose(),
            &[7u8; 32]
        );
        assert_eq!(KeyMaterial::parse(b"  ").unwrap_err(), KeyError::Empty);
        assert_eq!(
            KeyMaterial::parse(b"not a key!").unwrap_err(),
            KeyError::Malformed
        );
        assert_eq!(
            KeyMaterial::parse(STANDARD.encode([1u8; 16]).as_bytes()).unwrap_err(),
            KeyError::WrongLength(16)
        );
        assert_eq!(
            KeyMaterial::parse("ab".repeat(31).as_bytes()).unwrap_err(),
            KeyError::WrongLength(31)
        );
    }

    #[test]
    fn material_never_prints_and_fingerprints_are_stable_and_distinct() {
        let material = key(0x41);
        let printed = format!("{material:?}");
        assert!(
            !printed.contains(&hex::encode(material.expose())) && !printed.contains("AAAA"),
            "{printed}"
        );
        assert_eq!(material.fingerprint(), key(0x41).fingerprint());
        assert_ne!(material.fingerprint(), key(0x42).fingerprint());
        assert_eq!(material.fingerprint().len(), 16);
    }

    #[test]
    fn keyrings_round_trip_plain_and_wrapped() {
        let now = Timestamp::from_second(1_700_000_000).expect("timestamp");
        let mut keyring = Keyring::new("apim", key(1), now);
        keyring.versions[0].state = VersionState::DecryptOnly;
        keyring.versions.push(KeyVersion {
            version: 2,
            state: VersionState::Primary,
            created_at: now,
            material: key(2),
        });

        let plain = Keyring::from_json(keyring.to_json().expect("serializes").as_bytes(), None)
            .expect("plain parses");
        assert_eq!(plain.primary().expect("primary").version, 2);
        assert_eq!(plain.distribution_hash(), keyring.distribution_hash());

        let kek = key(9);
        let wrapped = keyring.to_wrapped_json(&kek).expect("wraps");
        for raw in [
            hex::encode([1u8; 32]),
            STANDARD.encode([1u8; 32]),
            hex::encode([2u8; 32]),
            STANDARD.encode([2u8; 32]),
        ] {
            assert!(
                !wrapped.contains(&raw),
                "the wrapped keyring holds no raw key"
            );
        }
        let unwrapped = Keyring::from_json(wrapped.as_bytes(), Some(&kek)).expect("unwraps");
        assert_eq!(
            unwrapped.version(1).expect("v1").material.expose(),
            &[1u8; 32]
        );
        assert_eq!(
            Keyring::from_json(wrapped.as_bytes(), Some(&key(8))).unwrap_err(),
            KeyError::Unwrap(1)
        );
        assert!(Keyring::from_json(wrapped.as_bytes(), None).is_err());
    }

    #[test]
    fn a_wrapped_key_moved_to_another_version_fails_to_unwrap() {
        let now = Timestamp::UNIX_EPOCH;
        let mut keyring = Keyring::new("apim", key(1), now);
        keyring.versions.push(KeyVersion {
            version: 2,
            state: VersionState::DecryptOnly,
            created_at: now,
            material: key(2),
        });
        let kek = key(9);
        let mut file: serde_json::Value =
            serde_json::from_str(&keyring.to_wrapped_json(&kek).expect("wraps")).expect("json");
        let versions = file["versions"].as_array_mut().expect("versions");
        let first = versions[0]["wrappedKey"].clone();
        versions[0]["wrappedKey"] = versions[1]["wrappedKey"].clone();
        versions[1]["wrappedKey"] = first;
        let swapped = serde_json::to_vec(&file).expect("json");
        assert!(matches!(
            Keyring::from_json(&swapped, Some(&kek)),
            Err(KeyError::Unwrap(_))
        ));
    }

    #[test]
    fn keyring_json_is_parsed_strictly() {
        let keyring = Keyring::new("apim", key(1), Timestamp::UNIX_EPOCH);
        let mut file: serde_json::Value =
            serde_json::from_str(&keyring.to_json().expect("serializes")).expect("json");
        file["versions"][0]["fingerprint"] = "0000000000000000".into();
        assert!(
            Keyring::from_json(&serde_json::to_vec(&file).expect("json"), None).is_err(),
            "fingerprint mismatch"
        );
        file["versions"][0]["fingerprint"] = key(1).fingerprint().into();
        file["versions"][0]["state"] = "DecryptOnly".into();
        assert_eq!(
            Keyring::from_json(&serde_json::to_vec(&file).expect("json"), None).unwrap_err(),
            KeyError::Primaries(0)
        );
        file["extra"] = true.into();
        assert!(
            Keyring::from_json(&serde_json::to_vec(&file).expect("json"), None).is_err(),
            "unknown field"
        );
        assert!(Keyring::from_json(b"{", None).is_err());
    }

    /// A keyring file as someone who may edit the keyring Secret could write it: a
    /// real one (two versions, fingerprints intact) with versions, states and times
    /// rewritten to anything, extremes most often; or any bytes at all.
    fn keyring_json() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let version = prop_oneof![
            Just(i64::MAX),
            Just(i64::MAX - 1),
            Just(i64::MIN),
            Just(0_i64),
            Just(-1_i64),
            any::<i64>()
        ];
        let state = proptest::sample::select(vec!["Primary", "DecryptOnly", "Retired", "primary"]);
        let time = proptest::sample::select(vec![
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "1969-12-31T23:59:59Z",
            "-009999-01-01T00:00:00Z",
        ]);
        let entry = (version, state, time);
        let structured = (entry.clone(), entry).prop_map(|rewrites| {
            let mut keyring = Keyring::new("apim", key(1), Timestamp::UNIX_EPOCH);
            keyring.stage(key(2), Timestamp::UNIX_EPOCH);
            let mut file: serde_json::Value =
                serde_json::from_str(&keyring.to_json().expect("JSON")).expect("JSON");
            for (index, (version, state, time)) in [rewrites.0, rewrites.1].into_iter().enumerate()
            {
                let entry = &mut file["versions"][index];
                entry["version"] = version.into();
                entry["state"] = state.into();
                entry["createdAt"] = time.into();
            }
            serde_json::to_vec(&file).expect("JSON")
        });
        prop_oneof![structured, proptest::collection::vec(any::<u8>(), 0..200)]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// The keyring Secret is as writable as any Secret of the namespace: whatever
        /// it holds is read without a panic, and a keyring that is accepted can always
        /// stage a new version of its own number, promote it, retire the rest and be
        /// written again.
        #[test]
        fn any_keyring_file_is_read_without_a_panic(json in keyring_json()) {
            if let Ok(mut keyring) = Keyring::from_json(&json, None) {
                let before: Vec<i64> = keyring.versions.iter().map(|v| v.version).collect();
                let staged = keyring.stage(key(3), Timestamp::UNIX_EPOCH);
                proptest::prop_assert!(!before.contains(&staged), "staged {staged} again");
                keyring.promote(staged).expect("a staged version promotes");
                keyring.retire_all_but_primary(1).expect("retires");
                keyring.to_json().expect("serializes");
            }
        }
    }
}
