//! The OAuthClient reconciler's decisions, as a pure function of the spec, what the
//! cluster holds and the time: [`next_step`].
//!
//! The verifier Secret is the source of truth for what has been issued (its data and
//! `keyward.io/*` annotations), never the resource's status, which may be stale in the
//! watch cache: deciding from status could issue the same rotation twice.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::oauth_client::{OAuthClientSpec, SecretType};
use crate::crypto::envelope::EnvelopeError;
use crate::crypto::{Credential, HashAlgorithm, Keyring, RecordError, SecretBytes, VerifierRecord};

/// What the operator's flags allow.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    /// SHA-1 and MD5 may be used.
    pub allow_legacy_algorithms: bool,
    /// `Plaintext` secrets may be stored.
    pub allow_plaintext_secrets: bool,
}

/// The verifier Secret as found.
#[derive(Debug)]
pub enum Verifier {
    Absent,
    Damaged(RecordError),
    Present(Box<IssuedRecord>),
}

/// A readable verifier record and the bookkeeping kept beside it.
#[derive(Debug)]
pub struct IssuedRecord {
    pub record: VerifierRecord,
    /// The record with encrypted credentials decrypted, when it has them and the key is
    /// at hand; comparisons use it.
    pub opened: Option<VerifierRecord>,
    /// `spec.rotation.generation` when the current secret was issued.
    pub rotation_generation: i64,
    pub issued_at: Timestamp,
    /// When the delivery Secret was deleted after its TTL.
    pub delivery_deleted_at: Option<Timestamp>,
}

/// The delivery Secret as found.
#[derive(Debug)]
pub struct Delivered {
    pub secret_version: i64,
    pub client_id: String,
    pub secret: SecretBytes,
    pub written_at: Timestamp,
}

/// The import source as found.
#[derive(Debug)]
pub enum ImportSource {
    NotConfigured,
    /// The Secret does not exist (yet).
    Missing,
    /// The Secret exists but lacks the key.
    MissingKey(String),
    Present {
        secret: SecretBytes,
        client_id: Option<String>,
    },
}

/// Everything the decision needs from the cluster.
#[derive(Debug)]
pub struct Observed {
    pub verifier: Verifier,
    pub delivery: Option<Delivered>,
    pub import_source: ImportSource,
    /// Last `status.secretVersion`, so a re-issue after the verifier was deleted never
    /// reuses a version number.
    pub status_secret_version: Option<i64>,
    /// A Secret keyward would write exists but belongs to someone else.
    pub foreign_secret: Option<String>,
    /// For `Encrypted` secrets: the referenced EncryptionKey's keyring, or why it is not
    /// usable yet.
    pub keyring: Option<Result<Keyring, String>>,
}

/// Why a new secret is issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueCause {
    /// No secret existed.
    Initial,
    /// The verifier Secret disappeared; the old secret cannot be verified any more.
    VerifierLost,
    /// `spec.rotation.generation` was bumped.
    Requested,
    /// `spec.rotation.period` elapsed.
    Scheduled,
    /// The hash algorithm, secret type or client id changed, which needs a new secret.
    SpecChanged,
}

impl IssueCause {
    /// Event reason for this cause.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Initial => "Issued",
            Self::VerifierLost => "Reissued",
            Self::Requested | Self::Scheduled | Self::SpecChanged => "Rotated",
        }
    }
}

/// The one thing to do next.
#[derive(Debug)]
pub enum Step {
    /// The spec asks for something the policy or this version refuses.
    Refuse {
        reason: &'static str,
        message: String,
    },
    /// Something the client needs is not there (yet): the import source, the
    /// EncryptionKey. Never generate in its place.
    Wait {
        reason: &'static str,
        message: String,
    },
    /// Generate a secret, deliver it, then write the verifier record.
    Issue {
        version: i64,
        client_id: String,
        cause: IssueCause,
    },
    /// The delivery Secret holds a newer secret than the verifier (the operator stopped
    /// between the two writes): write the verifier record for it.
    CompleteIssue,
    /// Hash the imported plaintext into the verifier record.
    Import { version: i64, client_id: String },
    /// The previous secret's grace period is over: drop it from the record.
    ExpirePrevious,
    /// The delivery Secret's TTL is over: delete it.
    DeleteDelivery,
    /// Nothing to do until `recheck_in` (if any).
    UpToDate { recheck_in: Option<Duration> },
}

