//! What re-encryption does to one Secret's data, decided without a cluster: which values
//! are envelopes of the key under a version other than the primary, their new envelopes
//! under the primary, and which of them do not decrypt. Also what a scan counts.
//!
//! A value is a candidate only if it is UTF-8 text that parses, trimmed, as an envelope
//! naming this key; anything else (plaintext, other keys' envelopes, binary data) is
//! never touched. Plaintexts exist here only inside [`SecretBytes`], between opening a
//! value and sealing it again, and are zeroized when dropped; nothing here logs or
//! formats a value.
//!
//! [`SecretBytes`]: crate::crypto::SecretBytes

use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use crate::crypto::Keyring;
use crate::crypto::envelope::{Context, Envelope, EnvelopeError};
use crate::crypto::hash::envelope_field;
use crate::crypto::keyring::KeyError;

/// A keyring with the version everything is re-encrypted to: its primary.
pub struct Target<'a> {
    keyring: &'a Keyring,
    version: i64,
}

impl<'a> Target<'a> {
    /// The target of `keyring`, which must have exactly one primary version.
    pub fn new(keyring: &'a Keyring) -> Result<Self, KeyError> {
        let version = keyring.primary()?.version;
        Ok(Self { keyring, version })
    }

    /// The primary version.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The EncryptionKey's name, which its envelopes carry.
    pub fn key_name(&self) -> &str {
        &self.keyring.name
    }
}

/// What to write back into one Secret's data.
#[derive(Default)]
pub struct Rewrite {
    /// Data keys whose value moves to the primary version, with the envelope that
    /// replaces it (same plaintext, same context, fresh nonce).
    pub changed: BTreeMap<String, ByteString>,
    /// Data keys holding an envelope of this key under another version that does not
    /// decrypt: altered, moved from another Secret or field, or under a version the
    /// keyring lacks or has retired.
    pub failed: Vec<String>,
}

/// A value decrypted but could not be sealed again (no randomness, no primary): the run
/// cannot go on, and no value was lost.
#[derive(Debug)]
pub struct Unsealable {
    pub field: String,
    pub source: EnvelopeError,
}

/// Decides what to rewrite in `data`, the data of Secret `namespace/name`.
pub fn rewrite(
    data: Option<&BTreeMap<String, ByteString>>,
    target: &Target<'_>,
    namespace: &str,
    name: &str,
) -> Result<Rewrite, Unsealable> {
    let mut decision = Rewrite::default();
    for (data_key, value) in data.into_iter().flatten() {
        let Some(envelope) = envelope_of(value, target.key_name()) else {
            continue;
        };
        if envelope.key_version == target.version {
            continue;
        }
        let context = Context {
            namespace,
            name,
            field: envelope_field(data_key),
        };
        let Ok(plaintext) = envelope.open(target.keyring, &context) else {
            decision.failed.push(data_key.clone());
            continue;
        };
        let sealed =
            Envelope::seal(target.keyring, &context, plaintext.expose()).map_err(|source| {
                Unsealable {
                    field: data_key.clone(),
                    source,
                }
            })?;
        decision.changed.insert(
            data_key.clone(),
            ByteString(sealed.to_string().into_bytes()),
        );
    }
    Ok(decision)
}

/// The envelope of EncryptionKey `key_name` that `value` holds, if it holds one.
fn envelope_of(value: &ByteString, key_name: &str) -> Option<Envelope> {
    let text = std::str::from_utf8(&value.0).ok()?;
    Envelope::parse(text.trim())
        .ok()
        .filter(|envelope| envelope.key_name == key_name)
}

