//! The hand tools behind `keyward hash`, `verify`, `genkey`, `encrypt` and `decrypt`:
//! they read secrets from standard input or files, never from arguments (which other
//! users can see in the process list).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Api;

use crate::crypto::envelope::{Context, Envelope, EnvelopeError};
use crate::crypto::hash::{self, Credential, parse_algorithm, parse_wso2_record};
use crate::crypto::keyring::KeyError;
use crate::crypto::{
    HashAlgorithm, KeyMaterial, Keyring, RecordError, SecretBytes, Verdict, VerifierRecord,
};

/// Why a hand tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot read the secret from standard input: {0}")]
    Stdin(std::io::Error),
    #[error("standard input is empty: pipe the secret in, e.g. `keyward verify … < secret.txt`")]
    EmptyInput,
    #[error("unknown algorithm {0:?}: use SHA-256, SHA-384, SHA-512, SHA-1 or MD5")]
    UnknownAlgorithm(String),
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a Secret manifest: {source}")]
    ParseFile {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("Secret {0} has no data")]
    NoData(String),
    #[error("Secret {secret}: {source}")]
    Record { secret: String, source: RecordError },
    #[error("{path} is not a WSO2 hashed-secret record: {source}")]
    Wso2Record { path: String, source: RecordError },
    #[error(transparent)]
    Kube(#[from] crate::Error),
    #[error("{path}: {source}")]
    Key { path: String, source: KeyError },
    #[error("--context must be NAMESPACE/NAME/FIELD, got {0:?}")]
    Context(String),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("{0}")]
    KeyringUnavailable(String),
    #[error("the ciphertext is not UTF-8 text")]
    NotText,
    #[error(transparent)]
    Random(#[from] crate::crypto::secret::RandomError),
}

/// Reads a secret from `input`, without one trailing newline (as `echo` adds).
pub fn read_secret(mut input: impl Read) -> Result<SecretBytes, ToolError> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).map_err(ToolError::Stdin)?;
    let mut secret = SecretBytes::new(bytes);
    let trimmed = secret
        .expose()
        .strip_suffix(b"\n")
        .map(|s| s.strip_suffix(b"\r").unwrap_or(s).to_vec());
    if let Some(trimmed) = trimmed {
        secret = SecretBytes::new(trimmed);
    }
    if secret.expose().is_empty() {
        return Err(ToolError::EmptyInput);
    }
    Ok(secret)
}

/// The algorithm named on the command line.
pub fn algorithm(name: &str) -> Result<HashAlgorithm, ToolError> {
    parse_algorithm(&name.to_ascii_uppercase())
        .ok_or_else(|| ToolError::UnknownAlgorithm(name.to_owned()))
}

/// The hex digest of `secret` under `algorithm`.
pub fn hash_hex(algorithm: HashAlgorithm, secret: &SecretBytes) -> String {
    hex::encode(hash::digest(algorithm, secret.expose()))
}

/// The verifier record in a Secret manifest file (YAML or JSON, as `kubectl get secret
/// -o yaml` writes it).
/// Encrypted records are decrypted with `keyring`, which they need.
pub fn record_from_file(
    path: &Path,
    keyring: Option<&Keyring>,
) -> Result<VerifierRecord, ToolError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ToolError::ReadFile {
        path: shown.clone(),
        source,
    })?;
    let secret: Secret = serde_yaml::from_str(&text).map_err(|source| ToolError::ParseFile {
        path: shown.clone(),
        source,
    })?;
    let namespace = secret.metadata.namespace.clone().unwrap_or_default();
    let name = secret.metadata.name.clone().unwrap_or_default();
    let record = record_from_secret(&shown, secret.data)?;
    match (record.encryption_key(), keyring) {
        (None, _) => Ok(record),
        (Some(_), Some(keyring)) => Ok(record.opened(keyring, &namespace, &name)?),
        (Some(key), None) => Err(ToolError::KeyringUnavailable(format!(
            "the record is encrypted under EncryptionKey {key:?}: pass its keyring with --keyring"
        ))),
    }
}

