//! The rotation state machine, as a pure function of the recorded rotation and what the
//! cluster shows: [`next`] says the one thing to do next, [`reshape`] what the keyring
//! must look like in the current phase.
//!
//! Its promise: no instant in which some ciphertext cannot be decrypted by a pod that
//! needs it. A new version is held by every pod before anything is written under it
//! (staging before promotion); nothing is written under an old version once
//! re-encryption starts (promotion reaches every pod first); and an old version leaves
//! the pods only after a fresh scan finds no ciphertext under it. WSO2 decrypts a
//! database value without a key id with `old_key`, which staging makes the new version:
//! a key with databases therefore first backfills key ids (every such value rewritten
//! under the current version), and stages only once a scan finds none left. Every transition is
//! returned as a status to record *before* it is acted on, so a restarted operator
//! resumes exactly where it was.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::controller::encryption_key::reasons;
use crate::crd::encryption_key::{
    KeyRotation, RotationPhase, RotationStatus, RotationTrigger, VersionCount,
};
use crate::crypto::Keyring;
use crate::crypto::keyring::VersionState;
use crate::names::{backfill_job_name, external_job_name, job_name};

/// How long a phase may wait for pods before the key reports `Degraded`.
pub const ROLLOUT_DEADLINE: Duration = Duration::from_secs(600);

impl RotationPhase {
    /// The phase after this one succeeds.
    pub fn on_success(self) -> Self {
        match self {
            Self::Backfilling => Self::Staging,
            Self::Staging => Self::Promoting,
            Self::Promoting => Self::Reencrypting,
            Self::Reencrypting => Self::Verifying,
            Self::Verifying => Self::Retiring,
            Self::Retiring | Self::Succeeded => Self::Succeeded,
        }
    }

    /// How long the phase may wait on pods before that is a fault worth reporting.
    pub fn deadline(self) -> Option<Duration> {
        match self {
            Self::Staging | Self::Promoting | Self::Retiring => Some(ROLLOUT_DEADLINE),
            Self::Backfilling | Self::Reencrypting | Self::Verifying | Self::Succeeded => None,
        }
    }

    /// Whether the phase's work is done by Jobs.
    pub fn runs_jobs(self) -> bool {
        matches!(self, Self::Backfilling | Self::Reencrypting)
    }

    /// The name status and events use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backfilling => "Backfilling",
            Self::Staging => "Staging",
            Self::Promoting => "Promoting",
            Self::Reencrypting => "Reencrypting",
            Self::Verifying => "Verifying",
            Self::Retiring => "Retiring",
            Self::Succeeded => "Succeeded",
        }
    }
}

/// The re-encryption Job of the current attempt, as found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Absent,
    Running,
    Succeeded,
    Failed,
}

/// The state of a rotation step's Jobs together: failed if one failed, absent while one
/// is still to be created, succeeded once all have.
pub fn combined(states: &[JobState]) -> JobState {
    if states.contains(&JobState::Failed) {
        JobState::Failed
    } else if states.contains(&JobState::Absent) {
        JobState::Absent
    } else if states.contains(&JobState::Running) {
        JobState::Running
    } else {
        JobState::Succeeded
    }
}

/// The Jobs of a rotation's current attempt, the one place that names them: the
/// built-in Job under the name status recorded when the attempt began (so a restarted
/// operator looks for exactly the Job it may have started), and the Job of
/// `spec.reencryption.jobTemplate`, whose name is derived the same way each time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptJobs {
    /// The built-in re-encryption Job.
    pub built_in: String,
    /// The external Job, when the key has a Job template.
    pub external: String,
}

impl AttemptJobs {
    /// The Jobs of the attempt `rotation` records, for EncryptionKey `key_name`.
    pub fn of(key_name: &str, rotation: &RotationStatus) -> Self {
        Self {
            built_in: rotation.job_name.clone().unwrap_or_default(),
            external: external_job_name(key_name, rotation.target_version, rotation.attempts),
        }
    }
}

/// What a scan found, without any key: ciphertexts per version (in Secrets, and in
/// databases by key id), and database values without a key id, or legacy AES/ECB, whose
/// version no key-free reading can tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub versions: BTreeMap<i64, u64>,
    pub without_key_id: u64,
}

