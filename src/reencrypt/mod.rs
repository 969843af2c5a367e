//! The re-encryption engine: the re-encryption Job's run (`keyward reencrypt`, rotation
//! step 3) and the verification scan (`keyward scan`, step 4).
//!
//! A [`run`] loads the EncryptionKey's keyring and lists the selected Secrets of the
//! key's namespace in pages. Every value that is an envelope of this key under a version
//! other than the primary is decrypted with the context it was sealed for (namespace,
//! Secret name, [`envelope_field`] of its data key), sealed again under the primary
//! with the same context, and the Secret is written back with `replace` at the
//! `resourceVersion` it was read at. On a conflict the Secret is read again and decided
//! again from what the concurrent writer left, a bounded number of times. Up to
//! [`WRITERS`] Secrets of a page are settled at once, since each costs a round trip and
//! the API server serves many in parallel; the next page is listed meanwhile. Writes are
//! paced to the rate limit whatever the concurrency; progress goes to a ConfigMap after
//! every page.
//!
//! Memory is bounded by bytes, not only by counts: pages are parsed one Secret at a time
//! as they stream in (see `pages.rs`); a scan keeps only its counts, and a run keeps whole
//! only the Secrets that hold envelopes of this key under older versions, the name of
//! every other. Secrets matching the selector that hold no such ciphertext (a Helm
//! release, anything anyone labelled) cost one Secret's worth of memory while parsed,
//! whatever their number and size. No value is skipped for its size: `keyward encrypt`
//! seals values of any length, so a large value may be an envelope, and one missed by
//! the scan would be a version retired under live ciphertext.
//!
//! A restarted run needs no memory of the one before: it lists everything again, and
//! values already under the primary are skipped by the same rule that skips every
//! other value not to be rewritten. Each run's counts describe that run only.
//!
//! It must never:
//! - write a value it did not decrypt under this key: other values are sent back as
//!   read, and a Secret with nothing to rewrite is not written at all;
//! - overwrite a concurrent writer's value with a stale one (optimistic concurrency);
//! - put a value — ciphertext or plaintext — into a log line, an error or the progress
//!   ConfigMap: failures are named `namespace/name/field`;
//! - keep a plaintext past sealing it again: plaintexts live in
//!   [`SecretBytes`](crate::crypto::SecretBytes), zeroized on drop, and Secret data read
//!   from the cluster is wiped once used (what the HTTP client buffered is beyond
//!   reach).
//!
//! After the Secrets, a run rewrites the WSO2 ciphertext of the key's databases
//! (`spec.reencryption.databases`, see [`databases`]); a backfill run (`--backfill`, a
//! rotation's first step for a key with databases) does only that.
//!
//! [`envelope_field`]: crate::crypto::hash::envelope_field

pub mod databases;
mod pages;
mod progress;
mod rewrite;

use crate::pacer::Pacer;
pub use rewrite::count_versions;

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::TryStreamExt;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use zeroize::Zeroize;

use crate::crd::EncryptionKey;
use crate::crypto::envelope::EnvelopeError;
use crate::crypto::keyring::KeyError;
use crate::database::{DatabaseError, RewriteOptions};
use crate::store;
use databases::Databases;
use pages::Pager;
use progress::{Cause, Failure, Progress, Tally};
use rewrite::Target;

/// Field manager of the run's writes: the Secrets it rewrites and its progress ConfigMap.
pub const FIELD_MANAGER: &str = "keyward-reencrypt";
/// Secrets listed and rewritten per page, unless told otherwise: the resource's default.
pub const DEFAULT_BATCH_SIZE: u32 = crate::crd::encryption_key::DEFAULT_BATCH_SIZE;
/// Write requests per second, unless told otherwise: the resource's default.
pub const DEFAULT_WRITES_PER_SECOND: u32 = crate::crd::encryption_key::DEFAULT_WRITES_PER_SECOND;
/// Secrets settled at once: enough round trips in flight to keep a small API server
/// busy, few enough that a page's Secrets are not all fetched again at once after a
/// burst of conflicts.
pub const WRITERS: usize = 16;
/// Write attempts per Secret before a Secret that keeps changing is left for a later
/// run.
const WRITE_ATTEMPTS: u32 = 5;
/// Secrets a scan lists per page. A page is parsed one Secret at a time, so this bounds
/// the API server's response, not the scan's memory: at the 1 MiB a Secret may hold,
/// about 130 MiB of JSON for the API server to build.
const SCAN_PAGE_SIZE: u32 = 100;

