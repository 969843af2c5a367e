//! EncryptionKey against the real control plane, with kube-controller-manager,
//! kube-scheduler and kwok's simulated nodes running pods: the key reaches every pod of
//! a Deployment exactly once, user keys are used verbatim or refused with a reason, a
//! wrapped keyring holds no raw key, and a lost keyring is never silently replaced.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use keyward::crypto::{KeyMaterial, Keyring};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::support::api::{deployments, secrets};
use crate::support::encryption_key::{apply_key, key_until, user_secret};
use crate::support::operator::operator;
use crate::support::workload::{deploy, deployment_manifest};
use crate::support::{self, manifest, wait};

#[tokio::test]
async fn a_generated_key_reaches_every_pod_of_a_deployment_in_one_rollout() {
    let cluster = support::cluster("key-distribution").await;
    let operator = operator(&cluster);
    let before = deploy(&cluster, "apim", 3).await;
    apply_key(
        &cluster,
        "apim",
        json!({"targets": [{"kind": "Deployment", "name": "apim"}]}),
    )
    .await;
    let key = key_until(&cluster, "apim", "True", "KeyDistributed").await;
    let status = key.status.as_ref().expect("status");
    let distribution = status.distribution.as_ref().expect("distribution status");
    assert_eq!((distribution.pods_in_sync, distribution.pods_total), (3, 3));
    assert_eq!(status.primary_version, Some(1));
    assert_eq!(status.keyring_secret_name.as_deref(), Some("apim-keyring"));
    let hash = distribution.keyring_hash.clone().expect("keyring hash");

    // Every ready pod carries the keyring hash and mounts the key.
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let pods = pods
        .list(&ListParams::default().labels("app=apim"))
        .await
        .expect("pods");
    let running: Vec<&Pod> = pods
        .items
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(running.len(), 3);
    for pod in running {
        assert_eq!(
            pod.annotations().get("keyward.io/keyring-hash.apim"),
            Some(&hash),
            "pod {}",
            pod.name_any()
        );
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.volumes.clone())
            .unwrap_or_default();
        assert!(volumes.iter().any(|volume| {
            volume
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref())
                == Some("apim-distribution")
        }));
    }

    // The keyring holds the fingerprinted key; the WSO2 fragment is valid TOML with it.
    let keyring_json = secrets(&cluster)
        .get("apim-keyring")
        .await
        .expect("keyring")
        .data
        .expect("data")["keyring.json"]
        .0
        .clone();
    let keyring = Keyring::from_json(&keyring_json, None).expect("keyring parses");
    let primary = keyring.primary().expect("primary");
    assert_eq!(
        status.versions[0].fingerprint,
        primary.material.fingerprint()
    );
    let toml_text = secrets(&cluster)
        .get("apim-distribution")
        .await
        .expect("distribution")
        .data
        .expect("data")["deployment.toml"]
        .0
        .clone();
    let parsed: toml::Table =
        toml::from_str(std::str::from_utf8(&toml_text).expect("UTF-8")).expect("valid TOML");
    let rendered_key = parsed["encryption"]["key"]
        .as_str()
        .expect("[encryption] key is a string");
    assert_eq!(rendered_key.len(), 64);
    assert_eq!(rendered_key, hex::encode(primary.material.expose()));
    // WSO2 always finds an old_key (the key itself while there is no other), so it never
    // falls back to a key of its own, and writes key ids.
    assert_eq!(parsed["encryption"]["old_key"].as_str(), Some(rendered_key));
    assert_eq!(parsed["encryption"]["enable_key_id"].as_bool(), Some(true));

    // One rollout only, and a second reconcile (re-apply, then a barrier) changes nothing.
    let after = deployments(&cluster).get("apim").await.expect("deployment");
    assert_eq!(
        after.metadata.generation,
        before.metadata.generation.map(|generation| generation + 1),
        "exactly one template change"
    );
    for _ in 0..3 {
        apply_key(
            &cluster,
            "apim",
            json!({"targets": [{"kind": "Deployment", "name": "apim"}]}),
        )
        .await;
    }
    apply_key(&cluster, "barrier", json!({})).await;
    key_until(&cluster, "barrier", "True", "KeyDistributed").await;
    let again = deployments(&cluster).get("apim").await.expect("deployment");
    assert_eq!(
        again.metadata.generation, after.metadata.generation,
        "no second rollout"
    );
    let replica_sets: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    assert_eq!(
        replica_sets
            .list(&ListParams::default().labels("app=apim"))
            .await
            .expect("replica sets")
            .items
            .len(),
        2,
        "one original and one rolled ReplicaSet"
    );

    // GitOps re-applies its own Deployment manifest: keyward's projection stays, no rollout.
    manifest::apply(
        &cluster.client,
        &cluster.namespace,
        "argocd",
        &deployment_manifest("apim", 3),
    )
    .await
    .expect("re-applied");
    apply_key(&cluster, "barrier-2", json!({})).await;
    key_until(&cluster, "barrier-2", "True", "KeyDistributed").await;
    let reapplied = deployments(&cluster).get("apim").await.expect("deployment");
    assert_eq!(
        reapplied.metadata.generation, after.metadata.generation,
        "the GitOps re-apply changed nothing"
    );
    let template = reapplied.spec.expect("spec").template;
    assert_eq!(
        template
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|a| a.get("keyward.io/keyring-hash.apim").cloned()),
        Some(hash)
    );

    let log = operator.log();
    assert!(
        !log.contains(&hex::encode(primary.material.expose()))
            && !log.contains(&STANDARD.encode(primary.material.expose())),
        "key material in the log"
    );
}

