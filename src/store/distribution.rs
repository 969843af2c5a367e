//! The distribution Secret of an EncryptionKey (`<name>-distribution`): the key rendered
//! in the form pods receive it, owned by the EncryptionKey (it is derived from the
//! keyring and goes with the resource).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use super::{ENCRYPTION_KEY_MANAGER, KEY_LABEL, Written};
use crate::Result;
use crate::crd::EncryptionKey;

/// Name of the distribution Secret of EncryptionKey `key_name`.
pub fn secret_name(key_name: &str) -> String {
    format!("{key_name}-distribution")
}

/// Writes `entries` (name, content) as the data of the distribution Secret of `key`,
/// unless it already holds exactly them. [`Written::Conflict`]: a Secret of that name
/// exists and is not owned by `key`; nothing was written.
pub async fn write(
    secrets: &Api<Secret>,
    key: &EncryptionKey,
    entries: &[(&str, &[u8])],
) -> Result<Written> {
    let name = secret_name(&key.name_any());
    let existing = super::get(secrets, &name).await?;
    let owned = |meta: &kube::api::ObjectMeta| super::is_owned_by(meta, key);
    if let Some(existing) = &existing
        && owned(&existing.metadata)
        && existing
            .data
            .as_ref()
            .is_some_and(|data| holds_only(data, entries))
    {
        return Ok(Written::Done);
    }
    let data = entries
        .iter()
        .map(|(entry, content)| ((*entry).to_owned(), ByteString(content.to_vec())))
        .collect();
    let secret = super::secret(
        &name,
        Some(key),
        super::labels("distribution", [(KEY_LABEL, key.name_any())]),
        BTreeMap::new(),
        data,
    )?;
    super::write_owned(
        secrets,
        ENCRYPTION_KEY_MANAGER,
        secret,
        existing.as_ref().map(|existing| &existing.metadata),
        owned,
    )
    .await
}

/// Whether `data` is exactly `entries`, compared in constant time per value.
fn holds_only(data: &BTreeMap<String, ByteString>, entries: &[(&str, &[u8])]) -> bool {
    use subtle::ConstantTimeEq;
    data.len() == entries.len()
        && entries.iter().all(|(entry, content)| {
            data.get(*entry)
                .is_some_and(|value| bool::from(value.0.as_slice().ct_eq(content)))
        })
}
