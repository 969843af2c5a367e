//! The rotation's actor: carries out the one step [`machine::next`] chose, one function
//! per [`Step`], and says in a [`Turn`] what to record, report and count, and when to
//! look again. It never decides what comes next (that is the machine's) and never writes
//! status (that is the reconcile's, once per reconcile, from the turn).
//!
//! Every side effect here is safe to repeat: a crash between a step's side effect and
//! the write of what it led to leaves status as it was, and the next reconcile takes the
//! same step again.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use super::machine::{self, AttemptJobs, Census, JobState, Observed, Reshape, Step};
use super::{build, cluster, scan};
use crate::controller::context::{Context, Notice};
use crate::controller::encryption_key::decide::Problem;
use crate::controller::encryption_key::reasons;
use crate::controller::kit::backoff;
use crate::controller::options::JobOptions;
use crate::crd::EncryptionKey;
use crate::crd::encryption_key::{
    KeyFormat, ReencryptionProgress, RestartPolicy, RotationFailure, RotationPhase, RotationStatus,
};
use crate::crypto::keyring::KeyError;
use crate::crypto::{KeyMaterial, Keyring};
use crate::names::progress_name;
use crate::{Error, Result};

/// How long the kubelet may take to refresh a mounted Secret in a running pod (its sync
/// period plus the cache's time to live), which pods without restarts wait out.
const KUBELET_SECRET_REFRESH: Duration = Duration::from_secs(120);

/// How often a running re-encryption is looked at, for its progress.
const JOB_RECHECK: Duration = Duration::from_secs(2);

/// How often a rotation waiting on pods, or stopped on a conflict, is looked at again.
const ROLLOUT_RECHECK: Duration = Duration::from_secs(5);

/// The longest a key waits for its next scheduled rotation before looking again: no
/// longer than a settled key without a schedule waits.
const SCHEDULE_RECHECK: Duration = crate::controller::encryption_key::distribute::SETTLED_RECHECK;

/// What one turn of the rotation decided: status to record, a problem to report, an
/// event, and when to look again.
#[derive(Debug, Default)]
pub struct Turn {
    /// The rotation status to record, when it changes.
    pub record: Option<RotationStatus>,
    /// What the metrics count once the record is written.
    pub counted: Counted,
    pub problem: Option<Problem>,
    /// Published once the record is written.
    pub event: Option<Notice>,
    pub requeue: Option<Duration>,
}

impl Turn {
    /// A turn that starts out reporting the recorded attempt's failure: it stays
    /// reported until the rotation moves on.
    fn carrying(recorded: Option<&RotationStatus>) -> Self {
        let problem = recorded
            .and_then(|rotation| rotation.failure.as_ref())
            .map(|failure| Problem {
                reason: failure_reason(&failure.reason),
                message: failure.message.clone(),
                degraded: true,
            });
        Self {
            problem,
            ..Self::default()
        }
    }

    fn requeue(mut self, delay: Duration) -> Self {
        self.requeue = Some(delay);
        self
    }
}