/// What the machine needs to know of the world.
pub struct Observed<'a> {
    pub keyring: &'a Keyring,
    /// Every pod of the targets holds the keyring as it is now.
    pub in_sync: bool,
    pub job: JobState,
    /// What a scan taken in this reconcile found (once a Job's step is done).
    pub scan: Option<&'a Census>,
    /// The key has databases, whose values may lack key ids: a rotation begins by
    /// backfilling them.
    pub backfill: bool,
    pub now: Timestamp,
    /// How long pods need after they count as in sync before they truly hold the
    /// keyring: zero with rolling restarts; the kubelet's refresh of mounted Secrets
    /// without them.
    pub settle: Duration,
}

/// A change of the keyring the current phase needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Reshape {
    /// Add a fresh version, decrypt-only.
    Stage,
    /// Make the target version primary.
    Promote(i64),
    /// Retire every version but the primary, keeping `keep` retired ones.
    Retire { keep: usize },
}

/// The one thing to do next.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// No rotation runs and none is due.
    Idle,
    /// Record this rotation (or the next phase of it), then act on it.
    Record(RotationStatus),
    /// Wait for the pods to hold the current keyring; `overdue` past the phase deadline.
    AwaitRollout { overdue: bool },
    /// Create the Job named in status.
    StartJob,
    /// The last attempt failed; the next may start at `retry_at`.
    AwaitRetry,
    /// The Job runs.
    AwaitJob,
    /// Scan the ciphertexts and decide again with the counts.
    Scan,
    /// The attempt failed: record `RotationStatus` (a new attempt), remove the old Job,
    /// and start again after a backoff.
    Retry {
        rotation: RotationStatus,
        reason: &'static str,
    },
}

/// The keyring change the recorded rotation needs first, if any.
pub fn reshape(
    rotation: Option<&RotationStatus>,
    spec: &KeyRotation,
    keyring: &Keyring,
) -> Option<Reshape> {
    let rotation = rotation.filter(|rotation| rotation.phase != RotationPhase::Succeeded)?;
    let target = rotation.target_version;
    let state = keyring.version(target).ok().map(|version| version.state);
    let primary = keyring.primary().ok().map(|primary| primary.version);
    match rotation.phase {
        RotationPhase::Staging if state.is_none() => Some(Reshape::Stage),
        // Only a staged version is promoted, and only the promoted target retires others:
        // anything else is a keyring status does not describe, never acted on.
        RotationPhase::Promoting if state == Some(VersionState::DecryptOnly) => {
            Some(Reshape::Promote(target))
        }
        RotationPhase::Retiring if primary == Some(target) => {
            let keep = usize::try_from(spec.keep_retired_versions).unwrap_or(0);
            let mut retired = keyring.clone();
            retired.retire_all_but_primary(keep).ok()?;
            (states(&retired) != states(keyring)).then_some(Reshape::Retire { keep })
        }
        _ => None,
    }
}

fn states(keyring: &Keyring) -> Vec<(i64, VersionState)> {
    keyring
        .versions
        .iter()
        .map(|version| (version.version, version.state))
        .collect()
}

