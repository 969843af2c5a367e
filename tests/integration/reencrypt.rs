//! `keyward reencrypt` and `keyward scan` as the re-encryption Job and the verification
//! scan run them: the real binary, the admin kubeconfig, a real control plane. Each test
//! makes an EncryptionKey with the operator, writes Secrets holding ciphertext under
//! version 1, adds a primary version 2 to the keyring directly (what rotation step 2
//! leaves behind), and runs the tools.

use std::collections::BTreeMap;
use std::process::Output;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::jiff::Timestamp;
use keyward::crypto::envelope::{Context, Envelope};
use keyward::crypto::hash::keys;
use keyward::crypto::keyring::KeyVersion;
use keyward::crypto::{Credential, KeyMaterial, Keyring, VersionState};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::support::api::{self, secrets};
use crate::support::encryption_key::{
    apply_key, stored_keyring, stored_keyring_and_secret, until_distributed,
};
use crate::support::operator::operator;
use crate::support::{self, Operator, TestCluster, ciphertext, wait};

const KEY: &str = "apim";
const PROGRESS: &str = "apim-reencrypt";

/// A value a test wrote and expects back: where it lives and its plaintext.
#[derive(Clone, Debug)]
struct Written {
    secret: String,
    data_key: String,
    plaintext: Vec<u8>,
}

impl Written {
    /// The field its ciphertext is bound to: a verifier record's slots are bound to
    /// `clientSecret`, everything else to its own key.
    fn field(&self) -> &str {
        if self.data_key == keys::ENCRYPTED_CLIENT_SECRET {
            keys::CLIENT_SECRET
        } else {
            &self.data_key
        }
    }
}

/// Starts the operator, makes EncryptionKey `apim` and waits until it is ready; returns
/// the operator and the keyring (version 1).
async fn key(cluster: &TestCluster) -> (Operator, Keyring) {
    let operator = operator(cluster);
    apply_key(cluster, KEY, json!({})).await;
    until_distributed(cluster, KEY).await;
    (operator, stored_keyring(cluster, KEY).await)
}

/// Adds version 2 as the primary, version 1 decrypt-only, by rewriting the keyring
/// Secret; waits until the operator has taken it up. Returns the new keyring.
async fn add_primary_version(cluster: &TestCluster) -> Keyring {
    let (mut keyring, mut secret) = stored_keyring_and_secret(cluster, KEY).await;
    for version in &mut keyring.versions {
        version.state = VersionState::DecryptOnly;
    }
    keyring.versions.push(KeyVersion {
        version: 2,
        state: VersionState::Primary,
        created_at: Timestamp::now(),
        material: KeyMaterial::generate().expect("key"),
    });
    let json = keyring.to_json().expect("keyring serializes");
    secret
        .data
        .get_or_insert_with(BTreeMap::new)
        .insert("keyring.json".into(), ByteString(json.as_bytes().to_vec()));
    secrets(cluster)
        .replace(&secret.name_any(), &PostParams::default(), &secret)
        .await
        .expect("keyring rewritten");
    let keys = api::keys(cluster);
    wait::until(&keys, KEY, "status shows primary version 2", |key| {
        key.status
            .as_ref()
            .is_some_and(|status| status.primary_version == Some(2) && status.versions.len() == 2)
    })
    .await;
    keyring
}

/// An envelope of `plaintext` under the keyring's primary, for `written`'s place.
fn seal(cluster: &TestCluster, keyring: &Keyring, written: &Written) -> Vec<u8> {
    if written.data_key == keys::ENCRYPTED_CLIENT_SECRET {
        // Exactly as an encrypted OAuthClient's verifier record holds it.
        let credential = Credential::encrypted(
            keyring,
            &cluster.namespace,
            &written.secret,
            &written.plaintext,
        )
        .expect("seals");
        let Credential::Encrypted(envelope) = credential else {
            unreachable!("an encrypted credential")
        };
        return envelope.to_string().into_bytes();
    }
    let context = Context {
        namespace: &cluster.namespace,
        name: &written.secret,
        field: written.field(),
    };
    Envelope::seal(keyring, &context, &written.plaintext)
        .expect("seals")
        .to_string()
        .into_bytes()
}

/// The envelope `keyward encrypt` prints for `written` (trailing newline included).
async fn seal_with_cli(cluster: &TestCluster, written: &Written) -> Vec<u8> {
    let context = format!(
        "{}/{}/{}",
        cluster.namespace,
        written.secret,
        written.field()
    );
    let output = keyward(
        vec![
            "encrypt".into(),
            "--key".into(),
            KEY.into(),
            "--context".into(),
            context,
        ],
        written.plaintext.clone(),
    )
    .await;
    assert!(output.status.success(), "keyward encrypt: {output:?}");
    output.stdout
}

