//! Reconciler of `EncryptionKey`: keeps the keyring Secret, renders the key for pods,
//! projects it into the target workloads and counts the pods that hold it.
//!
//! Each reconcile reads the keyring, the key-encryption key and the source, lets
//! [`decide::next_step`] choose, and acts. The keyring is created once and never
//! regenerated: if status records versions but the keyring is gone or unreadable, the
//! key is `Degraded` and waits for the user to restore it, because a new key would make
//! every existing ciphertext unreadable. Key material never reaches a log line, an event
//! or status — only fingerprints do.

pub mod decide;
pub mod jobs;
pub mod progress;
pub mod render;
pub mod rotation;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use self::decide::{Observed, Problem, Step};
use self::rotation::{JobState, Reshape};
use crate::controller::context::{Context, Notice};
use crate::controller::kit::{
    apply_status, backoff, in_namespace_of, latest, lean_controller, namespaced_api, owners_of,
    watcher_config,
};
use crate::controller::options::JobOptions;
use crate::crd::encryption_key::{
    DistributionStatus, EncryptionKeyStatus, KeyFormat, KeyVersionStatus, RotationPhase,
    RotationStatus, WorkloadKind,
};
use crate::crd::{ConditionStatus, ConditionType, EncryptionKey, find_condition, set_condition};
use crate::crypto::{KeyMaterial, Keyring};
use crate::store::{self, ENCRYPTION_KEY_MANAGER, Written, keyring as keyring_store};
use crate::workload::{self, Rollout, TemplateProjection};
use crate::{Error, Result};

/// How often an undistributed key is looked at again, besides the workload watches.
const DISTRIBUTION_RECHECK: Duration = Duration::from_secs(5);

/// The EncryptionKey controller, watching `api` and, as metadata only, the Secrets,
/// Jobs and workloads of the same scope: an event says which key to look at, and the
/// reconcile reads what it needs afresh.
pub fn controller(
    api: Api<EncryptionKey>,
    secrets: Api<PartialObjectMeta<Secret>>,
    deployments: Api<PartialObjectMeta<Deployment>>,
    stateful_sets: Api<PartialObjectMeta<StatefulSet>>,
    jobs: Api<PartialObjectMeta<Job>>,
    context: Arc<Context>,
) -> Controller<EncryptionKey> {
    let controller = lean_controller(api, move |key| context.forget(key));
    let (by_secret, by_deployment, by_stateful_set) =
        (controller.store(), controller.store(), controller.store());
    let managed = || watcher_config().labels(&store::managed_selector());
    controller
        .owns_stream(watcher(jobs, managed()).touched_objects())
        .watches_stream(
            watcher(secrets, watcher_config()).touched_objects(),
            move |secret| readers_of(&by_secret, &secret),
        )
        .watches_stream(
            watcher(deployments, watcher_config()).touched_objects(),
            move |deployment| targeting(&by_deployment, WorkloadKind::Deployment, &deployment),
        )
        .watches_stream(
            watcher(stateful_sets, watcher_config()).touched_objects(),
            move |stateful_set| {
                targeting(&by_stateful_set, WorkloadKind::StatefulSet, &stateful_set)
            },
        )
}

/// Keys that own `secret` (its distribution Secret), or whose keyring, source or
/// key-encryption key it is. The keyring has no owner reference, and a Secret of
/// someone else's in the distribution Secret's place has none of the key's: both are
/// matched by name. Keys are few, so looking through those of the namespace is cheap.
fn readers_of(
    store: &Store<EncryptionKey>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<EncryptionKey>> {
    let name = secret.name_any();
    let owners = owners_of::<EncryptionKey>(secret);
    in_namespace_of(store, secret, |key| {
        let key_name = key.name_any();
        owners.contains(&key_name.as_str())
            || keyring_store::secret_name(&key_name) == name
            || store::distribution::secret_name(&key_name) == name
            || key
                .spec
                .source
                .as_ref()
                .is_some_and(|source| source.secret_ref.name == name)
            || key
                .spec
                .key_encryption_key_ref
                .as_ref()
                .is_some_and(|kek| kek.name == name)
    })
}

/// Keys with a target of `kind` that may select `workload`.
fn targeting<W: Resource>(
    store: &Store<EncryptionKey>,
    kind: WorkloadKind,
    workload: &W,
) -> Vec<ObjectRef<EncryptionKey>> {
    let name = workload.meta().name.clone().unwrap_or_default();
    in_namespace_of(store, workload, |key| {
        key.spec
            .targets
            .iter()
            .any(|target| target.kind == kind && target.name.as_ref().is_none_or(|n| *n == name))
    })
}

/// Brings one EncryptionKey up to date.
pub async fn reconcile(
    key: Arc<EncryptionKey>,
    context: Arc<Context>,
    job_options: Arc<JobOptions>,
) -> Result<Action> {
    let namespace = key.namespace().ok_or(Error::MissingObjectField {
        kind: "EncryptionKey",
        field: "metadata.namespace",
    })?;
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &namespace);
    let name = key.name_any();
    let now = Timestamp::now();
    let key = current(&context, key).await?;
    let observed = load(&key, &secrets).await?;
    let kek = observed
        .kek
        .as_ref()
        .and_then(|kek| kek.as_ref().ok())
        .cloned();
    let mut reporter = Reporter::new(&context, &key, now);
    let action = match decide::next_step(&name, key.status.as_ref(), observed) {
        Step::Report(problem) => {
            reporter.report(Found::Problem(problem, None)).await?;
            Action::await_change()
        }
        Step::WrapKeyring {
            keyring,
            resource_version,
        } => {
            keyring_store::update(&secrets, &name, resource_version, &keyring, kek.as_ref())
                .await?;
            let note = format!(
                "stored the keyring in Secret {:?} wrapped under spec.keyEncryptionKeyRef",
                keyring_store::secret_name(&name)
            );
            context
                .publish(key.as_ref(), Notice::normal("KeyringWrapped", "Wrap", note))
                .await;
            Action::requeue(Duration::ZERO)
        }
        Step::CreateKeyring { material } => {
            let keyring =
                create_keyring(&context, &key, &secrets, material, kek.as_ref(), now).await?;
            // Recorded at once: from here on a lost keyring is reported, never replaced.
            reporter.report(Found::Created(&keyring)).await?;
            distribute(
                &context,
                &job_options,
                &key,
                &secrets,
                &keyring,
                &mut reporter,
            )
            .await?
        }
        Step::Distribute {
            mut keyring,
            resource_version,
        } => {
            let rotation = key
                .status
                .as_ref()
                .and_then(|status| status.rotation.as_ref());
            match rotation::reshape(rotation, &key.spec.rotation, &keyring) {
                Some(Reshape::Retire { .. })
                    if !retirable(&context, &key, rotation, &mut reporter, now).await? =>
                {
                    Action::requeue(Duration::ZERO)
                }
                Some(change) => {
                    reshape(&key, &mut keyring, change, now)?;
                    keyring_store::update(
                        &secrets,
                        &name,
                        resource_version,
                        &keyring,
                        kek.as_ref(),
                    )
                    .await?;
                    Action::requeue(Duration::ZERO)
                }
                None => {
                    distribute(
                        &context,
                        &job_options,
                        &key,
                        &secrets,
                        &keyring,
                        &mut reporter,
                    )
                    .await?
                }
            }
        }
    };
    context.record_success(key.as_ref());
    Ok(action)
}

