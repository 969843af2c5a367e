//! The words the OAuthClient controller reports in, in one place: the reasons of its
//! conditions and Events, and the actions its Events name. They are part of the API —
//! alerts, `kubectl wait` and runbooks match on them — so each is written once, here,
//! and never renamed.

/// A secret was issued into the delivery Secret: the first of a client (`SecretIssued`,
/// `Ready` and the metric), never an Event of its own.
pub const ISSUED: &str = "Issued";
/// A secret was issued again because the verifier Secret was lost.
pub const REISSUED: &str = "Reissued";
/// A new secret replaced the current one: requested, scheduled, or needed by the spec.
pub const ROTATED: &str = "Rotated";
/// The secret of the import source was stored in the verifier record.
pub const IMPORTED: &str = "Imported";
/// The previous secret's grace period is over; it no longer verifies.
pub const PREVIOUS_SECRET_EXPIRED: &str = "PreviousSecretExpired";
/// The delivery Secret was deleted after its TTL.
pub const DELIVERY_SECRET_DELETED: &str = "DeliverySecretDeleted";
/// A Warning Event: a record was written with a legacy hash algorithm.
pub const LEGACY_ALGORITHM: &str = "LegacyAlgorithm";
/// `LegacyAlgorithm=True`: the record is hashed with a legacy algorithm.
pub const LEGACY_ALGORITHM_IN_USE: &str = "LegacyAlgorithmInUse";
/// `LegacyAlgorithm=False`: the record no longer is.
pub const MODERN_ALGORITHM: &str = "ModernAlgorithm";

// Refusals: the spec or the Secrets ask for what keyward will not do.

/// A Secret keyward would write exists and belongs to someone else.
pub const SECRET_CONFLICT: &str = "SecretConflict";
/// The verifier and the delivery would be one Secret.
pub const SECRET_NAME_CONFLICT: &str = "SecretNameConflict";
/// The import would read the client id from the secret's own key.
pub const IMPORT_KEYS_CONFLICT: &str = "ImportKeysConflict";
/// A legacy hash algorithm the policy does not allow.
pub const LEGACY_ALGORITHM_NOT_ALLOWED: &str = "LegacyAlgorithmNotAllowed";
/// A secret length outside what the schema allows.
pub const SECRET_LENGTH_INVALID: &str = "SecretLengthInvalid";
/// Plaintext secrets, which the policy does not allow.
pub const PLAINTEXT_NOT_ALLOWED: &str = "PlaintextNotAllowed";
/// An annotation of the client's Secrets that keyward did not write as it is.
pub const ANNOTATION_INVALID: &str = "AnnotationInvalid";
/// A verifier record keyward cannot read, or did not write as it is.
pub const VERIFIER_RECORD_INVALID: &str = "VerifierRecordInvalid";
/// An encrypted record that does not decrypt with the spec's key.
pub const RECORD_UNDECRYPTABLE: &str = "RecordUndecryptable";

// Waits: something the client needs is not there yet.

/// The EncryptionKey is missing or cannot be used yet.
pub const ENCRYPTION_KEY_NOT_READY: &str = "EncryptionKeyNotReady";
/// The import source Secret does not exist (yet).
pub const IMPORT_SOURCE_MISSING: &str = "ImportSourceMissing";
/// The import source Secret lacks the secret's key.
pub const IMPORT_SOURCE_KEY_MISSING: &str = "ImportSourceKeyMissing";
/// The import source's client id key holds no client id.
pub const IMPORT_CLIENT_ID_INVALID: &str = "ImportClientIdInvalid";
/// The record is sealed under a key version not every pod of its key's targets holds.
pub const KEY_NOT_DISTRIBUTED: &str = "KeyNotDistributed";

/// `Reconciling=True` of a client whose first secret is being issued.
pub const ISSUING: &str = "Issuing";

/// Whether a `Ready=False` of `reason` stalls the client: only a change by a person ends
/// it (`Stalled`, kstatus `Failed`), where otherwise keyward waits until it passes
/// (`Reconciling`, kstatus `InProgress`).
pub fn stalls(reason: &str) -> bool {
    match reason {
        // Someone else's Secret: keyward never takes it over.
        SECRET_CONFLICT => true,
        // The spec names one Secret for two jobs, or one key for two values: edit it.
        SECRET_NAME_CONFLICT | IMPORT_KEYS_CONFLICT => true,
        // The policy refuses what the spec asks: the spec (or the policy) must change.
        LEGACY_ALGORITHM_NOT_ALLOWED | PLAINTEXT_NOT_ALLOWED => true,
        // A length the schema refuses, stored before the rule: edit the spec.
        SECRET_LENGTH_INVALID => true,
        // Secrets keyward did not write as they are: a person restores or removes them.
        ANNOTATION_INVALID | VERIFIER_RECORD_INVALID => true,
        // The record is sealed under another key than the spec's: fix the reference.
        RECORD_UNDECRYPTABLE => true,
        // The EncryptionKey is on its way (its own status says whether it is stuck).
        ENCRYPTION_KEY_NOT_READY => false,
        // A Secret GitOps or a secrets tool may still create.
        IMPORT_SOURCE_MISSING => false,
        // The import source is there but lacks what it must hold: fix its content.
        IMPORT_SOURCE_KEY_MISSING | IMPORT_CLIENT_ID_INVALID => true,
        // The key version is reaching the pods of the key's targets.
        KEY_NOT_DISTRIBUTED => false,
        // Reasons of a ready client or of Events, never of `Ready=False`.
        ISSUED
        | REISSUED
        | ROTATED
        | IMPORTED
        | PREVIOUS_SECRET_EXPIRED
        | DELIVERY_SECRET_DELETED
        | LEGACY_ALGORITHM
        | LEGACY_ALGORITHM_IN_USE
        | MODERN_ALGORITHM
        | ISSUING => false,
        // A reason added without a decision here: better a failed wait than an endless one.
        _ => true,
    }
}

/// What keyward did or tried, as its Events name it.
pub mod action {
    /// A secret was issued.
    pub const ISSUE: &str = "Issue";
    /// A secret was imported.
    pub const IMPORT: &str = "Import";
    /// A previous secret expired.
    pub const EXPIRE: &str = "Expire";
    /// A delivery Secret was deleted.
    pub const DELETE: &str = "Delete";
    /// The client was reconciled and is not ready.
    pub const RECONCILE: &str = "Reconcile";
}
