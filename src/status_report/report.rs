//! The summary `keyward status` shows, built purely from an object the operator wrote
//! (its spec, its status) and the Events about it, at a given instant. Its serde form is
//! the documented `-o json` shape (`reportVersion` 1): fields are only ever added to it.
//!
//! Nothing here may carry secret material: the resources' status never holds any, and a
//! report copies only named, non-secret fields (versions, fingerprints, client id,
//! Secret names, counts, conditions).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use serde::Serialize;

use crate::crd::encryption_key::{
    DistributionStatus, EncryptionKey, RotationPhase, RotationStatus,
};
use crate::crd::oauth_client::{OAuthClient, SecretNames};

/// The version of the JSON shape; bumped only if a field changes meaning or goes away.
pub const REPORT_VERSION: u32 = 1;

/// How many of the newest Events a report keeps.
pub const EVENTS_SHOWN: usize = 10;

/// The summary of one resource.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Report {
    EncryptionKey(Box<KeyReport>),
    OAuthClient(Box<ClientReport>),
}

/// What every report starts with: which object, and whether it is ready.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub report_version: u32,
    /// `EncryptionKey` or `OAuthClient`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// `metadata.generation`, and the generation status describes.
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    /// The `Ready` condition, when status has one.
    pub ready: Option<ConditionReport>,
}

/// One status condition.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionReport {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: Time,
    pub age_seconds: i64,
}

/// One Event about the object.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventReport {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    /// How many times it happened (a series counts each).
    pub count: i32,
    pub last_seen: Option<Time>,
    pub age_seconds: Option<i64>,
}

/// The summary of an EncryptionKey.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyReport {
    #[serde(flatten)]
    pub header: Header,
    /// The version new ciphertext is written under.
    pub primary_version: Option<i64>,
    /// Every version of the keyring, newest first.
    pub versions: Vec<VersionReport>,
    /// How many ready pods of the targets hold the current keyring.
    pub distribution: Option<DistributionReport>,
    /// The current or last rotation.
    pub rotation: Option<RotationReport>,
    /// Ciphertexts found by the last scan of a rotation.
    pub ciphertexts: Option<CiphertextReport>,
    /// The next rotation `spec.rotation.period` schedules.
    pub next_rotation: Option<NextRotation>,
    pub conditions: Vec<ConditionReport>,
    /// The newest Events about the key, oldest first; `null` when they could not be read.
    pub events: Option<Vec<EventReport>>,
}

/// One key version.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionReport {
    pub version: i64,
    /// `Primary`, `DecryptOnly` or `Retired`.
    pub state: String,
    pub created_at: Time,
    pub age_seconds: i64,
    /// The non-secret fingerprint status records.
    pub fingerprint: String,
}

/// Pods holding the keyring.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DistributionReport {
    pub pods_in_sync: i32,
    pub pods_total: i32,
    /// The versions pods hold once in sync.
    pub versions: Vec<i64>,
}

/// A rotation, and what it waits on.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationReport {
    /// `Backfilling`, `Staging`, `Promoting`, `Reencrypting`, `Verifying`, `Retiring` or
    /// `Succeeded`.
    pub phase: RotationPhase,
    pub target_version: i64,
    pub previous_version: i64,
    /// `Requested` or `Scheduled`.
    pub trigger: crate::crd::encryption_key::RotationTrigger,
    /// The attempt under way, from 1 (failed attempts so far plus one).
    pub attempt: i32,
    pub started_at: Time,
    pub phase_started_at: Time,
    pub seconds_in_phase: i64,
    pub finished_at: Option<Time>,
    pub job_name: Option<String>,
    pub progress: Option<ProgressReport>,
    /// Why the last attempt failed, while the next waits.
    pub failure: Option<FailureReport>,
    pub retry_at: Option<Time>,
    /// One sentence: what the rotation waits on now; `null` once it has finished.
    pub waiting_on: Option<String>,
}

/// Re-encryption progress.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressReport {
    pub done: i64,
    pub total: i64,
    pub failed: i64,
    /// Of the failed, those whose Secret kept changing (a retry helps).
    pub contended: i64,
    /// Values that could not be re-encrypted, as namespace/name/field.
    pub failures: Vec<String>,
}