/// The verifier record in Secret `namespace/name` of the cluster.
pub async fn record_from_cluster(
    namespace: Option<&str>,
    name: &str,
) -> Result<VerifierRecord, ToolError> {
    let client = cluster_client().await?;
    let secrets: Api<Secret> = match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::default_namespaced(client.clone()),
    };
    let namespace = namespace.map_or_else(|| client.default_namespace().to_owned(), str::to_owned);
    let mut secret = secrets.get(name).await.map_err(crate::Error::from)?;
    let record = record_from_secret(name, secret.data.clone());
    crate::store::wipe(&mut secret);
    let record = record?;
    let Some(key) = record.encryption_key() else {
        return Ok(record);
    };
    let keyring = keyring_from_cluster(&client, &namespace, key).await?;
    Ok(record.opened(&keyring, &namespace, name)?)
}

fn record_from_secret(
    shown: &str,
    data: Option<BTreeMap<String, ByteString>>,
) -> Result<VerifierRecord, ToolError> {
    let data = data.ok_or_else(|| ToolError::NoData(shown.to_owned()))?;
    VerifierRecord::from_data(&data).map_err(|source| ToolError::Record {
        secret: shown.to_owned(),
        source,
    })
}

/// Checks `presented` against `record` now, and says what matched.
pub fn verify(record: &VerifierRecord, presented: &SecretBytes) -> (Verdict, String) {
    let verdict = record.verify(presented.expose(), Timestamp::now());
    let message = match verdict {
        Verdict::Current => format!(
            "valid: the current secret (version {}) of client {}",
            record.secret_version, record.client_id
        ),
        Verdict::Previous => {
            let until = record
                .previous
                .as_ref()
                .map(|previous| previous.expires_at.to_string())
                .unwrap_or_default();
            format!(
                "valid: the previous secret of client {}, accepted until {until}",
                record.client_id
            )
        }
        Verdict::Rejected => format!("invalid: not a secret of client {}", record.client_id),
    };
    (verdict, message)
}

/// The record WSO2 API Manager stores for a hashed client secret
/// (`{"hash":"…","algorithm":"SHA-256"}`), read from a file as copied from WSO2's
/// database or a verifier Secret's `wso2HashedSecret`. One trailing newline is allowed
/// (as `echo` and editors add); otherwise the text must be byte for byte what WSO2
/// writes, since WSO2 compares the stored text exactly.
pub fn wso2_record_from_file(path: &Path) -> Result<Credential, ToolError> {
    let shown = path.display().to_string();
    let text = std::fs::read(path).map_err(|source| ToolError::ReadFile {
        path: shown.clone(),
        source,
    })?;
    let text = text
        .strip_suffix(b"\n")
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .unwrap_or(&text);
    parse_wso2_record(text).map_err(|source| ToolError::Wso2Record {
        path: shown,
        source,
    })
}

/// Checks `presented` against a WSO2 record, in constant time, and says whether it matched.
pub fn verify_wso2(record: &Credential, presented: &SecretBytes) -> (Verdict, String) {
    let algorithm = record.algorithm().map_or("", HashAlgorithm::as_str);
    if record.matches(presented.expose()) {
        (
            Verdict::Current,
            format!("valid: the secret of this WSO2 record ({algorithm})"),
        )
    } else {
        (
            Verdict::Rejected,
            format!("invalid: not the secret of this WSO2 record ({algorithm})"),
        )
    }
}

/// Reads a keyring file, unwrapping it with the key in `kek` when given.
pub fn keyring_from_file(path: &Path, kek: Option<&Path>) -> Result<Keyring, ToolError> {
    let kek = kek.map(key_from_file).transpose()?;
    let shown = path.display().to_string();
    let json =
        zeroize::Zeroizing::new(std::fs::read(path).map_err(|source| ToolError::ReadFile {
            path: shown.clone(),
            source,
        })?);
    Keyring::from_json(&json, kek.as_ref()).map_err(|source| ToolError::Key {
        path: shown,
        source,
    })
}

