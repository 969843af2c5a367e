//! The status of an EncryptionKey, as a pure function of the status it had, what one
//! reconcile found, the time and the key's generation: [`next`] computes it, with the
//! Events of each transition a user would want to see, and the reconcile writes it once.
//!
//! It never holds key material: the keyring reaches it as [`Listed`], fingerprints only.
//! Conditions keep their transition times while their status holds, so a reconcile that
//! finds nothing new computes the status it read and writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use super::decide::Problem;
use super::distribute::Outcome;
use super::reasons;
use crate::controller::context::Notice;
use crate::crd::encryption_key::{
    DistributionStatus, EncryptionKeyStatus, KeyVersionStatus, RotationPhase, RotationStatus,
};
use crate::crd::{
    ConditionStatus, ConditionType, EncryptionKey, Progress, find_condition, is_true,
    set_condition, set_progress,
};
use crate::crypto::Keyring;
use crate::crypto::keyring::KeyVersion;
use crate::store::keyring as keyring_store;

/// The keyring as status lists it: its versions with their states and fingerprints,
/// never the material.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    primary_version: Option<i64>,
    versions: Vec<KeyVersionStatus>,
}

impl Listed {
    /// What status shows of `keyring`.
    pub fn of(keyring: &Keyring) -> Self {
        Self {
            primary_version: keyring.primary().ok().map(|primary| primary.version),
            versions: keyring.versions.iter().map(version_status).collect(),
        }
    }
}

/// One keyring version as status shows it: never the material, only its fingerprint.
fn version_status(version: &KeyVersion) -> KeyVersionStatus {
    KeyVersionStatus {
        version: version.version,
        state: version.state.as_str().to_owned(),
        created_at: Time(version.created_at),
        fingerprint: version.material.fingerprint(),
    }
}

/// What a reconcile found, for status.
#[derive(Debug)]
pub enum Found {
    /// Something keeps the key from being ready; the keyring, when there is one, is
    /// still listed.
    Problem {
        problem: Problem,
        keyring: Option<Listed>,
    },
    /// The keyring was just created; nothing is distributed yet.
    Created(Listed),
    /// The keyring, how far its distribution got, and what that means.
    Distribution {
        keyring: Listed,
        progress: DistributionStatus,
        outcome: Outcome,
    },
}

/// What one reconcile has for status: what it found, and the rotation to record when
/// that changes.
#[derive(Debug)]
pub struct Findings {
    pub found: Found,
    pub rotation: Option<RotationStatus>,
}

impl From<Found> for Findings {
    fn from(found: Found) -> Self {
        Self {
            found,
            rotation: None,
        }
    }
}

/// The status after a reconcile, and the Events to publish once it is written.
#[derive(Debug)]
pub struct Next {
    pub status: EncryptionKeyStatus,
    pub notices: Vec<Notice>,
}

/// The status of `key` after a reconcile that found `findings` at `now`, from
/// `previous` (the status the reconcile started from): the conditions, the keyring's
/// versions, the distribution's progress and the rotation; an Event when the key
/// becomes distributed and when a problem first appears.
pub fn next(
    key: &EncryptionKey,
    previous: Option<&EncryptionKeyStatus>,
    findings: Findings,
    now: Timestamp,
) -> Next {
    let generation = key.meta().generation;
    let previous = previous.cloned().unwrap_or_default();
    let mut status = previous.clone();
    status.observed_generation = generation;
    record_rotation(&mut status, findings.rotation, key.spec.rotation.generation);
    let mut conditions = Conditions {
        status: &mut status,
        generation,
        now,
    };
    let (rotating, reason, message) = rotating(conditions.status);
    conditions.set(ConditionType::Rotating, rotating, reason, &message);
    let mut notices = Vec::new();
    let keyring_secret = keyring_store::secret_name(&key.name_any());
    let problem = match findings.found {
        Found::Problem { problem, keyring } => {
            if let Some(keyring) = keyring {
                conditions.list(keyring_secret, keyring);
            }
            Some(problem)
        }
        Found::Created(keyring) => {
            conditions.list(keyring_secret, keyring);
            let message = "key version 1 created; distributing it to the targets";
            conditions.set(
                ConditionType::Ready,
                ConditionStatus::False,
                reasons::DISTRIBUTING,
                message,
            );
            None
        }
        Found::Distribution {
            keyring,
            progress,
            outcome,
        } => {
            conditions.list(keyring_secret, keyring);
            conditions.status.distribution = Some(progress);
            notices.extend(newly_distributed(&previous, &outcome));
            conditions.distribution(outcome)
        }
    };
    if let Some(problem) = problem {
        conditions.problem(&problem);
        notices.extend(newly_a_problem(&previous, problem));
    }
    let progress = progress(conditions.status, key.spec.rotation.generation);
    set_progress(&mut status.conditions, progress, generation, now);
    Next { status, notices }
}

