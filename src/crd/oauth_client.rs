//! `OAuthClient`: one OAuth client's credentials. The user declares how the secret is
//! kept (hashed, encrypted or — only under policy — plaintext) and how it rotates; the
//! operator generates the credentials, writes the verifier record and delivers the
//! plaintext once.
//!
//! The operator never writes `spec`; everything it decides lands in `status`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::Duration;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DNS_SUBDOMAIN, GO_DURATION, SECRET_DATA_KEY};

/// Desired state of an OAuth client's credentials.
// Each `printcolumn(...)` repeats `type_ = …`, which clippy mistakes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "keyward.io",
    version = "v1alpha1",
    kind = "OAuthClient",
    namespaced,
    status = "OAuthClientStatus",
    shortname = "oac",
    category = "keyward",
    doc = "An OAuth client whose secret keyward generates, stores only as a hash (or ciphertext) for the verifier, and delivers in plaintext exactly once.",
    printcolumn(name = "Client ID", type_ = "string", json_path = ".status.clientId"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.secretType"),
    printcolumn(
        name = "Algorithm",
        type_ = "string",
        json_path = ".status.hashAlgorithm"
    ),
    printcolumn(
        name = "Version",
        type_ = "integer",
        json_path = ".status.secretVersion"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new("self.metadata.name.size() <= 63")
        .message("metadata.name must be at most 63 characters: it is the value of label keyward.io/oauth-client on the client's Secrets"),
    // On the root: the default names derive from metadata.name.
    validation = Rule::new("(has(self.spec.verifierSecret) && has(self.spec.verifierSecret.name) ? self.spec.verifierSecret.name : self.metadata.name + '-verifier') != (has(self.spec.deliverySecret) && has(self.spec.deliverySecret.name) ? self.spec.deliverySecret.name : self.metadata.name + '-credentials')")
        .message("spec.verifierSecret.name and spec.deliverySecret.name must name different Secrets (they default to <name>-verifier and <name>-credentials): the verifier must never hold the plaintext")
        .field_path(".spec.deliverySecret.name")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.clientId) || (has(self.clientId) && self.clientId == oldSelf.clientId)")
    .message("spec.clientId is immutable once set").field_path(".clientId"))]
#[x_kube(validation = Rule::new("self.secretType != 'Encrypted' || has(self.encryptionKeyRef)")
    .message("spec.encryptionKeyRef is required when spec.secretType is Encrypted").field_path(".encryptionKeyRef"))]
#[x_kube(validation = Rule::new("!has(self.encryptionKeyRef) || self.secretType == 'Encrypted'")
    .message("spec.encryptionKeyRef is only allowed when spec.secretType is Encrypted").field_path(".encryptionKeyRef"))]
#[x_kube(validation = Rule::new("!has(self.importFrom) || !has(self.rotation)")
    .message("spec.rotation cannot be combined with spec.importFrom: an imported secret rotates when its source Secret changes").field_path(".rotation"))]
#[x_kube(validation = Rule::new("!has(self.importFrom) || !has(self.clientId) || !has(self.importFrom.clientIdKey)")
    .message("spec.importFrom.clientIdKey cannot be combined with spec.clientId: the client id has one source").field_path(".importFrom.clientIdKey"))]
#[x_kube(validation = Rule::new("!has(self.importFrom) || !has(self.importFrom.clientIdKey) || self.importFrom.clientIdKey != (has(self.importFrom.secretKey) ? self.importFrom.secretKey : 'clientSecret')")
    .message("spec.importFrom.clientIdKey must differ from spec.importFrom.secretKey: the client id is shown in status, the secret must never be").field_path(".importFrom.clientIdKey"))]
pub struct OAuthClientSpec {
    /// The client id. Generated (URL-safe, 128 bits or more) when empty; immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 255), regex(pattern = r"^[A-Za-z0-9._~-]+$"))]
    pub client_id: Option<String>,

    /// How the secret is kept for the verifier: `Hashed` (only a hash, the default),
    /// `Encrypted` (AES-256-GCM ciphertext under `encryptionKeyRef`) or `Plaintext`
    /// (only when the operator's policy allows it).
    #[serde(default)]
    pub secret_type: SecretType,

    /// Hash algorithm of the verifier record. `SHA-1` and `MD5` exist for legacy
    /// verifiers and are refused unless the operator's policy allows legacy algorithms.
    #[serde(default)]
    pub hash_algorithm: HashAlgorithm,

    /// Entropy of a generated secret, in bytes.
    #[serde(default = "default_secret_length")]
    #[schemars(range(min = 16, max = 128))]
    pub secret_length: i32,

    /// The EncryptionKey (same namespace) whose primary version encrypts the secret;
    /// required when `secretType` is `Encrypted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key_ref: Option<EncryptionKeyRef>,

    /// When and how the secret is regenerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<ClientSecretRotation>,

    /// Adopt an existing plaintext secret instead of generating one: the migration path
    /// for clients that already exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_from: Option<ImportSource>,

    /// Where the verifier record (client id, hash, algorithm) is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier_secret: Option<VerifierSecret>,

    /// Where the plaintext is delivered to the client application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_secret: Option<DeliverySecret>,
}

fn default_secret_length() -> i32 {
    32
}

/// How a client secret is kept for the verifier.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SecretType {
    /// Only a hash of the secret is stored.
    #[default]
    Hashed,
    /// The secret is stored as AES-256-GCM ciphertext under an EncryptionKey.
    Encrypted,
    /// The secret is stored as is; allowed only under the operator's policy.
    Plaintext,
}

