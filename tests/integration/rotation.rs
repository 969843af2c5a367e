//! Key rotation against the real control plane: the operator stages, promotes,
//! re-encrypts through a real `batch/v1` Job (run by the job runner as the Job's own
//! service account, see `support::jobs`), verifies and retires — and no value is lost,
//! not even one a concurrent writer changes while the Job runs.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use keyward::crd::EncryptionKey;
use keyward::crd::encryption_key::RotationPhase;
use keyward::crypto::envelope::{Context, Envelope};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::support::api::{keys, secrets};
use crate::support::ciphertext::{FIELD, ciphertext_secret, rand_suffix, write_ciphertexts};
use crate::support::encryption_key::{ROTATION, bump, stored_keyring, until_rotated};
use crate::support::events::until_event;
use crate::support::jobs::external_template;
use crate::support::oauth_client::{delivered_secret, keyward_verify};
use crate::support::operator::operator_running_jobs;
use crate::support::workload::deploy;
use crate::support::{self, Operator, TestCluster, ciphertext, jobs, manifest, wait};

fn context<'a>(namespace: &'a str, name: &'a str) -> Context<'a> {
    Context {
        namespace,
        name,
        field: FIELD,
    }
}

/// The envelope each test Secret holds now.
async fn envelopes(cluster: &TestCluster, key: &str) -> BTreeMap<String, Envelope> {
    secrets(cluster)
        .list(&ListParams::default().labels(&format!("keyward.io/encryption-key={key}")))
        .await
        .expect("list")
        .into_iter()
        .filter_map(|secret| {
            let text = String::from_utf8(secret.data.as_ref()?.get(FIELD)?.0.clone()).ok()?;
            Some((secret.name_any(), Envelope::parse(text.trim()).ok()?))
        })
        .collect()
}

