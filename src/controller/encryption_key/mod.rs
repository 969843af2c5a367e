//! Reconciler of `EncryptionKey`: keeps the keyring Secret, renders the key for pods,
//! projects it into the target workloads, counts the pods that hold it and rotates it.
//!
//! One reconcile reads as load → decide → act → status: `load` reads the keyring,
//! the key-encryption key and the source; [`decide::next_step`] chooses; the step is
//! carried out ([`keyring`], [`distribute`], [`rotation`]); and [`status::next`]
//! computes the status from what was found, written once at the end. The keyring is
//! created once and never regenerated: if status records versions but the keyring is
//! gone or unreadable, the key is `Degraded` and waits for the user to restore it,
//! because a new key would make every existing ciphertext unreadable. Key material
//! never reaches a log line, an event or status — only fingerprints do.

pub mod decide;
pub mod distribute;
pub mod keyring;
pub mod reasons;
pub mod render;
pub mod rotation;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use self::decide::{Observed, Step};
use self::distribute::{DISTRIBUTION_RECHECK, Distribution, SETTLED_RECHECK};
use self::rotation::{Pods, Reshape, Retirement, Turn};
use self::status::{Findings, Found, Listed};
use crate::controller::context::Context;
use crate::controller::kit::{
    apply_status, in_namespace_of, latest, lean_controller, namespaced_api, owners_of,
    watcher_config,
};
use crate::controller::options::JobOptions;
use crate::crd::EncryptionKey;
use crate::crd::encryption_key::{RotationPhase, WorkloadKind};
use crate::crypto::{KeyMaterial, Keyring};
use crate::store::{self, ENCRYPTION_KEY_MANAGER, keyring as keyring_store};
use crate::{Error, Result};

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

/// Brings one EncryptionKey up to date: load → decide → act → status.
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
    let now = Timestamp::now();
    let key = current(&context, key).await?;
    let observed = load(&key, &secrets).await?;
    let kek = observed
        .kek
        .as_ref()
        .and_then(|kek| kek.as_ref().ok())
        .cloned();
    let step = match decide::refused_distribution(&key.spec.distribution) {
        Some(problem) => Step::Report(problem),
        None => decide::next_step(&key.name_any(), key.status.as_ref(), observed),
    };
    let reconciling = Reconciling {
        context: &context,
        job_options: &job_options,
        key: &key,
        secrets: &secrets,
        kek: kek.as_ref(),
        now,
    };
    let acted = reconciling.act(step).await?;
    if let Some(findings) = acted.findings {
        write_status(&context, &key, findings, now).await?;
    }
    // A rotation's outcome is counted, and its Event published, once its record is
    // written.
    if let Some(turn) = acted.turn {
        turn.counted.count(&context.metrics, &key);
        if let Some(notice) = turn.event {
            context.publish(key.as_ref(), notice).await;
        }
    }
    context.record_success(key.as_ref());
    Ok(acted.action)
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

/// What carrying out one step did: what status is to show (nothing to write when
/// `None`), the rotation's turn whose count and Event follow the status write, and when
/// to look again.
struct Acted {
    findings: Option<Findings>,
    turn: Option<Turn>,
    action: Action,
}

impl Acted {
    /// Status to write, then `action`.
    fn reported(findings: Findings, action: Action) -> Self {
        Self {
            findings: Some(findings),
            turn: None,
            action,
        }
    }

    /// Status to write that must be written before anything else is done: the write
    /// ends the reconcile, and the next looks again at once.
    fn recorded_then_again(findings: Findings) -> Self {
        Self::reported(findings, Action::requeue(Duration::ZERO))
    }

    /// Nothing for status: the keyring changed, or nothing may change yet; an immediate
    /// look again reads it afresh.
    fn again() -> Self {
        Self {
            findings: None,
            turn: None,
            action: Action::requeue(Duration::ZERO),
        }
    }
}

/// What one reconcile acts on: the key as read, its namespace's Secrets, its usable
/// key-encryption key, and the time it started.
struct Reconciling<'a> {
    context: &'a Context,
    job_options: &'a JobOptions,
    key: &'a EncryptionKey,
    secrets: &'a Api<Secret>,
    kek: Option<&'a KeyMaterial>,
    now: Timestamp,
}

