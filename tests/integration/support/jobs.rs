//! How Jobs really run in the integration tests: `hack/job-runner.py` plays the kubelet
//! of one node, and the pods of `batch/v1` Jobs scheduled there run as local processes.
//!
//! The control plane (`hack/control-plane.sh`) runs no kubelet. kwok pretends to run
//! the pods of the nodes annotated `kwok.x-k8s.io/node=fake` and never runs anything,
//! which is enough for Deployments but not for the Jobs keyward creates (re-encryption
//! runs the `keyward` binary itself). So next to its control plane, each test binary
//! starts one job runner, on first use of [`runner`]:
//!
//! - **The node.** The runner registers the Node [`NODE`], labelled
//!   `keyward.io/job-runner=true` and tainted `keyward.io/job-runner=true:NoSchedule`, so
//!   that only pods asking for it ([`node_selector`] and [`toleration`]) land there. It
//!   has no kwok annotation, so kwok leaves the node and its pods alone. The runner keeps
//!   it Ready as a kubelet does, renewing its Lease in `kube-node-lease` and the Ready
//!   condition's heartbeat every 10 s; without that, kube-controller-manager's node
//!   lifecycle controller would mark it `Unknown` and taint it unreachable after about 50 s.
//! - **The process.** A Pending pod bound to the node and owned by a Job has its single
//!   container run as a process. A command whose first word's basename is `keyward` runs
//!   the `keyward` binary under test (`CARGO_BIN_EXE_keyward`) with the container's
//!   arguments; `sh` runs `/bin/sh`, an escape hatch for the runner's own tests; anything
//!   else fails to start (exit code 128, reason `StartError`). The process gets the
//!   container's plain `env` values (`$(VAR)` expanded; `valueFrom` is not resolved), a
//!   working directory and `HOME` of its own, and `KUBECONFIG` naming a kubeconfig for the
//!   same server and CA as the admin kubeconfig that authenticates **as the pod's service
//!   account**, with a pod-bound token from the TokenRequest API (what a kubelet projects
//!   into a pod; renewed before it expires). The Job's RBAC is thus exercised for real: a
//!   Role that misses a verb fails the Job with `Forbidden`, as on a cluster. A pod that
//!   does not automount a token gets no `KUBECONFIG`.
//! - **The outcome.** The pod turns `Running` (and Ready) once the process has started,
//!   then `Succeeded` on exit code 0 or `Failed` otherwise, with the exit code in
//!   `status.containerStatuses[0].state.terminated.exitCode` (reason `Completed` or
//!   `Error`; 128+N for a process killed by signal N, so 137 for SIGKILL). The Job
//!   controller of kube-controller-manager reads that as on a real cluster: it retries up
//!   to `backoffLimit` (after its usual backoff of 10 s, 20 s, ...), applies a
//!   `podFailurePolicy` on exit codes, and marks the Job `Complete` or `Failed`.
//! - **Deletion and chaos.** A pod deleted while its process runs has the process
//!   SIGKILLed, is marked `Failed` and is then deleted with grace period 0, as a kubelet
//!   finishes a graceful deletion (the Job controller still removes its own finalizer).
//!   [`JobRunner::kill_jobs_in`] SIGKILLs the processes of one namespace's pods, and
//!   [`JobRunner::kill_jobs`] those of every namespace, so a test can kill a Job mid-batch
//!   and watch the Job controller start a new pod.
//!
//! The runner's log, its own lines and each process's output prefixed with
//! `[namespace/pod]`, is in [`JobRunner::log`]. The runner lives as long as the test
//! binary: it watches its standard input, which closes when this process exits.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{TestCluster, manifest};

/// The node the job runner plays.
pub const NODE: &str = "keyward-job-runner";

/// The label (value `"true"`) and taint key (`true:NoSchedule`) of [`NODE`].
pub const LABEL: &str = "keyward.io/job-runner";

/// A pod's `nodeSelector` for [`NODE`].
pub fn node_selector() -> serde_json::Value {
    serde_json::json!({ LABEL: "true" })
}