/// The label selector of the Secrets holding ciphertext under EncryptionKey `key_name`
/// when none is given: `keyward.io/encryption-key=<name>`, which encrypted OAuthClients'
/// verifier Secrets carry.
pub fn default_selector(key_name: &str) -> String {
    format!("{}={key_name}", store::KEY_LABEL)
}

/// What a run re-encrypts and how fast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Namespace of the EncryptionKey, and of the Secrets re-encrypted.
    pub key_namespace: String,
    /// Name of the EncryptionKey.
    pub key_name: String,
    /// Label selector of the Secrets; `None`: [`default_selector`].
    pub selector: Option<String>,
    /// Secrets listed (and rewritten) per page.
    pub batch_size: u32,
    /// Upper bound on Secret writes per second.
    pub writes_per_second: u32,
    /// Name of the ConfigMap progress is written to, in the key's namespace.
    pub progress: Option<String>,
    /// Only give database values without a key id one, under the primary (a rotation's
    /// first step for a key with databases). Secrets hold keyward's envelopes, which
    /// always name their version, so a backfill leaves them alone.
    pub backfill: bool,
}

impl Options {
    /// Re-encrypt under EncryptionKey `namespace/name` with the defaults.
    pub fn new(key_namespace: &str, key_name: &str) -> Self {
        Self {
            key_namespace: key_namespace.to_owned(),
            key_name: key_name.to_owned(),
            selector: None,
            batch_size: DEFAULT_BATCH_SIZE,
            writes_per_second: DEFAULT_WRITES_PER_SECOND,
            progress: None,
            backfill: false,
        }
    }

    fn selector(&self) -> String {
        self.selector
            .clone()
            .unwrap_or_else(|| default_selector(&self.key_name))
    }

    fn check(&self) -> Result<(), Error> {
        for (option, value) in [
            ("batch size", self.batch_size),
            ("writes per second", self.writes_per_second),
        ] {
            if value == 0 {
                return Err(Error::Option { option });
            }
        }
        Ok(())
    }
}

/// What a run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The primary version every value was re-encrypted to.
    pub target_version: i64,
    /// Values found under another version: `done + failed`.
    pub total: u64,
    /// Values rewritten to the target version.
    pub done: u64,
    /// Values not rewritten: undecryptable, or in a Secret that kept changing.
    pub failed: u64,
    /// Of `failed`, the values whose Secret kept changing under the run until its write
    /// attempts ran out: a later run can still rewrite them.
    pub contended: u64,
    /// Every failed value, as `namespace/name/field`.
    pub failures: Vec<String>,
    /// Write requests sent to the API server, conflicts included.
    pub writes: u64,
    /// How long the run took.
    pub elapsed: Duration,
    /// What the run did in each database (counted in the totals above too).
    pub databases: Databases,
}

impl Report {
    /// This report with what the run did in its databases counted in.
    fn with_databases(mut self, databases: &Databases) -> Self {
        let (done, failed, contended, failures) = databases::report_share(databases);
        self.done += done;
        self.failed += failed;
        self.contended += contended;
        self.total += done + failed;
        self.failures.extend(failures);
        self.writes += databases
            .values()
            .map(|database| database.progress.writes)
            .sum::<u64>();
        self.databases = databases.clone();
        self
    }