#[tokio::test]
async fn rotating_a_key_reencrypts_every_secret_and_retires_the_old_version() {
    let cluster = support::cluster("rotation").await;
    let _operator = operator_running_jobs(&cluster, &[]);
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    deploy(&cluster, "apim", 2).await;
    let spec = json!({
        "targets": [{"kind": "Deployment", "name": "apim"}],
        "distribution": {"format": "Keyring"},
        "rotation": {"keepRetiredVersions": 1},
        "reencryption": {"writesPerSecond": 100},
    });
    manifest::apply_keyward(&cluster, "EncryptionKey", "apim", spec.clone()).await;
    wait::until(&keys(&cluster), "apim", "the key is distributed", |key| {
        wait::ready(key) == Some(("True".into(), "KeyDistributed".into()))
    })
    .await;
    let mut plaintexts = write_ciphertexts(&cluster, "apim", 1000).await;
    let clients = ["portal", "billing", "partner"];
    for client in clients {
        manifest::apply_keyward(
            &cluster,
            "OAuthClient",
            client,
            json!({"secretType": "Encrypted", "encryptionKeyRef": {"name": "apim"}}),
        )
        .await;
    }
    let client_api: Api<keyward::crd::OAuthClient> =
        Api::namespaced(cluster.client.clone(), &cluster.namespace);
    for client in clients {
        wait::until(&client_api, client, "the client is issued", |client| {
            wait::ready(client) == Some(("True".into(), "Issued".into()))
        })
        .await;
    }

    bump(&cluster, "apim", &spec, 1).await;

    // While the Job re-encrypts, a writer updates 100 of the Secrets with new values,
    // encrypted under the primary a writer now finds: none of its values may be lost.
    wait::until_within(
        &keys(&cluster),
        "apim",
        "the rotation re-encrypts",
        ROTATION,
        |key| {
            key.status
                .as_ref()
                .and_then(|status| status.rotation.as_ref())
                .is_some_and(|rotation| rotation.phase == RotationPhase::Reencrypting)
        },
    )
    .await;
    let keyring = stored_keyring(&cluster, "apim").await;
    assert_eq!(keyring.primary().expect("primary").version, 2);
    let rewritten: Vec<String> = plaintexts.keys().rev().take(100).cloned().collect();
    for name in &rewritten {
        let plaintext = format!("rewritten-{}", rand_suffix());
        loop {
            let mut secret = secrets(&cluster).get(name).await.expect("get");
            let envelope = Envelope::seal(
                &keyring,
                &context(&cluster.namespace, name),
                plaintext.as_bytes(),
            )
            .expect("seals");
            secret.data = Some(BTreeMap::from([(
                FIELD.to_owned(),
                ByteString(envelope.to_string().into_bytes()),
            )]));
            match secrets(&cluster)
                .replace(name, &PostParams::default(), &secret)
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(error) => panic!("the writer's update failed: {error}"),
            }
        }
        plaintexts.insert(name.clone(), plaintext);
    }

    let rotated = until_rotated(&cluster, "apim", 2).await;

    // Every value decrypts to what was last written, under version 2 only.
    let keyring = stored_keyring(&cluster, "apim").await;
    let found = envelopes(&cluster, "apim").await;
    assert_eq!(found.len(), plaintexts.len());
    for (name, plaintext) in &plaintexts {
        let envelope = &found[name];
        assert_eq!(envelope.key_version, 2, "{name} is under version 2");
        let opened = envelope
            .open(&keyring, &context(&cluster.namespace, name))
            .expect("decrypts");
        assert_eq!(
            opened.expose(),
            plaintext.as_bytes(),
            "{name} kept its value"
        );
    }
    let scan = support::keyward(
        &[
            "scan",
            "--key",
            &format!("{}/apim", cluster.namespace),
            "-o",
            "json",
        ],
        b"",
    );
    assert!(scan.status.success(), "keyward scan: {scan:?}");
    let counts: serde_json::Value = serde_json::from_slice(&scan.stdout).expect("JSON");
    assert_eq!(
        counts["versions"]
            .get("1")
            .and_then(|n| n.as_u64())
            .unwrap_or(0),
        0
    );

    // v1 is retired (kept for ciphertext elsewhere, retention 1); pods no longer hold it.
    let status = rotated.status.as_ref().expect("status");
    let states: Vec<(i64, &str)> = status
        .versions
        .iter()
        .map(|version| (version.version, version.state.as_str()))
        .collect();
    assert_eq!(states, vec![(1, "Retired"), (2, "Primary")]);
    let rotation = status.rotation.as_ref().expect("rotation");
    let progress = rotation.progress.as_ref().expect("progress");
    assert_eq!(progress.failed, 0);
    assert!(
        progress.done >= 900,
        "the Job re-encrypted the values: {progress:?}"
    );
    let distribution = status.distribution.as_ref().expect("distribution");
    assert_eq!(distribution.versions, vec![2]);
    let hash = distribution.keyring_hash.clone().expect("hash");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let running: Vec<Pod> = pods
        .list(&ListParams::default().labels("app=apim"))
        .await
        .expect("pods")
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(running.len(), 2);
    for pod in &running {
        assert_eq!(
            pod.annotations().get("keyward.io/keyring-hash.apim"),
            Some(&hash),
            "pod {} holds the final keyring",
            pod.name_any()
        );
    }

    // The Job really ran, as its own service account, and completed.
    let job_name = rotation.job_name.clone().expect("job name");
    let job: Job = Api::namespaced(cluster.client.clone(), &cluster.namespace)
        .get(&job_name)
        .await
        .expect("the Job exists");
    assert!(
        job.status
            .and_then(|status| status.conditions)
            .unwrap_or_default()
            .iter()
            .any(|condition| condition.type_ == "Complete" && condition.status == "True"),
        "the Job completed"
    );
    assert_eq!(
        job.spec
            .and_then(|spec| spec.template.spec)
            .and_then(|spec| spec.service_account_name)
            .as_deref(),
        Some("apim-reencrypt")
    );

    // Every Encrypted client still verifies.
    for client in clients {
        let secret = delivered_secret(&cluster, &format!("{client}-credentials")).await;
        assert_eq!(
            keyward_verify(&cluster, &format!("{client}-verifier"), &secret),
            0,
            "{client} verifies after the rotation"
        );
    }

    let events: Api<Event> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .into_iter()
        .filter_map(|event| event.reason)
        .collect();
    for reason in [
        "RotationStarted",
        "RotationPromoting",
        "RotationReencrypting",
        "RotationVerifying",
        "RotationRetiring",
        "RotationSucceeded",
    ] {
        assert!(reasons.iter().any(|r| r == reason), "event {reason}");
    }
}

