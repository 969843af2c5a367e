//! Two replicas against the real control plane: one leads through the Lease and
//! reconciles, the other stands by and says so; killing the leader hands everything over
//! within the lease duration, in-flight rotations included, and no handover ever leaves
//! a client whose delivered secret fails to verify.

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::coordination::v1::Lease;
use keyward::crd::encryption_key::RotationPhase;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::api::{clients, keys};
use crate::support::ciphertext::write_ciphertexts;
use crate::support::encryption_key::{ROTATION, apply_key, bump, until_distributed, until_rotated};
use crate::support::oauth_client::{delivered_secret, keyward_verify, until_client_ready};
use crate::support::operator::operator_running_jobs;
use crate::support::workload::deploy;
use crate::support::{self, Operator, TestCluster, http, jobs, manifest, wait};

/// The Lease's timings in these tests: held 4s after a renewal, renewed every second,
/// the leader fenced 2s after its last renewal.
const LEASE_FLAGS: [&str; 4] = [
    "--leader-election-lease-duration",
    "4s",
    "--leader-election-renew-deadline",
    "2s",
];

/// A takeover may take the lease duration (4s) after the dead leader's last renewal,
/// plus the standby's jittered retry (up to 1s) and a few API round trips.
const TAKEOVER: Duration = Duration::from_secs(4 + 3);

/// A replica named `name` in the Lease, running re-encryption Jobs on the job runner.
fn replica(cluster: &TestCluster, name: &str) -> Operator {
    let mut args = vec!["--instance", name];
    args.extend(LEASE_FLAGS);
    operator_running_jobs(cluster, &args)
}

