//! OAuthClient against the real control plane: credentials issued and verified, the
//! plaintext only in the delivery Secret, rotation with a grace period, every algorithm,
//! the policies, import, TTL, garbage collection — and no plaintext in logs or events.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, Secret};
use k8s_openapi::jiff::Timestamp;
use keyward::crypto::{Verdict, VerifierRecord};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use serde_json::json;

use crate::support::api::{clients, secrets};
use crate::support::oauth_client::{
    apply_client, delivered_secret, keyward_verify, secrets_holding, until_client_ready,
};
use crate::support::operator::{operator, operator_with_args};
use crate::support::{self, Operator, TestCluster, wait};

async fn verifier_record(cluster: &TestCluster, name: &str) -> VerifierRecord {
    let secret = secrets(cluster)
        .get(name)
        .await
        .expect("verifier Secret exists");
    VerifierRecord::from_data(&secret.data.expect("verifier data")).expect("verifier record parses")
}

/// Asserts that no plaintext appears in the operator's log or in any event of the
/// namespace (a client's first secret has none; rotations, re-issues and refusals do).
async fn assert_never_logged(cluster: &TestCluster, operator: &Operator, plaintexts: &[String]) {
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let events = events
        .list(&ListParams::default())
        .await
        .expect("events list");
    let event_text: String = events
        .iter()
        .map(|event| {
            format!(
                "{} {} {}\n",
                event.reason.as_deref().unwrap_or_default(),
                event.message.as_deref().unwrap_or_default(),
                event.action.as_deref().unwrap_or_default()
            )
        })
        .collect();
    let log = operator.log();
    assert!(
        log.contains("OAuthClient"),
        "the operator logged its work at debug level:\n{log}"
    );
    for plaintext in plaintexts {
        assert!(
            !log.contains(plaintext.as_str()),
            "plaintext secret in the operator log"
        );
        assert!(
            !event_text.contains(plaintext.as_str()),
            "plaintext secret in an event"
        );
    }
}

#[tokio::test]
async fn an_issued_secret_verifies_lives_only_in_the_delivery_secret_and_reapplying_changes_nothing()
 {
    let cluster = support::cluster("oauth-issue").await;
    let operator = operator(&cluster);
    apply_client(&cluster, "portal", json!({})).await;
    let client = until_client_ready(&cluster, "portal", "Issued", Some(1)).await;
    let status = client.status.clone().expect("status");
    assert_eq!(
        status.verifier_secret_name.as_deref(),
        Some("portal-verifier")
    );
    assert_eq!(
        status.delivery_secret_name.as_deref(),
        Some("portal-credentials")
    );
    assert_eq!(status.hash_algorithm.as_deref(), Some("SHA-256"));
    let client_id = status.client_id.clone().expect("client id");
    assert!(
        client_id.len() >= 22,
        "generated client id has at least 128 bits"
    );

    let plaintext = delivered_secret(&cluster, "portal-credentials").await;
    assert_eq!(
        plaintext.len(),
        43,
        "32 bytes of entropy as unpadded base64url"
    );
    assert_eq!(
        keyward_verify(&cluster, "portal-verifier", &plaintext),
        0,
        "keyward verify accepts the delivered secret"
    );
    for wrong in [
        "",
        "x",
        &plaintext[..42],
        &format!("{plaintext}x"),
        &plaintext.to_uppercase(),
    ] {
        if !wrong.is_empty() {
            assert_eq!(
                keyward_verify(&cluster, "portal-verifier", wrong),
                1,
                "keyward verify rejects {wrong:?}"
            );
        }
    }
    let holders = secrets_holding(&cluster, &plaintext).await;
    assert_eq!(
        holders,
        vec![format!("{}/portal-credentials", cluster.namespace)],
        "only the delivery Secret holds the plaintext"
    );

    // GitOps re-applies the same manifest: nothing changes, in status or in Secrets.
    let versions = || async {
        let client = clients(&cluster)
            .get("portal")
            .await
            .expect("client")
            .resource_version();
        let verifier = secrets(&cluster)
            .get("portal-verifier")
            .await
            .expect("verifier")
            .resource_version();
        let delivery = secrets(&cluster)
            .get("portal-credentials")
            .await
            .expect("delivery")
            .resource_version();
        (client, verifier, delivery)
    };
    let before = versions().await;
    for _ in 0..5 {
        apply_client(&cluster, "portal", json!({})).await;
    }
    // Barrier: once a later object is issued, the operator has handled every earlier event.
    apply_client(&cluster, "barrier", json!({})).await;
    until_client_ready(&cluster, "barrier", "Issued", Some(1)).await;
    assert_eq!(
        versions().await,
        before,
        "re-applying an unchanged manifest changed an object"
    );
    assert_eq!(
        delivered_secret(&cluster, "portal-credentials").await,
        plaintext,
        "the secret was not regenerated"
    );

    let barrier_plaintext = delivered_secret(&cluster, "barrier-credentials").await;
    assert_never_logged(&cluster, &operator, &[plaintext, barrier_plaintext]).await;

    // Deleting the OAuthClient deletes both of its Secrets (owner references, collected by
    // kube-controller-manager).
    clients(&cluster)
        .delete("portal", &DeleteParams::default())
        .await
        .expect("client deleted");
    wait::until_gone(
        &secrets(&cluster),
        "portal-verifier",
        "the verifier Secret is collected",
    )
    .await;
    wait::until_gone(
        &secrets(&cluster),
        "portal-credentials",
        "the delivery Secret is collected",
    )
    .await;
}

