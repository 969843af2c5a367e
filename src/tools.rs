//! The hand tools behind `keyward hash` and `keyward verify`: they read the secret from
//! standard input, never from arguments (which other users can see in the process list).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Api;

use crate::crd::oauth_client::HashAlgorithm;
use crate::crypto::hash::{self, parse_algorithm};
use crate::crypto::{RecordError, SecretBytes, Verdict, VerifierRecord};

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
    #[error(transparent)]
    Kube(#[from] crate::Error),
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
pub fn record_from_file(path: &Path) -> Result<VerifierRecord, ToolError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ToolError::ReadFile {
        path: shown.clone(),
        source,
    })?;
    let secret: Secret = serde_yaml::from_str(&text).map_err(|source| ToolError::ParseFile {
        path: shown.clone(),
        source,
    })?;
    record_from_secret(&shown, secret.data)
}

/// The verifier record in Secret `namespace/name` of the cluster.
pub async fn record_from_cluster(
    namespace: Option<&str>,
    name: &str,
) -> Result<VerifierRecord, ToolError> {
    let client = kube::Client::try_default()
        .await
        .map_err(crate::Error::from)?;
    let secrets: Api<Secret> = match namespace {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::default_namespaced(client),
    };
    let secret = secrets.get(name).await.map_err(crate::Error::from)?;
    record_from_secret(name, secret.data)
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