/// The failure of a rotation attempt.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailureReport {
    pub reason: String,
    pub message: String,
}

/// Ciphertexts per version, from the last scan.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CiphertextReport {
    /// Version (as a string, a JSON object's key) to count.
    pub by_version: BTreeMap<String, i64>,
    /// Database values without a key id; only for keys with databases.
    pub without_key_id: Option<i64>,
}

/// When `spec.rotation.period` rotates the key next.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NextRotation {
    pub at: Time,
    /// Negative when overdue.
    pub in_seconds: i64,
}

/// The summary of an OAuthClient.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientReport {
    #[serde(flatten)]
    pub header: Header,
    /// The client id (not secret; the client secret never appears).
    pub client_id: Option<String>,
    /// `Hashed`, `Encrypted` or `Plaintext`.
    pub secret_type: crate::crd::oauth_client::SecretType,
    pub secret_version: Option<i64>,
    pub hash_algorithm: Option<String>,
    pub issued_at: Option<Time>,
    pub issued_seconds_ago: Option<i64>,
    /// The previous secret's grace period, while it lasts or as last recorded.
    pub grace: Option<GraceReport>,
    pub delivery: DeliveryReport,
    pub verifier_secret_name: String,
    /// For an imported secret: where it comes from.
    pub import: Option<ImportReport>,
    pub conditions: Vec<ConditionReport>,
    /// The newest Events about the client, oldest first; `null` when they could not be
    /// read.
    pub events: Option<Vec<EventReport>>,
}

/// Until when the previous secret verifies.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GraceReport {
    pub previous_secret_valid_until: Time,
    /// Negative once over.
    pub seconds_left: i64,
}

/// The delivery Secret.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryReport {
    pub secret_name: String,
    /// `spec.deliverySecret.ttl`, as written.
    pub ttl: Option<String>,
    /// When the operator deleted it after its TTL.
    pub deleted_at: Option<Time>,
}

/// An imported secret's source.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub source_secret_name: String,
    /// Whether the verifier holds the source's current secret, so it may be removed.
    pub source_removable: Option<bool>,
}

/// Whole seconds from `then` to `now` (negative when `then` lies ahead).
pub fn seconds_between(now: Timestamp, then: Timestamp) -> i64 {
    now.duration_since(then).as_secs()
}

fn header(
    kind: &'static str,
    object: &impl ResourceExt,
    conditions: &[Condition],
    now: Timestamp,
    observed: Option<i64>,
) -> Header {
    Header {
        report_version: REPORT_VERSION,
        kind,
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
        generation: object.meta().generation,
        observed_generation: observed,
        ready: conditions
            .iter()
            .find(|condition| condition.type_ == "Ready")
            .map(|condition| condition_report(condition, now)),
    }
}

fn condition_report(condition: &Condition, now: Timestamp) -> ConditionReport {
    ConditionReport {
        type_: condition.type_.clone(),
        status: condition.status.clone(),
        reason: condition.reason.clone(),
        message: condition.message.clone(),
        last_transition_time: condition.last_transition_time.clone(),
        age_seconds: seconds_between(now, condition.last_transition_time.0),
    }
}

/// The newest [`EVENTS_SHOWN`] of `events`, oldest first.
pub fn event_reports(events: &[Event], now: Timestamp) -> Vec<EventReport> {
    let mut reports: Vec<EventReport> = events
        .iter()
        .map(|event| {
            let last_seen = event
                .series
                .as_ref()
                .and_then(|series| series.last_observed_time.as_ref())
                .map(|time| Time(time.0))
                .or_else(|| event.last_timestamp.clone())
                .or_else(|| event.event_time.as_ref().map(|time| Time(time.0)))
                .or_else(|| event.metadata.creation_timestamp.clone());
            EventReport {
                type_: event.type_.clone().unwrap_or_default(),
                reason: event.reason.clone().unwrap_or_default(),
                message: event.message.clone().unwrap_or_default(),
                count: event
                    .series
                    .as_ref()
                    .and_then(|series| series.count)
                    .or(event.count)
                    .unwrap_or(1),
                age_seconds: last_seen.as_ref().map(|time| seconds_between(now, time.0)),
                last_seen,
            }
        })
        .collect();
    reports.sort_by_key(|event| event.last_seen.as_ref().map(|time| time.0));
    let skip = reports.len().saturating_sub(EVENTS_SHOWN);
    reports.drain(..skip);
    reports
}