/// The key as the API server has it, not as the watch cache last saw it, whenever that
/// could matter: before any version is recorded (a stale status without versions must
/// never lead to a new key over a lost keyring), and whenever a rotation runs or may
/// start (a stale phase could reshape the keyring for a step already past or write an
/// older rotation back; a stale attempt number could start a Job twice).
async fn current(context: &Context, key: Arc<EncryptionKey>) -> Result<Arc<EncryptionKey>> {
    let keys: Api<EncryptionKey> = namespaced_api(&context.client, key.as_ref())?;
    // A cache lagging behind our own last status write would compute that status again,
    // with new transition times.
    if let Some(fresh) = latest(context, &keys, key.as_ref(), key.status.as_ref()).await? {
        return Ok(Arc::new(fresh));
    }
    let status = key.status.as_ref();
    let unrecorded = status.is_none_or(|status| status.versions.is_empty());
    let running = status
        .and_then(|status| status.rotation.as_ref())
        .is_some_and(|rotation| rotation.phase != RotationPhase::Succeeded);
    let answered = status.and_then(|status| status.rotation_generation);
    let may_start = answered.is_some_and(|answered| key.spec.rotation.generation > answered)
        || key.spec.rotation.period.is_some();
    if !unrecorded && !running && !may_start {
        return Ok(key);
    }
    Ok(Arc::new(keys.get(&key.name_any()).await?))
}

/// Reads what the decision needs: the key-encryption key, the keyring and the source.
async fn load(key: &EncryptionKey, secrets: &Api<Secret>) -> Result<Observed> {
    let kek = match &key.spec.key_encryption_key_ref {
        None => None,
        Some(reference) => {
            Some(keyring_store::read_key(secrets, &reference.name, &reference.key).await?)
        }
    };
    let usable_kek = kek.as_ref().and_then(|kek| kek.as_ref().ok());
    let stored = match (&kek, usable_kek) {
        // Without the KEK a wrapped keyring cannot be read; the decision reports the KEK.
        (Some(Err(_)), _) => keyring_store::Stored::Absent,
        _ => keyring_store::load(secrets, &key.name_any(), usable_kek).await?,
    };
    let source = match &key.spec.source {
        None => None,
        Some(source) => Some(
            keyring_store::read_key(secrets, &source.secret_ref.name, &source.secret_ref.key)
                .await?,
        ),
    };
    Ok(Observed {
        kek,
        stored,
        source,
    })
}

/// Creates the keyring with version 1 from `material`, or from fresh material.
async fn create_keyring(
    context: &Context,
    key: &EncryptionKey,
    secrets: &Api<Secret>,
    material: Option<KeyMaterial>,
    kek: Option<&KeyMaterial>,
    now: Timestamp,
) -> Result<Keyring> {
    let (material, origin) = match material {
        Some(material) => {
            let source = key
                .spec
                .source
                .as_ref()
                .map(|source| source.secret_ref.name.as_str())
                .unwrap_or_default();
            (material, format!("taken from Secret {source:?}"))
        }
        None => (
            KeyMaterial::generate()?,
            "generated from the operating system's CSPRNG".to_owned(),
        ),
    };
    let name = key.name_any();
    let keyring = Keyring::new(&name, material, now);
    keyring_store::create(secrets, &name, &keyring, kek).await?;
    let fingerprint = keyring
        .primary()
        .map_err(Error::Key)?
        .material
        .fingerprint();
    let note = format!(
        "created key version 1 (fingerprint {fingerprint}), {origin}, in Secret {:?}",
        keyring_store::secret_name(&name)
    );
    context
        .publish(key, Notice::normal("KeyCreated", "Create", note))
        .await;
    Ok(keyring)
}