/// Where the key stands for kstatus: stalled while `Ready` is false for a reason only a
/// person ends; else reconciling while a rotation runs or `requested` (the spec's
/// counter) asks for one not yet started — so the very status write that first sees a
/// bump already says so — or while `Ready` is false for what passes by itself.
fn progress(status: &EncryptionKeyStatus, requested: i64) -> Progress {
    let ready = find_condition(&status.conditions, ConditionType::Ready);
    let not_ready = ready.filter(|ready| !is_true(ready));
    if let Some(ready) = not_ready.filter(|ready| reasons::stalls(&ready.reason)) {
        return Progress::Stalled {
            reason: ready.reason.clone(),
            message: ready.message.clone(),
        };
    }
    if let Some(rotating) =
        find_condition(&status.conditions, ConditionType::Rotating).filter(|r| is_true(r))
    {
        return Progress::Reconciling {
            reason: rotating.reason.clone(),
            message: rotating.message.clone(),
        };
    }
    let answered = status.rotation_generation.unwrap_or(requested);
    if requested > answered {
        return Progress::Reconciling {
            reason: reasons::ROTATION_REQUESTED.to_owned(),
            message: format!(
                "spec.rotation.generation is {requested} and the last rotation answered {answered}: a rotation is about to start"
            ),
        };
    }
    match not_ready {
        Some(ready) => Progress::Reconciling {
            reason: ready.reason.clone(),
            message: ready.message.clone(),
        },
        None => Progress::Settled,
    }
}

/// Records `rotation`, when the reconcile has one to record: a rotation that starts
/// (Staging) answers the counter it started for. A key that has none yet (new, or
/// adopting a keyring) starts from `counter`, so only a later bump asks for a rotation.
fn record_rotation(
    status: &mut EncryptionKeyStatus,
    rotation: Option<RotationStatus>,
    counter: i64,
) {
    if let Some(rotation) = rotation {
        if rotation.phase == RotationPhase::Staging {
            status.rotation_generation = Some(rotation.generation);
        }
        status.rotation = Some(rotation);
    }
    if status.rotation_generation.is_none() {
        status.rotation_generation = Some(counter);
    }
}

/// The Event of a key that has just become distributed, said once.
fn newly_distributed(previous: &EncryptionKeyStatus, outcome: &Outcome) -> Option<Notice> {
    let was_distributed =
        find_condition(&previous.conditions, ConditionType::Distributed).is_some_and(is_true);
    (outcome.distributed && !was_distributed).then(|| {
        Notice::normal(
            reasons::DISTRIBUTED,
            reasons::DISTRIBUTE,
            outcome.summary.clone(),
        )
    })
}

/// The Warning Event of `problem` when it first appears: `Ready` was not already false
/// for that reason.
fn newly_a_problem(previous: &EncryptionKeyStatus, problem: Problem) -> Option<Notice> {
    let ready = find_condition(&previous.conditions, ConditionType::Ready);
    let newly = ready.is_none_or(|ready| {
        ready.status != ConditionStatus::False.as_str() || ready.reason != problem.reason
    });
    newly.then(|| Notice::warning(problem.reason, reasons::RECONCILE, problem.message))
}

/// The conditions of a status being computed, set for one generation at one time.
struct Conditions<'a> {
    status: &'a mut EncryptionKeyStatus,
    generation: Option<i64>,
    now: Timestamp,
}

