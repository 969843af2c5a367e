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
pub mod reasons;
pub mod render;
pub mod rotation;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use self::decide::{Observed, Problem, Step};
use self::rotation::Reshape;
use crate::controller::context::{Context, Notice};
use crate::controller::kit::{
    apply_status, in_namespace_of, latest, lean_controller, namespaced_api, owners_of,
    watcher_config,
};
use crate::controller::options::JobOptions;
use crate::crd::encryption_key::{
    DistributionStatus, EncryptionKeyStatus, KeyVersionStatus, RotationPhase, RotationStatus,
    WorkloadKind,
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
                    rotation::apply_reshape(&key, &mut keyring, change, now)?;
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
    let turn = rotation::rotate(
        context,
        job_options,
        key,
        keyring,
        rotation::Pods { in_sync, any: pods },
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
    if let Some(notice) = turn.event {
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
    match rotation::before_retiring(context, key, rotation, now).await? {
        rotation::Retirement::Clear => Ok(true),
        rotation::Retirement::Unrecorded => Ok(false),
        rotation::Retirement::ReencryptAgain { rotation, problem } => {
            reporter.rotation = Some(Some(*rotation));
            reporter.report(Found::Problem(problem, None)).await?;
            Ok(false)
        }
    }
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
