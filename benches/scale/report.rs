//! The table the benchmark prints and the page `make bench` writes from it: every
//! number in them comes from the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::apiserver::{self, Counts};
use crate::clients::{self, Issued};
use crate::process::version_of;
use crate::rotation::Rotated;
use crate::rss::mib;

/// One rotation's figures: its rate limit (`None`: the default), what the watch saw,
/// and the peak RSS of the operator and of the re-encryption Job over its step.
pub struct RotationRun {
    pub limit: Option<i32>,
    pub rotated: Rotated,
    pub operator_peak: Option<u64>,
    pub job_peak: Option<u64>,
}

/// The peer's figures: how long it took to unseal all (`None`: it did not within its
/// bound), how many it unsealed, and its peak RSS busy and idle.
pub struct PeerRun {
    pub elapsed: Option<Duration>,
    pub unsealed: usize,
    pub busy: Option<u64>,
    pub idle: Option<u64>,
}

/// What the throughput measurement found.
pub struct Throughput<'a> {
    pub issued: &'a Issued,
    /// How long the baseline took, if it finished.
    pub baseline: Option<Duration>,
    /// The writes the API server counted over the baseline's window.
    pub baseline_writes: Counts,
    /// The operator's writes over its window (client-work kinds, less the applies).
    pub operator_writes: &'a Counts,
    pub replay: &'a clients::Plan,
    /// CPU time over the operator's window and over the baseline's.
    pub cpu_issue: String,
    pub cpu_baseline: String,
}

/// A restarted operator's figures: how many clients it held, how long until it had
/// reconciled as many times, its peak RSS and sockets meanwhile, and its RSS idle.
pub struct Restart {
    pub clients: usize,
    pub resynced: Option<Duration>,
    pub busy: Option<u64>,
    pub sockets: Option<u64>,
    pub idle: Option<u64>,
}

/// One line of the table.
pub struct Row {
    /// What is measured, and for which N.
    pub measurement: String,
    pub n: String,
    pub keyward: String,
    pub baseline: String,
    /// keyward against the baseline, as the target reads it.
    pub ratio: String,
    pub target: String,
    /// A key other rows find this one by (the peer fills in the memory baseline).
    key: String,
}

impl Row {
    fn new(key: &str, measurement: &str, n: usize) -> Self {
        Self {
            measurement: measurement.to_owned(),
            n: thousands(n),
            keyward: "—".into(),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "—".into(),
            key: format!("{key}/{n}"),
        }
    }
}

/// What the run found, and on what.
pub struct Report {
    quick: bool,
    rows: Vec<Row>,
    notes: Vec<String>,
    versions: Vec<(String, String)>,
    machine: Vec<(String, String)>,
    started: Timestamp,
    duration: Option<Duration>,
}

impl Report {
    pub fn new(quick: bool) -> Self {
        Self {
            quick,
            rows: Vec::new(),
            notes: Vec::new(),
            versions: Vec::new(),
            machine: machine(),
            started: Timestamp::now(),
            duration: None,
        }
    }

    /// The versions of what runs, from the binaries themselves.
    pub fn versions(&mut self, assets: &Path) {
        let keyward = Path::new(env!("CARGO_BIN_EXE_keyward"));
        self.versions = vec![
            ("keyward".into(), version_of(keyward, &["--version"])),
            (
                "Kubernetes".into(),
                version_of(&assets.join("kube-apiserver"), &["--version"]),
            ),
            (
                "etcd".into(),
                version_of(&assets.join("etcd"), &["--version"]),
            ),
            (
                "kwok".into(),
                version_of(&assets.join("kwok"), &["--version"]),
            ),
            (
                "kubectl".into(),
                version_of(&assets.join("kubectl"), &["version", "--client"]),
            ),
            (
                "sealed-secrets".into(),
                version_of(&assets.join("sealed-secrets-controller"), &["--version"]),
            ),
            (
                "rustc".into(),
                version_of(Path::new("rustc"), &["--version"]),
            ),
            ("go".into(), version_of(Path::new("go"), &["version"])),
        ];
    }