/// The summary of `key` at `now`.
pub fn key_report(key: &EncryptionKey, events: Option<&[Event]>, now: Timestamp) -> KeyReport {
    let status = key.status.clone().unwrap_or_default();
    let mut versions: Vec<VersionReport> = status
        .versions
        .iter()
        .map(|version| VersionReport {
            version: version.version,
            state: version.state.clone(),
            created_at: version.created_at.clone(),
            age_seconds: seconds_between(now, version.created_at.0),
            fingerprint: version.fingerprint.clone(),
        })
        .collect();
    versions.sort_by_key(|version| std::cmp::Reverse(version.version));
    let rotation = status.rotation.as_ref();
    let ciphertexts = rotation
        .filter(|rotation| !rotation.scan.is_empty() || !key.spec.reencryption.databases.is_empty())
        .map(|rotation| CiphertextReport {
            by_version: rotation
                .scan
                .iter()
                .map(|count| (count.version.to_string(), count.ciphertexts))
                .collect(),
            without_key_id: (!key.spec.reencryption.databases.is_empty())
                .then_some(rotation.without_key_id),
        });
    KeyReport {
        header: header(
            "EncryptionKey",
            key,
            &status.conditions,
            now,
            status.observed_generation,
        ),
        primary_version: status.primary_version,
        versions,
        distribution: status
            .distribution
            .as_ref()
            .map(|distribution| DistributionReport {
                pods_in_sync: distribution.pods_in_sync,
                pods_total: distribution.pods_total,
                versions: distribution.versions.clone(),
            }),
        rotation: rotation
            .map(|rotation| rotation_report(rotation, status.distribution.as_ref(), now)),
        ciphertexts,
        next_rotation: next_rotation(key, now),
        conditions: status
            .conditions
            .iter()
            .map(|condition| condition_report(condition, now))
            .collect(),
        events: events.map(|events| event_reports(events, now)),
    }
}

fn rotation_report(
    rotation: &RotationStatus,
    distribution: Option<&DistributionStatus>,
    now: Timestamp,
) -> RotationReport {
    RotationReport {
        phase: rotation.phase,
        target_version: rotation.target_version,
        previous_version: rotation.previous_version,
        trigger: rotation.trigger,
        attempt: rotation.attempts.saturating_add(1),
        started_at: rotation.started_at.clone(),
        phase_started_at: rotation.phase_started_at.clone(),
        seconds_in_phase: seconds_between(
            rotation.finished_at.as_ref().map_or(now, |time| time.0),
            rotation.phase_started_at.0,
        ),
        finished_at: rotation.finished_at.clone(),
        job_name: rotation.job_name.clone(),
        progress: rotation.progress.as_ref().map(|progress| ProgressReport {
            done: progress.done,
            total: progress.total,
            failed: progress.failed,
            contended: progress.contended,
            failures: progress.failures.clone(),
        }),
        failure: rotation.failure.as_ref().map(|failure| FailureReport {
            reason: failure.reason.clone(),
            message: failure.message.clone(),
        }),
        retry_at: rotation.retry_at.clone(),
        waiting_on: waiting_on(rotation, distribution, now),
    }
}

