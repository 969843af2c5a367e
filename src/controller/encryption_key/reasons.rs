//! The EncryptionKey controller's vocabulary: every reason it writes into a condition or
//! an Event, and the actions of its Events. Users match on these (alerts, `kubectl wait`,
//! dashboards): they are part of the API, and none changes without a note.
//!
//! The reasons a workload gives for keeping the key out (`ContainerNotFound`,
//! `DistributionConflict`) are the workload module's, see `workload::Blocked::reason`.

use crate::crd::encryption_key::RotationPhase;

// Why the key cannot be ready (`Ready` and, when a person is needed, `Degraded`), also
// the reason of the Warning Event published when one first appears.

/// A Secret keyward would write (the keyring, the distribution Secret) is someone else's.
pub const SECRET_CONFLICT: &str = "SecretConflict";
/// The keyring Secret exists but does not read as a keyring.
pub const KEYRING_UNREADABLE: &str = "KeyringUnreadable";
/// Status records versions, but the keyring Secret is gone.
pub const KEYRING_MISSING: &str = "KeyringMissing";
/// `spec.source` holds other material than the keyring's version 1.
pub const SOURCE_MISMATCH: &str = "SourceMismatch";
/// The keyring holds versions other than those status records.
pub const KEYRING_MISMATCH: &str = "KeyringMismatch";
/// The Secret `spec.source` names does not exist.
pub const SOURCE_SECRET_MISSING: &str = "SourceSecretMissing";
/// The Secret `spec.source` names has no such key.
pub const SOURCE_KEY_MISSING: &str = "SourceKeyMissing";
/// The key material of `spec.source` is not usable.
pub const SOURCE_KEY_INVALID: &str = "SourceKeyInvalid";
/// The Secret `spec.keyEncryptionKeyRef` names does not exist.
pub const KEY_ENCRYPTION_KEY_SECRET_MISSING: &str = "KeyEncryptionKeySecretMissing";
/// The Secret `spec.keyEncryptionKeyRef` names has no such key.
pub const KEY_ENCRYPTION_KEY_MISSING: &str = "KeyEncryptionKeyMissing";
/// The key-encryption key is not usable.
pub const KEY_ENCRYPTION_KEY_INVALID: &str = "KeyEncryptionKeyInvalid";
/// An object of a rotation's name (Job, ServiceAccount, Role, …) is someone else's.
pub const OBJECT_CONFLICT: &str = "ObjectConflict";
/// A rotation phase waited past its deadline for the pods.
pub const ROLLOUT_TIMEOUT: &str = "RolloutTimeout";
/// The API server refused the built-in re-encryption Job.
pub const REENCRYPTION_JOB_REFUSED: &str = "ReencryptionJobRefused";
/// `spec.reencryption.jobTemplate` cannot run.
pub const INVALID_JOB_TEMPLATE: &str = "InvalidJobTemplate";
/// The progress ConfigMap holds counts no Job wrote.
pub const PROGRESS_INVALID: &str = "ProgressInvalid";
/// Some values under an older version do not decrypt.
pub const UNDECRYPTABLE_CIPHERTEXT: &str = "UndecryptableCiphertext";
/// A scan still finds ciphertext under an older version.
pub const CIPHERTEXT_REMAINS: &str = "CiphertextRemains";
/// After backfilling, a scan still finds database values without a key id.
pub const KEY_IDS_MISSING: &str = "KeyIdsMissing";
/// A re-encryption Job failed.
pub const REENCRYPTION_FAILED: &str = "ReencryptionFailed";
/// `spec.distribution` asks for what its format cannot do (an object stored before the
/// schema refused it).
pub const INVALID_DISTRIBUTION: &str = "InvalidDistribution";
/// A target named in `spec.targets` does not exist (`Ready` and `Distributed`).
pub const TARGET_NOT_FOUND: &str = "TargetNotFound";