    pub fn crypto(&mut self, hash: Duration, seal: Duration, open: Duration, round_trip: Duration) {
        let mut row = Row::new(
            "crypto",
            "Crypto per object: SHA-256 hash / AES-GCM seal / open",
            1,
        );
        row.n = "1".into();
        row.keyward = format!("{} / {} / {}", micros(hash), micros(seal), micros(open));
        row.baseline = format!(
            "one API round trip (GET of a Secret, median): {}",
            millis(round_trip)
        );
        let share = (hash + seal + open).as_secs_f64() / round_trip.as_secs_f64() * 100.0;
        row.ratio = format!("{share:.3} % of a round trip");
        row.target = "< 1 %".into();
        self.rows.push(row);
    }

    pub fn throughput(&mut self, n: usize, found: &Throughput<'_>) {
        let issued = found.issued;
        let mut row = Row::new(
            "throughput",
            "OAuthClient throughput: apply N → all `Ready`",
            n,
        );
        row.keyward = match issued.elapsed {
            Some(elapsed) => rate(n, elapsed, "clients/s"),
            None => format!("did not finish: {} of {n} ready", issued.ready),
        };
        let baseline_writes: u64 = found.baseline_writes.values().sum();
        row.baseline = match found.baseline {
            Some(elapsed) => format!(
                "{} (the same {} writes + {} applies, {} clients at a time; the API server \
                 counted {} writes)",
                rate(n, elapsed, "clients/s"),
                thousands(found.replay.total() as usize),
                thousands(n),
                clients::BASELINE_CONCURRENCY,
                thousands(baseline_writes as usize),
            ),
            None => "did not finish".into(),
        };
        if let (Some(keyward), Some(raw)) = (issued.elapsed, found.baseline) {
            row.ratio = format!("{:.2}", raw.as_secs_f64() / keyward.as_secs_f64());
        }
        row.target = "≥ 0.8".into();
        self.rows.push(row);

        let per = n as f64;
        let operator_total: u64 = found.operator_writes.values().sum();
        let mut row = Row::new("writes", "API writes per issued client", n);
        row.keyward = format!(
            "{:.2} ({}; the last came {:.0} s after the last client turned ready)",
            operator_total as f64 / per,
            apiserver::breakdown(found.operator_writes, per),
            issued.settled_after.as_secs_f64()
        );
        row.target = "≤ 3.2".into();
        self.rows.push(row);

        let reads = apiserver::filtered(&issued.requests, |kind| {
            !apiserver::is_write(kind) && apiserver::is_client_work(kind)
        });
        let mut row = Row::new("reads", "API reads per issued client", n);
        row.keyward = format!(
            "{:.2} ({})",
            reads.values().sum::<u64>() as f64 / per,
            apiserver::breakdown(&reads, per)
        );
        self.rows.push(row);

        let mut row = Row::new(
            "cpu-issue",
            "CPU time (user + system) while issuing N clients",
            n,
        );
        row.keyward.clone_from(&found.cpu_issue);
        row.baseline.clone_from(&found.cpu_baseline);
        self.rows.push(row);

        let background = apiserver::filtered(&issued.requests, |kind| {
            apiserver::is_write(kind) && !apiserver::is_client_work(kind)
        });
        if !background.is_empty() {
            self.notes.push(format!(
                "N = {}: other writes the API server served while the clients were issued \
                 (Leases of nodes and of the operator's leader election, other components), \
                 not counted per client: {}.",
                thousands(n),
                apiserver::breakdown(&background, 1.0)
            ));
        }
        if !found.replay.not_replayed.is_empty() {
            self.notes.push(format!(
                "N = {}: operator writes the baseline does not replay: {}.",
                thousands(n),
                apiserver::breakdown(&found.replay.not_replayed, 1.0)
            ));
        }
    }

