//! The ciphertext envelope: a self-describing, versioned text form of an AES-256-GCM
//! ciphertext.
//!
//! ```text
//! keyward:v1:<key name>:<key version>:<nonce>:<ciphertext‖tag>
//! ```
//!
//! Nonce and ciphertext are unpadded URL-safe base64; the nonce is 96 random bits. The
//! associated data binds the format, key name, key version and the caller's context
//! (namespace, object name, field), so an envelope copied into another Secret or field
//! fails to decrypt instead of yielding the plaintext there. The parser is strict: any
//! deviation is an error naming what was wrong, never a panic.

use std::fmt;

use aes_gcm::Nonce;
use aes_gcm::aead::{Aead, Payload};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::keyring::{KeyError, Keyring, valid_key_name};
use super::secret::{SecretBytes, fill_random};

const PREFIX: &str = "keyward";
const FORMAT_VERSION: &str = "v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Where a ciphertext lives; bound into it so it cannot be moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub field: &'a str,
}

/// A parsed envelope.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    pub key_name: String,
    pub key_version: i64,
    nonce: [u8; NONCE_LEN],
    sealed: Vec<u8>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("key_name", &self.key_name)
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

/// Why an envelope could not be parsed, encrypted or decrypted. Never includes
/// plaintext or key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("not a keyward envelope: it must start with \"keyward:v1:\"")]
    NotAnEnvelope,
    #[error("unsupported envelope format {0:?}; this keyward reads v1")]
    UnsupportedFormat(String),
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    #[error("the envelope is for key {found:?}, not {expected:?}")]
    WrongKey { expected: String, found: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("decryption failed: the envelope was altered, or belongs to another Secret or field")]
    Decrypt,
    #[error("encryption failed: {0}")]
    Encrypt(&'static str),
}

impl Envelope {
    /// Parses the text form, strictly.
    pub fn parse(text: &str) -> Result<Self, EnvelopeError> {
        let mut parts = text.split(':');
        if parts.next() != Some(PREFIX) {
            return Err(EnvelopeError::NotAnEnvelope);
        }
        match parts.next() {
            Some(FORMAT_VERSION) => {}
            Some(other) if !other.is_empty() => {
                return Err(EnvelopeError::UnsupportedFormat(
                    other.chars().take(16).collect(),
                ));
            }
            _ => return Err(EnvelopeError::NotAnEnvelope),
        }
        let (Some(key_name), Some(version), Some(nonce), Some(sealed), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(EnvelopeError::Malformed(
                "it needs exactly six ':'-separated fields",
            ));
        };
        if !valid_key_name(key_name) {
            return Err(EnvelopeError::Malformed(
                "the key name is not a Kubernetes object name",
            ));
        }
        let key_version = parse_version(version).ok_or(EnvelopeError::Malformed(
            "the key version is not a positive integer",
        ))?;
        let nonce: [u8; NONCE_LEN] = URL_SAFE_NO_PAD
            .decode(nonce)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(EnvelopeError::Malformed(
                "the nonce is not 12 bytes of base64url",
            ))?;
        let sealed = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| EnvelopeError::Malformed("the ciphertext is not base64url"))?;
        if sealed.len() < TAG_LEN {
            return Err(EnvelopeError::Malformed(
                "the ciphertext is shorter than its authentication tag",
            ));
        }
        Ok(Self {
            key_name: key_name.to_owned(),
            key_version,
            nonce,
            sealed,
        })
    }

    /// Encrypts `plaintext` under the keyring's primary version, bound to `context`.
    pub fn seal(
        keyring: &Keyring,
        context: &Context<'_>,
        plaintext: &[u8],
    ) -> Result<Self, EnvelopeError> {
        let primary = keyring.primary()?;
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)
            .map_err(|_| EnvelopeError::Encrypt("no randomness for the nonce"))?;
        let aad = associated_data(&keyring.name, primary.version, context);
        let sealed = primary
            .material
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| EnvelopeError::Encrypt("AES-GCM refused the input"))?;
        Ok(Self {
            key_name: keyring.name.clone(),
            key_version: primary.version,
            nonce,
            sealed,
        })
    }

    /// Decrypts with the keyring version the envelope names, checking `context`.
    pub fn open(
        &self,
        keyring: &Keyring,
        context: &Context<'_>,
    ) -> Result<SecretBytes, EnvelopeError> {
        if self.key_name != keyring.name {
            return Err(EnvelopeError::WrongKey {
                expected: keyring.name.clone(),
                found: self.key_name.clone(),
            });
        }
        // Retired versions still decrypt here: pods no longer hold them, but ciphertext
        // kept elsewhere (git, backups) must stay readable with the stored keyring.
        let version = keyring.version(self.key_version)?;
        let aad = associated_data(&self.key_name, self.key_version, context);
        let plaintext = version
            .material
            .cipher()
            .decrypt(
                &Nonce::from(self.nonce),
                Payload {
                    msg: &self.sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| EnvelopeError::Decrypt)?;
        Ok(SecretBytes::new(plaintext))
    }
}