/// A rotation outcome the metrics count.
#[derive(Debug, Default, PartialEq, Eq)]
pub enum Counted {
    #[default]
    Nothing,
    /// Re-encryption ended with this many values rewritten.
    Reencrypted(i64),
    Succeeded,
    /// An attempt failed for this reason and is retried.
    Failed(&'static str),
}

impl Counted {
    /// Counts the outcome of `key`'s rotation in `metrics`.
    pub fn count(&self, metrics: &crate::metrics::Metrics, key: &EncryptionKey) {
        match *self {
            Self::Nothing => {}
            Self::Reencrypted(values) => metrics.reencrypted(u64::try_from(values).unwrap_or(0)),
            Self::Succeeded => metrics.rotation_succeeded(key),
            Self::Failed(reason) => metrics.rotation_failed(key, reason),
        }
    }
}

/// What the rotation needs to know of the distribution found in this reconcile.
#[derive(Clone, Copy, Debug)]
pub struct Pods {
    /// Every pod of the targets holds the keyring as it is now.
    pub in_sync: bool,
    /// The targets have pods at all.
    pub any: bool,
}

/// Takes the rotation's next step, once the keyring has the shape its phase needs.
pub async fn rotate(
    context: &Context,
    job_options: &JobOptions,
    key: &EncryptionKey,
    keyring: &Keyring,
    pods: Pods,
    now: Timestamp,
) -> Result<Turn> {
    let status = key.status.as_ref();
    let actor = Actor {
        context,
        job_options,
        key,
        name: key.name_any(),
        keyring,
        recorded: status.and_then(|status| status.rotation.as_ref()),
        now,
    };
    let answered = status
        .and_then(|status| status.rotation_generation)
        .unwrap_or(key.spec.rotation.generation);
    let job = match stop_on_conflict(actor.jobs_state().await)? {
        Ok(job) => job,
        Err(conflict) => return Ok(conflict),
    };
    let mut observed = Observed {
        keyring,
        in_sync: pods.in_sync,
        job,
        scan: None,
        backfill: !key.spec.reencryption.databases.is_empty(),
        now,
        settle: settle(key, pods),
    };
    let next = |observed: &Observed<'_>| {
        machine::next(
            &actor.name,
            &key.spec.rotation,
            actor.recorded,
            answered,
            observed,
        )
    };
    let mut step = next(&observed);
    let census;
    if step == Step::Scan {
        census = scan::scan(context, key, keyring).await?;
        observed.scan = Some(&census);
        step = next(&observed);
    }
    actor.take(step).await
}

/// How long pods need after they count as in sync: only running pods without restarts
/// wait for the kubelet's refresh.
fn settle(key: &EncryptionKey, pods: Pods) -> Duration {
    match key.spec.distribution.restart {
        RestartPolicy::None if pods.any => KUBELET_SECRET_REFRESH,
        _ => Duration::ZERO,
    }
}

/// What a step acts on: the key, its keyring as it is now, and the rotation status
/// records.
struct Actor<'a> {
    context: &'a Context,
    job_options: &'a JobOptions,
    key: &'a EncryptionKey,
    name: String,
    keyring: &'a Keyring,
    recorded: Option<&'a RotationStatus>,
    now: Timestamp,
}