/// The toleration a pod needs for [`NODE`]'s taint.
pub fn toleration() -> serde_json::Value {
    serde_json::json!({"key": LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"})
}

/// The operator's flags that place re-encryption Jobs on the job runner's node, which
/// is started if it is not yet.
pub fn job_placement() -> [String; 4] {
    runner();
    [
        "--job-node-selector".to_owned(),
        format!("{LABEL}=true"),
        "--job-toleration".to_owned(),
        format!("{LABEL}=true:NoSchedule"),
    ]
}

/// The `kubectl` of the control plane's binaries: from `$KUBEBUILDER_ASSETS`, else
/// `hack/test-bins.sh`, as the hack scripts find it.
pub fn kubectl() -> PathBuf {
    let assets = match std::env::var_os("KUBEBUILDER_ASSETS") {
        Some(assets) if !assets.is_empty() => PathBuf::from(assets),
        _ => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/test-bins.sh");
            let output = Command::new(script)
                .output()
                .expect("hack/test-bins.sh runs");
            assert!(output.status.success(), "hack/test-bins.sh failed");
            PathBuf::from(String::from_utf8(output.stdout).expect("a path").trim())
        }
    };
    assets.join("kubectl")
}

/// `spec.reencryption.jobTemplate` for a Job of one `sh -c script` container on the job
/// runner's node, run as the ServiceAccount `external`, which may read the Secrets that
/// hand over key versions and the ConfigMaps a test signals the script with.
pub async fn external_template(cluster: &TestCluster, script: &str) -> serde_json::Value {
    let documents = [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "external"}}),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "external"},
            "rules": [{"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "external"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "external"},
            "subjects": [{"kind": "ServiceAccount", "name": "external", "namespace": cluster.namespace}],
        }),
    ];
    for document in &documents {
        manifest::apply(&cluster.client, &cluster.namespace, "gitops", document)
            .await
            .expect("applies");
    }
    let kubectl = kubectl().to_string_lossy().into_owned();
    json!({"spec": {
        "backoffLimit": 0,
        "template": {"spec": {
            "restartPolicy": "Never",
            "serviceAccountName": "external",
            "nodeSelector": node_selector(),
            "tolerations": [toleration()],
            "containers": [{
                "name": "database",
                "image": "example.com/apim-db-reencrypt:1",
                "command": ["sh"],
                "args": ["-c", script],
                "env": [{"name": "KUBECTL", "value": kubectl}],
            }],
        }},
    }})
}

/// A running `hack/job-runner.py`.
pub struct JobRunner {
    process: Mutex<Child>,
    log: Arc<Mutex<String>>,
}

static RUNNER: OnceLock<JobRunner> = OnceLock::new();

/// The job runner of this test binary's control plane, started on first use. One per
/// control plane: two would both play [`NODE`].
pub fn runner() -> &'static JobRunner {
    RUNNER.get_or_init(|| JobRunner::start(&super::control_plane().kubeconfig))
}

impl JobRunner {
    /// Starts the runner against the control plane of `kubeconfig` and waits until its
    /// node is Ready. Tests use [`runner`].
    pub fn start(kubeconfig: &Path) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/job-runner.py");
        let mut process = Command::new("python3")
            .arg(script)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--keyward")
            .arg(env!("CARGO_BIN_EXE_keyward"))
            .arg("--until-stdin-closes")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hack/job-runner.py starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = collect(process.stderr.take().expect("piped stderr"), log.clone());
        let mut stdout = BufReader::new(process.stdout.take().expect("piped stdout"));
        let ready = stdout
            .by_ref()
            .lines()
            .map_while(Result::ok)
            .any(|line| line == "job-runner ready");
        if !ready {
            let status = process.wait().expect("job runner status");
            stderr.join().expect("log collector");
            panic!(
                "hack/job-runner.py did not become ready ({status}):\n{}",
                log.lock().unwrap_or_else(PoisonError::into_inner)
            );
        }
        // It prints nothing more there, but must never block on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Self {
            process: Mutex::new(process),
            log,
        }
    }

    /// Everything the runner has logged so far: its own lines and its processes' output,
    /// each line of which is prefixed with `[namespace/pod]`.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The lines of [`log`](Self::log) about the pods of `namespace`.
    pub fn log_of(&self, namespace: &str) -> String {
        let pods = format!("{namespace}/");
        self.log()
            .lines()
            .filter(|line| line.contains(&pods))
            .map(|line| format!("{line}\n"))
            .collect()
    }

    /// SIGKILLs the processes of every pod the runner runs (SIGUSR1), in every
    /// namespace: other tests' Jobs too. Tests that share the runner use
    /// [`kill_jobs_in`](Self::kill_jobs_in).
    #[allow(dead_code, reason = "for tests that own the runner")]
    pub fn kill_jobs(&self) {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args(["-USR1", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGUSR1 delivered to the job runner");
    }

    /// SIGKILLs the processes of the pods of `namespace`; their pods turn `Failed` with
    /// exit code 137.
    pub fn kill_jobs_in(&self, namespace: &str) {
        let mut process = self.process.lock().unwrap_or_else(PoisonError::into_inner);
        let stdin = process.stdin.as_mut().expect("the runner's stdin is open");
        writeln!(stdin, "kill-jobs {namespace}")
            .and_then(|()| stdin.flush())
            .expect("the job runner reads its stdin");
    }

    /// A guard that prints [`log_of`](Self::log_of) `namespace` when the test fails.
    pub fn log_on_failure<'a>(&'a self, namespace: &'a str) -> LogOnFailure<'a> {
        LogOnFailure {
            runner: self,
            namespace,
        }
    }

    fn pid(&self) -> u32 {
        self.process
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .id()
    }
}

impl Drop for JobRunner {
    fn drop(&mut self) {
        // Closing its standard input stops it cleanly, its processes with it.
        let process = self
            .process
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        drop(process.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(process.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = process.kill();
        let _ = process.wait();
    }
}

/// See [`JobRunner::log_on_failure`].
pub struct LogOnFailure<'a> {
    runner: &'a JobRunner,
    namespace: &'a str,
}

impl Drop for LogOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- the job runner's log of namespace {} ---\n{}",
                self.namespace,
                self.runner.log_of(self.namespace)
            );
        }
    }
}

fn collect(stream: impl Read + Send + 'static, log: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            log.push_str(&line);
            log.push('\n');
        }
    })
}