/// Renders the keyring into the distribution Secret, projects it into the targets,
/// counts the pods that hold it and reports.
async fn distribute(
    context: &Context,
    job_options: &JobOptions,
    key: &EncryptionKey,
    secrets: &Api<Secret>,
    keyring: &Keyring,
    reporter: &mut Reporter<'_>,
) -> Result<Action> {
    let name = key.name_any();
    let rendered = render::render(keyring, key.spec.distribution.format).map_err(Error::Key)?;
    let distribution_secret = store::distribution::secret_name(&name);
    let written = store::distribution::write(
        secrets,
        key,
        rendered.file_name,
        rendered.content.as_bytes(),
    )
    .await?;
    if written == Written::Conflict {
        let problem = Problem {
            reason: "SecretConflict",
            message: format!(
                "Secret {distribution_secret:?} exists and is not owned by this EncryptionKey; keyward will not overwrite it"
            ),
            degraded: true,
        };
        reporter
            .report(Found::Problem(problem, Some(keyring)))
            .await?;
        return Ok(Action::await_change());
    }
    let hash = keyring.distribution_hash();
    let projection = TemplateProjection {
        key_name: &name,
        secret_name: &distribution_secret,
        file_name: rendered.file_name,
        keyring_hash: &hash,
        distribution: &key.spec.distribution,
    };
    let namespace = key.namespace().unwrap_or_default();
    let rollout =
        workload::roll_out(&context.client, &namespace, &key.spec.targets, &projection).await?;
    let progress = DistributionStatus {
        keyring_hash: Some(hash.clone()),
        versions: rendered.versions.clone(),
        pods_in_sync: rollout.pods_in_sync,
        pods_total: rollout.pods_total,
    };
    let in_sync = rollout.missing.is_empty()
        && rollout.blocked.is_empty()
        && rollout.pods_in_sync == rollout.pods_total;
    let pods = rollout.pods_total > 0;
    let turn = rotate(
        context,
        job_options,
        key,
        keyring,
        in_sync,
        pods,
        reporter.now,
    )
    .await?;
    let outcome = outcome(&rollout, turn.problem.clone());
    let distributed = outcome.distributed;
    reporter.rotation = turn.record.clone().map(Some);
    reporter
        .report(Found::Keyring {
            keyring,
            progress,
            outcome,
        })
        .await?;
    turn.counted.count(&context.metrics);
    if let Some((type_, reason, note)) = turn.event {
        let notice = Notice {
            type_,
            reason,
            action: "Rotate",
            note,
        };
        context.publish(key, notice).await;
    }
    Ok(match turn.requeue {
        Some(delay) => Action::requeue(delay),
        None if distributed => Action::await_change(),
        None => Action::requeue(DISTRIBUTION_RECHECK),
    })
}

/// Scans once more right before older versions are retired, in the same reconcile: if
/// ciphertext under one appeared since the verification scan, the rotation goes back to
/// re-encrypting (recorded, with the reason) and nothing is retired.
async fn retirable(
    context: &Context,
    key: &EncryptionKey,
    rotation: Option<&RotationStatus>,
    reporter: &mut Reporter<'_>,
    now: Timestamp,
) -> Result<bool> {
    let Some(rotation) = rotation else {
        return Ok(false);
    };
    let counts = scan(context, key).await?;
    let remaining = rotation::remaining(&counts, rotation.target_version);
    if remaining == 0 {
        return Ok(true);
    }
    let scan = rotation::scan_counts(&counts);
    let mut again = rotation::next_attempt(&key.name_any(), rotation, Some(scan), now);
    let message = format!(
        "{remaining} ciphertext(s) under an older version appeared after verification; re-encrypting again before anything is retired"
    );
    again.failure = Some(crate::crd::encryption_key::RotationFailure {
        reason: "CiphertextRemains".to_owned(),
        message: message.clone(),
    });
    reporter.rotation = Some(Some(again));
    reporter
        .report(Found::Problem(
            Problem {
                reason: "CiphertextRemains",
                message,
                degraded: true,
            },
            None,
        ))
        .await?;
    Ok(false)
}

/// The keyring change the rotation's phase needs, applied in memory.
fn reshape(
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
                return Err(Error::Key(
                    crate::crypto::keyring::KeyError::UnknownVersion(target.unwrap_or_default()),
                ));
            }
        }
        Reshape::Promote(version) => keyring.promote(version).map_err(Error::Key)?,
        Reshape::Retire { keep } => keyring.retire_all_but_primary(keep).map_err(Error::Key)?,
    }
    Ok(())
}

