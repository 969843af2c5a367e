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
//! drops what it did not show again; if anything was dropped, every remembered answer is
//! forgotten and every client brought back to read afresh.
//!
//! Writes race with the watch: the response of a write of ours may be handled after the
//! watch has already shown a later change, a deletion included. So a write is recorded
//! only if no watch event for its object came in since the write began (its
//! [`WriteTicket`]) and no listing ended since (what it showed, or did not, is newer);
//! deletions are kept as tombstones for [`TOMBSTONE_TTL`] to tell, and a write older
//! than that is not recorded at all. Nothing is exempt from a relisting:
//! what our writes or failed creates recorded is dropped too when the listing does not
//! show it, since it may have been deleted while the watch was away. At worst that
//! costs one read, or one create that fails and marks the Secret present.
//!
//! An answer is remembered with the generation of the spec it was decided from, and a
//! client at any other generation is never answered from memory: a status write's
//! response (which has no precondition) can carry a newer spec than the decision saw.
//!
//! The keyring behind an EncryptionKey is not an input of its own: any change to it that
//! matters changes the key's status, and so the key's resourceVersion.
//!
//! Names and versions are kept as 64-bit digests under a per-process random hash key: a
//! few bytes per object at tens of thousands of Secrets, and no name an attacker
//! chooses can be made to collide with another on purpose.

use std::collections::{HashMap, VecDeque};
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
    /// The latest version seen of each object, and tombstones of recent deletions.
    seen: Mutex<SeenObjects>,
    /// Each watch's current listing, by kind and scope (a namespace, or `None` for all).
    listings: Mutex<Listings>,
}

/// What was last seen of each object.
#[derive(Default)]
struct SeenObjects {
    objects: HashMap<u64, Seen>,
    /// Watch events recorded so far: the order in which they came.
    events: u64,
    /// Deletions in the order they were seen, to drop their tombstones in time.
    tombstones: VecDeque<(Instant, u64, u64)>,
    /// The event count when a listing last ended: what it showed (or did not) is newer
    /// than any write that began before.
    last_listed: u64,
}

/// What was last seen of one object.
struct Seen {
    /// `None`: deleted (a tombstone).
    version: Option<u64>,
    kind: Kind,
    namespace: u64,
    /// The listing of the watch that last showed it, or [`NOT_LISTED`].
    listing: u64,
    /// The watch event that recorded it (0: a write of ours or a failed create).
    event: u64,
}

/// The listing stamp of what a write of ours or a failed create showed: no watch has
/// confirmed it yet.
const NOT_LISTED: u64 = 0;

/// How long a deletion is remembered to refuse a write's older response; a write that
/// began longer ago than this is not recorded at all.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(15 * 60);

