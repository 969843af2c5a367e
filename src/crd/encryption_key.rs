//! `EncryptionKey`: one AES-256-GCM key shared by every pod of the API-manager
//! workloads, kept as a versioned keyring and rotated as a resumable process.
//!
//! The operator never writes `spec`; everything it decides lands in `status`, which
//! never holds key material (only versions, states and non-secret fingerprints).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::core::Duration;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::database::Database;
use super::{DNS_SUBDOMAIN, GO_DURATION, SecretKeyRef};

/// Desired state of a shared symmetric key.
// Each `printcolumn(...)` repeats `type_ = …`, which clippy mistakes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "keyward.io",
    version = "v1alpha1",
    kind = "EncryptionKey",
    namespaced,
    status = "EncryptionKeyStatus",
    shortname = "ek",
    category = "keyward",
    doc = "An AES-256-GCM key that keyward keeps in a versioned keyring, distributes to every pod of the target workloads, and rotates by re-encrypting what was written under older versions.",
    printcolumn(
        name = "Primary",
        type_ = "integer",
        json_path = ".status.primaryVersion"
    ),
    printcolumn(
        name = "In Sync",
        type_ = "integer",
        json_path = ".status.distribution.podsInSync"
    ),
    printcolumn(
        name = "Pods",
        type_ = "integer",
        json_path = ".status.distribution.podsTotal"
    ),
    printcolumn(
        name = "Rotation",
        type_ = "string",
        json_path = ".status.rotation.phase"
    ),
    printcolumn(
        name = "Re-encrypted",
        type_ = "integer",
        json_path = ".status.rotation.progress.done"
    ),
    printcolumn(
        name = "Of",
        type_ = "integer",
        json_path = ".status.rotation.progress.total"
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
    validation = Rule::new("self.metadata.name.size() <= 50")
        .message("metadata.name must be at most 50 characters: it is part of the pod-template annotation key keyward.io/keyring-hash.<name>")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.source) || (has(self.source) && self.source == oldSelf.source)")
    .message("spec.source is immutable: to use other key material, rotate or create a new EncryptionKey").field_path(".source"))]
#[x_kube(validation = Rule::new("!has(self.reencryption) || !has(self.reencryption.databases) || size(self.reencryption.databases) == 0 || !has(self.distribution) || self.distribution.format == 'Wso2Toml'")
    .message("spec.distribution.format must be Wso2Toml when spec.reencryption.databases is set: databases hold WSO2's ciphertext, which needs WSO2's two keys").field_path(".distribution.format"))]
#[x_kube(validation = Rule::new("has(oldSelf.source) || !has(self.source)")
    .message("spec.source can only be set when the EncryptionKey is created: to use other key material, rotate or create a new EncryptionKey").field_path(".source"))]
pub struct EncryptionKeySpec {
    /// Where the key material comes from. Absent: the operator generates it from the
    /// operating system's CSPRNG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<KeySource>,

    /// A key-encryption key under which the keyring is stored wrapped, so the keyring
    /// Secret at rest does not hold the plaintext key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_encryption_key_ref: Option<SecretKeyRef>,

    /// The workloads whose pods must all hold the key. Leave it out for a key that
    /// serves only Encrypted OAuthClients and the cipher tool; an empty list is refused,
    /// since it distributes to nothing while reading as if it distributed somewhere
    /// (typically a template that rendered no workload).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 32))]
    pub targets: Vec<DistributionTarget>,

    /// How the pods receive the key.
    #[serde(default)]
    pub distribution: Distribution,

    /// When the key rotates and how many retired versions stay available for decryption.
    #[serde(default)]
    pub rotation: KeyRotation,

    /// How ciphertext written under older versions is found and rewritten on rotation.
    #[serde(default)]
    pub reencryption: Reencryption,
}

/// User-supplied key material.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeySource {
    /// A Secret key holding 32 bytes as 64 hex characters or as base64 (e.g. the output
    /// of `openssl rand -hex 32`).
    pub secret_ref: SecretKeyRef,
}

/// A workload whose pods must hold the key: by name, or every one matching a selector.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.name) != has(self.selector)")
    .message("exactly one of name or selector must be set").field_path(".name"))]
pub struct DistributionTarget {
    /// `Deployment` or `StatefulSet`.
    pub kind: WorkloadKind,
    /// Name of the workload in the EncryptionKey's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: Option<String>,
    /// Every workload of `kind` in the namespace whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// The workload kinds keyward distributes keys to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

/// How pods receive the key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.projection != 'Env' || self.format != 'Keyring'")
    .message("spec.distribution.format must be Wso2Toml, Hex or Base64 when projection is Env").field_path(".format"))]
