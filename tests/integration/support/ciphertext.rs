//! Secrets holding ciphertext under an EncryptionKey, as the re-encryption and rotation
//! tests and the benchmark write them.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keyward::crypto::envelope::Envelope;
use kube::api::{Api, ObjectMeta, PostParams};

use super::TestCluster;
use super::api::secrets;

/// The data key of the test Secrets' ciphertext.
pub const FIELD: &str = "value";

/// Secret `name` holding `data`, labelled for EncryptionKey `key`'s default
/// re-encryption selector.
pub fn labelled_secret(key: &str, name: &str, data: BTreeMap<String, ByteString>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                keyward::store::KEY_LABEL.to_owned(),
                key.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..Secret::default()
    }
}

/// Creates every Secret of `secrets`, `at_once` requests in flight.
pub async fn create_all(api: &Api<Secret>, secrets: Vec<Secret>, at_once: usize) {
    futures::stream::iter(secrets)
        .map(|secret| async move { api.create(&PostParams::default(), &secret).await })
        .buffer_unordered(at_once)
        .try_collect::<Vec<_>>()
        .await
        .expect("ciphertext Secrets created");
}

/// Secret `name` labelled for EncryptionKey `key`, holding `envelope` under [`FIELD`].
pub fn ciphertext_secret(key: &str, name: &str, envelope: &Envelope) -> Secret {
    let data = BTreeMap::from([(
        FIELD.to_owned(),
        ByteString(envelope.to_string().into_bytes()),
    )]);
    labelled_secret(key, name, data)
}

/// Writes `count` Secrets, each holding one value encrypted with `keyward encrypt` under
/// the key's current primary (a few reading the keyring from the cluster with `--key`,
/// the rest from a copy of it in a file, which spares the API server a thousand reads);
/// returns the plaintexts by Secret name.
pub async fn write_ciphertexts(
    cluster: &TestCluster,
    key: &str,
    count: usize,
) -> BTreeMap<String, String> {
    let stored = secrets(cluster)
        .get(&format!("{key}-keyring"))
        .await
        .expect("keyring Secret");
    let keyring_file = std::env::temp_dir().join(format!(
        "keyward-test-keyring-{}-{}.json",
        cluster.namespace,
        rand_suffix()
    ));
    std::fs::write(&keyring_file, &stored.data.expect("data")["keyring.json"].0)
        .expect("keyring file written");
    let keyring_path = keyring_file.to_string_lossy().into_owned();
    let namespace = cluster.namespace.clone();
    let mut plaintexts = BTreeMap::new();
    for index in 0..count {
        plaintexts.insert(
            format!("data-{index:04}"),
            format!("plaintext-{index}-{}", rand_suffix()),
        );
    }
    let mut documents = Vec::new();
    for (position, (name, plaintext)) in plaintexts.iter().enumerate() {
        let context = format!("{namespace}/{name}/{FIELD}");
        let source = if position < 5 {
            ["--key", key]
        } else {
            ["--keyring", keyring_path.as_str()]
        };
        let args = ["encrypt", source[0], source[1], "--context", &context];
        let output = super::keyward(&args, plaintext.as_bytes());
        assert!(output.status.success(), "keyward encrypt: {output:?}");
        let text = String::from_utf8(output.stdout).expect("UTF-8");
        let envelope = Envelope::parse(text.trim()).expect("keyward encrypt prints an envelope");
        documents.push(ciphertext_secret(key, name, &envelope));
    }
    let _ = std::fs::remove_file(&keyring_file);
    create_all(&secrets(cluster), documents, 16).await;
    plaintexts
}

/// A random suffix, for names and plaintexts no other test uses.
pub fn rand_suffix() -> String {
    keyward::crypto::secret::generate_client_id().expect("randomness")
}