/// Whether a `Ready=False` of `reason` stalls the key: only a change by a person ends it
/// (`Stalled`, kstatus `Failed`), where otherwise keyward waits or retries until it
/// passes (`Reconciling`, kstatus `InProgress`).
pub fn stalls(reason: &str) -> bool {
    match reason {
        // Someone else's Secret: keyward never takes it over.
        SECRET_CONFLICT => true,
        // The keyring must be restored from backup; keyward never replaces one.
        KEYRING_UNREADABLE | KEYRING_MISSING => true,
        // Two sources of truth disagree about the key material: a person picks one.
        SOURCE_MISMATCH | KEYRING_MISMATCH => true,
        // A Secret GitOps or a secrets tool may still create: waiting for it is progress.
        SOURCE_SECRET_MISSING | KEY_ENCRYPTION_KEY_SECRET_MISSING => false,
        // The Secret is there but holds no usable key: someone has to fix its content.
        SOURCE_KEY_MISSING
        | SOURCE_KEY_INVALID
        | KEY_ENCRYPTION_KEY_MISSING
        | KEY_ENCRYPTION_KEY_INVALID => true,
        // A Job, Role or ServiceAccount of the rotation's name is someone else's.
        OBJECT_CONFLICT => true,
        // Pods have not taken the keyring within the deadline: they need looking at
        // (the rotation goes on, and the condition goes, once they do).
        ROLLOUT_TIMEOUT => true,
        // The API server refused the Job (quota, admission): retrying will not change that.
        REENCRYPTION_JOB_REFUSED => true,
        // The user's job template cannot run as written.
        INVALID_JOB_TEMPLATE => true,
        // The progress ConfigMap was written by something other than the Job.
        PROGRESS_INVALID => true,
        // Values no key version decrypts: no retry makes them readable.
        UNDECRYPTABLE_CIPHERTEXT => true,
        // Ciphertext written under an old version meanwhile: keyward re-encrypts it again.
        CIPHERTEXT_REMAINS => false,
        // Backfilling left values without a key id: something keeps writing them.
        KEY_IDS_MISSING => true,
        // The Job failed; the retries run, but its log says what a person must fix.
        REENCRYPTION_FAILED => true,
        // A spec the schema now refuses: it must be edited.
        INVALID_DISTRIBUTION => true,
        // A workload GitOps may still create, e.g. later in the same sync.
        TARGET_NOT_FOUND => false,
        // Pods are taking the keyring.
        DISTRIBUTING => false,
        // `workload::Blocked::reason`: a container the spec names is not in the workload,
        // or a volume or mount of the workload's own is in the way; its spec must change.
        "ContainerNotFound" | "DistributionConflict" => true,
        // Reasons of other conditions and of Events, never of `Ready=False`.
        KEY_DISTRIBUTED | IN_SYNC | ROLLING_OUT | AS_EXPECTED | IDLE | ROTATION_REQUESTED
        | KEY_CREATED | KEYRING_WRAPPED | DISTRIBUTED | ROTATION_STARTED => false,
        // A reason added without a decision here: better a failed wait than an endless one.
        _ => true,
    }
}

// How far distribution got (`Ready`, `Distributed`).

/// The key is being rolled out to the targets (`Ready` false).
pub const DISTRIBUTING: &str = "Distributing";
/// Every pod of the targets holds the current keyring (`Ready` true).
pub const KEY_DISTRIBUTED: &str = "KeyDistributed";
/// Every pod of the targets holds the current keyring (`Distributed` true).
pub const IN_SYNC: &str = "InSync";
/// Pods of the targets still lack the current keyring (`Distributed` false).
pub const ROLLING_OUT: &str = "RollingOut";
/// Nothing needs a person (`Degraded` false).
pub const AS_EXPECTED: &str = "AsExpected";
/// No rotation runs (`Rotating` false); a running one gives its phase as the reason.
pub const IDLE: &str = "Idle";
/// `spec.rotation.generation` asks for a rotation that has not started yet
/// (`Reconciling`); a running one gives its phase as the reason.
pub const ROTATION_REQUESTED: &str = "RotationRequested";

// Events of what keyward did.

/// The keyring Secret was created, with version 1.
pub const KEY_CREATED: &str = "KeyCreated";
/// The keyring was stored again, wrapped under the key-encryption key.
pub const KEYRING_WRAPPED: &str = "KeyringWrapped";
/// Every pod of the targets came to hold the keyring.
pub const DISTRIBUTED: &str = "Distributed";
/// A rotation started (in its first phase: Backfilling or Staging).
pub const ROTATION_STARTED: &str = "RotationStarted";

/// The Event reason of a rotation entering `phase` after its first: one per phase, so
/// `kubectl describe` lists each instead of folding them into one series.
pub fn phase_event(phase: RotationPhase) -> &'static str {
    match phase {
        RotationPhase::Backfilling => "RotationBackfilling",
        RotationPhase::Staging => "RotationStaging",
        RotationPhase::Promoting => "RotationPromoting",
        RotationPhase::Reencrypting => "RotationReencrypting",
        RotationPhase::Verifying => "RotationVerifying",
        RotationPhase::Retiring => "RotationRetiring",
        RotationPhase::Succeeded => "RotationSucceeded",
    }
}

// The actions of Events: what keyward did or tried.

/// Creating the keyring.
pub const CREATE: &str = "Create";
/// Wrapping the keyring under the key-encryption key.
pub const WRAP: &str = "Wrap";
/// Distributing the key to the targets.
pub const DISTRIBUTE: &str = "Distribute";
/// A step of a rotation.
pub const ROTATE: &str = "Rotate";
/// Any reconcile that found a problem.
pub const RECONCILE: &str = "Reconcile";
