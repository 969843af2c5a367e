//! Reconciler of `OAuthClient`: issues client credentials, keeps the verifier record,
//! delivers the plaintext once, rotates, imports, and expires what has run out.
//!
//! Each reconcile loads what the cluster holds ([`secrets::load`], into the
//! [`world`]), takes the one step [`decide::next_step`] chooses ([`act::take`]), and
//! looks again, from fresh reads of the Secrets it manages (or the Secrets as its
//! previous step wrote them); once nothing is left to do, it reports status
//! ([`status::report`]), once.
//! The plaintext secret goes only into the delivery Secret (and, under the plaintext
//! policy, the verifier record); it never reaches a log line, an event or status.

mod act;
pub mod decide;
pub mod index;
pub mod reasons;
mod secrets;
pub mod settled;
pub mod state;
mod status;
pub mod world;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use self::act::{Actor, Next};
use self::index::{SecretIndex, named_for};
use self::secrets::{Known, SecretWriter};
use self::settled::{Kind, Settled};
pub use self::state::State;
use self::status::{Written, report};
use crate::controller::context::Context;
use crate::controller::kit::{in_namespace_of, lean_controller, owners_of, watcher_config};
use crate::crd::oauth_client::{DELIVERY_SUFFIX, SecretNames, VERIFIER_SUFFIX};
use crate::crd::{EncryptionKey, OAuthClient};
use crate::{Error, Result};

/// The OAuthClient controller, watching `api` and the Secrets of `secrets`' scope.
///
/// Secrets are watched as metadata only: a Secret's name and owners say which clients
/// it concerns, and the reconcile reads the data it needs afresh. Neither every Secret's
/// data nor a scan of every client is spent on a Secret event. Both watches record the
/// versions they see in `settled`.
pub fn controller(
    api: Api<OAuthClient>,
    secrets: Api<PartialObjectMeta<Secret>>,
    keys: Api<EncryptionKey>,
    context: Arc<Context>,
    state: Arc<State>,
) -> Controller<OAuthClient> {
    let (index, keyrings, settled) = (
        state.secret_index.clone(),
        state.keyrings.clone(),
        state.settled.clone(),
    );
    let controller = lean_controller(api, move |client: &OAuthClient| {
        let namespace = client.namespace().unwrap_or_default();
        state
            .secret_index
            .register(&namespace, &client.name_any(), Vec::new());
        state.settled.forget(client);
        context.forget(client);
    });
    let (store, key_users) = (controller.store(), controller.store());
    let (vanished, everything_again) = futures::channel::mpsc::unbounded();
    let scope = secrets.namespace().map(str::to_owned);
    // A keyring Secret deleted while the watch was away has no event: the cached
    // keyrings go at every listing.
    let listed_keyrings = keyrings.clone();
    let secret_events = watcher(secrets, watcher_config())
        .map_ok(recording(
            settled.clone(),
            Kind::Secret,
            scope,
            vanished.clone(),
            move || listed_keyrings.clear(),
        ))
        .touched_objects();
    let scope = keys.namespace().map(str::to_owned);
    let key_events = watcher(keys, watcher_config())
        .map_ok(recording(
            settled,
            Kind::EncryptionKey,
            scope,
            vanished,
            || {},
        ))
        .touched_objects();
    controller
        .reconcile_all_on(everything_again)
        .watches_stream(secret_events, move |secret| {
            if let Some(namespace) = secret.namespace() {
                keyrings.changed(&namespace, &secret.name_any());
            }
            clients_of(&store, &index, &secret)
        })
        .watches_stream(key_events, move |key| encrypting_under(&key_users, &key))
}

/// Records in `settled` what the watch of `kind` over `scope` shows: each object's
/// version or deletion, and its listings. A relisting that finds objects gone (deleted
/// while the watch was not connected, so no event tells of them) sends on `vanished`;
/// `listed` runs at the end of every listing.
fn recording<K: Resource>(
    settled: Arc<Settled>,
    kind: Kind,
    scope: Option<String>,
    vanished: futures::channel::mpsc::UnboundedSender<()>,
    listed: impl Fn(),
) -> impl FnMut(watcher::Event<K>) -> watcher::Event<K> {
    move |event| {
        let seen = |object: &K, present: bool| {
            let meta = object.meta();
            let version = meta.resource_version.as_deref().filter(|_| present);
            let namespace = meta.namespace.as_deref().unwrap_or_default();
            let name = meta.name.as_deref().unwrap_or_default();
            settled.watched(kind, scope.as_deref(), namespace, name, version);
        };
        match &event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => seen(object, true),
            watcher::Event::Delete(object) => seen(object, false),
            watcher::Event::Init => settled.listing_started(kind, scope.as_deref()),
            watcher::Event::InitDone => {
                listed();
                if settled.listing_done(kind, scope.as_deref()) {
                    // Closed only when the controller is gone.
                    let _ = vanished.unbounded_send(());
                }
            }
        }
        event
    }
}