#[tokio::test]
async fn a_user_supplied_key_is_used_verbatim_and_a_malformed_or_missing_one_is_refused() {
    let cluster = support::cluster("key-source").await;
    let _operator = operator(&cluster);
    let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    user_secret(
        &cluster,
        "apim-key",
        "key",
        format!("{hex_key}\n").as_bytes(),
    )
    .await;
    apply_key(
        &cluster,
        "supplied",
        json!({"source": {"secretRef": {"name": "apim-key", "key": "key"}}}),
    )
    .await;
    let key = key_until(&cluster, "supplied", "True", "KeyDistributed").await;
    let expected = KeyMaterial::parse(hex_key.as_bytes())
        .expect("hex key")
        .fingerprint();
    assert_eq!(
        key.status.as_ref().expect("status").versions[0].fingerprint,
        expected,
        "the supplied key is used verbatim"
    );

    user_secret(&cluster, "short-key", "key", b"0011223344").await;
    apply_key(
        &cluster,
        "malformed",
        json!({"source": {"secretRef": {"name": "short-key", "key": "key"}}}),
    )
    .await;
    let refused = key_until(&cluster, "malformed", "False", "SourceKeyInvalid").await;
    let message = &refused
        .status
        .as_ref()
        .expect("status")
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready")
        .message;
    assert!(
        message.contains("short-key") && message.contains("32"),
        "the reason says what is wrong: {message}"
    );
    assert!(
        !message.contains("0011223344"),
        "the message never echoes key material"
    );
    assert_eq!(
        wait::condition(&refused, "Degraded"),
        Some(("True".to_owned(), "SourceKeyInvalid".to_owned())),
        "a Secret holding no usable key needs a person"
    );

    apply_key(
        &cluster,
        "missing",
        json!({"source": {"secretRef": {"name": "not-there", "key": "key"}}}),
    )
    .await;
    let waiting = key_until(&cluster, "missing", "False", "SourceSecretMissing").await;
    assert_eq!(
        wait::condition(&waiting, "Degraded").map(|(status, _)| status),
        Some("False".to_owned()),
        "a Secret that may still come is waited for"
    );
    for name in ["malformed-keyring", "missing-keyring"] {
        assert!(
            secrets(&cluster)
                .get_opt(name)
                .await
                .expect("get")
                .is_none(),
            "no key is invented for {name}"
        );
    }
}