/// The next step of the rotation recorded in `rotation`, or whether one is due; called
/// once the keyring has the shape [`reshape`] asks for.
pub fn next(
    key_name: &str,
    spec: &KeyRotation,
    rotation: Option<&RotationStatus>,
    answered_generation: i64,
    observed: &Observed<'_>,
) -> Step {
    let now = observed.now;
    let Some(current) = rotation.filter(|rotation| rotation.phase != RotationPhase::Succeeded)
    else {
        return match due(spec, answered_generation, observed) {
            Some(trigger) => Step::Record(begin(key_name, spec, trigger, observed)),
            None => Step::Idle,
        };
    };
    let advance = || {
        let mut next = current.clone();
        next.phase = current.phase.on_success();
        next.phase_started_at = Time(now);
        next.failure = None;
        next.retry_at = None;
        if next.phase == RotationPhase::Succeeded {
            next.finished_at = Some(Time(now));
        }
        next
    };
    let overdue = || {
        current.phase.deadline().is_some_and(|deadline| {
            SignedDuration::try_from(deadline)
                .ok()
                .and_then(|deadline| current.phase_started_at.0.checked_add(deadline).ok())
                .is_some_and(|at| at <= now)
        })
    };
    match current.phase {
        RotationPhase::Staging | RotationPhase::Promoting | RotationPhase::Retiring => {
            let settled = SignedDuration::try_from(observed.settle)
                .ok()
                .and_then(|settle| current.phase_started_at.0.checked_add(settle).ok())
                .is_some_and(|at| at <= now);
            if observed.in_sync && settled {
                Step::Record(advance())
            } else {
                Step::AwaitRollout { overdue: overdue() }
            }
        }
        RotationPhase::Backfilling => match job_step(key_name, current, observed) {
            Some(step) => step,
            None => match observed.scan {
                None => Step::Scan,
                Some(census) if census.without_key_id == 0 => {
                    let mut next = advance();
                    next.job_name = Some(job_name(key_name, next.target_version, next.attempts));
                    next.without_key_id = 0;
                    Step::Record(next)
                }
                Some(census) => Step::Retry {
                    rotation: next_attempt(key_name, current, Some(census), now),
                    reason: reasons::KEY_IDS_MISSING,
                },
            },
        },
        RotationPhase::Reencrypting => {
            job_step(key_name, current, observed).unwrap_or_else(|| Step::Record(advance()))
        }
        RotationPhase::Verifying => match observed.scan {
            None => Step::Scan,
            Some(census) => {
                if remaining(census, current.target_version) == 0 {
                    let mut next = advance();
                    next.scan = scan_counts(&census.versions);
                    next.without_key_id = 0;
                    Step::Record(next)
                } else {
                    Step::Retry {
                        rotation: next_attempt(key_name, current, Some(census), now),
                        reason: reasons::CIPHERTEXT_REMAINS,
                    }
                }
            }
        },
        RotationPhase::Succeeded => Step::Idle,
    }
}

/// The step a phase that runs Jobs takes while they are not done; `None` once they
/// succeeded.
fn job_step(key_name: &str, current: &RotationStatus, observed: &Observed<'_>) -> Option<Step> {
    let now = observed.now;
    Some(match observed.job {
        JobState::Absent if current.retry_at.as_ref().is_some_and(|at| at.0 > now) => {
            Step::AwaitRetry
        }
        JobState::Absent => Step::StartJob,
        JobState::Running => Step::AwaitJob,
        JobState::Succeeded => return None,
        JobState::Failed => Step::Retry {
            rotation: next_attempt(key_name, current, None, now),
            reason: reasons::REENCRYPTION_FAILED,
        },
    })
}

/// Why a rotation is due: a bumped counter, or the primary older than the period.
fn due(
    spec: &KeyRotation,
    answered_generation: i64,
    observed: &Observed<'_>,
) -> Option<RotationTrigger> {
    if spec.generation > answered_generation {
        return Some(RotationTrigger::Requested);
    }
    let rotate_at = next_scheduled(spec, observed.keyring)?;
    (rotate_at <= observed.now).then_some(RotationTrigger::Scheduled)
}

/// When the next scheduled rotation is due, for a requeue.
pub fn next_scheduled(spec: &KeyRotation, keyring: &Keyring) -> Option<Timestamp> {
    let primary = keyring.primary().ok()?;
    let period = SignedDuration::try_from(Duration::from(spec.period?)).ok()?;
    primary.created_at.checked_add(period).ok()
}

fn begin(
    key_name: &str,
    spec: &KeyRotation,
    trigger: RotationTrigger,
    observed: &Observed<'_>,
) -> RotationStatus {
    let keyring = observed.keyring;
    let newest = keyring
        .versions
        .iter()
        .map(|v| v.version)
        .max()
        .unwrap_or(0);
    let target = newest.saturating_add(1);
    let now = Time(observed.now);
    let phase = if observed.backfill {
        RotationPhase::Backfilling
    } else {
        RotationPhase::Staging
    };
    RotationStatus {
        phase,
        target_version: target,
        previous_version: keyring.primary().map(|p| p.version).unwrap_or(newest),
        trigger,
        generation: spec.generation,
        started_at: now.clone(),
        phase_started_at: now,
        finished_at: None,
        job_name: Some(attempt_job_name(key_name, phase, target, 0)),
        attempts: 0,
        progress: None,
        scan: Vec::new(),
        without_key_id: 0,
        failure: None,
        retry_at: None,
    }
}