fn labelled_secret(name: &str, data: BTreeMap<String, ByteString>) -> Secret {
    ciphertext::labelled_secret(KEY, name, data)
}

/// Writes `count` labelled Secrets `<prefix>-000`…, each with one envelope under the
/// keyring's primary beside a plaintext `note`. Every tenth is a verifier record's
/// `encryptedClientSecret`; the others among the first `by_cli` are made by `keyward
/// encrypt`, the rest with the library.
async fn write_secrets(
    cluster: &TestCluster,
    keyring: &Keyring,
    prefix: &str,
    count: usize,
    by_cli: usize,
) -> Vec<Written> {
    let written: Vec<Written> = (0..count)
        .map(|index| Written {
            secret: format!("{prefix}-{index:03}"),
            data_key: if index % 10 == 0 {
                keys::ENCRYPTED_CLIENT_SECRET.into()
            } else {
                "apiKey".into()
            },
            plaintext: format!("plaintext of {prefix}-{index:03}: {}", random_text()).into_bytes(),
        })
        .collect();
    futures::stream::iter(written.iter().enumerate())
        .map(|(index, value)| async move {
            let envelope = if index < by_cli && value.data_key == "apiKey" {
                seal_with_cli(cluster, value).await
            } else {
                seal(cluster, keyring, value)
            };
            let data = BTreeMap::from([
                (value.data_key.clone(), ByteString(envelope)),
                ("note".into(), ByteString(b"not encrypted".to_vec())),
            ]);
            secrets(cluster)
                .create(
                    &PostParams::default(),
                    &labelled_secret(&value.secret, data),
                )
                .await
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("Secrets created");
    written
}

fn random_text() -> String {
    let bytes = keyward::crypto::secret::random_bytes(12).expect("randomness");
    hex::encode(bytes.expose())
}

/// Runs `keyward` with `args` off the async runtime.
async fn keyward(args: Vec<String>, stdin: Vec<u8>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        support::keyward(&args, &stdin)
    })
    .await
    .expect("keyward runs")
}

/// `keyward reencrypt --key NS/apim --progress apim-reencrypt` with `extra` arguments.
async fn reencrypt(cluster: &TestCluster, extra: &[&str]) -> Output {
    let mut args = vec![
        "reencrypt".to_owned(),
        "--key".to_owned(),
        format!("{}/{KEY}", cluster.namespace),
        "--progress".to_owned(),
        PROGRESS.to_owned(),
    ];
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    keyward(args, Vec::new()).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `keyward scan` as JSON: the count per version.
async fn scan(cluster: &TestCluster) -> serde_json::Value {
    let output = keyward(
        vec![
            "scan".into(),
            "--key".into(),
            format!("{}/{KEY}", cluster.namespace),
            "-o".into(),
            "json".into(),
        ],
        Vec::new(),
    )
    .await;
    assert!(output.status.success(), "keyward scan: {output:?}");
    serde_json::from_slice(&output.stdout).expect("scan prints JSON")
}

async fn progress(cluster: &TestCluster) -> BTreeMap<String, String> {
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    config_maps
        .get(PROGRESS)
        .await
        .expect("progress ConfigMap")
        .data
        .unwrap_or_default()
}

/// The number in `key` of the progress data.
fn number(progress: &BTreeMap<String, String>, key: &str) -> f64 {
    progress
        .get(key)
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("progress {key} is a number: {progress:?}"))
}

/// Asserts every value in `written` is under version 2 and opens to its plaintext.
async fn assert_all_under_primary(cluster: &TestCluster, keyring: &Keyring, written: &[Written]) {
    let stored = all_secrets(cluster).await;
    for value in written {
        let secret = &stored[&value.secret];
        let data = secret.data.as_ref().expect("data");
        let text = std::str::from_utf8(&data[&value.data_key].0).expect("UTF-8");
        let envelope = Envelope::parse(text).expect("an envelope");
        assert_eq!(envelope.key_version, 2, "{}", value.secret);
        let context = Context {
            namespace: &cluster.namespace,
            name: &value.secret,
            field: value.field(),
        };
        let opened = envelope.open(keyring, &context).expect("opens under v2");
        assert_eq!(opened.expose(), value.plaintext, "{}", value.secret);
        assert_eq!(data["note"].0, b"not encrypted", "other values kept");
    }
}

