//! Secrets holding ciphertext under an EncryptionKey, as the re-encryption and rotation
//! tests and the benchmark write them.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

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