impl Actor<'_> {
    /// Carries out `step`: one function per step of the machine.
    async fn take(&self, step: Step) -> Result<Turn> {
        let turn = Turn::carrying(self.recorded);
        match step {
            Step::Idle => self.idle(turn).await,
            Step::Record(next) => self.record(next, turn).await,
            Step::AwaitRollout { overdue } => Ok(self.await_rollout(overdue, turn)),
            Step::AwaitRetry => Ok(self.await_retry(turn)),
            Step::StartJob => self.start_job(turn).await,
            Step::AwaitJob => self.await_job(turn).await,
            Step::Retry { rotation, reason } => self.retry(rotation, reason, turn).await,
            // Still no counts (the machine asks for a scan only once per reconcile).
            Step::Scan => Ok(turn.requeue(JOB_RECHECK)),
        }
    }

    /// The state of the current attempt's Jobs together; absent unless re-encryption
    /// runs. A Job of their names that is not the key's is [`Error::ObjectNotOwned`].
    async fn jobs_state(&self) -> Result<JobState> {
        let Some(rotation) = self.recorded.filter(|rotation| rotation.phase.runs_jobs()) else {
            return Ok(JobState::Absent);
        };
        let jobs = AttemptJobs::of(&self.name, rotation);
        let mut names = vec![&jobs.built_in];
        if rotation.phase == RotationPhase::Reencrypting
            && self.key.spec.reencryption.job_template.is_some()
        {
            names.push(&jobs.external);
        }
        let mut states = Vec::new();
        for job_name in names {
            states.push(cluster::state(&self.context.client, self.key, job_name).await?);
        }
        Ok(machine::combined(&states))
    }

    /// No rotation runs, none is due: no Job's rights may stand, and the key is looked at
    /// again when the next scheduled one is due.
    async fn idle(&self, mut turn: Turn) -> Result<Turn> {
        // No Job runs between rotations, so neither may its rights stand: this also
        // takes away a binding an older keyward left after its last rotation.
        if self.recorded.is_some() {
            cluster::unbind(&self.context.client, self.key).await?;
        }
        if let Some(at) = machine::next_scheduled(&self.key.spec.rotation, self.keyring) {
            let wait = Duration::try_from(self.now.duration_until(at)).unwrap_or(Duration::ZERO);
            turn.requeue = Some(wait.min(SCHEDULE_RECHECK).max(Duration::from_secs(1)));
        }
        Ok(turn)
    }

    /// A rotation starts or moves to its next phase: what the phase left behind goes,
    /// and the new phase is recorded (then acted on in the next reconcile).
    async fn record(&self, mut next: RotationStatus, mut turn: Turn) -> Result<Turn> {
        // The Job's final count, as re-encryption ends; the ConfigMap holds nothing of
        // this rotation before that.
        if next.phase == RotationPhase::Verifying
            && let Some(progress) = self.reported_progress(&mut turn).await?
        {
            turn.counted = Counted::Reencrypted(progress.done);
            next.progress = Some(progress);
        }
        if next.phase == RotationPhase::Succeeded {
            turn.counted = Counted::Succeeded;
        }
        let client = &self.context.client;
        // The external Job's keys, and the built-in Job's rights, live only as long
        // as their step: taken away before the step's end is recorded, so a crash in
        // between takes them away again.
        if next.phase == RotationPhase::Verifying {
            cluster::remove_versions_secret(client, self.key, next.target_version).await?;
        }
        if matches!(
            next.phase,
            RotationPhase::Verifying | RotationPhase::Succeeded
        ) {
            cluster::unbind(client, self.key).await?;
        }
        let started = self
            .recorded
            .is_none_or(|recorded| recorded.phase == RotationPhase::Succeeded);
        let format = self.key.spec.distribution.format;
        turn.event = Some(phase_notice(format, started, &next));
        turn.record = Some(next);
        Ok(turn.requeue(Duration::ZERO))
    }

    /// Pods do not all hold the keyring yet (or still settle): look again, and report a
    /// phase past its deadline.
    fn await_rollout(&self, overdue: bool, turn: Turn) -> Turn {
        let mut turn = turn.requeue(ROLLOUT_RECHECK);
        if overdue {
            turn.problem = Some(Problem {
                reason: reasons::ROLLOUT_TIMEOUT,
                message: format!(
                    "rotation phase {} has waited more than {} minutes for every pod of the targets to hold the keyring",
                    self.recorded.map(|r| r.phase.as_str()).unwrap_or_default(),
                    machine::ROLLOUT_DEADLINE.as_secs() / 60
                ),
                degraded: true,
            });
        }
        turn
    }

    /// The last attempt failed: look again when the next may start.
    fn await_retry(&self, turn: Turn) -> Turn {
        let retry_at = self
            .recorded
            .and_then(|rotation| rotation.retry_at.as_ref());
        let wait = retry_at
            .map(|at| Duration::try_from(self.now.duration_until(at.0)).unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::ZERO);
        turn.requeue(wait.max(Duration::from_secs(1)))
    }

    /// The recorded attempt's Jobs are absent: earlier attempts' Jobs go, and this
    /// attempt's built-in Job (and the template's, if any) start. What the API server
    /// or keyward refuses is reported in status, not only retried in silence.
    async fn start_job(&self, mut turn: Turn) -> Result<Turn> {
        let Some(rotation) = self.recorded else {
            return Ok(turn.requeue(JOB_RECHECK));
        };
        let client = &self.context.client;
        let jobs = AttemptJobs::of(&self.name, rotation);
        let target = rotation.target_version;
        // Jobs of earlier attempts go only now that this attempt is recorded.
        cluster::remove_others(client, self.key, &[&jobs.built_in, &jobs.external]).await?;
        let pass = match rotation.phase {
            RotationPhase::Backfilling => build::Pass::Backfill,
            _ => build::Pass::Reencrypt,
        };
        let started = cluster::start(
            client,
            self.key,
            self.job_options,
            &jobs.built_in,
            target,
            pass,
        )
        .await;
        match stop_on_conflict(refused_by_api_server(started))? {
            Err(conflict) => return Ok(conflict),
            Ok(Err(status)) => {
                turn.problem = Some(Problem {
                    reason: reasons::REENCRYPTION_JOB_REFUSED,
                    message: format!(
                        "the API server refused re-encryption Job {:?}: {}",
                        jobs.built_in, status.message
                    ),
                    degraded: true,
                });
                return Ok(turn.requeue(ROLLOUT_RECHECK));
            }
            Ok(Ok(())) => {}
        }
        // The template's Job re-encrypts what keyward cannot reach; it has no backfill.
        if pass == build::Pass::Backfill {
            return Ok(turn.requeue(JOB_RECHECK));
        }
        let refused = match stop_on_conflict(self.start_external(&jobs.external, target).await)? {
            Err(conflict) => return Ok(conflict),
            Ok(Err(status)) => Some(status.message),
            Ok(Ok(refused)) => refused,
        };
        if let Some(message) = refused {
            turn.problem = Some(Problem {
                reason: reasons::INVALID_JOB_TEMPLATE,
                message: format!("spec.reencryption.jobTemplate cannot run: {message}"),
                degraded: true,
            });
        }
        Ok(turn.requeue(JOB_RECHECK))
    }

    /// Starts the Job of `spec.reencryption.jobTemplate`, if the key has one and the
    /// operator runs templates. `Ok(Some(refusal))` says why keyward refuses to run it;
    /// the API server's refusal is `Err(status)`.
    async fn start_external(
        &self,
        job_name: &str,
        target: i64,
    ) -> Result<std::result::Result<Option<String>, Box<kube::core::Status>>> {
        let external = self.key.spec.reencryption.job_template.is_some();
        if external && !self.job_options.allow_templates {
            return Ok(Ok(Some(
                "the operator does not run Job templates: start it with --allow-job-templates"
                    .to_owned(),
            )));
        }
        let started = cluster::start_external(
            &self.context.client,
            self.key,
            self.job_options,
            self.keyring,
            target,
            job_name,
        )
        .await;
        match started {
            Err(Error::JobTemplate(refusal)) => Ok(Ok(Some(refusal))),
            other => refused_by_api_server(other).map(|started| started.map(|()| None)),
        }
    }

    /// The Jobs run: their ServiceAccount keeps its rights, and the progress they
    /// report is recorded as it changes.
    async fn await_job(&self, mut turn: Turn) -> Result<Turn> {
        let bound = cluster::keep_bound(&self.context.client, self.key).await;
        if let Err(conflict) = stop_on_conflict(bound)? {
            return Ok(conflict);
        }
        if let Some(rotation) = self.recorded {
            let progress = self.reported_progress(&mut turn).await?;
            if progress.is_some() && progress != rotation.progress {
                let mut next = rotation.clone();
                next.progress = progress;
                turn.record = Some(next);
            }
        }
        Ok(turn.requeue(JOB_RECHECK))
    }

    /// The attempt failed: its Jobs' rights go now, and the next attempt is recorded
    /// with the failure and when it may start (after a backoff).
    async fn retry(
        &self,
        mut rotation: RotationStatus,
        reason: &'static str,
        mut turn: Turn,
    ) -> Result<Turn> {
        let progress = self.reported_progress(&mut turn).await?;
        let (reason, message) = retry_failure(reason, progress.as_ref());
        if progress.is_some() {
            rotation.progress = progress;
        }
        // The failed Jobs stay until the next attempt, recorded first, starts; their
        // rights go now, before the backoff.
        cluster::unbind(&self.context.client, self.key).await?;
        let attempt = u32::try_from(rotation.attempts).unwrap_or(u32::MAX);
        let delay = backoff(attempt);
        let retry_at = SignedDuration::try_from(delay)
            .ok()
            .and_then(|delay| self.now.checked_add(delay).ok())
            .unwrap_or(self.now);
        rotation.retry_at = Some(Time(retry_at));
        rotation.failure = Some(RotationFailure {
            reason: reason.to_owned(),
            message: message.clone(),
        });
        turn.problem = Some(Problem {
            reason,
            message: message.clone(),
            degraded: true,
        });
        turn.event = Some(Notice::warning(reason, reasons::ROTATE, message));
        turn.counted = Counted::Failed(reason);
        turn.record = Some(rotation);
        Ok(turn.requeue(delay))
    }

    /// The progress the re-encryption Job reported. Counts that the Job cannot have
    /// written (garbage, negative, inconsistent) are corrected by the parse and reported
    /// here: in the log, and as the turn's problem unless it has a weightier one.
    async fn reported_progress(&self, turn: &mut Turn) -> Result<Option<ReencryptionProgress>> {
        let Some(reported) = cluster::progress(&self.context.client, self.key).await? else {
            return Ok(None);
        };
        if !reported.untrusted.is_empty() {
            let (namespace, name) = (self.key.namespace().unwrap_or_default(), &self.name);
            let config_map = progress_name(name);
            let fields = reported.untrusted.join(", ");
            tracing::warn!(
                namespace,
                name,
                config_map,
                fields,
                "the re-encryption progress ConfigMap holds counts no Job wrote; they are corrected, not trusted"
            );
            // Reported like any problem: Degraded with the reason, and a Warning Event
            // when it first appears.
            turn.problem.get_or_insert(Problem {
                reason: reasons::PROGRESS_INVALID,
                message: untrusted_progress(&config_map, &fields),
                degraded: true,
            });
        }
        Ok(Some(reported.progress))
    }
}

