//! WSO2's two keys as an EncryptionKey's distribution Secret renders them, and every
//! rendering that Secret takes, as a watch delivers them.

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher;

use super::TestCluster;
use super::api::secrets;

/// WSO2's `key` and `old_key` as one rendering gives them (64 hex characters each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub key: String,
    pub old_key: String,
}

/// The pair `secret` (a distribution Secret) holds, if it holds both.
pub fn pair_of(secret: &Secret) -> Option<Pair> {
    let data = secret.data.as_ref()?;
    let entry = |name: &str| String::from_utf8(data.get(name)?.0.clone()).ok();
    Some(Pair {
        key: entry("key")?,
        old_key: entry("old_key")?,
    })
}

/// Every rendering Secret `name` takes, from the one it holds now on.
pub fn renderings(cluster: &TestCluster, name: &str) -> impl Stream<Item = Pair> + use<> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher::watcher(secrets(cluster), config).filter_map(|event| async move {
        match event {
            Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                pair_of(&secret)
            }
            _ => None,
        }
    })
}
