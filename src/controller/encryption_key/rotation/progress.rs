//! The re-encryption progress a Job reports in its ConfigMap (`<key>-reencryption`), read
//! as untrusted input: any pod running as the key's `-reencrypt` ServiceAccount, and
//! anyone who may edit ConfigMaps in the namespace, can write it. Parsing never panics
//! and never trusts a count it cannot make sense of: every number comes out non-negative,
//! `contended` never exceeds `failed`, and `total` is never below `done + failed`. What
//! had to be corrected is named, so that it is reported instead of silently believed.

use std::collections::BTreeMap;

use crate::crd::encryption_key::ReencryptionProgress;

/// How many failure locations status lists.
const LISTED_FAILURES: usize = 20;

/// The longest failure location kept: a namespace, an object name and a data key.
const LOCATION_LENGTH: usize = 600;

/// Progress as read, and the fields that did not hold what a Job writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    /// The counts, made consistent.
    pub progress: ReencryptionProgress,
    /// The data keys whose values were not taken as they were (garbage, negative, out
    /// of range, or inconsistent with the other counts), in a fixed order.
    pub untrusted: Vec<&'static str>,
}

/// The progress in `data`; `None` until a Job has reported (no `done` entry).
pub fn parse(data: &BTreeMap<String, String>) -> Option<Reported> {
    if !data.contains_key("done") {
        return None;
    }
    let mut untrusted = Vec::new();
    let mut number = |key: &'static str| count(data, key, &mut untrusted);
    let total = number("total");
    let done = number("done");
    let failed = number("failed");
    let mut contended = number("contended");
    if contended > failed {
        // Of the failed, those that kept conflicting: never more than failed.
        untrusted.push("contended");
        contended = failed;
    }
    let mut total = total;
    let counted = done.saturating_add(failed);
    if total < counted {
        // A Job counts `total` as `done + failed`.
        untrusted.push("total");
        total = counted;
    }
    let failures = data
        .get("failures")
        .map(|text| {
            text.lines()
                .filter(|line| valid_location(line))
                .take(LISTED_FAILURES)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Some(Reported {
        progress: ReencryptionProgress {
            total,
            done,
            failed,
            contended,
            failures,
        },
        untrusted,
    })
}

/// The non-negative count under `key`: absent is 0 (Jobs of older versions do not write
/// every key), anything else that is not a non-negative integer is 0 and untrusted.
fn count(
    data: &BTreeMap<String, String>,
    key: &'static str,
    untrusted: &mut Vec<&'static str>,
) -> i64 {
    let Some(text) = data.get(key) else {
        return 0;
    };
    match text.trim().parse::<i64>() {
        Ok(value) if value >= 0 => value,
        _ => {
            untrusted.push(key);
            0
        }
    }
}

/// Whether `text` is a namespace/name/field location (object names and a data key),
/// never anything else the ConfigMap might have been made to hold.
fn valid_location(text: &str) -> bool {
    text.len() <= LOCATION_LENGTH
        && text.split('/').count() == 3
        && text.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn a_negative_failed_count_is_zero_and_reported_not_a_panic() {
        let reported = parse(&data(&[("done", "0"), ("failed", "-1")])).expect("reported");
        assert_eq!(reported.progress.failed, 0);
        assert_eq!(reported.progress.contended, 0);
        assert_eq!(reported.untrusted, vec!["failed"]);
    }

    #[test]
    fn what_a_job_writes_is_taken_as_it_is() {
        let reported = parse(&data(&[
            ("targetVersion", "2"),
            ("total", "12"),
            ("done", "9"),
            ("failed", "3"),
            ("contended", "1"),
            ("failures", "apps/a/x\napps/b/y\napps/c/z"),
        ]))
        .expect("reported");
        assert_eq!(
            reported.progress,
            ReencryptionProgress {
                total: 12,
                done: 9,
                failed: 3,
                contended: 1,
                failures: vec!["apps/a/x".into(), "apps/b/y".into(), "apps/c/z".into()],
            }
        );
        assert!(reported.untrusted.is_empty());
    }

    #[test]
    fn counts_that_disagree_are_corrected_and_named() {
        let reported = parse(&data(&[
            ("total", "1"),
            ("done", "9223372036854775807"),
            ("failed", "5"),
            ("contended", "99999999999999999999"),
        ]))
        .expect("reported");
        assert_eq!(reported.progress.total, i64::MAX);
        assert_eq!(reported.progress.contended, 0);
        assert_eq!(reported.untrusted, vec!["contended", "total"]);
    }

    #[test]
    fn nothing_is_reported_before_a_job_counted() {
        assert_eq!(parse(&data(&[("targetVersion", "2")])), None);
    }

    /// A value: anything at all, or something close to what a Job writes.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            any::<i64>().prop_map(|number| number.to_string()),
            any::<i128>().prop_map(|number| number.to_string()),
            (any::<i64>(), "[ \t\n+]{0,3}").prop_map(|(number, pad)| format!("{pad}{number}{pad}")),
            "[a-z0-9./\n-]{0,80}",
        ]
    }

    fn config_map_data() -> impl Strategy<Value = BTreeMap<String, String>> {
        let known = prop_oneof![
            Just("total".to_owned()),
            Just("done".to_owned()),
            Just("failed".to_owned()),
            Just("contended".to_owned()),
            Just("failures".to_owned()),
            Just("targetVersion".to_owned()),
            any::<String>(),
        ];
        proptest::collection::btree_map(known, value(), 0..8)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_progress_config_map_parses_to_consistent_counts(data in config_map_data()) {
            let Some(reported) = parse(&data) else {
                prop_assert!(!data.contains_key("done"));
                return Ok(());
            };
            let progress = &reported.progress;
            prop_assert!(progress.done >= 0 && progress.failed >= 0);
            prop_assert!(0 <= progress.contended && progress.contended <= progress.failed);
            prop_assert!(progress.total >= progress.done.saturating_add(progress.failed));
            prop_assert!(progress.failures.len() <= LISTED_FAILURES);
            prop_assert!(progress.failures.iter().all(|location| valid_location(location)));
            // What the rotation derives from the counts cannot overflow either.
            prop_assert!(progress.failed - progress.contended >= 0);
            prop_assert!(u64::try_from(progress.done).is_ok());
            // A count taken as written is one a Job could have written.
            for key in ["total", "done", "failed", "contended"] {
                if let Some(text) = data.get(key) && !reported.untrusted.contains(&key) {
                    let value = text.trim().parse::<i64>().unwrap_or(0);
                    prop_assert!(value >= 0);
                }
            }
        }
    }
}
