//! The databases of a run (`spec.reencryption.databases`): WSO2's own ciphertext,
//! rewritten row by row under the primary version as a WSO2 node holding the keyring as
//! it is now reads it (WSO2's `key` the primary, `old_key` the decrypt-only version).
//! While backfilling that is the primary alone, so values without a key id gain one;
//! while re-encrypting, values under the previous version move to the new one.
//!
//! What a run did in each database — its checkpoint and its counts — is carried in the
//! progress ConfigMap (`databases`), so a Job pod started again after a kill resumes
//! where the last one was and still reports the rows it left. The operator starts every
//! attempt from a ConfigMap that holds none of it.
//!
//! Connection URLs are read from the Secrets the spec names and never leave this module
//! except into the driver; rows are named by database, column and key, never by value.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde::{Deserialize, Serialize};

use super::Error;
use crate::crd::database::Database;
use crate::crypto::Keyring;
use crate::crypto::wso2::EncryptionSettings;
use crate::database::{
    Checkpoint, Connection, ConnectionUrl, DatabaseCensus, MAX_PROBLEMS, RewriteOptions,
    RewriteProgress, RowProblem,
};

/// The progress ConfigMap's key for what the run did in its databases.
pub const CONFIG_MAP_KEY: &str = "databases";

/// How often a rewrite's progress is published while it runs.
const PUBLISH_EVERY: Duration = Duration::from_secs(2);

/// What a run did in one database: where it got to and what it counted, across every
/// pod of the Job so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseProgress {
    pub checkpoint: Checkpoint,
    pub progress: RewriteProgress,
}

/// What a run did in each database, by the database's name in the spec.
pub type Databases = BTreeMap<String, DatabaseProgress>;

/// Reads what an earlier pod of the same Job carried in the ConfigMap's `data`: nothing
/// when the run there finished (a new run starts over) or when it is not readable.
pub fn carried(data: Option<&BTreeMap<String, String>>, target_version: i64) -> Databases {
    let Some(data) = data else {
        return Databases::new();
    };
    let same_target = data.get("targetVersion") == Some(&target_version.to_string());
    let unfinished = data.get("finished").map(String::as_str) != Some("true");
    if !same_target || !unfinished {
        return Databases::new();
    }
    data.get(CONFIG_MAP_KEY)
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// Connects to `database` with the URL its connection Secret holds, in `secrets`.
pub async fn connect(secrets: &Api<Secret>, database: &Database) -> Result<Connection, Error> {
    let reference = &database.connection_secret_ref;
    let unreadable = |reason: &str| Error::ConnectionSecret {
        database: database.name.clone(),
        secret: reference.name.clone(),
        key: reference.key.clone(),
        reason: reason.to_owned(),
    };
    let secret = secrets
        .get_opt(&reference.name)
        .await
        .map_err(|_| unreadable("it cannot be read"))?
        .ok_or_else(|| unreadable("it does not exist"))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(&reference.key))
        .ok_or_else(|| unreadable("it has no such key"))?;
    let text = std::str::from_utf8(&bytes.0).map_err(|_| unreadable("its value is not text"))?;
    let url = ConnectionUrl::new(text);
    Connection::connect(&database.name, database.engine, &url)
        .await
        .map_err(Error::Database)
}