#[tokio::test]
async fn rotating_with_a_grace_period_verifies_both_secrets_until_the_previous_expires() {
    let cluster = support::cluster("oauth-rotation").await;
    let operator = operator(&cluster);
    apply_client(
        &cluster,
        "portal",
        json!({"rotation": {"generation": 0, "gracePeriod": "8s"}}),
    )
    .await;
    until_client_ready(&cluster, "portal", "Issued", Some(1)).await;
    let first = delivered_secret(&cluster, "portal-credentials").await;

    apply_client(
        &cluster,
        "portal",
        json!({"rotation": {"generation": 1, "gracePeriod": "8s"}}),
    )
    .await;
    let rotated = until_client_ready(&cluster, "portal", "Issued", Some(2)).await;
    let second = delivered_secret(&cluster, "portal-credentials").await;
    assert_ne!(first, second, "rotation issued a new secret");
    let expires_at = rotated
        .status
        .as_ref()
        .and_then(|status| status.previous_secret_expires_at.clone())
        .expect("previous expiry in status")
        .0;

    let record = verifier_record(&cluster, "portal-verifier").await;
    assert_eq!(record.secret_version, 2);
    let during_grace = Timestamp::now();
    assert!(during_grace < expires_at, "still inside the grace period");
    assert_eq!(
        record.verify(second.as_bytes(), during_grace),
        Verdict::Current
    );
    assert_eq!(
        record.verify(first.as_bytes(), during_grace),
        Verdict::Previous
    );
    assert_eq!(
        keyward_verify(&cluster, "portal-verifier", &first),
        0,
        "old secret accepted during grace"
    );

    // After the grace period the operator drops the previous hash by itself.
    wait::until(
        &secrets(&cluster),
        "portal-verifier",
        "the previous hash is removed",
        |secret| {
            secret
                .data
                .as_ref()
                .is_some_and(|data| !data.contains_key("previousHash"))
        },
    )
    .await;
    let record = verifier_record(&cluster, "portal-verifier").await;
    assert!(record.previous.is_none());
    assert_eq!(
        record.verify(first.as_bytes(), Timestamp::now()),
        Verdict::Rejected
    );
    assert_eq!(
        keyward_verify(&cluster, "portal-verifier", &first),
        1,
        "old secret rejected after grace"
    );
    assert_eq!(keyward_verify(&cluster, "portal-verifier", &second), 0);
    let client = until_client_ready(&cluster, "portal", "Issued", Some(2)).await;
    assert!(
        client
            .status
            .and_then(|status| status.previous_secret_expires_at)
            .is_none()
    );

    let events: Api<Event> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .into_iter()
        .filter_map(|event| event.reason)
        .collect();
    for reason in ["Rotated", "PreviousSecretExpired"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "event {reason} published; got {reasons:?}"
        );
    }
    // The first secret is told by the Ready condition and status.issuedAt alone.
    assert!(
        !reasons.iter().any(|r| r == "Issued"),
        "no event for a client's first secret; got {reasons:?}"
    );
    assert_never_logged(&cluster, &operator, &[first, second]).await;
}