/// The Event of a rotation entering `next.phase` (`started`: its first phase): one
/// reason per phase, so `kubectl describe` lists each instead of folding them into one
/// series.
fn phase_notice(format: KeyFormat, started: bool, next: &RotationStatus) -> Notice {
    let target = next.target_version;
    let phase = next.phase;
    if started && matches!(format, KeyFormat::Hex | KeyFormat::Base64) {
        // Said once, when it matters: single-key formats hold only the primary.
        return Notice::warning(
            reasons::ROTATION_STARTED,
            reasons::ROTATE,
            format!(
                "rotation to version {target} started; spec.distribution.format {format:?} carries only the primary key, so from promotion until re-encryption ends pods cannot read values still under version {} (use format Keyring or Wso2Toml to avoid this)",
                next.previous_version
            ),
        );
    }
    let note = match phase {
        RotationPhase::Backfilling if started => format!(
            "rotation to version {target} started ({:?}); giving every database value a key id first",
            next.trigger
        ),
        RotationPhase::Staging if started => format!(
            "rotation to version {target} started ({:?}); staging it on every pod",
            next.trigger
        ),
        RotationPhase::Succeeded => format!(
            "rotation to version {target} finished: every ciphertext and every pod is on it"
        ),
        phase => format!("rotation to version {target}: {}", phase.as_str()),
    };
    let reason = if started {
        reasons::ROTATION_STARTED
    } else {
        reasons::phase_event(phase)
    };
    Notice::normal(reason, reasons::ROTATE, note)
}

