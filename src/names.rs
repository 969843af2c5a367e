//! The names keyward derives from an EncryptionKey's name for the objects of its
//! rotations, each bounded by the limit of the place it is used in.
//!
//! A derived name that fits is exactly the name keyward has always used, so objects of
//! existing installs keep their names; only a name that would exceed its limit is
//! shortened, to a prefix and a hash of the whole name, which stays stable and distinct.
//! The CRDs bound the names they admit (see `crd`), and the tests below prove that every
//! name derived from the longest admitted one fits.

use sha2::{Digest, Sha256};

/// The longest a Job's name may be: the Job controller labels the Job's pods with it
/// (`batch.kubernetes.io/job-name`), and a label value is at most 63 characters.
pub const JOB_NAME_LIMIT: usize = 63;

/// The longest name of a Secret, ConfigMap, ServiceAccount, Role or RoleBinding (a
/// DNS-1123 subdomain).
pub const OBJECT_NAME_LIMIT: usize = 253;

/// Hex digits of the hash that ends a shortened name.
const HASH_DIGITS: usize = 10;

/// `name` if it is at most `limit` characters long; otherwise [`shortened`].
pub fn bounded(name: String, limit: usize) -> String {
    if name.len() <= limit {
        return name;
    }
    shortened(&name, &name, limit)
}

/// The longest prefix of `name` that leaves room for `-` and a hash of `whole`, without
/// trailing `-` or `.` (so the result is still a DNS-1123 name), then the hash.
fn shortened(name: &str, whole: &str, limit: usize) -> String {
    let digest = Sha256::digest(whole.as_bytes());
    let hash = hex::encode(digest);
    let hash = hash.get(..HASH_DIGITS).unwrap_or(&hash);
    let room = limit.saturating_sub(HASH_DIGITS + 1);
    let end = name
        .char_indices()
        .map(|(index, _)| index)
        .chain(std::iter::once(name.len()))
        .take_while(|index| *index <= room)
        .last()
        .unwrap_or(0);
    let cut = name.get(..end).unwrap_or_default();
    let prefix = cut.trim_end_matches(['-', '.']);
    if prefix.is_empty() {
        hash.to_owned()
    } else {
        format!("{prefix}-{hash}")
    }
}

/// The volume name of EncryptionKey `key_name` in pod templates: `keyward-<name>` when
/// that is a DNS-1123 label (at most 63 characters, no dots), else that with its dots
/// made dashes and a hash of the key's name, so two keys never share a volume.
pub fn volume_name(key_name: &str) -> String {
    let name = format!("keyward-{key_name}");
    if name.len() <= VOLUME_NAME_LIMIT && !name.contains('.') {
        return name;
    }
    let dashed = name.replace('.', "-");
    shortened(&dashed, &name, VOLUME_NAME_LIMIT)
}

/// The longest name of a volume in a pod (a DNS-1123 label).
pub const VOLUME_NAME_LIMIT: usize = 63;

/// Name of the ServiceAccount, Role and RoleBinding the Jobs of `key_name` run as.
pub fn identity_name(key_name: &str) -> String {
    bounded(format!("{key_name}-reencrypt"), OBJECT_NAME_LIMIT)
}

/// Name of the ConfigMap the Jobs of `key_name` report progress in.
pub fn progress_name(key_name: &str) -> String {
    bounded(format!("{key_name}-reencryption"), OBJECT_NAME_LIMIT)
}

/// Name of the Secret that hands the external Job of a rotation to `target` its keys.
pub fn versions_secret_name(key_name: &str, target: i64) -> String {
    bounded(format!("{key_name}-versions-v{target}"), OBJECT_NAME_LIMIT)
}

/// The name of the re-encryption Job of `attempt` towards `target`.
pub fn job_name(key_name: &str, target: i64, attempt: i32) -> String {
    bounded(
        format!("{key_name}-reencrypt-v{target}-{attempt}"),
        JOB_NAME_LIMIT,
    )
}

/// The name of the backfill Job of `attempt` towards `target`: database values without
/// a key id rewritten under the current version before the new one is staged.
pub fn backfill_job_name(key_name: &str, target: i64, attempt: i32) -> String {
    bounded(
        format!("{key_name}-backfill-v{target}-{attempt}"),
        JOB_NAME_LIMIT,
    )
}