#[tokio::test]
async fn re_encryption_honours_its_write_rate_limit() {
    let cluster = support::cluster("rotation-throttle").await;
    let _operator = operator_running_jobs(&cluster, &[]);
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    let spec = json!({"reencryption": {"writesPerSecond": 20, "batchSize": 25}});
    manifest::apply_keyward(&cluster, "EncryptionKey", "apim", spec.clone()).await;
    wait::until(&keys(&cluster), "apim", "the key is ready", |key| {
        wait::ready(key) == Some(("True".into(), "KeyDistributed".into()))
    })
    .await;
    write_ciphertexts(&cluster, "apim", 100).await;
    bump(&cluster, "apim", &spec, 1).await;
    until_rotated(&cluster, "apim", 2).await;
    let progress: ConfigMap = Api::namespaced(cluster.client.clone(), &cluster.namespace)
        .get("apim-reencryption")
        .await
        .expect("the Job's progress ConfigMap");
    let data = progress.data.expect("data");
    let number = |key: &str| -> f64 {
        data.get(key)
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {data:?}"))
    };
    let (writes, elapsed) = (number("writes"), number("elapsedSeconds"));
    assert_eq!(writes, 100.0, "one write per value");
    assert!(
        writes / elapsed <= 20.0,
        "{writes} writes in {elapsed} s exceed 20 per second"
    );
}

/// What the pods of the targets hold, learnt from the key's status: the versions of each
/// keyring hash the key has distributed.
#[derive(Default)]
struct Observations {
    versions_of_hash: BTreeMap<String, Vec<i64>>,
    kills: usize,
    checks: usize,
}

impl Observations {
    fn learn(&mut self, key: &EncryptionKey) {
        if let Some(distribution) = key.status.as_ref().and_then(|s| s.distribution.as_ref())
            && let Some(hash) = &distribution.keyring_hash
        {
            self.versions_of_hash
                .insert(hash.clone(), distribution.versions.clone());
        }
    }

    /// No running pod holds a keyring that lacks a version some stored ciphertext is under.
    async fn check(&mut self, cluster: &TestCluster) {
        let needed: Vec<i64> = envelopes(cluster, "apim")
            .await
            .values()
            .map(|envelope| envelope.key_version)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        for pod in pods
            .list(&ListParams::default().labels("app=apim"))
            .await
            .expect("pods")
        {
            let ready = pod
                .status
                .as_ref()
                .and_then(|status| status.conditions.as_ref())
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
            if !ready || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(held) = pod
                .annotations()
                .get("keyward.io/keyring-hash.apim")
                .and_then(|hash| self.versions_of_hash.get(hash))
            else {
                continue;
            };
            for version in &needed {
                assert!(
                    held.contains(version),
                    "pod {} holds versions {held:?} but ciphertext is under version {version}",
                    pod.name_any()
                );
            }
        }
        self.checks += 1;
    }
}