/// The reason and message of a failed attempt: values that do not decrypt (those that
/// kept conflicting are retried, not undecryptable), ciphertext the verification scan
/// still finds, or a failed Job.
fn retry_failure(
    reason: &'static str,
    progress: Option<&ReencryptionProgress>,
) -> (&'static str, String) {
    let failed = progress.map_or(0, |progress| {
        progress.failed.saturating_sub(progress.contended).max(0)
    });
    if failed > 0 {
        (
            reasons::UNDECRYPTABLE_CIPHERTEXT,
            format!(
                "{failed} value(s) under an older version do not decrypt (see status.rotation.progress.failures); the old versions stay until they are fixed or removed; retrying"
            ),
        )
    } else if reason == reasons::CIPHERTEXT_REMAINS {
        (
            reason,
            "the verification scan still finds ciphertext under an older version; re-encrypting again".to_owned(),
        )
    } else {
        (
            reason,
            "a re-encryption Job (the built-in one, or the one of spec.reencryption.jobTemplate) failed; retrying with new Jobs".to_owned(),
        )
    }
}

/// The problem message of a progress ConfigMap holding counts no Job wrote.
fn untrusted_progress(config_map: &str, fields: &str) -> String {
    format!(
        "ConfigMap {config_map:?} holds re-encryption counts no Job wrote ({fields}: not a non-negative integer, or inconsistent with the others); they are read as corrected, and the verification scan decides whether the rotation finishes"
    )
}