/// Rewrites every database of `databases` under the keyring's primary, resuming from
/// `carried`; `publish` is called with what was done so far every few seconds and after
/// each database.
pub async fn rewrite_all<F, Fut>(
    secrets: &Api<Secret>,
    databases: &[Database],
    keyring: &Keyring,
    options: &RewriteOptions,
    mut carried: Databases,
    mut publish: F,
) -> Result<Databases, Error>
where
    F: FnMut(Databases) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let (primary, old) = keyring.wso2_keys().map_err(Error::Keys)?;
    let read = EncryptionSettings {
        key: &primary.material,
        old_key: Some(&old.material),
        enable_key_id: true,
    };
    for database in databases {
        let base = carried.remove(&database.name).unwrap_or_default();
        let connection = connect(secrets, database).await?;
        tracing::info!(
            database = %database.name,
            target_version = primary.version,
            "re-encrypting the database's WSO2 values"
        );
        let latest = Mutex::new(base.clone());
        let outcome = {
            let rewriting = crate::database::rewrite(
                &connection,
                &database.columns,
                &read,
                &primary.material,
                options,
                base.checkpoint.clone(),
                |checkpoint, progress| {
                    let mut latest = latest.lock().unwrap_or_else(PoisonError::into_inner);
                    *latest = DatabaseProgress {
                        checkpoint: checkpoint.clone(),
                        progress: added(&base.progress, progress),
                    };
                },
            );
            let mut rewriting = std::pin::pin!(rewriting);
            let mut ticks = tokio::time::interval(PUBLISH_EVERY);
            ticks.tick().await;
            loop {
                tokio::select! {
                    outcome = &mut rewriting => break outcome,
                    _ = ticks.tick() => {
                        let so_far = latest.lock().unwrap_or_else(PoisonError::into_inner).clone();
                        let mut all = carried.clone();
                        all.insert(database.name.clone(), so_far);
                        publish(all).await?;
                    }
                }
            }
        };
        connection.close().await;
        let progress = outcome.map_err(Error::Database)?;
        let done = latest.into_inner().unwrap_or_else(PoisonError::into_inner);
        carried.insert(
            database.name.clone(),
            DatabaseProgress {
                checkpoint: done.checkpoint,
                progress: added(&base.progress, &progress),
            },
        );
        publish(carried.clone()).await?;
    }
    Ok(carried)
}

/// The counts of `base` and `run` together: what every pod of a Job did.
fn added(base: &RewriteProgress, run: &RewriteProgress) -> RewriteProgress {
    let mut problems = base.problems.clone();
    problems.extend(run.problems.iter().cloned());
    problems.truncate(MAX_PROBLEMS);
    RewriteProgress {
        seen: base.seen + run.seen,
        rewritten: base.rewritten + run.rewritten,
        current: base.current + run.current,
        failed: base.failed + run.failed,
        contended: base.contended + run.contended,
        too_wide: base.too_wide + run.too_wide,
        rsa: base.rsa + run.rsa,
        not_ciphertext: base.not_ciphertext + run.not_ciphertext,
        absent: base.absent + run.absent,
        writes: base.writes + run.writes,
        problems,
        skipped: run.skipped.clone(),
    }
}

/// A database's share of a run's report: (rewritten, left, of those contended, the
/// rows left as failure locations).
pub fn report_share(databases: &Databases) -> (u64, u64, u64, Vec<String>) {
    let (mut done, mut failed, mut contended, mut failures) = (0, 0, 0, Vec::new());
    for progress in databases.values().map(|database| &database.progress) {
        done += progress.rewritten;
        // Rows left for any reason keep the old version: RSA and too-wide ones too.
        failed += progress.failed + progress.contended + progress.too_wide + progress.rsa;
        contended += progress.contended;
        failures.extend(progress.problems.iter().map(location));
    }
    (done, failed, contended, failures)
}

/// A row left, as a failure location of the progress ConfigMap and status:
/// `database/TABLE.COLUMN/KEY` in the characters locations allow, so no key value can
/// shape what a reader of status sees.
pub fn location(problem: &RowProblem) -> String {
    let safe = |text: &str| -> String {
        text.chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '.' | '_' => c,
                _ => '_',
            })
            .collect()
    };
    let key: Vec<String> = problem
        .row
        .key
        .iter()
        .map(|(_, value)| match value {
            crate::database::KeyValue::Integer(value) => value.to_string(),
            crate::database::KeyValue::Text(value) => safe(value),
        })
        .collect();
    format!(
        "{}/{}/{}",
        safe(&problem.database),
        safe(&problem.row.column),
        key.join(".")
    )
}