    /// Values that do not decrypt: no retry will rewrite them.
    pub fn undecryptable(&self) -> u64 {
        self.failed - self.contended
    }
}

/// Why a run or a scan stopped. Messages name the key, Secret, field or ConfigMap,
/// never a value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the {option} must be at least 1")]
    Option { option: &'static str },
    #[error("cannot read EncryptionKey {namespace}/{name}: {source}")]
    ReadKey {
        namespace: String,
        name: String,
        source: crate::Error,
    },
    #[error("EncryptionKey {namespace}/{name} cannot be used: {reason}")]
    KeyUnusable {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error(
        "the keyring of EncryptionKey {namespace}/{name} has no version to re-encrypt to: {source}"
    )]
    NoPrimary {
        namespace: String,
        name: String,
        source: KeyError,
    },
    #[error("cannot list the Secrets matching {selector:?} in namespace {namespace}: {source}")]
    ListSecrets {
        namespace: String,
        selector: String,
        source: kube::Error,
    },
    #[error("cannot read Secret {namespace}/{name} again after a conflict: {source}")]
    ReadSecret {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error(
        "cannot read Secret {namespace}/{name}, left out of its page to bound memory: {source}"
    )]
    ReadDeferred {
        namespace: String,
        name: String,
        source: crate::Error,
    },
    #[error("cannot write Secret {namespace}/{name}: {source}")]
    WriteSecret {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("cannot encrypt {namespace}/{name}/{field} again: {source}")]
    Seal {
        namespace: String,
        name: String,
        field: String,
        source: EnvelopeError,
    },
    #[error("cannot read or write progress ConfigMap {namespace}/{name}: {source}")]
    Progress {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error(
        "cannot connect to database {database}: Secret {secret:?} (spec.reencryption.databases connectionSecretRef, key {key:?}) {reason}"
    )]
    ConnectionSecret {
        database: String,
        secret: String,
        key: String,
        reason: String,
    },
    #[error(transparent)]
    Database(DatabaseError),
    #[error("the keyring cannot be read as WSO2's two keys: {0}")]
    Keys(KeyError),
}

