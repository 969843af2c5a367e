//! The counts of a re-encryption run and their publication in the progress ConfigMap.
//!
//! It owns the tally — values rewritten, write requests sent, and the failures, kept per
//! Secret so that a listing started over (an expired continue token) counts each value
//! once — and the ConfigMap's data. Failures are named `namespace/name/field`; no value,
//! ciphertext or plaintext, ever reaches the tally, the ConfigMap or a log line.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::{Error, FIELD_MANAGER, Report};

/// How many failures the ConfigMap lists; `failed` counts them all.
pub const LISTED_FAILURES: usize = 100;

/// Why a value was not rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// It does not decrypt: no retry will change that.
    Undecryptable,
    /// Its Secret kept changing under the run until the attempts ran out: a later run
    /// can still rewrite it.
    Contended,
}

/// A value that was not rewritten: its data key and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub field: String,
    pub cause: Cause,
}

/// What a run has done so far.
#[derive(Debug, Default)]
pub struct Tally {
    done: u64,
    writes: u64,
    /// The failures of each Secret as last decided, by Secret name.
    failures: BTreeMap<String, Vec<Failure>>,
}

impl Tally {
    /// Counts one write request sent to the API server, whatever its outcome.
    pub fn wrote(&mut self) {
        self.writes += 1;
    }

    /// Records the outcome of Secret `name`: `rewritten` values written, `failures` left.
    /// Replaces what an earlier pass over the same Secret recorded as failed.
    pub fn settle(&mut self, name: &str, rewritten: usize, failures: Vec<Failure>) {
        self.done += u64::try_from(rewritten).unwrap_or(u64::MAX);
        if failures.is_empty() {
            self.failures.remove(name);
        } else {
            self.failures.insert(name.to_owned(), failures);
        }
    }

    /// The report of a run in `namespace` to `target_version`, `elapsed` after it began.
    pub fn report(&self, namespace: &str, target_version: i64, elapsed: Duration) -> Report {
        let all = self
            .failures
            .iter()
            .flat_map(|(name, failures)| failures.iter().map(move |failure| (name, failure)));
        let mut failures = Vec::new();
        let mut contended = 0;
        for (name, failure) in all {
            failures.push(format!("{namespace}/{name}/{}", failure.field));
            if failure.cause == Cause::Contended {
                contended += 1;
            }
        }
        let failed = u64::try_from(failures.len()).unwrap_or(u64::MAX);
        Report {
            target_version,
            total: self.done + failed,
            done: self.done,
            failed,
            contended,
            failures,
            writes: self.writes,
            elapsed,
            databases: super::Databases::new(),
        }
    }
}

