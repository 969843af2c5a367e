//! Renders the key in the form pods receive it (`spec.distribution.format`).

use serde::Serialize;
use zeroize::Zeroizing;

use crate::crd::encryption_key::{KeyFormat, WSO2_KEY_ENTRY, WSO2_OLD_KEY_ENTRY};
use crate::crypto::keyring::{KeyError, KeyVersion, Keyring, VersionState};

/// The distribution Secret's entries (file or Secret key name, content), and the key
/// versions they carry.
pub struct Rendered {
    /// The entry a volume mount shows first and a single-key variable reads.
    pub file_name: &'static str,
    pub entries: Vec<(&'static str, Zeroizing<String>)>,
    pub versions: Vec<i64>,
}

#[derive(Serialize)]
struct Wso2DeploymentToml<'a> {
    encryption: Wso2Encryption<'a>,
}

/// WSO2 API Manager's `[encryption]` table, its keys in the order WSO2 documents them.
#[derive(Serialize)]
struct Wso2Encryption<'a> {
    key: &'a str,
    old_key: &'a str,
    enable_key_id: bool,
}

/// Renders `keyring` as `format`. `Hex` and `Base64` carry the primary version;
/// `Wso2Toml` the primary as WSO2's `key` and the one decrypt-only version as its
/// `old_key` (the primary again when there is none, so WSO2 never falls back to a key
/// of its own); `Keyring` every version pods still need (retired ones are left out).
pub fn render(keyring: &Keyring, format: KeyFormat) -> Result<Rendered, KeyError> {
    let primary = keyring.primary()?;
    let hex_of = |version: &KeyVersion| Zeroizing::new(hex::encode(version.material.expose()));
    Ok(match format {
        KeyFormat::Wso2Toml => {
            let (primary, old) = keyring.wso2_keys()?;
            let (key, old_key) = (hex_of(primary), hex_of(old));
            let table = Wso2DeploymentToml {
                encryption: Wso2Encryption {
                    key: &key,
                    old_key: &old_key,
                    enable_key_id: true,
                },
            };
            let toml = toml::to_string(&table).map_err(|_| KeyError::Seal("cannot render TOML"))?;
            let mut versions = vec![primary.version];
            if old.version != primary.version {
                versions.push(old.version);
            }
            Rendered {
                file_name: "deployment.toml",
                entries: vec![
                    ("deployment.toml", Zeroizing::new(toml)),
                    (WSO2_KEY_ENTRY, key),
                    (WSO2_OLD_KEY_ENTRY, old_key),
                ],
                versions,
            }
        }
        KeyFormat::Hex => single("key.hex", hex_of(primary), primary.version),
        KeyFormat::Base64 => {
            use base64::Engine;
            let content =
                base64::engine::general_purpose::STANDARD.encode(primary.material.expose());
            single("key.base64", Zeroizing::new(content), primary.version)
        }
        KeyFormat::Keyring => {
            let mut held = keyring.clone();
            held.versions
                .retain(|version| version.state != VersionState::Retired);
            Rendered {
                file_name: "keyring.json",
                entries: vec![("keyring.json", held.to_json()?)],
                versions: held
                    .versions
                    .iter()
                    .map(|version| version.version)
                    .collect(),
            }
        }
    })
}

fn single(file_name: &'static str, content: Zeroizing<String>, version: i64) -> Rendered {
    Rendered {
        file_name,
        entries: vec![(file_name, content)],
        versions: vec![version],
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::crypto::KeyMaterial;

    fn material(byte: u8) -> KeyMaterial {
        KeyMaterial::parse(hex::encode([byte; 32]).as_bytes()).expect("32 bytes")
    }

    fn entry<'a>(rendered: &'a Rendered, name: &str) -> &'a str {
        let (_, content) = rendered
            .entries
            .iter()
            .find(|(entry, _)| *entry == name)
            .expect("entry rendered");
        content
    }

    fn wso2(keyring: &Keyring) -> Rendered {
        render(keyring, KeyFormat::Wso2Toml).expect("renders")
    }

    #[test]
    fn a_key_with_one_version_gives_wso2_that_version_as_both_keys() {
        let keyring = Keyring::new("apim", material(1), Timestamp::UNIX_EPOCH);
        let rendered = wso2(&keyring);
        let one = hex::encode([1u8; 32]);
        assert_eq!(entry(&rendered, "key"), one);
        assert_eq!(entry(&rendered, "old_key"), one);
        assert_eq!(rendered.versions, vec![1]);
        assert_eq!(
            entry(&rendered, "deployment.toml"),
            format!("[encryption]\nkey = \"{one}\"\nold_key = \"{one}\"\nenable_key_id = true\n")
        );
    }

    #[test]
    fn wso2_holds_both_versions_of_a_rotation_in_the_order_of_its_phase() {
        let (one, two) = (hex::encode([1u8; 32]), hex::encode([2u8; 32]));
        let mut keyring = Keyring::new("apim", material(1), Timestamp::UNIX_EPOCH);
        let target = keyring.stage(material(2), Timestamp::UNIX_EPOCH);

        let staged = wso2(&keyring);
        assert_eq!(
            (entry(&staged, "key"), entry(&staged, "old_key")),
            (&*one, &*two)
        );
        assert_eq!(staged.versions, vec![1, 2]);

        keyring.promote(target).expect("promotes");
        let promoted = wso2(&keyring);
        assert_eq!(
            (entry(&promoted, "key"), entry(&promoted, "old_key")),
            (&*two, &*one)
        );
        assert_eq!(promoted.versions, vec![2, 1]);

        keyring.retire_all_but_primary(2).expect("retires");
        let retired = wso2(&keyring);
        assert_eq!(
            (entry(&retired, "key"), entry(&retired, "old_key")),
            (&*two, &*two)
        );
        assert_eq!(retired.versions, vec![2]);
        assert!(
            !entry(&retired, "deployment.toml").contains(&one),
            "the old key is gone"
        );
    }

    #[test]
    fn a_keyring_wso2_cannot_hold_is_refused_not_guessed() {
        let mut keyring = Keyring::new("apim", material(1), Timestamp::UNIX_EPOCH);
        keyring.stage(material(2), Timestamp::UNIX_EPOCH);
        keyring.stage(material(3), Timestamp::UNIX_EPOCH);
        let refused = render(&keyring, KeyFormat::Wso2Toml).err();
        assert_eq!(refused, Some(KeyError::TooManyForWso2(2)));
        // Formats that carry every version, or only the primary, are unaffected.
        assert!(render(&keyring, KeyFormat::Keyring).is_ok());
        assert_eq!(
            render(&keyring, KeyFormat::Hex).expect("renders").versions,
            vec![1]
        );
    }

    #[test]
    fn single_key_formats_carry_the_primary_in_one_entry() {
        let keyring = Keyring::new("apim", material(7), Timestamp::UNIX_EPOCH);
        let hex = render(&keyring, KeyFormat::Hex).expect("renders");
        assert_eq!(hex.entries.len(), 1);
        assert_eq!(entry(&hex, "key.hex"), hex::encode([7u8; 32]));
        let base64 = render(&keyring, KeyFormat::Base64).expect("renders");
        assert_eq!(base64.file_name, "key.base64");
        assert_eq!(base64.entries.len(), 1);
    }
}
