//! Hashed client secrets WSO2 can store: keyward's `wso2HashedSecret` is, byte for byte,
//! what WSO2 API Manager writes (played by the Java stand-in with org.json 20250517,
//! docs/wso2-interop.md §5), a Hashed OAuthClient's verifier carries it for the secret it
//! delivered, and `keyward verify` checks secrets against it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keyward::crypto::HashAlgorithm;
use keyward::crypto::hash::{self, keys};
use kube::ResourceExt;
use kube::api::{ObjectMeta, Patch, PatchParams};
use serde_json::json;
use sha2::{Digest, Sha256, Sha512};

use crate::support::api::secrets;
use crate::support::oauth_client::{
    apply_client, delivered_secret, keyward_verify, until_client_ready,
};
use crate::support::operator::operator_with_args;
use crate::support::wso2_java::Wso2Java;
use crate::support::{self, TestCluster};

/// Secrets of the shapes WSO2 sees: keyward's own (43 characters of base64url), WSO2's
/// generated ones, and text beyond ASCII (hashed as its UTF-8 bytes, as WSO2 does).
const SECRETS: [&str; 5] = [
    "q3XGz0bF6m2LrVpYw9tKcN1sHdJ8aUeO4iB7xZ5yT_-",
    "fT7zB2kQmX9pLw4R1vN8sY3cH6jD0aGe",
    "a",
    "sécret-ключ-秘密-🔑",
    "with \"quotes\", \\backslashes\\ and\ttabs",
];

/// keyward's WSO2 record for `secret` under `algorithm`, as text.
fn keyward_record(algorithm: HashAlgorithm, secret: &str) -> String {
    let digest = hash::digest(algorithm, secret.as_bytes());
    String::from_utf8(hash::wso2_record(algorithm, &digest)).expect("the record is UTF-8")
}

#[test]
fn keywards_wso2_record_is_what_wso2_writes_for_every_algorithm_byte_for_byte() {
    let mut java = Wso2Java::start();
    for algorithm in HashAlgorithm::ALL {
        for secret in SECRETS {
            let wso2 = java.hash(secret.as_bytes(), algorithm.as_str());
            assert_eq!(
                keyward_record(algorithm, secret),
                wso2,
                "{} of {secret:?}",
                algorithm.as_str()
            );
            let credential =
                hash::parse_wso2_record(wso2.as_bytes()).expect("keyward reads WSO2's record");
            assert!(credential.matches(secret.as_bytes()));
            assert!(!credential.matches(format!("{secret}x").as_bytes()));
        }
    }
}

/// A file of its own holding `text`, named after the test's namespace.
fn file_with(cluster: &TestCluster, name: &str, text: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("keyward-{}-{name}", cluster.namespace));
    std::fs::write(&path, text).expect("temporary file");
    path
}