impl fmt::Display for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}:{FORMAT_VERSION}:{}:{}:{}:{}",
            self.key_name,
            self.key_version,
            URL_SAFE_NO_PAD.encode(self.nonce),
            URL_SAFE_NO_PAD.encode(&self.sealed)
        )
    }
}

fn associated_data(key_name: &str, key_version: i64, context: &Context<'_>) -> Vec<u8> {
    let version = key_version.to_string();
    let fields = [
        PREFIX,
        FORMAT_VERSION,
        key_name,
        &version,
        context.namespace,
        context.name,
        context.field,
    ];
    // NUL cannot occur in any of these, so the encoding is unambiguous.
    fields.join("\0").into_bytes()
}

fn parse_version(text: &str) -> Option<i64> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    canonical.then(|| text.parse::<i64>().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keyring::{KeyMaterial, KeyVersion, VersionState};
    use k8s_openapi::jiff::Timestamp;
    use proptest::prelude::*;

    fn keyring() -> Keyring {
        Keyring::new(
            "apim",
            KeyMaterial::parse(&[b'a'; 64]).expect("hex key"),
            Timestamp::UNIX_EPOCH,
        )
    }

    const HERE: Context<'static> = Context {
        namespace: "apps",
        name: "portal-verifier",
        field: "clientSecret",
    };

    #[test]
    fn seal_then_open_round_trips_through_text() {
        let keyring = keyring();
        let envelope = Envelope::seal(&keyring, &HERE, b"the plaintext").expect("seals");
        let text = envelope.to_string();
        assert!(text.starts_with("keyward:v1:apim:1:"), "{text}");
        assert!(!text.contains("plaintext"));
        let parsed = Envelope::parse(&text).expect("parses");
        assert_eq!(parsed, envelope);
        assert_eq!(
            parsed.open(&keyring, &HERE).expect("opens").expose(),
            b"the plaintext"
        );
        assert_ne!(
            Envelope::seal(&keyring, &HERE, b"the plaintext")
                .expect("seals")
                .to_string(),
            text,
            "fresh nonce each time"
        );
    }

    #[test]
    fn a_ciphertext_moved_to_another_secret_or_field_fails() {
        let keyring = keyring();
        let envelope = Envelope::seal(&keyring, &HERE, b"secret").expect("seals");
        for elsewhere in [
            Context {
                namespace: "other",
                ..HERE
            },
            Context {
                name: "other-verifier",
                ..HERE
            },
            Context {
                field: "otherField",
                ..HERE
            },
        ] {
            assert_eq!(
                envelope.open(&keyring, &elsewhere).unwrap_err(),
                EnvelopeError::Decrypt
            );
        }
    }

    #[test]
    fn old_versions_decrypt_until_retired_and_other_keys_are_named() {
        let mut keyring = keyring();
        let old = Envelope::seal(&keyring, &HERE, b"old").expect("seals");
        keyring.versions[0].state = VersionState::DecryptOnly;
        let material = KeyMaterial::parse(&[b'b'; 64]).expect("hex key");
        keyring.versions.push(KeyVersion {
            version: 2,
            state: VersionState::Primary,
            created_at: Timestamp::UNIX_EPOCH,
            material,
        });
        assert_eq!(
            Envelope::seal(&keyring, &HERE, b"new")
                .expect("seals")
                .key_version,
            2
        );
        assert_eq!(
            old.open(&keyring, &HERE)
                .expect("decrypt-only opens")
                .expose(),
            b"old"
        );
        keyring.versions[0].state = VersionState::Retired;
        assert_eq!(
            old.open(&keyring, &HERE)
                .expect("a retained retired version opens")
                .expose(),
            b"old"
        );
        keyring.versions.remove(0);
        assert_eq!(
            old.open(&keyring, &HERE).unwrap_err(),
            EnvelopeError::Key(KeyError::UnknownVersion(1))
        );
        keyring.name = "other".into();
        assert!(matches!(
            old.open(&keyring, &HERE),
            Err(EnvelopeError::WrongKey { .. })
        ));
    }

    #[test]
    fn malformed_envelopes_are_refused_with_a_reason() {
        let good = Envelope::seal(&keyring(), &HERE, b"x")
            .expect("seals")
            .to_string();
        let fields: Vec<&str> = good.split(':').collect();
        let with = |index: usize, value: &str| {
            let mut fields = fields.clone();
            fields[index] = value;
            fields.join(":")
        };
        assert_eq!(
            Envelope::parse("").unwrap_err(),
            EnvelopeError::NotAnEnvelope
        );
        assert_eq!(
            Envelope::parse("vault:v1:abc").unwrap_err(),
            EnvelopeError::NotAnEnvelope
        );
        assert!(matches!(
            Envelope::parse(&with(1, "v2")).unwrap_err(),
            EnvelopeError::UnsupportedFormat(_)
        ));
        assert!(matches!(
            Envelope::parse(&with(2, "Bad_Name")).unwrap_err(),
            EnvelopeError::Malformed(_)
        ));
        for version in ["0", "01", "-1", "x", "", "99999999999999999999"] {
            assert!(
                matches!(
                    Envelope::parse(&with(3, version)).unwrap_err(),
                    EnvelopeError::Malformed(_)
                ),
                "{version}"
            );
        }
        assert!(matches!(
            Envelope::parse(&with(4, "AAAA")).unwrap_err(),
            EnvelopeError::Malformed(_)
        ));
        assert!(matches!(
            Envelope::parse(&with(5, "AAAA")).unwrap_err(),
            EnvelopeError::Malformed(_)
        ));
        assert!(matches!(
            Envelope::parse(&format!("{good}:extra")).unwrap_err(),
            EnvelopeError::Malformed(_)
        ));
        let mut tampered = good.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ASCII");
        if let Ok(envelope) = Envelope::parse(&tampered) {
            assert_eq!(
                envelope.open(&keyring(), &HERE).unwrap_err(),
                EnvelopeError::Decrypt
            );
        }
    }

    proptest! {
        #[test]
        fn any_plaintext_round_trips(plaintext in proptest::collection::vec(any::<u8>(), 0..512), field in "[a-zA-Z0-9._-]{1,40}") {
            let keyring = keyring();
            let context = Context { field: &field, ..HERE };
            let text = Envelope::seal(&keyring, &context, &plaintext).expect("seals").to_string();
            let opened = Envelope::parse(&text).expect("parses").open(&keyring, &context).expect("opens");
            prop_assert_eq!(opened.expose(), plaintext.as_slice());
        }

        #[test]
        fn the_parser_never_panics(text in ".{0,300}") {
            let _ = Envelope::parse(&text);
        }

        #[test]
        fn the_parser_never_panics_on_near_envelopes(fields in proptest::collection::vec("[a-zA-Z0-9_=.-]{0,40}", 0..8)) {
            let _ = Envelope::parse(&format!("keyward:v1:{}", fields.join(":")));
        }
    }
}