/// The operator is SIGKILLed at every step of five rotations and started again, the
/// Job's process is killed mid-batch once: every rotation still completes, no value is
/// lost, and at no observed instant does a pod lack a version some ciphertext needs.
#[tokio::test]
async fn rotations_survive_the_operator_being_killed_at_every_step() {
    use kube::runtime::{WatchStreamExt, watcher};

    let rotations: i64 = std::env::var("KEYWARD_CHAOS_ROTATIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    let cluster = support::cluster("rotation-chaos").await;
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    let mut operator = Some(operator_running_jobs(&cluster, &[]));
    deploy(&cluster, "apim", 2).await;
    let spec = json!({
        "targets": [{"kind": "Deployment", "name": "apim"}],
        "distribution": {"format": "Keyring"},
        "reencryption": {"writesPerSecond": 40, "batchSize": 20},
    });
    manifest::apply_keyward(&cluster, "EncryptionKey", "apim", spec.clone()).await;
    wait::until(&keys(&cluster), "apim", "the key is distributed", |key| {
        wait::ready(key) == Some(("True".into(), "KeyDistributed".into()))
    })
    .await;
    let plaintexts = write_ciphertexts(&cluster, "apim", 200).await;
    let mut observations = Observations::default();
    let mut job_killed = false;
    for rotation in 1..=rotations {
        let target = rotation + 1;
        bump(&cluster, "apim", &spec, rotation).await;
        let stream = watcher(
            keys(&cluster),
            watcher::Config::default().fields("metadata.name=apim"),
        )
        .applied_objects();
        let mut stream = std::pin::pin!(stream);
        let mut last_phase = None;
        let deadline = tokio::time::Instant::now() + ROTATION;
        loop {
            let key = tokio::time::timeout_at(deadline, stream.try_next())
                .await
                .unwrap_or_else(|_| panic!("rotation {rotation} did not finish in time"))
                .expect("watch")
                .expect("the key exists");
            observations.learn(&key);
            observations.check(&cluster).await;
            let Some(status) = key.status.as_ref().and_then(|s| s.rotation.as_ref()) else {
                continue;
            };
            if status.target_version != target {
                continue;
            }
            if status.phase == RotationPhase::Succeeded {
                break;
            }
            // At every step the operator records, it dies and comes back.
            if last_phase != Some(status.phase) {
                last_phase = Some(status.phase);
                drop(operator.take());
                observations.kills += 1;
                operator = Some(operator_running_jobs(&cluster, &[]));
            }
            if status.phase == RotationPhase::Reencrypting
                && !job_killed
                && status.progress.as_ref().is_some_and(|p| p.done > 0)
            {
                jobs::runner().kill_jobs_in(&cluster.namespace);
                job_killed = true;
            }
        }
        observations.check(&cluster).await;
    }
    assert!(
        observations.kills >= 4 * usize::try_from(rotations).unwrap_or(0),
        "{} kills",
        observations.kills
    );
    assert!(job_killed, "the Job's process was killed mid-batch");
    let keyring = stored_keyring(&cluster, "apim").await;
    let found = envelopes(&cluster, "apim").await;
    for (name, plaintext) in &plaintexts {
        let envelope = &found[name];
        assert_eq!(envelope.key_version, rotations + 1, "{name}");
        let opened = envelope
            .open(&keyring, &context(&cluster.namespace, name))
            .expect("decrypts");
        assert_eq!(
            opened.expose(),
            plaintext.as_bytes(),
            "{name} kept its value"
        );
    }
    eprintln!(
        "chaos: {rotations} rotations, {} operator kills, job killed mid-batch: {job_killed}, {} invariant checks",
        observations.kills, observations.checks
    );
}

/// An external Job (an API manager's database) gets both key versions and gates the
/// rotation: its success lets the rotation finish, its failure stops it before any
/// version is retired.
#[tokio::test]
async fn an_external_job_receives_both_versions_and_its_outcome_gates_retirement() {
    let cluster = support::cluster("rotation-external").await;
    let _operator = operator_running_jobs(&cluster, &["--allow-job-templates"]);
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    // Checks what it was handed: the versions in its environment and in the Secret it
    // names, and a keyring holding both.
    let checks = r#"set -e
test "$KEYWARD_OLD_VERSIONS" = 1
test "$KEYWARD_NEW_VERSION" = 2
field() { "$KUBECTL" get secret "$KEYWARD_KEY_VERSIONS_SECRET" -o "jsonpath={.data.$1}" | base64 -d; }
test "$(field oldVersions)" = 1
test "$(field newVersion)" = 2
field 'keyring\.json' | grep -q '"version": 1'
field 'keyring\.json' | grep -q '"version": 2'
echo external re-encryption done"#;
    let passing =
        json!({"reencryption": {"jobTemplate": external_template(&cluster, checks).await}});
    manifest::apply_keyward(&cluster, "EncryptionKey", "apim", passing.clone()).await;
    let failing =
        json!({"reencryption": {"jobTemplate": external_template(&cluster, "exit 1").await}});
    manifest::apply_keyward(&cluster, "EncryptionKey", "legacy", failing.clone()).await;
    for key in ["apim", "legacy"] {
        wait::until(&keys(&cluster), key, "the key is ready", |key| {
            wait::ready(key) == Some(("True".into(), "KeyDistributed".into()))
        })
        .await;
    }
    write_ciphertexts(&cluster, "apim", 20).await;
    bump(&cluster, "apim", &passing, 1).await;
    bump(&cluster, "legacy", &failing, 1).await;

    let rotated = until_rotated(&cluster, "apim", 2).await;
    let states: Vec<(i64, String)> = rotated
        .status
        .as_ref()
        .expect("status")
        .versions
        .iter()
        .map(|version| (version.version, version.state.clone()))
        .collect();
    assert_eq!(states, vec![(1, "Retired".into()), (2, "Primary".into())]);
    let external: Job = Api::namespaced(cluster.client.clone(), &cluster.namespace)
        .get("apim-external-v2-0")
        .await
        .expect("the external Job");
    assert_eq!(
        external.status.and_then(|status| status.succeeded),
        Some(1),
        "the external Job ran and succeeded"
    );
    assert!(
        jobs::runner()
            .log_of(&cluster.namespace)
            .contains("external re-encryption done")
    );
    wait::until_gone(
        &secrets(&cluster),
        "apim-versions-v2",
        "the Secret handing over key versions is deleted after its step",
    )
    .await;

    let stopped = wait::until_within(
        &keys(&cluster),
        "legacy",
        "the failed external Job stops the rotation",
        ROTATION,
        |key| wait::ready(key) == Some(("False".into(), "ReencryptionFailed".into())),
    )
    .await;
    let status = stopped.status.as_ref().expect("status");
    let rotation = status.rotation.as_ref().expect("rotation");
    assert_eq!(rotation.phase, RotationPhase::Reencrypting);
    assert!(
        status
            .versions
            .iter()
            .all(|version| version.state != "Retired"),
        "nothing is retired: {:?}",
        status.versions
    );
    assert!(
        status.conditions.iter().any(|c| c.type_ == "Degraded"
            && c.status == "True"
            && c.reason == "ReencryptionFailed")
    );
}

/// A value that does not decrypt stops the rotation before retirement: named in status
/// (never its content), Degraded with the reason, retried only after a backoff — and the
/// old version stays on the pods.
#[tokio::test]
async fn an_undecryptable_value_stops_the_rotation_before_retirement() {
    let cluster = support::cluster("rotation-undecryptable").await;
    let _operator = operator_running_jobs(&cluster, &[]);
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    let spec = json!({"distribution": {"format": "Keyring"}});
    manifest::apply_keyward(&cluster, "EncryptionKey", "apim", spec.clone()).await;
    wait::until(&keys(&cluster), "apim", "the key is ready", |key| {
        wait::ready(key) == Some(("True".into(), "KeyDistributed".into()))
    })
    .await;
    write_ciphertexts(&cluster, "apim", 10).await;
    // A value copied from another Secret: a valid envelope under v1 that does not
    // decrypt here.
    let moved = secrets(&cluster).get("data-0001").await.expect("get");
    let mut copy = ciphertext_secret("apim", "copied", &{
        let text = String::from_utf8(moved.data.expect("data")[FIELD].0.clone()).expect("UTF-8");
        Envelope::parse(text.trim()).expect("envelope")
    });
    copy.metadata.resource_version = None;
    secrets(&cluster)
        .create(&PostParams::default(), &copy)
        .await
        .expect("created");
    bump(&cluster, "apim", &spec, 1).await;

    let stopped = wait::until_within(
        &keys(&cluster),
        "apim",
        "the rotation stops on the undecryptable value",
        ROTATION,
        |key| wait::ready(key) == Some(("False".into(), "UndecryptableCiphertext".into())),
    )
    .await;
    let status = stopped.status.as_ref().expect("status");
    let rotation = status.rotation.as_ref().expect("rotation");
    assert_eq!(rotation.phase, RotationPhase::Reencrypting);
    let progress = rotation.progress.as_ref().expect("progress");
    assert_eq!(progress.failed, 1);
    assert_eq!(
        progress.failures,
        vec![format!("{}/copied/{FIELD}", cluster.namespace)]
    );
    assert!(rotation.retry_at.is_some(), "the next attempt waits");
    let states: Vec<(i64, &str)> = status
        .versions
        .iter()
        .map(|version| (version.version, version.state.as_str()))
        .collect();
    assert_eq!(states, vec![(1, "DecryptOnly"), (2, "Primary")]);
    let distribution = status.distribution.as_ref().expect("distribution");
    assert_eq!(distribution.versions, vec![1, 2], "pods keep version 1");

    // Once the value is removed, the next attempt (after its backoff) finishes the job.
    secrets(&cluster)
        .delete("copied", &Default::default())
        .await
        .expect("deleted");
    until_rotated(&cluster, "apim", 2).await;
}

/// A Job of someone else's under the name of a rotation's Job is neither used nor
/// overwritten: the rotation stops with the reason until it is gone, then finishes.
#[tokio::test]
async fn a_job_squatting_a_rotations_name_is_reported_and_never_taken_for_keywards() {
    let cluster = support::cluster("rotation-squatter").await;
    let _operator = operator_running_jobs(&cluster, &[]);
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    let spec = json!({"distribution": {"format": "Keyring"}});
    manifest::apply_keyward(&cluster, "EncryptionKey", "apim", spec.clone()).await;
    wait::until(&keys(&cluster), "apim", "the key is ready", |key| {
        wait::ready(key) == Some(("True".into(), "KeyDistributed".into()))
    })
    .await;
    write_ciphertexts(&cluster, "apim", 5).await;
    let squatter = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "apim-reencrypt-v2-0"},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "nodeSelector": jobs::node_selector(),
            "tolerations": [jobs::toleration()],
            "containers": [{"name": "squat", "image": "example.com/squat:1", "command": ["sh"], "args": ["-c", "true"]}],
        }}},
    });
    manifest::apply(
        &cluster.client,
        &cluster.namespace,
        "someone-else",
        &squatter,
    )
    .await
    .expect("the squatting Job applies");
    bump(&cluster, "apim", &spec, 1).await;
    let stopped = wait::until_within(
        &keys(&cluster),
        "apim",
        "the rotation reports the squatting Job",
        ROTATION,
        |key| wait::ready(key) == Some(("False".into(), "ObjectConflict".into())),
    )
    .await;
    let status = stopped.status.as_ref().expect("status");
    assert!(
        status
            .versions
            .iter()
            .all(|version| version.state != "Retired"),
        "nothing is retired: {:?}",
        status.versions
    );
    let found = envelopes(&cluster, "apim").await;
    assert!(found.values().all(|envelope| envelope.key_version == 1));
    Api::<Job>::namespaced(cluster.client.clone(), &cluster.namespace)
        .delete("apim-reencrypt-v2-0", &Default::default())
        .await
        .expect("the squatter is removed");
    until_rotated(&cluster, "apim", 2).await;
    let found = envelopes(&cluster, "apim").await;
    assert!(found.values().all(|envelope| envelope.key_version == 2));
}