/// Where a write began, in the order of watch events: its response is recorded only if
/// no event for its object came in since.
#[derive(Clone, Copy, Debug)]
pub struct WriteTicket {
    event: u64,
    at: Instant,
}

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
    /// The generation of the spec the answer was decided from.
    generation: Option<i64>,
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
        let object = self.object(kind, namespace, name);
        let now = Instant::now();
        let mut seen = lock(&self.seen);
        seen.events += 1;
        let event = seen.events;
        let version = version.map(|version| self.digest(version));
        if version.is_none() {
            seen.tombstones.push_back((now, object, event));
        }
        let entry = Seen {
            version,
            kind,
            namespace: self.hasher.hash_one(namespace),
            listing,
            event,
        };
        seen.objects.insert(object, entry);
        seen.drop_old_tombstones(now);
    }

    /// Where a write of ours begins: take it before the request is sent.
    pub fn begin_write(&self) -> WriteTicket {
        WriteTicket {
            event: lock(&self.seen).events,
            at: Instant::now(),
        }
    }

    /// Records the version of Secret `namespace/name` as a write of ours that began at
    /// `ticket` left it, before its watch shows it, unless the watch has shown a change
    /// of it since the write began (that change may be later than the write).
    pub fn wrote(&self, ticket: WriteTicket, namespace: &str, name: &str, version: Option<&str>) {
        if ticket.at.elapsed() >= TOMBSTONE_TTL {
            return;
        }
        let object = self.object(Kind::Secret, namespace, name);
        let mut seen = lock(&self.seen);
        let overtaken = seen.last_listed > ticket.event
            || seen
                .objects
                .get(&object)
                .is_some_and(|seen| seen.event > ticket.event);
        if overtaken {
            return;
        }
        let entry = Seen {
            version: version.map(|version| self.digest(version)),
            kind: Kind::Secret,
            namespace: self.hasher.hash_one(namespace),
            listing: NOT_LISTED,
            event: 0,
        };
        match entry.version {
            Some(_) => seen.objects.insert(object, entry),
            None => seen.objects.remove(&object),
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
    /// watching. If anything was dropped, every remembered answer goes too. Returns
    /// whether anything was dropped.
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
        seen.events += 1;
        seen.last_listed = seen.events;
        let mut dropped = false;
        // Our own writes too: what this listing did not show may be gone.
        seen.objects.retain(|_, object| {
            let covered = object.kind == kind && in_scope.is_none_or(|ns| ns == object.namespace);
            let kept = !covered || object.listing == stamp;
            dropped |= !kept && object.version.is_some();
            kept
        });
        drop(seen);
        if dropped {
            // An answer may rest on what is no input of its own (the keyring behind an
            // EncryptionKey, whose deletion changes the key's status only once the key's
            // own controller has listed again): none outlives a gap that lost objects.
            lock(&self.answers).clear();
        }
        dropped
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
        let object = self.object(Kind::Secret, namespace, name);
        listed
            && lock(&self.seen)
                .objects
                .get(&object)
                .is_none_or(|seen| seen.version.is_none())
    }

    /// Records that Secret `namespace/name` exists though no watch event has shown it yet
    /// (a create found it): it is not taken as absent, and no remembered answer holds.
    pub fn present(&self, namespace: &str, name: &str) {
        let object = self.object(Kind::Secret, namespace, name);
        let seen = Seen {
            version: Some(UNSEEN),
            kind: Kind::Secret,
            namespace: self.hasher.hash_one(namespace),
            listing: NOT_LISTED,
            event: 0,
        };
        let mut objects = lock(&self.seen);
        match objects.objects.get_mut(&object) {
            Some(known) if known.version.is_some() => {}
            Some(tombstone) => *tombstone = seen,
            None => {
                objects.objects.insert(object, seen);
            }
        }
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
            generation: client.meta().generation,
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
        if answer.generation != client.meta().generation
            || !answer.client_versions.contains(&Some(version))
        {
            return None;
        }
        let seen = lock(&self.seen);
        let unchanged = answer.inputs.iter().all(|(object, version)| {
            seen.objects.get(object).and_then(|seen| seen.version) == *version
        });
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
        *lock(&self.seen) = SeenObjects::default();
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

impl SeenObjects {
    /// Drops tombstones older than [`TOMBSTONE_TTL`], unless seen again since.
    fn drop_old_tombstones(&mut self, now: Instant) {
        while let Some(&(at, object, event)) = self.tombstones.front() {
            if now.duration_since(at) < TOMBSTONE_TTL {
                return;
            }
            self.tombstones.pop_front();
            if self
                .objects
                .get(&object)
                .is_some_and(|seen| seen.event == event)
            {
                self.objects.remove(&object);
            }
        }
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
        let ticket = settled.begin_write();
        settled.wrote(ticket, "apps", "orders-verifier", Some("2"));
        settled.watched(Kind::EncryptionKey, None, "apps", "apim", Some("3"));
        // Listing again shows only the verifier: the delivery Secret, and the one we
        // wrote, went meanwhile.
        settled.listing_started(Kind::Secret, None);
        watched("apps", "billing-verifier");
        assert!(settled.listing_done(Kind::Secret, None));
        assert!(settled.known_absent("apps", "billing-delivery"));
        assert!(settled.known_absent("apps", "orders-verifier"));
        assert!(!settled.known_absent("apps", "billing-verifier"));
        // Another kind's object is not the Secret watch's to drop.
        assert!(lock(&settled.seen).objects.contains_key(&settled.object(
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
    fn a_relisting_that_drops_anything_voids_every_answer() {
        let settled = settled_with_verifier_seen("7");
        settled.watched(Kind::Secret, None, "apps", "apim-keyring", Some("3"));
        settled.remember(&client("10"), None, &[verifier(Some("7"))], None);
        // The keyring went while the watch was away; it was no input of the answer.
        settled.listing_started(Kind::Secret, None);
        settled.watched(Kind::Secret, None, "apps", "billing-verifier", Some("7"));
        assert!(settled.listing_done(Kind::Secret, None));
        assert!(settled.answer(&client("10")).is_none());
        // A relisting that finds everything still there keeps the answers.
        settled.remember(&client("10"), None, &[verifier(Some("7"))], None);
        settled.listing_started(Kind::Secret, None);
        settled.watched(Kind::Secret, None, "apps", "billing-verifier", Some("7"));
        assert!(!settled.listing_done(Kind::Secret, None));
        assert!(settled.answer(&client("10")).is_some());
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

    fn client_at(version: &str, generation: i64) -> OAuthClient {
        let mut client = client(version);
        client.metadata.generation = Some(generation);
        client
    }

    #[test]
    fn an_answer_holds_only_at_the_generation_it_was_decided_from() {
        let settled = settled_with_verifier_seen("7");
        // The status write's response carried a newer spec: same versions, generation 3.
        settled.remember(
            &client_at("10", 2),
            Some("11"),
            &[verifier(Some("7"))],
            None,
        );
        assert!(settled.answer(&client_at("11", 2)).is_some());
        assert!(settled.answer(&client_at("11", 3)).is_none());
        assert!(settled.answer(&client_at("10", 3)).is_none());
    }

    #[test]
    fn a_writes_late_response_never_hides_a_deletion_the_watch_saw() {
        let settled = Settled::default();
        list(&settled, None);
        settled.watched(Kind::Secret, None, "apps", "billing-verifier", Some("7"));
        let ticket = settled.begin_write();
        // The write lands, then someone deletes the Secret, and the watch shows both
        // before the write's response is handled.
        settled.watched(Kind::Secret, None, "apps", "billing-verifier", Some("8"));
        settled.watched(Kind::Secret, None, "apps", "billing-verifier", None);
        settled.wrote(ticket, "apps", "billing-verifier", Some("8"));
        assert!(settled.known_absent("apps", "billing-verifier"));
        settled.remember(&client("10"), None, &[verifier(Some("8"))], None);
        assert!(settled.answer(&client("10")).is_none());
        // A write with no watch event since it began is recorded at once.
        let ticket = settled.begin_write();
        settled.wrote(ticket, "apps", "billing-verifier", Some("9"));
        assert!(!settled.known_absent("apps", "billing-verifier"));
    }

    #[test]
    fn a_tombstone_is_dropped_after_its_time_and_a_write_that_old_is_not_recorded() {
        let settled = Settled::default();
        list(&settled, None);
        let old = Instant::now() - TOMBSTONE_TTL - Duration::from_secs(1);
        let ticket = WriteTicket {
            event: settled.begin_write().event,
            at: old,
        };
        settled.wrote(ticket, "apps", "billing-verifier", Some("1"));
        assert!(settled.known_absent("apps", "billing-verifier"));
        settled.watched(Kind::Secret, None, "apps", "gone", None);
        {
            let mut seen = lock(&settled.seen);
            seen.tombstones.front_mut().expect("a tombstone").0 = old;
            seen.drop_old_tombstones(Instant::now());
            assert!(seen.objects.is_empty() && seen.tombstones.is_empty());
        }
    }

    mod model {
        //! The memory layer against a model of the cluster: whatever the order of watch
        //! events, write responses, relistings and spec changes, a remembered answer is
        //! given only when nothing it read has changed without a watch event still on
        //! its way, and only at the generation it was decided from.

        use super::*;
        use proptest::prelude::*;

        const NAMES: [&str; 2] = ["billing-verifier", "billing-credentials"];

        #[derive(Clone, Debug)]
        enum Op {
            /// Someone else changes (or deletes) a Secret; its watch event is pending.
            Change { object: usize, delete: bool },
            /// The watch delivers the oldest pending event of a Secret.
            Deliver { object: usize },
            /// keyward writes a Secret; its watch event is pending, and so is the
            /// handling of its response.
            Write { object: usize },
            /// The oldest pending write response is handled.
            Respond,
            /// The watch loses its place: pending events are lost, and it lists again.
            Relist,
            /// A reconcile decides from what it reads now — or, for a Secret it has just
            /// written, from what the write returned — and remembers the answer.
            Remember { from_write: [bool; 2] },
            /// The user changes the spec: a new generation and resourceVersion.
            SpecChange,
            /// A reconcile asks for the remembered answer.
            Ask,
        }

        fn op() -> impl Strategy<Value = Op> {
            let object = 0..NAMES.len();
            prop_oneof![
                (object.clone(), any::<bool>())
                    .prop_map(|(object, delete)| Op::Change { object, delete }),
                object.clone().prop_map(|object| Op::Deliver { object }),
                object.prop_map(|object| Op::Write { object }),
                Just(Op::Respond),
                Just(Op::Relist),
                any::<[bool; 2]>().prop_map(|from_write| Op::Remember { from_write }),
                Just(Op::SpecChange),
                Just(Op::Ask),
            ]
        }

        #[derive(Default)]
        struct Cluster {
            /// Each Secret's version as the API server has it (`None`: absent).
            truth: [Option<u64>; 2],
            /// Watch events not yet delivered, per Secret.
            pending: [VecDeque<Option<u64>>; 2],
            /// Write responses not yet handled: ticket, Secret, version written.
            responses: VecDeque<(WriteTicket, usize, u64)>,
            /// The version the last handled write response returned, per Secret.
            returned: [Option<u64>; 2],
            next_version: u64,
            client_version: u64,
            generation: i64,
            /// The inputs read by the last remembered decision, and its generation.
            read: Option<([Option<u64>; 2], i64)>,
        }

        impl Cluster {
            fn bump(&mut self) -> u64 {
                self.next_version += 1;
                self.next_version
            }
        }

        fn deliver(settled: &Settled, object: usize, version: Option<u64>) {
            let version = version.map(|version| version.to_string());
            settled.watched(
                Kind::Secret,
                None,
                "apps",
                NAMES[object],
                version.as_deref(),
            );
        }

        proptest! {
            // Interleavings that break it are rare among random ones: try many.
            #![proptest_config(ProptestConfig::with_cases(4000))]
            #[test]
            fn a_remembered_answer_never_hides_a_change(ops in proptest::collection::vec(op(), 1..60)) {
                let settled = Settled::default();
                let mut cluster = Cluster { client_version: 1, generation: 1, next_version: 1, ..Cluster::default() };
                settled.listing_started(Kind::Secret, None);
                settled.listing_done(Kind::Secret, None);
                for op in ops {
                    match op {
                        Op::Change { object, delete } => {
                            let version = (!delete).then(|| cluster.bump());
                            cluster.truth[object] = version;
                            cluster.pending[object].push_back(version);
                        }
                        Op::Deliver { object } => {
                            if let Some(version) = cluster.pending[object].pop_front() {
                                deliver(&settled, object, version);
                            }
                        }
                        Op::Write { object } => {
                            let ticket = settled.begin_write();
                            let version = cluster.bump();
                            cluster.truth[object] = Some(version);
                            cluster.pending[object].push_back(Some(version));
                            cluster.responses.push_back((ticket, object, version));
                        }
                        Op::Respond => {
                            if let Some((ticket, object, version)) = cluster.responses.pop_front() {
                                cluster.returned[object] = Some(version);
                                let version = version.to_string();
                                settled.wrote(ticket, "apps", NAMES[object], Some(&version));
                            }
                        }
                        Op::Relist => {
                            for pending in &mut cluster.pending {
                                pending.clear();
                            }
                            settled.listing_started(Kind::Secret, None);
                            for (object, version) in cluster.truth.iter().enumerate() {
                                if version.is_some() {
                                    deliver(&settled, object, *version);
                                }
                            }
                            settled.listing_done(Kind::Secret, None);
                        }
                        Op::Remember { from_write } => {
                            // A read sees the cluster as it is; a Secret taken as absent
                            // is read as absent (the create that follows would fail).
                            let read: [Option<u64>; 2] = std::array::from_fn(|object| {
                                match cluster.returned[object] {
                                    Some(returned) if from_write[object] => Some(returned),
                                    _ if settled.known_absent("apps", NAMES[object]) => None,
                                    _ => cluster.truth[object],
                                }
                            });
                            let versions = read.map(|version| version.map(|v| v.to_string()));
                            let inputs: Vec<Input<'_>> = (0..NAMES.len()).map(|object| Input {
                                kind: Kind::Secret,
                                namespace: "apps",
                                name: NAMES[object],
                                version: versions[object].as_deref(),
                            }).collect();
                            let decided = client_at(&cluster.client_version.to_string(), cluster.generation);
                            // The status write leaves the client one version on.
                            cluster.client_version += 1;
                            settled.remember(&decided, Some(&cluster.client_version.to_string()), &inputs, None);
                            cluster.read = Some((read, cluster.generation));
                        }
                        Op::SpecChange => {
                            cluster.generation += 1;
                            cluster.client_version += 1;
                        }
                        Op::Ask => {
                            let client = client_at(&cluster.client_version.to_string(), cluster.generation);
                            if settled.answer(&client).is_some() {
                                let (read, generation) = cluster.read.expect("an answer was remembered");
                                prop_assert_eq!(generation, cluster.generation, "answered from memory for another spec");
                                for object in 0..NAMES.len() {
                                    // A change not yet shown by the watch is fine: its
                                    // event will bring the client back.
                                    prop_assert!(
                                        read[object] == cluster.truth[object] || !cluster.pending[object].is_empty(),
                                        "answered from memory although {} changed unseen", NAMES[object]
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