/// Re-encrypts every value under EncryptionKey `options.key_namespace/key_name` that is
/// not under its primary version. Values that cannot be rewritten are counted in the
/// report, not returned as errors; an error means the run stopped and may be retried.
pub async fn run(client: &Client, options: &Options) -> Result<Report, Error> {
    let started = Instant::now();
    options.check()?;
    let namespace = options.key_namespace.as_str();
    let key_name = options.key_name.as_str();
    let key = store::keyring::load_key(client, namespace, key_name, None)
        .await
        .map_err(|source| Error::ReadKey {
            namespace: namespace.to_owned(),
            name: key_name.to_owned(),
            source,
        })?
        .map_err(|reason| Error::KeyUnusable {
            namespace: namespace.to_owned(),
            name: key_name.to_owned(),
            reason,
        })?;
    let target = Target::new(&key.keyring).map_err(|source| Error::NoPrimary {
        namespace: namespace.to_owned(),
        name: key_name.to_owned(),
        source,
    })?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let progress = options
        .progress
        .as_deref()
        .map(|name| Progress::new(client, namespace, name));
    let selector = options.selector();
    // What an earlier pod of this Job did in the databases, read before anything is
    // published over it.
    let database_specs = &key.key.spec.reencryption.databases;
    let mut databases_done = match (&progress, database_specs.is_empty()) {
        (Some(progress), false) => {
            databases::carried(progress.data().await?.as_ref(), target.version())
        }
        _ => Databases::new(),
    };
    let run = Run {
        secrets: secrets.clone(),
        namespace,
        target,
        pacer: Mutex::new(Pacer::new(options.writes_per_second, Instant::now())),
        tally: Mutex::default(),
        in_flight: Semaphore::new(DATA_IN_FLIGHT_KIB as usize),
    };
    let report = |run: &Run<'_>, databases: &Databases| {
        run.report(started.elapsed()).with_databases(databases)
    };
    publish(progress.as_ref(), &report(&run, &databases_done), false).await?;
    tracing::info!(
        key = %format!("{namespace}/{key_name}"),
        target_version = run.target.version(),
        %selector,
        "re-encrypting"
    );

    let mut pager = Pager::new(client.clone(), namespace, &selector, options.batch_size);
    let list_failed = |source| Error::ListSecrets {
        namespace: namespace.to_owned(),
        selector: selector.clone(),
        source,
    };
    let sorting = || sorter(key_name, run.target.version());
    let mut listed = match options.backfill {
        true => None,
        false => pager.next(sorting()).await.map_err(list_failed)?,
    };
    while let Some(page) = listed {
        let settled = futures::stream::iter(page.items.into_iter().map(Ok))
            .try_for_each_concurrent(WRITERS, |listed| run.take(listed));
        let (settled, next) = tokio::join!(settled, pager.next(sorting()));
        settled?;
        listed = next.map_err(list_failed)?;
        let so_far = report(&run, &databases_done);
        publish(progress.as_ref(), &so_far, false).await?;
        tracing::info!(
            done = so_far.done,
            failed = so_far.failed,
            writes = so_far.writes,
            "page re-encrypted"
        );
    }
    if !database_specs.is_empty() {
        let rewrite_options = RewriteOptions {
            page_size: options.batch_size,
            writes_per_second: options.writes_per_second,
            ..RewriteOptions::default()
        };
        databases_done = databases::rewrite_all(
            &secrets,
            database_specs,
            &key.keyring,
            &rewrite_options,
            databases_done,
            |so_far| {
                let report = report(&run, &so_far);
                let progress = progress.as_ref();
                async move { publish(progress, &report, false).await }
            },
        )
        .await?;
    }
    let report = report(&run, &databases_done);
    publish(progress.as_ref(), &report, true).await?;
    Ok(report)
}

async fn publish(
    progress: Option<&Progress>,
    report: &Report,
    finished: bool,
) -> Result<(), Error> {
    match progress {
        Some(progress) => progress.publish(report, finished).await,
        None => Ok(()),
    }
}

/// A Secret of a listed page, as the run keeps it.
enum Listed {
    /// Nothing in it to rewrite: only its name is kept, so that a namespace of large
    /// Secrets that hold no ciphertext of this key costs a page nothing.
    Unchanged(String),
    /// It holds envelopes of this key under older versions (as far as can be told
    /// without decrypting): kept whole, to be settled.
    Candidate(Box<store::Read>),
    /// A candidate past the page's byte budget: only its name (and data size) is kept,
    /// and it is read again when its turn comes.
    Deferred(String, usize),
}

/// Bytes of Secret data a page keeps whole; candidates beyond are read again one by
/// one. Bounds the run's memory by bytes whatever the batch size: a page of a hundred
/// 1 MiB values (written under an old version, or forged to look so) is not held at once.
const PAGE_BYTES: usize = 4 * 1024 * 1024;
/// KiB of Secret data settled at once: small Secrets go [`WRITERS`] at a time, 1 MiB
/// ones four.
const DATA_IN_FLIGHT_KIB: u32 = 4 * 1024;

/// Bytes of data (keys and values) in `secret`.
fn data_size(secret: &Secret) -> usize {
    secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| key.len() + value.0.len())
        .sum()
}

/// What a run keeps of each Secret as its page is parsed, for EncryptionKey `key_name`
/// re-encrypting to `target_version`. Wrapped as parsed, so a page abandoned by an
/// error is wiped as well.
fn sorter(
    key_name: &str,
    target_version: i64,
) -> impl FnMut(Secret) -> Option<Listed> + Send + 'static {
    let key_name = key_name.to_owned();
    let mut kept = 0usize;
    move |secret| {
        let secret = store::Read(secret);
        let mut found = BTreeMap::new();
        rewrite::count_versions(secret.data.as_ref(), &key_name, &mut found);
        if !found.keys().any(|version| *version != target_version) {
            return Some(Listed::Unchanged(secret.name_any()));
        }
        let size = data_size(&secret);
        kept = kept.saturating_add(size);
        Some(if kept <= PAGE_BYTES {
            Listed::Candidate(Box::new(secret))
        } else {
            Listed::Deferred(secret.name_any(), size)
        })
    }
}

