//! The metrics a scraper reads after a real scenario: clients issued and rotated, a key
//! distributed and rotated. The counters and per-version gauges say what happened, and
//! no metric line carries a secret, a plaintext or a client id.

use kube::api::Api;
use serde_json::json;

use crate::support::ciphertext::write_ciphertexts;
use crate::support::encryption_key::{bump, stored_keyring, until_rotated};
use crate::support::oauth_client::{delivered_secret, until_client_ready};
use crate::support::operator::operator_running_jobs;
use crate::support::workload::deploy;
use crate::support::{self, http, jobs, manifest, wait};

#[tokio::test]
async fn metrics_count_a_scenario_and_never_carry_a_secret() {
    let cluster = support::cluster("metrics").await;
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    let operator = operator_running_jobs(&cluster, &[]);
    let namespace = cluster.namespace.clone();

    deploy(&cluster, "apim", 2).await;
    let spec = json!({
        "targets": [{"kind": "Deployment", "name": "apim"}],
        "distribution": {"format": "Keyring"},
        "rotation": {"period": "720h"},
        "reencryption": {"writesPerSecond": 200},
    });
    manifest::apply_keyward(&cluster, "EncryptionKey", "apim", spec.clone()).await;
    let keys: Api<keyward::crd::EncryptionKey> =
        Api::namespaced(cluster.client.clone(), &namespace);
    wait::until(&keys, "apim", "the key is distributed", |key| {
        wait::ready(key) == Some(("True".into(), "KeyDistributed".into()))
    })
    .await;
    let plaintexts = write_ciphertexts(&cluster, "apim", 30).await;

    let specs = [
        ("portal", json!({})),
        ("billing", json!({})),
        (
            "partner",
            json!({"secretType": "Encrypted", "encryptionKeyRef": {"name": "apim"}}),
        ),
    ];
    // Everything secret this scenario creates: no metric line may contain any of it.
    let mut secrets: Vec<String> = plaintexts.into_values().collect();
    for (name, spec) in &specs {
        manifest::apply_keyward(&cluster, "OAuthClient", name, spec.clone()).await;
        let client = until_client_ready(&cluster, name, "Issued", None).await;
        secrets.push(delivered_secret(&cluster, &format!("{name}-credentials")).await);
        secrets.extend(client.status.and_then(|status| status.client_id));
    }
    manifest::apply_keyward(
        &cluster,
        "OAuthClient",
        "portal",
        json!({"rotation": {"generation": 1, "gracePeriod": "1h"}}),
    )
    .await;
    until_client_ready(&cluster, "portal", "Issued", Some(2)).await;
    secrets.push(delivered_secret(&cluster, "portal-credentials").await);
    bump(&cluster, "apim", &spec, 1).await;
    until_rotated(&cluster, "apim", 2).await;
    for (name, _) in &specs {
        until_client_ready(&cluster, name, "Issued", None).await;
    }
    let keyring = stored_keyring(&cluster, "apim").await;
    secrets.extend(
        keyring
            .versions
            .iter()
            .map(|version| hex::encode(version.material.expose())),
    );

    let (code, page) =
        http::get(&format!("{}/metrics", operator.metrics_url())).expect("metrics answer");
    assert_eq!(code, 200);
    let value = |name: &str, labels: &str| {
        http::sample(&page, name, labels)
            .unwrap_or_else(|| panic!("{name}{{{labels}}} is missing from:\n{page}"))
    };
    assert_eq!(value("keyward_leader", ""), 1.0);
    for controller in ["OAuthClient", "EncryptionKey"] {
        let labels = format!("controller=\"{controller}\"");
        assert!(value("keyward_reconciles_total", &labels) > 0.0);
        assert!(value("keyward_reconcile_duration_seconds_count", &labels) > 0.0);
    }
    assert!(value("process_resident_memory_bytes", "") > 1_000_000.0);
    assert!(value("process_open_fds", "") > 0.0);
    let in_namespace = |labels: &str| format!("namespace=\"{namespace}\",{labels}");
    assert_eq!(
        value(
            "keyward_client_secrets_written_total",
            &in_namespace("reason=\"Issued\"")
        ),
        3.0
    );
    assert_eq!(
        value(
            "keyward_client_secrets_written_total",
            &in_namespace("reason=\"Rotated\"")
        ),
        1.0
    );
    let key = format!("namespace=\"{namespace}\",encryption_key=\"apim\"");
    assert_eq!(
        value(
            "keyward_encryption_key_rotations_total",
            &format!("{key},outcome=\"succeeded\",reason=\"\"")
        ),
        1.0
    );
    assert_eq!(
        value(
            "keyward_encryption_keys",
            &in_namespace("ready=\"True\",reason=\"KeyDistributed\"")
        ),
        1.0
    );
    assert_eq!(
        value(
            "keyward_encryption_key_rotation_phase",
            &format!("{key},phase=\"Succeeded\"")
        ),
        1.0
    );
    // Nothing is in flight: no phase runs, no attempts or progress are counted.
    for name in [
        "keyward_encryption_key_rotation_phase_seconds",
        "keyward_encryption_key_rotation_failed_attempts",
        "keyward_encryption_key_rotation_values",
    ] {
        assert!(
            !page.lines().any(|line| line.starts_with(name)),
            "{name} is exported with no rotation in flight:\n{page}"
        );
    }
    // portal's previous secret verifies for the hour after its rotation.
    let namespace_only = format!("namespace=\"{namespace}\"");
    assert_eq!(
        value("keyward_oauth_clients_in_grace", &namespace_only),
        1.0
    );
    let grace_left = value("keyward_oauth_client_grace_seconds_left", &namespace_only);
    assert!(
        grace_left > 3000.0 && grace_left <= 3600.0,
        "portal's grace period ends within the hour: {grace_left}"
    );
    // The 30 Secrets written above, and the encrypted client's verifier record.
    assert_eq!(value("keyward_reencrypted_values_total", ""), 31.0);
    assert_eq!(
        value(
            "keyward_oauth_clients",
            &in_namespace("ready=\"True\",reason=\"Issued\"")
        ),
        3.0
    );
    assert_eq!(value("keyward_encryption_key_pods_in_sync", &key), 2.0);
    assert_eq!(value("keyward_encryption_key_pods", &key), 2.0);
    let next = value("keyward_encryption_key_next_rotation_seconds", &key);
    assert!(
        next > 719.0 * 3600.0 && next <= 720.0 * 3600.0,
        "the next rotation is a period after version 2 was created: {next}"
    );
    let version =
        |version: i64, state: &str| format!("{key},version=\"{version}\",state=\"{state}\"");
    assert_eq!(
        value(
            "keyward_encryption_key_version_ciphertexts",
            &version(2, "Primary")
        ),
        31.0
    );
    assert_eq!(
        value(
            "keyward_encryption_key_version_ciphertexts",
            &version(1, "Retired")
        ),
        0.0
    );
    assert!(
        value(
            "keyward_encryption_key_version_age_seconds",
            &version(1, "Retired")
        ) > 0.0
    );
    assert!(
        value(
            "keyward_encryption_key_version_age_seconds",
            &version(2, "Primary")
        ) >= 0.0
    );

    for line in page.lines() {
        for secret in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "a metric line carries secret material: {line}"
            );
        }
    }
}