/// The built-in Job a phase runs: the backfill Job while backfilling, the re-encryption
/// Job otherwise.
fn attempt_job_name(key_name: &str, phase: RotationPhase, target: i64, attempt: i32) -> String {
    match phase {
        RotationPhase::Backfilling => backfill_job_name(key_name, target, attempt),
        _ => job_name(key_name, target, attempt),
    }
}

/// A new attempt after a failed one: backfilling again while backfilling, re-encrypting
/// again otherwise (a failed verification re-encrypts).
pub fn next_attempt(
    key_name: &str,
    current: &RotationStatus,
    scan: Option<&Census>,
    now: Timestamp,
) -> RotationStatus {
    let mut next = current.clone();
    next.attempts = current.attempts.saturating_add(1);
    if current.phase != RotationPhase::Backfilling {
        next.phase = RotationPhase::Reencrypting;
    }
    next.phase_started_at = Time(now);
    next.job_name = Some(attempt_job_name(
        key_name,
        next.phase,
        current.target_version,
        next.attempts,
    ));
    if let Some(census) = scan {
        next.scan = scan_counts(&census.versions);
        next.without_key_id = i64::try_from(census.without_key_id).unwrap_or(i64::MAX);
    }
    next
}

/// Values a scan found that pods lose once they drop every version but `target`:
/// ciphertexts under other versions, and database values without a key id.
pub fn remaining(census: &Census, target: i64) -> u64 {
    census
        .versions
        .iter()
        .filter(|(version, _)| **version != target)
        .map(|(_, count)| *count)
        .sum::<u64>()
        .saturating_add(census.without_key_id)
}

