//! The OAuthClient reconciler's decisions, as a pure function of the spec, what the
//! cluster holds ([`super::world`]) and the time: [`next_step`]. It never reads or
//! writes the cluster.
//!
//! The verifier Secret is the source of truth for what has been issued (its data and
//! `keyward.io/*` annotations), never the resource's status, which may be stale in the
//! watch cache: deciding from status could issue the same rotation twice.
//!
//! Everything read from a Secret may be hostile (anyone who can edit Secrets in the
//! namespace can write it): annotations that do not parse or lie in the future, and
//! records that no longer decrypt, are reported and left alone — never a panic, never a
//! silent re-issue. All time arithmetic is checked.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::reasons;
use super::world::{
    ImportSource, InvalidAnnotation, IssuedRecord, Observed, Opened, Verifier, annotations,
    generation_trusted, known_generation,
};
use crate::controller::options::Policy;
use crate::crd::oauth_client::{OAuthClientSpec, SecretNames, SecretType};
use crate::crypto::{Credential, HashAlgorithm, RecordError};

/// How far a recorded time may lie ahead of the operator's clock (clock skew between
/// replicas); anything later was not written by keyward.
const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(300);
/// The longest grace period the resource allows (`spec.rotation.gracePeriod`).
const MAX_GRACE: SignedDuration = SignedDuration::from_hours(720);
/// The longest a reconcile waits before looking again at a far deadline.
const MAX_RECHECK: Duration = Duration::from_secs(24 * 3600);

/// The entropy a generated secret may have, in bytes (as `spec.secretLength` allows).
pub const SECRET_LENGTHS: std::ops::RangeInclusive<i32> = 16..=128;

/// Whether the user asked for a rotation that `issued` does not answer yet: the spec's
/// counter is above the generation the secret is known to answer. A verifier annotated
/// from the future never hides such a request, since what status recorded wins.
fn rotation_requested(spec_generation: i64, issued: &IssuedRecord, observed: &Observed) -> bool {
    known_generation(spec_generation, issued, observed)
        .is_some_and(|answered| spec_generation > answered)
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
            Self::Initial => reasons::ISSUED,
            Self::VerifierLost => reasons::REISSUED,
            Self::Requested | Self::Scheduled | Self::SpecChanged => reasons::ROTATED,
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
    /// Nothing to do until `recheck_in` (if any). `not_ready` is why the client cannot be
    /// used yet although its record is current (its key version is not on the pods).
    UpToDate {
        recheck_in: Option<Duration>,
        not_ready: Option<(&'static str, String)>,
    },
}

impl Step {
    /// The step's name in logs.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Refuse { .. } => "refuse",
            Step::Wait { .. } => "wait",
            Step::Issue { .. } => "issue",
            Step::CompleteIssue => "complete-issue",
            Step::Import { .. } => "import",
            Step::ExpirePrevious => "expire-previous",
            Step::DeleteDelivery => "delete-delivery",
            Step::UpToDate { .. } => "up-to-date",
        }
    }
}

/// Decides the next step for `spec` given what the cluster holds at `now`.
pub fn next_step(
    spec: &OAuthClientSpec,
    observed: &Observed,
    policy: Policy,
    now: Timestamp,
) -> Step {
    if let Some(held) = held_back(spec, observed, policy, now) {
        return held;
    }
    if let Some(import) = &spec.import_from {
        return import_step(spec, observed, &import.secret_name, now);
    }
    match &observed.verifier {
        Verifier::Present(issued) => issued_step(spec, issued, observed, now),
        Verifier::Damaged(error) => damaged(error),
        Verifier::Absent => first_issue(spec, observed),
    }
}

/// What keeps any step from being taken, in the order it is reported: a Secret in the
/// way, a spec the policy refuses, bookkeeping keyward cannot have written, a key not
/// ready yet.
fn held_back(
    spec: &OAuthClientSpec,
    observed: &Observed,
    policy: Policy,
    now: Timestamp,
) -> Option<Step> {
    if let Some(name) = &observed.foreign_secret {
        return Some(Step::Refuse {
            reason: reasons::SECRET_CONFLICT,
            message: format!(
                "Secret {name:?} exists and is not owned by this OAuthClient; keyward will not overwrite it"
            ),
        });
    }
    if let Some(refusal) = refusal(spec, &observed.names, policy) {
        return Some(refusal);
    }
    if let Some(refusal) = untrusted(spec, observed, now) {
        return Some(refusal);
    }
    if let Some(Err(message)) = &observed.key {
        return Some(Step::Wait {
            reason: reasons::ENCRYPTION_KEY_NOT_READY,
            message: message.clone(),
        });
    }
    None
}

