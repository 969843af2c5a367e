//! The operator under test, run as the real `keyward` binary against the test control
//! plane, with its log lines collected so tests can read them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{TestCluster, control_plane, jobs};

/// The operator watching the test's namespace on the shared control plane, with its
/// defaults.
pub fn operator(cluster: &TestCluster) -> Operator {
    operator_with_args(cluster, &[])
}

/// The operator watching the test's namespace on the shared control plane, with `args`
/// appended.
pub fn operator_with_args(cluster: &TestCluster, args: &[&str]) -> Operator {
    Operator::start(&control_plane().kubeconfig, &cluster.namespace, args)
}

/// The operator watching the test's namespace, with re-encryption Jobs placed on the job
/// runner's node (see [`jobs::job_placement`]) and `extra` arguments appended.
pub fn operator_running_jobs(cluster: &TestCluster, extra: &[&str]) -> Operator {
    let placement = jobs::job_placement();
    let mut args: Vec<&str> = placement.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    operator_with_args(cluster, &args)
}

/// How many lines of the operator's log a failing test prints.
const LOG_TAIL_ON_FAILURE: usize = 40;

/// A running `keyward run` process. Killed when dropped; a test that fails prints the end
/// of its log.
pub struct Operator {
    process: Child,
    log: Arc<Mutex<String>>,
    collector: Option<JoinHandle<()>>,
}

impl Operator {
    /// Starts `keyward run` watching `namespace`, with `extra_args` appended.
    ///
    /// Its endpoints listen on free loopback ports (see [`Operator::metrics_url`]), and
    /// unless `extra_args` names another `--instance`, it is `keyward-<namespace>` in the
    /// leader Lease: a restarted operator takes the Lease back at once, as a restarted
    /// container of the same Pod does.
    pub fn start(kubeconfig: &Path, namespace: &str, extra_args: &[&str]) -> Self {
        let mut defaults = vec![
            "--metrics-addr".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--health-addr".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        if !extra_args.contains(&"--instance") {
            defaults.extend(["--instance".to_owned(), format!("keyward-{namespace}")]);
        }
        Self::spawn(
            Command::new(env!("CARGO_BIN_EXE_keyward")),
            kubeconfig,
            namespace,
            &defaults,
            extra_args,
        )
    }

    /// Starts `keyward run` as a container runs it: process id 1 in a PID namespace of
    /// its own, with no `--instance` and no `$POD_NAME` (a Deployment that does not set
    /// it), `extra_args` appended.
    pub fn start_as_pid_one(kubeconfig: &Path, namespace: &str, extra_args: &[&str]) -> Self {
        const UNSHARE: [&str; 4] = ["--map-root-user", "--pid", "--fork", "--kill-child"];
        let usable = Command::new("unshare")
            .args(UNSHARE)
            .arg("true")
            .status()
            .is_ok_and(|status| status.success());
        assert!(
            usable,
            "running the operator as PID 1 needs `unshare` (util-linux) and user and PID namespaces"
        );
        let mut unshare = Command::new("unshare");
        // `--kill-child`: the operator dies with the `unshare` this struct kills.
        unshare
            .args(UNSHARE)
            .arg(env!("CARGO_BIN_EXE_keyward"))
            .env_remove("POD_NAME");
        let defaults = [
            "--metrics-addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
        ]
        .map(str::to_owned);
        Self::spawn(unshare, kubeconfig, namespace, &defaults, extra_args)
    }

    fn spawn(
        mut command: Command,
        kubeconfig: &Path,
        namespace: &str,
        defaults: &[String],
        extra_args: &[&str],
    ) -> Self {
        let mut process = command
            .arg("run")
            .arg("--namespace")
            .arg(namespace)
            .args(defaults)
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn,keyward=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keyward run starts");
        let stderr = process.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let collector = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self {
            process,
            log,
            collector: Some(collector),
        }
    }

    /// Whether the process is still running (it has not exited, for any reason).
    pub fn is_running(&mut self) -> bool {
        self.process.try_wait().expect("operator status").is_none()
    }

    /// The operator's peak resident memory so far (`VmHWM`), in bytes; `None` once it
    /// has exited.
    pub fn peak_memory(&self) -> Option<u64> {
        status_kib(self.process.id(), "VmHWM").map(|kib| kib * 1024)
    }

    /// Everything the operator has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// The address an endpoint (`metrics` or `health`) listens on, once the log names it.
    fn endpoint(&self, which: &str) -> Option<String> {
        let log = self.log();
        let line = log.lines().find(|line| line.contains("serving /metrics"))?;
        let value = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix(&format!("{which}=")))?;
        Some(format!("http://{value}"))
    }

    /// Base URL of `/metrics`, waiting up to a minute for the operator to listen.
    pub fn metrics_url(&self) -> String {
        self.wait_for_endpoint("metrics")
    }

    /// Base URL of `/healthz` and `/readyz`, waiting up to a minute for the operator to
    /// listen.
    pub fn health_url(&self) -> String {
        self.wait_for_endpoint("health")
    }

    fn wait_for_endpoint(&self, which: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(url) = self.endpoint(which) {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "the operator named no {which} endpoint within a minute"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends the signal `name` (`STOP`, `CONT`, …) to the process.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.process.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIG{name} delivered to the operator");
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; returns its exit
    /// status and its whole log.
    pub fn terminate(mut self, timeout: Duration) -> (ExitStatus, String) {
        let pid = self.process.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM delivered to the operator");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.process.try_wait().expect("operator status") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "operator did not exit within {timeout:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(collector) = self.collector.take() {
            collector.join().expect("log collector");
        }
        (status, self.log())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        // A failing test shows the end of the operator's log beside its assertion.
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_ON_FAILURE)..];
            eprintln!(
                "--- last {} lines of the operator log ---\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Field `field` (`VmHWM`, `VmRSS`, ...) of process `pid`'s `/proc/PID/status`, in
/// kibibytes; `None` once it has exited.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