/// A client from the kubeconfig (or the in-cluster service account).
pub async fn cluster_client() -> Result<kube::Client, ToolError> {
    Ok(kube::Client::try_default()
        .await
        .map_err(crate::Error::from)?)
}

/// The keyring of EncryptionKey `name` in `namespace` of the cluster.
pub async fn keyring_from_cluster(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Keyring, ToolError> {
    crate::store::keyring::load_key(client, namespace, name, None)
        .await?
        .map(|key| key.keyring)
        .map_err(ToolError::KeyringUnavailable)
}

/// Reads key material (hex or base64) from a file.
pub fn key_from_file(path: &Path) -> Result<KeyMaterial, ToolError> {
    let shown = path.display().to_string();
    let text =
        zeroize::Zeroizing::new(std::fs::read(path).map_err(|source| ToolError::ReadFile {
            path: shown.clone(),
            source,
        })?);
    KeyMaterial::parse(&text).map_err(|source| ToolError::Key {
        path: shown,
        source,
    })
}

/// Parses `NAMESPACE/NAME/FIELD`.
pub fn parse_context(text: &str) -> Result<(String, String, String), ToolError> {
    let parts: Vec<&str> = text.split('/').collect();
    match parts.as_slice() {
        [namespace, name, field]
            if !namespace.is_empty() && !name.is_empty() && !field.is_empty() =>
        {
            Ok((
                (*namespace).to_owned(),
                (*name).to_owned(),
                (*field).to_owned(),
            ))
        }
        _ => Err(ToolError::Context(text.to_owned())),
    }
}

/// Encrypts `plaintext` for the place `context` names.
pub fn encrypt(
    keyring: &Keyring,
    context: &(String, String, String),
    plaintext: &SecretBytes,
) -> Result<String, ToolError> {
    let context = Context {
        namespace: &context.0,
        name: &context.1,
        field: &context.2,
    };
    Ok(Envelope::seal(keyring, &context, plaintext.expose())?.to_string())
}

/// Decrypts an envelope found at the place `context` names.
pub fn decrypt(
    keyring: &Keyring,
    context: &(String, String, String),
    envelope: &SecretBytes,
) -> Result<SecretBytes, ToolError> {
    let text = std::str::from_utf8(envelope.expose()).map_err(|_| ToolError::NotText)?;
    let context = Context {
        namespace: &context.0,
        name: &context.1,
        field: &context.2,
    };
    Ok(Envelope::parse(text.trim())?.open(keyring, &context)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `text` to a file of its own under the temporary directory.
    fn file_with(name: &str, text: &[u8]) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("keyward-tools-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("temporary file");
        path
    }

    #[test]
    fn a_wso2_record_file_verifies_its_secret_only() {
        let digest = hash::digest(HashAlgorithm::Sha512, b"portal-secret");
        let mut text = hash::wso2_record(HashAlgorithm::Sha512, &digest);
        text.push(b'\n');
        let path = file_with("sha512", &text);
        let record = wso2_record_from_file(&path).expect("reads");
        std::fs::remove_file(&path).expect("removed");
        let secret = |text: &[u8]| SecretBytes::new(text.to_vec());
        assert_eq!(
            verify_wso2(&record, &secret(b"portal-secret")).0,
            Verdict::Current
        );
        assert_eq!(
            verify_wso2(&record, &secret(b"portal-secreT")).0,
            Verdict::Rejected
        );
    }

    #[test]
    fn a_wso2_record_file_not_in_wsos_exact_form_is_an_error_that_never_echoes_it() {
        let path = file_with(
            "hostile",
            br#"{ "hash":"s3cret-value","algorithm":"SHA-256"}"#,
        );
        let error = wso2_record_from_file(&path).expect_err("refused");
        std::fs::remove_file(&path).expect("removed");
        assert!(matches!(error, ToolError::Wso2Record { .. }), "{error:?}");
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }
}
