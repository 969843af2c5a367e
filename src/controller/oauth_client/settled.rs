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
//! The keyring behind an EncryptionKey is not an input of its own: any change to it that
//! matters changes the key's status, and so the key's resourceVersion.
//!
//! Names and versions are kept as 64-bit digests under a per-process random hash key: a
//! few bytes per object at tens of thousands of Secrets, and no name an attacker
//! chooses can be made to collide with another on purpose.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tokio::time::Instant;

use crate::crd::OAuthClient;

/// The kinds of object an answer depends on besides the client.
#[derive(Clone, Copy, Debug)]
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
    /// Latest resourceVersion seen by a watch, per object; deleted objects are absent.
    seen: Mutex<HashMap<u64, u64>>,
    /// The scopes (a namespace, or `None` for all) whose Secret watch has listed every
    /// Secret since it last (re)started: a Secret it has not seen there is absent.
    listed: Mutex<HashSet<Option<String>>>,
}

/// The version recorded for an object known to exist at a version not yet seen.
const UNSEEN: u64 = 0;

struct Answer {
    client_versions: [Option<u64>; 2],
    inputs: Vec<(u64, Option<u64>)>,
    /// `None`: wait for a change.
    recheck_at: Option<Instant>,
}

impl Settled {
    /// Records what a watch saw of an object: its resourceVersion, or `None` once it is
    /// deleted.
    pub fn seen(&self, kind: Kind, namespace: &str, name: &str, version: Option<&str>) {
        let object = self.object(kind, namespace, name);
        let mut seen = lock(&self.seen);
        match version {
            Some(version) => seen.insert(object, self.digest(version)),
            None => seen.remove(&object),
        };
    }

    /// Records that the Secret watch of `scope` (a namespace, or `None` for all) has
    /// listed everything (`true`), or is listing again (`false`).
    pub fn listed(&self, scope: Option<&str>, done: bool) {
        let mut listed = lock(&self.listed);
        if done {
            listed.insert(scope.map(str::to_owned));
        } else {
            listed.remove(&scope.map(str::to_owned));
        }
    }

    /// Whether Secret `namespace/name` is absent as far as a watch that has listed its
    /// namespace knows.
    pub fn known_absent(&self, namespace: &str, name: &str) -> bool {
        let listed = {
            let listed = lock(&self.listed);
            listed.contains(&None) || listed.contains(&Some(namespace.to_owned()))
        };
        listed && !lock(&self.seen).contains_key(&self.object(Kind::Secret, namespace, name))
    }

    /// Records that Secret `namespace/name` exists though no watch event has shown it yet
    /// (a create found it): it is not taken as absent, and no remembered answer holds.
    pub fn present(&self, namespace: &str, name: &str) {
        let object = self.object(Kind::Secret, namespace, name);
        lock(&self.seen).entry(object).or_insert(UNSEEN);
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
            .all(|(object, version)| seen.get(object) == version.as_ref());
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
        lock(&self.listed).clear();
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

    fn settled_with_verifier_seen(version: &str) -> Settled {
        let settled = Settled::default();
        settled.seen(Kind::Secret, "apps", "billing-verifier", Some(version));
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
        settled.seen(Kind::Secret, "apps", "billing-verifier", Some("8"));
        assert!(settled.answer(&client("10")).is_none());
        settled.seen(Kind::Secret, "apps", "billing-verifier", Some("7"));
        assert!(settled.answer(&client("10")).is_some());
        settled.seen(Kind::Secret, "apps", "billing-verifier", None);
        assert!(settled.answer(&client("10")).is_none());
    }

    #[test]
    fn an_input_read_before_the_watch_saw_it_voids_the_answer_until_it_does() {
        let settled = Settled::default();
        settled.remember(&client("10"), None, &[verifier(Some("7"))], None);
        assert!(settled.answer(&client("10")).is_none());
        settled.seen(Kind::Secret, "apps", "billing-verifier", Some("7"));
        assert!(settled.answer(&client("10")).is_some());
    }

    #[test]
    fn an_absent_input_that_appears_voids_the_answer() {
        let settled = Settled::default();
        settled.remember(&client("10"), None, &[verifier(None)], None);
        assert!(settled.answer(&client("10")).is_some());
        settled.seen(Kind::Secret, "apps", "billing-verifier", Some("1"));
        assert!(settled.answer(&client("10")).is_none());
    }

    #[test]
    fn a_same_named_object_of_another_kind_or_namespace_is_another_input() {
        let settled = settled_with_verifier_seen("7");
        settled.remember(&client("10"), None, &[verifier(Some("7"))], None);
        settled.seen(Kind::EncryptionKey, "apps", "billing-verifier", Some("9"));
        settled.seen(Kind::Secret, "other", "billing-verifier", Some("9"));
        assert!(settled.answer(&client("10")).is_some());
    }

    #[test]
    fn a_secret_is_known_absent_only_once_its_namespace_is_listed_and_while_unseen() {
        let settled = Settled::default();
        assert!(!settled.known_absent("apps", "billing-verifier"));
        settled.listed(Some("apps"), true);
        assert!(settled.known_absent("apps", "billing-verifier"));
        assert!(!settled.known_absent("other", "billing-verifier"));
        settled.seen(Kind::Secret, "apps", "billing-verifier", Some("7"));
        assert!(!settled.known_absent("apps", "billing-verifier"));
        settled.seen(Kind::Secret, "apps", "billing-verifier", None);
        assert!(settled.known_absent("apps", "billing-verifier"));
        settled.listed(Some("apps"), false);
        assert!(!settled.known_absent("apps", "billing-verifier"));
        settled.listed(None, true);
        assert!(settled.known_absent("other", "billing-verifier"));
        settled.clear();
        assert!(!settled.known_absent("other", "billing-verifier"));
    }

    #[test]
    fn a_secret_found_by_a_create_is_present_and_voids_answers_until_seen() {
        let settled = Settled::default();
        settled.listed(None, true);
        settled.remember(&client("10"), None, &[verifier(None)], None);
        settled.present("apps", "billing-verifier");
        assert!(!settled.known_absent("apps", "billing-verifier"));
        assert!(settled.answer(&client("10")).is_none());
        settled.remember(&client("10"), None, &[verifier(Some("7"))], None);
        assert!(settled.answer(&client("10")).is_none());
        settled.seen(Kind::Secret, "apps", "billing-verifier", Some("7"));
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