/// The OAuthClients `secret` concerns: the one that owns it, the one whose conventional
/// name it has (a Secret of someone else's in its place may be gone), and those whose
/// spec names it (a custom name, or an import source that appeared or changed).
fn clients_of(
    store: &Store<OAuthClient>,
    index: &SecretIndex,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<OAuthClient>> {
    let Some(namespace) = secret.namespace() else {
        return Vec::new();
    };
    let name = secret.name_any();
    let mut clients: BTreeSet<String> = index.users(&namespace, &name).into_iter().collect();
    clients.extend(
        owners_of::<OAuthClient>(secret)
            .into_iter()
            .map(str::to_owned),
    );
    for suffix in [VERIFIER_SUFFIX, DELIVERY_SUFFIX] {
        clients.extend(named_for(&name, suffix).map(str::to_owned));
    }
    clients
        .into_iter()
        .map(|client| ObjectRef::new(&client).within(&namespace))
        .filter(|client| store.get(client).is_some())
        .collect()
}

/// The Secrets `client`'s spec names itself, for the [`SecretIndex`].
fn chosen_secrets(client: &OAuthClient, names: &SecretNames) -> Vec<String> {
    let name = client.name_any();
    let conventional = |secret: &str| {
        named_for(secret, VERIFIER_SUFFIX) == Some(name.as_str())
            || named_for(secret, DELIVERY_SUFFIX) == Some(name.as_str())
    };
    let mut chosen: Vec<String> = [&names.verifier, &names.delivery]
        .into_iter()
        .filter(|secret| !conventional(secret))
        .cloned()
        .collect();
    chosen.extend(
        client
            .spec
            .import_from
            .as_ref()
            .map(|import| import.secret_name.clone()),
    );
    chosen.sort();
    chosen.dedup();
    chosen
}

/// OAuthClients whose secret is encrypted under `key`, so they proceed once it is ready.
fn encrypting_under(
    store: &Store<OAuthClient>,
    key: &EncryptionKey,
) -> Vec<ObjectRef<OAuthClient>> {
    let name = key.name_any();
    in_namespace_of(store, key, |client| {
        client
            .spec
            .encryption_key_ref
            .as_ref()
            .is_some_and(|reference| reference.name == name)
    })
}

/// Steps one reconcile takes before it hands over to the queue: enough to issue a
/// client (issue, complete the issue, report) in one go.
const STEPS_PER_RECONCILE: usize = 4;

/// Takes the steps one OAuthClient needs now, each decided from fresh reads of its
/// Secrets, then reports its status — once, at the end.
pub async fn reconcile(
    client: Arc<OAuthClient>,
    context: Arc<Context>,
    state: Arc<State>,
) -> Result<Action> {
    let namespace = client.namespace().ok_or(Error::MissingObjectField {
        kind: "OAuthClient",
        field: "metadata.namespace",
    })?;
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &namespace);
    let names = SecretNames::of(&client.name_any(), &client.spec);
    state.secret_index.register(
        &namespace,
        &client.name_any(),
        chosen_secrets(&client, &names),
    );
    if let Some(action) = state.settled.answer(&client) {
        // Brought back by an echo of our own writes: nothing it depends on changed.
        return Ok(action);
    }
    let known = Known::new(&namespace, &state.settled);
    for _ in 0..STEPS_PER_RECONCILE {
        let (observed, existing) = secrets::load(
            &context.client,
            &state.keyrings,
            &client,
            names.clone(),
            &known,
        )
        .await?;
        let now = Timestamp::now();
        let step = decide::next_step(&client.spec, &observed, state.policy, now);
        tracing::debug!(namespace, name = %client.name_any(), step = step.name(), "reconciling OAuthClient");
        let writer = SecretWriter {
            api: &secrets,
            client: &client,
            names: &names,
            existing: &existing,
            known: &known,
        };
        let actor = Actor {
            context: &context,
            client: &client,
            writer: &writer,
            now,
        };
        let Next::Report {
            problem,
            recheck_in,
        } = act::take(step, &actor, &observed).await?
        else {
            continue;
        };
        let written = report(&context, &client, &observed, &names, problem, now).await?;
        context.record_success(client.as_ref());
        if let Some(inputs) = &existing.inputs {
            remember(&state.settled, &client, written, inputs, recheck_in);
        }
        return Ok(match recheck_in {
            Some(delay) => Action::requeue(delay),
            None => Action::await_change(),
        });
    }
    // Still steps to take: the queue brings the client back at once.
    Ok(Action::requeue(Duration::ZERO))
}

/// Remembers the answer of a reconcile of `client` that read `inputs` and left the
/// client at resourceVersion `written` (if its status write changed it).
fn remember(
    settled: &Settled,
    client: &OAuthClient,
    written: Written,
    inputs: &[(Kind, String, Option<String>)],
    recheck_in: Option<Duration>,
) {
    let namespace = client.namespace().unwrap_or_default();
    let inputs: Vec<settled::Input<'_>> = inputs
        .iter()
        .map(|(kind, name, version)| settled::Input {
            kind: *kind,
            namespace: &namespace,
            name,
            version: version.as_deref(),
        })
        .collect();
    let written = match &written {
        Written::Unchanged => None,
        Written::At(version) => Some(version.as_str()),
        // Status was computed from a newer spec than the decision: nothing to remember.
        Written::FromNewerSpec => return,
    };
    settled.remember(client, written, &inputs, recheck_in);
}
