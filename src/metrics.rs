//! Prometheus metrics, served at `/metrics` on `--metrics-addr`.
//!
//! Counters are bumped where things happen; the per-object gauges (OAuthClients by
//! state, pods in sync, key version ages and ciphertext counts, time to the next
//! rotation) are read from the controllers' caches at scrape time, so they are never
//! stale and cost nothing between scrapes. Labels name controllers, reasons, namespaces,
//! EncryptionKeys and key versions only: never a secret, a client id or an OAuthClient.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::encryption_key::RotationPhase;
use crate::crd::{EncryptionKey, OAuthClient};

/// Which controller a reconcile belongs to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

/// A failed reconcile: its controller and the error's stable label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub reason: &'static str,
}

/// Why a client secret was written (`Issued`, `Rotated`, `Reissued` or `Imported`), and
/// in which namespace.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecretLabels {
    pub namespace: String,
    pub reason: &'static str,
}

/// How a rotation attempt of one EncryptionKey ended: `succeeded`, or `failed` with the
/// reason it is retried.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationLabels {
    pub namespace: String,
    pub encryption_key: String,
    pub outcome: &'static str,
    pub reason: &'static str,
}

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Family<ControllerLabels, Histogram>,
    client_secrets: Family<SecretLabels, Counter>,
    key_rotations: Family<RotationLabels, Counter>,
    reencrypted: Counter,
    leader: Gauge,
    caches: Arc<Caches>,
}

/// The controllers' caches, while this process leads; empty while it stands by.
#[derive(Debug, Default)]
struct Caches {
    stores: Mutex<Stores>,
}

#[derive(Debug, Default)]
struct Stores {
    clients: Vec<Store<OAuthClient>>,
    keys: Vec<Store<EncryptionKey>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers the process's own metrics under their conventional names, and every
    /// other metric under the `keyward_` prefix.
    pub fn new() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("keyward");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles run, by controller",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed and are retried with backoff, by controller and error",
            reconcile_errors.clone(),
        );
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 13))
            });
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconcile takes, by controller",
            reconcile_duration.clone(),
        );
        let client_secrets = Family::<SecretLabels, Counter>::default();
        registry.register(
            "client_secrets_written",
            "OAuth client secrets written, by reason (Issued, Rotated, Reissued, Imported)",
            client_secrets.clone(),
        );
        let key_rotations = Family::<RotationLabels, Counter>::default();
        registry.register(
            "encryption_key_rotations",
            "EncryptionKey rotation attempts that ended, by outcome and reason",
            key_rotations.clone(),
        );
        let reencrypted = Counter::default();
        registry.register(
            "reencrypted_values",
            "Values re-encrypted to a new key version by rotation Jobs",
            reencrypted.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process holds the leader lease and runs the controllers, 0 while it stands by",
            leader.clone(),
        );
        let caches = Arc::new(Caches::default());
        registry.register_collector(Box::new(CacheCollector(caches.clone())));
        Self {
            registry: root,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            client_secrets,
            key_rotations,
            reencrypted,
            leader,
            caches,
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Counts one reconcile of `controller` that took `elapsed` and failed with
    /// `error` (a stable label), if it failed.
    pub fn reconciled(
        &self,
        controller: &'static str,
        elapsed: Duration,
        error: Option<&'static str>,
    ) {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(reason) = error {
            self.reconcile_errors
                .get_or_create(&ErrorLabels { controller, reason })
                .inc();
        }
    }

    /// Counts a client secret written for `reason` in `namespace`.
    pub fn client_secret_written(&self, namespace: &str, reason: &'static str) {
        self.client_secrets
            .get_or_create(&SecretLabels {
                namespace: namespace.to_owned(),
                reason,
            })
            .inc();
    }

    /// Counts a rotation of `key` that succeeded.
    pub fn rotation_succeeded(&self, key: &EncryptionKey) {
        self.rotation_ended(key, "succeeded", "");
    }

    /// Counts a rotation attempt of `key` that failed for `reason` (and will be retried).
    pub fn rotation_failed(&self, key: &EncryptionKey, reason: &'static str) {
        self.rotation_ended(key, "failed", reason);
    }

    fn rotation_ended(&self, key: &EncryptionKey, outcome: &'static str, reason: &'static str) {
        self.key_rotations
            .get_or_create(&RotationLabels {
                namespace: key.namespace().unwrap_or_default(),
                encryption_key: key.name_any(),
                outcome,
                reason,
            })
            .inc();
    }

    /// Counts values a rotation Job re-encrypted.
    pub fn reencrypted(&self, values: u64) {
        self.reencrypted.inc_by(values);
    }

    /// Records whether this process leads, and the caches its controllers fill while it
    /// does (none while it stands by).
    pub fn lead(
        &self,
        clients: Vec<Store<OAuthClient>>,
        keys: Vec<Store<EncryptionKey>>,
        leading: bool,
    ) {
        self.leader.set(i64::from(leading));
        let mut stores = self.caches.stores.lock().unwrap_or_else(|p| p.into_inner());
        *stores = Stores { clients, keys };
    }
}