/// A run under way, shared by the Secrets being settled at once.
struct Run<'a> {
    secrets: Api<Secret>,
    namespace: &'a str,
    target: Target<'a>,
    pacer: Mutex<Pacer>,
    tally: Mutex<Tally>,
    /// KiB of Secret data being settled at once, out of [`DATA_IN_FLIGHT_KIB`].
    in_flight: Semaphore,
}

/// What became of one write request.
enum Written {
    Done,
    /// The Secret changed since it was read.
    Conflict,
    /// The Secret is gone: nothing left to rewrite.
    Gone,
}

impl Run<'_> {
    fn report(&self, elapsed: Duration) -> Report {
        self.tally()
            .report(self.namespace, self.target.version(), elapsed)
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        // A tally is consistent after every call: one left by a panic is still usable.
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until one more write may go under the rate limit, and counts it.
    async fn pace(&self) {
        let at = self
            .pacer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .book(Instant::now());
        tokio::time::sleep_until(at).await;
        self.tally().wrote();
    }

    /// Settles one listed Secret: one with nothing to rewrite is recorded as such (a
    /// failure left from an earlier listing is cleared).
    async fn take(&self, listed: Listed) -> Result<(), Error> {
        let size = match &listed {
            Listed::Unchanged(_) => 0,
            Listed::Candidate(secret) => data_size(secret),
            Listed::Deferred(_, size) => *size,
        };
        // Each Secret in flight holds several copies of its data (read, decrypted,
        // sealed, sent, answered): large ones are settled fewer at a time.
        let kib = u32::try_from(size / 1024)
            .unwrap_or(u32::MAX)
            .clamp(1, DATA_IN_FLIGHT_KIB);
        let _permit = self.in_flight.acquire_many(kib).await;
        match listed {
            Listed::Unchanged(name) => {
                self.tally().settle(&name, 0, Vec::new());
                Ok(())
            }
            Listed::Candidate(secret) => self.settle(*secret).await,
            Listed::Deferred(name, _) => match store::get(&self.secrets, &name).await {
                Ok(Some(secret)) => self.settle(secret).await,
                Ok(None) => {
                    self.tally().settle(&name, 0, Vec::new());
                    Ok(())
                }
                Err(source) => Err(Error::ReadDeferred {
                    namespace: self.namespace.to_owned(),
                    name,
                    source,
                }),
            },
        }
    }

    /// Rewrites what Secret `secret` holds under older versions, deciding again from a
    /// fresh read after each conflict, and records the outcome.
    async fn settle(&self, secret: store::Read) -> Result<(), Error> {
        let name = secret.name_any();
        let mut current = secret;
        let mut attempts = 0;
        loop {
            let decision =
                rewrite::rewrite(current.data.as_ref(), &self.target, self.namespace, &name)
                    .map_err(|unsealable| Error::Seal {
                        namespace: self.namespace.to_owned(),
                        name: name.clone(),
                        field: unsealable.field,
                        source: unsealable.source,
                    })?;
            let mut failures: Vec<Failure> = decision
                .failed
                .into_iter()
                .map(|field| Failure {
                    field,
                    cause: Cause::Undecryptable,
                })
                .collect();
            for failure in &failures {
                tracing::warn!(
                    value = %format!("{}/{name}/{}", self.namespace, failure.field),
                    "does not decrypt under its key version (altered, moved from another Secret or field, or its version is gone); counted as failed"
                );
            }
            if decision.changed.is_empty() {
                self.tally().settle(&name, 0, failures);
                return Ok(());
            }
            if attempts == WRITE_ATTEMPTS {
                tracing::warn!(
                    secret = %format!("{}/{name}", self.namespace),
                    attempts,
                    "kept changing under the run; its values are left for a later run"
                );
                failures.extend(decision.changed.into_keys().map(|field| Failure {
                    field,
                    cause: Cause::Contended,
                }));
                self.tally().settle(&name, 0, failures);
                return Ok(());
            }
            attempts += 1;
            let rewritten = decision.changed.len();
            self.pace().await;
            match self.write(&mut current.0, decision.changed).await? {
                Written::Done => {
                    self.tally().settle(&name, rewritten, failures);
                    return Ok(());
                }
                Written::Gone => {
                    self.tally().settle(&name, 0, Vec::new());
                    return Ok(());
                }
                Written::Conflict => match self.secrets.get_opt(&name).await {
                    Ok(Some(fresh)) => current = store::Read(fresh),
                    Ok(None) => {
                        self.tally().settle(&name, 0, Vec::new());
                        return Ok(());
                    }
                    Err(source) => {
                        return Err(Error::ReadSecret {
                            namespace: self.namespace.to_owned(),
                            name,
                            source,
                        });
                    }
                },
            }
        }
    }

    /// Writes `secret` back with `changed` in its data, only if it is still at the
    /// `resourceVersion` it was read at.
    async fn write(
        &self,
        secret: &mut Secret,
        changed: BTreeMap<String, ByteString>,
    ) -> Result<Written, Error> {
        let name = secret.name_any();
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for (key, value) in changed {
            if let Some(mut replaced) = data.insert(key, value) {
                replaced.0.zeroize();
            }
        }
        // Left out, the API server keeps the live managed fields and records this
        // update on top; sent back, they would only make the request larger.
        secret.metadata.managed_fields = None;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match self.secrets.replace(&name, &params, secret).await {
            Ok(written) => {
                drop(store::Read(written));
                Ok(Written::Done)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Written::Conflict),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Written::Gone),
            Err(source) => Err(Error::WriteSecret {
                namespace: self.namespace.to_owned(),
                name,
                source,
            }),
        }
    }
}

