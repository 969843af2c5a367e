//! Renders the key in the form pods receive it (`spec.distribution.format`).

use serde::Serialize;
use zeroize::Zeroizing;

use crate::crd::encryption_key::KeyFormat;
use crate::crypto::keyring::{KeyError, Keyring, VersionState};

/// The file (or Secret key) name and content pods receive, and the key versions it
/// carries.
pub struct Rendered {
    pub file_name: &'static str,
    pub content: Zeroizing<String>,
    pub versions: Vec<i64>,
}

#[derive(Serialize)]
struct Wso2DeploymentToml<'a> {
    encryption: Wso2Encryption<'a>,
}

#[derive(Serialize)]
struct Wso2Encryption<'a> {
    key: &'a str,
}

/// Renders `keyring` as `format`. Formats that carry one key carry the primary version;
/// `Keyring` carries every version pods still need (retired ones are left out).
pub fn render(keyring: &Keyring, format: KeyFormat) -> Result<Rendered, KeyError> {
    let primary = keyring.primary()?;
    let only_primary = vec![primary.version];
    let hex_key = || Zeroizing::new(hex::encode(primary.material.expose()));
    Ok(match format {
        KeyFormat::Wso2Toml => {
            let key = hex_key();
            let table = Wso2DeploymentToml {
                encryption: Wso2Encryption { key: &key },
            };
            let content =
                toml::to_string(&table).map_err(|_| KeyError::Seal("cannot render TOML"))?;
            Rendered {
                file_name: "deployment.toml",
                content: Zeroizing::new(content),
                versions: only_primary,
            }
        }
        KeyFormat::Hex => Rendered {
            file_name: "key.hex",
            content: hex_key(),
            versions: only_primary,
        },
        KeyFormat::Base64 => {
            use base64::Engine;
            let content =
                base64::engine::general_purpose::STANDARD.encode(primary.material.expose());
            Rendered {
                file_name: "key.base64",
                content: Zeroizing::new(content),
                versions: only_primary,
            }
        }
        KeyFormat::Keyring => {
            let mut held = keyring.clone();
            held.versions
                .retain(|version| version.state != VersionState::Retired);
            Rendered {
                file_name: "keyring.json",
                content: held.to_json()?,
                versions: held
                    .versions
                    .iter()
                    .map(|version| version.version)
                    .collect(),
            }
        }
    })
}