/// Decides the next step for `spec` given what the cluster holds at `now`.
pub fn next_step(
    spec: &OAuthClientSpec,
    observed: &Observed,
    policy: Policy,
    now: Timestamp,
) -> Step {
    if let Some(name) = &observed.foreign_secret {
        return Step::Refuse {
            reason: "SecretConflict",
            message: format!(
                "Secret {name:?} exists and is not owned by this OAuthClient; keyward will not overwrite it"
            ),
        };
    }
    if let Some(refusal) = refusal(spec, policy) {
        return refusal;
    }
    if let Some(Err(message)) = &observed.keyring {
        return Step::Wait {
            reason: "EncryptionKeyNotReady",
            message: message.clone(),
        };
    }
    if let Some(import) = &spec.import_from {
        return import_step(spec, observed, &import.secret_name, now);
    }
    let issued = match &observed.verifier {
        Verifier::Present(issued) => issued,
        Verifier::Damaged(error) => return damaged(error),
        Verifier::Absent => {
            let last = observed.status_secret_version.unwrap_or(0);
            if observed
                .delivery
                .as_ref()
                .is_some_and(|delivered| delivered.secret_version > last)
            {
                return Step::CompleteIssue;
            }
            let cause = if last == 0 {
                IssueCause::Initial
            } else {
                IssueCause::VerifierLost
            };
            let client_id = spec.client_id.clone().unwrap_or_default();
            return Step::Issue {
                version: last + 1,
                client_id,
                cause,
            };
        }
    };
    let record = &issued.record;
    if let Some(delivered) = &observed.delivery
        && delivered.secret_version > record.secret_version
    {
        return Step::CompleteIssue;
    }
    let next_version = record.secret_version + 1;
    let client_id = spec
        .client_id
        .clone()
        .unwrap_or_else(|| record.client_id.clone());
    let rotation = spec.rotation.clone().unwrap_or_default();
    if rotation.generation > issued.rotation_generation {
        return Step::Issue {
            version: next_version,
            client_id,
            cause: IssueCause::Requested,
        };
    }
    if !credential_fits(&record.current, spec) || client_id != record.client_id {
        return Step::Issue {
            version: next_version,
            client_id,
            cause: IssueCause::SpecChanged,
        };
    }
    let rotate_at = rotation
        .period
        .map(|period| issued.issued_at + duration(period.into()));
    if rotate_at.is_some_and(|at| at <= now) {
        return Step::Issue {
            version: next_version,
            client_id,
            cause: IssueCause::Scheduled,
        };
    }
    up_to_date_or_housekeeping(spec, issued, observed.delivery.as_ref(), rotate_at, now)
}

/// A verifier record keyward cannot read is left alone: overwriting it would lock out the
/// client without anyone deciding so.
fn damaged(error: &RecordError) -> Step {
    Step::Refuse {
        reason: "VerifierRecordInvalid",
        message: format!("{error}; delete the verifier Secret to issue a new secret"),
    }
}

fn refusal(spec: &OAuthClientSpec, policy: Policy) -> Option<Step> {
    if spec.hash_algorithm.is_legacy()
        && !policy.allow_legacy_algorithms
        && spec.secret_type == SecretType::Hashed
    {
        return Some(Step::Refuse {
            reason: "LegacyAlgorithmNotAllowed",
            message: format!(
                "spec.hashAlgorithm {} is a legacy algorithm; use SHA-256, SHA-384 or SHA-512, or start the operator with --allow-legacy-algorithms",
                spec.hash_algorithm.as_str()
            ),
        });
    }
    match spec.secret_type {
        SecretType::Plaintext if !policy.allow_plaintext_secrets => Some(Step::Refuse {
            reason: "PlaintextNotAllowed",
            message: "spec.secretType Plaintext is not allowed by the operator's policy; use Hashed, or start the operator with --allow-plaintext-secrets".into(),
        }),
        _ => None,
    }
}