/// The progress ConfigMap's data replaced whole by `data`, as a namespace editor (or a
/// pod running as the key's `-reencrypt` ServiceAccount) can.
async fn overwrite_progress(cluster: &TestCluster, key: &str, data: &[(&str, &str)]) {
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let name = format!("{key}-reencryption");
    let mut config_map = config_maps.get(&name).await.expect("progress ConfigMap");
    config_map.data = Some(
        data.iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
    );
    config_maps
        .replace(&name, &PostParams::default(), &config_map)
        .await
        .expect("progress ConfigMap overwritten");
}

/// Writing counts no Job could have written into a rotation's progress ConfigMap (a
/// negative `failed` made the operator panic on every replica) is reported on the key
/// and never stops the operator; the rotation still finishes once its Job can run.
#[tokio::test]
async fn hostile_counts_in_the_progress_config_map_are_reported_and_never_stop_the_operator() {
    use keyward::crd::encryption_key::ReencryptionProgress;

    let cluster = support::cluster("rotation-hostile-progress").await;
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    // Jobs are placed on no node at all, so the rotation waits in Reencrypting, reading
    // the progress ConfigMap every few seconds, for as long as the test needs.
    let mut stalled = Operator::start(
        &support::control_plane().kubeconfig,
        &cluster.namespace,
        &["--job-node-selector", "keyward.io/nowhere=true"],
    );
    let spec = json!({"distribution": {"format": "Keyring"}});
    manifest::apply_keyward(&cluster, "EncryptionKey", "apim", spec.clone()).await;
    wait::until(&keys(&cluster), "apim", "the key is ready", |key| {
        wait::ready(key) == Some(("True".into(), "KeyDistributed".into()))
    })
    .await;
    let plaintexts = write_ciphertexts(&cluster, "apim", 3).await;
    bump(&cluster, "apim", &spec, 1).await;
    let reencrypting = wait::until(
        &keys(&cluster),
        "apim",
        "the rotation waits for its Job",
        |key| {
            key.status
                .as_ref()
                .and_then(|status| status.rotation.as_ref())
                .is_some_and(|rotation| rotation.phase == RotationPhase::Reencrypting)
        },
    )
    .await;
    let job_name = reencrypting
        .status
        .and_then(|status| status.rotation?.job_name)
        .expect("job name");
    wait::until(
        &Api::<ConfigMap>::namespaced(cluster.client.clone(), &cluster.namespace),
        "apim-reencryption",
        "the progress ConfigMap exists",
        |_| true,
    )
    .await;

    let located = format!("{}/forged/value", cluster.namespace);
    let failures = format!("../../etc/passwd\n{located}");
    let cases: [(&[(&str, &str)], ReencryptionProgress); 3] = [
        // What made clamp(0, -1) panic.
        (
            &[("targetVersion", "2"), ("done", "0"), ("failed", "-1")],
            ReencryptionProgress::default(),
        ),
        (
            &[
                ("total", "1"),
                ("done", "99999999999999999999"),
                ("failed", "3"),
                ("contended", "7"),
                ("failures", &failures),
            ],
            ReencryptionProgress {
                total: 3,
                done: 0,
                failed: 3,
                contended: 3,
                failures: vec![located.clone()],
            },
        ),
        (
            &[
                ("total", "-5"),
                ("done", "NaN"),
                ("failed", "-9223372036854775808"),
                ("contended", "-1"),
            ],
            ReencryptionProgress::default(),
        ),
    ];
    for (data, expected) in cases {
        overwrite_progress(&cluster, "apim", data).await;
        let reported = wait::until(
            &keys(&cluster),
            "apim",
            &format!("the key reports {data:?} as {expected:?}"),
            |key| {
                wait::ready(key) == Some(("False".into(), "ProgressInvalid".into()))
                    && key
                        .status
                        .as_ref()
                        .and_then(|status| status.rotation.as_ref())
                        .and_then(|rotation| rotation.progress.as_ref())
                        == Some(&expected)
            },
        )
        .await;
        let degraded = wait::condition(&reported, "Degraded");
        assert_eq!(degraded.map(|(status, _)| status), Some("True".to_owned()));
        assert!(stalled.is_running(), "the operator stopped on {data:?}");
    }
    until_event(&cluster, "apim", Some("Warning"), "ProgressInvalid").await;

    // The operator goes on serving the rest of the namespace.
    manifest::apply_keyward(&cluster, "OAuthClient", "bystander", json!({})).await;
    wait::until(
        &Api::<keyward::crd::OAuthClient>::namespaced(cluster.client.clone(), &cluster.namespace),
        "bystander",
        "the bystander client is ready",
        |client| wait::ready(client) == Some(("True".into(), "Issued".into())),
    )
    .await;
    assert!(stalled.is_running(), "the operator is still running");

    // Once its Job can run (an operator that places it on the job runner's node, the
    // stalled Job removed), the rotation finishes and every value decrypts.
    let (status, log) = stalled.terminate(Duration::from_secs(30));
    assert!(status.success(), "operator exits cleanly: {status}\n{log}");
    Api::<Job>::namespaced(cluster.client.clone(), &cluster.namespace)
        .delete(
            &job_name,
            &kube::api::DeleteParams {
                propagation_policy: Some(kube::api::PropagationPolicy::Background),
                ..Default::default()
            },
        )
        .await
        .expect("the stalled Job is removed");
    let _operator = operator_running_jobs(&cluster, &[]);
    until_rotated(&cluster, "apim", 2).await;
    let keyring = stored_keyring(&cluster, "apim").await;
    let found = envelopes(&cluster, "apim").await;
    for (name, plaintext) in &plaintexts {
        let envelope = &found[name];
        assert_eq!(envelope.key_version, 2, "{name}");
        let opened = envelope
            .open(&keyring, &context(&cluster.namespace, name))
            .expect("decrypts");
        assert_eq!(opened.expose(), plaintext.as_bytes());
    }
}

