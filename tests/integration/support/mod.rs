//! Test support: one real control plane per test binary (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok, started by
//! `hack/control-plane.sh`), one namespace per test, and the operator as a real process.
//!
//! The control plane lives as long as the test binary: the script watches its standard
//! input, which closes when this process exits for any reason, and then stops every
//! component and removes its directory.
//!
//! What more than one test file needs is here, once, in the module of what it works on:
//! `api` (the test namespace's handles), `encryption_key` and `oauth_client` (applying
//! the resources and waiting on them), `workload` (the Deployments keys reach),
//! `events`, `access` (acting as a ServiceAccount with narrower rights), `operator`,
//! `jobs` (the job runner and what runs on it), `ciphertext`, `manifest`, `chart`,
//! `http`, `wait`, `wso2_java` (the Java stand-in for WSO2) and `database` (real
//! PostgreSQL and MariaDB servers). A test file keeps only what its own tests share.

pub mod access;
pub mod api;
pub mod chart;
pub mod ciphertext;
pub mod database;
pub mod encryption_key;
pub mod events;
pub mod http;
pub mod jobs;
pub mod manifest;
pub mod oauth_client;
pub mod operator;
pub mod prometheus;
pub mod wait;
pub mod workload;
pub mod wso2_java;
pub mod wso2_rendering;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config, ResourceExt};

pub use operator::Operator;

/// How long a test waits for anything the cluster or the operator should do.
pub const WAIT: Duration = Duration::from_secs(60);

/// A control plane: the one this test binary shares, or one a test has to itself.
pub struct ControlPlane {
    /// Path of the admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The directory the control plane runs in.
    dir: PathBuf,
    /// The script that runs the control plane; kept so its standard input stays open
    /// (dropping it closes that, and the script stops everything).
    script: Mutex<Child>,
}

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// The shared control plane, started on first use.
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(ControlPlane::start)
}

impl ControlPlane {
    fn start() -> Self {
        Self::start_in(&format!("keyward-test-{}", std::process::id()))
    }

    /// A control plane of the calling test's own, for tests that take the API server
    /// away and would disturb every other test on the shared one. It stops when dropped.
    pub fn start_private(test: &str) -> Self {
        Self::start_in(&format!("keyward-test-{}-{test}", std::process::id()))
    }

    fn start_in(directory: &str) -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::temp_dir().join(directory);
        let mut script = Command::new("bash")
            .arg(root.join("hack/control-plane.sh"))
            .arg("run")
            .arg(&dir)
            .arg("--until-stdin-closes")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("hack/control-plane.sh starts");
        let stdout = script.stdout.take().expect("piped stdout");
        let kubeconfig = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("ready ").map(PathBuf::from))
            .expect("the control plane came up (its log is above)");
        Self {
            kubeconfig,
            dir,
            script: Mutex::new(script),
        }
    }

    /// etcd's client URL.
    pub fn etcd_url(&self) -> String {
        let url = std::fs::read_to_string(self.dir.join("etcd-url")).expect("etcd-url written");
        url.trim().to_owned()
    }

    /// Stops kube-apiserver; everything else runs on.
    pub fn stop_apiserver(&self) {
        self.signal("USR1");
    }

    /// Starts kube-apiserver again and waits until it is ready.
    pub async fn start_apiserver(&self) {
        let marker = self.dir.join("apiserver-started");
        let starts = || {
            std::fs::read_to_string(&marker)
                .map(|text| text.lines().count())
                .unwrap_or(0)
        };
        let before = starts();
        self.signal("USR2");
        wait::until_true(
            "kube-apiserver is ready again",
            Duration::from_secs(120),
            || starts() > before,
        )
        .await;
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .id();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(
            status.success(),
            "the control plane script takes SIG{signal}"
        );
    }

    /// A client with cluster-admin rights.
    pub async fn client(&self) -> Client {
        client_for(&self.kubeconfig).await
    }
}

/// A client that authenticates as the kubeconfig at `path` says.
pub async fn client_for(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is valid");
    Client::try_from(config).expect("client builds")
}

/// Runs the `keyward` binary with `args` against the test cluster, `stdin` piped in;
/// returns its exit status and output.
pub fn keyward(args: &[&str], stdin: &[u8]) -> std::process::Output {
    keyward_on(control_plane(), args, stdin)
}

/// As [`keyward`], against `control_plane`.
pub fn keyward_on(
    control_plane: &ControlPlane,
    args: &[&str],
    stdin: &[u8],
) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
    command
        .args(args)
        .env("KUBECONFIG", &control_plane.kubeconfig);
    run_with_stdin(command, stdin)
}

/// Runs the control plane's `kubectl` with `args` as the cluster's admin, `stdin` piped
/// in (`-f -` reads manifests from it); returns its exit status and output.
pub fn kubectl<S: AsRef<std::ffi::OsStr>>(args: &[S], stdin: &[u8]) -> std::process::Output {
    let mut command = Command::new(jobs::kubectl());
    command
        .arg("--kubeconfig")
        .arg(&control_plane().kubeconfig)
        .args(args);
    run_with_stdin(command, stdin)
}

/// Runs `command` to its end with `stdin` piped in; returns its exit status and output.
pub fn run_with_stdin(mut command: Command, stdin: &[u8]) -> std::process::Output {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{program} runs: {error}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("stdin written");
    child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("{program} exits: {error}"))
}

/// What one test works in: an admin client and a namespace of its own.
pub struct TestCluster {
    pub client: Client,
    pub namespace: String,
}

/// Starts (or reuses) the control plane, installs the CRDs and creates a fresh
/// namespace named after `test`.
pub async fn cluster(test: &str) -> TestCluster {
    cluster_on(control_plane(), test).await
}

/// As [`cluster`], on `control_plane` (one a test has to itself).
pub async fn cluster_on(control_plane: &ControlPlane, test: &str) -> TestCluster {
    let client = control_plane.client().await;
    report_server_version(&client).await;
    install_crds(&client).await;
    let namespace = create_namespace(&client, test).await;
    TestCluster { client, namespace }
}

/// Prints the API server's version once per test binary, past the test harness's output
/// capture, so every run shows which real Kubernetes it talked to.
async fn report_server_version(client: &Client) {
    static REPORTED: OnceLock<()> = OnceLock::new();
    if REPORTED.get().is_some() {
        return;
    }
    let version = client
        .apiserver_version()
        .await
        .expect("the apiserver answers /version");
    if REPORTED.set(()).is_ok() {
        let _ = writeln!(
            std::io::stderr(),
            "integration tests run against kube-apiserver {} ({})",
            version.git_version,
            version.platform
        );
    }
}

/// Applies the CRDs exactly as `keyward crds` prints them and waits until they serve.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("keyward-tests").force();
    for crd in keyward::crd::crds() {
        let name = crd.name_any();
        crds.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .expect("CRD applies");
        let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(WAIT, established)
            .await
            .expect("CRD is established in time")
            .expect("CRD watch works");
    }
}

/// Creates a fresh namespace named after `test` (with a generated suffix) and returns its
/// name: for tests that need more than the one [`cluster`] gives them.
pub async fn create_namespace(client: &Client, test: &str) -> String {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let prefix: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let namespace = Namespace {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let created = namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace created");
    created.name_any()
}