/// No verifier record: complete the issue the delivery Secret shows was interrupted, or
/// issue the client's first secret (or, when status shows one was issued before and the
/// verifier is lost, the next version, never one reused).
fn first_issue(spec: &OAuthClientSpec, observed: &Observed) -> Step {
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
    Step::Issue {
        version: last.saturating_add(1),
        client_id,
        cause,
    }
}

/// A verifier record is in place: complete an interrupted issue, rotate when asked, when
/// the spec needs a new secret or when the period is over; else keep house.
fn issued_step(
    spec: &OAuthClientSpec,
    issued: &IssuedRecord,
    observed: &Observed,
    now: Timestamp,
) -> Step {
    let record = &issued.record;
    if let Some(delivered) = &observed.delivery
        && delivered.secret_version > record.secret_version
    {
        return Step::CompleteIssue;
    }
    let next_version = record.secret_version.saturating_add(1);
    let client_id = spec
        .client_id
        .clone()
        .unwrap_or_else(|| record.client_id.clone());
    let rotation = spec.rotation.clone().unwrap_or_default();
    let issue = |cause| Step::Issue {
        version: next_version,
        client_id: client_id.clone(),
        cause,
    };
    if rotation_requested(rotation.generation, issued, observed) {
        return issue(IssueCause::Requested);
    }
    // Only an explicit rotation (above) may replace a record that no longer decrypts:
    // anything else would lock the client out without anyone deciding so.
    if matches!(issued.opened, Opened::Undecryptable) {
        return undecryptable(&observed.names.verifier);
    }
    if !credential_fits(&record.current, spec) || client_id != record.client_id {
        return issue(IssueCause::SpecChanged);
    }
    let rotate_at = rotation
        .period
        .and_then(|period| later(issued.issued_at, period.into()));
    if rotate_at.is_some_and(|at| at <= now) {
        return issue(IssueCause::Scheduled);
    }
    up_to_date_or_housekeeping(spec, issued, observed, rotate_at, now)
}

/// The record is encrypted under the spec's key and does not decrypt with it.
fn undecryptable(verifier: &str) -> Step {
    Step::Refuse {
        reason: reasons::RECORD_UNDECRYPTABLE,
        message: format!(
            "the encrypted secret in Secret {verifier:?} does not decrypt with spec.encryptionKeyRef's keyring (altered, copied from another Secret, or its key version is gone); keyward will not issue over it: restore the keyring or the record, or bump spec.rotation.generation to issue a new secret"
        ),
    }
}

/// Bookkeeping that keyward cannot have written: an annotation that does not parse, or
/// a time after now (or a previous secret valid longer than any grace period). Acting on
/// it could rotate too early, never, or crash on overflowing arithmetic.
fn untrusted(spec: &OAuthClientSpec, observed: &Observed, now: Timestamp) -> Option<Step> {
    if let Some(annotation) = &observed.invalid_annotation {
        return Some(annotation_invalid(annotation));
    }
    let latest = now.checked_add(CLOCK_SKEW).unwrap_or(now);
    if let Verifier::Present(issued) = &observed.verifier
        && let Some(refusal) = untrusted_record(spec, issued, observed, latest)
    {
        return Some(refusal);
    }
    if let Some(delivered) = &observed.delivery
        && implausible(delivered.written_at, latest)
    {
        return Some(in_future(&observed.names.delivery, annotations::WRITTEN_AT));
    }
    None
}