/// Reads the gauges that describe objects from the controllers' caches, at scrape time.
#[derive(Debug)]
struct CacheCollector(Arc<Caches>);

/// The objects of one namespace by their `Ready` condition's status and reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    namespace: String,
    ready: &'static str,
    reason: String,
}

/// One namespace.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

/// One EncryptionKey.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    namespace: String,
    encryption_key: String,
}

/// One version of one EncryptionKey.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    namespace: String,
    encryption_key: String,
    version: String,
    state: String,
}

/// The phase of one EncryptionKey's rotation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    namespace: String,
    encryption_key: String,
    phase: String,
}

/// One of the counts a re-encryption Job reports: `total`, `done` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgressLabels {
    namespace: String,
    encryption_key: String,
    count: &'static str,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (clients, keys) = {
            let stores = self.0.stores.lock().unwrap_or_else(|p| p.into_inner());
            let clients: Vec<_> = stores.clients.iter().flat_map(Store::state).collect();
            let keys: Vec<_> = stores.keys.iter().flat_map(Store::state).collect();
            (clients, keys)
        };
        let now = Timestamp::now();
        encode_clients(&mut encoder, &clients, now)?;
        encode_keys(&mut encoder, &keys, now)
    }
}

/// OAuthClients by state, and the grace periods of their previous secrets, by namespace.
fn encode_clients(
    encoder: &mut DescriptorEncoder,
    clients: &[Arc<OAuthClient>],
    now: Timestamp,
) -> Result<(), std::fmt::Error> {
    let by_state = Family::<ReadyLabels, Gauge>::default();
    // Per namespace: clients in a grace period, and the seconds left of the earliest.
    let mut graces = BTreeMap::<String, (i64, f64)>::new();
    for client in clients {
        let namespace = client.namespace().unwrap_or_default();
        let conditions = client.status.as_ref().map(|s| s.conditions.as_slice());
        by_state
            .get_or_create(&ready_state(&namespace, conditions.unwrap_or_default()))
            .inc();
        let expires = client
            .status
            .as_ref()
            .and_then(|status| status.previous_secret_expires_at.as_ref());
        let Some(left) = expires
            .map(|at| at.0.duration_since(now).as_secs_f64())
            .filter(|left| *left > 0.0)
        else {
            continue;
        };
        let grace = graces.entry(namespace).or_insert((0, f64::INFINITY));
        *grace = (grace.0 + 1, grace.1.min(left));
    }
    let in_grace = Family::<NamespaceLabels, Gauge>::default();
    let grace_left = Family::<NamespaceLabels, FloatGauge>::default();
    for (namespace, (count, earliest)) in graces {
        let labels = NamespaceLabels { namespace };
        in_grace.get_or_create(&labels).set(count);
        grace_left.get_or_create(&labels).set(earliest);
    }
    emit(
        encoder,
        "oauth_clients",
        "OAuthClients by namespace and their Ready condition's status and reason",
        &by_state,
    )?;
    emit(
        encoder,
        "oauth_clients_in_grace",
        "OAuthClients whose previous secret still verifies, by namespace",
        &in_grace,
    )?;
    emit(
        encoder,
        "oauth_client_grace_seconds_left",
        "Seconds until the earliest grace period of a previous client secret in the namespace ends; absent when none is in one",
        &grace_left,
    )
}