#[x_kube(validation = Rule::new("self.projection != 'Env' || self.restart == 'Rolling'")
    .message("spec.distribution.restart must be Rolling when projection is Env: a running container never sees a new environment").field_path(".restart"))]
#[x_kube(validation = Rule::new("self.format != 'Wso2Toml' || self.restart == 'Rolling'")
    .message("spec.distribution.restart must be Rolling when format is Wso2Toml: WSO2 API Manager reads its key only at start-up").field_path(".restart"))]
#[x_kube(validation = Rule::new("self.projection != 'Env' || self.format != 'Wso2Toml' || self.envName != self.oldKeyEnvName")
    .message("spec.distribution.oldKeyEnvName must differ from envName: each carries one of WSO2's two keys").field_path(".oldKeyEnvName"))]
pub struct Distribution {
    /// What the pods see: WSO2 API Manager's `[encryption]` settings (`Wso2Toml`: the
    /// current `key`, the `old_key` it still decrypts with, and `enable_key_id`), the
    /// primary key as `Hex` or `Base64`, or every decryptable version as a `Keyring`
    /// JSON file.
    #[serde(default)]
    pub format: KeyFormat,
    /// A file in a mounted volume (`Volume`) or an environment variable (`Env`).
    #[serde(default)]
    pub projection: Projection,
    /// Directory the volume is mounted at. A path a targeted container already mounts
    /// something else at (another key's volume, the workload's own) is refused with
    /// reason `DistributionConflict`; keyward never takes a mount over.
    #[serde(default = "default_mount_path")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/[^:]*$"))]
    pub mount_path: String,
    /// Name of the environment variable, for `Env`: the key in 64 hex characters
    /// (`Wso2Toml`, `Hex`) or base64 (`Base64`). A name a targeted container already
    /// sets otherwise is refused with reason `DistributionConflict`.
    #[serde(default = "default_env_name")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub env_name: String,
    /// Name of the environment variable holding WSO2's `old_key` in 64 hex characters,
    /// for `Env` with `Wso2Toml`: the version WSO2 still decrypts with, or the current
    /// key again when there is none.
    #[serde(default = "default_old_key_env_name")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub old_key_env_name: String,
    /// Containers that receive the key; empty means every container. An entry that
    /// names no container of any target workload, or a workload that has none of them,
    /// is reported with reason `ContainerNotFound`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub containers: Vec<String>,
    /// `Rolling` restarts the pods when the key changes; `None` leaves that to
    /// applications that reload the file themselves (not for `Wso2Toml`, which WSO2 reads
    /// only at start-up, nor for `Env`).
    #[serde(default)]
    pub restart: RestartPolicy,
}

impl Default for Distribution {
    fn default() -> Self {
        Self {
            format: KeyFormat::default(),
            projection: Projection::default(),
            mount_path: default_mount_path(),
            env_name: default_env_name(),
            old_key_env_name: default_old_key_env_name(),
            containers: Vec::new(),
            restart: RestartPolicy::default(),
        }
    }
}

fn default_mount_path() -> String {
    "/etc/keyward".to_owned()
}

fn default_env_name() -> String {
    "KEYWARD_ENCRYPTION_KEY".to_owned()
}

fn default_old_key_env_name() -> String {
    "KEYWARD_ENCRYPTION_OLD_KEY".to_owned()
}

/// The rendering of the key the pods receive.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum KeyFormat {
    /// WSO2 API Manager 4.7's two keys: the distribution Secret holds `key` and
    /// `old_key` (64 hex characters each; `old_key` is the current key again when no
    /// other version is needed) and a `deployment.toml` `[encryption]` table with both
    /// and `enable_key_id = true`.
    #[default]
    Wso2Toml,
    /// The primary key as 64 hex characters.
    Hex,
    /// The primary key as base64.
    Base64,
    /// Every decryptable version, as keyring JSON.
    Keyring,
}

/// The distribution Secret's entry holding WSO2's current `key` (format `Wso2Toml`).
pub const WSO2_KEY_ENTRY: &str = "key";
/// The distribution Secret's entry holding WSO2's `old_key` (format `Wso2Toml`).
pub const WSO2_OLD_KEY_ENTRY: &str = "old_key";