impl Reconciling<'_> {
    /// Carries out `step`.
    async fn act(&self, step: Step) -> Result<Acted> {
        match step {
            Step::Report(problem) => {
                let found = Found::Problem {
                    problem,
                    keyring: None,
                };
                Ok(Acted::reported(found.into(), Action::await_change()))
            }
            Step::WrapKeyring {
                keyring,
                resource_version,
            } => {
                keyring::wrap(
                    self.context,
                    self.key,
                    self.secrets,
                    &keyring,
                    resource_version,
                    self.kek,
                )
                .await?;
                Ok(Acted::again())
            }
            Step::CreateKeyring { material } => {
                let keyring = keyring::create(
                    self.context,
                    self.key,
                    self.secrets,
                    material,
                    self.kek,
                    self.now,
                )
                .await?;
                // Recorded at once: from here on a lost keyring is reported, never
                // replaced. Until status lists version 1, a keyring lost (or a
                // distribution that fails) would leave nothing that says a key existed,
                // so this write comes before anything else is done with the keyring; it
                // ends this reconcile, and the next, at once, distributes the keyring it
                // reads back. That keeps one status write per reconcile.
                Ok(Acted::recorded_then_again(
                    Found::Created(Listed::of(&keyring)).into(),
                ))
            }
            Step::Distribute {
                keyring,
                resource_version,
            } => self.distribute(keyring, resource_version).await,
        }
    }

    /// Gives the keyring the shape the rotation's phase needs, or, once it has it,
    /// distributes it and takes the rotation's next step.
    async fn distribute(
        &self,
        mut keyring: Keyring,
        resource_version: Option<String>,
    ) -> Result<Acted> {
        let recorded = self
            .key
            .status
            .as_ref()
            .and_then(|status| status.rotation.as_ref());
        let Some(change) = rotation::reshape(recorded, &self.key.spec.rotation, &keyring) else {
            return self.distribute_and_rotate(&keyring).await;
        };
        if matches!(change, Reshape::Retire { .. }) {
            match rotation::before_retiring(self.context, self.key, &keyring, recorded, self.now)
                .await?
            {
                Retirement::Clear => {}
                Retirement::Unrecorded => return Ok(Acted::again()),
                // Recorded before anything is retired: the status write ends this
                // reconcile, and the next re-encrypts again.
                Retirement::ReencryptAgain { rotation, problem } => {
                    return Ok(Acted::recorded_then_again(Findings {
                        found: Found::Problem {
                            problem,
                            keyring: None,
                        },
                        rotation: Some(*rotation),
                    }));
                }
            }
        }
        rotation::apply_reshape(self.key, &mut keyring, change, self.now)?;
        let name = self.key.name_any();
        keyring_store::update(self.secrets, &name, resource_version, &keyring, self.kek).await?;
        Ok(Acted::again())
    }

    /// Distributes `keyring`, takes the rotation's next step with what the pods hold,
    /// and says what status is to show of both.
    async fn distribute_and_rotate(&self, keyring: &Keyring) -> Result<Acted> {
        let distributed =
            distribute::distribute(self.context, self.key, self.secrets, keyring).await?;
        let (rollout, progress) = match distributed {
            Distribution::Conflict(problem) => {
                let found = Found::Problem {
                    problem,
                    keyring: Some(Listed::of(keyring)),
                };
                return Ok(Acted::reported(found.into(), Action::await_change()));
            }
            Distribution::RolledOut { rollout, progress } => (rollout, progress),
        };
        let pods = Pods {
            in_sync: distribute::in_sync(&rollout),
            any: rollout.pods_total > 0,
        };
        let mut turn = rotation::rotate(
            self.context,
            self.job_options,
            self.key,
            keyring,
            pods,
            self.now,
        )
        .await?;
        let outcome = distribute::outcome(&rollout, turn.problem.clone());
        let action = match turn.requeue {
            Some(delay) => Action::requeue(delay),
            None if outcome.distributed => Action::requeue(SETTLED_RECHECK),
            None => Action::requeue(DISTRIBUTION_RECHECK),
        };
        let findings = Findings {
            found: Found::Distribution {
                keyring: Listed::of(keyring),
                progress,
                outcome,
            },
            rotation: turn.record.take(),
        };
        Ok(Acted {
            findings: Some(findings),
            turn: Some(turn),
            action,
        })
    }
}

/// Writes the status `findings` lead to (only when it differs from the key's), then
/// publishes the Events of its transitions.
async fn write_status(
    context: &Context,
    key: &EncryptionKey,
    findings: Findings,
    now: Timestamp,
) -> Result<()> {
    let next = status::next(key, key.status.as_ref(), findings, now);
    let api: Api<EncryptionKey> = namespaced_api(&context.client, key)?;
    apply_status(
        context,
        &api,
        ENCRYPTION_KEY_MANAGER,
        key,
        key.status.as_ref(),
        &next.status,
    )
    .await?;
    for notice in next.notices {
        context.publish(key, notice).await;
    }
    Ok(())
}
