//! The status an OAuthClient reports: computed without a cluster from the client as last
//! read, what its Secrets hold and the problem keeping it from being ready, if any
//! ([`computed`]), with the Event its turning not ready deserves; and the one async
//! writer around it ([`report`]), which writes status once per reconcile, at the end.
//!
//! Status shows the client id, versions and times, never secret material.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::Api;
use kube::runtime::events::EventType;

use super::reasons::{self, action};
use super::world::{self, IssuedRecord, Observed, Verifier};
use crate::Result;
use crate::controller::context::{Context, Notice};
use crate::controller::kit::{StatusWritten, apply_status, latest, namespaced_api};
use crate::crd::oauth_client::SecretNames;
use crate::crd::{
    ConditionStatus, ConditionType, OAuthClient, OAuthClientStatus, Progress, find_condition,
    set_condition, set_progress,
};
use crate::store::OAUTH_CLIENT_MANAGER;

/// What keeps a client from being ready, and the type of the Event that tells of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub type_: EventType,
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    /// A problem that needs someone's attention: a Warning Event.
    pub fn warning(reason: &'static str, message: String) -> Self {
        Self {
            type_: EventType::Warning,
            reason,
            message,
        }
    }

    /// A problem that time or the cluster resolves: a Normal Event.
    pub fn normal(reason: &'static str, message: String) -> Self {
        Self {
            type_: EventType::Normal,
            reason,
            message,
        }
    }
}

/// What a status report left of the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// Its status already said so: nothing was written.
    Unchanged,
    /// Its status was written; the client is now at this resourceVersion.
    At(String),
    /// The spec had changed since the decision: the client had to be read again, or the
    /// status write's response carried a newer one.
    FromNewerSpec,
}

impl Written {
    /// What writing status left of a client decided from at `decided` (its generation),
    /// whose status was computed from `computed_from` (its generation) and written as
    /// `written` says (`None`: nothing was written).
    fn after(
        decided: Option<i64>,
        computed_from: Option<i64>,
        written: Option<StatusWritten>,
    ) -> Self {
        let newer_spec = computed_from != decided
            || written
                .as_ref()
                .is_some_and(|written| written.generation != decided);
        if newer_spec {
            return Self::FromNewerSpec;
        }
        match written.and_then(|written| written.resource_version) {
            Some(version) => Self::At(version),
            None => Self::Unchanged,
        }
    }
}

/// Writes status from what the cluster holds; `problem` keeps the client from being
/// ready, and is published as an Event of its type when the client turns not ready for
/// that reason.
pub async fn report(
    context: &Context,
    decided_from: &OAuthClient,
    observed: &Observed,
    names: &SecretNames,
    problem: Option<Problem>,
    now: Timestamp,
) -> Result<Written> {
    let api: Api<OAuthClient> = namespaced_api(&context.client, decided_from)?;
    let fresh = latest(context, &api, decided_from, decided_from.status.as_ref()).await?;
    let client = fresh.as_ref().unwrap_or(decided_from);
    let (status, notice) = computed(client, observed, names, problem, now);
    let written = apply_status(
        context,
        &api,
        OAUTH_CLIENT_MANAGER,
        client,
        client.status.as_ref(),
        &status,
    )
    .await?;
    if let Some(notice) = notice {
        context.publish(client, notice).await;
    }
    Ok(Written::after(
        decided_from.meta().generation,
        client.meta().generation,
        written,
    ))
}

/// The status of `client` given what the cluster holds and the `problem` keeping it from
/// being ready, and the Event to publish: `problem`'s, unless the client already reports
/// not ready for that very reason.
pub fn computed(
    client: &OAuthClient,
    observed: &Observed,
    names: &SecretNames,
    problem: Option<Problem>,
    now: Timestamp,
) -> (OAuthClientStatus, Option<Notice>) {
    let previous = client.status.as_ref();
    let status = status(client, observed, names, problem.as_ref(), now);
    let notice = problem
        .filter(|problem| !not_ready_for(previous, problem.reason))
        .map(|problem| Notice {
            type_: problem.type_,
            reason: problem.reason,
            action: action::RECONCILE,
            note: problem.message,
        });
    (status, notice)
}