/// The reason of a recorded failure, as one of the reasons keyward reports (status text
/// is never taken as a reason as it stands).
fn failure_reason(recorded: &str) -> &'static str {
    match recorded {
        reasons::UNDECRYPTABLE_CIPHERTEXT => reasons::UNDECRYPTABLE_CIPHERTEXT,
        reasons::CIPHERTEXT_REMAINS => reasons::CIPHERTEXT_REMAINS,
        _ => reasons::REENCRYPTION_FAILED,
    }
}

/// A turn that stops on an object of a rotation's name that is not the key's: reported,
/// never used or written over, looked at again after a while.
fn conflict(kind: &str, name: &str) -> Turn {
    Turn {
        problem: Some(Problem {
            reason: reasons::OBJECT_CONFLICT,
            message: format!(
                "{kind} {name:?} exists and is not this EncryptionKey's; keyward will neither use nor overwrite it: remove it to let the rotation go on"
            ),
            degraded: true,
        }),
        requeue: Some(ROLLOUT_RECHECK),
        ..Turn::default()
    }
}

/// `result`, with an object of a rotation's name that is not the key's turned into the
/// turn that stops on it ([`conflict`]); any other error is the reconcile's.
fn stop_on_conflict<T>(result: Result<T>) -> Result<std::result::Result<T, Turn>> {
    match result {
        Err(Error::ObjectNotOwned { kind, name }) => Ok(Err(conflict(&kind, &name))),
        other => other.map(Ok),
    }
}

/// `result`, with the API server's refusal of an object (400 or 422: it is invalid, and
/// retrying cannot help) kept apart from the errors a retry may cure.
fn refused_by_api_server<T>(
    result: Result<T>,
) -> Result<std::result::Result<T, Box<kube::core::Status>>> {
    match result {
        Err(Error::Kube(kube::Error::Api(status))) if status.code == 400 || status.code == 422 => {
            Ok(Err(status))
        }
        other => other.map(Ok),
    }
}

/// What [`before_retiring`] found.
#[derive(Debug)]
pub enum Retirement {
    /// Nothing is under an older version: they may retire.
    Clear,
    /// No rotation is recorded: nothing retires, and nothing is recorded.
    Unrecorded,
    /// Ciphertext under an older version appeared after verification: the rotation goes
    /// back to re-encrypting (the attempt to record) with this problem.
    ReencryptAgain {
        rotation: Box<RotationStatus>,
        problem: Problem,
    },
}

/// Scans once more right before older versions are retired, in the same reconcile: if
/// ciphertext under one appeared since the verification scan, the rotation goes back to
/// re-encrypting (with the reason) and nothing is retired.
pub async fn before_retiring(
    context: &Context,
    key: &EncryptionKey,
    keyring: &Keyring,
    rotation: Option<&RotationStatus>,
    now: Timestamp,
) -> Result<Retirement> {
    let Some(rotation) = rotation else {
        return Ok(Retirement::Unrecorded);
    };
    let census = scan::scan(context, key, keyring).await?;
    Ok(reencrypt_again(&key.name_any(), rotation, &census, now))
}

