//! The verification scan of a rotation: counts the ciphertext per key version in every
//! Secret the rotation covers, so no version retires while something is still under it.
//! It only reads and counts; nothing is decrypted.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};

use super::build;
use super::machine::Census;
use crate::controller::context::Context;
use crate::crd::oauth_client::SecretNames;
use crate::crd::{EncryptionKey, OAuthClient};
use crate::crypto::Keyring;
use crate::store;
use crate::{Error, Result};

/// Ciphertexts per version in the Secrets the rotation covers: those of
/// `spec.reencryption.selector` and, always, those labelled for the key (Encrypted
/// OAuthClients' verifiers) and the verifiers of the key's Encrypted OAuthClients that
/// lost that label, so neither a narrow selector nor a removed label can hide what pods
/// still need.
pub async fn scan(context: &Context, key: &EncryptionKey, keyring: &Keyring) -> Result<Census> {
    let name = key.name_any();
    let namespace = key.namespace().unwrap_or_default();
    let scanned = |selector: Option<String>| {
        let client = context.client.clone();
        let (namespace, name) = (namespace.clone(), name.clone());
        async move {
            crate::reencrypt::scan(&client, &namespace, &name, selector.as_deref())
                .await
                .map_err(|error| Error::Scan(Box::new(error)))
        }
    };
    let mut counts = scanned(None).await?;
    if let Some(selector) = build::selector(key)? {
        for (version, count) in scanned(Some(selector)).await? {
            *counts.entry(version).or_default() += count;
        }
    }
    unlabelled_verifiers(context, key, &mut counts).await?;
    let mut census = Census {
        versions: counts,
        without_key_id: 0,
    };
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &namespace);
    for database in &key.spec.reencryption.databases {
        let counted =
            crate::reencrypt::databases::census(&secrets, database, keyring, CENSUS_PAGE_SIZE);
        // A database that stops answering must not hold this key's reconciles forever.
        let (versions, without_key_id) = tokio::time::timeout(CENSUS_TIMEOUT, counted)
            .await
            .map_err(|_| {
                Error::Scan(format!("the census of database {} timed out", database.name).into())
            })?
            .map_err(|error| Error::Scan(Box::new(error)))?;
        for (version, count) in versions {
            *census.versions.entry(version).or_default() += count;
        }
        census.without_key_id += without_key_id;
    }
    Ok(census)
}

/// The longest a database census may take before the scan fails (and is retried).
const CENSUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Rows a database census reads per page: with each cell capped
/// (`database::CELL_LIMIT`), at most 25 MiB in the operator whatever the server sends.
const CENSUS_PAGE_SIZE: u32 = 100;

/// Counts the ciphertext of `key` in the verifiers of its Encrypted OAuthClients that do
/// not carry the key's label (anyone who may edit Secrets can remove it), found through
/// the clients that own them; the OAuthClient controller puts the label back, so the
/// next re-encryption attempt covers them.
async fn unlabelled_verifiers(
    context: &Context,
    key: &EncryptionKey,
    counts: &mut BTreeMap<i64, u64>,
) -> Result<()> {
    let name = key.name_any();
    let namespace = key.namespace().unwrap_or_default();
    let clients: Api<OAuthClient> = Api::namespaced(context.client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &namespace);
    let mut params = ListParams::default().limit(500);
    loop {
        let page = clients.list(&params).await?;
        for client in &page.items {
            let encrypted_under_key = client
                .spec
                .encryption_key_ref
                .as_ref()
                .is_some_and(|reference| reference.name == name);
            if !encrypted_under_key {
                continue;
            }
            let verifier = SecretNames::of(&client.name_any(), &client.spec).verifier;
            let Some(secret) = store::get(&secrets, &verifier).await? else {
                continue;
            };
            let labelled = secret.labels().get(store::KEY_LABEL) == Some(&name);
            if labelled || !store::is_owned_by(secret.meta(), client) {
                continue;
            }
            crate::reencrypt::count_versions(secret.data.as_ref(), &name, counts);
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(()),
        }
    }
}