/// Whether `status` already reports Ready=False for `reason`.
fn not_ready_for(status: Option<&OAuthClientStatus>, reason: &str) -> bool {
    status
        .and_then(|status| find_condition(&status.conditions, ConditionType::Ready))
        .is_some_and(|ready| {
            ready.status == ConditionStatus::False.as_str() && ready.reason == reason
        })
}

/// The status of `client` given what the cluster holds.
fn status(
    client: &OAuthClient,
    observed: &Observed,
    names: &SecretNames,
    problem: Option<&Problem>,
    now: Timestamp,
) -> OAuthClientStatus {
    let generation = client.meta().generation;
    let mut status = client.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    status.verifier_secret_name = Some(names.verifier.clone());
    status.delivery_secret_name =
        (client.spec.import_from.is_none()).then(|| names.delivery.clone());
    let issued = match &observed.verifier {
        Verifier::Present(issued) => Some(issued.as_ref()),
        _ => None,
    };
    if let Some(issued) = issued {
        show_record(&mut status, client, issued, observed, problem.is_none());
    }
    let conditions = &mut status.conditions;
    let set = |conditions: &mut Vec<_>, type_, status, reason: &str, message: String| {
        set_condition(conditions, type_, status, reason, message, generation, now);
    };
    // SecretIssued says whether a secret exists; Ready whether it can be used now.
    if let Some(issued) = issued {
        let (reason, message) = issued_because(client, names, issued);
        set(
            conditions,
            ConditionType::SecretIssued,
            ConditionStatus::True,
            reason,
            message,
        );
        if problem.is_none() {
            let message = format!("verifier record in Secret {:?} is current", names.verifier);
            set(
                conditions,
                ConditionType::Ready,
                ConditionStatus::True,
                reason,
                message,
            );
        }
    }
    if let Some(problem) = problem {
        let (reason, message) = (problem.reason, &problem.message);
        set(
            conditions,
            ConditionType::Ready,
            ConditionStatus::False,
            reason,
            message.clone(),
        );
        if issued.is_none() {
            set(
                conditions,
                ConditionType::SecretIssued,
                ConditionStatus::False,
                reason,
                message.clone(),
            );
        }
    }
    set_legacy_algorithm(conditions, issued, generation, now);
    set_progress(
        conditions,
        progress(problem, issued.is_some()),
        generation,
        now,
    );
    status
}

/// Where the client stands for kstatus: stalled on a problem only a person ends,
/// reconciling on one that passes by itself or while its first secret is not `issued`
/// yet, settled otherwise.
fn progress(problem: Option<&Problem>, issued: bool) -> Progress {
    match problem {
        Some(problem) if reasons::stalls(problem.reason) => Progress::Stalled {
            reason: problem.reason.to_owned(),
            message: problem.message.clone(),
        },
        Some(problem) => Progress::Reconciling {
            reason: problem.reason.to_owned(),
            message: problem.message.clone(),
        },
        None if !issued => Progress::Reconciling {
            reason: reasons::ISSUING.to_owned(),
            message: "issuing the client's first secret".to_owned(),
        },
        None => Progress::Settled,
    }
}

