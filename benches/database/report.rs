//! The table the benchmark prints, and its section of `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::time::Duration;

use crate::child::Rewritten;
use crate::fleet::Reads;
use crate::table::Baseline;

/// One line of the table.
struct Row {
    measurement: String,
    n: String,
    keyward: String,
    baseline: String,
    ratio: String,
    target: String,
}

/// What the run found.
pub struct Report {
    quick: bool,
    rows: Vec<Row>,
    started: String,
}

impl Report {
    pub fn new(quick: bool, started: String) -> Self {
        Self {
            quick,
            rows: Vec::new(),
            started,
        }
    }

    /// The rewrite with no rate limit beside the same statements with precomputed values,
    /// and the rewriting process's peak RSS.
    pub fn throughput(&mut self, n: usize, keyward: &Rewritten, baseline: &Baseline) {
        let keyward_rate = keyward.rewritten as f64 / keyward.elapsed.as_secs_f64();
        let baseline_rate = baseline.updated as f64 / baseline.elapsed.as_secs_f64();
        self.rows.push(Row {
            measurement: "Rewrite A → B, limit off (page 500, pool of 2): rows/s".into(),
            n: thousands(n),
            keyward: format!(
                "{} rows/s ({}; {} of {} rows rewritten)",
                thousands(keyward_rate.round() as usize),
                seconds(keyward.elapsed),
                thousands(keyward.rewritten as usize),
                thousands(keyward.seen as usize),
            ),
            baseline: format!(
                "{} rows/s ({}): the same page reads and compare-and-swap UPDATEs, new values precomputed",
                thousands(baseline_rate.round() as usize),
                seconds(baseline.elapsed),
            ),
            ratio: format!("{:.2}", keyward_rate / baseline_rate),
            target: "≥ 0.8".into(),
        });
        self.rows.push(Row {
            measurement: "Peak RSS of the rewriting process (`VmHWM`)".into(),
            n: thousands(n),
            keyward: format!("{:.1} MiB", keyward.peak_kib as f64 / 1024.0),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "≤ 64 MiB, flat in N".into(),
        });
    }

    /// The fleet's reads idle and during a rewrite at the default limit.
    pub fn latency(&mut self, n: usize, idle: &Reads, during: &Reads, rewrite: &Rewritten) {
        let p = |reads: &Reads, q: f64| reads.quantile(q).map_or("—".into(), millis);
        let ratio = match (during.quantile(0.99), idle.quantile(0.99)) {
            (Some(during), Some(idle)) if !idle.is_zero() => {
                format!("p99 {:.2}× idle", during.as_secs_f64() / idle.as_secs_f64())
            }
            _ => "—".into(),
        };
        self.rows.push(Row {
            measurement: format!(
                "Fleet read (SELECT by ID + WSO2 decrypt as a promoted pod), p50 / p99, \
                 during a rewrite at the default {} writes/s",
                keyward::reencrypt::DEFAULT_WRITES_PER_SECOND
            ),
            n: thousands(n),
            keyward: format!(
                "{} / {} ({} reads, {} decrypt failures; the rewrite: {} rows in {}, {} rows/s)",
                p(during, 0.5),
                p(during, 0.99),
                thousands(during.latencies.len()),
                during.failures,
                thousands(rewrite.rewritten as usize),
                seconds(rewrite.elapsed),
                thousands(
                    (rewrite.rewritten as f64 / rewrite.elapsed.as_secs_f64()).round() as usize
                ),
            ),
            baseline: format!(
                "idle: {} / {} ({} reads, {} decrypt failures)",
                p(idle, 0.5),
                p(idle, 0.99),
                thousands(idle.latencies.len()),
                idle.failures,
            ),
            ratio,
            target: "0 decrypt failures".into(),
        });
    }

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
        table
    }

    /// The section of `docs/benchmarks.md`.
    pub fn section(&self, took: Duration) -> String {
        let kind = if self.quick {
            "**Written by the quick run: its figures show the benchmark works, not what \
             keyward achieves.**"
        } else {
            "Written by `make bench` (`cargo bench --bench database`); every figure below \
             comes from that run."
        };
        format!(
            "## WSO2 database re-encryption\n\n{kind} Run started {} UTC and took {}.\n\n{}{METHOD}",
            self.started,
            seconds(took),
            self.table()
        )
    }
}

const METHOD: &str = "
How it is measured (`benches/database/`): a PostgreSQL server started as the tests start \
theirs (`hack/database-server.sh`: on loopback, `fsync`, `synchronous_commit` and \
`full_page_writes` off). Two identical databases each get WSO2's \
`IDN_OAUTH_CONSUMER_APPS` with N rows whose `CONSUMER_SECRET` keyward's `wso2::encrypt` \
wrote under key A (AES-GCM, key id). keyward's `database::rewrite` (read as `{key: B, \
old_key: A, enable_key_id: true}`, write B, page size 500, `writesPerSecond` 1,000,000 so \
the limit does not bind) runs in a process of its own, as the Job does, which reports \
its peak RSS; the baseline, in the benchmark's process, sends the same statements through \
a pool of the same size — keyset page reads of 500 rows, then one `UPDATE … SET c = $new \
WHERE id = $id AND c = $old` per row — with every new value computed before its clock \
starts. The fleet reader reads random rows by ID 500 times a second on a connection of its \
own and decrypts each as a promoted WSO2 pod does (`StoredValue::parse`, key B, old_key \
A), first on the idle table, then while a rewrite at the default limit runs; a failure is \
a value that does not decrypt or decrypts to the wrong plaintext.
";

fn thousands(value: usize) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}