/// What one turn of the rotation decided: status to record, a problem to report, an
/// event, and when to look again.
#[derive(Default)]
struct Turn {
    record: Option<RotationStatus>,
    /// What the metrics count once the record is written.
    counted: Counted,
    problem: Option<Problem>,
    event: Option<(EventType, &'static str, String)>,
    requeue: Option<Duration>,
}

/// A rotation outcome the metrics count.
#[derive(Debug, Default)]
enum Counted {
    #[default]
    Nothing,
    /// Re-encryption ended with this many values rewritten.
    Reencrypted(i64),
    Succeeded,
    /// An attempt failed for this reason and is retried.
    Failed(&'static str),
}

impl Counted {
    fn count(&self, metrics: &crate::metrics::Metrics) {
        match *self {
            Self::Nothing => {}
            Self::Reencrypted(values) => metrics.reencrypted(u64::try_from(values).unwrap_or(0)),
            Self::Succeeded => metrics.rotation_succeeded(),
            Self::Failed(reason) => metrics.rotation_failed(reason),
        }
    }
}

/// How long the kubelet may take to refresh a mounted Secret in a running pod (its sync
/// period plus the cache's time to live), which pods without restarts wait out.
const KUBELET_SECRET_REFRESH: Duration = Duration::from_secs(120);

/// How often a running re-encryption is looked at, for its progress.
const JOB_RECHECK: Duration = Duration::from_secs(2);

/// Takes the rotation's next step, once the keyring has the shape its phase needs.
async fn rotate(
    context: &Context,
    job_options: &JobOptions,
    key: &EncryptionKey,
    keyring: &Keyring,
    in_sync: bool,
    pods: bool,
    now: Timestamp,
) -> Result<Turn> {
    let name = key.name_any();
    let status = key.status.as_ref();
    let recorded = status.and_then(|status| status.rotation.as_ref());
    let answered = status
        .and_then(|status| status.rotation_generation)
        .unwrap_or(key.spec.rotation.generation);
    let external = key.spec.reencryption.job_template.is_some();
    let job = match recorded {
        Some(rotation) if rotation.phase == RotationPhase::Reencrypting => {
            let job_name = rotation.job_name.as_deref().unwrap_or_default();
            let external_name =
                jobs::external_job_name(&name, rotation.target_version, rotation.attempts);
            let mut names = vec![job_name];
            if external {
                names.push(&external_name);
            }
            let mut states = Vec::new();
            for job_name in names {
                match jobs::state(&context.client, key, job_name).await {
                    Ok(state) => states.push(state),
                    Err(Error::ObjectNotOwned { kind, name }) => {
                        return Ok(conflict(&kind, &name));
                    }
                    Err(error) => return Err(error),
                }
            }
            jobs::combined(&states)
        }
        _ => JobState::Absent,
    };
    // Only running pods without restarts wait for the kubelet's refresh.
    let settle = match key.spec.distribution.restart {
        crate::crd::encryption_key::RestartPolicy::None if pods => KUBELET_SECRET_REFRESH,
        _ => Duration::ZERO,
    };
    let mut observed = rotation::Observed {
        keyring,
        in_sync,
        job,
        scan: None,
        now,
        settle,
    };
    let mut step = rotation::next(&name, &key.spec.rotation, recorded, answered, &observed);
    let counts;
    if step == rotation::Step::Scan {
        counts = scan(context, key).await?;
        observed.scan = Some(&counts);
        step = rotation::next(&name, &key.spec.rotation, recorded, answered, &observed);
    }
    let mut turn = Turn::default();
    // A failed attempt stays reported until the rotation moves on.
    if let Some(failure) = recorded.and_then(|rotation| rotation.failure.as_ref()) {
        turn.problem = Some(Problem {
            reason: failure_reason(&failure.reason),
            message: failure.message.clone(),
            degraded: true,
        });
    }
    match step {
        rotation::Step::Idle => {
            // No Job runs between rotations, so neither may its rights stand: this also
            // takes away a binding an older keyward left after its last rotation.
            if recorded.is_some() {
                jobs::unbind(&context.client, key).await?;
            }
            if let Some(at) = rotation::next_scheduled(&key.spec.rotation, keyring) {
                let wait = Duration::try_from(now.duration_until(at)).unwrap_or(Duration::ZERO);
                turn.requeue = Some(
                    wait.min(Duration::from_secs(3600))
                        .max(Duration::from_secs(1)),
                );
            }
        }
        rotation::Step::Record(mut next) => {
            // The Job's final count, as re-encryption ends; the ConfigMap holds nothing of
            // this rotation before that.
            if next.phase == RotationPhase::Verifying
                && let Some(progress) = reported_progress(context, key, &mut turn).await?
            {
                turn.counted = Counted::Reencrypted(progress.done);
                next.progress = Some(progress);
            }
            if next.phase == RotationPhase::Succeeded {
                turn.counted = Counted::Succeeded;
            }
            let phase = next.phase;
            let note = match (recorded.map(|r| r.phase), phase) {
                (_, RotationPhase::Staging) => format!(
                    "rotation to version {} started ({:?}); staging it on every pod",
                    next.target_version, next.trigger
                ),
                (_, RotationPhase::Succeeded) => format!(
                    "rotation to version {} finished: every ciphertext and every pod is on it",
                    next.target_version
                ),
                (_, phase) => format!(
                    "rotation to version {}: {}",
                    next.target_version,
                    phase.as_str()
                ),
            };
            // One reason per step, so `kubectl describe` lists each instead of folding
            // them into one series.
            let reason = match phase {
                RotationPhase::Staging => "RotationStarted",
                RotationPhase::Promoting => "RotationPromoting",
                RotationPhase::Reencrypting => "RotationReencrypting",
                RotationPhase::Verifying => "RotationVerifying",
                RotationPhase::Retiring => "RotationRetiring",
                RotationPhase::Succeeded => "RotationSucceeded",
            };
            // The external Job's keys, and the built-in Job's rights, live only as long
            // as their step: taken away before the step's end is recorded, so a crash in
            // between takes them away again.
            if phase == RotationPhase::Verifying {
                jobs::remove_versions_secret(&context.client, key, next.target_version).await?;
            }
            if matches!(phase, RotationPhase::Verifying | RotationPhase::Succeeded) {
                jobs::unbind(&context.client, key).await?;
            }
            turn.event = Some((EventType::Normal, reason, note));
            if phase == RotationPhase::Staging && key.spec.distribution.format != KeyFormat::Keyring
            {
                // Said once, when it matters: single-key formats hold only the primary.
                turn.event = Some((
                    EventType::Warning,
                    "RotationStarted",
                    format!(
                        "rotation to version {} started; spec.distribution.format {:?} carries only the primary key, so from promotion until re-encryption ends pods cannot read values still under version {} (use format Keyring to avoid this)",
                        next.target_version, key.spec.distribution.format, next.previous_version
                    ),
                ));
            }
            turn.record = Some(next);
            turn.requeue = Some(Duration::ZERO);
        }
        rotation::Step::AwaitRollout { overdue } => {
            // Pods in sync may still have to settle; look again either way.
            turn.requeue = Some(DISTRIBUTION_RECHECK);
            if overdue {
                turn.problem = Some(Problem {
                    reason: "RolloutTimeout",
                    message: format!(
                        "rotation phase {} has waited more than {} minutes for every pod of the targets to hold the keyring",
                        recorded.map(|r| r.phase.as_str()).unwrap_or_default(),
                        rotation::ROLLOUT_DEADLINE.as_secs() / 60
                    ),
                    degraded: true,
                });
            }
        }
        rotation::Step::AwaitRetry => {
            let retry_at = recorded.and_then(|rotation| rotation.retry_at.as_ref());
            let wait = retry_at
                .map(|at| Duration::try_from(now.duration_until(at.0)).unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::ZERO);
            turn.requeue = Some(wait.max(Duration::from_secs(1)));
        }
        rotation::Step::StartJob => {
            if let Some(rotation) = recorded {
                let job_name = rotation.job_name.clone().unwrap_or_default();
                let target = rotation.target_version;
                let external_name = jobs::external_job_name(&name, target, rotation.attempts);
                // Jobs of earlier attempts go only now that this attempt is recorded.
                jobs::remove_others(&context.client, key, &[&job_name, &external_name]).await?;
                match jobs::start(&context.client, key, job_options, &job_name, target).await {
                    Err(Error::ObjectNotOwned { kind, name }) => return Ok(conflict(&kind, &name)),
                    // Said in status, not only retried in silence.
                    Err(Error::Kube(kube::Error::Api(status)))
                        if status.code == 400 || status.code == 422 =>
                    {
                        turn.problem = Some(Problem {
                            reason: "ReencryptionJobRefused",
                            message: format!(
                                "the API server refused re-encryption Job {job_name:?}: {}",
                                status.message
                            ),
                            degraded: true,
                        });
                        turn.requeue = Some(DISTRIBUTION_RECHECK);
                        return Ok(turn);
                    }
                    other => other?,
                }
                let started = if external && !job_options.allow_templates {
                    Err(Error::JobTemplate(
                        "the operator does not run Job templates: start it with --allow-job-templates".to_owned(),
                    ))
                } else {
                    jobs::start_external(
                        &context.client,
                        key,
                        job_options,
                        keyring,
                        target,
                        &external_name,
                    )
                    .await
                };
                let refused = match started {
                    Err(Error::ObjectNotOwned { kind, name }) => return Ok(conflict(&kind, &name)),
                    Err(Error::JobTemplate(message)) => Some(message),
                    // The API server refused the Job built from the template.
                    Err(Error::Kube(kube::Error::Api(status)))
                        if status.code == 400 || status.code == 422 =>
                    {
                        Some(status.message.clone())
                    }
                    other => {
                        other?;
                        None
                    }
                };
                if let Some(message) = refused {
                    turn.problem = Some(Problem {
                        reason: "InvalidJobTemplate",
                        message: format!("spec.reencryption.jobTemplate cannot run: {message}"),
                        degraded: true,
                    });
                }
            }
            turn.requeue = Some(JOB_RECHECK);
        }
        rotation::Step::AwaitJob => {
            match jobs::keep_bound(&context.client, key).await {
                Err(Error::ObjectNotOwned { kind, name }) => return Ok(conflict(&kind, &name)),
                other => other?,
            }
            if let Some(rotation) = recorded {
                let progress = reported_progress(context, key, &mut turn).await?;
                if progress.is_some() && progress != rotation.progress {
                    let mut next = rotation.clone();
                    next.progress = progress;
                    turn.record = Some(next);
                }
            }
            turn.requeue = Some(JOB_RECHECK);
        }
        rotation::Step::Retry {
            mut rotation,
            reason,
        } => {
            let progress = reported_progress(context, key, &mut turn).await?;
            // Values that kept conflicting are retried, not undecryptable.
            let failed = progress.as_ref().map_or(0, |progress| {
                progress.failed.saturating_sub(progress.contended).max(0)
            });
            if progress.is_some() {
                rotation.progress = progress;
            }
            let (reason, message) = if failed > 0 {
                (
                    "UndecryptableCiphertext",
                    format!(
                        "{failed} value(s) under an older version do not decrypt (see status.rotation.progress.failures); the old versions stay until they are fixed or removed; retrying"
                    ),
                )
            } else if reason == "CiphertextRemains" {
                (
                    reason,
                    "the verification scan still finds ciphertext under an older version; re-encrypting again".to_owned(),
                )
            } else {
                (
                    reason,
                    "a re-encryption Job (the built-in one, or the one of spec.reencryption.jobTemplate) failed; retrying with new Jobs".to_owned(),
                )
            };
            // The failed Jobs stay until the next attempt, recorded first, starts; their
            // rights go now, before the backoff.
            jobs::unbind(&context.client, key).await?;
            let attempt = u32::try_from(rotation.attempts).unwrap_or(u32::MAX);
            let delay = backoff(attempt);
            let retry_at = SignedDuration::try_from(delay)
                .ok()
                .and_then(|delay| now.checked_add(delay).ok())
                .unwrap_or(now);
            rotation.retry_at = Some(Time(retry_at));
            rotation.failure = Some(crate::crd::encryption_key::RotationFailure {
                reason: reason.to_owned(),
                message: message.clone(),
            });
            turn.requeue = Some(delay);
            turn.problem = Some(Problem {
                reason,
                message: message.clone(),
                degraded: true,
            });
            turn.event = Some((EventType::Warning, reason, message));
            turn.counted = Counted::Failed(reason);
            turn.record = Some(rotation);
        }
        rotation::Step::Scan => {
            turn.requeue = Some(JOB_RECHECK);
        }
    }
    Ok(turn)
}

/// The progress the re-encryption Job reported. Counts that the Job cannot have written
/// (garbage, negative, inconsistent) are corrected by the parse and reported here: in the
/// log, and as the turn's problem unless it has a weightier one.
async fn reported_progress(
    context: &Context,
    key: &EncryptionKey,
    turn: &mut Turn,
) -> Result<Option<crate::crd::encryption_key::ReencryptionProgress>> {
    let (namespace, name) = (key.namespace().unwrap_or_default(), key.name_any());
    let Some(reported) = jobs::progress(&context.client, key).await? else {
        return Ok(None);
    };
    if !reported.untrusted.is_empty() {
        let config_map = jobs::progress_name(&name);
        let fields = reported.untrusted.join(", ");
        tracing::warn!(
            namespace,
            name,
            config_map,
            fields,
            "the re-encryption progress ConfigMap holds counts no Job wrote; they are corrected, not trusted"
        );
        let message = format!(
            "ConfigMap {config_map:?} holds re-encryption counts no Job wrote ({fields}: not a non-negative integer, or inconsistent with the others); they are read as corrected, and the verification scan decides whether the rotation finishes"
        );
        // Reported like any problem: Degraded with the reason, and a Warning Event when
        // it first appears.
        turn.problem.get_or_insert(Problem {
            reason: "ProgressInvalid",
            message,
            degraded: true,
        });
    }
    Ok(Some(reported.progress))
}

/// What distribution progress means for the `Distributed` and `Ready` conditions.
struct Outcome {
    distributed: bool,
    distributed_condition: (ConditionStatus, &'static str),
    ready_condition: (ConditionStatus, &'static str),
    summary: String,
    /// A request of the spec that keeps `Ready` false although the key is distributed.
    notice: Option<Problem>,
}

/// Distributed only when every named target exists, nothing keeps the key out of any
/// targeted container, and every pod it asks for is ready with the current keyring.
fn outcome(rollout: &Rollout, notice: Option<Problem>) -> Outcome {
    let (in_sync, total) = (rollout.pods_in_sync, rollout.pods_total);
    let counted = format!("{in_sync}/{total} ready pods of the targets hold the current keyring");
    // A conflict or a missing container does not pass by waiting: it is the problem
    // reported, before a rotation's.
    if let Some(first) = rollout.blocked.first() {
        let reason = first.reason();
        let mut message = first.to_string();
        if rollout.blocked.len() > 1 {
            message.push_str(&format!(
                " (and {} more such problem(s))",
                rollout.blocked.len() - 1
            ));
        }
        return Outcome {
            distributed: false,
            distributed_condition: (ConditionStatus::False, reason),
            ready_condition: (ConditionStatus::False, reason),
            summary: format!("{message}; {counted}"),
            notice: Some(Problem {
                reason,
                message,
                degraded: true,
            }),
        };
    }
    if !rollout.missing.is_empty() {
        return Outcome {
            distributed: false,
            distributed_condition: (ConditionStatus::False, "TargetNotFound"),
            ready_condition: (ConditionStatus::False, "TargetNotFound"),
            summary: format!(
                "spec.targets names {} which does not exist; {counted}",
                rollout.missing.join(", ")
            ),
            notice,
        };
    }
    let distributed = in_sync == total;
    Outcome {
        distributed,
        distributed_condition: if distributed {
            (ConditionStatus::True, "InSync")
        } else {
            (ConditionStatus::False, "RollingOut")
        },
        ready_condition: if distributed {
            (ConditionStatus::True, "KeyDistributed")
        } else {
            (ConditionStatus::False, "Distributing")
        },
        summary: counted,
        notice,
    }
}

/// What a reconcile found, for status.
enum Found<'a> {
    /// Something keeps the key from being ready; the keyring, when there is one, is
    /// still listed.
    Problem(Problem, Option<&'a Keyring>),
    /// The keyring was just created; nothing is distributed yet.
    Created(&'a Keyring),
    /// The keyring, how far its distribution got, and what that means.
    Keyring {
        keyring: &'a Keyring,
        progress: DistributionStatus,
        outcome: Outcome,
    },
}

/// Writes status (only when it changes) with an event on each transition a user would
/// want to see; remembers what it wrote, so a second report in one reconcile compares
/// against it.
struct Reporter<'a> {
    context: &'a Context,
    key: &'a EncryptionKey,
    now: Timestamp,
    current: Option<EncryptionKeyStatus>,
    /// The rotation to record with the next report, when it changes.
    rotation: Option<Option<RotationStatus>>,
}

impl<'a> Reporter<'a> {
    fn new(context: &'a Context, key: &'a EncryptionKey, now: Timestamp) -> Self {
        Self {
            context,
            key,
            now,
            current: key.status.clone(),
            rotation: None,
        }
    }

    async fn report(&mut self, found: Found<'_>) -> Result<()> {
        let (key, now) = (self.key, self.now);
        let generation = key.meta().generation;
        let previous = self.current.clone().unwrap_or_default();
        let was = |type_: ConditionType| {
            find_condition(&previous.conditions, type_)
                .map(|c| (c.status.clone(), c.reason.clone()))
        };
        let mut status = previous.clone();
        status.observed_generation = generation;
        let set = |status: &mut EncryptionKeyStatus,
                   type_: ConditionType,
                   state: ConditionStatus,
                   reason: &str,
                   message: &str| {
            set_condition(
                &mut status.conditions,
                type_,
                state,
                reason,
                message.to_owned(),
                generation,
                now,
            );
        };
        if let Some(rotation) = self.rotation.take() {
            if let Some(rotation) = &rotation
                && rotation.phase == RotationPhase::Staging
            {
                status.rotation_generation = Some(rotation.generation);
            }
            status.rotation = rotation;
        }
        // The counter a new key (or one adopting a keyring) starts from: only a later
        // bump asks for a rotation.
        if status.rotation_generation.is_none() {
            status.rotation_generation = Some(key.spec.rotation.generation);
        }
        let (rotating, rotating_reason, rotating_message) = rotating(&status);
        set(
            &mut status,
            ConditionType::Rotating,
            rotating,
            rotating_reason,
            &rotating_message,
        );
        let mut events = Vec::new();
        let mut problem_to_report = None;
        match found {
            Found::Problem(problem, keyring) => {
                if let Some(keyring) = keyring {
                    list_versions(&mut status, key, keyring);
                }
                problem_to_report = Some(problem);
            }
            Found::Created(keyring) => {
                list_versions(&mut status, key, keyring);
                let message = "key version 1 created; distributing it to the targets";
                set(
                    &mut status,
                    ConditionType::Ready,
                    ConditionStatus::False,
                    "Distributing",
                    message,
                );
            }
            Found::Keyring {
                keyring,
                progress,
                outcome,
            } => {
                list_versions(&mut status, key, keyring);
                status.distribution = Some(progress);
                let (state, reason) = outcome.distributed_condition;
                set(
                    &mut status,
                    ConditionType::Distributed,
                    state,
                    reason,
                    &outcome.summary,
                );
                let was_distributed =
                    was(ConditionType::Distributed).is_some_and(|(status, _)| status == "True");
                if outcome.distributed && !was_distributed {
                    events.push((
                        EventType::Normal,
                        "Distributed",
                        "Distribute",
                        outcome.summary.clone(),
                    ));
                }
                match outcome.notice {
                    Some(notice) => problem_to_report = Some(notice),
                    None => {
                        let (ready, reason) = outcome.ready_condition;
                        set(
                            &mut status,
                            ConditionType::Ready,
                            ready,
                            reason,
                            &outcome.summary,
                        );
                        set(
                            &mut status,
                            ConditionType::Degraded,
                            ConditionStatus::False,
                            "AsExpected",
                            "",
                        );
                    }
                }
            }
        }
        if let Some(problem) = problem_to_report {
            let message = &problem.message;
            set(
                &mut status,
                ConditionType::Ready,
                ConditionStatus::False,
                problem.reason,
                message,
            );
            let (degraded, reason) = if problem.degraded {
                (ConditionStatus::True, problem.reason)
            } else {
                (ConditionStatus::False, "AsExpected")
            };
            set(
                &mut status,
                ConditionType::Degraded,
                degraded,
                reason,
                if problem.degraded { message } else { "" },
            );
            let newly =
                was(ConditionType::Ready) != Some(("False".to_owned(), problem.reason.to_owned()));
            if newly {
                events.push((
                    EventType::Warning,
                    problem.reason,
                    "Reconcile",
                    problem.message.clone(),
                ));
            }
        }
        let api: Api<EncryptionKey> = namespaced_api(&self.context.client, key)?;
        apply_status(
            self.context,
            &api,
            ENCRYPTION_KEY_MANAGER,
            key,
            self.current.as_ref(),
            &status,
        )
        .await?;
        self.current = Some(status);
        for (type_, reason, action, note) in events {
            let notice = Notice {
                type_,
                reason,
                action,
                note,
            };
            self.context.publish(key, notice).await;
        }
        Ok(())
    }
}

/// Ciphertexts per version in the Secrets the rotation covers: those of
/// `spec.reencryption.selector` and, always, those labelled for the key (Encrypted
/// OAuthClients' verifiers) and the verifiers of the key's Encrypted OAuthClients that
/// lost that label, so neither a narrow selector nor a removed label can hide what pods
/// still need.
async fn scan(
    context: &Context,
    key: &EncryptionKey,
) -> Result<std::collections::BTreeMap<i64, u64>> {
    let name = key.name_any();
    let namespace = key.namespace().unwrap_or_default();
    let scanned = |selector: Option<String>| {
        let client = context.client.clone();
        let (namespace, name) = (namespace.clone(), name.clone());
        async move {
            crate::reencrypt::scan(&client, &namespace, &name, selector.as_deref())
                .await
                .map_err(|error| Error::Scan(error.to_string()))
        }
    };
    let mut counts = scanned(None).await?;
    if let Some(selector) = jobs::selector(key)? {
        for (version, count) in scanned(Some(selector)).await? {
            *counts.entry(version).or_default() += count;
        }
    }
    unlabelled_verifiers(context, key, &mut counts).await?;
    Ok(counts)
}

/// Counts the ciphertext of `key` in the verifiers of its Encrypted OAuthClients that do
/// not carry the key's label (anyone who may edit Secrets can remove it), found through
/// the clients that own them; the OAuthClient controller puts the label back, so the
/// next re-encryption attempt covers them.
async fn unlabelled_verifiers(
    context: &Context,
    key: &EncryptionKey,
    counts: &mut std::collections::BTreeMap<i64, u64>,
) -> Result<()> {
    use crate::crd::OAuthClient;
    use crate::crd::oauth_client::SecretNames;
    let name = key.name_any();
    let namespace = key.namespace().unwrap_or_default();
    let clients: Api<OAuthClient> = Api::namespaced(context.client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &namespace);
    let mut params = kube::api::ListParams::default().limit(500);
    loop {
        let page = clients.list(&params).await?;
        for client in &page.items {
            let encrypted_under_key = client
                .spec
                .encryption_key_ref
                .as_ref()
                .is_some_and(|reference| reference.name == name);
            if !encrypted_under_key {
                continue;
            }
            let verifier = SecretNames::of(&client.name_any(), &client.spec).verifier;
            let Some(secret) = store::get(&secrets, &verifier).await? else {
                continue;
            };
            let labelled = secret.labels().get(store::KEY_LABEL) == Some(&name);
            if labelled || !store::is_owned_by(secret.meta(), client) {
                continue;
            }
            crate::reencrypt::count_versions(secret.data.as_ref(), &name, counts);
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(()),
        }
    }
}

/// A turn that stops on an object of a rotation's name that is not the key's: reported,
/// never used or written over, looked at again after a while.
fn conflict(kind: &str, name: &str) -> Turn {
    Turn {
        problem: Some(Problem {
            reason: "ObjectConflict",
            message: format!(
                "{kind} {name:?} exists and is not this EncryptionKey's; keyward will neither use nor overwrite it: remove it to let the rotation go on"
            ),
            degraded: true,
        }),
        requeue: Some(DISTRIBUTION_RECHECK),
        ..Turn::default()
    }
}

/// The reason of a recorded failure, as one of the reasons keyward reports (status text
/// is never taken as a reason as it stands).
fn failure_reason(recorded: &str) -> &'static str {
    match recorded {
        "UndecryptableCiphertext" => "UndecryptableCiphertext",
        "CiphertextRemains" => "CiphertextRemains",
        _ => "ReencryptionFailed",
    }
}

/// The `Rotating` condition: which step runs and what it waits on.
fn rotating(status: &EncryptionKeyStatus) -> (ConditionStatus, &'static str, String) {
    let Some(rotation) = status
        .rotation
        .as_ref()
        .filter(|rotation| rotation.phase != RotationPhase::Succeeded)
    else {
        return (ConditionStatus::False, "Idle", String::new());
    };
    let target = rotation.target_version;
    let pods = status
        .distribution
        .as_ref()
        .map(|d| format!("{}/{} pods hold it", d.pods_in_sync, d.pods_total))
        .unwrap_or_default();
    let message = match rotation.phase {
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

/// Lists the keyring's versions in status.
fn list_versions(status: &mut EncryptionKeyStatus, key: &EncryptionKey, keyring: &Keyring) {
    status.keyring_secret_name = Some(keyring_store::secret_name(&key.name_any()));
    status.primary_version = keyring.primary().ok().map(|primary| primary.version);
    status.versions = keyring.versions.iter().map(version_status).collect();
}

/// One keyring version as status shows it: never the material, only its fingerprint.
fn version_status(version: &crate::crypto::keyring::KeyVersion) -> KeyVersionStatus {
    KeyVersionStatus {
        version: version.version,
        state: version.state.as_str().to_owned(),
        created_at: Time(version.created_at),
        fingerprint: version.material.fingerprint(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(pods_in_sync: i32, pods_total: i32, missing: &[&str]) -> Rollout {
        Rollout {
            pods_in_sync,
            pods_total,
            missing: missing.iter().map(|m| (*m).to_owned()).collect(),
            blocked: Vec::new(),
        }
    }

    #[test]
    fn distributed_needs_every_pod_in_sync_and_every_named_target_present() {
        assert!(outcome(&rollout(3, 3, &[]), None).distributed);
        let rolling = outcome(&rollout(2, 3, &[]), None);
        assert!(!rolling.distributed);
        assert_eq!(rolling.ready_condition.1, "Distributing");
        let missing = outcome(&rollout(0, 0, &["Deployment apim"]), None);
        assert!(!missing.distributed);
        assert_eq!(missing.distributed_condition.1, "TargetNotFound");
        assert!(missing.summary.contains("Deployment apim"));
    }

    #[test]
    fn a_conflict_is_degraded_and_never_distributed_even_with_every_pod_in_sync() {
        let mut blocked = rollout(2, 2, &[]);
        blocked.blocked.push(workload::Blocked::Conflict {
            workload: "Deployment apim".to_owned(),
            container: Some("apim".to_owned()),
            place: workload::Place::MountPath("/etc/keyward".to_owned()),
            holder: "volume \"keyward-first\"".to_owned(),
        });
        let outcome = outcome(&blocked, None);
        assert!(!outcome.distributed);
        assert_eq!(
            outcome.distributed_condition,
            (ConditionStatus::False, "DistributionConflict")
        );
        let notice = outcome.notice.expect("a problem to report");
        assert!(notice.degraded);
        assert_eq!(notice.reason, "DistributionConflict");
        for named in [
            "Deployment apim",
            "\"apim\"",
            "/etc/keyward",
            "keyward-first",
        ] {
            assert!(
                notice.message.contains(named),
                "{named} in {}",
                notice.message
            );
        }
    }
}