/// Shows in `status` what the verifier record says: the client id, the versions and
/// generation it answers, the algorithm and the times of its bookkeeping. `usable`: no
/// problem keeps the client from being ready, so an import source may go.
fn show_record(
    status: &mut OAuthClientStatus,
    client: &OAuthClient,
    issued: &IssuedRecord,
    observed: &Observed,
    usable: bool,
) {
    let record = &issued.record;
    status.client_id = Some(record.client_id.clone());
    status.secret_version = Some(record.secret_version);
    let spec_generation = client
        .spec
        .rotation
        .as_ref()
        .map_or(0, |rotation| rotation.generation);
    status.rotation_generation = world::known_generation(spec_generation, issued, observed);
    status.hash_algorithm = record
        .current
        .algorithm()
        .map(|algorithm| algorithm.as_str().to_owned());
    // Times come from the Secret: one the API server cannot store (before year 1)
    // would make every status write fail, so only plausible ones are shown.
    let shown = |at: Timestamp| (at >= Timestamp::UNIX_EPOCH).then_some(Time(at));
    status.issued_at = shown(issued.issued_at);
    status.previous_secret_expires_at = record
        .previous
        .as_ref()
        .and_then(|previous| shown(previous.expires_at));
    status.delivery_secret_deleted_at = issued.delivery_deleted_at.and_then(shown);
    status.import_source_removable = client.spec.import_from.as_ref().map(|_| usable);
}

/// The reason and message of `SecretIssued` for the secret `issued` holds: imported, or
/// issued into the delivery Secret.
fn issued_because(
    client: &OAuthClient,
    names: &SecretNames,
    issued: &IssuedRecord,
) -> (&'static str, String) {
    let version = issued.record.secret_version;
    match &client.spec.import_from {
        Some(import) => (
            reasons::IMPORTED,
            format!(
                "secret version {version} imported from Secret {:?}, which may now be deleted",
                import.secret_name
            ),
        ),
        None => (
            reasons::ISSUED,
            format!(
                "secret version {version} issued; the client application reads it from Secret {:?}",
                names.delivery
            ),
        ),
    }
}