fn import_step(
    spec: &OAuthClientSpec,
    observed: &Observed,
    source_name: &str,
    now: Timestamp,
) -> Step {
    let issued = match &observed.verifier {
        Verifier::Present(issued) => Some(issued.as_ref()),
        Verifier::Damaged(error) => return damaged(error),
        Verifier::Absent => None,
    };
    let (secret, source_client_id) = match &observed.import_source {
        ImportSource::Present { secret, client_id } => (secret, client_id),
        ImportSource::Missing | ImportSource::NotConfigured => {
            return match issued {
                // Imported before; the source may be gone on purpose.
                Some(issued) => up_to_date_or_housekeeping(spec, issued, None, None, now),
                None => Step::Wait {
                    reason: "ImportSourceMissing",
                    message: format!(
                        "waiting for Secret {source_name:?} named in spec.importFrom.secretName"
                    ),
                },
            };
        }
        ImportSource::MissingKey(key) => {
            return Step::Wait {
                reason: "ImportSourceKeyMissing",
                message: format!("Secret {source_name:?} has no key {key:?} (spec.importFrom)"),
            };
        }
    };
    // Empty means: generate one.
    let client_id = spec
        .client_id
        .clone()
        .or_else(|| source_client_id.clone())
        .or_else(|| issued.map(|issued| issued.record.client_id.clone()))
        .unwrap_or_default();
    match issued {
        Some(issued)
            if issued
                .opened
                .as_ref()
                .unwrap_or(&issued.record)
                .current
                .matches(secret.expose())
                && credential_fits(&issued.record.current, spec)
                && issued.record.client_id == client_id =>
        {
            up_to_date_or_housekeeping(spec, issued, None, None, now)
        }
        _ => Step::Import {
            version: next_import_version(issued, observed),
            client_id,
        },
    }
}

fn next_import_version(issued: Option<&IssuedRecord>, observed: &Observed) -> i64 {
    issued
        .map(|issued| issued.record.secret_version)
        .or(observed.status_secret_version)
        .unwrap_or(0)
        + 1
}

/// Whether the stored credential is of the kind and algorithm the spec asks for.
fn credential_fits(credential: &Credential, spec: &OAuthClientSpec) -> bool {
    match (credential, spec.secret_type) {
        (Credential::Hashed { algorithm, .. }, SecretType::Hashed) => {
            *algorithm == HashAlgorithm::from(spec.hash_algorithm)
        }
        (Credential::Plaintext(_), SecretType::Plaintext) => true,
        (Credential::Encrypted(envelope), SecretType::Encrypted) => spec
            .encryption_key_ref
            .as_ref()
            .is_some_and(|key| key.name == envelope.key_name),
        _ => false,
    }
}

fn up_to_date_or_housekeeping(
    spec: &OAuthClientSpec,
    issued: &IssuedRecord,
    delivery: Option<&Delivered>,
    rotate_at: Option<Timestamp>,
    now: Timestamp,
) -> Step {
    let previous_expires_at = issued
        .record
        .previous
        .as_ref()
        .map(|previous| previous.expires_at);
    if previous_expires_at.is_some_and(|at| at <= now) {
        return Step::ExpirePrevious;
    }
    let ttl = spec
        .delivery_secret
        .as_ref()
        .and_then(|delivery| delivery.ttl);
    let delete_delivery_at = delivery
        .zip(ttl)
        .map(|(delivered, ttl)| delivered.written_at + duration(ttl.into()));
    if delete_delivery_at.is_some_and(|at| at <= now) {
        return Step::DeleteDelivery;
    }
    let next_deadline = [rotate_at, previous_expires_at, delete_delivery_at]
        .into_iter()
        .flatten()
        .min();
    let recheck_in = next_deadline.map(|at| {
        let wait = now.duration_until(at);
        Duration::try_from(wait).unwrap_or(Duration::ZERO) + Duration::from_secs(1)
    });
    Step::UpToDate { recheck_in }
}

fn duration(value: Duration) -> SignedDuration {
    SignedDuration::try_from(value).unwrap_or(SignedDuration::MAX)
}