/// What a rotation waits on now, as the object of "waiting on …"; `None` once it has
/// succeeded.
pub fn waiting_on(
    rotation: &RotationStatus,
    distribution: Option<&DistributionStatus>,
    now: Timestamp,
) -> Option<String> {
    let target = rotation.target_version;
    if let (Some(retry_at), Some(failure)) = (&rotation.retry_at, &rotation.failure)
        && retry_at.0 > now
    {
        return Some(format!(
            "the next attempt, in {}: attempt {} failed ({})",
            age(retry_at.0.duration_since(now)),
            rotation.attempts,
            failure.reason
        ));
    }
    let pods = |what: &str| {
        match distribution {
        Some(d) if d.pods_in_sync < d.pods_total => format!(
            "{} of {} pods to {what}",
            d.pods_total - d.pods_in_sync,
            d.pods_total
        ),
        Some(d) if d.pods_total == 0 => {
            "the operator's next look, which ends the phase: no ready pod of the targets to wait for"
                .to_owned()
        }
        Some(d) => format!(
            "the operator's next look, which ends the phase: all {} pods are there",
            d.pods_total
        ),
        None => format!("the pods to {what}"),
    }
    };
    let job = rotation.job_name.as_deref().unwrap_or("(not yet created)");
    Some(match rotation.phase {
        RotationPhase::Backfilling => match rotation.without_key_id {
            0 => format!(
                "Job {job} to give every database value a key id under version {}",
                rotation.previous_version
            ),
            left => format!(
                "Job {job} to give every database value a key id under version {} (the last scan found {left} without one)",
                rotation.previous_version
            ),
        },
        RotationPhase::Staging => pods(&format!("hold version {target} (decrypt-only)")),
        RotationPhase::Promoting => pods(&format!("hold version {target} as primary")),
        RotationPhase::Reencrypting => match &rotation.progress {
            Some(progress) => format!(
                "Job {job} to re-encrypt to version {target}: {}",
                progress_text(progress.done, progress.total, progress.failed)
            ),
            None => {
                format!("Job {job} to re-encrypt to version {target}: no progress reported yet")
            }
        },
        RotationPhase::Verifying => {
            format!("a scan to find no ciphertext under versions older than {target}")
        }
        RotationPhase::Retiring => pods(&format!("drop the versions older than {target}")),
        RotationPhase::Succeeded => return None,
    })
}

/// `done of total done, failed failed` with the share done.
pub fn progress_text(done: i64, total: i64, failed: i64) -> String {
    let share = if total > 0 {
        format!(" ({}%)", i128::from(done) * 100 / i128::from(total))
    } else {
        String::new()
    };
    format!("{done} of {total} done{share}, {failed} failed")
}

/// When `spec.rotation.period` rotates `key` next, and how soon.
fn next_rotation(key: &EncryptionKey, now: Timestamp) -> Option<NextRotation> {
    let at = key.next_scheduled_rotation()?;
    Some(NextRotation {
        at: Time(at),
        in_seconds: seconds_between(at, now),
    })
}

/// The summary of `client` at `now`.
pub fn client_report(
    client: &OAuthClient,
    events: Option<&[Event]>,
    now: Timestamp,
) -> ClientReport {
    let status = client.status.clone().unwrap_or_default();
    let names = SecretNames::of(&client.name_any(), &client.spec);
    let ttl = client
        .spec
        .delivery_secret
        .as_ref()
        .and_then(|delivery| delivery.ttl)
        .map(|ttl| ttl.to_string());
    ClientReport {
        header: header(
            "OAuthClient",
            client,
            &status.conditions,
            now,
            status.observed_generation,
        ),
        client_id: status.client_id.clone(),
        secret_type: client.spec.secret_type,
        secret_version: status.secret_version,
        hash_algorithm: status.hash_algorithm.clone(),
        issued_at: status.issued_at.clone(),
        issued_seconds_ago: status
            .issued_at
            .as_ref()
            .map(|time| seconds_between(now, time.0)),
        grace: status
            .previous_secret_expires_at
            .as_ref()
            .map(|until| GraceReport {
                previous_secret_valid_until: until.clone(),
                seconds_left: seconds_between(until.0, now),
            }),
        delivery: DeliveryReport {
            secret_name: status
                .delivery_secret_name
                .clone()
                .unwrap_or(names.delivery),
            ttl,
            deleted_at: status.delivery_secret_deleted_at.clone(),
        },
        verifier_secret_name: status
            .verifier_secret_name
            .clone()
            .unwrap_or(names.verifier),
        import: client.spec.import_from.as_ref().map(|import| ImportReport {
            source_secret_name: import.secret_name.clone(),
            source_removable: status.import_source_removable,
        }),
        conditions: status
            .conditions
            .iter()
            .map(|condition| condition_report(condition, now))
            .collect(),
        events: events.map(|events| event_reports(events, now)),
    }
}