#[tokio::test]
async fn every_algorithm_and_plaintext_round_trip_when_the_policy_allows_them() {
    let cluster = support::cluster("oauth-algorithms").await;
    let operator = operator_with_args(
        &cluster,
        &["--allow-legacy-algorithms", "--allow-plaintext-secrets"],
    );
    let algorithms = ["SHA-256", "SHA-384", "SHA-512", "SHA-1", "MD5"];
    for algorithm in algorithms {
        apply_client(
            &cluster,
            &algorithm.to_lowercase(),
            json!({"hashAlgorithm": algorithm}),
        )
        .await;
    }
    let mut plaintexts = Vec::new();
    for algorithm in algorithms {
        let name = algorithm.to_lowercase();
        let client = until_client_ready(&cluster, &name, "Issued", Some(1)).await;
        let status = client.status.as_ref().expect("status");
        assert_eq!(status.hash_algorithm.as_deref(), Some(algorithm));
        let legacy = status
            .conditions
            .iter()
            .find(|c| c.type_ == "LegacyAlgorithm")
            .map(|c| c.status.as_str());
        let is_legacy = matches!(algorithm, "SHA-1" | "MD5");
        assert_eq!(
            legacy,
            is_legacy.then_some("True"),
            "LegacyAlgorithm condition for {algorithm}"
        );
        let plaintext = delivered_secret(&cluster, &format!("{name}-credentials")).await;
        let verifier = format!("{name}-verifier");
        let record = secrets(&cluster)
            .get(&verifier)
            .await
            .expect("verifier")
            .data
            .expect("data");
        assert_eq!(
            record["algorithm"].0,
            algorithm.as_bytes(),
            "the record names its algorithm"
        );
        assert_eq!(
            keyward_verify(&cluster, &verifier, &plaintext),
            0,
            "{algorithm} verifies"
        );
        assert_eq!(
            keyward_verify(&cluster, &verifier, "not-the-secret"),
            1,
            "{algorithm} rejects"
        );
        plaintexts.push(plaintext);
    }
    // Plaintext, allowed by policy: the verifier keeps the secret itself.
    apply_client(&cluster, "plain", json!({"secretType": "Plaintext"})).await;
    let plain = until_client_ready(&cluster, "plain", "Issued", Some(1)).await;
    assert!(
        plain
            .status
            .as_ref()
            .expect("status")
            .hash_algorithm
            .is_none()
    );
    let plaintext = delivered_secret(&cluster, "plain-credentials").await;
    assert_eq!(
        keyward_verify(&cluster, "plain-verifier", &plaintext),
        0,
        "plaintext record verifies"
    );
    assert_eq!(
        keyward_verify(&cluster, "plain-verifier", "not-the-secret"),
        1,
        "plaintext record rejects"
    );
    plaintexts.push(plaintext);

    let events: Api<Event> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let warnings = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .into_iter()
        .filter(|event| {
            event.type_.as_deref() == Some("Warning")
                && event.reason.as_deref() == Some("LegacyAlgorithm")
        })
        .count();
    assert!(
        warnings >= 2,
        "a Warning event for each legacy client, got {warnings}"
    );
    assert_never_logged(&cluster, &operator, &plaintexts).await;
}

