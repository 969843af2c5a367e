//! The peer a user would otherwise deploy: the sealed-secrets controller (built by
//! `hack/test-bins.sh --with-sealed-secrets` from its Go module at a pinned version),
//! holding N SealedSecrets and the Secrets it unsealed from them, on the same API server.
//!
//! It only runs in a cluster (`rest.InClusterConfig`): it reads its token and CA from
//! `/var/run/secrets/kubernetes.io/serviceaccount/` and the server from
//! `$KUBERNETES_SERVICE_HOST`/`_PORT`. So it runs in a mount namespace of its own
//! (`unshare -m`) with a tmpfs on `/run` holding the benchmark ServiceAccount's token and
//! the API server's CA: nothing on the machine outside that namespace changes. It
//! watches only its namespace (`--all-namespaces=false`, `$POD_NAMESPACE`), as keyward
//! watches only the benchmark's, and its client-side rate limit (5 requests a second by
//! default) is lifted so that N Secrets are unsealed within the benchmark's time.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::identity::Identity;
use crate::process::{Measured, free_port};
use crate::rss::{Sampler, Target};

/// What the peer's run showed.
pub struct Peer {
    /// The controller: it runs as long as this is kept.
    pub _controller: Measured,
    /// Its memory, sampled from its start.
    pub memory: Sampler,
    /// From the first SealedSecret created to the last Secret unsealed, or `None`.
    pub elapsed: Option<Duration>,
    /// How many Secrets it unsealed.
    pub unsealed: usize,
    /// When it was busy unsealing (start, end).
    pub window: (Instant, Instant),
}

/// Where the peer runs and with what.
pub struct Setup<'a> {
    pub admin: &'a Client,
    pub admin_kubeconfig: &'a Path,
    /// The control-plane binaries' directory, where test-bins.sh links the peer's.
    pub assets: &'a Path,
    pub identity: &'a Identity,
    /// Where its log, credentials and certificate go.
    pub work_dir: &'a Path,
}