/// The verdict of a scan right before retiring (see [`before_retiring`]).
fn reencrypt_again(
    key_name: &str,
    rotation: &RotationStatus,
    census: &Census,
    now: Timestamp,
) -> Retirement {
    let remaining = machine::remaining(census, rotation.target_version);
    if remaining == 0 {
        return Retirement::Clear;
    }
    let mut again = machine::next_attempt(key_name, rotation, Some(census), now);
    let message = format!(
        "{remaining} ciphertext(s) under an older version appeared after verification; re-encrypting again before anything is retired"
    );
    again.failure = Some(RotationFailure {
        reason: reasons::CIPHERTEXT_REMAINS.to_owned(),
        message: message.clone(),
    });
    Retirement::ReencryptAgain {
        rotation: Box::new(again),
        problem: Problem {
            reason: reasons::CIPHERTEXT_REMAINS,
            message,
            degraded: true,
        },
    }
}

/// The keyring change the rotation's phase needs, applied in memory.
pub fn apply_reshape(
    key: &EncryptionKey,
    keyring: &mut Keyring,
    change: Reshape,
    now: Timestamp,
) -> Result<()> {
    match change {
        Reshape::Stage => {
            let target = key
                .status
                .as_ref()
                .and_then(|status| status.rotation.as_ref())
                .map(|rotation| rotation.target_version);
            let staged = keyring.stage(KeyMaterial::generate()?, now);
            if Some(staged) != target {
                // The keyring holds versions status does not know: never guess.
                return Err(Error::Key(KeyError::UnknownVersion(
                    target.unwrap_or_default(),
                )));
            }
        }
        Reshape::Promote(version) => keyring.promote(version).map_err(Error::Key)?,
        Reshape::Retire { keep } => keyring.retire_all_but_primary(keep).map_err(Error::Key)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use kube::runtime::events::EventType;

    use super::*;
    use crate::crd::encryption_key::RotationTrigger;

    fn rotation(phase: RotationPhase) -> RotationStatus {
        let now = Time(Timestamp::UNIX_EPOCH);
        RotationStatus {
            phase,
            target_version: 2,
            previous_version: 1,
            trigger: RotationTrigger::Requested,
            generation: 1,
            started_at: now.clone(),
            phase_started_at: now,
            finished_at: None,
            job_name: Some("apim-reencrypt-v2-0".to_owned()),
            attempts: 0,
            progress: None,
            scan: Vec::new(),
            without_key_id: 0,
            failure: None,
            retry_at: None,
        }
    }

    #[test]
    fn each_phase_has_its_own_event_and_single_key_formats_warn_as_the_rotation_starts() {
        let staging = phase_notice(KeyFormat::Keyring, true, &rotation(RotationPhase::Staging));
        assert_eq!(staging.type_, EventType::Normal);
        assert_eq!(staging.reason, "RotationStarted");
        assert_eq!(staging.action, "Rotate");
        assert_eq!(
            staging.note,
            "rotation to version 2 started (Requested); staging it on every pod"
        );
        // WSO2 holds the old key beside the new one, as a keyring does.
        let wso2 = phase_notice(KeyFormat::Wso2Toml, true, &rotation(RotationPhase::Staging));
        assert_eq!(wso2.type_, EventType::Normal);
        let single = phase_notice(KeyFormat::Hex, true, &rotation(RotationPhase::Staging));
        assert_eq!(single.type_, EventType::Warning);
        assert_eq!(single.reason, "RotationStarted");
        assert!(
            single
                .note
                .contains("cannot read values still under version 1")
        );
        let reasons: Vec<&str> = [
            RotationPhase::Promoting,
            RotationPhase::Reencrypting,
            RotationPhase::Verifying,
            RotationPhase::Retiring,
            RotationPhase::Succeeded,
        ]
        .into_iter()
        .map(|phase| phase_notice(KeyFormat::Hex, false, &rotation(phase)).reason)
        .collect();
        assert_eq!(
            reasons,
            [
                "RotationPromoting",
                "RotationReencrypting",
                "RotationVerifying",
                "RotationRetiring",
                "RotationSucceeded"
            ]
        );
        let retiring = phase_notice(
            KeyFormat::Keyring,
            false,
            &rotation(RotationPhase::Retiring),
        );
        assert_eq!(retiring.note, "rotation to version 2: Retiring");
        // A key with databases starts by backfilling; its staging is then a phase of
        // its own, and the start is said once.
        let backfilling = phase_notice(
            KeyFormat::Wso2Toml,
            true,
            &rotation(RotationPhase::Backfilling),
        );
        assert_eq!(backfilling.reason, "RotationStarted");
        assert!(backfilling.note.contains("key id"), "{}", backfilling.note);
        let staged = phase_notice(
            KeyFormat::Wso2Toml,
            false,
            &rotation(RotationPhase::Staging),
        );
        assert_eq!(staged.reason, "RotationStaging");
    }

    #[test]
    fn a_failed_attempt_names_values_that_do_not_decrypt_before_its_own_reason() {
        let progress = |failed, contended| ReencryptionProgress {
            failed,
            contended,
            ..ReencryptionProgress::default()
        };
        let (reason, message) = retry_failure("ReencryptionFailed", Some(&progress(3, 1)));
        assert_eq!(reason, "UndecryptableCiphertext");
        assert!(message.starts_with("2 value(s)"), "{message}");
        // Values that kept conflicting are retried, not undecryptable.
        let (reason, _) = retry_failure("ReencryptionFailed", Some(&progress(2, 2)));
        assert_eq!(reason, "ReencryptionFailed");
        let (reason, message) = retry_failure("CiphertextRemains", None);
        assert_eq!(reason, "CiphertextRemains");
        assert!(message.contains("verification scan"), "{message}");
    }

    #[test]
    fn a_recorded_failure_is_reported_under_one_of_keywards_reasons() {
        assert_eq!(
            failure_reason("UndecryptableCiphertext"),
            "UndecryptableCiphertext"
        );
        assert_eq!(failure_reason("CiphertextRemains"), "CiphertextRemains");
        assert_eq!(failure_reason("<script>"), "ReencryptionFailed");
        let mut failed = rotation(RotationPhase::Reencrypting);
        failed.failure = Some(RotationFailure {
            reason: "anything".to_owned(),
            message: "a Job failed".to_owned(),
        });
        let turn = Turn::carrying(Some(&failed));
        let problem = turn.problem.expect("the failure stays reported");
        assert_eq!(problem.reason, "ReencryptionFailed");
        assert!(problem.degraded);
    }

    #[test]
    fn ciphertext_found_right_before_retiring_sends_the_rotation_back_to_reencrypting() {
        let retiring = rotation(RotationPhase::Retiring);
        let census = |versions: &[(i64, u64)], without_key_id| Census {
            versions: versions.iter().copied().collect(),
            without_key_id,
        };
        let clear = census(&[(1, 0), (2, 5)], 0);
        assert!(matches!(
            reencrypt_again("apim", &retiring, &clear, Timestamp::UNIX_EPOCH),
            Retirement::Clear
        ));
        // A database value without a key id is one WSO2 reads with old_key: it keeps
        // the old version as surely as ciphertext under it.
        let bare = census(&[(2, 5)], 1);
        assert!(matches!(
            reencrypt_again("apim", &retiring, &bare, Timestamp::UNIX_EPOCH),
            Retirement::ReencryptAgain { .. }
        ));
        let late = census(&[(1, 2), (2, 5)], 0);
        let Retirement::ReencryptAgain { rotation, problem } =
            reencrypt_again("apim", &retiring, &late, Timestamp::UNIX_EPOCH)
        else {
            panic!("re-encrypt again");
        };
        assert_eq!(rotation.phase, RotationPhase::Reencrypting);
        assert_eq!(rotation.attempts, 1);
        assert_eq!(rotation.job_name.as_deref(), Some("apim-reencrypt-v2-1"));
        assert_eq!(problem.reason, "CiphertextRemains");
        assert!(problem.message.starts_with("2 ciphertext(s)"));
        let failure = rotation.failure.expect("failure recorded");
        assert_eq!(failure.reason, "CiphertextRemains");
        assert_eq!(failure.message, problem.message);
    }
}