impl Conditions<'_> {
    fn set(&mut self, type_: ConditionType, state: ConditionStatus, reason: &str, message: &str) {
        set_condition(
            &mut self.status.conditions,
            type_,
            state,
            reason,
            message.to_owned(),
            self.generation,
            self.now,
        );
    }

    /// Lists the keyring's versions, kept in Secret `keyring_secret`.
    fn list(&mut self, keyring_secret: String, listed: Listed) {
        self.status.keyring_secret_name = Some(keyring_secret);
        self.status.primary_version = listed.primary_version;
        self.status.versions = listed.versions;
    }

    /// `Distributed`, and `Ready` and `Degraded` unless a request of the spec keeps the
    /// key from being ready: that is the problem returned, to report.
    fn distribution(&mut self, outcome: Outcome) -> Option<Problem> {
        let (state, reason) = outcome.distributed_condition;
        self.set(ConditionType::Distributed, state, reason, &outcome.summary);
        if outcome.notice.is_some() {
            return outcome.notice;
        }
        let (ready, reason) = outcome.ready_condition;
        self.set(ConditionType::Ready, ready, reason, &outcome.summary);
        self.set(
            ConditionType::Degraded,
            ConditionStatus::False,
            reasons::AS_EXPECTED,
            "",
        );
        None
    }

    /// `Ready` false for `problem`, and `Degraded` with it when it needs a person.
    fn problem(&mut self, problem: &Problem) {
        let message = &problem.message;
        self.set(
            ConditionType::Ready,
            ConditionStatus::False,
            problem.reason,
            message,
        );
        let (degraded, reason, message) = if problem.degraded {
            (ConditionStatus::True, problem.reason, message.as_str())
        } else {
            (ConditionStatus::False, reasons::AS_EXPECTED, "")
        };
        self.set(ConditionType::Degraded, degraded, reason, message);
    }
}