/// Starts the controller in `namespace` and has it unseal `count` SealedSecrets within
/// `timeout`; `Err` says why it could not run.
pub async fn run(
    setup: &Setup<'_>,
    namespace: &str,
    count: usize,
    timeout: Duration,
) -> Result<Peer, String> {
    let Setup {
        admin,
        admin_kubeconfig,
        assets,
        identity,
        work_dir,
    } = *setup;
    let controller = assets.join("sealed-secrets-controller");
    let kubeseal = assets.join("kubeseal");
    let crd = assets.join("sealed-secrets-crd.yaml");
    if !controller.exists() || !kubeseal.exists() || !crd.exists() {
        return Err("not built (hack/test-bins.sh --with-sealed-secrets)".into());
    }
    let kubectl = assets.join("kubectl");
    let applied = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(admin_kubeconfig)
        .args(["apply", "--server-side", "-f"])
        .arg(&crd)
        .output()
        .map_err(|error| format!("kubectl: {error}"))?;
    if !applied.status.success() {
        return Err(format!(
            "its CRD: {}",
            String::from_utf8_lossy(&applied.stderr).trim()
        ));
    }
    let established = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(admin_kubeconfig)
        .args([
            "wait",
            "--for=condition=Established",
            "crd/sealedsecrets.bitnami.com",
            "--timeout=60s",
        ])
        .output()
        .map_err(|error| format!("kubectl: {error}"))?;
    if !established.status.success() {
        return Err("its CRD was not established".into());
    }

    let secrets_dir = work_dir.join("sealed-secrets-serviceaccount");
    std::fs::create_dir_all(&secrets_dir).map_err(|error| error.to_string())?;
    std::fs::write(secrets_dir.join("token"), &identity.token).map_err(|e| e.to_string())?;
    std::fs::write(secrets_dir.join("ca.crt"), &identity.ca_pem).map_err(|e| e.to_string())?;
    let (host, port) = identity
        .server
        .trim_start_matches("https://")
        .rsplit_once(':')
        .ok_or("the server has no port")?;
    let script = r#"set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/secrets/kubernetes.io/serviceaccount
cp "$0/token" "$0/ca.crt" /run/secrets/kubernetes.io/serviceaccount/
exec "$@""#;
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(&secrets_dir)
        // Dies with the benchmark, as the operator does (see `process::dies_with_us`).
        .args(["setpriv", "--pdeathsig", "KILL", "--"])
        .arg(&controller)
        .args(["--all-namespaces=false", "--kubeclient-qps=-1"])
        .args(["--kubeclient-burst", "100"])
        .args(["--listen-addr", &format!("127.0.0.1:{}", free_port())])
        .args([
            "--listen-metrics-addr",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env("POD_NAMESPACE", namespace)
        .env("KUBERNETES_SERVICE_HOST", host)
        .env("KUBERNETES_SERVICE_PORT", port);
    let mut process = Measured::spawn(command, &work_dir.join("sealed-secrets-controller.log"));
    let memory = Sampler::start(Target::Pid(process.pid()));

    // Its key: a Secret it generates at start (RSA 4096).
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), namespace);
    let key_deadline = Instant::now() + Duration::from_secs(120);
    let certificate = loop {
        let keys = secrets
            .list(&ListParams::default().labels("sealedsecrets.bitnami.com/sealed-secrets-key"))
            .await
            .map_err(|error| error.to_string())?;
        if let Some(certificate) = keys
            .items
            .iter()
            .find_map(|secret| secret.data.as_ref()?.get("tls.crt").cloned())
        {
            break certificate.0;
        }
        if !process.is_running() || Instant::now() > key_deadline {
            return Err(format!(
                "the controller made no key: {}",
                process.log_tail(5)
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let certificate_file = work_dir.join("sealed-secrets.pem");
    std::fs::write(&certificate_file, certificate).map_err(|error| error.to_string())?;
    let client_id = seal(&kubeseal, &certificate_file, b"bench-client-id-0000001")?;
    let client_secret = seal(
        &kubeseal,
        &certificate_file,
        b"a-client-secret-of-43-characters-xxxxxxxxx",
    )?;

    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "bitnami.com",
        "v1alpha1",
        "SealedSecret",
    ));
    let sealed: Api<DynamicObject> = Api::namespaced_with(admin.clone(), namespace, &resource);
    let unsealed = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let sink = unsealed.clone();
    let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(async move {
        let mut listed = Some(listed_tx);
        let mut events = watcher::watcher(secrets, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(secret) | Event::InitApply(secret)) => {
                    let owned = secret
                        .owner_references()
                        .iter()
                        .any(|owner| owner.kind == "SealedSecret");
                    if owned {
                        sink.lock()
                            .expect("lock")
                            .entry(secret.name_any())
                            .or_insert_with(Instant::now);
                    }
                }
                Ok(Event::InitDone) => {
                    if let Some(listed) = listed.take() {
                        let _ = listed.send(());
                    }
                }
                _ => {}
            }
        }
    });
    let _ = listed_rx.await;

    let start = Instant::now();
    let cluster_wide = json!({"sealedsecrets.bitnami.com/cluster-wide": "true"});
    futures::stream::iter(0..count)
        .map(|index| {
            let name = format!("sealed-{index:05}");
            let document = json!({
                "apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret",
                "metadata": {"name": name, "annotations": cluster_wide},
                "spec": {
                    "encryptedData": {"clientId": client_id, "clientSecret": client_secret},
                    "template": {"metadata": {"name": name, "annotations": cluster_wide}},
                },
            });
            let sealed = sealed.clone();
            async move {
                let object: DynamicObject = serde_json::from_value(document).expect("object");
                sealed.create(&PostParams::default(), &object).await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|error| format!("SealedSecrets not created: {error}"))?;
    let deadline = start + timeout;
    let count_now = || unsealed.lock().expect("lock").len();
    while count_now() < count && Instant::now() < deadline && process.is_running() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watch.abort();
    let done = count_now();
    let last = unsealed.lock().expect("lock").values().max().copied();
    let end = last.unwrap_or_else(Instant::now);
    if !process.is_running() {
        return Err(format!("the controller exited: {}", process.log_tail(5)));
    }
    Ok(Peer {
        _controller: process,
        memory,
        elapsed: (done == count).then(|| end - start),
        unsealed: done,
        window: (start, end),
    })
}

/// `kubeseal --raw --scope cluster-wide` of `value` with the controller's certificate.
fn seal(kubeseal: &Path, certificate: &Path, value: &[u8]) -> Result<String, String> {
    let mut child = Command::new(kubeseal)
        .args([
            "--raw",
            "--scope",
            "cluster-wide",
            "--from-file=/dev/stdin",
            "--cert",
        ])
        .arg(certificate)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("kubeseal: {error}"))?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(value)
        .map_err(|error| error.to_string())?;
    let output = child
        .wait_with_output()
        .map_err(|error| error.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "kubeseal: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