/// The key-free census of `database`: values per key version of `keyring` (by key id)
/// and values WSO2 reads with `old_key` whatever wrote them (no key id, or legacy
/// AES/ECB), with cells too large to read.
pub async fn census(
    secrets: &Api<Secret>,
    database: &Database,
    keyring: &Keyring,
    page_size: u32,
) -> Result<(BTreeMap<i64, u64>, u64), Error> {
    let connection = connect(secrets, database).await?;
    let counted = crate::database::census(&connection, &database.columns, page_size).await;
    connection.close().await;
    let counted: DatabaseCensus = counted.map_err(Error::Database)?;
    let mut versions = BTreeMap::new();
    for version in &keyring.versions {
        let rows = counted.rows_under(&crate::crypto::wso2::KeyId::of(&version.material));
        if rows > 0 {
            versions.insert(version.version, rows);
        }
    }
    // Cells too large to read may hold anything: they keep every key, as values without
    // a key id do, until they are fixed or removed.
    let without_key_id =
        counted.rows_without_key_id() + counted.legacy_ecb_rows() + counted.rows_unread();
    Ok((versions, without_key_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::{KeyValue, Problem, RowRef};

    fn problem(key: KeyValue) -> RowProblem {
        RowProblem {
            database: "apim-db".to_owned(),
            row: RowRef {
                table: "IDN_OAUTH_CONSUMER_APPS".to_owned(),
                column: "IDN_OAUTH_CONSUMER_APPS.CONSUMER_SECRET".to_owned(),
                key: vec![("ID".to_owned(), key)],
            },
            problem: Problem::Rsa,
        }
    }

    #[test]
    fn a_row_left_is_named_by_database_column_and_key_in_safe_characters() {
        assert_eq!(
            location(&problem(KeyValue::Integer(10))),
            "apim-db/IDN_OAUTH_CONSUMER_APPS.CONSUMER_SECRET/10"
        );
        let odd = location(&problem(KeyValue::Text("a/b c\n<x>".to_owned())));
        assert_eq!(
            odd,
            "apim-db/IDN_OAUTH_CONSUMER_APPS.CONSUMER_SECRET/a_b_c__x_"
        );
        assert_eq!(odd.split('/').count(), 3);
    }

    #[test]
    fn a_finished_or_other_targets_run_carries_nothing_and_an_unfinished_one_resumes() {
        let mut databases = Databases::new();
        databases.insert("apim-db".to_owned(), DatabaseProgress::default());
        let data = |target: &str, finished: &str| {
            BTreeMap::from([
                ("targetVersion".to_owned(), target.to_owned()),
                ("finished".to_owned(), finished.to_owned()),
                (
                    CONFIG_MAP_KEY.to_owned(),
                    serde_json::to_string(&databases).expect("serializes"),
                ),
            ])
        };
        assert_eq!(carried(Some(&data("2", "false")), 2), databases);
        assert!(carried(Some(&data("2", "true")), 2).is_empty());
        assert!(carried(Some(&data("3", "false")), 2).is_empty());
        assert!(carried(None, 2).is_empty());
        let mut garbage = data("2", "false");
        garbage.insert(CONFIG_MAP_KEY.to_owned(), "{not json".to_owned());
        assert!(carried(Some(&garbage), 2).is_empty());
    }

    #[test]
    fn every_row_left_keeps_the_old_version_and_only_contended_ones_are_retried() {
        let progress = RewriteProgress {
            rewritten: 7,
            failed: 1,
            contended: 2,
            too_wide: 1,
            rsa: 1,
            problems: vec![problem(KeyValue::Integer(1))],
            ..RewriteProgress::default()
        };
        let databases = Databases::from([(
            "apim-db".to_owned(),
            DatabaseProgress {
                checkpoint: Checkpoint::default(),
                progress,
            },
        )]);
        let (done, failed, contended, failures) = report_share(&databases);
        assert_eq!((done, failed, contended), (7, 5, 2));
        assert_eq!(failures.len(), 1);
    }
}
