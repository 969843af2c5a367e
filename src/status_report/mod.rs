//! `keyward status`: the state of one EncryptionKey or OAuthClient on one screen, or as
//! a JSON document for scripts.
//!
//! It reads only what the operator wrote: the resource itself (one `get`) and the Events
//! about it (one `list`, left out when not allowed). It never reads a Secret, so it needs
//! no right to key material or client secrets, and it shows none.

pub mod report;
pub mod text;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::crd::{EncryptionKey, OAuthClient};
pub use report::Report;

/// The kinds `keyward status` shows, by their names and short names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// An EncryptionKey (also `encryptionkeys`, `ek`).
    #[value(name = "encryptionkey", aliases = ["encryptionkeys", "ek", "encryptionkey.keyward.io"])]
    EncryptionKey,
    /// An OAuthClient (also `oauthclients`, `oac`).
    #[value(name = "oauthclient", aliases = ["oauthclients", "oac", "oauthclient.keyward.io"])]
    OAuthClient,
}

impl Kind {
    /// The kind as Kubernetes names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EncryptionKey => "EncryptionKey",
            Self::OAuthClient => "OAuthClient",
        }
    }
}

/// Why no report could be made. Each names the object asked for.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("not allowed to get {kind} {namespace}/{name}: {message}")]
    Forbidden {
        kind: &'static str,
        namespace: String,
        name: String,
        message: String,
    },
    #[error(
        "the API server does not serve {kind} (keyward.io/v1alpha1): are keyward's CRDs installed? (`keyward crds | kubectl apply -f -`)"
    )]
    KindNotServed { kind: &'static str },
    #[error("cannot get {kind} {namespace}/{name}: {source}")]
    Get {
        kind: &'static str,
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

/// The report on `kind` `namespace/name` as the cluster shows it now.
pub async fn fetch(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Report, StatusError> {
    let now = Timestamp::now();
    Ok(match kind {
        Kind::EncryptionKey => {
            let key: EncryptionKey = get(client, kind, namespace, name).await?;
            let events = events_about(client, &key).await;
            Report::EncryptionKey(Box::new(report::key_report(&key, events.as_deref(), now)))
        }
        Kind::OAuthClient => {
            let oauth_client: OAuthClient = get(client, kind, namespace, name).await?;
            let events = events_about(client, &oauth_client).await;
            Report::OAuthClient(Box::new(report::client_report(
                &oauth_client,
                events.as_deref(),
                now,
            )))
        }
    })
}

async fn get<K>(client: &Client, kind: Kind, namespace: &str, name: &str) -> Result<K, StatusError>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let (kind, namespace, name) = (kind.as_str(), namespace.to_owned(), name.to_owned());
    match api.get(&name).await {
        Ok(object) => Ok(object),
        // By code: a path the API server does not serve answers a bare 404 whose reason
        // is not `NotFound`.
        Err(kube::Error::Api(status)) if status.code == 404 => {
            // A missing object's 404 names it; a missing resource type's does not.
            let names_object = status
                .details
                .as_ref()
                .is_some_and(|details| details.name == name);
            Err(if names_object {
                StatusError::NotFound {
                    kind,
                    namespace,
                    name,
                }
            } else {
                StatusError::KindNotServed { kind }
            })
        }
        Err(kube::Error::Api(status)) if status.code == 403 => Err(StatusError::Forbidden {
            kind,
            namespace,
            name,
            message: status.message.clone(),
        }),
        Err(source) => Err(StatusError::Get {
            kind,
            namespace,
            name,
            source,
        }),
    }
}

/// How many Events one report lists at most: bounds what a namespace full of them costs.
const EVENTS_LISTED: u32 = 500;

/// The Events about `object`; `None` when they cannot be listed (the report then says
/// so: Events are a nicety, not a reason to fail).
async fn events_about<K>(client: &Client, object: &K) -> Option<Vec<Event>>
where
    K: Resource<DynamicType = ()>,
{
    let meta = object.meta();
    let namespace = meta.namespace.as_deref()?;
    let mut selector = format!(
        "involvedObject.kind={},involvedObject.name={}",
        K::kind(&()),
        meta.name.as_deref()?
    );
    if let Some(uid) = &meta.uid {
        selector.push_str(&format!(",involvedObject.uid={uid}"));
    }
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().fields(&selector).limit(EVENTS_LISTED);
    events.list(&params).await.ok().map(|list| list.items)
}
