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