/// Counts the envelopes of EncryptionKey `namespace/key_name` per key version over the
/// Secrets matching `selector` (default: [`default_selector`]). Every version the key's
/// status lists is present, with 0 when nothing is under it; other versions appear only
/// when found. Nothing is decrypted, and one Secret at a time is held in memory.
pub async fn scan(
    client: &Client,
    namespace: &str,
    key_name: &str,
    selector: Option<&str>,
) -> Result<BTreeMap<i64, u64>, Error> {
    let keys: Api<EncryptionKey> = Api::namespaced(client.clone(), namespace);
    let key = keys
        .get_opt(key_name)
        .await
        .map_err(|source| Error::ReadKey {
            namespace: namespace.to_owned(),
            name: key_name.to_owned(),
            source: source.into(),
        })?;
    let known: BTreeMap<i64, u64> = key
        .and_then(|key| key.status)
        .map(|status| status.versions)
        .unwrap_or_default()
        .into_iter()
        .map(|version| (version.version, 0))
        .collect();
    let selector = selector.map_or_else(|| default_selector(key_name), str::to_owned);
    let mut pager = Pager::new(client.clone(), namespace, &selector, SCAN_PAGE_SIZE);
    let mut counts = known.clone();
    loop {
        let page = pager
            .next(counter(key_name))
            .await
            .map_err(|source| Error::ListSecrets {
                namespace: namespace.to_owned(),
                selector: selector.clone(),
                source,
            })?;
        let Some(page) = page else {
            return Ok(counts);
        };
        if page.first {
            counts = known.clone();
        }
        for found in page.items {
            for (version, count) in found {
                *counts.entry(version).or_default() += count;
            }
        }
    }
}