/// The `Rotating` condition: which step runs and what it waits on.
fn rotating(status: &EncryptionKeyStatus) -> (ConditionStatus, &'static str, String) {
    let Some(rotation) = status
        .rotation
        .as_ref()
        .filter(|rotation| rotation.phase != RotationPhase::Succeeded)
    else {
        return (ConditionStatus::False, reasons::IDLE, String::new());
    };
    let target = rotation.target_version;
    let pods = status
        .distribution
        .as_ref()
        .map(|d| format!("{}/{} pods hold it", d.pods_in_sync, d.pods_total))
        .unwrap_or_default();
    let message = match rotation.phase {
        RotationPhase::Backfilling => {
            let left = match rotation.without_key_id {
                0 => String::new(),
                left => format!("; the last scan found {left} without one"),
            };
            format!(
                "Job {} gives every database value a key id under version {} before version {target} is staged (attempt {}){left}",
                rotation.job_name.as_deref().unwrap_or_default(),
                rotation.previous_version,
                rotation.attempts.saturating_add(1)
            )
        }
        RotationPhase::Staging => {
            format!(
                "staging version {target} decrypt-only: waiting until every pod holds it; {pods}"
            )
        }
        RotationPhase::Promoting => format!(
            "version {target} is primary: waiting until every pod holds that before re-encrypting; {pods}"
        ),
        RotationPhase::Reencrypting => {
            let progress = rotation
                .progress
                .as_ref()
                .map(|p| format!("{} of {} done, {} failed", p.done, p.total, p.failed))
                .unwrap_or_else(|| "not started".to_owned());
            format!(
                "Job {} re-encrypts ciphertext under older versions to version {target} (attempt {}): {progress}",
                rotation.job_name.as_deref().unwrap_or_default(),
                rotation.attempts.saturating_add(1)
            )
        }
        RotationPhase::Verifying => {
            format!("scanning for ciphertext under versions older than {target}")
        }
        RotationPhase::Retiring => format!(
            "no ciphertext left under older versions: retiring them; waiting until every pod holds the keyring; {pods}"
        ),
        RotationPhase::Succeeded => String::new(),
    };
    (ConditionStatus::True, rotation.phase.as_str(), message)
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;
    use kube::runtime::events::EventType;

    use super::*;
    use crate::controller::encryption_key::distribute::outcome;
    use crate::crd::encryption_key::{RotationStatus, RotationTrigger};
    use crate::crypto::KeyMaterial;
    use crate::workload::Rollout;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("valid timestamp")
    }

    fn key(generation: i64, rotation_generation: i64) -> EncryptionKey {
        EncryptionKey {
            metadata: ObjectMeta {
                name: Some("apim".to_owned()),
                namespace: Some("apps".to_owned()),
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            spec: serde_json::from_value(
                serde_json::json!({"rotation": {"generation": rotation_generation}}),
            )
            .expect("spec"),
            status: None,
        }
    }

    fn keyring() -> Keyring {
        Keyring::new("apim", KeyMaterial::generate().expect("key"), at(100))
    }

    fn rollout(pods_in_sync: i32, pods_total: i32) -> Rollout {
        Rollout {
            pods_in_sync,
            pods_total,
            missing: Vec::new(),
            blocked: Vec::new(),
        }
    }

    fn distribution(keyring: &Keyring, pods_in_sync: i32, pods_total: i32) -> Findings {
        Found::Distribution {
            keyring: Listed::of(keyring),
            progress: DistributionStatus {
                keyring_hash: Some(keyring.distribution_hash()),
                versions: vec![1],
                pods_in_sync,
                pods_total,
            },
            outcome: outcome(&rollout(pods_in_sync, pods_total), None),
        }
        .into()
    }

    fn condition(status: &EncryptionKeyStatus, type_: ConditionType) -> (String, String, String) {
        let condition = find_condition(&status.conditions, type_).expect("condition");
        (
            condition.status.clone(),
            condition.reason.clone(),
            condition.message.clone(),
        )
    }

    fn problem(reason: &'static str, degraded: bool) -> Problem {
        Problem {
            reason,
            message: format!("{reason} happened"),
            degraded,
        }
    }

    fn rotation(phase: RotationPhase, generation: i64) -> RotationStatus {
        RotationStatus {
            phase,
            target_version: 2,
            previous_version: 1,
            trigger: RotationTrigger::Requested,
            generation,
            started_at: Time(at(200)),
            phase_started_at: Time(at(200)),
            finished_at: None,
            job_name: Some("apim-reencrypt-v2-1".to_owned()),
            attempts: 1,
            progress: None,
            scan: Vec::new(),
            without_key_id: 0,
            failure: None,
            retry_at: None,
        }
    }

    #[test]
    fn a_created_keyring_is_listed_by_fingerprint_and_the_key_waits_to_be_distributed() {
        let key = key(3, 5);
        let keyring = keyring();
        let next = next(
            &key,
            None,
            Found::Created(Listed::of(&keyring)).into(),
            at(1000),
        );
        let status = next.status;
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.keyring_secret_name.as_deref(), Some("apim-keyring"));
        assert_eq!(status.primary_version, Some(1));
        let primary = keyring.primary().expect("primary");
        assert_eq!(status.versions.len(), 1);
        assert_eq!(status.versions[0].version, 1);
        assert_eq!(status.versions[0].state, "Primary");
        assert_eq!(status.versions[0].created_at, Time(at(100)));
        assert_eq!(
            status.versions[0].fingerprint,
            primary.material.fingerprint()
        );
        // A new key starts from the counter as it is: only a later bump rotates.
        assert_eq!(status.rotation_generation, Some(5));
        assert_eq!(
            condition(&status, ConditionType::Ready),
            (
                "False".to_owned(),
                "Distributing".to_owned(),
                "key version 1 created; distributing it to the targets".to_owned()
            )
        );
        assert_eq!(
            condition(&status, ConditionType::Rotating),
            ("False".to_owned(), "Idle".to_owned(), String::new())
        );
        assert!(next.notices.is_empty(), "{:?}", next.notices);
    }

    #[test]
    fn distributing_to_every_pod_is_ready_and_said_once_with_transition_times_kept() {
        let key = key(1, 0);
        let keyring = keyring();
        let rolling = next(&key, None, distribution(&keyring, 1, 2), at(1000)).status;
        assert_eq!(
            condition(&rolling, ConditionType::Distributed).1,
            "RollingOut"
        );
        assert_eq!(condition(&rolling, ConditionType::Ready).1, "Distributing");
        let first = next(&key, Some(&rolling), distribution(&keyring, 2, 2), at(2000));
        let status = &first.status;
        assert_eq!(
            condition(status, ConditionType::Distributed),
            (
                "True".to_owned(),
                "InSync".to_owned(),
                "2/2 ready pods of the targets hold the current keyring".to_owned()
            )
        );
        assert_eq!(condition(status, ConditionType::Ready).1, "KeyDistributed");
        assert_eq!(
            condition(status, ConditionType::Degraded),
            ("False".to_owned(), "AsExpected".to_owned(), String::new())
        );
        assert_eq!(
            status
                .distribution
                .as_ref()
                .map(|d| (d.pods_in_sync, d.pods_total)),
            Some((2, 2))
        );
        assert_eq!(
            first.notices,
            [Notice::normal(
                "Distributed",
                "Distribute",
                "2/2 ready pods of the targets hold the current keyring"
            )]
        );
        let ready = find_condition(&status.conditions, ConditionType::Ready).expect("ready");
        assert_eq!(ready.last_transition_time, Time(at(2000)));
        // Rotating kept its status: its transition time stays that of the first status.
        let rotating = find_condition(&status.conditions, ConditionType::Rotating).expect("idle");
        assert_eq!(rotating.last_transition_time, Time(at(1000)));
        // Nothing new later: the very same status, and no Event.
        let again = next(&key, Some(status), distribution(&keyring, 2, 2), at(3000));
        assert_eq!(&again.status, status);
        assert!(again.notices.is_empty(), "{:?}", again.notices);
    }

    #[test]
    fn a_degrading_problem_names_its_reason_in_ready_and_degraded_and_warns_once() {
        let key = key(1, 0);
        let first = next(
            &key,
            None,
            Found::Problem {
                problem: problem("KeyringMissing", true),
                keyring: None,
            }
            .into(),
            at(1000),
        );
        for type_ in [ConditionType::Ready, ConditionType::Degraded] {
            let (_, reason, message) = condition(&first.status, type_);
            assert_eq!(reason, "KeyringMissing");
            assert_eq!(message, "KeyringMissing happened");
        }
        assert_eq!(condition(&first.status, ConditionType::Degraded).0, "True");
        assert_eq!(first.notices.len(), 1);
        let warning = &first.notices[0];
        assert_eq!(warning.type_, EventType::Warning);
        assert_eq!(
            (warning.reason, warning.action),
            ("KeyringMissing", "Reconcile")
        );
        let again = next(
            &key,
            Some(&first.status),
            Found::Problem {
                problem: problem("KeyringMissing", true),
                keyring: None,
            }
            .into(),
            at(2000),
        );
        assert_eq!(again.status, first.status);
        assert!(again.notices.is_empty());
        // Another reason is a new problem, said again.
        let other = next(
            &key,
            Some(&first.status),
            Found::Problem {
                problem: problem("KeyringUnreadable", true),
                keyring: None,
            }
            .into(),
            at(3000),
        );
        assert_eq!(other.notices.len(), 1);
    }

    #[test]
    fn a_problem_to_wait_for_is_not_degraded_and_keeps_the_listed_versions() {
        let key = key(1, 0);
        let keyring = keyring();
        let listed = next(
            &key,
            None,
            Found::Created(Listed::of(&keyring)).into(),
            at(1000),
        );
        let waiting = next(
            &key,
            Some(&listed.status),
            Found::Problem {
                problem: problem("SourceSecretMissing", false),
                keyring: None,
            }
            .into(),
            at(2000),
        );
        assert_eq!(
            condition(&waiting.status, ConditionType::Ready).1,
            "SourceSecretMissing"
        );
        assert_eq!(
            condition(&waiting.status, ConditionType::Degraded),
            ("False".to_owned(), "AsExpected".to_owned(), String::new())
        );
        assert_eq!(waiting.status.versions, listed.status.versions);
        assert_eq!(waiting.notices.len(), 1);
    }

    #[test]
    fn what_keeps_a_distributed_key_out_of_a_container_is_ready_false_and_degraded() {
        let key = key(1, 0);
        let keyring = keyring();
        let mut blocked = rollout(2, 2);
        blocked.blocked.push(crate::workload::Blocked::Conflict {
            workload: "Deployment apim".to_owned(),
            container: Some("apim".to_owned()),
            place: crate::workload::Place::MountPath("/etc/keyward".to_owned()),
            holder: "volume \"keyward-first\"".to_owned(),
        });
        let findings = Found::Distribution {
            keyring: Listed::of(&keyring),
            progress: DistributionStatus::default(),
            outcome: outcome(&blocked, None),
        };
        let next = next(&key, None, findings.into(), at(1000));
        for type_ in [
            ConditionType::Ready,
            ConditionType::Distributed,
            ConditionType::Degraded,
        ] {
            assert_eq!(
                condition(&next.status, type_).1,
                "DistributionConflict",
                "{type_:?}"
            );
        }
        assert_eq!(condition(&next.status, ConditionType::Degraded).0, "True");
        let reasons: Vec<&str> = next.notices.iter().map(|notice| notice.reason).collect();
        assert_eq!(reasons, ["DistributionConflict"]);
    }

    #[test]
    fn a_recorded_rotation_shows_in_rotating_and_staging_answers_the_counter() {
        let key = key(1, 7);
        let keyring = keyring();
        let previous = next(&key, None, distribution(&keyring, 2, 2), at(1000)).status;
        assert_eq!(previous.rotation_generation, Some(7));
        let staging = next(
            &key,
            Some(&previous),
            Findings {
                rotation: Some(rotation(RotationPhase::Staging, 8)),
                ..distribution(&keyring, 2, 2)
            },
            at(2000),
        );
        assert_eq!(staging.status.rotation_generation, Some(8));
        assert_eq!(
            staging.status.rotation.as_ref().map(|r| r.phase),
            Some(RotationPhase::Staging)
        );
        assert_eq!(
            condition(&staging.status, ConditionType::Rotating),
            (
                "True".to_owned(),
                "Staging".to_owned(),
                "staging version 2 decrypt-only: waiting until every pod holds it; 2/2 pods hold it"
                    .to_owned()
            )
        );
        // Later phases leave the counter as the rotation's start answered it.
        let reencrypting = next(
            &key,
            Some(&staging.status),
            Findings {
                rotation: Some(rotation(RotationPhase::Reencrypting, 9)),
                ..distribution(&keyring, 2, 2)
            },
            at(3000),
        );
        assert_eq!(reencrypting.status.rotation_generation, Some(8));
        assert_eq!(
            condition(&reencrypting.status, ConditionType::Rotating).2,
            "Job apim-reencrypt-v2-1 re-encrypts ciphertext under older versions to version 2 (attempt 2): not started"
        );
        // A finished rotation stays recorded, and Rotating goes back to Idle.
        let finished = next(
            &key,
            Some(&reencrypting.status),
            Findings {
                rotation: Some(rotation(RotationPhase::Succeeded, 8)),
                ..distribution(&keyring, 2, 2)
            },
            at(4000),
        );
        assert_eq!(
            condition(&finished.status, ConditionType::Rotating).1,
            "Idle"
        );
        assert!(finished.status.rotation.is_some());
    }

    /// The kstatus conditions of `status`: which of `Reconciling` and `Stalled` holds,
    /// with its reason.
    fn standing(status: &EncryptionKeyStatus) -> Vec<(String, String)> {
        status
            .conditions
            .iter()
            .filter(|c| c.type_ == "Reconciling" || c.type_ == "Stalled")
            .map(|c| {
                assert_eq!(c.status, "True", "{c:?}");
                (c.type_.clone(), c.reason.clone())
            })
            .collect()
    }

    fn pair(type_: &str, reason: &str) -> Vec<(String, String)> {
        vec![(type_.to_owned(), reason.to_owned())]
    }

    #[test]
    fn a_key_on_its_way_is_reconciling_and_a_ready_one_neither() {
        let key = key(1, 0);
        let keyring = keyring();
        let created = next(
            &key,
            None,
            Found::Created(Listed::of(&keyring)).into(),
            at(1000),
        );
        assert_eq!(
            standing(&created.status),
            pair("Reconciling", "Distributing")
        );
        let rolling = next(&key, None, distribution(&keyring, 1, 2), at(1000)).status;
        assert_eq!(standing(&rolling), pair("Reconciling", "Distributing"));
        let ready = next(&key, Some(&rolling), distribution(&keyring, 2, 2), at(2000)).status;
        assert_eq!(standing(&ready), []);
        assert!(find_condition(&ready.conditions, ConditionType::Reconciling).is_none());
    }

    #[test]
    fn a_problem_only_a_person_ends_stalls_and_a_secret_that_may_come_does_not() {
        let key = key(1, 0);
        let report = |previous: Option<&EncryptionKeyStatus>, reason, degraded| {
            next(
                &key,
                previous,
                Found::Problem {
                    problem: problem(reason, degraded),
                    keyring: None,
                }
                .into(),
                at(1000),
            )
            .status
        };
        let waiting = report(None, "SourceSecretMissing", false);
        assert_eq!(
            standing(&waiting),
            pair("Reconciling", "SourceSecretMissing")
        );
        let refused = report(Some(&waiting), "InvalidDistribution", true);
        assert_eq!(standing(&refused), pair("Stalled", "InvalidDistribution"));
        let stalled = find_condition(&refused.conditions, ConditionType::Stalled).expect("stalled");
        assert_eq!(stalled.message, "InvalidDistribution happened");
        // A Secret that is there but holds no usable key needs a person, too.
        let unusable = report(None, "SourceKeyMissing", false);
        assert_eq!(standing(&unusable), pair("Stalled", "SourceKeyMissing"));
        for reason in [
            "TargetNotFound",
            "KeyEncryptionKeySecretMissing",
            "CiphertextRemains",
        ] {
            assert!(!reasons::stalls(reason), "{reason}");
        }
        for reason in [
            "SecretConflict",
            "KeyringMissing",
            "ObjectConflict",
            "InvalidJobTemplate",
            "ReencryptionFailed",
            "ContainerNotFound",
            "DistributionConflict",
            "SomethingNew",
        ] {
            assert!(reasons::stalls(reason), "{reason}");
        }
    }

    #[test]
    fn a_rotation_is_reconciling_from_the_status_that_first_sees_the_bump_until_it_succeeds() {
        let keyring = keyring();
        let settled = next(&key(1, 7), None, distribution(&keyring, 2, 2), at(1000)).status;
        assert_eq!(standing(&settled), []);
        // The counter was bumped; this write has not started the rotation yet.
        let bumped = key(2, 8);
        let noticed = next(
            &bumped,
            Some(&settled),
            distribution(&keyring, 2, 2),
            at(2000),
        );
        assert_eq!(noticed.status.observed_generation, Some(2));
        assert_eq!(
            standing(&noticed.status),
            pair("Reconciling", "RotationRequested")
        );
        let mut previous = noticed.status;
        for phase in [
            RotationPhase::Staging,
            RotationPhase::Promoting,
            RotationPhase::Reencrypting,
            RotationPhase::Verifying,
            RotationPhase::Retiring,
        ] {
            let status = next(
                &bumped,
                Some(&previous),
                Findings {
                    rotation: Some(rotation(phase, 8)),
                    ..distribution(&keyring, 2, 2)
                },
                at(3000),
            )
            .status;
            assert_eq!(standing(&status), pair("Reconciling", phase.as_str()));
            assert_eq!(condition(&status, ConditionType::Ready).0, "True");
            previous = status;
        }
        let finished = next(
            &bumped,
            Some(&previous),
            Findings {
                rotation: Some(rotation(RotationPhase::Succeeded, 8)),
                ..distribution(&keyring, 2, 2)
            },
            at(4000),
        )
        .status;
        assert_eq!(standing(&finished), []);
        // A failed attempt that needs a person stalls the rotation instead.
        let failed = next(
            &bumped,
            Some(&previous),
            Findings {
                rotation: Some(rotation(RotationPhase::Reencrypting, 8)),
                ..Found::Problem {
                    problem: problem("ReencryptionFailed", true),
                    keyring: Some(Listed::of(&keyring)),
                }
                .into()
            },
            at(5000),
        )
        .status;
        assert_eq!(standing(&failed), pair("Stalled", "ReencryptionFailed"));
    }
}