/// Removes the key label from Secret `name`, as anyone who may edit Secrets can.
async fn unlabel(cluster: &TestCluster, name: &str) {
    let patch = json!({"metadata": {"labels": {"keyward.io/encryption-key": null}}});
    secrets(cluster)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("label removed");
}

#[tokio::test]
async fn an_encrypted_verifier_that_lost_its_keys_label_is_relabelled_and_rotated_with_the_rest() {
    let cluster = support::cluster("unlabelled-verifier").await;
    let _operator = operator_running_jobs(&cluster, &[]);
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    // Nothing retired is kept: a record left under version 1 would no longer decrypt.
    let spec = json!({"rotation": {"keepRetiredVersions": 0}});
    manifest::apply_keyward(&cluster, "EncryptionKey", "apim", spec.clone()).await;
    wait::until(&keys(&cluster), "apim", "the key is distributed", |key| {
        wait::ready(key) == Some(("True".into(), "KeyDistributed".into()))
    })
    .await;
    let encrypted = json!({"secretType": "Encrypted", "encryptionKeyRef": {"name": "apim"}});
    manifest::apply_keyward(&cluster, "OAuthClient", "portal", encrypted).await;
    let clients: Api<keyward::crd::OAuthClient> =
        Api::namespaced(cluster.client.clone(), &cluster.namespace);
    wait::until(&clients, "portal", "the client is issued", |client| {
        wait::ready(client) == Some(("True".into(), "Issued".into()))
    })
    .await;
    let presented = delivered_secret(&cluster, "portal-credentials").await;
    let labelled = |secret: &Secret| {
        secret
            .labels()
            .get(keyward::store::KEY_LABEL)
            .map(String::as_str)
            == Some("apim")
    };

    unlabel(&cluster, "portal-verifier").await;
    wait::until(
        &secrets(&cluster),
        "portal-verifier",
        "the verifier is labelled for its key again",
        labelled,
    )
    .await;

    // Unlabelled again as the rotation starts: it is re-encrypted with the rest all the
    // same, and version 1 goes only once nothing is under it.
    unlabel(&cluster, "portal-verifier").await;
    bump(&cluster, "apim", &spec, 1).await;
    wait::until_within(
        &keys(&cluster),
        "apim",
        "the rotation succeeds",
        ROTATION,
        |key| {
            key.status
                .as_ref()
                .and_then(|status| status.rotation.as_ref())
                .is_some_and(|rotation| rotation.phase == RotationPhase::Succeeded)
        },
    )
    .await;
    let verifier = secrets(&cluster)
        .get("portal-verifier")
        .await
        .expect("verifier");
    assert!(labelled(&verifier), "the verifier keeps its key's label");
    let sealed = verifier
        .data
        .as_ref()
        .and_then(|data| data.get("encryptedClientSecret"))
        .expect("an encrypted record");
    assert!(
        sealed.0.starts_with(b"keyward:v1:apim:2:"),
        "the record is under version 2"
    );
    assert_eq!(
        keyward_verify(&cluster, "portal-verifier", &presented),
        0,
        "the client's secret still verifies"
    );
}