/// A scan's counts as status shows them.
pub fn scan_counts(counts: &BTreeMap<i64, u64>) -> Vec<VersionCount> {
    counts
        .iter()
        .map(|(version, count)| VersionCount {
            version: *version,
            ciphertexts: i64::try_from(*count).unwrap_or(i64::MAX),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! The machine against a simulated world: pods that take the keyring one at a time
    //! and write under the primary they hold, a Job that re-encrypts (or fails), and
    //! counter bumps, in random interleavings. Whatever the order, no pod ever lacks a
    //! version some ciphertext is under, no version is retired while ciphertext needs
    //! it, and once the world cooperates every rotation finishes.

    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::controller::encryption_key::render::render;
    use crate::crd::encryption_key::KeyFormat;
    use crate::crypto::KeyMaterial;

    const PODS: usize = 3;

    #[derive(Clone, Debug)]
    enum Event {
        /// The operator reconciles once (restarts change nothing else: all state is in
        /// status and the cluster).
        Reconcile,
        /// One pod restarts with the keyring as it is now.
        RollOut(usize),
        /// One pod writes a ciphertext under the primary it holds.
        Write(usize),
        /// The Job rewrites one ciphertext.
        JobStep,
        /// The Job's pod dies for good.
        JobFails,
        /// The Job reports success but missed values (a Secret it never listed).
        JobMisses,
        /// The counter is bumped.
        Bump,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => Just(Event::Reconcile),
            3 => (0..PODS).prop_map(Event::RollOut),
            2 => (0..PODS).prop_map(Event::Write),
            2 => Just(Event::JobStep),
            1 => Just(Event::JobFails),
            1 => Just(Event::JobMisses),
            1 => Just(Event::Bump),
        ]
    }

    /// How pods hold the key.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Format {
        /// Every version not retired; a ciphertext names its version.
        Keyring,
        /// WSO2's `key` and `old_key`: a value whose key id is not `key`'s, or which has
        /// none, is decrypted with `old_key`.
        Wso2,
    }

    /// A stored value: the version that wrote it, and whether it names it (envelopes
    /// always do; WSO2 values without a key id do not).
    type Value = (i64, bool);

    /// What one pod holds: the versions of the keyring it started with, its primary,
    /// and (WSO2) its `old_key`.
    #[derive(Clone, Debug, PartialEq)]
    struct Held {
        versions: BTreeSet<i64>,
        primary: i64,
        old_key: i64,
    }

    impl Held {
        /// The version this pod decrypts `value` with, if it has one.
        fn reads_with(&self, format: Format, (version, named): Value) -> Option<i64> {
            match format {
                Format::Keyring => self.versions.contains(&version).then_some(version),
                Format::Wso2 if named && version == self.primary => Some(self.primary),
                Format::Wso2 => Some(self.old_key),
            }
        }

        fn reads(&self, format: Format, value: Value) -> bool {
            self.reads_with(format, value) == Some(value.0)
        }
    }

    struct World {
        format: Format,
        keyring: Keyring,
        pods: Vec<Held>,
        ciphertexts: BTreeMap<Value, u64>,
        job: JobState,
        rotation: Option<RotationStatus>,
        answered: i64,
        spec: KeyRotation,
        now: Timestamp,
    }

    impl World {
        fn new(format: Format) -> Self {
            let keyring = Keyring::new(
                "apim",
                KeyMaterial::generate().expect("key"),
                Timestamp::UNIX_EPOCH,
            );
            let held = held(&keyring, format);
            // A WSO2 database also holds values written before key ids.
            let ciphertexts = match format {
                Format::Keyring => BTreeMap::from([((1, true), 5)]),
                Format::Wso2 => BTreeMap::from([((1, true), 3), ((1, false), 3)]),
            };
            Self {
                format,
                keyring,
                pods: vec![held; PODS],
                ciphertexts,
                job: JobState::Absent,
                rotation: None,
                answered: 0,
                spec: KeyRotation::default(),
                now: Timestamp::UNIX_EPOCH,
            }
        }

        fn in_sync(&self) -> bool {
            let current = held(&self.keyring, self.format);
            self.pods.iter().all(|pod| *pod == current)
        }

        /// What a key-free scan finds.
        fn census(&self) -> Census {
            let mut census = Census::default();
            for ((version, named), count) in &self.ciphertexts {
                if *named {
                    *census.versions.entry(*version).or_default() += count;
                } else {
                    census.without_key_id += count;
                }
            }
            census
        }

        fn reconcile(&mut self) {
            self.now = self
                .now
                .checked_add(SignedDuration::from_secs(1))
                .expect("time");
            if let Some(change) = reshape(self.rotation.as_ref(), &self.spec, &self.keyring) {
                match change {
                    Reshape::Stage => {
                        self.keyring
                            .stage(KeyMaterial::generate().expect("key"), self.now);
                    }
                    Reshape::Promote(version) => self.keyring.promote(version).expect("promote"),
                    Reshape::Retire { keep } => {
                        let primary = self.keyring.primary().expect("primary").version;
                        let needed: u64 = self
                            .ciphertexts
                            .iter()
                            .filter(|((version, named), _)| *version != primary || !named)
                            .map(|(_, count)| *count)
                            .sum();
                        assert_eq!(needed, 0, "retiring while ciphertext needs an old version");
                        self.keyring.retire_all_but_primary(keep).expect("retire");
                    }
                }
                return;
            }
            let observed = Observed {
                keyring: &self.keyring,
                in_sync: self.in_sync(),
                job: self.job,
                scan: None,
                backfill: self.format == Format::Wso2,
                now: self.now,
                settle: Duration::ZERO,
            };
            let mut step = next(
                "apim",
                &self.spec,
                self.rotation.as_ref(),
                self.answered,
                &observed,
            );
            if step == Step::Scan {
                let census = self.census();
                let observed = Observed {
                    scan: Some(&census),
                    ..observed
                };
                step = next(
                    "apim",
                    &self.spec,
                    self.rotation.as_ref(),
                    self.answered,
                    &observed,
                );
            }
            match step {
                Step::Record(rotation) => {
                    let begins = self
                        .rotation
                        .as_ref()
                        .is_none_or(|current| current.phase == RotationPhase::Succeeded);
                    if begins {
                        self.answered = rotation.generation;
                    }
                    // Each phase's Jobs have names of their own.
                    if matches!(
                        rotation.phase,
                        RotationPhase::Staging | RotationPhase::Verifying
                    ) {
                        self.job = JobState::Absent;
                    }
                    self.rotation = Some(rotation);
                }
                Step::StartJob => self.job = JobState::Running,
                Step::AwaitRetry => {}
                Step::Retry { rotation, .. } => {
                    self.job = JobState::Absent;
                    self.rotation = Some(rotation);
                }
                Step::Idle | Step::AwaitRollout { .. } | Step::AwaitJob | Step::Scan => {}
            }
        }

        /// The Job rewrites one value its phase rewrites, reading it as a pod holding
        /// the keyring as it is now would; done when none is left.
        fn job_step(&mut self) {
            let primary = self.keyring.primary().expect("primary").version;
            let backfilling = self
                .rotation
                .as_ref()
                .is_some_and(|rotation| rotation.phase == RotationPhase::Backfilling);
            let rewritten = |(version, named): &Value| match backfilling {
                true => !named,
                false => (*version, *named) != (primary, true),
            };
            let found = self
                .ciphertexts
                .iter()
                .find(|(value, count)| **count > 0 && rewritten(value))
                .map(|(value, _)| *value);
            let Some(value) = found else {
                self.job = JobState::Succeeded;
                return;
            };
            let reader = held(&self.keyring, self.format);
            assert!(
                reader.reads(self.format, value),
                "the Job meets {value:?}, which it cannot read with {reader:?}"
            );
            *self.ciphertexts.entry(value).or_default() -= 1;
            *self.ciphertexts.entry((primary, true)).or_default() += 1;
        }

        fn apply(&mut self, event: &Event) {
            match event {
                Event::Reconcile => self.reconcile(),
                Event::RollOut(pod) => self.pods[*pod] = held(&self.keyring, self.format),
                Event::Write(pod) => {
                    *self
                        .ciphertexts
                        .entry((self.pods[*pod].primary, true))
                        .or_default() += 1;
                }
                Event::JobStep if self.job == JobState::Running => self.job_step(),
                Event::JobFails if self.job == JobState::Running => self.job = JobState::Failed,
                Event::JobMisses if self.job == JobState::Running => self.job = JobState::Succeeded,
                Event::Bump => self.spec.generation += 1,
                Event::JobStep | Event::JobFails | Event::JobMisses => {}
            }
            self.ciphertexts.retain(|_, count| *count > 0);
            // Every pod can decrypt every ciphertext, at every instant.
            for pod in &self.pods {
                for value in self.ciphertexts.keys() {
                    assert!(
                        pod.reads(self.format, *value),
                        "a pod holding {pod:?} meets {value:?}"
                    );
                }
            }
        }

        /// The world cooperates: pods roll out, the Job finishes, the operator reconciles.
        fn settle(&mut self) {
            for _ in 0..500 {
                if self
                    .rotation
                    .as_ref()
                    .is_none_or(|r| r.phase == RotationPhase::Succeeded)
                    && self.spec.generation <= self.answered
                {
                    return;
                }
                for pod in 0..PODS {
                    self.apply(&Event::RollOut(pod));
                }
                while self.job == JobState::Running {
                    self.apply(&Event::JobStep);
                }
                self.apply(&Event::Reconcile);
            }
            panic!("the rotation never finished: {:?}", self.rotation);
        }
    }

    /// What a pod started now holds, rendered as the format renders it.
    fn held(keyring: &Keyring, format: Format) -> Held {
        let primary = keyring.primary().expect("primary").version;
        let old_key = match format {
            Format::Keyring => primary,
            Format::Wso2 => {
                let rendered = render(keyring, KeyFormat::Wso2Toml).expect("WSO2 renders");
                rendered.versions.get(1).copied().unwrap_or(primary)
            }
        };
        Held {
            versions: keyring
                .versions
                .iter()
                .filter(|v| v.state != VersionState::Retired)
                .map(|v| v.version)
                .collect(),
            primary,
            old_key,
        }
    }

    fn rotations_end_on_one_version(format: Format, events: &[Event]) -> Result<(), TestCaseError> {
        let mut world = World::new(format);
        world.spec.generation = 1;
        for event in events {
            world.apply(event);
        }
        world.settle();
        let primary = world.keyring.primary().expect("primary").version;
        prop_assert!(
            world
                .ciphertexts
                .keys()
                .all(|value| *value == (primary, true))
        );
        prop_assert!(primary >= 2, "at least the requested rotation ran");
        Ok(())
    }

    proptest! {
        #[test]
        fn rotations_never_strand_ciphertext_and_always_finish(
            events in proptest::collection::vec(event(), 0..300)
        ) {
            rotations_end_on_one_version(Format::Keyring, &events)?;
        }

        /// WSO2's pods hold two keys and read a value without a key id with `old_key`:
        /// whatever the order, none of them ever meets a value it cannot read, rows
        /// without key ids included, and every rotation ends with every value under the
        /// new version with its key id.
        #[test]
        fn wso2_rotations_never_leave_a_row_unreadable_and_always_finish(
            events in proptest::collection::vec(event(), 0..300)
        ) {
            rotations_end_on_one_version(Format::Wso2, &events)?;
        }
    }

    #[test]
    fn a_period_starts_a_rotation_once_the_primary_is_that_old_and_a_bump_at_once() {
        let keyring = Keyring::new(
            "apim",
            KeyMaterial::generate().expect("key"),
            Timestamp::UNIX_EPOCH,
        );
        let spec: KeyRotation =
            serde_json::from_value(serde_json::json!({"period": "24h"})).expect("spec");
        let at = |seconds: i64| Observed {
            keyring: &keyring,
            in_sync: true,
            job: JobState::Absent,
            scan: None,
            backfill: false,
            now: Timestamp::from_second(seconds).expect("time"),
            settle: Duration::ZERO,
        };
        assert_eq!(next("apim", &spec, None, 0, &at(86_399)), Step::Idle);
        match next("apim", &spec, None, 0, &at(86_400)) {
            Step::Record(rotation) => {
                assert_eq!(rotation.trigger, RotationTrigger::Scheduled);
                assert_eq!(rotation.phase, RotationPhase::Staging);
                assert_eq!(rotation.target_version, 2);
            }
            other => panic!("expected a scheduled rotation, got {other:?}"),
        }
        assert_eq!(
            next_scheduled(&spec, &keyring),
            Timestamp::from_second(86_400).ok()
        );
        let bumped = KeyRotation {
            generation: 1,
            ..KeyRotation::default()
        };
        assert!(matches!(
            next("apim", &bumped, None, 0, &at(1)),
            Step::Record(RotationStatus {
                trigger: RotationTrigger::Requested,
                ..
            })
        ));
        assert_eq!(next("apim", &bumped, None, 1, &at(1)), Step::Idle);
    }

    #[test]
    fn phases_follow_one_another_and_only_rollout_phases_have_deadlines() {
        let mut phase = RotationPhase::Staging;
        let mut seen = vec![phase];
        while phase != RotationPhase::Succeeded {
            phase = phase.on_success();
            seen.push(phase);
        }
        assert_eq!(seen.len(), 6);
        assert_eq!(
            RotationPhase::Backfilling.on_success(),
            RotationPhase::Staging
        );
        assert!(RotationPhase::Backfilling.deadline().is_none());
        assert!(RotationPhase::Reencrypting.deadline().is_none());
        assert!(RotationPhase::Staging.deadline().is_some());
    }

    #[test]
    fn jobs_together_fail_if_one_fails_and_succeed_once_all_have() {
        use JobState::{Absent, Failed, Running, Succeeded};
        assert_eq!(combined(&[Succeeded, Failed]), Failed);
        assert_eq!(combined(&[Absent, Failed]), Failed);
        assert_eq!(combined(&[Running, Absent]), Absent);
        assert_eq!(combined(&[Succeeded, Running]), Running);
        assert_eq!(combined(&[Succeeded, Succeeded]), Succeeded);
        assert_eq!(combined(&[Succeeded]), Succeeded);
    }

    #[test]
    fn an_attempts_jobs_are_the_one_status_recorded_and_the_external_one_of_its_number() {
        let world = World::new(Format::Keyring);
        let observed = Observed {
            keyring: &world.keyring,
            in_sync: true,
            job: JobState::Absent,
            scan: None,
            backfill: false,
            now: Timestamp::UNIX_EPOCH,
            settle: Duration::ZERO,
        };
        let first = begin("apim", &world.spec, RotationTrigger::Requested, &observed);
        assert_eq!(
            AttemptJobs::of("apim", &first),
            AttemptJobs {
                built_in: "apim-reencrypt-v2-0".to_owned(),
                external: "apim-external-v2-0".to_owned(),
            }
        );
        let second = next_attempt("apim", &first, None, Timestamp::UNIX_EPOCH);
        assert_eq!(
            AttemptJobs::of("apim", &second),
            AttemptJobs {
                built_in: "apim-reencrypt-v2-1".to_owned(),
                external: "apim-external-v2-1".to_owned(),
            }
        );
    }
}