/// EncryptionKeys by state, their versions, distribution and rotation.
fn encode_keys(
    encoder: &mut DescriptorEncoder,
    keys: &[Arc<EncryptionKey>],
    now: Timestamp,
) -> Result<(), std::fmt::Error> {
    let by_state = Family::<ReadyLabels, Gauge>::default();
    let in_sync = Family::<KeyLabels, Gauge>::default();
    let total = Family::<KeyLabels, Gauge>::default();
    let next_rotation = Family::<KeyLabels, FloatGauge>::default();
    let age = Family::<VersionLabels, FloatGauge>::default();
    let ciphertexts = Family::<VersionLabels, Gauge>::default();
    let without_key_id = Family::<KeyLabels, Gauge>::default();
    let phase = Family::<PhaseLabels, Gauge>::default();
    let phase_seconds = Family::<PhaseLabels, FloatGauge>::default();
    let failed_attempts = Family::<KeyLabels, Gauge>::default();
    let progress = Family::<ProgressLabels, Gauge>::default();
    for key in keys {
        let labels = KeyLabels {
            namespace: key.namespace().unwrap_or_default(),
            encryption_key: key.name_any(),
        };
        let conditions = key.status.as_ref().map(|s| s.conditions.as_slice());
        by_state
            .get_or_create(&ready_state(
                &labels.namespace,
                conditions.unwrap_or_default(),
            ))
            .inc();
        let Some(status) = &key.status else { continue };
        if let Some(distribution) = &status.distribution {
            in_sync
                .get_or_create(&labels)
                .set(distribution.pods_in_sync.into());
            total
                .get_or_create(&labels)
                .set(distribution.pods_total.into());
        }
        let version_labels = |version: i64| {
            let state = status
                .versions
                .iter()
                .find(|v| v.version == version)
                .map_or_else(String::new, |v| v.state.clone());
            VersionLabels {
                namespace: labels.namespace.clone(),
                encryption_key: labels.encryption_key.clone(),
                version: version.to_string(),
                state,
            }
        };
        for version in &status.versions {
            let seconds = now.duration_since(version.created_at.0).as_secs_f64();
            age.get_or_create(&version_labels(version.version))
                .set(seconds);
        }
        if let Some(rotation) = &status.rotation {
            for count in &rotation.scan {
                ciphertexts
                    .get_or_create(&version_labels(count.version))
                    .set(count.ciphertexts);
            }
            if !key.spec.reencryption.databases.is_empty() {
                without_key_id
                    .get_or_create(&labels)
                    .set(rotation.without_key_id);
            }
            let phase_labels = PhaseLabels {
                namespace: labels.namespace.clone(),
                encryption_key: labels.encryption_key.clone(),
                // The variant names are the API's phase names.
                phase: format!("{:?}", rotation.phase),
            };
            phase.get_or_create(&phase_labels).set(1);
            if rotation.phase != RotationPhase::Succeeded {
                phase_seconds.get_or_create(&phase_labels).set(
                    now.duration_since(rotation.phase_started_at.0)
                        .as_secs_f64(),
                );
                failed_attempts
                    .get_or_create(&labels)
                    .set(rotation.attempts.into());
                if let Some(counts) = &rotation.progress {
                    for (count, value) in [
                        ("total", counts.total),
                        ("done", counts.done),
                        ("failed", counts.failed),
                    ] {
                        progress
                            .get_or_create(&ProgressLabels {
                                namespace: labels.namespace.clone(),
                                encryption_key: labels.encryption_key.clone(),
                                count,
                            })
                            .set(value);
                    }
                }
            }
        }
        if let Some(at) = key.next_scheduled_rotation() {
            next_rotation
                .get_or_create(&labels)
                .set(at.duration_since(now).as_secs_f64());
        }
    }
    emit(
        encoder,
        "encryption_keys",
        "EncryptionKeys by namespace and their Ready condition's status and reason",
        &by_state,
    )?;
    emit(
        encoder,
        "encryption_key_pods_in_sync",
        "Ready pods of an EncryptionKey's targets that hold its current keyring",
        &in_sync,
    )?;
    emit(
        encoder,
        "encryption_key_pods",
        "Ready pods of an EncryptionKey's targets",
        &total,
    )?;
    emit(
        encoder,
        "encryption_key_version_age_seconds",
        "Age of each key version",
        &age,
    )?;
    emit(
        encoder,
        "encryption_key_version_ciphertexts",
        "Ciphertexts under each key version found by the last verification scan (Secrets, and database values by key id)",
        &ciphertexts,
    )?;
    emit(
        encoder,
        "encryption_key_values_without_key_id",
        "Database values the last scan found without a key id or in legacy AES/ECB (WSO2 reads them with old_key); absent for keys without databases",
        &without_key_id,
    )?;
    emit(
        encoder,
        "encryption_key_rotation_phase",
        "1 for the phase of the key's current or last rotation; absent for a key that never rotated",
        &phase,
    )?;
    emit(
        encoder,
        "encryption_key_rotation_phase_seconds",
        "Seconds since the phase of the rotation in flight began; absent when none is in flight",
        &phase_seconds,
    )?;
    emit(
        encoder,
        "encryption_key_rotation_failed_attempts",
        "Failed attempts of the rotation in flight; absent when none is in flight",
        &failed_attempts,
    )?;
    emit(
        encoder,
        "encryption_key_rotation_values",
        "The re-encryption Job's progress in the rotation in flight: values in all (total), re-encrypted (done) and failed",
        &progress,
    )?;
    emit(
        encoder,
        "encryption_key_next_rotation_seconds",
        "Seconds until the next scheduled rotation (negative when overdue); absent without spec.rotation.period",
        &next_rotation,
    )
}