/// A duration as `kubectl get` writes an age: `45s`, `3m20s`, `2h5m`, `3d4h`, `400d`,
/// `3y` — two units while the second still matters, one after. Negative durations are
/// shown as their size.
pub fn age(duration: SignedDuration) -> String {
    let seconds = duration.as_secs().unsigned_abs();
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        match seconds % 60 {
            0 => format!("{minutes}m"),
            rest => format!("{minutes}m{rest}s"),
        }
    } else if hours < 3 {
        format!("{minutes}m")
    } else if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            rest => format!("{hours}h{rest}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if days < 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            rest => format!("{days}d{rest}h"),
        }
    } else if days < 365 * 2 {
        format!("{days}d")
    } else {
        format!("{}y", days / 365)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    const NOW: &str = "2026-12-05T12:00:00Z";

    /// A key mid-rotation: version 2 staged on one of three pods.
    fn staging_key() -> EncryptionKey {
        serde_json::from_value(json!({
            "apiVersion": "keyward.io/v1alpha1",
            "kind": "EncryptionKey",
            "metadata": {"name": "apim", "namespace": "wso2", "generation": 3},
            "spec": {"rotation": {"generation": 1, "period": "720h"}},
            "status": {
                "observedGeneration": 3,
                "primaryVersion": 1,
                "versions": [
                    {"version": 1, "state": "Primary", "createdAt": "2026-11-05T12:00:00Z", "fingerprint": "fp-one"},
                    {"version": 2, "state": "DecryptOnly", "createdAt": "2026-12-05T11:55:00Z", "fingerprint": "fp-two"},
                ],
                "distribution": {"podsInSync": 1, "podsTotal": 3, "versions": [1, 2]},
                "rotation": {
                    "phase": "Staging", "targetVersion": 2, "previousVersion": 1,
                    "trigger": "Requested", "generation": 1,
                    "startedAt": "2026-12-05T11:55:00Z", "phaseStartedAt": "2026-12-05T11:56:40Z",
                    "scan": [{"version": 1, "ciphertexts": 1000}],
                },
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "Distributing", "message": "rolling out",
                     "lastTransitionTime": "2026-12-05T11:55:00Z"},
                    {"type": "Stalled", "status": "False", "reason": "AsExpected", "message": "",
                     "lastTransitionTime": "2026-12-05T10:00:00Z"},
                ],
            },
        }))
        .expect("an EncryptionKey")
    }

    fn rotation_of(key: &EncryptionKey) -> RotationStatus {
        key.status
            .as_ref()
            .and_then(|s| s.rotation.clone())
            .expect("rotation")
    }

    #[test]
    fn ages_read_as_kubectl_writes_them() {
        let cases = [
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (599, "9m59s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (2 * 86_400, "2d"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (30 * 86_400, "30d"),
            (800 * 86_400, "2y"),
            (-200, "3m20s"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(
                age(SignedDuration::from_secs(seconds)),
                expected,
                "{seconds}s"
            );
        }
    }

    #[test]
    fn progress_reads_as_done_of_total_with_the_share() {
        assert_eq!(
            progress_text(250, 1000, 2),
            "250 of 1000 done (25%), 2 failed"
        );
        assert_eq!(progress_text(0, 0, 0), "0 of 0 done, 0 failed");
        assert_eq!(
            progress_text(i64::MAX, i64::MAX, 0),
            format!("{} of {} done (100%), 0 failed", i64::MAX, i64::MAX)
        );
    }

    #[test]
    fn a_rotation_waiting_on_pods_says_how_many_and_for_which_version() {
        let key = staging_key();
        let mut rotation = rotation_of(&key);
        let mut distribution = key.status.as_ref().and_then(|s| s.distribution.clone());
        let now = at(NOW);
        assert_eq!(
            waiting_on(&rotation, distribution.as_ref(), now).as_deref(),
            Some("2 of 3 pods to hold version 2 (decrypt-only)")
        );
        rotation.phase = RotationPhase::Promoting;
        assert_eq!(
            waiting_on(&rotation, distribution.as_ref(), now).as_deref(),
            Some("2 of 3 pods to hold version 2 as primary")
        );
        rotation.phase = RotationPhase::Retiring;
        assert_eq!(
            waiting_on(&rotation, distribution.as_ref(), now).as_deref(),
            Some("2 of 3 pods to drop the versions older than 2")
        );
        if let Some(distribution) = distribution.as_mut() {
            distribution.pods_in_sync = 3;
        }
        assert_eq!(
            waiting_on(&rotation, distribution.as_ref(), now).as_deref(),
            Some("the operator's next look, which ends the phase: all 3 pods are there")
        );
        assert_eq!(
            waiting_on(&rotation, None, now).as_deref(),
            Some("the pods to drop the versions older than 2")
        );
        rotation.phase = RotationPhase::Succeeded;
        assert_eq!(waiting_on(&rotation, distribution.as_ref(), now), None);
    }

    #[test]
    fn a_rotation_waiting_on_its_job_or_a_retry_says_so() {
        let key = staging_key();
        let mut rotation = rotation_of(&key);
        let now = at(NOW);
        rotation.phase = RotationPhase::Reencrypting;
        rotation.job_name = Some("apim-reencrypt-v2-1".into());
        assert_eq!(
            waiting_on(&rotation, None, now).as_deref(),
            Some("Job apim-reencrypt-v2-1 to re-encrypt to version 2: no progress reported yet")
        );
        rotation.progress = Some(crate::crd::encryption_key::ReencryptionProgress {
            total: 1000,
            done: 400,
            failed: 1,
            ..Default::default()
        });
        assert_eq!(
            waiting_on(&rotation, None, now).as_deref(),
            Some(
                "Job apim-reencrypt-v2-1 to re-encrypt to version 2: 400 of 1000 done (40%), 1 failed"
            )
        );
        rotation.attempts = 1;
        rotation.failure = Some(crate::crd::encryption_key::RotationFailure {
            reason: "ReencryptionFailed".into(),
            message: "the Job failed".into(),
        });
        rotation.retry_at = Some(Time(at("2026-12-05T12:00:30Z")));
        assert_eq!(
            waiting_on(&rotation, None, now).as_deref(),
            Some("the next attempt, in 30s: attempt 1 failed (ReencryptionFailed)")
        );
        // Once the retry time has passed, the step itself is what waits.
        assert!(
            waiting_on(&rotation, None, at("2026-12-05T12:01:00Z"))
                .is_some_and(|text| text.starts_with("Job apim-reencrypt-v2-1"))
        );
        rotation.phase = RotationPhase::Backfilling;
        rotation.retry_at = None;
        rotation.without_key_id = 7;
        assert_eq!(
            waiting_on(&rotation, None, now).as_deref(),
            Some(
                "Job apim-reencrypt-v2-1 to give every database value a key id under version 1 (the last scan found 7 without one)"
            )
        );
    }

    #[test]
    fn a_key_report_has_the_documented_json_shape() {
        let report = key_report(&staging_key(), Some(&[]), at(NOW));
        let value = serde_json::to_value(Report::EncryptionKey(Box::new(report))).expect("JSON");
        assert_eq!(
            value,
            json!({
                "reportVersion": 1,
                "kind": "EncryptionKey",
                "namespace": "wso2",
                "name": "apim",
                "generation": 3,
                "observedGeneration": 3,
                "ready": {
                    "type": "Ready", "status": "False", "reason": "Distributing", "message": "rolling out",
                    "lastTransitionTime": "2026-12-05T11:55:00Z", "ageSeconds": 300,
                },
                "primaryVersion": 1,
                "versions": [
                    {"version": 2, "state": "DecryptOnly", "createdAt": "2026-12-05T11:55:00Z", "ageSeconds": 300, "fingerprint": "fp-two"},
                    {"version": 1, "state": "Primary", "createdAt": "2026-11-05T12:00:00Z", "ageSeconds": 30 * 86_400, "fingerprint": "fp-one"},
                ],
                "distribution": {"podsInSync": 1, "podsTotal": 3, "versions": [1, 2]},
                "rotation": {
                    "phase": "Staging", "targetVersion": 2, "previousVersion": 1, "trigger": "Requested",
                    "attempt": 1, "startedAt": "2026-12-05T11:55:00Z", "phaseStartedAt": "2026-12-05T11:56:40Z",
                    "secondsInPhase": 200, "finishedAt": null, "jobName": null, "progress": null,
                    "failure": null, "retryAt": null,
                    "waitingOn": "2 of 3 pods to hold version 2 (decrypt-only)",
                },
                "ciphertexts": {"byVersion": {"1": 1000}, "withoutKeyId": null},
                "nextRotation": {"at": "2026-12-05T12:00:00Z", "inSeconds": 0},
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "Distributing", "message": "rolling out",
                     "lastTransitionTime": "2026-12-05T11:55:00Z", "ageSeconds": 300},
                    {"type": "Stalled", "status": "False", "reason": "AsExpected", "message": "",
                     "lastTransitionTime": "2026-12-05T10:00:00Z", "ageSeconds": 7200},
                ],
                "events": [],
            })
        );
    }

    #[test]
    fn a_key_without_status_reports_nothing_it_does_not_know() {
        let mut key = staging_key();
        key.status = None;
        key.spec.rotation.period = None;
        let report = key_report(&key, None, at(NOW));
        assert_eq!(report.header.ready, None);
        assert!(report.versions.is_empty());
        assert_eq!(report.rotation, None);
        assert_eq!(report.ciphertexts, None);
        assert_eq!(report.next_rotation, None);
        assert_eq!(report.events, None);
    }

    #[test]
    fn a_client_in_its_grace_period_reports_when_it_ends_and_never_more_than_status_holds() {
        let client: OAuthClient = serde_json::from_value(json!({
            "apiVersion": "keyward.io/v1alpha1",
            "kind": "OAuthClient",
            "metadata": {"name": "portal", "namespace": "wso2", "generation": 2},
            "spec": {"rotation": {"generation": 1, "gracePeriod": "1h"}, "deliverySecret": {"ttl": "10m"}},
            "status": {
                "observedGeneration": 2,
                "clientId": "portal-id-0123456789",
                "secretVersion": 2,
                "hashAlgorithm": "SHA-256",
                "issuedAt": "2026-12-05T11:30:00Z",
                "previousSecretExpiresAt": "2026-12-05T12:30:00Z",
                "verifierSecretName": "portal-verifier",
                "deliverySecretName": "portal-credentials",
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Issued", "message": "secret version 2 issued",
                     "lastTransitionTime": "2026-12-05T11:30:00Z"},
                ],
            },
        }))
        .expect("an OAuthClient");
        let report = client_report(&client, None, at(NOW));
        let value = serde_json::to_value(Report::OAuthClient(Box::new(report))).expect("JSON");
        assert_eq!(
            value,
            json!({
                "reportVersion": 1,
                "kind": "OAuthClient",
                "namespace": "wso2",
                "name": "portal",
                "generation": 2,
                "observedGeneration": 2,
                "ready": {
                    "type": "Ready", "status": "True", "reason": "Issued", "message": "secret version 2 issued",
                    "lastTransitionTime": "2026-12-05T11:30:00Z", "ageSeconds": 1800,
                },
                "clientId": "portal-id-0123456789",
                "secretType": "Hashed",
                "secretVersion": 2,
                "hashAlgorithm": "SHA-256",
                "issuedAt": "2026-12-05T11:30:00Z",
                "issuedSecondsAgo": 1800,
                "grace": {"previousSecretValidUntil": "2026-12-05T12:30:00Z", "secondsLeft": 1800},
                "delivery": {"secretName": "portal-credentials", "ttl": "600s", "deletedAt": null},
                "verifierSecretName": "portal-verifier",
                "import": null,
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Issued", "message": "secret version 2 issued",
                     "lastTransitionTime": "2026-12-05T11:30:00Z", "ageSeconds": 1800},
                ],
                "events": null,
            })
        );
    }

    #[test]
    fn only_the_newest_events_are_kept_oldest_first() {
        let events: Vec<Event> = (0..15)
            .rev()
            .map(|minute| {
                serde_json::from_value(json!({
                    "metadata": {"name": format!("e{minute}")},
                    "involvedObject": {},
                    "type": "Normal",
                    "reason": format!("R{minute}"),
                    "message": "m",
                    "lastTimestamp": format!("2026-12-05T11:{minute:02}:00Z"),
                    "count": 2,
                }))
                .expect("an Event")
            })
            .collect();
        let reports = event_reports(&events, at(NOW));
        let reasons: Vec<&str> = reports.iter().map(|event| event.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "R5", "R6", "R7", "R8", "R9", "R10", "R11", "R12", "R13", "R14"
            ]
        );
        assert_eq!(reports[9].age_seconds, Some(46 * 60));
        assert_eq!(reports[9].count, 2);
    }
}
