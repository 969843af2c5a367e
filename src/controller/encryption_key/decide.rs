//! The EncryptionKey reconciler's decisions, as a pure function of the spec, the
//! recorded status and what the cluster holds: [`next_step`] for the keyring, and
//! [`super::rotation`] for the rotation once the keyring is usable.
//!
//! Its one rule: never decide anything that loses key material some ciphertext may
//! need. A keyring that is gone, unreadable, foreign or at odds with `spec.source` is
//! reported and waited on, never replaced.

use subtle::ConstantTimeEq;

use super::reasons;

use crate::crd::encryption_key::{Distribution, EncryptionKeyStatus, KeyFormat, RestartPolicy};
use crate::crypto::{KeyMaterial, Keyring};
use crate::store::keyring::{KeyProblem, Stored};

/// What the decision needs from the cluster.
pub struct Observed {
    /// The key-encryption key, when `spec.keyEncryptionKeyRef` names one.
    pub kek: Option<Result<KeyMaterial, KeyProblem>>,
    /// The keyring Secret (unwrapped with the KEK when there is one).
    pub stored: Stored,
    /// The key material of `spec.source`, when set.
    pub source: Option<Result<KeyMaterial, KeyProblem>>,
}

/// A reason the key cannot be ready, and whether it is a fault that needs a person
/// (`Degraded`) rather than something to wait for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
    pub degraded: bool,
}

/// The one thing to do next.
pub enum Step {
    /// Nothing can be done until the problem is resolved.
    Report(Problem),
    /// There is no keyring and none was ever recorded: create one whose version 1 is
    /// `material` (from `spec.source`), or freshly generated when `None`.
    CreateKeyring { material: Option<KeyMaterial> },
    /// `spec.keyEncryptionKeyRef` was added after the keyring was stored in the clear:
    /// store it again, wrapped.
    WrapKeyring {
        keyring: Keyring,
        resource_version: Option<String>,
    },
    /// Render the keyring, project it into the targets, count the pods that hold it and
    /// take the rotation's next step. `resource_version` is the keyring Secret's, the
    /// precondition of a rotation's change to it.
    Distribute {
        keyring: Keyring,
        resource_version: Option<String>,
    },
}

/// What the schema refuses in `distribution` but an object stored before the rule may
/// still hold: WSO2 reads its key only at start-up, so without restarts its pods would
/// count as holding keys they never loaded.
pub fn refused_distribution(distribution: &Distribution) -> Option<Problem> {
    (distribution.format == KeyFormat::Wso2Toml && distribution.restart != RestartPolicy::Rolling)
        .then(|| Problem {
            reason: reasons::INVALID_DISTRIBUTION,
            message: "spec.distribution.restart must be Rolling when format is Wso2Toml: WSO2 API Manager reads its key only at start-up".to_owned(),
            degraded: true,
        })
}

/// Decides the next step for the keyring of EncryptionKey `name`.
pub fn next_step(name: &str, status: Option<&EncryptionKeyStatus>, observed: Observed) -> Step {
    let kek = match observed.kek {
        Some(Err(problem)) => return Step::Report(named(problem, Secret::KeyEncryptionKey)),
        Some(Ok(_)) => true,
        None => false,
    };
    let keyring_name = crate::store::keyring::secret_name(name);
    let (keyring, resource_version, unwrapped) = match observed.stored {
        Stored::Foreign => {
            return Step::Report(Problem {
                reason: reasons::SECRET_CONFLICT,
                message: format!(
                    "Secret {keyring_name:?} exists and is not this EncryptionKey's keyring; keyward will not overwrite it"
                ),
                degraded: true,
            });
        }
        Stored::Unreadable(error) => {
            return Step::Report(Problem {
                reason: reasons::KEYRING_UNREADABLE,
                message: format!(
                    "keyring Secret {keyring_name:?} cannot be read: {error}; restore it from backup — keyward never replaces a keyring"
                ),
                degraded: true,
            });
        }
        Stored::Absent if status.is_some_and(|status| !status.versions.is_empty()) => {
            return Step::Report(Problem {
                reason: reasons::KEYRING_MISSING,
                message: format!(
                    "keyring Secret {keyring_name:?} is gone but status records key versions; restore it from backup — a new key would make existing ciphertext unreadable"
                ),
                degraded: true,
            });
        }
        Stored::Absent => {
            return match observed.source {
                None => Step::CreateKeyring { material: None },
                Some(Ok(material)) => Step::CreateKeyring {
                    material: Some(material),
                },
                Some(Err(problem)) => Step::Report(named(problem, Secret::Source)),
            };
        }
        Stored::Present {
            keyring,
            resource_version,
            unwrapped,
        } => (keyring, resource_version, unwrapped),
    };
    if let Some(problem) = mismatch(&keyring, status, &keyring_name) {
        return Step::Report(problem);
    }
    if unwrapped && kek {
        return Step::WrapKeyring {
            keyring,
            resource_version,
        };
    }
    // spec.source is where version 1 came from. A source that is gone after the keyring
    // was made is fine (the keyring is the key now), and so are versions rotations added
    // since; a version 1 with other material is a contradiction a person must resolve.
    if let Some(Ok(material)) = &observed.source
        && !first_version_is(&keyring, material)
    {
        return Step::Report(Problem {
            reason: reasons::SOURCE_MISMATCH,
            message: format!(
                "the key in spec.source (fingerprint {}) is not version 1 of keyring Secret {keyring_name:?}; keyward never replaces a keyring: delete that Secret deliberately to start over, or remove spec.source",
                material.fingerprint()
            ),
            degraded: true,
        });
    }
    Step::Distribute {
        keyring,
        resource_version,
    }
}