/// `keyward verify` with `args`, `presented` on stdin: the exit code and standard error.
fn verify_with(args: &[&str], presented: &str) -> (i32, String) {
    let output = support::keyward(&[&["verify"], args].concat(), presented.as_bytes());
    let code = output.status.code().expect("exit code");
    (code, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The verifier Secret `name`'s data.
async fn verifier_data(cluster: &TestCluster, name: &str) -> BTreeMap<String, ByteString> {
    secrets(cluster)
        .get(name)
        .await
        .expect("verifier Secret exists")
        .data
        .expect("verifier data")
}

#[tokio::test]
async fn a_hashed_clients_verifier_carries_wso2s_record_and_keyward_verify_accepts_only_its_secret()
{
    let cluster = support::cluster("wso2-hash").await;
    let _operator = operator_with_args(&cluster, &["--allow-legacy-algorithms"]);
    let clients = [
        ("SHA-256", "portal"),
        ("SHA-512", "mobile"),
        ("SHA-1", "legacy"),
    ];
    for (algorithm, name) in clients {
        apply_client(&cluster, name, json!({"hashAlgorithm": algorithm})).await;
    }
    let mut java = Wso2Java::start();
    for (algorithm, name) in clients {
        until_client_ready(&cluster, name, "Issued", Some(1)).await;
        let secret = delivered_secret(&cluster, &format!("{name}-credentials")).await;
        let verifier = format!("{name}-verifier");
        let data = verifier_data(&cluster, &verifier).await;
        let record = &data[keys::WSO2_HASHED_SECRET].0;
        assert_eq!(
            String::from_utf8(record.clone()).expect("UTF-8"),
            java.hash(secret.as_bytes(), algorithm),
            "{name}'s verifier holds what WSO2 stores for the delivered secret"
        );
        let digest = match algorithm {
            "SHA-256" => Some(hex::encode(Sha256::digest(secret.as_bytes()))),
            "SHA-512" => Some(hex::encode(Sha512::digest(secret.as_bytes()))),
            _ => None,
        };
        if let Some(digest) = digest {
            assert_eq!(
                record,
                format!(r#"{{"hash":"{digest}","algorithm":"{algorithm}"}}"#).as_bytes()
            );
        }

        let file = file_with(&cluster, name, record);
        let file = file.to_str().expect("UTF-8 path");
        assert_eq!(verify_with(&["--wso2-record", file], &secret).0, 0);
        for wrong in [&secret[..secret.len() - 1], &format!("{secret}x"), "other"] {
            assert_eq!(
                verify_with(&["--wso2-record", file], wrong).0,
                1,
                "keyward verify --wso2-record refuses {wrong:?}"
            );
        }
        assert_eq!(
            keyward_verify(&cluster, &verifier, &secret),
            0,
            "the verifier with its WSO2 record still verifies as a whole"
        );
        std::fs::remove_file(file).expect("removed");
    }
}

#[tokio::test]
async fn a_verifier_whose_wso2_record_disagrees_with_its_hash_is_refused_without_echoing_it() {
    let cluster = support::cluster("wso2-hash-tampered").await;
    let _operator = operator_with_args(&cluster, &[]);
    apply_client(&cluster, "portal", json!({})).await;
    until_client_ready(&cluster, "portal", "Issued", Some(1)).await;
    let secret = delivered_secret(&cluster, "portal-credentials").await;
    let mut data = verifier_data(&cluster, "portal-verifier").await;
    // A record WSO2 would accept for another secret: a copy made from it would let that
    // secret in while keyward refuses it.
    let planted = keyward_record(HashAlgorithm::Sha256, "planted-secret");
    data.insert(
        keys::WSO2_HASHED_SECRET.to_owned(),
        ByteString(planted.clone().into_bytes()),
    );
    let manifest = Secret {
        metadata: ObjectMeta {
            name: Some("portal-verifier".into()),
            namespace: Some(cluster.namespace.clone()),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..Secret::default()
    };
    let file = file_with(
        &cluster,
        "tampered.yaml",
        serde_yaml::to_string(&manifest).expect("YAML").as_bytes(),
    );
    let file = file.to_str().expect("UTF-8 path");
    for presented in [secret.as_str(), "planted-secret"] {
        let (code, stderr) = verify_with(&["--file", file], presented);
        assert_eq!(code, 2, "the inconsistent record is an error: {stderr}");
        assert!(stderr.contains(keys::WSO2_HASHED_SECRET), "{stderr}");
        let planted_digest = hex::encode(Sha256::digest(b"planted-secret"));
        assert!(
            !stderr.contains(&planted_digest) && !stderr.contains(&secret),
            "errors never echo the record or the secret: {stderr}"
        );
    }
    std::fs::remove_file(file).expect("removed");
}

#[tokio::test]
async fn a_verifier_written_before_the_wso2_record_is_left_alone_and_gains_it_with_its_next_secret()
{
    let cluster = support::cluster("wso2-hash-upgrade").await;
    let operator = operator_with_args(&cluster, &[]);
    let spec = |generation: i64| json!({"rotation": {"generation": generation}});
    apply_client(&cluster, "portal", spec(0)).await;
    until_client_ready(&cluster, "portal", "Issued", Some(1)).await;
    let first = delivered_secret(&cluster, "portal-credentials").await;

    // The verifier as a keyward without WSO2 records wrote it.
    let patch = json!({"data": {keys::WSO2_HASHED_SECRET: null}});
    let patched = secrets(&cluster)
        .patch(
            "portal-verifier",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("verifier patched");
    let version = patched.resource_version().expect("resourceVersion");
    // A client created after the patch: once it is Ready the controller has taken the
    // patch's event too; a graceful stop lets any reconcile still running finish.
    apply_client(&cluster, "barrier", json!({})).await;
    until_client_ready(&cluster, "barrier", "Issued", Some(1)).await;
    let (exit, log) = operator.terminate(Duration::from_secs(30));
    assert!(exit.success(), "the operator stops cleanly: {exit}\n{log}");
    let settled = secrets(&cluster)
        .get("portal-verifier")
        .await
        .expect("verifier");
    assert_eq!(
        settled.resource_version().as_deref(),
        Some(version.as_str()),
        "a Ready client's older verifier is not rewritten just to add the WSO2 record"
    );
    assert!(
        !settled
            .data
            .as_ref()
            .is_some_and(|data| data.contains_key(keys::WSO2_HASHED_SECRET))
    );
    assert_eq!(keyward_verify(&cluster, "portal-verifier", &first), 0);

    let _operator = operator_with_args(&cluster, &[]);
    apply_client(&cluster, "portal", spec(1)).await;
    until_client_ready(&cluster, "portal", "Issued", Some(2)).await;
    let second = delivered_secret(&cluster, "portal-credentials").await;
    let data = verifier_data(&cluster, "portal-verifier").await;
    assert_eq!(
        String::from_utf8(data[keys::WSO2_HASHED_SECRET].0.clone()).expect("UTF-8"),
        keyward_record(HashAlgorithm::Sha256, &second),
        "the next secret's verifier carries its WSO2 record"
    );
}