async fn all_secrets(cluster: &TestCluster) -> BTreeMap<String, Secret> {
    secrets(cluster)
        .list(&ListParams::default())
        .await
        .expect("Secrets listed")
        .items
        .into_iter()
        .map(|secret| (secret.name_any(), secret))
        .collect()
}

fn resource_versions(secrets: &BTreeMap<String, Secret>) -> BTreeMap<String, Option<String>> {
    secrets
        .iter()
        .map(|(name, secret)| (name.clone(), secret.resource_version()))
        .collect()
}

#[tokio::test]
async fn every_value_moves_to_the_primary_with_its_plaintext_and_a_second_run_writes_nothing() {
    let cluster = support::cluster("reencrypt-all").await;
    let (_operator, first) = key(&cluster).await;
    let written = write_secrets(&cluster, &first, "s", 200, 5).await;
    // Not selected: a v1 envelope in a Secret without the label stays as it is.
    let unlabelled = Written {
        secret: "unlabelled".into(),
        data_key: "apiKey".into(),
        plaintext: b"outside the selector".to_vec(),
    };
    let mut outside = labelled_secret(
        &unlabelled.secret,
        BTreeMap::from([(
            unlabelled.data_key.clone(),
            ByteString(seal(&cluster, &first, &unlabelled)),
        )]),
    );
    outside.metadata.labels = None;
    secrets(&cluster)
        .create(&PostParams::default(), &outside)
        .await
        .expect("unlabelled Secret");
    let keyring = add_primary_version(&cluster).await;
    assert_eq!(
        scan(&cluster).await,
        json!({"versions": {"1": 200, "2": 0}})
    );
    let before = all_secrets(&cluster).await;

    let output = reencrypt(&cluster, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        stdout(&output),
        "re-encrypted 200 of 200 values to version 2 (0 failed, 200 writes)"
    );
    assert_all_under_primary(&cluster, &keyring, &written).await;

    let after = all_secrets(&cluster).await;
    for name in ["unlabelled", &format!("{KEY}-keyring")] {
        assert_eq!(
            after[name].resource_version(),
            before[name].resource_version(),
            "{name} is not written"
        );
    }
    let rewritten = &after["s-001"];
    assert!(
        rewritten
            .meta()
            .managed_fields
            .iter()
            .flatten()
            .any(|entry| entry.manager.as_deref() == Some("keyward-reencrypt")),
        "writes are recorded under keyward-reencrypt"
    );
    let printed = format!("{output:?}");
    for value in &written {
        let plaintext = String::from_utf8_lossy(&value.plaintext);
        assert!(!printed.contains(&*plaintext), "no plaintext is printed");
    }

    let text = keyward(
        vec![
            "scan".into(),
            "--key".into(),
            format!("{}/{KEY}", cluster.namespace),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(stdout(&text), "version 1: 0\nversion 2: 200");
    assert_eq!(
        scan(&cluster).await,
        json!({"versions": {"1": 0, "2": 200}})
    );
    let progress = progress(&cluster).await;
    for (key, expected) in [
        ("targetVersion", "2"),
        ("total", "200"),
        ("done", "200"),
        ("failed", "0"),
        ("failures", ""),
        ("writes", "200"),
        ("finished", "true"),
    ] {
        assert_eq!(
            progress.get(key).map(String::as_str),
            Some(expected),
            "{key}"
        );
    }

    // Nothing is left under version 1: a second run writes nothing at all.
    let again = reencrypt(&cluster, &[]).await;
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    assert_eq!(
        stdout(&again),
        "re-encrypted 0 of 0 values to version 2 (0 failed, 0 writes)"
    );
    assert_eq!(progress_value(&cluster, "writes").await, "0");
    assert_eq!(
        resource_versions(&all_secrets(&cluster).await),
        resource_versions(&after),
        "no Secret was written"
    );
}

async fn progress_value(cluster: &TestCluster, key: &str) -> String {
    progress(cluster)
        .await
        .get(key)
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_value_that_does_not_decrypt_is_named_never_shown_and_fails_the_run_with_exit_code_3() {
    let cluster = support::cluster("reencrypt-undecryptable").await;
    let (_operator, first) = key(&cluster).await;
    let written = write_secrets(&cluster, &first, "good", 10, 0).await;

    // An altered envelope, and one copied from another Secret.
    let broken = Written {
        secret: "broken".into(),
        data_key: "apiKey".into(),
        plaintext: b"the broken value's plaintext".to_vec(),
    };
    let mut altered = seal(&cluster, &first, &broken);
    let last = altered.len() - 2;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let copied = seal(&cluster, &first, &written[1]);
    for (name, value) in [("broken", &altered), ("copied", &copied)] {
        let data = BTreeMap::from([("apiKey".to_owned(), ByteString(value.clone()))]);
        secrets(&cluster)
            .create(&PostParams::default(), &labelled_secret(name, data))
            .await
            .expect("Secret created");
    }
    // The operator creates the progress ConfigMap beforehand; the run keeps its labels
    // and replaces stale data.
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let prepared = ConfigMap {
        metadata: ObjectMeta {
            name: Some(PROGRESS.into()),
            labels: Some(BTreeMap::from([(
                "keyward.io/encryption-key".into(),
                KEY.into(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            ("done".into(), "999".into()),
            ("finished".into(), "true".into()),
        ])),
        ..ConfigMap::default()
    };
    config_maps
        .create(&PostParams::default(), &prepared)
        .await
        .expect("progress ConfigMap prepared");
    let keyring = add_primary_version(&cluster).await;
    let before = all_secrets(&cluster).await;

    let output = reencrypt(&cluster, &[]).await;
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert_eq!(
        stdout(&output),
        "re-encrypted 10 of 12 values to version 2 (2 failed, 10 writes)"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let ns = &cluster.namespace;
    assert!(
        stderr.contains(&format!("{ns}/broken/apiKey")),
        "the log names the value: {stderr}"
    );
    assert_all_under_primary(&cluster, &keyring, &written).await;
    let after = all_secrets(&cluster).await;
    for name in ["broken", "copied"] {
        assert_eq!(
            after[name].resource_version(),
            before[name].resource_version(),
            "{name} is left as it was"
        );
    }

    let config_map = config_maps.get(PROGRESS).await.expect("progress");
    let progress = config_map.data.clone().unwrap_or_default();
    assert_eq!(
        progress["failures"].lines().collect::<Vec<_>>(),
        [format!("{ns}/broken/apiKey"), format!("{ns}/copied/apiKey")]
    );
    for (key, expected) in [
        ("failed", "2"),
        ("done", "10"),
        ("total", "12"),
        ("finished", "true"),
    ] {
        assert_eq!(progress[key], expected, "{key}");
    }
    assert_eq!(
        config_map
            .labels()
            .get("keyward.io/encryption-key")
            .map(String::as_str),
        Some(KEY),
        "the operator's labels stay"
    );

    // Neither value, nor its plaintext, nor any part of its ciphertext is shown.
    let shown = format!(
        "{}{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr,
        serde_json::to_string(&config_map).expect("JSON")
    );
    for value in [&altered, &copied] {
        let text = String::from_utf8_lossy(value);
        let sealed_part = text.rsplit(':').next().expect("ciphertext field");
        assert!(!shown.contains(sealed_part), "a value was shown: {shown}");
    }
    for plaintext in [&broken.plaintext, &written[1].plaintext] {
        assert!(!shown.contains(&*String::from_utf8_lossy(plaintext)));
    }
    assert_eq!(scan(&cluster).await, json!({"versions": {"1": 2, "2": 10}}));
}

#[tokio::test]
async fn writes_stay_under_the_rate_limit_over_the_whole_run() {
    let cluster = support::cluster("reencrypt-throttle").await;
    let (_operator, first) = key(&cluster).await;
    let written = write_secrets(&cluster, &first, "t", 60, 0).await;
    let keyring = add_primary_version(&cluster).await;

    let output = reencrypt(
        &cluster,
        &["--writes-per-second", "20", "--batch-size", "25"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_all_under_primary(&cluster, &keyring, &written).await;
    let progress = progress(&cluster).await;
    let (writes, elapsed) = (
        number(&progress, "writes"),
        number(&progress, "elapsedSeconds"),
    );
    assert_eq!((number(&progress, "done"), writes), (60.0, 60.0));
    assert!(
        elapsed >= 2.5,
        "60 writes at 20/s take at least 2.5 s: {progress:?}"
    );
    assert!(
        writes / elapsed <= 20.0,
        "the run's own counters stay within 20 writes/s: {progress:?}"
    );
}

#[tokio::test]
async fn a_concurrent_writers_values_are_never_overwritten() {
    let cluster = support::cluster("reencrypt-concurrent").await;
    let (_operator, first) = key(&cluster).await;
    let mut written = write_secrets(&cluster, &first, "c", 60, 0).await;
    let keyring = add_primary_version(&cluster).await;

    // One page, paced slowly: the run reads every Secret first, then writes them one by
    // one, so the writer's updates of the last twenty land between its read and write.
    let run = tokio::spawn({
        let namespace = cluster.namespace.clone();
        async move {
            let mut args = vec![
                "reencrypt".to_owned(),
                "--key".to_owned(),
                format!("{namespace}/{KEY}"),
                "--progress".to_owned(),
                PROGRESS.to_owned(),
            ];
            args.extend(["--writes-per-second", "10", "--batch-size", "60"].map(str::to_owned));
            keyward(args, Vec::new()).await
        }
    });
    let started = await_condition(secrets(&cluster), "c-001", |secret: Option<&Secret>| {
        secret
            .and_then(|secret| secret.data.as_ref())
            .and_then(|data| data.get("apiKey"))
            .is_some_and(|value| value.0.starts_with(b"keyward:v1:apim:2:"))
    });
    tokio::time::timeout(support::WAIT, started)
        .await
        .expect("the run starts writing")
        .expect("watch works");

    // The writer puts new plaintexts in, half under the old version (the run must
    // rewrite the writer's value, not its own stale read), half under the primary.
    for (index, value) in written.iter_mut().enumerate().skip(40) {
        value.plaintext = format!("the writer's value {index}: {}", random_text()).into_bytes();
        let sealing = if index % 2 == 0 { &first } else { &keyring };
        let envelope = seal(&cluster, sealing, value);
        loop {
            let mut current = secrets(&cluster).get(&value.secret).await.expect("read");
            current
                .data
                .get_or_insert_with(BTreeMap::new)
                .insert(value.data_key.clone(), ByteString(envelope.clone()));
            match secrets(&cluster)
                .replace(&value.secret, &PostParams::default(), &current)
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(error) => panic!("the writer's update failed: {error}"),
            }
        }
    }

    let output = tokio::time::timeout(support::WAIT, run)
        .await
        .expect("the run finishes")
        .expect("the run's task");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_all_under_primary(&cluster, &keyring, &written).await;
    let progress = progress(&cluster).await;
    assert_eq!(number(&progress, "failed"), 0.0, "{progress:?}");
    assert!(
        number(&progress, "writes") > number(&progress, "done"),
        "the writer's updates made some of the run's writes conflict: {progress:?}"
    );
}

/// Runs `keyward` with `args` against the test cluster; returns whether it succeeded and
/// its peak resident memory (`VmHWM`, sampled until it exits), in bytes.
async fn keyward_peak_memory(args: Vec<String>) -> (bool, u64) {
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(&args)
            .env("KUBECONFIG", &support::control_plane().kubeconfig)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("keyward runs");
        let mut peak = 0;
        loop {
            if let Some(kib) = support::operator::status_kib(child.id(), "VmHWM") {
                peak = peak.max(kib * 1024);
            }
            if let Some(status) = child.try_wait().expect("status") {
                return (status.success(), peak);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    })
    .await
    .expect("keyward runs")
}

#[tokio::test]
async fn re_encrypting_a_page_of_large_values_keeps_the_job_under_64_mib() {
    let cluster = support::cluster("reencrypt-memory").await;
    let (_operator, first) = key(&cluster).await;
    // A hundred values of 500 KiB each under version 1: one page of the default batch
    // size, 65 MiB of envelopes.
    let written: Vec<Written> = (0..100)
        .map(|index| Written {
            secret: format!("large-{index:03}"),
            data_key: "apiKey".into(),
            plaintext: vec![b'a' + (index % 26) as u8; 500 * 1024],
        })
        .collect();
    futures::stream::iter(&written)
        .map(|value| {
            let data = BTreeMap::from([
                (
                    value.data_key.clone(),
                    ByteString(seal(&cluster, &first, value)),
                ),
                ("note".into(), ByteString(b"not encrypted".to_vec())),
            ]);
            let secret = labelled_secret(&value.secret, data);
            let api = secrets(&cluster);
            async move { api.create(&PostParams::default(), &secret).await }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await
        .expect("Secrets created");
    let second = add_primary_version(&cluster).await;

    let (succeeded, peak) = keyward_peak_memory(vec![
        "reencrypt".into(),
        "--key".into(),
        format!("{}/{KEY}", cluster.namespace),
        "--batch-size".into(),
        "100".into(),
    ])
    .await;
    eprintln!("re-encryption peak RSS: {:.1} MiB", peak as f64 / 1048576.0);
    assert!(succeeded, "the run succeeded");
    assert!(
        peak < 64 * 1024 * 1024,
        "the run peaked at {:.1} MiB re-encrypting 100 values of 500 KiB",
        peak as f64 / 1048576.0
    );
    assert_all_under_primary(&cluster, &second, &written).await;
}