/// How the key reaches a container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Projection {
    #[default]
    Volume,
    Env,
}

/// What happens to the pods when the key they must hold changes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RestartPolicy {
    #[default]
    Rolling,
    None,
}

/// Key rotation settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyRotation {
    /// Bump to rotate now. It may only grow.
    #[serde(default)]
    #[schemars(range(min = 0))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("spec.rotation.generation may only increase"))]
    pub generation: i64,
    /// Rotate automatically this long after the primary version was created (at least 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = GO_DURATION))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('24h')").message("spec.rotation.period must be at least 24h"))]
    pub period: Option<Duration>,
    /// Retired versions kept for decrypting ciphertext that still lives elsewhere (in
    /// git, in backups).
    #[serde(default = "default_keep_retired_versions")]
    #[schemars(range(min = 0, max = 16))]
    pub keep_retired_versions: i32,
}

impl Default for KeyRotation {
    fn default() -> Self {
        Self {
            generation: 0,
            period: None,
            keep_retired_versions: default_keep_retired_versions(),
        }
    }
}

fn default_keep_retired_versions() -> i32 {
    2
}

/// Re-encryption settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Reencryption {
    /// Secrets holding ciphertext under this key. Default: the label
    /// `keyward.io/encryption-key=<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Secrets rewritten per batch.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 1000))]
    pub batch_size: i32,
    /// Upper bound on writes per second to the API server. The default, 1000, is above
    /// what one client writing a Secret at a time reaches; lower it to leave room on a
    /// small or busy control plane.
    #[serde(default = "default_writes_per_second")]
    #[schemars(range(min = 1, max = 10000))]
    pub writes_per_second: i32,
    /// A `batch/v1` Job template (`metadata` and `spec`, as a CronJob's `jobTemplate`)
    /// for ciphertext outside Kubernetes, such as an API manager's database. It runs
    /// beside the built-in re-encryption and must succeed too. Its containers get the
    /// Secret holding the old and new key versions mounted at
    /// `/var/run/keyward/key-versions` (`keyring.json`, `oldVersions`, `newVersion`) and
    /// named in `$KEYWARD_KEY_VERSIONS_SECRET`, with `$KEYWARD_OLD_VERSIONS` and
    /// `$KEYWARD_NEW_VERSION`; the Secret is deleted when the step ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "job_template_schema")]
    pub job_template: Option<serde_json::Value>,
    /// Databases where a WSO2 API Manager keeps its own ciphertext (PostgreSQL, MySQL or
    /// MariaDB): their columns are re-encrypted online, row by row, and counted per key
    /// id by the census.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(d, self.exists_one(e, e.name == d.name))")
        .message("spec.reencryption.databases names must be unique"))]
    pub databases: Vec<Database>,
}

/// An object the API server keeps as given: a Job template's schema is Kubernetes' own
/// and large, and keyward checks it when it builds the Job.
fn job_template_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

impl Default for Reencryption {
    fn default() -> Self {
        Self {
            selector: None,
            batch_size: default_batch_size(),
            writes_per_second: default_writes_per_second(),
            job_template: None,
            databases: Vec::new(),
        }
    }
}

/// Secrets listed and rewritten per page when `spec.reencryption.batchSize` is not set.
pub const DEFAULT_BATCH_SIZE: u32 = 100;
/// Write requests per second when `spec.reencryption.writesPerSecond` is not set: above
/// what one client writing a Secret at a time reaches (`kubectl replace`: 350–400 a
/// second on a small API server), so a rotation is never slower than the documented
/// manual procedure, and a bound on a large one. API Priority and Fairness still queues
/// the Job's requests behind the control plane's own.
pub const DEFAULT_WRITES_PER_SECOND: u32 = 1000;

fn default_batch_size() -> i32 {
    DEFAULT_BATCH_SIZE as i32
}

fn default_writes_per_second() -> i32 {
    DEFAULT_WRITES_PER_SECOND as i32
}

/// Observed state of a key. Never holds key material.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionKeyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Distributed`, `Rotating` and `Degraded`; while keyward works on the key
    /// (a rotation requested or running, the key reaching its pods, a Secret awaited)
    /// `Reconciling`, and when only a person can help `Stalled` (the kstatus conventions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Name of the keyring Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring_secret_name: Option<String>,

    /// The version new ciphertext is written under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_version: Option<i64>,

    /// Every version in the keyring.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<KeyVersionStatus>,

    /// How many pods hold the current keyring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<DistributionStatus>,

    /// `spec.rotation.generation` the last rotation answered (or the key started from);
    /// a larger one starts a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_generation: Option<i64>,

    /// The current or last rotation: every step is recorded here before it is taken,
    /// so an operator restarted at any point resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,
}

