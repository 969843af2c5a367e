//! Re-encryption: N Secrets holding ciphertext under an EncryptionKey, the rotation's
//! re-encryption step timed, and the procedure Kubernetes documents for rewriting every
//! Secret (`kubectl get secrets -o json | kubectl replace -f -`) over the same Secrets.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use keyward::crd::EncryptionKey;
use keyward::crd::encryption_key::RotationPhase;
use keyward::crypto::Keyring;
use keyward::crypto::envelope::{Context, Envelope};
use kube::Client;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use crate::support::{self, ciphertext};

/// The data key of the benchmark's ciphertext.
const FIELD: &str = "value";

/// Applies EncryptionKey `key` (no targets: the rotation's rollouts have no pods to
/// wait for, so what is timed is the re-encryption) at rotation `generation`, with
/// `writes_per_second` or the default.
pub async fn apply_key(
    admin: &Client,
    namespace: &str,
    key: &str,
    generation: i64,
    writes_per_second: Option<i32>,
) {
    let mut spec = json!({"rotation": {"generation": generation}});
    if let Some(rate) = writes_per_second {
        spec["reencryption"] = json!({"writesPerSecond": rate});
    }
    let document = json!({
        "apiVersion": "keyward.io/v1alpha1", "kind": "EncryptionKey",
        "metadata": {"name": key}, "spec": spec,
    });
    support::manifest::apply(admin, namespace, "bench-user", &document)
        .await
        .expect("EncryptionKey applies");
}

/// Waits up to `timeout` until the key is `Ready=True`.
pub async fn until_key_ready(admin: &Client, namespace: &str, key: &str, timeout: Duration) {
    let keys: Api<EncryptionKey> = Api::namespaced(admin.clone(), namespace);
    support::wait::until_within(&keys, key, "the key is ready", timeout, |key| {
        support::wait::ready(key).is_some_and(|(status, _)| status == "True")
    })
    .await;
}

/// Writes `count` Secrets `data-NNNNN`, each with one value sealed under the key's
/// primary version for its place (as `keyward encrypt --context` seals it), labelled for
/// the key's default selector.
pub async fn write_ciphertexts(admin: &Client, namespace: &str, key: &str, count: usize) {
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), namespace);
    let stored = secrets
        .get(&format!("{key}-keyring"))
        .await
        .expect("keyring Secret");
    let json = &stored.data.expect("data")["keyring.json"].0;
    let keyring = Keyring::from_json(json, None).expect("keyring parses");
    let documents: Vec<Secret> = (0..count)
        .map(|index| {
            let name = format!("data-{index:05}");
            let context = Context {
                namespace,
                name: &name,
                field: FIELD,
            };
            let plaintext = format!("value-{index}-{}", "x".repeat(32));
            let envelope = Envelope::seal(&keyring, &context, plaintext.as_bytes()).expect("seals");
            let data = BTreeMap::from([(
                FIELD.to_owned(),
                ByteString(envelope.to_string().into_bytes()),
            )]);
            ciphertext::labelled_secret(key, &name, data)
        })
        .collect();
    ciphertext::create_all(&secrets, documents, 32).await;
}

/// One rotation, as the benchmark saw it.
pub struct Rotated {
    /// From the first sight of phase `Reencrypting` to the first sight of a later phase;
    /// `None` when the step did not end within the timeout.
    pub reencrypting: Option<Duration>,
    /// When the step started and ended (for the memory windows).
    pub window: (Instant, Instant),
    /// The Job's own report: `elapsedSeconds` and `writes` of the progress ConfigMap.
    pub job_seconds: Option<f64>,
    pub job_writes: Option<u64>,
    /// Whether the whole rotation reached `Succeeded` in time.
    pub succeeded: bool,
}