/// The process's resident memory and open file descriptors, read from `/proc` at scrape
/// time under the names every exporter gives them; nothing where there is no `/proc`.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(bytes) = resident_memory_bytes() {
            let gauge = Gauge::<i64>::default();
            gauge.set(bytes);
            emit(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                &gauge,
            )?;
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            let gauge = Gauge::<i64>::default();
            gauge.set(i64::try_from(entries.count()).unwrap_or(i64::MAX));
            emit(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors",
                &gauge,
            )?;
        }
        Ok(())
    }
}

/// `VmRSS` of `/proc/self/status`, which the kernel gives in KiB.
fn resident_memory_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: i64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

fn emit(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// The namespace and `Ready` condition of an object, as labels.
fn ready_state(namespace: &str, conditions: &[Condition]) -> ReadyLabels {
    let ready = conditions.iter().find(|c| c.type_ == "Ready");
    let Some(condition) = ready else {
        return ReadyLabels {
            namespace: namespace.to_owned(),
            ready: "Unknown",
            reason: String::new(),
        };
    };
    // Status is readable input like any other: keep the label set small and plain.
    let plain =
        condition.reason.len() <= 64 && condition.reason.chars().all(|c| c.is_ascii_alphanumeric());
    ReadyLabels {
        namespace: namespace.to_owned(),
        ready: match condition.status.as_str() {
            "True" => "True",
            "False" => "False",
            _ => "Unknown",
        },
        reason: if plain {
            condition.reason.clone()
        } else {
            "Other".to_owned()
        },
    }
}
