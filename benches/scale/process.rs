//! The processes the benchmark measures: the operator (`keyward run`) and the
//! sealed-secrets controller, each with its log in a file, its pid for `/proc`, and
//! killed with the benchmark however it ends.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A measured process. Killed when dropped; `setpriv --pdeathsig KILL` also kills it when
/// the benchmark dies (it is spawned from the main thread, which lives as long as the
/// process, so the parent-death signal fires only then).
pub struct Measured {
    child: Child,
    /// Where its standard output and error go.
    pub log: PathBuf,
}

impl Measured {
    /// Spawns `program args…` under `setpriv --pdeathsig KILL`, logging to `log`.
    pub fn spawn(mut command: Command, log: &Path) -> Self {
        let file = File::create(log).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|error| panic!("{command:?} starts: {error}"));
        Self {
            child,
            log: log.to_owned(),
        }
    }

    /// The pid whose `/proc/<pid>/status` is sampled (the program itself: every wrapper
    /// before it `exec`s).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `lines` lines of its log, for a report of why something did not finish.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `setpriv --pdeathsig KILL -- program`, to which arguments are added.
pub fn dies_with_us(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command.args(["--pdeathsig", "KILL", "--"]).arg(program);
    command
}

/// The operator watching `namespace`, authenticated by `kubeconfig`, with its Jobs on
/// the job runner's node, logging at its default level (as deployed).
pub fn operator(kubeconfig: &Path, namespace: &str, log: &Path) -> Measured {
    let selector = format!("{}=true", crate::support::jobs::LABEL);
    let toleration = format!("{}=true:NoSchedule", crate::support::jobs::LABEL);
    let mut command = dies_with_us(Path::new(env!("CARGO_BIN_EXE_keyward")));
    command
        .args(["run", "--namespace", namespace])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
        ])
        .args(["--instance", &format!("keyward-{namespace}")])
        .args(["--job-node-selector", &selector])
        .args(["--job-toleration", &toleration])
        .env("KUBECONFIG", kubeconfig)
        .env_remove("RUST_LOG");
    Measured::spawn(command, log)
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Runs `program args` and returns its first line of output, or `"unknown"`.
pub fn version_of(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|output| {
            let text = if output.stdout.is_empty() {
                output.stderr
            } else {
                output.stdout
            };
            String::from_utf8(text).ok()
        })
        .and_then(|text| text.lines().next().map(|line| line.trim().to_owned()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The operator's own `/metrics` (its address is in its log), as `name{labels}` → value;
/// empty when it cannot be read.
pub fn operator_metrics(operator: &Measured) -> std::collections::BTreeMap<String, f64> {
    use std::io::{Read, Write};
    let log = std::fs::read_to_string(&operator.log).unwrap_or_default();
    let Some(address) = log
        .lines()
        .find(|line| line.contains("serving /metrics"))
        .and_then(|line| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix("metrics="))
        })
    else {
        return Default::default();
    };
    let mut page = String::new();
    let read = std::net::TcpStream::connect(address).and_then(|mut stream| {
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: operator\r\n\r\n")?;
        stream.read_to_string(&mut page)
    });
    if read.is_err() {
        return Default::default();
    }
    page.lines()
        .filter(|line| line.starts_with("keyward_"))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}