/// The verifier's bookkeeping, when keyward cannot have written it: a rotation
/// generation from the future, a time later than `latest`, or a previous secret valid
/// longer than any grace period.
fn untrusted_record(
    spec: &OAuthClientSpec,
    issued: &IssuedRecord,
    observed: &Observed,
    latest: Timestamp,
) -> Option<Step> {
    let verifier = &observed.names.verifier;
    let spec_generation = spec
        .rotation
        .as_ref()
        .map_or(0, |rotation| rotation.generation);
    // A generation from the future would make every bump up to it a no-op. A bump
    // above what status recorded is still acted on (the new secret rewrites it).
    if !generation_trusted(spec_generation, issued, observed)
        && !rotation_requested(spec_generation, issued, observed)
    {
        return Some(annotation_invalid(&InvalidAnnotation {
            secret: verifier.clone(),
            annotation: annotations::ROTATION_GENERATION,
            problem: "is above spec.rotation.generation",
        }));
    }
    if implausible(issued.issued_at, latest) {
        return Some(in_future(verifier, annotations::ISSUED_AT));
    }
    if issued
        .delivery_deleted_at
        .is_some_and(|at| implausible(at, latest))
    {
        return Some(in_future(verifier, annotations::DELIVERY_DELETED_AT));
    }
    let longest_grace = latest.checked_add(MAX_GRACE).unwrap_or(latest);
    if let Some(previous) = &issued.record.previous
        && (previous.expires_at > longest_grace || previous.expires_at < Timestamp::UNIX_EPOCH)
    {
        return Some(Step::Refuse {
            reason: reasons::VERIFIER_RECORD_INVALID,
            message: format!(
                "previousExpiresAt of Secret {verifier:?} lies before 1970 or further ahead than the longest grace period (720h); keyward did not write it so"
            ),
        });
    }
    None
}

/// Whether keyward cannot have written time `at`: after `latest` (now and the clock
/// skew allowed), or before 1970, which is no time keyward wrote either and status
/// could not even show.
fn implausible(at: Timestamp, latest: Timestamp) -> bool {
    at > latest || at < Timestamp::UNIX_EPOCH
}

/// Refuses to act on a Secret's `annotation`, which keyward did not write so.
fn annotation_invalid(invalid: &InvalidAnnotation) -> Step {
    Step::Refuse {
        reason: reasons::ANNOTATION_INVALID,
        message: format!(
            "annotation {} of Secret {:?} {}; keyward did not write it so and will not act on it: remove the annotation or restore its value",
            invalid.annotation, invalid.secret, invalid.problem
        ),
    }
}

/// Refuses to act on a time `annotation` of `secret` that keyward cannot have written.
fn in_future(secret: &str, annotation: &'static str) -> Step {
    annotation_invalid(&InvalidAnnotation {
        secret: secret.to_owned(),
        annotation,
        problem: "lies in the future or before 1970",
    })
}

/// The longest a refusal that the clock may lift waits before it is looked at again: a
/// time years ahead is rechecked now and then, never scheduled years ahead.
const CLOCK_RECHECK_CAP: Duration = Duration::from_secs(3600);

/// When the clock next changes what [`untrusted`] says of the times `observed` holds: a
/// time refused as lying in the future (or a previous secret valid longer than any grace
/// period) becomes acceptable once now catches up with it. `None` when no time waits on
/// the clock.
pub fn clock_recheck(observed: &Observed, now: Timestamp) -> Option<Duration> {
    let mut ahead: Vec<Timestamp> = Vec::new();
    if let Verifier::Present(issued) = &observed.verifier {
        ahead.push(issued.issued_at);
        ahead.extend(issued.delivery_deleted_at);
        if let Some(previous) = &issued.record.previous {
            // Acceptable once it lies within the longest grace period of now.
            let within = previous.expires_at.checked_sub(MAX_GRACE).ok();
            ahead.extend(within);
        }
    }
    ahead.extend(
        observed
            .delivery
            .as_ref()
            .map(|delivered| delivered.written_at),
    );
    let latest = now.checked_add(CLOCK_SKEW).unwrap_or(now);
    ahead
        .into_iter()
        .filter(|at| *at > latest)
        .map(|at| {
            let wait = latest.duration_until(at);
            Duration::try_from(wait)
                .unwrap_or(CLOCK_RECHECK_CAP)
                .min(CLOCK_RECHECK_CAP)
        })
        .min()
}

/// `at + by`, or `None` past the end of time.
fn later(at: Timestamp, by: Duration) -> Option<Timestamp> {
    at.checked_add(SignedDuration::try_from(by).ok()?).ok()
}

/// A verifier record keyward cannot read is left alone: overwriting it would lock out the
/// client without anyone deciding so.
fn damaged(error: &RecordError) -> Step {
    Step::Refuse {
        reason: reasons::VERIFIER_RECORD_INVALID,
        message: format!("{error}; delete the verifier Secret to issue a new secret"),
    }
}

