//! Which objects name a Secret, so a Secret event is mapped to them by lookups, never by
//! a scan of every object.
//!
//! Secrets named by convention (`<client>-verifier`, `<client>-credentials`) are found from
//! their own name. The index holds only the names a spec chooses itself (a custom
//! verifier or delivery name, an import source, a key source): each reconcile registers
//! what its object names now, replacing what it named before.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// A namespace and a name.
type Key = (String, String);

/// Secret names chosen by specs, and the objects that chose them.
#[derive(Debug, Default)]
pub struct SecretIndex {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (namespace, Secret) → the objects that name it.
    by_secret: HashMap<Key, BTreeSet<String>>,
    /// (namespace, object) → the Secrets it names.
    by_object: HashMap<Key, Vec<String>>,
}

impl SecretIndex {
    /// Records that `object` in `namespace` names `secrets` now (and nothing else).
    pub fn register(&self, namespace: &str, object: &str, secrets: Vec<String>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (namespace.to_owned(), object.to_owned());
        if inner.by_object.get(&key) == Some(&secrets) {
            return;
        }
        for old in inner.by_object.remove(&key).unwrap_or_default() {
            let secret = (namespace.to_owned(), old);
            if let Some(users) = inner.by_secret.get_mut(&secret) {
                users.remove(object);
                if users.is_empty() {
                    inner.by_secret.remove(&secret);
                }
            }
        }
        for secret in &secrets {
            inner
                .by_secret
                .entry((namespace.to_owned(), secret.clone()))
                .or_default()
                .insert(object.to_owned());
        }
        if !secrets.is_empty() {
            inner.by_object.insert(key, secrets);
        }
    }

    /// The objects of `namespace` that name `secret`.
    pub fn users(&self, namespace: &str, secret: &str) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .by_secret
            .get(&(namespace.to_owned(), secret.to_owned()))
            .map(|users| users.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The object a conventionally named Secret belongs to: `name` without `suffix`.
pub fn named_for<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    name.strip_suffix(suffix)
        .filter(|object| !object.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registering_again_replaces_what_an_object_named_before() {
        let index = SecretIndex::default();
        index.register("team", "portal", vec!["source".into(), "custom".into()]);
        index.register("team", "billing", vec!["source".into()]);
        assert_eq!(index.users("team", "source"), ["billing", "portal"]);
        assert_eq!(index.users("other", "source"), Vec::<String>::new());

        index.register("team", "portal", vec!["custom".into()]);
        assert_eq!(index.users("team", "source"), ["billing"]);
        assert_eq!(index.users("team", "custom"), ["portal"]);

        index.register("team", "portal", Vec::new());
        index.register("team", "billing", Vec::new());
        let inner = index.inner.lock().unwrap();
        assert!(inner.by_secret.is_empty() && inner.by_object.is_empty());
    }

    #[test]
    fn conventional_names_lead_back_to_their_object() {
        assert_eq!(named_for("portal-verifier", "-verifier"), Some("portal"));
        assert_eq!(named_for("-verifier", "-verifier"), None);
        assert_eq!(named_for("portal-credentials", "-verifier"), None);
    }
}