/// A keyring that is not the one status recorded: a version with another fingerprint,
/// or the recorded primary missing (a wrong backup restored, a keyring swapped). Adopting
/// it would silently make earlier ciphertext undecryptable. Versions status lists that
/// the keyring no longer has are fine: retention drops retired ones.
fn mismatch(
    keyring: &Keyring,
    status: Option<&EncryptionKeyStatus>,
    keyring_name: &str,
) -> Option<Problem> {
    let status = status?;
    let differs = status.versions.iter().find(|recorded| {
        keyring
            .version(recorded.version)
            .is_ok_and(|version| version.material.fingerprint() != recorded.fingerprint)
    });
    let primary_gone = status
        .primary_version
        .is_some_and(|primary| keyring.version(primary).is_err());
    let message = match (differs, primary_gone) {
        (Some(recorded), _) => format!(
            "keyring Secret {keyring_name:?} holds version {} with another fingerprint than status records ({}); keyward will not use a keyring that would make existing ciphertext unreadable: restore the right keyring, or delete the EncryptionKey and its keyring deliberately",
            recorded.version, recorded.fingerprint
        ),
        (None, true) => format!(
            "keyring Secret {keyring_name:?} lacks the primary version {} that status records; restore the right keyring",
            status.primary_version.unwrap_or_default()
        ),
        (None, false) => return None,
    };
    Some(Problem {
        reason: reasons::KEYRING_MISMATCH,
        message,
        degraded: true,
    })
}

/// Whether version 1 of `keyring` is `material`; a keyring whose version 1 retention has
/// already dropped cannot contradict it.
fn first_version_is(keyring: &Keyring, material: &KeyMaterial) -> bool {
    keyring.version(1).map_or(true, |first| {
        bool::from(first.material.expose().ct_eq(material.expose()))
    })
}

/// The user Secrets key material is read from.
#[derive(Clone, Copy)]
enum Secret {
    Source,
    KeyEncryptionKey,
}