#[tokio::test]
async fn a_wrapped_keyring_holds_no_raw_key_and_a_lost_keyring_is_never_replaced() {
    let cluster = support::cluster("key-wrapping").await;
    let _operator = operator(&cluster);
    let raw = [0x5au8; 32];
    user_secret(&cluster, "apim-key", "key", hex::encode(raw).as_bytes()).await;
    user_secret(
        &cluster,
        "apim-kek",
        "kek",
        STANDARD.encode([0x17u8; 32]).as_bytes(),
    )
    .await;
    apply_key(
        &cluster,
        "wrapped",
        json!({
            "source": {"secretRef": {"name": "apim-key", "key": "key"}},
            "keyEncryptionKeyRef": {"name": "apim-kek", "key": "kek"},
        }),
    )
    .await;
    key_until(&cluster, "wrapped", "True", "KeyDistributed").await;
    let stored = secrets(&cluster)
        .get("wrapped-keyring")
        .await
        .expect("keyring")
        .data
        .expect("data")["keyring.json"]
        .0
        .clone();
    let stored_text = String::from_utf8(stored.clone()).expect("UTF-8");
    for encoding in [
        hex::encode(raw),
        hex::encode(raw).to_uppercase(),
        STANDARD.encode(raw),
        URL_SAFE_NO_PAD.encode(raw),
    ] {
        assert!(
            !stored_text.contains(&encoding),
            "the stored keyring contains the raw key as {encoding}"
        );
    }
    assert!(
        !stored.windows(raw.len()).any(|window| window == raw),
        "raw key bytes in the stored keyring"
    );
    let kek = KeyMaterial::parse(STANDARD.encode([0x17u8; 32]).as_bytes()).expect("kek");
    let keyring = Keyring::from_json(&stored, Some(&kek)).expect("unwraps with the KEK");
    assert_eq!(keyring.primary().expect("primary").material.expose(), &raw);

    // The keyring Secret is deleted: keyward reports it and never generates a new one.
    let backup = secrets(&cluster)
        .get("wrapped-keyring")
        .await
        .expect("keyring");
    secrets(&cluster)
        .delete("wrapped-keyring", &DeleteParams::default())
        .await
        .expect("keyring deleted");
    let degraded = key_until(&cluster, "wrapped", "False", "KeyringMissing").await;
    let conditions = &degraded.status.as_ref().expect("status").conditions;
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "KeyringMissing")
    );
    assert!(
        secrets(&cluster)
            .get_opt("wrapped-keyring")
            .await
            .expect("get")
            .is_none(),
        "no replacement keyring"
    );

    // Restoring the backup, as the README describes, brings the same key back.
    let restored = Secret {
        metadata: ObjectMeta {
            name: backup.metadata.name.clone(),
            labels: backup.metadata.labels.clone(),
            owner_references: backup.metadata.owner_references.clone(),
            ..ObjectMeta::default()
        },
        data: backup.data.clone(),
        type_: backup.type_.clone(),
        ..Secret::default()
    };
    secrets(&cluster)
        .create(&PostParams::default(), &restored)
        .await
        .expect("backup restored");
    let recovered = key_until(&cluster, "wrapped", "True", "KeyDistributed").await;
    let fingerprint = &recovered.status.as_ref().expect("status").versions[0].fingerprint;
    let expected = KeyMaterial::parse(hex::encode(raw).as_bytes())
        .expect("raw key")
        .fingerprint();
    assert_eq!(
        fingerprint, &expected,
        "the restored keyring is the original key"
    );
    assert!(degraded.meta().uid.is_some());
}

#[tokio::test]
async fn an_encrypted_oauth_client_waits_for_its_key_then_verifies_and_its_ciphertext_cannot_move()
{
    use crate::support::oauth_client::{delivered_secret, keyward_verify, secrets_holding};
    let cluster = support::cluster("key-encrypted-client").await;
    let _operator = operator(&cluster);
    let client = json!({"apiVersion": "keyward.io/v1alpha1", "kind": "OAuthClient", "metadata": {"name": "introspection"},
        "spec": {"secretType": "Encrypted", "encryptionKeyRef": {"name": "apim"}}});
    manifest::apply(&cluster.client, &cluster.namespace, "gitops", &client)
        .await
        .expect("OAuthClient applies");
    let clients: Api<keyward::crd::OAuthClient> =
        Api::namespaced(cluster.client.clone(), &cluster.namespace);
    wait::until(
        &clients,
        "introspection",
        "the client waits for its EncryptionKey",
        |client| wait::ready_reason(client).as_deref() == Some("EncryptionKeyNotReady"),
    )
    .await;
    assert!(
        secrets(&cluster)
            .get_opt("introspection-credentials")
            .await
            .expect("get")
            .is_none(),
        "nothing issued without the key"
    );

    apply_key(&cluster, "apim", json!({})).await;
    wait::until(
        &clients,
        "introspection",
        "the client is issued once the key is ready",
        |client| wait::ready_reason(client).as_deref() == Some("Issued"),
    )
    .await;
    let verifier = secrets(&cluster)
        .get("introspection-verifier")
        .await
        .expect("verifier");
    assert_eq!(
        verifier
            .labels()
            .get("keyward.io/encryption-key")
            .map(String::as_str),
        Some("apim")
    );
    let data = verifier.data.clone().expect("data");
    let envelope = String::from_utf8(data["encryptedClientSecret"].0.clone()).expect("UTF-8");
    assert!(envelope.starts_with("keyward:v1:apim:1:"), "{envelope}");
    assert!(!data.contains_key("hash") && !data.contains_key("clientSecret"));

    let plaintext = delivered_secret(&cluster, "introspection-credentials").await;
    assert_eq!(
        secrets_holding(&cluster, &plaintext).await,
        vec![format!("{}/introspection-credentials", cluster.namespace)]
    );
    assert_eq!(
        keyward_verify(&cluster, "introspection-verifier", &plaintext),
        0,
        "decrypts with the cluster keyring and verifies"
    );
    assert_eq!(
        keyward_verify(&cluster, "introspection-verifier", "not-the-secret"),
        1
    );

    // The same ciphertext copied into another Secret does not decrypt there.
    let copy = Secret {
        metadata: ObjectMeta {
            name: Some("copied-verifier".into()),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..Secret::default()
    };
    secrets(&cluster)
        .create(&PostParams::default(), &copy)
        .await
        .expect("copy created");
    assert_eq!(
        keyward_verify(&cluster, "copied-verifier", &plaintext),
        2,
        "a moved ciphertext fails to decrypt"
    );

    // The cipher tool with the cluster's keyring, by EncryptionKey name.
    let here = format!("{}/app-config/password", cluster.namespace);
    let envelope = support::keyward(
        &["encrypt", "--key", "apim", "--context", &here],
        b"db-password",
    );
    assert!(
        envelope.status.success(),
        "{}",
        String::from_utf8_lossy(&envelope.stderr)
    );
    let decrypted = support::keyward(
        &["decrypt", "--key", "apim", "--context", &here],
        &envelope.stdout,
    );
    assert_eq!(decrypted.stdout, b"db-password");
    let elsewhere = format!("{}/other-config/password", cluster.namespace);
    let moved = support::keyward(
        &["decrypt", "--key", "apim", "--context", &elsewhere],
        &envelope.stdout,
    );
    assert_eq!(moved.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&moved.stderr).contains("belongs to another Secret or field"));
}