    /// What the operator's own metrics say of the issuing window: reconciles per client,
    /// their mean duration, and the errors they met.
    pub fn reconciles(
        &mut self,
        n: usize,
        when: &str,
        before: &BTreeMap<String, f64>,
        after: &BTreeMap<String, f64>,
    ) {
        let delta = |name: &str| {
            after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
        };
        let labels = r#"{controller="OAuthClient"}"#;
        let count = delta(&format!("keyward_reconciles_total{labels}"));
        let mut row = Row::new(
            "reconciles",
            &format!("Operator reconciles per client {when} (its own metrics)"),
            n,
        );
        if count == 0.0 {
            row.keyward = "not read".into();
        } else {
            let seconds = delta(&format!("keyward_reconcile_duration_seconds_sum{labels}"));
            let calls = delta(&format!("keyward_reconcile_duration_seconds_count{labels}"));
            row.keyward = format!(
                "{:.2} reconciles, {:.1} ms each on average",
                count / n as f64,
                if calls > 0.0 {
                    seconds / calls * 1e3
                } else {
                    0.0
                }
            );
            let errors: Vec<String> = after
                .keys()
                .filter(|name| {
                    name.starts_with("keyward_reconcile_errors_total")
                        && name.contains(r#"controller="OAuthClient""#)
                })
                .filter_map(|name| {
                    let errors = delta(name);
                    let label = name.split("reason=\"").nth(1)?.split('"').next()?;
                    (errors > 0.0).then(|| format!("{label} {:.3}", errors / n as f64))
                })
                .collect();
            row.keyward.push_str(&if errors.is_empty() {
                "; no errors".to_owned()
            } else {
                format!("; errors per client: {}", errors.join(", "))
            });
        }
        self.rows.push(row);
    }

    /// CPU time over each rotation and over kubectl's rewrite.
    pub fn rotation_cpu(&mut self, n: usize, rotations: &[String], kubectl: &str) {
        for (index, used) in rotations.iter().enumerate() {
            let what = if index == 0 {
                "CPU time over the rotation, limit off (all phases)"
            } else {
                "CPU time over the rotation, limit at its default (all phases)"
            };
            let mut row = Row::new("cpu-rotation", what, n);
            row.keyward.clone_from(used);
            row.baseline = format!("during kubectl's rewrite: {kubectl}");
            self.rows.push(row);
        }
    }

    pub fn latency(&mut self, n: usize, latencies: &[Option<Duration>]) {
        let mut row = Row::new(
            "latency",
            "Latency, idle operator: one OAuthClient apply → `Ready`, p50 / p99",
            n,
        );
        row.n = format!("{} samples, beside {}", latencies.len(), thousands(n));
        let mut found: Vec<Duration> = latencies.iter().flatten().copied().collect();
        found.sort();
        if !found.is_empty() {
            let at = |q: f64| found[((found.len() - 1) as f64 * q).round() as usize];
            row.keyward = format!("{} / {}", millis(at(0.5)), millis(at(0.99)));
        }
        if found.len() < latencies.len() {
            row.keyward.push_str(&format!(
                " ({} not ready within 60 s)",
                latencies.len() - found.len()
            ));
        }
        self.rows.push(row);
    }

    pub fn reencryption(
        &mut self,
        n: usize,
        rotations: &[RotationRun],
        kubectl: &Result<Duration, String>,
    ) {
        for run in rotations {
            let (limit, rotated, job_peak) = (run.limit, &run.rotated, run.job_peak);
            let (key, what) = match limit {
                Some(limit) => (
                    "reencrypt-off",
                    format!("Re-encryption step, limit off (`writesPerSecond: {limit}`)"),
                ),
                None => (
                    "reencrypt-default",
                    format!(
                        "Re-encryption step, limit at its default ({} writes/s)",
                        keyward::reencrypt::DEFAULT_WRITES_PER_SECOND
                    ),
                ),
            };
            let mut row = Row::new(key, &what, n);
            row.keyward = match rotated.reencrypting {
                Some(elapsed) => {
                    let mut text = rate(n, elapsed, "Secrets/s");
                    if let Some(seconds) = rotated.job_seconds {
                        let writes = rotated
                            .job_writes
                            .map(|w| format!(", {} writes", thousands(w as usize)))
                            .unwrap_or_default();
                        text.push_str(&format!("; the Job's own run {seconds:.1} s{writes}"));
                    }
                    if let Some(peak) = job_peak {
                        text.push_str(&format!("; Job peak RSS {}", mib(peak)));
                    }
                    text
                }
                None => "did not finish".into(),
            };
            row.baseline = match kubectl {
                Ok(elapsed) => format!(
                    "`kubectl get secrets -o json \\| kubectl replace -f -`: {}",
                    rate(n, *elapsed, "Secrets/s")
                ),
                Err(why) => format!("kubectl {why}"),
            };
            if let (Some(keyward), Ok(kubectl)) = (rotated.reencrypting, kubectl) {
                row.ratio = format!(
                    "{:.2}× the baseline's speed",
                    kubectl.as_secs_f64() / keyward.as_secs_f64()
                );
            }
            row.target = if limit.is_some() {
                "faster than the baseline (> 1×)".into()
            } else {
                "SPEC: faster than the baseline at the default".into()
            };
            self.rows.push(row);
        }
    }

    pub fn operator_memory(
        &mut self,
        n: usize,
        (issuing, sockets): (Option<u64>, Option<u64>),
        idle: Option<u64>,
        rotation: Option<u64>,
    ) {
        let show = |kib: Option<u64>| kib.map_or_else(|| "not sampled".into(), mib);
        let mut row = Row::new(
            "memory-issuing",
            "Operator peak RSS while issuing N clients",
            n,
        );
        row.keyward = format!(
            "{}, at most {} sockets open",
            show(issuing),
            sockets.map_or_else(|| "?".into(), |count| count.to_string())
        );
        self.rows.push(row);
        let mut row = Row::new(
            "memory-idle",
            "Operator RSS, idle, holding N OAuthClients and their 2N Secrets",
            n,
        );
        row.keyward = show(idle);
        row.target = "≤ 64 MiB".into();
        self.rows.push(row);
        let mut row = Row::new(
            "memory-rotation",
            "Operator peak RSS during two rotations of N Secrets (also holding the above)",
            n,
        );
        row.keyward = show(rotation);
        row.target = "≤ 64 MiB".into();
        self.rows.push(row);
    }

    /// A restarted operator: its first reconcile of every client, and its memory.
    pub fn restart(&mut self, n: usize, found: &Restart) {
        let Restart {
            clients,
            resynced,
            busy,
            sockets,
            idle,
        } = *found;
        let show = |kib: Option<u64>| kib.map_or_else(|| "not sampled".into(), mib);
        let mut row = Row::new(
            "restart",
            "Operator restarted: start → every client reconciled once; peak RSS meanwhile",
            n,
        );
        row.keyward = match resynced {
            Some(elapsed) => format!(
                "{} clients in {:.1} s; peak {}, at most {} sockets open",
                thousands(clients),
                elapsed.as_secs_f64(),
                show(busy),
                sockets.map_or_else(|| "?".into(), |count| count.to_string())
            ),
            None => "did not finish".into(),
        };
        self.rows.push(row);
        let mut row = Row::new(
            "restart-idle",
            "Operator restarted: RSS, idle, holding the same (clients, their Secrets, the N ciphertext Secrets)",
            n,
        );
        row.keyward = show(idle);
        row.target = "≤ 64 MiB".into();
        self.rows.push(row);
    }

    /// The sealed-secrets controller with N SealedSecrets: the memory row's baseline.
    pub fn peer(&mut self, n: usize, found: Result<PeerRun, String>) {
        let text = match found {
            Ok(PeerRun {
                elapsed,
                unsealed,
                busy,
                idle,
            }) => {
                let show = |kib: Option<u64>| kib.map_or_else(|| "not sampled".into(), mib);
                let time = match elapsed {
                    Some(elapsed) => format!("unsealed all in {:.1} s", elapsed.as_secs_f64()),
                    None => format!("unsealed only {} of {n}", thousands(unsealed)),
                };
                format!(
                    "sealed-secrets controller holding {} SealedSecrets and their Secrets: {} idle \
                     (peak {} while it {time})",
                    thousands(n),
                    show(idle),
                    show(busy)
                )
            }
            Err(why) => format!("sealed-secrets controller: {why}"),
        };
        let key = format!("memory-idle/{n}");
        match self.rows.iter_mut().find(|row| row.key == key) {
            Some(row) => row.baseline = text,
            None => {
                let mut row = Row::new("peer", "Peer memory", n);
                row.baseline = text;
                self.rows.push(row);
            }
        }
    }

    pub fn finish(&mut self, duration: Duration) {
        self.duration = Some(duration);
    }

    /// The markdown table.
    pub fn table(&self) -> String {
        let mut table = String::from(
            "| measurement | N | keyward | baseline (same run) | ratio | target |\n\
             | --- | --- | --- | --- | --- | --- |\n",
        );
        for row in &self.rows {
            let _ = writeln!(
                table,
                "| {} | {} | {} | {} | {} | {} |",
                row.measurement, row.n, row.keyward, row.baseline, row.ratio, row.target
            );
        }
        for note in &self.notes {
            let _ = write!(table, "\n- {note}");
        }
        if !self.notes.is_empty() {
            table.push('\n');
        }
        table
    }

    /// `docs/benchmarks.md`: how the figures were made, the table, the machine and the
    /// versions.
    pub fn document(&self) -> String {
        let mut page = String::from("# Benchmarks\n\n");
        let kind = if self.quick {
            "**This page was written by the quick run (N = 200, one run of each measurement): \
             its figures show the benchmark works, not what keyward achieves.** `make bench` \
             writes the full run's."
        } else {
            "Written by `make bench` (the full run); every figure below comes from that run."
        };
        let _ = writeln!(page, "{kind}\n");
        let _ = writeln!(
            page,
            "Run started {} UTC and took {}; the benchmark itself is `benches/scale/` \
             (`cargo bench --bench scale`), the crypto micro-benchmarks `benches/crypto.rs` \
             (`cargo bench --bench crypto`).\n",
            self.started.strftime("%Y-%m-%d %H:%M"),
            self.duration.map_or_else(|| "?".into(), minutes_seconds)
        );
        page.push_str(&self.table());
        page.push_str(&METHOD.replace(
            "{default_rate}",
            &keyward::reencrypt::DEFAULT_WRITES_PER_SECOND.to_string(),
        ));
        page.push_str("\n## Machine\n\n");
        for (what, value) in &self.machine {
            let _ = writeln!(page, "- {what}: {value}");
        }
        page.push_str(
            "\nThe machine is shared: other builds and tests may run beside the benchmark, \
             so absolute rates vary between runs; the ratios compare figures taken minutes \
             apart on the same API server.\n",
        );
        page.push_str("\n## Versions\n\n");
        for (what, value) in &self.versions {
            let _ = writeln!(page, "- {what}: `{value}`");
        }
        page
    }
}

const METHOD: &str = "
## How each figure is made

- **Control plane**: `hack/control-plane.sh` (etcd, kube-apiserver with its default
  limits, kube-controller-manager, kube-scheduler, kwok) on loopback, as the integration
  tests start it; `hack/job-runner.py` runs the re-encryption Jobs' pods as processes.
- **Identity**: the operator, the Rust baseline and kubectl authenticate as a
  ServiceAccount bound to `cluster-admin`, so API Priority and Fairness treats them as
  it treats an in-cluster operator (flow schema `service-accounts`, priority level
  `workload-low`); the re-encryption Job runs as its own ServiceAccount and the
  sealed-secrets controller as the benchmark's. Only the user's applies (the benchmark
  playing `kubectl apply`) go through the exempt admin.
- **OAuthClient throughput**: one operator (`keyward run --namespace …`, release build,
  default log level) watches a fresh namespace; N OAuthClients with the default spec are
  server-side applied, 16 at a time; the time runs from the first apply to the last
  client seen `Ready=True` (by a watch). **Baseline**: in another namespace no operator
  watches, the same applies plus exactly the writes the API server counted for the
  operator (`apiserver_request_total` on its `/metrics`, by verb and resource, over the
  operator's window), issued by a Rust client (kube-rs), 32 clients at a time, each
  client's writes in order: the physical limit the operator's writes can reach on this
  API server. Ratio = baseline time / keyward time.
- **API writes per issued client**: the delta of `apiserver_request_total` for
  Secrets, OAuthClients and Events from the first apply until those writes stop (a
  second without one, at most a minute after the last client turned ready), less the N
  applies.
- **Reads, reconciles, CPU**: reads are the `GET`, `LIST` and `WATCH` requests on
  Secrets, OAuthClients and Events over the throughput window, per client; reconciles
  and their mean duration come from the operator's own `/metrics`
  (`keyward_reconciles_total`, `keyward_reconcile_duration_seconds`); CPU time is user +
  system time from `/proc/<pid>/stat` of the operator, the benchmark's own process
  (which issues the Rust baseline and runs the watches), kube-apiserver and etcd over
  each window. The re-encryption Job's CPU time is not counted (it is a process of the
  job runner).
- **Latency**: single OAuthClients applied one at a time on the idle operator (holding
  the first size's clients), apply → `Ready=True` seen by a watch.
- **Re-encryption**: N Secrets each holding one value sealed under an EncryptionKey
  (with no targets, so the rotation's rollouts wait for no pod); a rotation is started
  by bumping `spec.rotation.generation`, and the step is timed by a watch on the key
  from phase `Reencrypting` to `Verifying` (it includes creating the Job, scheduling its
  pod and starting the process). The first rotation sets `writesPerSecond: 10000` (the
  CRD's maximum), the second leaves the default ({default_rate}). **Baseline**: `kubectl get
  secrets -l … -o json | kubectl replace -f -` over the same Secrets, the procedure
  Kubernetes documents after changing the encryption-at-rest key. This control plane has
  no encryption at rest, so the API server decrypts nothing, and kubectl only
  round-trips each Secret: a lower bound on that procedure's cost.
- **Memory**: `VmRSS` from `/proc/<pid>/status`, sampled every 100 ms. Idle is the peak
  over a quiet stretch after all clients are ready. The peer is the sealed-secrets
  controller (built by `hack/test-bins.sh --with-sealed-secrets` from its Go module at a
  pinned version) holding as many SealedSecrets (cluster-wide scope, two values each) and
  the Secrets it unsealed from them, watching only its namespace, with its client-side
  rate limit lifted (`--kubeclient-qps=-1`) so it finishes within the run.
- **Restart**: after the rotations the operator is stopped and started again on the same
  namespace; the time until its `keyward_reconciles_total` reaches the number of clients
  it holds, its peak RSS meanwhile, and its RSS idle afterwards: the memory the objects
  need, without what issuing them left behind. Sockets are the operator's file
  descriptors that are sockets (its connections to the API server), sampled with its
  memory.
- **Crypto**: the mean of many calls of keyward's own functions (`Credential::hashed`
  SHA-256 of a 43-character secret, `Envelope::seal`, `Envelope::open`) beside the median
  of GETs of one Secret; `cargo bench --bench crypto` measures the same with criterion.
- A measurement that runs past its bound is reported as not finished; nothing is
  typed in.
";

fn machine() -> Vec<(String, String)> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or_else(
            || "unknown".into(),
            |kib| format!("{:.1} GiB", kib as f64 / 1048576.0),
        );
    let output = |program: &str, args: &[&str]| version_of(Path::new(program), args);
    vec![
        ("CPUs (nproc)".into(), output("nproc", &[])),
        ("CPU".into(), cpu),
        ("memory (MemTotal)".into(), memory),
        ("kernel (uname -srm)".into(), output("uname", &["-srm"])),
        (
            "load average when the run started".into(),
            read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ]
}

fn rate(n: usize, elapsed: Duration, unit: &str) -> String {
    format!(
        "{:.0} {unit} ({:.1} s)",
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    )
}

fn micros(duration: Duration) -> String {
    format!("{:.2} µs", duration.as_secs_f64() * 1e6)
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

fn minutes_seconds(duration: Duration) -> String {
    format!(
        "{} min {} s",
        duration.as_secs() / 60,
        duration.as_secs() % 60
    )
}

/// `10,000`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