/// What the operator's policy or the schema refuses of `spec`, whatever the cluster holds.
fn refusal(spec: &OAuthClientSpec, names: &SecretNames, policy: Policy) -> Option<Step> {
    // The resource's schema refuses both; these guard objects stored before it did.
    if names.verifier == names.delivery {
        return Some(Step::Refuse {
            reason: reasons::SECRET_NAME_CONFLICT,
            message: format!(
                "spec.verifierSecret.name and spec.deliverySecret.name both name Secret {:?}: the verifier must never hold the plaintext",
                names.verifier
            ),
        });
    }
    if let Some(import) = &spec.import_from
        && import.client_id_key.as_ref() == Some(&import.secret_key)
    {
        return Some(Step::Refuse {
            reason: reasons::IMPORT_KEYS_CONFLICT,
            message: "spec.importFrom.clientIdKey must differ from spec.importFrom.secretKey: the client id is shown in status, the secret must never be".into(),
        });
    }
    if spec.hash_algorithm.is_legacy()
        && !policy.allow_legacy_algorithms
        && spec.secret_type == SecretType::Hashed
    {
        return Some(Step::Refuse {
            reason: reasons::LEGACY_ALGORITHM_NOT_ALLOWED,
            message: format!(
                "spec.hashAlgorithm {} is a legacy algorithm; use SHA-256, SHA-384 or SHA-512, or start the operator with --allow-legacy-algorithms",
                spec.hash_algorithm.as_str()
            ),
        });
    }
    // The schema bounds it too; an object stored before it did must not make the
    // operator allocate whatever it says.
    if !SECRET_LENGTHS.contains(&spec.secret_length) {
        return Some(Step::Refuse {
            reason: reasons::SECRET_LENGTH_INVALID,
            message: format!(
                "spec.secretLength must be from {} to {} bytes",
                SECRET_LENGTHS.start(),
                SECRET_LENGTHS.end()
            ),
        });
    }
    match spec.secret_type {
        SecretType::Plaintext if !policy.allow_plaintext_secrets => Some(Step::Refuse {
            reason: reasons::PLAINTEXT_NOT_ALLOWED,
            message: "spec.secretType Plaintext is not allowed by the operator's policy; use Hashed, or start the operator with --allow-plaintext-secrets".into(),
        }),
        _ => None,
    }
}