#[tokio::test]
async fn a_selector_target_reaches_a_stateful_set_through_an_environment_variable() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let cluster = support::cluster("key-statefulset").await;
    let _operator = operator(&cluster);
    let stateful_set = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "gateway", "labels": {"tier": "api"}},
        "spec": {
            "replicas": 2, "serviceName": "gateway",
            "selector": {"matchLabels": {"app": "gateway"}},
            "template": {
                "metadata": {"labels": {"app": "gateway"}},
                "spec": {"containers": [{"name": "gateway", "image": "example/gateway:1"}, {"name": "metrics", "image": "example/metrics:1"}]},
            },
        },
    });
    manifest::apply(&cluster.client, &cluster.namespace, "argocd", &stateful_set)
        .await
        .expect("StatefulSet applies");
    apply_key(&cluster, "gateway-key", json!({
        "targets": [{"kind": "StatefulSet", "selector": {"matchLabels": {"tier": "api"}}}],
        "distribution": {"projection": "Env", "format": "Hex", "envName": "GATEWAY_KEY", "containers": ["gateway"]},
    }))
    .await;
    let key = key_until(&cluster, "gateway-key", "True", "KeyDistributed").await;
    let distribution = key
        .status
        .as_ref()
        .and_then(|status| status.distribution.clone())
        .expect("distribution");
    assert_eq!((distribution.pods_in_sync, distribution.pods_total), (2, 2));
    let stateful_sets: Api<StatefulSet> =
        Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let template = stateful_sets
        .get("gateway")
        .await
        .expect("StatefulSet")
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec");
    let env_of = |name: &str| {
        template
            .containers
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.env.clone())
            .unwrap_or_default()
    };
    let gateway_env = env_of("gateway");
    let key_ref = gateway_env
        .iter()
        .find(|env| env.name == "GATEWAY_KEY")
        .and_then(|env| env.value_from.as_ref())
        .and_then(|from| from.secret_key_ref.as_ref())
        .expect("GATEWAY_KEY from a Secret");
    assert_eq!(
        (key_ref.name.as_str(), key_ref.key.as_str()),
        ("gateway-key-distribution", "key.hex")
    );
    assert!(
        env_of("metrics").is_empty(),
        "only the named container receives the key"
    );
    let rendered = secrets(&cluster)
        .get("gateway-key-distribution")
        .await
        .expect("distribution Secret")
        .data
        .expect("data")["key.hex"]
        .0
        .clone();
    assert_eq!(rendered.len(), 64);
    assert!(rendered.iter().all(u8::is_ascii_hexdigit));
}
