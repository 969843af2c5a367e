//! The keyrings of EncryptionKeys, shared by the reconciles of the OAuthClients that
//! encrypt under them: an `Encrypted` client reads its key's keyring (and key-encryption
//! key) once, not on every reconcile.
//!
//! The OAuthClient controller's Secret watch drops an entry as soon as the keyring or
//! key-encryption key Secret it came from changes. A read names those Secrets before it
//! starts, and its keyring is kept only if neither changed meanwhile, so an entry never
//! outlives a change it raced with; a new term of leadership starts empty, as events
//! were not seen while standing by.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::crypto::Keyring;

/// A namespace and an EncryptionKey's name.
type KeyRef = (String, String);

/// Keyrings by EncryptionKey, with the Secrets each was read from.
#[derive(Debug, Default)]
pub struct KeyringCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<KeyRef, Entry>,
    /// The Secrets keyrings are read from, with the number of the last change seen to
    /// each (0: none yet).
    sources: HashMap<(String, String), u64>,
    /// Changes seen so far.
    changes: u64,
}

#[derive(Debug)]
struct Entry {
    keyring: Keyring,
    /// The keyring Secret and the key-encryption key's Secret, if any.
    sources: Vec<String>,
}

/// Where a read began: its keyring is kept only if its Secrets did not change since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Since(u64);

impl KeyringCache {
    /// The cached keyring of `key` in `namespace`.
    pub fn get(&self, namespace: &str, key: &str) -> Option<Keyring> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .entries
            .get(&(namespace.to_owned(), key.to_owned()))
            .map(|entry| entry.keyring.clone())
    }

    /// Starts a read of the Secrets `sources` of `namespace`: from now on their changes
    /// count against it.
    pub fn begin(&self, namespace: &str, sources: &[String]) -> Since {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for source in sources {
            inner
                .sources
                .entry((namespace.to_owned(), source.clone()))
                .or_insert(0);
        }
        Since(inner.changes)
    }

    /// Keeps `keyring`, read from `sources` since `since`, unless one of them changed
    /// meanwhile.
    pub fn insert(
        &self,
        since: Since,
        namespace: &str,
        key: &str,
        keyring: Keyring,
        sources: Vec<String>,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let unchanged = sources.iter().all(|source| {
            inner
                .sources
                .get(&(namespace.to_owned(), source.clone()))
                .is_some_and(|last| *last <= since.0)
        });
        if unchanged {
            let entry = Entry { keyring, sources };
            inner
                .entries
                .insert((namespace.to_owned(), key.to_owned()), entry);
        }
    }

    /// Notes that Secret `secret` of `namespace` changed (or appeared, or went): drops
    /// every keyring read from it.
    pub fn changed(&self, namespace: &str, secret: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let source = (namespace.to_owned(), secret.to_owned());
        if !inner.sources.contains_key(&source) {
            return;
        }
        inner.changes += 1;
        let changes = inner.changes;
        inner.sources.insert(source, changes);
        inner.entries.retain(|(entry_namespace, _), entry| {
            entry_namespace != namespace || !entry.sources.iter().any(|s| s == secret)
        });
    }

    /// Forgets everything (a new term of leadership): reads under way are not kept.
    pub fn clear(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.changes += 1;
        let changes = inner.changes;
        inner.entries.clear();
        for last in inner.sources.values_mut() {
            *last = changes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyMaterial;
    use k8s_openapi::jiff::Timestamp;

    fn keyring() -> Keyring {
        Keyring::new("apim", KeyMaterial::generate().unwrap(), Timestamp::now())
    }

    fn sources() -> Vec<String> {
        vec!["apim-keyring".into(), "kek".into()]
    }

    #[test]
    fn a_change_to_either_source_drops_the_keyring() {
        let cache = KeyringCache::default();
        for changed in ["apim-keyring", "kek"] {
            let since = cache.begin("team", &sources());
            cache.insert(since, "team", "apim", keyring(), sources());
            assert!(cache.get("team", "apim").is_some());
            cache.changed("other", changed);
            cache.changed("team", "unrelated");
            assert!(
                cache.get("team", "apim").is_some(),
                "other Secrets leave it"
            );
            cache.changed("team", changed);
            assert!(cache.get("team", "apim").is_none(), "{changed} drops it");
        }
    }

    #[test]
    fn a_keyring_read_across_a_change_of_its_secrets_is_not_kept() {
        let cache = KeyringCache::default();
        // The first read of a key: nothing cached yet, and its keyring changes.
        let since = cache.begin("team", &sources());
        cache.changed("team", "apim-keyring");
        cache.insert(since, "team", "apim", keyring(), sources());
        assert!(cache.get("team", "apim").is_none());

        // A change elsewhere does not spoil the read.
        let since = cache.begin("team", &sources());
        cache.changed("team", "unrelated");
        cache.insert(since, "team", "apim", keyring(), sources());
        assert!(cache.get("team", "apim").is_some());

        let since = cache.begin("team", &sources());
        cache.clear();
        cache.insert(since, "team", "apim", keyring(), sources());
        assert!(
            cache.get("team", "apim").is_none(),
            "a new term starts empty"
        );
    }
}