/// `LegacyAlgorithm` is True while the record is hashed with a legacy algorithm; it is
/// turned False once it no longer is, and never shown for a client that never was.
fn set_legacy_algorithm(
    conditions: &mut Vec<Condition>,
    issued: Option<&IssuedRecord>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let legacy = issued
        .and_then(|issued| issued.record.current.algorithm())
        .filter(|algorithm| algorithm.is_legacy());
    match legacy {
        Some(algorithm) => set_condition(
            conditions,
            ConditionType::LegacyAlgorithm,
            ConditionStatus::True,
            reasons::LEGACY_ALGORITHM_IN_USE,
            format!(
                "the verifier record is hashed with {}; move to SHA-256 or stronger",
                algorithm.as_str()
            ),
            generation,
            now,
        ),
        None if conditions
            .iter()
            .any(|c| c.type_ == ConditionType::LegacyAlgorithm.as_str()) =>
        {
            set_condition(
                conditions,
                ConditionType::LegacyAlgorithm,
                ConditionStatus::False,
                reasons::MODERN_ALGORITHM,
                "the verifier record uses a current algorithm",
                generation,
                now,
            )
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::oauth_client::world::fixtures::{at, issued, observed, spec};
    use crate::crypto::{Credential, HashAlgorithm};

    /// Client `portal` at generation 3 with `status`.
    fn client(json: serde_json::Value, status: Option<OAuthClientStatus>) -> OAuthClient {
        let mut client = OAuthClient::new("portal", spec(json));
        client.metadata.namespace = Some("apps".to_owned());
        client.metadata.generation = Some(3);
        client.status = status;
        client
    }

    fn names(client: &OAuthClient) -> SecretNames {
        SecretNames::of("portal", &client.spec)
    }

    fn present(record: IssuedRecord) -> Observed {
        observed(Verifier::Present(Box::new(record)))
    }

    /// `type_`'s status, reason and message, and when it last turned.
    fn condition(
        status: &OAuthClientStatus,
        type_: ConditionType,
    ) -> Option<(&str, &str, &str, Timestamp)> {
        find_condition(&status.conditions, type_).map(|condition| {
            (
                condition.status.as_str(),
                condition.reason.as_str(),
                condition.message.as_str(),
                condition.last_transition_time.0,
            )
        })
    }

    #[test]
    fn an_issued_client_is_ready_and_shows_its_record_without_an_event() {
        let client = client(serde_json::json!({}), None);
        let observed = present(issued(2, 0, 100));
        let (status, notice) = computed(&client, &observed, &names(&client), None, at(200));
        assert_eq!(notice, None);
        assert_eq!(
            condition(&status, ConditionType::Ready),
            Some((
                "True",
                "Issued",
                "verifier record in Secret \"portal-verifier\" is current",
                at(200)
            ))
        );
        assert_eq!(
            condition(&status, ConditionType::SecretIssued),
            Some((
                "True",
                "Issued",
                "secret version 2 issued; the client application reads it from Secret \"portal-credentials\"",
                at(200)
            ))
        );
        assert_eq!(condition(&status, ConditionType::LegacyAlgorithm), None);
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.client_id.as_deref(), Some("portal-client"));
        assert_eq!(status.secret_version, Some(2));
        assert_eq!(status.rotation_generation, Some(0));
        assert_eq!(status.hash_algorithm.as_deref(), Some("SHA-256"));
        assert_eq!(status.issued_at, Some(Time(at(100))));
        assert_eq!(
            status.verifier_secret_name.as_deref(),
            Some("portal-verifier")
        );
        assert_eq!(
            status.delivery_secret_name.as_deref(),
            Some("portal-credentials")
        );
        assert_eq!(status.import_source_removable, None);
    }

    #[test]
    fn recomputing_an_unchanged_status_keeps_its_transition_times() {
        let first = client(serde_json::json!({}), None);
        let observed = present(issued(2, 0, 100));
        let (status, _) = computed(&first, &observed, &names(&first), None, at(200));
        let again = client(serde_json::json!({}), Some(status.clone()));
        let (recomputed, notice) = computed(&again, &observed, &names(&again), None, at(900));
        assert_eq!(recomputed, status);
        assert_eq!(notice, None);
    }

    #[test]
    fn a_problem_turns_ready_false_and_is_told_once_per_reason() {
        let ready = client(serde_json::json!({}), None);
        let observed = present(issued(2, 0, 100));
        let (status, _) = computed(&ready, &observed, &names(&ready), None, at(200));
        let undistributed = || Problem::normal("KeyNotDistributed", "not on every pod".into());

        let ready = client(serde_json::json!({}), Some(status));
        let (status, notice) = computed(
            &ready,
            &observed,
            &names(&ready),
            Some(undistributed()),
            at(300),
        );
        assert_eq!(
            condition(&status, ConditionType::Ready),
            Some(("False", "KeyNotDistributed", "not on every pod", at(300)))
        );
        // A secret exists all the same.
        assert_eq!(
            condition(&status, ConditionType::SecretIssued)
                .map(|(status, reason, ..)| (status, reason)),
            Some(("True", "Issued"))
        );
        assert_eq!(
            notice,
            Some(Notice::normal(
                "KeyNotDistributed",
                "Reconcile",
                "not on every pod"
            ))
        );

        // Still not ready for that reason: nothing to tell, nothing turns.
        let unready = client(serde_json::json!({}), Some(status));
        let (again, notice) = computed(
            &unready,
            &observed,
            &names(&unready),
            Some(undistributed()),
            at(400),
        );
        assert_eq!(notice, None);
        assert_eq!(Some(&again), unready.status.as_ref());

        // Another reason is told, as a warning when it is one.
        let refused = Problem::warning("AnnotationInvalid", "annotation lies".into());
        let (status, notice) = computed(
            &unready,
            &observed,
            &names(&unready),
            Some(refused),
            at(500),
        );
        assert_eq!(
            notice,
            Some(Notice::warning(
                "AnnotationInvalid",
                "Reconcile",
                "annotation lies"
            ))
        );
        // Ready was already False: its transition time stays.
        assert_eq!(
            condition(&status, ConditionType::Ready),
            Some(("False", "AnnotationInvalid", "annotation lies", at(300)))
        );
    }

    #[test]
    fn without_a_record_a_problem_says_no_secret_was_issued() {
        let client = client(serde_json::json!({"secretType": "Plaintext"}), None);
        let problem = Problem::warning("PlaintextNotAllowed", "not allowed".into());
        let (status, notice) = computed(
            &client,
            &observed(Verifier::Absent),
            &names(&client),
            Some(problem),
            at(10),
        );
        for type_ in [ConditionType::Ready, ConditionType::SecretIssued] {
            assert_eq!(
                condition(&status, type_),
                Some(("False", "PlaintextNotAllowed", "not allowed", at(10)))
            );
        }
        assert_eq!(status.client_id, None);
        assert_eq!(status.secret_version, None);
        assert_eq!(
            notice.map(|notice| (notice.type_, notice.reason)),
            Some((EventType::Warning, "PlaintextNotAllowed"))
        );
    }

    #[test]
    fn an_imported_client_names_its_source_and_when_it_may_go() {
        let client = client(
            serde_json::json!({"importFrom": {"secretName": "source"}}),
            None,
        );
        let observed = present(issued(1, 0, 100));
        let (status, _) = computed(&client, &observed, &names(&client), None, at(200));
        assert_eq!(
            condition(&status, ConditionType::SecretIssued),
            Some((
                "True",
                "Imported",
                "secret version 1 imported from Secret \"source\", which may now be deleted",
                at(200)
            ))
        );
        assert_eq!(
            condition(&status, ConditionType::Ready).map(|(status, reason, ..)| (status, reason)),
            Some(("True", "Imported"))
        );
        assert_eq!(status.delivery_secret_name, None);
        assert_eq!(status.import_source_removable, Some(true));
        let waiting = Problem::normal("KeyNotDistributed", "not yet".into());
        let (status, _) = computed(&client, &observed, &names(&client), Some(waiting), at(200));
        assert_eq!(status.import_source_removable, Some(false));
    }

    #[test]
    fn a_legacy_algorithm_is_flagged_and_cleared_once_it_is_gone() {
        let legacy = client(serde_json::json!({"hashAlgorithm": "SHA-1"}), None);
        let mut record = issued(1, 0, 100);
        record.record.current = Credential::hashed(HashAlgorithm::Sha1, b"secret");
        let (status, _) = computed(&legacy, &present(record), &names(&legacy), None, at(200));
        assert_eq!(
            condition(&status, ConditionType::LegacyAlgorithm),
            Some((
                "True",
                "LegacyAlgorithmInUse",
                "the verifier record is hashed with SHA-1; move to SHA-256 or stronger",
                at(200)
            ))
        );
        let moved_on = client(serde_json::json!({}), Some(status));
        let observed = present(issued(2, 0, 300));
        let (status, _) = computed(&moved_on, &observed, &names(&moved_on), None, at(300));
        assert_eq!(
            condition(&status, ConditionType::LegacyAlgorithm),
            Some((
                "False",
                "ModernAlgorithm",
                "the verifier record uses a current algorithm",
                at(300)
            ))
        );
    }

    #[test]
    fn times_the_api_server_cannot_store_are_not_shown() {
        let client = client(serde_json::json!({}), None);
        let mut record = issued(1, 0, -1);
        record.delivery_deleted_at = Some(at(-62_000_000_000));
        let (status, _) = computed(&client, &present(record), &names(&client), None, at(10));
        assert_eq!(status.issued_at, None);
        assert_eq!(status.delivery_secret_deleted_at, None);
    }

    #[test]
    fn a_status_write_over_a_newer_spec_is_not_remembered() {
        let wrote = |version: &str, generation| {
            Some(StatusWritten {
                resource_version: Some(version.to_owned()),
                generation: Some(generation),
            })
        };
        assert_eq!(Written::after(Some(3), Some(3), None), Written::Unchanged);
        assert_eq!(
            Written::after(Some(3), Some(3), wrote("9", 3)),
            Written::At("9".to_owned())
        );
        assert_eq!(
            Written::after(Some(3), Some(4), None),
            Written::FromNewerSpec
        );
        assert_eq!(
            Written::after(Some(3), Some(3), wrote("9", 4)),
            Written::FromNewerSpec
        );
    }

    /// Which of `Reconciling` and `Stalled` holds, with its reason.
    fn standing(status: &OAuthClientStatus) -> Option<(&str, &str)> {
        let reconciling = condition(status, ConditionType::Reconciling);
        let stalled = condition(status, ConditionType::Stalled);
        assert!(reconciling.is_none() || stalled.is_none(), "{status:?}");
        reconciling
            .map(|(state, reason, ..)| (state, "Reconciling", reason))
            .or(stalled.map(|(state, reason, ..)| (state, "Stalled", reason)))
            .map(|(state, type_, reason)| {
                assert_eq!(state, "True");
                (type_, reason)
            })
    }

    #[test]
    fn a_refused_spec_stalls_a_wait_reconciles_and_a_ready_client_is_neither() {
        let legacy = client(serde_json::json!({"hashAlgorithm": "SHA-1"}), None);
        let refused = Problem::warning("LegacyAlgorithmNotAllowed", "SHA-1 is not allowed".into());
        let (status, _) = computed(
            &legacy,
            &observed(Verifier::Absent),
            &names(&legacy),
            Some(refused),
            at(10),
        );
        assert_eq!(
            standing(&status),
            Some(("Stalled", "LegacyAlgorithmNotAllowed"))
        );
        assert_eq!(
            condition(&status, ConditionType::Stalled).map(|(.., message, _)| message),
            Some("SHA-1 is not allowed")
        );
        let imported = client_with_import();
        let missing = Problem::normal("ImportSourceMissing", "waiting".into());
        let (status, _) = computed(
            &imported,
            &observed(Verifier::Absent),
            &names(&imported),
            Some(missing),
            at(20),
        );
        assert_eq!(
            standing(&status),
            Some(("Reconciling", "ImportSourceMissing"))
        );
        // Once issued: neither, and the Reconciling of before is gone.
        let later = client(serde_json::json!({}), Some(status));
        let (status, _) = computed(
            &later,
            &present(issued(1, 0, 100)),
            &names(&later),
            None,
            at(30),
        );
        assert_eq!(standing(&status), None);
        // Nothing refused and nothing issued yet: on its way.
        let (status, _) = computed(
            &later,
            &observed(Verifier::Absent),
            &names(&later),
            None,
            at(40),
        );
        assert_eq!(standing(&status), Some(("Reconciling", "Issuing")));
    }

    #[test]
    fn every_refusal_stalls_and_every_wait_for_what_may_still_come_does_not() {
        for reason in [
            "SecretConflict",
            "SecretNameConflict",
            "ImportKeysConflict",
            "LegacyAlgorithmNotAllowed",
            "SecretLengthInvalid",
            "PlaintextNotAllowed",
            "AnnotationInvalid",
            "VerifierRecordInvalid",
            "RecordUndecryptable",
            "ImportSourceKeyMissing",
            "ImportClientIdInvalid",
        ] {
            assert!(reasons::stalls(reason), "{reason}");
        }
        for reason in [
            "EncryptionKeyNotReady",
            "ImportSourceMissing",
            "KeyNotDistributed",
        ] {
            assert!(!reasons::stalls(reason), "{reason}");
        }
    }

    fn client_with_import() -> OAuthClient {
        client(
            serde_json::json!({"importFrom": {"secretName": "source"}}),
            None,
        )
    }
}