/// A problem with key material from a user Secret, for status.
fn named(problem: KeyProblem, secret: Secret) -> Problem {
    let (field, missing, no_key, invalid) = match secret {
        Secret::Source => (
            "spec.source.secretRef",
            reasons::SOURCE_SECRET_MISSING,
            reasons::SOURCE_KEY_MISSING,
            reasons::SOURCE_KEY_INVALID,
        ),
        Secret::KeyEncryptionKey => (
            "spec.keyEncryptionKeyRef",
            reasons::KEY_ENCRYPTION_KEY_SECRET_MISSING,
            reasons::KEY_ENCRYPTION_KEY_MISSING,
            reasons::KEY_ENCRYPTION_KEY_INVALID,
        ),
    };
    // A Secret that is not there yet may still come (GitOps, a secrets tool); one that
    // is there without a usable key waits for a person to fix its content.
    let (reason, message, degraded) = match problem {
        KeyProblem::Missing(name) => (
            missing,
            format!(
                "waiting for Secret {name:?} named in {field}; no key is generated in its place"
            ),
            false,
        ),
        KeyProblem::MissingKey(name, key) => (
            no_key,
            format!("Secret {name:?} named in {field} has no key {key:?}"),
            true,
        ),
        KeyProblem::Invalid(name, error) => (
            invalid,
            format!("Secret {name:?} named in {field}: {error}"),
            true,
        ),
    };
    Problem {
        reason,
        message,
        degraded,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::crd::encryption_key::KeyVersionStatus;

    fn key(byte: u8) -> KeyMaterial {
        KeyMaterial::parse(hex::encode([byte; 32]).as_bytes()).expect("key")
    }

    fn present(byte: u8) -> Stored {
        Stored::Present {
            keyring: Keyring::new("apim", key(byte), Timestamp::UNIX_EPOCH),
            resource_version: Some("7".into()),
            unwrapped: true,
        }
    }

    fn observed(stored: Stored) -> Observed {
        Observed {
            kek: None,
            stored,
            source: None,
        }
    }

    fn recorded() -> EncryptionKeyStatus {
        EncryptionKeyStatus {
            versions: vec![KeyVersionStatus {
                version: 1,
                state: "Primary".into(),
                created_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    Timestamp::UNIX_EPOCH,
                ),
                fingerprint: key(1).fingerprint(),
            }],
            ..EncryptionKeyStatus::default()
        }
    }

    fn reason(step: Step) -> &'static str {
        match step {
            Step::Report(problem) => problem.reason,
            Step::Distribute { .. } => "Distribute",
            Step::CreateKeyring { .. } => "CreateKeyring",
            Step::WrapKeyring { .. } => "WrapKeyring",
        }
    }

    #[test]
    fn wso2_without_restarts_is_refused_naming_the_field_and_other_formats_are_not() {
        let distribution = |format, restart| Distribution {
            format,
            restart,
            ..Distribution::default()
        };
        let refused = refused_distribution(&distribution(KeyFormat::Wso2Toml, RestartPolicy::None))
            .expect("refused");
        assert_eq!(refused.reason, "InvalidDistribution");
        assert!(refused.degraded);
        assert!(refused.message.contains("spec.distribution.restart"));
        for (format, restart) in [
            (KeyFormat::Wso2Toml, RestartPolicy::Rolling),
            (KeyFormat::Keyring, RestartPolicy::None),
            (KeyFormat::Hex, RestartPolicy::None),
        ] {
            assert_eq!(refused_distribution(&distribution(format, restart)), None);
        }
    }

    #[test]
    fn a_lost_keyring_is_reported_and_only_a_never_recorded_one_is_created() {
        let lost = next_step("apim", Some(&recorded()), observed(Stored::Absent));
        assert_eq!(reason(lost), "KeyringMissing");
        let fresh = next_step("apim", None, observed(Stored::Absent));
        assert!(matches!(fresh, Step::CreateKeyring { material: None }));
    }

    #[test]
    fn a_missing_source_is_waited_for_and_never_replaced_by_a_generated_key() {
        let mut waiting = observed(Stored::Absent);
        waiting.source = Some(Err(KeyProblem::Missing("k".into())));
        assert_eq!(
            reason(next_step("apim", None, waiting)),
            "SourceSecretMissing"
        );
    }

    #[test]
    fn a_source_without_a_usable_key_is_degraded_and_one_not_there_yet_is_not() {
        let invalid = KeyMaterial::parse(b"0011").expect_err("too short");
        for (problem, reason, degraded) in [
            (
                KeyProblem::Missing("k".into()),
                "SourceSecretMissing",
                false,
            ),
            (
                KeyProblem::MissingKey("k".into(), "key".into()),
                "SourceKeyMissing",
                true,
            ),
            (
                KeyProblem::Invalid("k".into(), invalid),
                "SourceKeyInvalid",
                true,
            ),
        ] {
            let mut source = observed(Stored::Absent);
            source.source = Some(Err(problem));
            let Step::Report(reported) = next_step("apim", None, source) else {
                panic!("{reason} is reported");
            };
            assert_eq!((reported.reason, reported.degraded), (reason, degraded));
        }
    }

    #[test]
    fn a_foreign_or_unreadable_keyring_is_never_overwritten() {
        assert_eq!(
            reason(next_step("apim", None, observed(Stored::Foreign))),
            "SecretConflict"
        );
        let unreadable = Stored::Unreadable(crate::crypto::keyring::KeyError::Unwrap(1));
        assert_eq!(
            reason(next_step("apim", None, observed(unreadable))),
            "KeyringUnreadable"
        );
    }

    #[test]
    fn a_source_that_is_not_in_the_keyring_is_a_mismatch_and_one_that_is_is_fine() {
        let mut other = observed(present(1));
        other.source = Some(Ok(key(2)));
        assert_eq!(reason(next_step("apim", None, other)), "SourceMismatch");
        let mut same = observed(present(1));
        same.source = Some(Ok(key(1)));
        assert_eq!(reason(next_step("apim", None, same)), "Distribute");
        let mut gone = observed(present(1));
        gone.source = Some(Err(KeyProblem::Missing("k".into())));
        assert_eq!(reason(next_step("apim", None, gone)), "Distribute");
    }

    #[test]
    fn a_plain_keyring_is_wrapped_once_a_key_encryption_key_is_named() {
        let mut wrapped = observed(present(1));
        wrapped.kek = Some(Ok(key(9)));
        assert_eq!(reason(next_step("apim", None, wrapped)), "WrapKeyring");
    }

    #[test]
    fn a_keyring_other_than_the_recorded_one_is_never_adopted() {
        let same = next_step("apim", Some(&recorded()), observed(present(1)));
        assert_eq!(reason(same), "Distribute");
        let other = next_step("apim", Some(&recorded()), observed(present(2)));
        assert_eq!(reason(other), "KeyringMismatch");
    }
}
