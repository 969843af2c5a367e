//! What the last complete reconcile of each OAuthClient saw, so that a reconcile brought
//! on only by keyward's own writes — the watch echo of a Secret it wrote or of the status
//! it applied — gives the same answer without reading anything again.
//!
//! A reconcile that ends (the client is up to date, waits or is refused) remembers the
//! client's resourceVersion as it decided from it and as its status write left it, and
//! the resourceVersion of every object its decision read: the verifier and delivery
//! Secrets, the import source and the EncryptionKey, absent ones included. The watches
//! record the latest resourceVersion of every Secret and EncryptionKey they see. The
//! next reconcile reuses the answer only when the client is at one of its remembered
//! versions, every input is at the version the decision read, and its recheck time has
//! not come; any difference reads everything afresh. So a change made by anyone else is
//! never answered from memory: its watch event both records the new version and brings
//! the client back.
//!
//! The same versions say which Secrets are absent: once the Secret watch of a namespace
//! has listed it, a Secret it has not seen there (or saw deleted) is taken as absent
//! without a read. Only a create follows from that, and a create fails rather than
//! overwrite; the Secret is then marked present, and the retry reads it.
//!
//! A watch that lists again after losing its connection reports no deletion for what
//! vanished meanwhile. So each listing stamps what it shows, and the end of a relisting
//! drops what it did not show again; if anything was dropped, every client is brought
//! back (most answer from memory, the ones whose inputs vanished read afresh).
//!
//! The keyring behind an EncryptionKey is not an input of its own: any change to it that
//! matters changes the key's status, and so the key's resourceVersion.
//!
//! Names and versions are kept as 64-bit digests under a per-process random hash key: a
//! few bytes per object at tens of thousands of Secrets, and no name an attacker
//! chooses can be made to collide with another on purpose.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tokio::time::Instant;

use crate::crd::OAuthClient;

/// The kinds of object an answer depends on besides the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Secret,
    EncryptionKey,
}

/// An object a decision read, and the resourceVersion it read (`None`: absent).
pub struct Input<'a> {
    pub kind: Kind,
    pub namespace: &'a str,
    pub name: &'a str,
    pub version: Option<&'a str>,
}

/// The remembered answers, and the versions the watches last saw.
#[derive(Default)]
pub struct Settled {
    hasher: RandomState,
    answers: Mutex<HashMap<u64, Answer>>,
    /// The latest version seen of each object; deleted objects are absent.
    seen: Mutex<HashMap<u64, Seen>>,
    /// Each watch's current listing, by kind and scope (a namespace, or `None` for all).
    listings: Mutex<Listings>,
}

/// What was last seen of one object.
struct Seen {
    version: u64,
    kind: Kind,
    namespace: u64,
    /// The listing of the watch that last showed it, or [`NOT_LISTED`].
    listing: u64,
}

/// The listing stamp of what a write of ours or a failed create showed: no watch has
/// confirmed it yet, and no relisting drops it.
const NOT_LISTED: u64 = 0;

/// The version recorded for an object known to exist at a version not yet seen.
const UNSEEN: u64 = 0;

#[derive(Default)]
struct Listings {
    last_stamp: u64,
    by_watch: HashMap<(Kind, Option<String>), Listing>,
}

struct Listing {
    stamp: u64,
    done: bool,
}

struct Answer {
    client_versions: [Option<u64>; 2],
    inputs: Vec<(u64, Option<u64>)>,
    /// `None`: wait for a change.
    recheck_at: Option<Instant>,
}

impl Settled {
    /// Records what the watch of `kind` over `scope` saw of an object: its
    /// resourceVersion, or `None` once it is deleted.
    pub fn watched(
        &self,
        kind: Kind,
        scope: Option<&str>,
        namespace: &str,
        name: &str,
        version: Option<&str>,
    ) {
        let listing = lock(&self.listings)
            .by_watch
            .get(&(kind, scope.map(str::to_owned)))
            .map_or(NOT_LISTED, |listing| listing.stamp);
        self.record(kind, namespace, name, version, listing);
    }

    /// Records the version of Secret `namespace/name` as a write of ours left it, before
    /// its watch shows it.
    pub fn wrote(&self, namespace: &str, name: &str, version: Option<&str>) {
        self.record(Kind::Secret, namespace, name, version, NOT_LISTED);
    }