/// The progress ConfigMap's data for `report`.
pub fn config_map_data(report: &Report, finished: bool) -> BTreeMap<String, String> {
    let listed: Vec<&str> = report
        .failures
        .iter()
        .take(LISTED_FAILURES)
        .map(String::as_str)
        .collect();
    // Truncated, never rounded: a reader dividing writes by it must not see a higher
    // rate than the run kept.
    let elapsed = format!(
        "{}.{:03}",
        report.elapsed.as_secs(),
        report.elapsed.subsec_millis()
    );
    [
        ("targetVersion", report.target_version.to_string()),
        ("total", report.total.to_string()),
        ("done", report.done.to_string()),
        ("failed", report.failed.to_string()),
        ("contended", report.contended.to_string()),
        ("failures", listed.join("\n")),
        ("writes", report.writes.to_string()),
        ("elapsedSeconds", elapsed),
        ("finished", finished.to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .chain(
        (!report.databases.is_empty())
            .then(|| serde_json::to_string(&report.databases).ok())
            .flatten()
            .map(|databases| (super::databases::CONFIG_MAP_KEY.to_owned(), databases)),
    )
    .collect()
}

/// The progress ConfigMap of a run.
pub struct Progress {
    config_maps: Api<ConfigMap>,
    namespace: String,
    name: String,
}

impl Progress {
    /// ConfigMap `name` in `namespace`.
    pub fn new(client: &kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            config_maps: Api::namespaced(client.clone(), namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The ConfigMap's data as it is now; `None` when it does not exist.
    pub async fn data(&self) -> Result<Option<BTreeMap<String, String>>, Error> {
        let found = self
            .config_maps
            .get_opt(&self.name)
            .await
            .map_err(|source| Error::Progress {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            })?;
        Ok(found.and_then(|config_map| config_map.data))
    }

    /// Writes `report` into the ConfigMap, creating it when absent. Server-side apply as
    /// `keyward-reencrypt`: the keys above are the run's, and whatever the operator put
    /// on the ConfigMap (labels, owner) stays.
    pub async fn publish(&self, report: &Report, finished: bool) -> Result<(), Error> {
        let document = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.name},
            "data": config_map_data(report, finished),
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.config_maps
            .patch(&self.name, &params, &Patch::Apply(&document))
            .await
            .map_err(|source| Error::Progress {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(field: &str, cause: Cause) -> Failure {
        Failure {
            field: field.to_owned(),
            cause,
        }
    }

    #[test]
    fn a_secret_settled_again_replaces_its_failures_and_counts_each_value_once() {
        let mut tally = Tally::default();
        tally.settle("a", 2, vec![failure("x", Cause::Undecryptable)]);
        tally.settle("b", 0, vec![failure("y", Cause::Contended)]);
        tally.wrote();
        tally.wrote();
        tally.wrote();
        // The listing started over: "a" is seen again with the same bad value (its good
        // ones are under the primary now), "b" goes through this time.
        tally.settle("a", 0, vec![failure("x", Cause::Undecryptable)]);
        tally.settle("b", 1, Vec::new());
        let report = tally.report("apps", 2, Duration::from_millis(1500));
        assert_eq!(
            (report.total, report.done, report.failed, report.contended),
            (4, 3, 1, 0)
        );
        assert_eq!(report.failures, ["apps/a/x"]);
        assert_eq!(report.writes, 3);
        assert_eq!(report.undecryptable(), 1);
    }

    #[test]
    fn contended_values_are_failed_but_told_apart() {
        let mut tally = Tally::default();
        tally.settle(
            "a",
            0,
            vec![
                failure("x", Cause::Contended),
                failure("y", Cause::Undecryptable),
            ],
        );
        let report = tally.report("apps", 2, Duration::ZERO);
        assert_eq!((report.failed, report.contended), (2, 1));
        assert_eq!(report.undecryptable(), 1);
        assert_eq!(report.failures, ["apps/a/x", "apps/a/y"]);
    }

    #[test]
    fn the_config_map_lists_at_most_a_hundred_failures_and_truncates_elapsed_time() {
        let mut tally = Tally::default();
        for index in 0..150 {
            tally.settle(
                &format!("s-{index:03}"),
                0,
                vec![failure("f", Cause::Undecryptable)],
            );
        }
        let report = tally.report("apps", 3, Duration::from_nanos(2_999_999_999));
        let data = config_map_data(&report, true);
        assert_eq!(data["failures"].lines().count(), LISTED_FAILURES);
        assert_eq!(data["failures"].lines().next(), Some("apps/s-000/f"));
        assert_eq!(data["failed"], "150");
        assert_eq!(data["total"], "150");
        assert_eq!(data["targetVersion"], "3");
        assert_eq!(data["elapsedSeconds"], "2.999");
        assert_eq!(data["finished"], "true");
        assert_eq!(data["writes"], "0");
        assert_eq!(config_map_data(&report, false)["finished"], "false");
    }

    #[test]
    fn what_a_run_reports_the_operator_reads_back_whole_and_trusted() {
        let mut tally = Tally::default();
        tally.settle("a", 7, vec![failure("x", Cause::Contended)]);
        tally.settle("b", 2, vec![failure("y", Cause::Undecryptable)]);
        let report = tally.report("apps", 2, Duration::from_secs(1));
        let read = crate::controller::encryption_key::rotation::progress::parse(&config_map_data(
            &report, true,
        ))
        .expect("progress");
        assert!(read.untrusted.is_empty(), "{:?}", read.untrusted);
        let progress = read.progress;
        assert_eq!(
            (
                progress.total,
                progress.done,
                progress.failed,
                progress.contended
            ),
            (11, 9, 2, 1)
        );
        assert_eq!(progress.failures, ["apps/a/x", "apps/b/y"]);
    }
}