/// Rotates `key` to `target` by applying `generation` (with `writes_per_second`, or the
/// default) and times the re-encryption step from a watch on the key.
pub async fn rotate(
    admin: &Client,
    namespace: &str,
    key: &str,
    generation: i64,
    target: i64,
    writes_per_second: Option<i32>,
    timeout: Duration,
) -> Rotated {
    let keys: Api<EncryptionKey> = Api::namespaced(admin.clone(), namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={key}"));
    let mut events = watcher::watcher(keys, config).default_backoff().boxed();
    // The watch is listed before the change, so no phase goes unseen.
    loop {
        match events.next().await {
            Some(Ok(Event::InitDone)) => break,
            Some(_) => continue,
            None => panic!("the watch of {key} ended"),
        }
    }
    let requested = Instant::now();
    apply_key(admin, namespace, key, generation, writes_per_second).await;
    let deadline = requested + timeout;
    let (mut started, mut ended, mut succeeded) = (None, None, false);
    while !succeeded {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = match tokio::time::timeout(left, events.next()).await {
            Ok(Some(Ok(Event::Apply(key) | Event::InitApply(key)))) => key,
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        };
        let Some(rotation) = event
            .status
            .as_ref()
            .and_then(|status| status.rotation.as_ref())
            .filter(|rotation| rotation.target_version == target)
        else {
            continue;
        };
        let now = Instant::now();
        match rotation.phase {
            RotationPhase::Backfilling | RotationPhase::Staging | RotationPhase::Promoting => {}
            RotationPhase::Reencrypting => {
                started.get_or_insert(now);
            }
            RotationPhase::Verifying | RotationPhase::Retiring => {
                if started.is_some() {
                    ended.get_or_insert(now);
                }
            }
            RotationPhase::Succeeded => {
                if started.is_some() {
                    ended.get_or_insert(now);
                }
                succeeded = true;
            }
        }
    }
    let progress: Api<ConfigMap> = Api::namespaced(admin.clone(), namespace);
    let data = progress
        .get_opt(&format!("{key}-reencryption"))
        .await
        .ok()
        .flatten()
        .and_then(|config_map| config_map.data)
        .unwrap_or_default();
    let now = Instant::now();
    Rotated {
        reencrypting: started.zip(ended).map(|(start, end)| end - start),
        window: (started.unwrap_or(requested), ended.unwrap_or(now)),
        job_seconds: data.get("elapsedSeconds").and_then(|s| s.parse().ok()),
        job_writes: data.get("writes").and_then(|s| s.parse().ok()),
        succeeded,
    }
}

/// The documented rewrite of every Secret: `kubectl get secrets -o json | kubectl
/// replace -f -` over the Secrets of `selector`, as the identity of `kubeconfig`;
/// `None` when it fails or runs past `timeout`.
pub fn kubectl_replace(
    kubectl: &Path,
    kubeconfig: &Path,
    namespace: &str,
    selector: &str,
    timeout: Duration,
) -> Result<Duration, String> {
    let script = r#"set -euo pipefail
"$0" --kubeconfig "$1" get secrets -n "$2" -l "$3" -o json \
  | "$0" --kubeconfig "$1" replace -f - >/dev/null"#;
    let start = Instant::now();
    let output = Command::new("timeout")
        .arg(timeout.as_secs().to_string())
        .args(["bash", "-c", script])
        .arg(kubectl)
        .arg(kubeconfig)
        .args([namespace, selector])
        .output()
        .map_err(|error| format!("bash did not run: {error}"))?;
    let elapsed = start.elapsed();
    if output.status.success() {
        Ok(elapsed)
    } else if output.status.code() == Some(124) {
        Err(format!("did not finish in {}", minutes(timeout)))
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "failed: {}",
            stderr.lines().last().unwrap_or("no message")
        ))
    }
}

/// `N min` or `N s`.
pub fn minutes(duration: Duration) -> String {
    if duration.as_secs() >= 120 {
        format!("{} min", duration.as_secs() / 60)
    } else {
        format!("{} s", duration.as_secs())
    }
}

/// Whether `argv` is a re-encryption Job's process (`keyward reencrypt …`).
pub fn is_reencrypt_job(argv: &[String]) -> bool {
    argv.len() > 1 && argv[0].rsplit('/').next() == Some("keyward") && argv[1] == "reencrypt"
}