/// Waits until `replica`'s `/readyz` says `expected`, polling it like a kubelet does.
async fn until_role(replica: &Operator, expected: &str, within: Duration) {
    let url = replica.health_url();
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        last = http::readyz(&url);
        if last.as_deref() == Some(expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz did not say {expected:?} within {within:?}; it said {last:?}");
}

fn metrics(replica: &Operator) -> String {
    let (code, page) = http::get(&format!("{}/metrics", replica.metrics_url())).expect("scraped");
    assert_eq!(code, 200);
    page
}

/// A Deployment of two pods and a key distributed to them in the `Keyring` format.
async fn distributed_key(cluster: &TestCluster) -> serde_json::Value {
    deploy(cluster, "apim", 2).await;
    let spec = json!({
        "targets": [{"kind": "Deployment", "name": "apim"}],
        "distribution": {"format": "Keyring"},
        "reencryption": {"writesPerSecond": 200},
    });
    apply_key(cluster, "apim", spec.clone()).await;
    until_distributed(cluster, "apim").await;
    spec
}

#[tokio::test]
async fn one_replica_leads_the_other_stands_by_and_takes_over_an_in_flight_rotation() {
    let cluster = support::cluster("ha-takeover").await;
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    let first = replica(&cluster, "first");
    until_role(&first, "leader", support::WAIT).await;
    let second = replica(&cluster, "second");
    until_role(&second, "standby: leader is first", support::WAIT).await;
    assert!(
        second.log().contains("standing by"),
        "the standby says so in its log"
    );

    let spec = distributed_key(&cluster).await;
    write_ciphertexts(&cluster, "apim", 200).await;
    manifest::apply_keyward(
        &cluster,
        "OAuthClient",
        "portal",
        json!({"secretType": "Encrypted", "encryptionKeyRef": {"name": "apim"}}),
    )
    .await;
    until_client_ready(&cluster, "portal", "Issued", None).await;

    // Only the leader reconciles; the standby's metrics show it waiting.
    let (leading, standing_by) = (metrics(&first), metrics(&second));
    assert_eq!(http::sample(&leading, "keyward_leader", ""), Some(1.0));
    assert_eq!(http::sample(&standing_by, "keyward_leader", ""), Some(0.0));
    assert!(
        http::sample(
            &leading,
            "keyward_reconciles_total",
            "controller=\"OAuthClient\""
        )
        .is_some_and(|count| count > 0.0)
    );
    assert_eq!(
        http::sample(
            &standing_by,
            "keyward_reconciles_total",
            "controller=\"OAuthClient\""
        ),
        None,
        "the standby reconciled nothing"
    );

    // The leader dies in the middle of a rotation; the standby takes over and ends it.
    bump(&cluster, "apim", &spec, 1).await;
    wait::until_within(
        &keys(&cluster),
        "apim",
        "the rotation is under way",
        ROTATION,
        |key| {
            key.status
                .as_ref()
                .and_then(|status| status.rotation.as_ref())
                .is_some_and(|rotation| {
                    matches!(
                        rotation.phase,
                        RotationPhase::Promoting | RotationPhase::Reencrypting
                    )
                })
        },
    )
    .await;
    drop(first);
    until_role(&second, "leader", TAKEOVER).await;
    until_rotated(&cluster, "apim", 2).await;
    until_client_ready(&cluster, "portal", "Issued", None).await;
    let secret = delivered_secret(&cluster, "portal-credentials").await;
    assert_eq!(keyward_verify(&cluster, "portal-verifier", &secret), 0);
}

#[tokio::test]
async fn a_leader_paused_past_its_renew_deadline_finds_itself_fenced_when_it_resumes() {
    let cluster = support::cluster("ha-fencing").await;
    let first = replica(&cluster, "first");
    until_role(&first, "leader", support::WAIT).await;
    let second = replica(&cluster, "second");
    until_role(&second, "standby: leader is first", support::WAIT).await;

    // A stopped process stands for a leader that cannot renew: a frozen node, a long
    // pause. The standby takes the Lease once it expires.
    first.signal("STOP");
    until_role(&second, "leader", TAKEOVER).await;
    manifest::apply_keyward(&cluster, "OAuthClient", "portal", json!({})).await;
    until_client_ready(&cluster, "portal", "Issued", None).await;
    let issued_by_second = clients(&cluster).get("portal").await.expect("get");

    // Resumed, the old leader finds its renew deadline long past and stops its
    // controllers before they act: it stands by, and the client stays as issued.
    first.signal("CONT");
    until_role(&first, "standby: leader is second", support::WAIT).await;
    assert!(
        first.log().contains("leadership lost"),
        "the resumed replica says it was fenced"
    );
    assert_eq!(
        http::sample(
            &metrics(&first),
            "keyward_reconciles_total",
            "controller=\"OAuthClient\""
        ),
        None,
        "the resumed replica reconciled nothing: its controllers stopped before acting"
    );
    manifest::apply_keyward(&cluster, "OAuthClient", "barrier", json!({})).await;
    until_client_ready(&cluster, "barrier", "Issued", None).await;
    let portal = clients(&cluster).get("portal").await.expect("get");
    assert_eq!(
        portal.status, issued_by_second.status,
        "the fenced replica did not touch what the leader issued"
    );
    let secret = delivered_secret(&cluster, "portal-credentials").await;
    assert_eq!(keyward_verify(&cluster, "portal-verifier", &secret), 0);
}

#[tokio::test]
async fn twenty_forced_handovers_never_leave_a_delivered_secret_that_does_not_verify() {
    let cluster = support::cluster("ha-handovers").await;
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    let names = ["east", "west"];
    let mut replicas = [Some(replica(&cluster, names[0])), None];
    until_role(
        replicas[0].as_ref().expect("started"),
        "leader",
        support::WAIT,
    )
    .await;
    replicas[1] = Some(replica(&cluster, names[1]));
    let spec = distributed_key(&cluster).await;

    let mut issued = Vec::new();
    let mut key_generation = 0;
    let mut leader = 0;
    for handover in 0..20 {
        // Work in flight as the leader dies: new clients of both kinds, a client secret
        // rotation, and every fifth time a key rotation.
        for kind in ["Hashed", "Encrypted"] {
            let name = format!("client-{handover}-{}", kind.to_lowercase());
            let spec = if kind == "Encrypted" {
                json!({"secretType": "Encrypted", "encryptionKeyRef": {"name": "apim"}})
            } else {
                json!({})
            };
            manifest::apply_keyward(&cluster, "OAuthClient", &name, spec).await;
            issued.push(name);
        }
        // An earlier client, hashed and encrypted in turn.
        let earlier = issued.len().checked_sub(3 + handover % 2);
        if let Some(earlier) = earlier.map(|index| &issued[index]) {
            let spec = if earlier.ends_with("encrypted") {
                json!({"secretType": "Encrypted", "encryptionKeyRef": {"name": "apim"},
                       "rotation": {"generation": handover}})
            } else {
                json!({"rotation": {"generation": handover}})
            };
            manifest::apply_keyward(&cluster, "OAuthClient", earlier, spec).await;
        }
        if handover % 5 == 0 {
            key_generation += 1;
            bump(&cluster, "apim", &spec, key_generation).await;
        }
        replicas[leader] = None;
        let next = 1 - leader;
        until_role(
            replicas[next].as_ref().expect("the standby runs"),
            "leader",
            TAKEOVER,
        )
        .await;
        replicas[leader] = Some(replica(&cluster, names[leader]));
        leader = next;
    }

    // Bumps made while a rotation runs are answered together by the next one.
    wait::until_within(
        &keys(&cluster),
        "apim",
        "the last rotation requested has succeeded",
        ROTATION,
        |key| {
            key.status
                .as_ref()
                .and_then(|status| status.rotation.as_ref())
                .is_some_and(|rotation| {
                    rotation.generation == key_generation
                        && rotation.phase == RotationPhase::Succeeded
                })
        },
    )
    .await;
    for name in &issued {
        wait::until_within(
            &clients(&cluster),
            name,
            "the client is issued",
            ROTATION,
            |client| wait::ready(client) == Some(("True".into(), "Issued".into())),
        )
        .await;
        let secret = delivered_secret(&cluster, &format!("{name}-credentials")).await;
        assert_eq!(
            keyward_verify(&cluster, &format!("{name}-verifier"), &secret),
            0,
            "{name}'s delivered secret verifies against its verifier"
        );
    }
}

#[tokio::test]
async fn two_replicas_each_pid_one_in_its_container_and_without_a_pod_name_elect_one_leader() {
    let cluster = support::cluster("ha-pid-one").await;
    let kubeconfig = &support::control_plane().kubeconfig;
    let replicas =
        [(); 2].map(|()| Operator::start_as_pid_one(kubeconfig, &cluster.namespace, &LEASE_FLAGS));
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let lease = wait::until(&leases, "keyward", "a replica holds the Lease", |lease| {
        lease
            .spec
            .as_ref()
            .is_some_and(|spec| spec.holder_identity.is_some())
    })
    .await;
    let holder = lease
        .spec
        .and_then(|spec| spec.holder_identity)
        .expect("a holder");
    let standby = format!("standby: leader is {holder}");
    let roles = || {
        replicas
            .each_ref()
            .map(|replica| http::readyz(&replica.health_url()))
    };
    let settled = Instant::now() + support::WAIT;
    loop {
        let now = roles();
        let leaders = now
            .iter()
            .filter(|role| role.as_deref() == Some("leader"))
            .count();
        let standing_by = now
            .iter()
            .filter(|role| role.as_deref() == Some(standby.as_str()));
        if leaders == 1 && standing_by.count() == 1 {
            break;
        }
        assert!(
            Instant::now() < settled,
            "one leader and one standby naming {holder:?} within {:?}; the replicas say {now:?}",
            support::WAIT
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !holder.ends_with("-1"),
        "the identity {holder:?} is not made from the process id"
    );
    // And so it stays, renewal after renewal: never two leaders under one name.
    let watched = Instant::now() + 3 * Duration::from_secs(4);
    while Instant::now() < watched {
        let now = roles();
        assert_eq!(
            now.iter()
                .filter(|role| role.as_deref() == Some("leader"))
                .count(),
            1,
            "exactly one replica leads; they say {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sets the `renewTime` of the test's leader Lease to `at`, as a holder whose clock
/// reads `at` would write it; dry run only when `dry_run`.
async fn write_renew_time(
    cluster: &TestCluster,
    at: &str,
    dry_run: bool,
) -> Result<Lease, kube::Error> {
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let params = PatchParams {
        dry_run,
        ..PatchParams::default()
    };
    leases
        .patch(
            "keyward",
            &params,
            &Patch::Merge(json!({"spec": {"renewTime": at}})),
        )
        .await
}

#[tokio::test]
async fn a_renewal_dated_by_a_clock_far_behind_does_not_stop_the_leader() {
    let cluster = support::cluster("ha-clock-behind").await;
    let first = replica(&cluster, "first");
    until_role(&first, "leader", support::WAIT).await;

    // The Lease now says the leader last renewed in 1970, as a holder whose clock is
    // that far behind would write it. The renewal was seen just now: the term goes on.
    write_renew_time(&cluster, "1970-01-01T00:00:00.000000Z", false)
        .await
        .expect("renewTime written");
    let watched = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watched {
        let role = http::readyz(&first.health_url());
        assert_eq!(role.as_deref(), Some("leader"), "the leader keeps leading");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !first.log().contains("leadership lost"),
        "the leader was never fenced"
    );
}

#[tokio::test]
async fn a_leader_that_cannot_renew_is_fenced_though_the_lease_says_it_renewed_in_2200() {
    let cluster = support::cluster("ha-clock-ahead").await;
    let first = replica(&cluster, "first");
    until_role(&first, "leader", support::WAIT).await;

    // Every renewal of this Lease is refused from now on, except one dated in the 2200s:
    // the leader is as good as cut off, and the Lease claims a renewal 175 years ahead.
    let name = format!("keyward-test-{}", cluster.namespace);
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": cluster.namespace}},
                "resourceRules": [{
                    "apiGroups": ["coordination.k8s.io"], "apiVersions": ["v1"],
                    "operations": ["UPDATE"], "resources": ["leases"],
                    "resourceNames": ["keyward"],
                }],
            },
            "validations": [{
                "expression": "has(object.spec.renewTime) && string(object.spec.renewTime).startsWith('22')",
                "message": "renewals of this Lease are refused in this test",
            }],
        },
    }))
    .expect("a policy");
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }))
    .expect("a binding");
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(cluster.client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(cluster.client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy created");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding created");
    let effective = Instant::now() + support::WAIT;
    while write_renew_time(&cluster, "2026-01-01T00:00:00.000000Z", true)
        .await
        .is_ok()
    {
        assert!(Instant::now() < effective, "the policy took effect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    write_renew_time(&cluster, "2200-01-01T00:00:00.000000Z", false)
        .await
        .expect("renewTime written");

    // The renew deadline (2s) from when the leader saw that write, its controllers stop.
    // (The policy matches this test's namespace only, so one left by a failure harms
    // no other test.)
    until_role(&first, "standby", Duration::from_secs(2 + 3)).await;
    let _ = bindings.delete(&name, &DeleteParams::default()).await;
    let _ = policies.delete(&name, &DeleteParams::default()).await;
    assert!(
        first.log().contains("leadership lost"),
        "the leader says it was fenced"
    );
}