/// What a scan keeps of each Secret as its page is parsed: the envelopes of
/// EncryptionKey `key_name` per version, if it holds any. The Secret itself is wiped
/// and dropped before the next one is parsed.
fn counter(key_name: &str) -> impl FnMut(Secret) -> Option<BTreeMap<i64, u64>> + Send + 'static {
    let key_name = key_name.to_owned();
    move |secret| {
        let secret = store::Read(secret);
        let mut found = BTreeMap::new();
        rewrite::count_versions(secret.data.as_ref(), &key_name, &mut found);
        (!found.is_empty()).then_some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::envelope::{Context, Envelope};
    use crate::crypto::{KeyMaterial, Keyring};
    use k8s_openapi::jiff::Timestamp;

    /// Secret `name` holding `value` under data key `v`.
    fn secret(name: &str, value: Vec<u8>) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("v".to_owned(), ByteString(value))])),
            ..Secret::default()
        }
    }

    /// An envelope of `plaintext_bytes` bytes under version 1 of key `apim`.
    fn sealed(plaintext_bytes: usize) -> Vec<u8> {
        let keyring = Keyring::new(
            "apim",
            KeyMaterial::parse(&[b'a'; 64]).expect("hex key"),
            Timestamp::UNIX_EPOCH,
        );
        let context = Context {
            namespace: "apps",
            name: "x",
            field: "v",
        };
        let envelope =
            Envelope::seal(&keyring, &context, &vec![b'p'; plaintext_bytes]).expect("seals");
        envelope.to_string().into_bytes()
    }

    fn kind(listed: &Listed) -> (&'static str, &str) {
        match listed {
            Listed::Unchanged(name) => ("unchanged", name),
            Listed::Candidate(secret) => {
                ("candidate", secret.metadata.name.as_deref().unwrap_or(""))
            }
            Listed::Deferred(name, _) => ("deferred", name),
        }
    }

    #[test]
    fn a_page_keeps_whole_only_old_ciphertext_and_only_up_to_its_byte_budget() {
        let mut sort = sorter("apim", 2);
        let large_plain = vec![b'x'; 900 * 1024];
        let old_megabyte = sealed(700 * 1024);
        let mut kinds = Vec::new();
        // Large values that are no envelope of this key: names only, whatever their size.
        for index in 0..3 {
            let listed = sort(secret(&format!("plain-{index}"), large_plain.clone()));
            kinds.push(kind(&listed.expect("kept")).0);
        }
        // Old ciphertext: whole until 4 MiB of data is kept, then by name.
        for index in 0..8 {
            let listed = sort(secret(&format!("old-{index}"), old_megabyte.clone()));
            kinds.push(kind(&listed.expect("kept")).0);
        }
        assert_eq!(
            kinds,
            [
                "unchanged",
                "unchanged",
                "unchanged",
                "candidate",
                "candidate",
                "candidate",
                "candidate",
                "deferred",
                "deferred",
                "deferred",
                "deferred"
            ]
        );
        // Each page starts with a budget of its own.
        let mut next_page = sorter("apim", 2);
        let listed = next_page(secret("old-8", old_megabyte)).expect("kept");
        assert_eq!(kind(&listed), ("candidate", "old-8"));
    }

    #[test]
    fn options_default_to_the_keys_label_and_refuse_zero_rates() {
        let options = Options::new("apps", "apim");
        assert_eq!(options.selector(), "keyward.io/encryption-key=apim");
        assert_eq!((options.batch_size, options.writes_per_second), (100, 1000));
        assert!(options.check().is_ok());
        let stalled = Options {
            writes_per_second: 0,
            ..options.clone()
        };
        assert_eq!(
            stalled.check().map_err(|error| error.to_string()),
            Err("the writes per second must be at least 1".to_owned())
        );
        let chosen = Options {
            selector: Some("team=payments".into()),
            ..options
        };
        assert_eq!(chosen.selector(), "team=payments");
    }
}
