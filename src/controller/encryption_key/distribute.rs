//! Distribution of an EncryptionKey: renders the keyring into the distribution Secret,
//! projects that Secret into the target workloads and counts the pods that hold it, and
//! says what that progress means for the `Distributed` and `Ready` conditions
//! ([`outcome`]). It never touches the keyring, and never writes over a Secret of the
//! distribution Secret's name that is not the key's.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use super::decide::Problem;
use super::{reasons, render};
use crate::controller::context::Context;
use crate::crd::ConditionStatus;
use crate::crd::EncryptionKey;
use crate::crd::encryption_key::DistributionStatus;
use crate::crypto::Keyring;
use crate::store::{self, Written};
use crate::workload::{self, Rollout, TemplateProjection};
use crate::{Error, Result};

/// How often an undistributed key is looked at again, besides the workload watches.
pub const DISTRIBUTION_RECHECK: Duration = Duration::from_secs(5);

/// How often a settled key is looked at again all the same: what no watch event tells
/// (a keyring Secret deleted while the watches were away, behind a compacted history)
/// is then noticed within this long, whatever state the watches are in.
pub const SETTLED_RECHECK: Duration = Duration::from_secs(120);

/// How far distribution got in one reconcile.
#[derive(Debug)]
pub enum Distribution {
    /// The distribution Secret's name is taken by someone else's Secret: nothing was
    /// written or projected.
    Conflict(Problem),
    /// The keyring is rendered and projected; this is how far the pods are.
    RolledOut {
        rollout: Rollout,
        progress: DistributionStatus,
    },
}

/// Whether every pod of the targets holds the keyring as it is now: every named target
/// exists, nothing keeps the key out, and every pod counted holds it.
pub fn in_sync(rollout: &Rollout) -> bool {
    rollout.missing.is_empty()
        && rollout.blocked.is_empty()
        && rollout.pods_in_sync == rollout.pods_total
}

/// Renders `keyring` into the distribution Secret, projects it into the targets and
/// counts the pods that hold it.
pub async fn distribute(
    context: &Context,
    key: &EncryptionKey,
    secrets: &Api<Secret>,
    keyring: &Keyring,
) -> Result<Distribution> {
    let name = key.name_any();
    let rendered = render::render(keyring, key.spec.distribution.format).map_err(Error::Key)?;
    let distribution_secret = store::distribution::secret_name(&name);
    let entries: Vec<(&str, &[u8])> = rendered
        .entries
        .iter()
        .map(|(entry, content)| (*entry, content.as_bytes()))
        .collect();
    let written = store::distribution::write(secrets, key, &entries).await?;
    if written == Written::Conflict {
        return Ok(Distribution::Conflict(Problem {
            reason: reasons::SECRET_CONFLICT,
            message: format!(
                "Secret {distribution_secret:?} exists and is not owned by this EncryptionKey; keyward will not overwrite it"
            ),
            degraded: true,
        }));
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
    Ok(Distribution::RolledOut { rollout, progress })
}

/// What distribution progress means for the `Distributed` and `Ready` conditions.
#[derive(Debug)]
pub struct Outcome {
    /// Every pod of the targets holds the current keyring.
    pub distributed: bool,
    pub distributed_condition: (ConditionStatus, &'static str),
    pub ready_condition: (ConditionStatus, &'static str),
    /// How far distribution got, in a sentence naming what is missing or in the way.
    pub summary: String,
    /// A request of the spec that keeps `Ready` false although the key is distributed.
    pub notice: Option<Problem>,
}

/// Distributed only when every named target exists, nothing keeps the key out of any
/// targeted container, and every pod it asks for is ready with the current keyring.
pub fn outcome(rollout: &Rollout, notice: Option<Problem>) -> Outcome {
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
            distributed_condition: (ConditionStatus::False, reasons::TARGET_NOT_FOUND),
            ready_condition: (ConditionStatus::False, reasons::TARGET_NOT_FOUND),
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
            (ConditionStatus::True, reasons::IN_SYNC)
        } else {
            (ConditionStatus::False, reasons::ROLLING_OUT)
        },
        ready_condition: if distributed {
            (ConditionStatus::True, reasons::KEY_DISTRIBUTED)
        } else {
            (ConditionStatus::False, reasons::DISTRIBUTING)
        },
        summary: counted,
        notice,
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