#[tokio::test]
async fn legacy_algorithms_plaintext_and_a_missing_encryption_key_are_refused_with_named_reasons() {
    let cluster = support::cluster("oauth-policy").await;
    let _operator = operator(&cluster);
    apply_client(&cluster, "legacy", json!({"hashAlgorithm": "MD5"})).await;
    apply_client(&cluster, "plain", json!({"secretType": "Plaintext"})).await;
    apply_client(
        &cluster,
        "encrypted",
        json!({"secretType": "Encrypted", "encryptionKeyRef": {"name": "apim"}}),
    )
    .await;
    let legacy = until_client_ready(&cluster, "legacy", "LegacyAlgorithmNotAllowed", None).await;
    let message = &legacy.status.as_ref().expect("status").conditions[0].message;
    assert!(
        message.contains("spec.hashAlgorithm") && message.contains("--allow-legacy-algorithms"),
        "{message}"
    );
    until_client_ready(&cluster, "plain", "PlaintextNotAllowed", None).await;
    until_client_ready(&cluster, "encrypted", "EncryptionKeyNotReady", None).await;
    let issued = secrets(&cluster)
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=keyward"))
        .await
        .expect("list");
    assert!(
        issued.items.is_empty(),
        "a refused client gets no Secrets: {:?}",
        issued
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn importing_waits_for_the_source_then_hashes_it_and_follows_its_changes() {
    let cluster = support::cluster("oauth-import").await;
    let operator = operator(&cluster);
    apply_client(
        &cluster,
        "legacy-app",
        json!({"importFrom": {"secretName": "legacy-app-source", "clientIdKey": "clientId"}}),
    )
    .await;
    let waiting = until_client_ready(&cluster, "legacy-app", "ImportSourceMissing", None).await;
    let message = &waiting.status.as_ref().expect("status").conditions[0].message;
    assert!(
        message.contains("legacy-app-source"),
        "the reason names the Secret: {message}"
    );
    assert!(
        secrets(&cluster)
            .get_opt("legacy-app-verifier")
            .await
            .expect("get")
            .is_none(),
        "nothing generated in its place"
    );

    let source = |secret: &str| Secret {
        metadata: ObjectMeta {
            name: Some("legacy-app-source".into()),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([
            ("clientId".into(), "legacy-app-0001".into()),
            ("clientSecret".into(), secret.into()),
        ])),
        ..Secret::default()
    };
    let first = "imported-secret-0123456789abcdef".to_owned();
    secrets(&cluster)
        .create(&PostParams::default(), &source(&first))
        .await
        .expect("source created");
    let imported = until_client_ready(&cluster, "legacy-app", "Imported", Some(1)).await;
    let status = imported.status.as_ref().expect("status");
    assert_eq!(status.client_id.as_deref(), Some("legacy-app-0001"));
    assert_eq!(status.import_source_removable, Some(true));
    assert_eq!(keyward_verify(&cluster, "legacy-app-verifier", &first), 0);
    assert!(
        secrets(&cluster)
            .get_opt("legacy-app-credentials")
            .await
            .expect("get")
            .is_none(),
        "no plaintext copy is delivered"
    );
    assert_eq!(
        secrets_holding(&cluster, &first).await,
        vec![format!("{}/legacy-app-source", cluster.namespace)]
    );

    let second = "imported-secret-fedcba9876543210".to_owned();
    secrets(&cluster)
        .replace(
            "legacy-app-source",
            &PostParams::default(),
            &source(&second),
        )
        .await
        .expect("source changed");
    until_client_ready(&cluster, "legacy-app", "Imported", Some(2)).await;
    assert_eq!(keyward_verify(&cluster, "legacy-app-verifier", &second), 0);
    assert_eq!(keyward_verify(&cluster, "legacy-app-verifier", &first), 1);

    // The source may now go; the record stays.
    secrets(&cluster)
        .delete("legacy-app-source", &DeleteParams::default())
        .await
        .expect("source deleted");
    wait::until_gone(
        &secrets(&cluster),
        "legacy-app-source",
        "the source is deleted",
    )
    .await;
    until_client_ready(&cluster, "legacy-app", "Imported", Some(2)).await;
    assert_eq!(keyward_verify(&cluster, "legacy-app-verifier", &second), 0);
    assert_never_logged(&cluster, &operator, &[first, second]).await;
}

#[tokio::test]
async fn the_delivery_secret_expires_after_its_ttl_and_deletion_removes_everything() {
    let cluster = support::cluster("oauth-ttl").await;
    let operator = operator(&cluster);
    apply_client(
        &cluster,
        "short-lived",
        json!({"deliverySecret": {"ttl": "10s"}}),
    )
    .await;
    until_client_ready(&cluster, "short-lived", "Issued", Some(1)).await;
    let plaintext = delivered_secret(&cluster, "short-lived-credentials").await;
    wait::until_gone(
        &secrets(&cluster),
        "short-lived-credentials",
        "the delivery Secret is deleted after its TTL",
    )
    .await;
    let client = wait::until(
        &clients(&cluster),
        "short-lived",
        "status records the deletion",
        |client| {
            client
                .status
                .as_ref()
                .is_some_and(|status| status.delivery_secret_deleted_at.is_some())
        },
    )
    .await;
    assert_eq!(
        client
            .status
            .as_ref()
            .and_then(|status| status.secret_version),
        Some(1),
        "no new secret was issued"
    );
    assert_eq!(
        keyward_verify(&cluster, "short-lived-verifier", &plaintext),
        0,
        "the verifier record stays"
    );
    assert!(
        secrets_holding(&cluster, &plaintext).await.is_empty(),
        "the plaintext is gone from the cluster"
    );

    clients(&cluster)
        .delete("short-lived", &DeleteParams::default())
        .await
        .expect("client deleted");
    wait::until_gone(
        &secrets(&cluster),
        "short-lived-verifier",
        "garbage collection removes the verifier Secret",
    )
    .await;
    assert_never_logged(&cluster, &operator, &[plaintext]).await;
}

/// As a namespace editor would try it, against an operator that answers the echoes of
/// its own writes from memory: a ready client's verifier deleted, a Secret of someone
/// else's squatting a new client's delivery name the moment before the client is
/// applied, and a client deleted and at once re-created under the same name while its
/// old Secrets still stand. Each is seen; nothing of anyone else's is overwritten.
#[tokio::test]
async fn deleted_squatted_and_re_created_secrets_are_each_seen_and_never_overwritten() {
    let cluster = support::cluster("oauth-hostile").await;
    let _operator = operator(&cluster);
    apply_client(&cluster, "portal", json!({})).await;
    until_client_ready(&cluster, "portal", "Issued", Some(1)).await;

    // The verifier deleted: a new secret is issued under the next version, and verifies.
    secrets(&cluster)
        .delete("portal-verifier", &DeleteParams::default())
        .await
        .expect("verifier deleted");
    until_client_ready(&cluster, "portal", "Issued", Some(2)).await;
    let plaintext = delivered_secret(&cluster, "portal-credentials").await;
    assert_eq!(
        keyward_verify(&cluster, "portal-verifier", &plaintext),
        0,
        "the re-issued secret verifies"
    );

    // A Secret of someone else's in the delivery name, created just before the client.
    let squatter = Secret {
        metadata: ObjectMeta {
            name: Some("squat-credentials".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "clientSecret".to_owned(),
            k8s_openapi::ByteString(b"someone else's".to_vec()),
        )])),
        ..Secret::default()
    };
    let squatter = secrets(&cluster)
        .create(&PostParams::default(), &squatter)
        .await
        .expect("squatting Secret created");
    apply_client(&cluster, "squat", json!({})).await;
    wait::until(
        &clients(&cluster),
        "squat",
        "squat is Ready=False (SecretConflict)",
        |client| wait::ready(client) == Some(("False".into(), "SecretConflict".into())),
    )
    .await;
    let after = secrets(&cluster)
        .get("squat-credentials")
        .await
        .expect("squatting Secret still there");
    assert_eq!(
        after.resource_version(),
        squatter.resource_version(),
        "the squatting Secret was never written"
    );
    assert!(
        secrets(&cluster)
            .get_opt("squat-verifier")
            .await
            .expect("get")
            .is_none(),
        "nothing was issued beside someone else's Secret"
    );

    // Deleted and re-created at once: the old Secrets belong to the old client until
    // garbage collection removes them; then the new client is issued its own.
    let old_uid = clients(&cluster)
        .get("portal")
        .await
        .expect("portal")
        .uid()
        .expect("uid");
    clients(&cluster)
        .delete("portal", &DeleteParams::default())
        .await
        .expect("client deleted");
    wait::until_gone(&clients(&cluster), "portal", "portal is gone").await;
    apply_client(&cluster, "portal", json!({})).await;
    // Garbage collection takes its time on a busy control plane: bounded generously.
    let client = wait::until_within(
        &clients(&cluster),
        "portal",
        "the re-created portal is issued its own secret",
        std::time::Duration::from_secs(180),
        |client| {
            wait::ready(client) == Some(("True".into(), "Issued".into()))
                && client.status.as_ref().and_then(|s| s.secret_version) == Some(1)
        },
    )
    .await;
    let new_uid = client.uid().expect("uid");
    assert_ne!(new_uid, old_uid);
    for name in ["portal-verifier", "portal-credentials"] {
        let secret = secrets(&cluster).get(name).await.expect("Secret");
        let owners: Vec<String> = secret
            .owner_references()
            .iter()
            .map(|owner| owner.uid.clone())
            .collect();
        assert_eq!(
            owners,
            vec![new_uid.clone()],
            "{name} belongs to the new client"
        );
    }
    let plaintext = delivered_secret(&cluster, "portal-credentials").await;
    assert_eq!(keyward_verify(&cluster, "portal-verifier", &plaintext), 0);
}