/// Secrets anyone who may create Secrets can add to a namespace with the key's label:
/// near the API's 1 MiB limit and holding nothing keyward wrote, as Helm releases under
/// a broad `reencryption.selector` do.
const LARGE_SECRETS: usize = 600;
/// Bytes of data in each of them.
const LARGE_SECRET_BYTES: usize = 700 * 1024;
/// The operator's peak memory budget while it verifies them: well under the chart's
/// limit, and flat in their number and size.
const VERIFYING_MEMORY: u64 = 96 * 1024 * 1024;

#[tokio::test]
async fn verifying_a_namespace_of_600_large_labelled_secrets_keeps_the_operator_under_96_mib() {
    let cluster = support::cluster("scan-memory").await;
    let mut operator = operator_running_jobs(&cluster, &[]);
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    deploy(&cluster, "apim", 1).await;
    let spec = json!({
        "targets": [{"kind": "Deployment", "name": "apim"}],
        "distribution": {"format": "Keyring"},
    });
    manifest::apply_keyward(&cluster, "EncryptionKey", "apim", spec.clone()).await;
    wait::until(&keys(&cluster), "apim", "the key is distributed", |key| {
        wait::ready(key) == Some(("True".into(), "KeyDistributed".into()))
    })
    .await;
    let plaintexts = write_ciphertexts(&cluster, "apim", 20).await;
    let started = std::time::Instant::now();
    let large: Vec<Secret> = (0..LARGE_SECRETS)
        .map(|index| {
            // Distinct bytes per Secret, so no layer can share one copy among them.
            let filler = vec![b'a' + (index % 26) as u8; LARGE_SECRET_BYTES];
            let data = BTreeMap::from([("release".to_owned(), ByteString(filler))]);
            ciphertext::labelled_secret("apim", &format!("large-{index:04}"), data)
        })
        .collect();
    ciphertext::create_all(&secrets(&cluster), large, 16).await;
    eprintln!(
        "created {LARGE_SECRETS} Secrets of {} KiB in {:.1?}",
        LARGE_SECRET_BYTES / 1024,
        started.elapsed()
    );

    let started = std::time::Instant::now();
    bump(&cluster, "apim", &spec, 1).await;
    until_rotated(&cluster, "apim", 2).await;
    eprintln!("rotated in {:.1?}", started.elapsed());

    // It verified (twice: before and after retiring) and is still the same process.
    assert!(
        operator.is_running(),
        "the operator survived the verification"
    );
    let peak = operator
        .peak_memory()
        .expect("the operator's memory is readable");
    eprintln!("operator peak RSS: {:.1} MiB", peak as f64 / 1048576.0);
    assert!(
        peak < VERIFYING_MEMORY,
        "the operator peaked at {:.1} MiB verifying {LARGE_SECRETS} Secrets of {} KiB",
        peak as f64 / 1048576.0,
        LARGE_SECRET_BYTES / 1024
    );
    // The scan still saw what was there: every real ciphertext moved on, and nothing
    // was counted in the large Secrets.
    for name in plaintexts.keys() {
        let secret = secrets(&cluster)
            .get(name)
            .await
            .expect("ciphertext Secret");
        let value = &secret.data.expect("data")[FIELD].0;
        let text = std::str::from_utf8(value).expect("UTF-8");
        let envelope = Envelope::parse(text.trim()).expect("an envelope");
        assert_eq!(envelope.key_version, 2, "{name} is under version 2");
    }
}
