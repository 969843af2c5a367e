//! The operator under test, run as the real `keyward` binary against the test control
//! plane, with its log lines collected so tests can read them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    pub fn start(kubeconfig: &Path, namespace: &str, extra_args: &[&str]) -> Self {
        let mut process = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("run")
            .arg("--namespace")
            .arg(namespace)
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

    /// Everything the operator has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
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