/// Name of the external Job (from `spec.reencryption.jobTemplate`) of `attempt`.
pub fn external_job_name(key_name: &str, target: i64, attempt: i32) -> String {
    bounded(
        format!("{key_name}-external-v{target}-{attempt}"),
        JOB_NAME_LIMIT,
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn longest_admitted(kind: &str) -> usize {
        crate::crd::longest_admitted_name(kind).expect("a kind keyward serves")
    }

    fn is_dns_label(name: &str) -> bool {
        name.len() <= 63
            && !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    }

    fn is_dns_subdomain(name: &str) -> bool {
        name.len() <= OBJECT_NAME_LIMIT
            && name.split('.').all(|part| {
                !part.is_empty()
                    && !part.starts_with('-')
                    && !part.ends_with('-')
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
    }

    /// The names that fit today stay exactly what they were: renaming any would orphan
    /// the objects of existing installs.
    #[test]
    fn a_derived_name_that_fits_is_the_name_it_always_was() {
        assert_eq!(identity_name("apim"), "apim-reencrypt");
        assert_eq!(progress_name("apim"), "apim-reencryption");
        assert_eq!(versions_secret_name("apim", 2), "apim-versions-v2");
        assert_eq!(job_name("apim", 2, 0), "apim-reencrypt-v2-0");
        assert_eq!(external_job_name("apim", 2, 1), "apim-external-v2-1");
        assert_eq!(backfill_job_name("apim", 2, 0), "apim-backfill-v2-0");
        assert_eq!(crate::store::keyring::secret_name("apim"), "apim-keyring");
        assert_eq!(
            crate::store::distribution::secret_name("apim"),
            "apim-distribution"
        );
        let fits = "a".repeat(44);
        assert_eq!(job_name(&fits, 2, 0), format!("{fits}-reencrypt-v2-0"));
    }

    /// Every name derived from the longest key name the CRD admits fits where it is used.
    #[test]
    fn every_name_derived_from_the_longest_admitted_key_name_fits_its_limit() {
        let longest = longest_admitted("EncryptionKey");
        let mut dotted: String = "ab.cd-".chars().cycle().take(longest).collect();
        if dotted.ends_with(['-', '.']) {
            dotted.pop();
            dotted.push('z');
        }
        for key in ["k".repeat(longest), dotted] {
            assert!(is_dns_subdomain(&key), "{key}");
            assert_eq!(key.len(), longest);
            let job_names = [
                job_name(&key, i64::MAX, i32::MAX),
                external_job_name(&key, i64::MAX, i32::MAX),
                backfill_job_name(&key, i64::MAX, i32::MAX),
                job_name(&key, 2, 0),
                external_job_name(&key, 2, 0),
            ];
            for name in &job_names {
                assert!(name.len() <= JOB_NAME_LIMIT, "{name} is too long for a Job");
                assert!(is_dns_subdomain(name), "{name} is not a DNS-1123 subdomain");
            }
            let objects = [
                identity_name(&key),
                progress_name(&key),
                versions_secret_name(&key, i64::MAX),
                crate::store::keyring::secret_name(&key),
                crate::store::distribution::secret_name(&key),
            ];
            for name in &objects {
                assert!(is_dns_subdomain(name), "{name} is not a valid object name");
            }
            // The key's name is a label value of every object it owns.
            assert!(key.len() <= 63);
            let volume = crate::workload::volume_name(&key);
            assert!(is_dns_label(&volume), "{volume} is not a DNS-1123 label");
            for annotation in [
                crate::workload::hash_annotation(&key),
                crate::workload::projection_annotation(&key),
            ] {
                let (_, name) = annotation.split_once('/').expect("a prefixed key");
                assert!(name.len() <= 63, "annotation {annotation} is too long");
            }
            assert!(crate::store::workload_manager(&key).len() <= 128);
        }
    }

    /// An OAuthClient's name is the label value of its Secrets, and its Secrets' default
    /// names derive from it.
    #[test]
    fn every_name_derived_from_the_longest_admitted_client_name_fits_its_limit() {
        let longest = longest_admitted("OAuthClient");
        assert!(longest <= 63, "an OAuthClient's name is a label value");
        let client = "c".repeat(longest);
        assert!(is_dns_subdomain(&format!("{client}-credentials")));
        assert!(is_dns_subdomain(&format!("{client}-verifier")));
    }

    /// A dot is fine in a key's name and not in a volume's: two keys whose names differ
    /// only there still get volumes of their own.
    #[test]
    fn a_key_name_with_dots_gets_a_volume_name_of_its_own() {
        assert_eq!(volume_name("apim"), "keyward-apim");
        let dotted = volume_name("api.manager");
        assert!(is_dns_label(&dotted), "{dotted}");
        assert!(dotted.starts_with("keyward-api-manager-"));
        assert_ne!(dotted, volume_name("api-manager"));
    }

    proptest! {
        /// Shortened names stay within their limit, valid and distinct for distinct inputs.
        #[test]
        fn shortened_names_fit_and_stay_distinct(
            key in "[a-z0-9]([-.a-z0-9]{0,60}[a-z0-9])?",
            target in 1i64..i64::MAX,
            attempt in 0i32..i32::MAX,
        ) {
            let name = job_name(&key, target, attempt);
            prop_assert!(name.len() <= JOB_NAME_LIMIT);
            prop_assert!(!name.ends_with(['-', '.']));
            prop_assert_ne!(name, job_name(&key, target, attempt.wrapping_add(1).max(0)));
        }
    }
}