    fn record(&self, kind: Kind, namespace: &str, name: &str, version: Option<&str>, listing: u64) {
        let object = self.object(kind, namespace, name);
        let mut seen = lock(&self.seen);
        match version {
            Some(version) => seen.insert(
                object,
                Seen {
                    version: self.digest(version),
                    kind,
                    namespace: self.hasher.hash_one(namespace),
                    listing,
                },
            ),
            None => seen.remove(&object),
        };
    }

    /// Records that the watch of `kind` over `scope` (a namespace, or `None` for all)
    /// starts listing everything, at its start or after it lost its place.
    pub fn listing_started(&self, kind: Kind, scope: Option<&str>) {
        let mut listings = lock(&self.listings);
        listings.last_stamp += 1;
        let stamp = listings.last_stamp;
        let listing = Listing { stamp, done: false };
        listings
            .by_watch
            .insert((kind, scope.map(str::to_owned)), listing);
    }

    /// Records that the watch of `kind` over `scope` has listed everything, and drops
    /// what it had shown before and did not show again: deleted while it was not
    /// watching. Returns whether anything was dropped.
    pub fn listing_done(&self, kind: Kind, scope: Option<&str>) -> bool {
        let stamp = {
            let mut listings = lock(&self.listings);
            let Some(listing) = listings.by_watch.get_mut(&(kind, scope.map(str::to_owned))) else {
                return false;
            };
            listing.done = true;
            listing.stamp
        };
        let in_scope = scope.map(|namespace| self.hasher.hash_one(namespace));
        let mut seen = lock(&self.seen);
        let before = seen.len();
        seen.retain(|_, object| {
            let covered = object.kind == kind && in_scope.is_none_or(|ns| ns == object.namespace);
            !covered || object.listing == stamp || object.listing == NOT_LISTED
        });
        seen.len() != before
    }

    /// Whether Secret `namespace/name` is absent as far as a watch that has listed its
    /// namespace knows.
    pub fn known_absent(&self, namespace: &str, name: &str) -> bool {
        let listed = {
            let listings = lock(&self.listings);
            [None, Some(namespace.to_owned())].into_iter().any(|scope| {
                listings
                    .by_watch
                    .get(&(Kind::Secret, scope))
                    .is_some_and(|listing| listing.done)
            })
        };
        listed && !lock(&self.seen).contains_key(&self.object(Kind::Secret, namespace, name))
    }

    /// Records that Secret `namespace/name` exists though no watch event has shown it yet
    /// (a create found it): it is not taken as absent, and no remembered answer holds.
    pub fn present(&self, namespace: &str, name: &str) {
        let object = self.object(Kind::Secret, namespace, name);
        let seen = Seen {
            version: UNSEEN,
            kind: Kind::Secret,
            namespace: self.hasher.hash_one(namespace),
            listing: NOT_LISTED,
        };
        lock(&self.seen).entry(object).or_insert(seen);
    }