/// A hash algorithm for verifier records.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum HashAlgorithm {
    #[default]
    #[serde(rename = "SHA-256")]
    Sha256,
    #[serde(rename = "SHA-384")]
    Sha384,
    #[serde(rename = "SHA-512")]
    Sha512,
    /// Legacy; only under the operator's legacy-algorithm policy.
    #[serde(rename = "SHA-1")]
    Sha1,
    /// Legacy; only under the operator's legacy-algorithm policy.
    #[serde(rename = "MD5")]
    Md5,
}

impl HashAlgorithm {
    /// Whether the algorithm is kept only for legacy verifiers.
    pub fn is_legacy(self) -> bool {
        crate::crypto::HashAlgorithm::from(self).is_legacy()
    }

    /// The name as it appears in manifests and verifier records.
    pub fn as_str(self) -> &'static str {
        crate::crypto::HashAlgorithm::from(self).as_str()
    }
}

impl From<HashAlgorithm> for crate::crypto::HashAlgorithm {
    fn from(algorithm: HashAlgorithm) -> Self {
        match algorithm {
            HashAlgorithm::Sha256 => Self::Sha256,
            HashAlgorithm::Sha384 => Self::Sha384,
            HashAlgorithm::Sha512 => Self::Sha512,
            HashAlgorithm::Sha1 => Self::Sha1,
            HashAlgorithm::Md5 => Self::Md5,
        }
    }
}

/// A reference to an EncryptionKey in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionKeyRef {
    /// Name of the EncryptionKey.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
}

/// Rotation of a client secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientSecretRotation {
    /// Bump to issue a new secret now (the declarative "generate new secret"). It may
    /// only grow.
    #[serde(default)]
    #[schemars(range(min = 0))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("spec.rotation.generation may only increase"))]
    pub generation: i64,

    /// Issue a new secret automatically this long after the current one (at least 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = GO_DURATION))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1h')").message("spec.rotation.period must be at least 1h"))]
    pub period: Option<Duration>,

    /// How long the previous secret keeps verifying after a rotation (0s to 720h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = GO_DURATION))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('720h')").message("spec.rotation.gracePeriod must be at most 720h"))]
    pub grace_period: Option<Duration>,
}

/// An existing plaintext secret to adopt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportSource {
    /// Name of the Secret (same namespace) that holds the plaintext.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub secret_name: String,
    /// Key of the plaintext client secret in that Secret.
    #[serde(default = "default_import_secret_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_DATA_KEY))]
    pub secret_key: String,
    /// Key of the client id in that Secret, when the id comes from there too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_DATA_KEY))]
    pub client_id_key: Option<String>,
}

fn default_import_secret_key() -> String {
    "clientSecret".to_owned()
}

/// Where the verifier record goes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifierSecret {
    /// Name of the verifier Secret; defaults to `<name>-verifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: Option<String>,
}

/// Where the plaintext goes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySecret {
    /// Name of the delivery Secret; defaults to `<name>-credentials`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: Option<String>,

    /// Delete the delivery Secret this long after it was written (at least 10s), so the
    /// plaintext exists only until the client application has picked it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = GO_DURATION))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s')").message("spec.deliverySecret.ttl must be at least 10s"))]
    pub ttl: Option<Duration>,
}

/// Observed state of an OAuth client's credentials. Never holds secret material.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuthClientStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `SecretIssued` and, for legacy algorithms, `LegacyAlgorithm`; while
    /// keyward works on the client `Reconciling`, and when only a person can help
    /// `Stalled` (the kstatus conventions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The client id in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,

    /// Increases by one each time a new secret is issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_version: Option<i64>,

    /// The `spec.rotation.generation` the current secret (`secretVersion`) answers: a
    /// bump above it issues a new secret, whatever the verifier's annotations say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_generation: Option<i64>,

    /// Algorithm of the current verifier record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_algorithm: Option<String>,

    /// When the current secret was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Time>,

    /// Until when the previous secret still verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<Time>,

    /// Name of the verifier Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier_secret_name: Option<String>,

    /// Name of the delivery Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_secret_name: Option<String>,

    /// When the delivery Secret was deleted after its TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_secret_deleted_at: Option<Time>,

    /// For imported secrets: whether the verifier record holds the source's current
    /// secret, so the source Secret may be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_source_removable: Option<bool>,
}

/// The suffix of a client's verifier Secret's default name.
pub const VERIFIER_SUFFIX: &str = "-verifier";
/// The suffix of a client's delivery Secret's default name.
pub const DELIVERY_SUFFIX: &str = "-credentials";

/// Names of the Secrets an OAuthClient writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretNames {
    pub verifier: String,
    pub delivery: String,
}

impl SecretNames {
    /// The names from the spec, defaulting to `<name>-verifier` and `<name>-credentials`.
    pub fn of(name: &str, spec: &OAuthClientSpec) -> Self {
        let verifier = spec
            .verifier_secret
            .as_ref()
            .and_then(|secret| secret.name.clone());
        let delivery = spec
            .delivery_secret
            .as_ref()
            .and_then(|secret| secret.name.clone());
        Self {
            verifier: verifier.unwrap_or_else(|| format!("{name}{VERIFIER_SUFFIX}")),
            delivery: delivery.unwrap_or_else(|| format!("{name}{DELIVERY_SUFFIX}")),
        }
    }
}