/// A rotation's phases, in order. The names are part of the API.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RotationPhase {
    /// WSO2 values in the key's databases that carry no key id (or are legacy AES/ECB)
    /// are rewritten under the current version with its key id, until a census finds
    /// none: from staging on, WSO2 decrypts such values with `old_key`, the new version.
    /// Only keys with databases to re-encrypt begin here.
    Backfilling,
    /// The new version is in the keyring as decrypt-only; waiting until every pod holds
    /// it, so no pod meets ciphertext it cannot read once the version is promoted.
    Staging,
    /// The new version is primary; waiting until every pod holds that, so nothing new
    /// is written under an old version before re-encryption starts.
    Promoting,
    /// The re-encryption Job rewrites every ciphertext under older versions.
    Reencrypting,
    /// A fresh scan checks that no ciphertext under an older version remains.
    Verifying,
    /// Older versions are retired (pods drop them); waiting until every pod holds that.
    Retiring,
    /// The rotation finished: every ciphertext and every pod is on the target version.
    Succeeded,
}

/// What started a rotation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RotationTrigger {
    /// `spec.rotation.generation` was bumped.
    Requested,
    /// `spec.rotation.period` elapsed since the primary version was created.
    Scheduled,
}

/// The state of the current or last rotation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    pub phase: RotationPhase,
    /// The version being rolled out.
    pub target_version: i64,
    /// The primary version when the rotation started.
    pub previous_version: i64,
    pub trigger: RotationTrigger,
    /// `spec.rotation.generation` this rotation answers; a larger one queues the next.
    pub generation: i64,
    pub started_at: Time,
    /// When the current phase began (its deadline counts from here).
    pub phase_started_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// The re-encryption Job of the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Failed re-encryption or verification attempts so far.
    #[serde(default)]
    pub attempts: i32,
    /// Re-encryption progress, as the Job reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ReencryptionProgress>,
    /// Ciphertexts per key version found by the last scan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scan: Vec<VersionCount>,
    /// Database values the last scan found without a key id (or legacy AES/ECB), which
    /// WSO2 decrypts with `old_key` whatever key wrote them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub without_key_id: i64,
    /// Why the last attempt failed, while the next one waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<RotationFailure>,
    /// When the next attempt may start (a capped backoff after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Time>,
}

/// The failure of a rotation attempt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationFailure {
    pub reason: String,
    pub message: String,
}

/// Re-encryption progress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReencryptionProgress {
    pub total: i64,
    pub done: i64,
    pub failed: i64,
    /// Of the failed, those whose Secret kept changing under the Job (a retry helps).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub contended: i64,
    /// Values that could not be re-encrypted, as namespace/name/field (never values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

/// Ciphertexts found under one key version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionCount {
    pub version: i64,
    pub ciphertexts: i64,
}

/// One version of the key, as status shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersionStatus {
    /// Version number, from 1.
    pub version: i64,
    /// `Primary`, `DecryptOnly` or `Retired`.
    pub state: String,
    /// When the version was created.
    pub created_at: Time,
    /// A non-secret fingerprint of the key material.
    pub fingerprint: String,
}

/// Distribution progress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DistributionStatus {
    /// Hash of the keyring every pod must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring_hash: Option<String>,
    /// The key versions pods hold once in sync: the primary for single-key formats,
    /// every version not retired for `Keyring`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<i64>,
    /// Ready pods that hold it.
    pub pods_in_sync: i32,
    /// Ready pods of all targets.
    pub pods_total: i32,
}

impl EncryptionKey {
    /// When `spec.rotation.period` next rotates the key, as status tells it: the primary
    /// version's creation plus the period. `None` without a period or a primary version.
    pub fn next_scheduled_rotation(&self) -> Option<k8s_openapi::jiff::Timestamp> {
        let period = self.spec.rotation.period?;
        let period =
            k8s_openapi::jiff::SignedDuration::try_from(std::time::Duration::from(period)).ok()?;
        let status = self.status.as_ref()?;
        let primary = status.primary_version?;
        let version = status.versions.iter().find(|v| v.version == primary)?;
        version.created_at.0.checked_add(period).ok()
    }
}