/// An imported client: wait for what its source lacks, keep house while the record
/// holds the source's secret as the spec asks, else import it (again).
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
    let housekeeping = |issued| up_to_date_or_housekeeping(spec, issued, observed, None, now);
    let (secret, source_client_id) = match &observed.import_source {
        ImportSource::Present { secret, client_id } => (secret, client_id),
        ImportSource::Missing | ImportSource::NotConfigured => {
            return match issued {
                // Imported before; the source may be gone on purpose.
                Some(issued) => housekeeping(issued),
                None => Step::Wait {
                    reason: reasons::IMPORT_SOURCE_MISSING,
                    message: format!(
                        "waiting for Secret {source_name:?} named in spec.importFrom.secretName"
                    ),
                },
            };
        }
        ImportSource::MissingKey(key) => {
            return Step::Wait {
                reason: reasons::IMPORT_SOURCE_KEY_MISSING,
                message: format!("Secret {source_name:?} has no key {key:?} (spec.importFrom)"),
            };
        }
        ImportSource::InvalidClientId(key) => {
            return Step::Wait {
                reason: reasons::IMPORT_CLIENT_ID_INVALID,
                message: format!(
                    "key {key:?} of Secret {source_name:?} (spec.importFrom.clientIdKey) does not hold a client id: 8 to 255 characters of A-Z a-z 0-9 . _ ~ -"
                ),
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
            if issued.comparable().current.matches(secret.expose())
                && credential_fits(&issued.record.current, spec)
                && issued.record.client_id == client_id =>
        {
            housekeeping(issued)
        }
        _ => Step::Import {
            version: next_import_version(issued, observed),
            client_id,
        },
    }
}

/// The version an import writes: after the record's, or after the last status showed
/// when the record is gone, so a version number is never reused.
fn next_import_version(issued: Option<&IssuedRecord>, observed: &Observed) -> i64 {
    issued
        .map(|issued| issued.record.secret_version)
        .or(observed.status_secret_version)
        .unwrap_or(0)
        .saturating_add(1)
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

/// An issued record nothing asks to replace: drop an expired previous secret, delete a
/// delivery past its TTL, else nothing until the nearest deadline.
fn up_to_date_or_housekeeping(
    spec: &OAuthClientSpec,
    issued: &IssuedRecord,
    observed: &Observed,
    rotate_at: Option<Timestamp>,
    now: Timestamp,
) -> Step {
    let delivery = observed
        .delivery
        .as_ref()
        .filter(|_| spec.import_from.is_none());
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
        .and_then(|(delivered, ttl)| later(delivered.written_at, ttl.into()));
    if delete_delivery_at.is_some_and(|at| at <= now) {
        return Step::DeleteDelivery;
    }
    let next_deadline = [rotate_at, previous_expires_at, delete_delivery_at]
        .into_iter()
        .flatten()
        .min();
    let recheck_in = next_deadline.map(|at| {
        let wait = Duration::try_from(now.duration_until(at)).unwrap_or(Duration::ZERO);
        wait.saturating_add(Duration::from_secs(1)).min(MAX_RECHECK)
    });
    Step::UpToDate {
        recheck_in,
        not_ready: not_distributed(issued, observed),
    }
}

/// For an encrypted record: why the API manager cannot verify it yet, when the pods of
/// its key's targets do not hold the version it was sealed under.
fn not_distributed(issued: &IssuedRecord, observed: &Observed) -> Option<(&'static str, String)> {
    let Credential::Encrypted(envelope) = &issued.record.current else {
        return None;
    };
    let key = observed.key.as_ref()?.as_ref().ok()?;
    (!key.distributed(envelope.key_version)).then(|| {
        (
            reasons::KEY_NOT_DISTRIBUTED,
            format!(
                "the secret is sealed under version {} of EncryptionKey {:?}, which not every pod of its targets holds yet",
                envelope.key_version, envelope.key_name
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controller::oauth_client::world::fixtures::{at, issued, observed, spec};
    use crate::controller::oauth_client::world::{Delivered, RecordedGeneration, parse_annotation};
    use crate::crypto::{PreviousCredential, SecretBytes};

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
    fn a_rotation_generation_from_the_future_is_refused_and_never_hides_a_bump() {
        let at_generation =
            |generation: i64| spec(serde_json::json!({"rotation": {"generation": generation}}));
        // The verifier of secret version 1 claims generation 5; the spec is at 0.
        let tampered = |recorded: Option<RecordedGeneration>| {
            let mut observed = observed(Verifier::Present(Box::new(issued(1, 5, 100))));
            observed.status_rotation_generation = recorded;
            observed
        };
        let refused = |step: Step| match step {
            Step::Refuse { reason, message } => {
                assert_eq!(reason, "AnnotationInvalid");
                assert!(
                    message.contains(annotations::ROTATION_GENERATION),
                    "{message}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        };
        refused(next_step(
            &at_generation(0),
            &tampered(None),
            Policy::default(),
            at(200),
        ));
        // Status recorded that version 1 answers generation 0: every bump rotates, up to
        // the claimed generation and past it.
        let recorded = Some(RecordedGeneration {
            secret_version: 1,
            rotation_generation: 0,
        });
        refused(next_step(
            &at_generation(0),
            &tampered(recorded),
            Policy::default(),
            at(200),
        ));
        for bumped in [1, 5, 6] {
            let step = next_step(
                &at_generation(bumped),
                &tampered(recorded),
                Policy::default(),
                at(200),
            );
            assert_eq!(
                issue_of(step),
                (2, IssueCause::Requested),
                "bumped to {bumped}"
            );
        }
        // Without that record a bump still short of the claim is refused, never skipped.
        refused(next_step(
            &at_generation(4),
            &tampered(None),
            Policy::default(),
            at(200),
        ));
        // A record of another secret version says nothing about this one.
        let older = Some(RecordedGeneration {
            secret_version: 0,
            rotation_generation: 0,
        });
        refused(next_step(
            &at_generation(4),
            &tampered(older),
            Policy::default(),
            at(200),
        ));
        // A claim status recorded for this secret is keyward's own, even above a spec
        // whose counter was dropped from the manifest (the schema cannot refuse that).
        let lowered = {
            let mut observed = observed(Verifier::Present(Box::new(issued(1, 3, 100))));
            observed.status_rotation_generation = Some(RecordedGeneration {
                secret_version: 1,
                rotation_generation: 3,
            });
            observed
        };
        assert!(matches!(
            next_step(
                &spec(serde_json::json!({})),
                &lowered,
                Policy::default(),
                at(200)
            ),
            Step::UpToDate { .. }
        ));
        // A claim no later than the spec is keyward's own (written at issue).
        let issued_for_three = observed(Verifier::Present(Box::new(issued(1, 3, 100))));
        assert!(matches!(
            next_step(
                &at_generation(3),
                &issued_for_three,
                Policy::default(),
                at(200)
            ),
            Step::UpToDate { .. }
        ));
    }

    #[test]
    fn a_secret_length_the_schema_would_refuse_is_refused_not_allocated() {
        for length in [i32::MIN, -1, 0, 15, 129, i32::MAX] {
            let step = next_step(
                &spec(serde_json::json!({"secretLength": length})),
                &observed(Verifier::Absent),
                Policy::default(),
                at(0),
            );
            assert!(
                matches!(
                    step,
                    Step::Refuse {
                        reason: "SecretLengthInvalid",
                        ..
                    }
                ),
                "{length}: {step:?}"
            );
        }
        let step = next_step(
            &spec(serde_json::json!({"secretLength": 128})),
            &observed(Verifier::Absent),
            Policy::default(),
            at(0),
        );
        assert_eq!(issue_of(step), (1, IssueCause::Initial));
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
            matches!(
                step,
                Step::UpToDate {
                    recheck_in: None,
                    ..
                }
            ),
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
                ..
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
            matches!(step, Step::UpToDate { recheck_in: Some(delay), .. } if delay == Duration::from_secs(61)),
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
            uid: None,
            resource_version: None,
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
            uid: None,
            resource_version: None,
        });
        let ttl = spec(serde_json::json!({"deliverySecret": {"ttl": "30s"}}));
        assert!(matches!(
            next_step(&ttl, &observed, Policy::default(), at(29)),
            Step::UpToDate {
                recheck_in: Some(_),
                ..
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

    #[test]
    fn a_record_that_no_longer_decrypts_is_refused_unless_a_rotation_is_asked_for() {
        let mut record = issued(1, 0, 0);
        record.opened = Opened::Undecryptable;
        let observed = observed(Verifier::Present(Box::new(record)));
        assert!(matches!(
            next_step(
                &spec(serde_json::json!({})),
                &observed,
                Policy::default(),
                at(1)
            ),
            Step::Refuse {
                reason: "RecordUndecryptable",
                ..
            }
        ));
        let rotate = spec(serde_json::json!({"rotation": {"generation": 1}}));
        assert_eq!(
            issue_of(next_step(&rotate, &observed, Policy::default(), at(1))),
            (2, IssueCause::Requested)
        );
    }

    #[test]
    fn the_verifier_and_the_delivery_are_never_one_secret() {
        let same = spec(serde_json::json!({"deliverySecret": {"name": "portal-verifier"}}));
        let mut observed = observed(Verifier::Absent);
        observed.names = SecretNames::of("portal", &same);
        assert!(matches!(
            next_step(&same, &observed, Policy::default(), at(0)),
            Step::Refuse {
                reason: "SecretNameConflict",
                ..
            }
        ));
    }

    #[test]
    fn an_imported_client_id_read_from_the_secret_key_is_refused() {
        let import = spec(serde_json::json!({"importFrom": {
            "secretName": "source", "secretKey": "clientSecret", "clientIdKey": "clientSecret"}}));
        assert!(matches!(
            next_step(
                &import,
                &observed(Verifier::Absent),
                Policy::default(),
                at(0)
            ),
            Step::Refuse {
                reason: "ImportKeysConflict",
                ..
            }
        ));
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn annotations_that_do_not_parse_are_named_without_their_value() {
        let hostile = annotations(&[(annotations::ISSUED_AT, "tomorrow SECRET-VALUE")]);
        let error = parse_annotation::<Timestamp>(
            "portal-verifier",
            &hostile,
            annotations::ISSUED_AT,
            "is not an RFC 3339 time",
        )
        .expect_err("refused");
        assert_eq!(error.annotation, annotations::ISSUED_AT);
        let mut observed = observed(Verifier::Present(Box::new(issued(1, 0, 0))));
        observed.invalid_annotation = Some(error);
        match next_step(
            &spec(serde_json::json!({})),
            &observed,
            Policy::default(),
            at(0),
        ) {
            Step::Refuse { reason, message } => {
                assert_eq!(reason, "AnnotationInvalid");
                assert!(
                    message.contains("keyward.io/issued-at") && !message.contains("SECRET-VALUE")
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_time_refused_as_ahead_is_rechecked_when_the_clock_reaches_it() {
        let now = at(1_000_000);
        // Issued ten minutes ahead: acceptable once now is within the five minutes of
        // skew allowed, five minutes from now.
        let ahead = observed(Verifier::Present(Box::new(issued(1, 0, 1_000_600))));
        assert!(matches!(
            next_step(&spec(serde_json::json!({})), &ahead, Policy::default(), now),
            Step::Refuse {
                reason: "AnnotationInvalid",
                ..
            }
        ));
        assert_eq!(clock_recheck(&ahead, now), Some(Duration::from_secs(300)));
        let later = at(1_000_300);
        assert!(!matches!(
            next_step(
                &spec(serde_json::json!({})),
                &ahead,
                Policy::default(),
                later
            ),
            Step::Refuse { .. }
        ));
        assert_eq!(clock_recheck(&ahead, later), None);
        // Years ahead: looked at again within the hour, never scheduled years out.
        let far = observed(Verifier::Present(Box::new(issued(1, 0, 253_402_000_000))));
        assert_eq!(clock_recheck(&far, now), Some(CLOCK_RECHECK_CAP));
        // Nothing ahead: nothing waits on the clock.
        let current = observed(Verifier::Present(Box::new(issued(1, 0, 999_000))));
        assert_eq!(clock_recheck(&current, now), None);
    }

    proptest::proptest! {
        /// A refusal that some time of the Secrets' bookkeeping lies ahead always comes
        /// with a recheck, within the cap, and never panics.
        #[test]
        fn every_refused_time_ahead_has_a_recheck_within_the_cap(
            issued_at in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            now in 0i64..=4_102_444_800,
        ) {
            let observed = observed(Verifier::Present(Box::new(issued(1, 0, 0))));
            let mut observed = observed;
            if let Verifier::Present(record) = &mut observed.verifier {
                record.issued_at = Timestamp::from_second(issued_at).expect("in range");
            }
            let now = at(now);
            let recheck = clock_recheck(&observed, now);
            let skew = now.checked_add(CLOCK_SKEW).expect("now is early enough");
            proptest::prop_assert_eq!(recheck.is_some(), issued_at > skew.as_second());
            proptest::prop_assert!(recheck.is_none_or(|wait| wait <= CLOCK_RECHECK_CAP));
        }
    }

    proptest::proptest! {
        /// Whatever times the Secrets' bookkeeping claims — up to the end of time — and
        /// whatever the spec's periods, deciding never panics, and a time after now is
        /// refused rather than acted on.
        #[test]
        fn hostile_times_never_panic_and_future_ones_are_refused(
            issued_at in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            written_at in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            expires_at in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            now in 0i64..=4_102_444_800,
            period_hours in 1u64..=2_562_047,
            ttl_seconds in 60u64..=u64::from(u32::MAX),
        ) {
            let spec = spec(serde_json::json!({
                "rotation": {"period": format!("{period_hours}h"), "gracePeriod": "720h"},
                "deliverySecret": {"ttl": format!("{ttl_seconds}s")},
            }));
            let mut record = issued(1, 0, 0);
            record.issued_at = Timestamp::from_second(issued_at).expect("in range");
            record.record.previous = Some(PreviousCredential {
                credential: Credential::hashed(HashAlgorithm::Sha256, b"old"),
                expires_at: Timestamp::from_second(expires_at).expect("in range"),
            });
            let mut observed = observed(Verifier::Present(Box::new(record)));
            observed.delivery = Some(Delivered {
                secret_version: 1,
                client_id: "portal-client".into(),
                secret: SecretBytes::new(b"secret".to_vec()),
                written_at: Timestamp::from_second(written_at).expect("in range"),
                uid: None,
                resource_version: None,
            });
            let now = at(now);
            let step = next_step(&spec, &observed, Policy::default(), now);
            let skew = now.checked_add(CLOCK_SKEW).expect("now is early enough");
            let longest_grace = skew.checked_add(MAX_GRACE).expect("now is early enough");
            if issued_at > skew.as_second()
                || written_at > skew.as_second()
                || expires_at > longest_grace.as_second()
                || issued_at < 0
                || written_at < 0
                || expires_at < 0
            {
                let refused = matches!(
                    step,
                    Step::Refuse { reason: "AnnotationInvalid" | "VerifierRecordInvalid", .. }
                );
                proptest::prop_assert!(refused, "{:?}", step);
            }
        }
    }

    mod hostile_annotations {
        use std::collections::BTreeMap;

        use k8s_openapi::ByteString;
        use k8s_openapi::api::core::v1::Secret;
        use k8s_openapi::jiff::Timestamp;
        use kube::api::ObjectMeta;
        use proptest::prelude::*;

        use crate::controller::oauth_client::decide::{self, Step};
        use crate::controller::oauth_client::world::{self, annotations};
        use crate::controller::options::Policy;
        use crate::crd::oauth_client::SecretNames;
        use crate::crypto::hash::keys;
        use crate::crypto::{Credential, HashAlgorithm, VerifierRecord};

        /// The annotations keyward reads from its Secrets, each as its own keys name it.
        const READ: [&str; 5] = [
            annotations::SECRET_VERSION,
            annotations::ROTATION_GENERATION,
            annotations::ISSUED_AT,
            annotations::WRITTEN_AT,
            annotations::DELIVERY_DELETED_AT,
        ];

        /// A value: anything at all, or something close to what keyward writes.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                any::<i64>().prop_map(|number| number.to_string()),
                any::<i128>().prop_map(|number| number.to_string()),
                (-377_705_116_800_i64..=253_402_207_200_i64).prop_map(|second| {
                    Timestamp::from_second(second)
                        .map_or_else(|_| second.to_string(), |at| at.to_string())
                }),
                "[-+0-9TZ:. ]{0,40}",
            ]
        }

        fn annotated() -> impl Strategy<Value = BTreeMap<String, String>> {
            let key = prop_oneof![
                proptest::sample::select(READ.to_vec()).prop_map(str::to_owned),
                any::<String>(),
            ];
            proptest::collection::btree_map(key, value(), 0..8)
        }

        fn secret(
            name: &str,
            annotations: BTreeMap<String, String>,
            data: BTreeMap<String, ByteString>,
        ) -> Secret {
            Secret {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some("apps".to_owned()),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..Secret::default()
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// Whatever a namespace editor writes into the annotations of a client's verifier
            /// and delivery Secrets, reading them and deciding from them never panics, and a
            /// rotation generation above the spec's is never taken as answered.
            #[test]
            fn any_annotations_are_read_and_decided_on_without_a_panic(
                verifier_annotations in annotated(),
                delivery_annotations in annotated(),
                spec_generation in prop_oneof![0_i64..10, any::<i64>().prop_map(i64::abs)],
                now in -377_705_116_800_i64..=253_402_207_200_i64,
                grace in proptest::option::of(0_u64..2_592_000),
                ttl in proptest::option::of(10_u64..1_000_000),
                period in proptest::option::of(3600_u64..100_000_000),
            ) {
                let spec: crate::crd::oauth_client::OAuthClientSpec = serde_json::from_value(serde_json::json!({
                    "rotation": {
                        "generation": spec_generation,
                        "gracePeriod": grace.map(|seconds| format!("{seconds}s")),
                        "period": period.map(|seconds| format!("{seconds}s")),
                    },
                    "deliverySecret": {"ttl": ttl.map(|seconds| format!("{seconds}s"))},
                }))
                .expect("spec");
                let names = SecretNames::of("portal", &spec);
                let record = VerifierRecord {
                    client_id: "portal-client".into(),
                    secret_version: 3,
                    current: Credential::hashed(HashAlgorithm::Sha256, b"secret"),
                    previous: None,
                };
                let verifier = secret(&names.verifier, verifier_annotations, record.to_data());
                let (issued, invalid_annotation) =
                    world::issued_record(&verifier, record, &names, None, "apps");
                let delivery = secret(
                    &names.delivery,
                    delivery_annotations,
                    BTreeMap::from([
                        (keys::CLIENT_ID.to_owned(), ByteString(b"portal-client".to_vec())),
                        (keys::CLIENT_SECRET.to_owned(), ByteString(b"secret".to_vec())),
                    ]),
                );
                let (delivery, invalid_annotation) = match world::delivered(&delivery) {
                    Ok(delivery) => (delivery, invalid_annotation),
                    Err(invalid) => (None, invalid_annotation.or(Some(invalid))),
                };
                let above_spec = issued.rotation_generation > spec_generation;
                let observed = world::Observed {
                    names,
                    verifier: world::Verifier::Present(Box::new(issued)),
                    delivery,
                    import_source: world::ImportSource::NotConfigured,
                    status_secret_version: Some(3),
                    status_rotation_generation: None,
                    foreign_secret: None,
                    invalid_annotation,
                    key: None,
                };
                let now = Timestamp::from_second(now).expect("in range");
                let step = decide::next_step(&spec, &observed, Policy::default(), now);
                if above_spec {
                    prop_assert!(
                        matches!(&step, Step::Refuse { reason: "AnnotationInvalid", .. }),
                        "{step:?}"
                    );
                }
            }
        }
    }
}