/// Adds the envelopes of EncryptionKey `key_name` in `data` to `counts`, per version.
/// Nothing is decrypted: a scan needs no key material.
pub fn count_versions(
    data: Option<&BTreeMap<String, ByteString>>,
    key_name: &str,
    counts: &mut BTreeMap<i64, u64>,
) {
    for value in data.into_iter().flat_map(BTreeMap::values) {
        if let Some(envelope) = envelope_of(value, key_name) {
            *counts.entry(envelope.key_version).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hash::keys;
    use crate::crypto::keyring::{KeyMaterial, KeyVersion};
    use crate::crypto::{SecretBytes, VersionState};
    use k8s_openapi::jiff::Timestamp;

    const NAMESPACE: &str = "apps";
    const NAME: &str = "portal-verifier";

    fn material(byte: u8) -> KeyMaterial {
        KeyMaterial::parse(&[byte; 64]).expect("hex key")
    }

    /// Keyring `apim` with version 1 only, primary.
    fn first() -> Keyring {
        Keyring::new("apim", material(b'a'), Timestamp::UNIX_EPOCH)
    }

    /// `keyring` rotated: a new primary version, the old primary decrypt-only.
    fn rotated(mut keyring: Keyring, byte: u8) -> Keyring {
        for version in &mut keyring.versions {
            if version.state == VersionState::Primary {
                version.state = VersionState::DecryptOnly;
            }
        }
        let next = keyring
            .versions
            .iter()
            .map(|v| v.version)
            .max()
            .unwrap_or(0)
            + 1;
        keyring.versions.push(KeyVersion {
            version: next,
            state: VersionState::Primary,
            created_at: Timestamp::UNIX_EPOCH,
            material: material(byte),
        });
        keyring
    }

    fn sealed(keyring: &Keyring, name: &str, field: &str, plaintext: &[u8]) -> ByteString {
        let context = Context {
            namespace: NAMESPACE,
            name,
            field,
        };
        let envelope = Envelope::seal(keyring, &context, plaintext).expect("seals");
        ByteString(envelope.to_string().into_bytes())
    }

    fn open(keyring: &Keyring, value: &ByteString, field: &str) -> SecretBytes {
        let text = std::str::from_utf8(&value.0).expect("UTF-8");
        let context = Context {
            namespace: NAMESPACE,
            name: NAME,
            field,
        };
        Envelope::parse(text)
            .expect("parses")
            .open(keyring, &context)
            .expect("opens")
    }

    fn data(entries: Vec<(&str, ByteString)>) -> BTreeMap<String, ByteString> {
        entries
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect()
    }

    fn decide(data: &BTreeMap<String, ByteString>, keyring: &Keyring) -> Rewrite {
        let target = Target::new(keyring).expect("primary");
        rewrite(Some(data), &target, NAMESPACE, NAME).expect("seals")
    }

    #[test]
    fn older_versions_move_to_the_primary_with_their_plaintext_and_context() {
        let old = first();
        let mut with_newline = sealed(&old, NAME, "apiKey", b"api-key-plaintext");
        with_newline.0.push(b'\n');
        let data = data(vec![
            (
                keys::ENCRYPTED_CLIENT_SECRET,
                sealed(&old, NAME, keys::CLIENT_SECRET, b"current"),
            ),
            (
                keys::PREVIOUS_ENCRYPTED_CLIENT_SECRET,
                sealed(&old, NAME, keys::CLIENT_SECRET, b"previous"),
            ),
            ("apiKey", with_newline),
            (keys::CLIENT_ID, ByteString(b"portal-client".to_vec())),
        ]);
        let keyring = rotated(old, b'b');
        let decision = decide(&data, &keyring);
        assert!(decision.failed.is_empty());
        assert_eq!(
            decision.changed.keys().collect::<Vec<_>>(),
            [
                "apiKey",
                keys::ENCRYPTED_CLIENT_SECRET,
                keys::PREVIOUS_ENCRYPTED_CLIENT_SECRET
            ]
        );
        for (data_key, plaintext) in [
            ("apiKey", &b"api-key-plaintext"[..]),
            (keys::ENCRYPTED_CLIENT_SECRET, b"current"),
            (keys::PREVIOUS_ENCRYPTED_CLIENT_SECRET, b"previous"),
        ] {
            let value = &decision.changed[data_key];
            assert!(value.0.starts_with(b"keyward:v1:apim:2:"), "{data_key}");
            assert_eq!(
                open(&keyring, value, envelope_field(data_key)).expose(),
                plaintext
            );
        }
    }

    #[test]
    fn values_already_under_the_primary_and_everything_else_are_left_alone() {
        let old = first();
        let keyring = rotated(old.clone(), b'b');
        let other_key = Keyring::new("audit", material(b'c'), Timestamp::UNIX_EPOCH);
        let data = data(vec![
            ("current", sealed(&keyring, NAME, "current", b"x")),
            ("plain", ByteString(b"not an envelope".to_vec())),
            ("binary", ByteString(vec![0xff, 0xfe, 0x00])),
            ("otherKey", sealed(&other_key, NAME, "otherKey", b"x")),
            ("almost", ByteString(b"keyward:v1:apim:1:short".to_vec())),
        ]);
        let decision = decide(&data, &keyring);
        assert!(decision.changed.is_empty() && decision.failed.is_empty());
        assert!(
            rewrite(
                None,
                &Target::new(&keyring).expect("primary"),
                NAMESPACE,
                NAME
            )
            .expect("nothing to seal")
            .changed
            .is_empty()
        );
    }

    #[test]
    fn values_that_do_not_decrypt_are_failed_by_field_and_the_rest_still_move() {
        let old = first();
        let mut tampered = sealed(&old, NAME, "tampered", b"x");
        let last = tampered.0.len() - 2;
        tampered.0[last] = if tampered.0[last] == b'A' { b'B' } else { b'A' };
        let data = data(vec![
            ("good", sealed(&old, NAME, "good", b"fine")),
            ("moved", sealed(&old, "another-secret", "moved", b"x")),
            ("wrongField", sealed(&old, NAME, "elsewhere", b"x")),
            ("tampered", tampered),
            ("unknownVersion", {
                let future = rotated(rotated(first(), b'd'), b'e');
                sealed(&future, NAME, "unknownVersion", b"x")
            }),
        ]);
        let mut keyring = rotated(old, b'b');
        let decision = decide(&data, &keyring);
        assert_eq!(decision.changed.keys().collect::<Vec<_>>(), ["good"]);
        assert_eq!(
            decision.failed,
            ["moved", "tampered", "unknownVersion", "wrongField"]
        );

        // A value under a retired version (ciphertext kept elsewhere and brought back)
        // still decrypts with the stored keyring, and moves to the primary.
        keyring.versions[0].state = VersionState::Retired;
        let retired = decide(&data, &keyring);
        assert_eq!(retired.changed.keys().collect::<Vec<_>>(), ["good"]);
        assert_eq!(retired.failed.len(), 4);
    }

    #[test]
    fn a_keyring_without_one_primary_has_no_target() {
        let mut keyring = first();
        keyring.versions[0].state = VersionState::DecryptOnly;
        assert_eq!(Target::new(&keyring).err(), Some(KeyError::Primaries(0)));
    }

    #[test]
    fn scans_count_this_keys_envelopes_per_version_without_decrypting() {
        let old = first();
        let keyring = rotated(old.clone(), b'b');
        let other_key = Keyring::new("audit", material(b'c'), Timestamp::UNIX_EPOCH);
        let mut counts = BTreeMap::from([(1, 0), (2, 0)]);
        let data = data(vec![
            ("a", sealed(&old, NAME, "a", b"x")),
            ("b", sealed(&keyring, NAME, "b", b"x")),
            ("c", sealed(&keyring, "moved-here", "c", b"x")),
            ("d", sealed(&other_key, NAME, "d", b"x")),
            ("e", ByteString(b"plain".to_vec())),
        ]);
        count_versions(Some(&data), "apim", &mut counts);
        count_versions(None, "apim", &mut counts);
        assert_eq!(counts, BTreeMap::from([(1, 1), (2, 2)]));
    }
}