    /// Remembers the answer of a reconcile of `client` that decided from `inputs`, with
    /// the client's resourceVersion after its status write, if it wrote one.
    pub fn remember(
        &self,
        client: &OAuthClient,
        written_version: Option<&str>,
        inputs: &[Input<'_>],
        recheck_in: Option<Duration>,
    ) {
        let answer = Answer {
            client_versions: [client.meta().resource_version.as_deref(), written_version]
                .map(|version| version.map(|version| self.digest(version))),
            inputs: inputs
                .iter()
                .map(|input| {
                    (
                        self.object(input.kind, input.namespace, input.name),
                        input.version.map(|version| self.digest(version)),
                    )
                })
                .collect(),
            recheck_at: recheck_in.map(|delay| Instant::now() + delay),
        };
        lock(&self.answers).insert(self.client(client), answer);
    }

    /// The remembered answer for `client`, if nothing it depends on has changed since.
    pub fn answer(&self, client: &OAuthClient) -> Option<Action> {
        let key = self.client(client);
        let answers = lock(&self.answers);
        let answer = answers.get(&key)?;
        let version = client
            .meta()
            .resource_version
            .as_deref()
            .map(|version| self.digest(version))?;
        if !answer.client_versions.contains(&Some(version)) {
            return None;
        }
        let seen = lock(&self.seen);
        let unchanged = answer
            .inputs
            .iter()
            .all(|(object, version)| seen.get(object).map(|seen| seen.version) == *version);
        if !unchanged {
            return None;
        }
        match answer.recheck_at {
            None => Some(Action::await_change()),
            Some(at) => {
                let now = Instant::now();
                (at > now).then(|| Action::requeue(at - now))
            }
        }
    }

    /// Forgets the answer for `client`, deleted.
    pub fn forget(&self, client: &OAuthClient) {
        lock(&self.answers).remove(&self.client(client));
    }

    /// Forgets every answer and version: at the start of a leadership term, when
    /// nothing was watched for a while.
    pub fn clear(&self) {
        lock(&self.answers).clear();
        lock(&self.seen).clear();
        *lock(&self.listings) = Listings::default();
    }

    fn client(&self, client: &OAuthClient) -> u64 {
        let namespace = client.namespace().unwrap_or_default();
        self.hasher.hash_one((
            "OAuthClient",
            namespace.as_str(),
            client.name_any().as_str(),
        ))
    }

    fn object(&self, kind: Kind, namespace: &str, name: &str) -> u64 {
        let kind = match kind {
            Kind::Secret => "Secret",
            Kind::EncryptionKey => "EncryptionKey",
        };
        self.hasher.hash_one((kind, namespace, name))
    }

    fn digest(&self, version: &str) -> u64 {
        // Never UNSEEN, which stands for a version no watch has shown.
        self.hasher.hash_one(version).max(1)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn client(version: &str) -> OAuthClient {
        let spec = serde_json::from_value(serde_json::json!({})).expect("the default spec");
        let mut client = OAuthClient::new("billing", spec);
        client.metadata = ObjectMeta {
            name: Some("billing".into()),
            namespace: Some("apps".into()),
            resource_version: Some(version.into()),
            ..ObjectMeta::default()
        };
        client
    }

    fn verifier(version: Option<&str>) -> Input<'_> {
        Input {
            kind: Kind::Secret,
            namespace: "apps",
            name: "billing-verifier",
            version,
        }
    }

    fn list(settled: &Settled, scope: Option<&str>) -> bool {
        settled.listing_started(Kind::Secret, scope);
        settled.listing_done(Kind::Secret, scope)
    }

    #[test]
    fn a_relisting_drops_what_it_no_longer_shows_and_says_so() {
        let settled = Settled::default();
        let watched = |namespace, name| {
            settled.watched(Kind::Secret, None, namespace, name, Some("1"));
        };
        assert!(!list(&settled, None));
        watched("apps", "billing-verifier");
        watched("apps", "billing-delivery");
        settled.wrote("apps", "orders-verifier", Some("2"));
        settled.watched(Kind::EncryptionKey, None, "apps", "apim", Some("3"));
        // Listing again shows only the verifier: the delivery Secret went meanwhile.
        settled.listing_started(Kind::Secret, None);
        watched("apps", "billing-verifier");
        assert!(settled.listing_done(Kind::Secret, None));
        assert!(settled.known_absent("apps", "billing-delivery"));
        assert!(!settled.known_absent("apps", "billing-verifier"));
        // Our own write, and another kind's object, are not the Secret watch's to drop.
        assert!(!settled.known_absent("apps", "orders-verifier"));
        assert!(lock(&settled.seen).contains_key(&settled.object(
            Kind::EncryptionKey,
            "apps",
            "apim"
        )));
        // Nothing more gone: nothing to say.
        settled.listing_started(Kind::Secret, None);
        watched("apps", "billing-verifier");
        assert!(!settled.listing_done(Kind::Secret, None));
    }

    #[test]
    fn a_namespaces_relisting_drops_nothing_of_another_namespace() {
        let settled = Settled::default();
        list(&settled, Some("apps"));
        list(&settled, Some("other"));
        settled.watched(Kind::Secret, Some("apps"), "apps", "a", Some("1"));
        settled.watched(Kind::Secret, Some("other"), "other", "b", Some("1"));
        assert!(list(&settled, Some("apps")));
        assert!(settled.known_absent("apps", "a"));
        assert!(!settled.known_absent("other", "b"));
    }

    fn settled_with_verifier_seen(version: &str) -> Settled {
        let settled = Settled::default();
        settled.watched(
            Kind::Secret,
            None,
            "apps",
            "billing-verifier",
            Some(version),
        );
        settled
    }

    #[test]
    fn an_answer_holds_for_the_clients_read_and_written_versions_only() {
        let settled = settled_with_verifier_seen("7");
        settled.remember(&client("10"), Some("11"), &[verifier(Some("7"))], None);
        assert!(settled.answer(&client("10")).is_some());
        assert!(settled.answer(&client("11")).is_some());
        assert!(settled.answer(&client("12")).is_none());
    }

    #[test]
    fn any_input_seen_at_another_version_or_deleted_voids_the_answer() {
        let settled = settled_with_verifier_seen("7");
        settled.remember(&client("10"), None, &[verifier(Some("7"))], None);
        settled.watched(Kind::Secret, None, "apps", "billing-verifier", Some("8"));
        assert!(settled.answer(&client("10")).is_none());
        settled.watched(Kind::Secret, None, "apps", "billing-verifier", Some("7"));
        assert!(settled.answer(&client("10")).is_some());
        settled.watched(Kind::Secret, None, "apps", "billing-verifier", None);
        assert!(settled.answer(&client("10")).is_none());
    }

    #[test]
    fn an_input_read_before_the_watch_saw_it_voids_the_answer_until_it_does() {
        let settled = Settled::default();
        settled.remember(&client("10"), None, &[verifier(Some("7"))], None);
        assert!(settled.answer(&client("10")).is_none());
        settled.watched(Kind::Secret, None, "apps", "billing-verifier", Some("7"));
        assert!(settled.answer(&client("10")).is_some());
    }

    #[test]
    fn an_absent_input_that_appears_voids_the_answer() {
        let settled = Settled::default();
        settled.remember(&client("10"), None, &[verifier(None)], None);
        assert!(settled.answer(&client("10")).is_some());
        settled.watched(Kind::Secret, None, "apps", "billing-verifier", Some("1"));
        assert!(settled.answer(&client("10")).is_none());
    }

    #[test]
    fn a_same_named_object_of_another_kind_or_namespace_is_another_input() {
        let settled = settled_with_verifier_seen("7");
        settled.remember(&client("10"), None, &[verifier(Some("7"))], None);
        settled.watched(
            Kind::EncryptionKey,
            None,
            "apps",
            "billing-verifier",
            Some("9"),
        );
        settled.watched(Kind::Secret, None, "other", "billing-verifier", Some("9"));
        assert!(settled.answer(&client("10")).is_some());
    }

    #[test]
    fn a_secret_is_known_absent_only_once_its_namespace_is_listed_and_while_unseen() {
        let settled = Settled::default();
        assert!(!settled.known_absent("apps", "billing-verifier"));
        list(&settled, Some("apps"));
        assert!(settled.known_absent("apps", "billing-verifier"));
        assert!(!settled.known_absent("other", "billing-verifier"));
        settled.watched(Kind::Secret, None, "apps", "billing-verifier", Some("7"));
        assert!(!settled.known_absent("apps", "billing-verifier"));
        settled.watched(Kind::Secret, None, "apps", "billing-verifier", None);
        assert!(settled.known_absent("apps", "billing-verifier"));
        settled.listing_started(Kind::Secret, Some("apps"));
        assert!(!settled.known_absent("apps", "billing-verifier"));
        list(&settled, None);
        assert!(settled.known_absent("other", "billing-verifier"));
        settled.clear();
        assert!(!settled.known_absent("other", "billing-verifier"));
    }

    #[test]
    fn a_secret_found_by_a_create_is_present_and_voids_answers_until_seen() {
        let settled = Settled::default();
        list(&settled, None);
        settled.remember(&client("10"), None, &[verifier(None)], None);
        settled.present("apps", "billing-verifier");
        assert!(!settled.known_absent("apps", "billing-verifier"));
        assert!(settled.answer(&client("10")).is_none());
        settled.remember(&client("10"), None, &[verifier(Some("7"))], None);
        assert!(settled.answer(&client("10")).is_none());
        settled.watched(Kind::Secret, None, "apps", "billing-verifier", Some("7"));
        assert!(settled.answer(&client("10")).is_some());
        // A version already seen is kept.
        settled.present("apps", "billing-verifier");
        assert!(settled.answer(&client("10")).is_some());
    }

    #[test]
    fn a_deleted_clients_answer_is_forgotten() {
        let settled = settled_with_verifier_seen("7");
        settled.remember(&client("10"), None, &[verifier(Some("7"))], None);
        settled.forget(&client("10"));
        assert!(settled.answer(&client("10")).is_none());
        assert!(lock(&settled.answers).is_empty());
    }

    #[test]
    fn an_answer_expires_at_its_recheck_time_and_is_gone_after_a_clear() {
        let settled = settled_with_verifier_seen("7");
        let inputs = [verifier(Some("7"))];
        settled.remember(&client("10"), None, &inputs, Some(Duration::ZERO));
        assert!(settled.answer(&client("10")).is_none());
        settled.remember(&client("10"), None, &inputs, Some(Duration::from_secs(60)));
        assert!(settled.answer(&client("10")).is_some());
        settled.clear();
        assert!(settled.answer(&client("10")).is_none());
    }
}