/// The credential the spec asks the verifier to keep for `secret`; `Encrypted` seals it
/// under `keyring`, bound to the verifier Secret `verifier` in `namespace`.
pub fn credential_for(
    spec: &OAuthClientSpec,
    secret: &SecretBytes,
    keyring: Option<&Keyring>,
    namespace: &str,
    verifier: &str,
) -> Result<Credential, EnvelopeError> {
    Ok(match (spec.secret_type, keyring) {
        (SecretType::Plaintext, _) => Credential::Plaintext(secret.clone()),
        (SecretType::Hashed, _) => {
            Credential::hashed(HashAlgorithm::from(spec.hash_algorithm), secret.expose())
        }
        (SecretType::Encrypted, Some(keyring)) => {
            Credential::encrypted(keyring, namespace, verifier, secret.expose())?
        }
        (SecretType::Encrypted, None) => {
            return Err(EnvelopeError::Encrypt(
                "the EncryptionKey's keyring is not loaded",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PreviousCredential;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid timestamp")
    }

    fn spec(json: serde_json::Value) -> OAuthClientSpec {
        serde_json::from_value(json).expect("spec parses")
    }

    fn issued(version: i64, rotation_generation: i64, issued_at: i64) -> IssuedRecord {
        IssuedRecord {
            record: VerifierRecord {
                client_id: "portal-client".into(),
                secret_version: version,
                current: Credential::hashed(HashAlgorithm::Sha256, b"secret"),
                previous: None,
            },
            opened: None,
            rotation_generation,
            issued_at: at(issued_at),
            delivery_deleted_at: None,
        }
    }

    fn observed(verifier: Verifier) -> Observed {
        Observed {
            verifier,
            delivery: None,
            import_source: ImportSource::NotConfigured,
            status_secret_version: None,
            foreign_secret: None,
            keyring: None,
        }
    }

    fn issue_of(step: Step) -> (i64, IssueCause) {
        match step {
            Step::Issue { version, cause, .. } => (version, cause),
            other => panic!("expected an issue, got {other:?}"),
        }
    }

    #[test]
    fn a_new_client_gets_version_one_and_a_lost_verifier_a_new_version() {
        let step = next_step(
            &spec(serde_json::json!({})),
            &observed(Verifier::Absent),
            Policy::default(),
            at(0),
        );
        assert_eq!(issue_of(step), (1, IssueCause::Initial));
        let mut lost = observed(Verifier::Absent);
        lost.status_secret_version = Some(4);
        assert_eq!(
            issue_of(next_step(
                &spec(serde_json::json!({})),
                &lost,
                Policy::default(),
                at(0)
            )),
            (5, IssueCause::VerifierLost)
        );
    }

    #[test]
    fn a_bumped_rotation_generation_rotates_once() {
        let bumped = spec(serde_json::json!({"rotation": {"generation": 2}}));
        let step = next_step(
            &bumped,
            &observed(Verifier::Present(Box::new(issued(3, 1, 0)))),
            Policy::default(),
            at(10),
        );
        assert_eq!(issue_of(step), (4, IssueCause::Requested));
        let step = next_step(
            &bumped,
            &observed(Verifier::Present(Box::new(issued(4, 2, 10)))),
            Policy::default(),
            at(11),
        );
        assert!(
            matches!(step, Step::UpToDate { recheck_in: None }),
            "{step:?}"
        );
    }

    #[test]
    fn a_periodic_rotation_waits_for_its_time_without_polling() {
        let periodic = spec(serde_json::json!({"rotation": {"period": "1h"}}));
        let step = next_step(
            &periodic,
            &observed(Verifier::Present(Box::new(issued(1, 0, 0)))),
            Policy::default(),
            at(600),
        );
        match step {
            Step::UpToDate {
                recheck_in: Some(delay),
            } => assert_eq!(delay, Duration::from_secs(3000 + 1)),
            other => panic!("expected a timed recheck, got {other:?}"),
        }
        let step = next_step(
            &periodic,
            &observed(Verifier::Present(Box::new(issued(1, 0, 0)))),
            Policy::default(),
            at(3600),
        );
        assert_eq!(issue_of(step), (2, IssueCause::Scheduled));
    }

    #[test]
    fn changing_the_algorithm_needs_a_new_secret() {
        let sha512 = spec(serde_json::json!({"hashAlgorithm": "SHA-512"}));
        let step = next_step(
            &sha512,
            &observed(Verifier::Present(Box::new(issued(1, 0, 0)))),
            Policy::default(),
            at(1),
        );
        assert_eq!(issue_of(step), (2, IssueCause::SpecChanged));
    }

    #[test]
    fn an_expired_previous_secret_is_dropped_and_its_expiry_scheduled_before() {
        let mut record = issued(2, 0, 0);
        record.record.previous = Some(PreviousCredential {
            credential: Credential::hashed(HashAlgorithm::Sha256, b"old"),
            expires_at: at(100),
        });
        let observed = observed(Verifier::Present(Box::new(record)));
        let step = next_step(
            &spec(serde_json::json!({})),
            &observed,
            Policy::default(),
            at(40),
        );
        assert!(
            matches!(step, Step::UpToDate { recheck_in: Some(delay) } if delay == Duration::from_secs(61)),
            "{step:?}"
        );
        let step = next_step(
            &spec(serde_json::json!({})),
            &observed,
            Policy::default(),
            at(100),
        );
        assert!(matches!(step, Step::ExpirePrevious), "{step:?}");
    }

    #[test]
    fn a_delivery_newer_than_the_verifier_completes_the_interrupted_issue() {
        let mut observed = observed(Verifier::Present(Box::new(issued(1, 0, 0))));
        observed.delivery = Some(Delivered {
            secret_version: 2,
            client_id: "portal-client".into(),
            secret: SecretBytes::new(b"new".to_vec()),
            written_at: at(5),
        });
        let step = next_step(
            &spec(serde_json::json!({"rotation": {"generation": 1}})),
            &observed,
            Policy::default(),
            at(6),
        );
        assert!(matches!(step, Step::CompleteIssue), "{step:?}");
    }

    #[test]
    fn the_delivery_secret_is_deleted_when_its_ttl_is_over() {
        let mut observed = observed(Verifier::Present(Box::new(issued(1, 0, 0))));
        observed.delivery = Some(Delivered {
            secret_version: 1,
            client_id: "portal-client".into(),
            secret: SecretBytes::new(b"secret".to_vec()),
            written_at: at(0),
        });
        let ttl = spec(serde_json::json!({"deliverySecret": {"ttl": "30s"}}));
        assert!(matches!(
            next_step(&ttl, &observed, Policy::default(), at(29)),
            Step::UpToDate {
                recheck_in: Some(_)
            }
        ));
        assert!(matches!(
            next_step(&ttl, &observed, Policy::default(), at(30)),
            Step::DeleteDelivery
        ));
    }

    #[test]
    fn policy_refusals_name_the_field_and_the_flag() {
        let legacy = spec(serde_json::json!({"hashAlgorithm": "SHA-1"}));
        match next_step(
            &legacy,
            &observed(Verifier::Absent),
            Policy::default(),
            at(0),
        ) {
            Step::Refuse { reason, message } => {
                assert_eq!(reason, "LegacyAlgorithmNotAllowed");
                assert!(
                    message.contains("spec.hashAlgorithm")
                        && message.contains("--allow-legacy-algorithms")
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let allowed = Policy {
            allow_legacy_algorithms: true,
            ..Policy::default()
        };
        assert_eq!(
            issue_of(next_step(
                &legacy,
                &observed(Verifier::Absent),
                allowed,
                at(0)
            )),
            (1, IssueCause::Initial)
        );
        let plaintext = spec(serde_json::json!({"secretType": "Plaintext"}));
        assert!(matches!(
            next_step(
                &plaintext,
                &observed(Verifier::Absent),
                Policy::default(),
                at(0)
            ),
            Step::Refuse {
                reason: "PlaintextNotAllowed",
                ..
            }
        ));
    }

    #[test]
    fn a_damaged_or_foreign_verifier_is_never_overwritten() {
        let damaged = observed(Verifier::Damaged(RecordError::Missing("hash")));
        assert!(matches!(
            next_step(
                &spec(serde_json::json!({})),
                &damaged,
                Policy::default(),
                at(0)
            ),
            Step::Refuse {
                reason: "VerifierRecordInvalid",
                ..
            }
        ));
        let mut foreign = observed(Verifier::Absent);
        foreign.foreign_secret = Some("portal-verifier".into());
        assert!(matches!(
            next_step(
                &spec(serde_json::json!({})),
                &foreign,
                Policy::default(),
                at(0)
            ),
            Step::Refuse {
                reason: "SecretConflict",
                ..
            }
        ));
    }

    #[test]
    fn an_import_waits_for_its_source_and_never_generates() {
        let import = spec(serde_json::json!({"importFrom": {"secretName": "source"}}));
        let mut waiting = observed(Verifier::Absent);
        waiting.import_source = ImportSource::Missing;
        assert!(matches!(
            next_step(&import, &waiting, Policy::default(), at(0)),
            Step::Wait {
                reason: "ImportSourceMissing",
                ..
            }
        ));
        let mut present = observed(Verifier::Present(Box::new(issued(1, 0, 0))));
        present.import_source = ImportSource::Present {
            secret: SecretBytes::new(b"secret".to_vec()),
            client_id: None,
        };
        assert!(matches!(
            next_step(&import, &present, Policy::default(), at(0)),
            Step::UpToDate { .. }
        ));
        present.import_source = ImportSource::Present {
            secret: SecretBytes::new(b"changed".to_vec()),
            client_id: None,
        };
        assert!(matches!(
            next_step(&import, &present, Policy::default(), at(0)),
            Step::Import { version: 2, .. }
        ));
    }
}
