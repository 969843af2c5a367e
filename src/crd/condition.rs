//! Status conditions in the shape Kubernetes tooling reads (`kubectl wait`, kstatus,
//! Argo CD health): one entry per type, whose `lastTransitionTime` moves only when the
//! status flips, so that re-reconciling an unchanged object writes an identical status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The condition types keyward reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// The resource is fully reconciled and usable.
    Ready,
    /// An OAuthClient's current secret has been issued.
    SecretIssued,
    /// An OAuthClient uses a legacy hash algorithm (SHA-1 or MD5).
    LegacyAlgorithm,
    /// Every ready pod of an EncryptionKey's targets holds its current keyring.
    Distributed,
    /// An EncryptionKey rotation is in progress.
    Rotating,
    /// Something went wrong that needs attention; the reason says what.
    Degraded,
    /// keyward is still working towards what the spec asks, and will get there by
    /// itself (kstatus: `InProgress`); present only while true.
    Reconciling,
    /// keyward cannot go on until a person changes something (kstatus: `Failed`);
    /// present only while true.
    Stalled,
}

impl ConditionType {
    /// The condition's `type` as it appears in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::SecretIssued => "SecretIssued",
            Self::LegacyAlgorithm => "LegacyAlgorithm",
            Self::Distributed => "Distributed",
            Self::Rotating => "Rotating",
            Self::Degraded => "Degraded",
            Self::Reconciling => "Reconciling",
            Self::Stalled => "Stalled",
        }
    }
}

/// The `status` of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    /// The status as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// Sets a condition in `conditions`, replacing the one of the same type.
///
/// `lastTransitionTime` is kept from the existing condition unless `status` changes, so
/// that an unchanged outcome produces a byte-identical status.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    let existing = conditions.iter().position(|c| c.type_ == type_.as_str());
    let last_transition_time = match existing.map(|i| &conditions[i]) {
        Some(old) if old.status == status.as_str() => old.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: type_.as_str().to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time,
    };
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// Where a resource stands for tools that follow the kstatus conventions (Flux, kpt,
/// cli-utils): still on its way, stuck until a person acts, or neither.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing is under way and nothing is stuck.
    Settled,
    /// Work that finishes by itself is under way.
    Reconciling { reason: String, message: String },
    /// Only a change by a person can help.
    Stalled { reason: String, message: String },
}

/// Sets `Reconciling` or `Stalled` as `progress` says and drops the other, so that
/// the two are never true at once (kstatus reads whichever comes first); `Settled`
/// drops both, as the conventions want abnormal conditions absent when all is well.
pub fn set_progress(
    conditions: &mut Vec<Condition>,
    progress: Progress,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    let (holds, reason, message) = match progress {
        Progress::Settled => {
            conditions.retain(|c| {
                c.type_ != ConditionType::Reconciling.as_str()
                    && c.type_ != ConditionType::Stalled.as_str()
            });
            return;
        }
        Progress::Reconciling { reason, message } => (ConditionType::Reconciling, reason, message),
        Progress::Stalled { reason, message } => (ConditionType::Stalled, reason, message),
    };
    let other = match holds {
        ConditionType::Reconciling => ConditionType::Stalled,
        _ => ConditionType::Reconciling,
    };
    conditions.retain(|c| c.type_ != other.as_str());
    set_condition(
        conditions,
        holds,
        ConditionStatus::True,
        &reason,
        message,
        observed_generation,
        now,
    );
}

/// The condition of `type_`, if present.
pub fn find_condition(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// Whether `condition` holds: its status is `True`.
pub fn is_true(condition: &Condition) -> bool {
    condition.status == ConditionStatus::True.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("valid timestamp")
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conditions = Vec::new();
        let ready = ConditionType::Ready;
        set_condition(
            &mut conditions,
            ready,
            ConditionStatus::False,
            "Pending",
            "wait",
            Some(1),
            at(10),
        );
        set_condition(
            &mut conditions,
            ready,
            ConditionStatus::False,
            "Still",
            "wait",
            Some(2),
            at(20),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, Time(at(10)));
        assert_eq!(conditions[0].reason, "Still");
        assert_eq!(conditions[0].observed_generation, Some(2));

        set_condition(
            &mut conditions,
            ready,
            ConditionStatus::True,
            "Done",
            "ok",
            Some(2),
            at(30),
        );
        assert_eq!(conditions[0].last_transition_time, Time(at(30)));
        assert_eq!(
            find_condition(&conditions, ready).map(|c| c.status.as_str()),
            Some("True")
        );
    }

    #[test]
    fn conditions_of_other_types_are_kept() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            ConditionType::Ready,
            ConditionStatus::True,
            "A",
            "",
            None,
            at(1),
        );
        set_condition(
            &mut conditions,
            ConditionType::Degraded,
            ConditionStatus::False,
            "B",
            "",
            None,
            at(1),
        );
        assert_eq!(conditions.len(), 2);
        assert!(find_condition(&conditions, ConditionType::Rotating).is_none());
    }

    #[test]
    fn reconciling_and_stalled_are_never_true_together_and_gone_once_settled() {
        let mut conditions = Vec::new();
        let types = |conditions: &[Condition]| -> Vec<String> {
            conditions.iter().map(|c| c.type_.clone()).collect()
        };
        let waiting = Progress::Reconciling {
            reason: "Distributing".to_owned(),
            message: "1/2 pods".to_owned(),
        };
        set_progress(&mut conditions, waiting, Some(1), at(10));
        assert_eq!(types(&conditions), ["Reconciling"]);
        assert!(is_true(&conditions[0]));
        assert_eq!(conditions[0].reason, "Distributing");
        // Still under way for another reason: the condition keeps its transition time.
        let staging = Progress::Reconciling {
            reason: "Staging".to_owned(),
            message: String::new(),
        };
        set_progress(&mut conditions, staging, Some(1), at(20));
        assert_eq!(conditions[0].last_transition_time, Time(at(10)));
        assert_eq!(conditions[0].reason, "Staging");
        let refused = Progress::Stalled {
            reason: "InvalidDistribution".to_owned(),
            message: "restart must be Rolling".to_owned(),
        };
        set_progress(&mut conditions, refused, Some(2), at(30));
        assert_eq!(types(&conditions), ["Stalled"]);
        assert_eq!(conditions[0].message, "restart must be Rolling");
        set_progress(&mut conditions, Progress::Settled, Some(3), at(40));
        assert!(conditions.is_empty());
    }

    #[test]
    fn only_a_condition_whose_status_is_true_holds() {
        let mut conditions = Vec::new();
        for (type_, status) in [
            (ConditionType::Ready, ConditionStatus::True),
            (ConditionType::Degraded, ConditionStatus::False),
            (ConditionType::Rotating, ConditionStatus::Unknown),
        ] {
            set_condition(&mut conditions, type_, status, "A", "", None, at(1));
        }
        let holds = |type_| find_condition(&conditions, type_).is_some_and(is_true);
        assert!(holds(ConditionType::Ready));
        assert!(!holds(ConditionType::Degraded));
        assert!(!holds(ConditionType::Rotating));
        assert!(!holds(ConditionType::Distributed));
    }
}
