//! The rewrite as a process of its own, as the Job runs it: the benchmark re-executes
//! itself with `--rewrite-child`, hands it the database URL and both keys on standard
//! input (never in its command line, which `ps` shows), and reads back one line with the
//! rewrite's time, counts and the process's peak resident memory (`VmHWM`).

use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyward::crd::database::{DatabaseEngine, EncryptedColumn};
use keyward::crypto::KeyMaterial;
use keyward::crypto::wso2::EncryptionSettings;
use keyward::database::{Checkpoint, Connection, ConnectionUrl, RewriteOptions, rewrite};

use crate::table::{COLUMN, TABLE};

/// The argument that makes the benchmark binary the rewriting child.
pub const ARGUMENT: &str = "--rewrite-child";

/// What the child reports.
#[derive(Debug)]
pub struct Rewritten {
    /// The rewrite call alone (after connecting).
    pub elapsed: Duration,
    pub rewritten: u64,
    pub seen: u64,
    /// Nothing failed, contended, too wide or RSA.
    pub complete: bool,
    /// The child's peak resident memory, in kibibytes.
    pub peak_kib: u64,
}

/// A running child.
pub struct Running(Child);

/// Starts the rewrite A → B of the benchmark table at `url`.
pub fn start(url: &str, a: &KeyMaterial, b: &KeyMaterial, writes_per_second: u32) -> Running {
    let mut child = Command::new(std::env::current_exe().expect("the benchmark's own path"))
        .arg(ARGUMENT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the rewriting child starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    writeln!(
        stdin,
        "{url}\n{}\n{}\n{writes_per_second}",
        hex::encode(a.expose()),
        hex::encode(b.expose())
    )
    .expect("the child reads its settings");
    Running(child)
}

impl Running {
    /// Waits for the child (a blocking wait: call it off the async runtime's threads).
    pub fn wait(mut self) -> Rewritten {
        let stdout = self.0.stdout.take().expect("piped stdout");
        let line = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("rewritten ").map(str::to_owned));
        let status = self.0.wait().expect("the child is waited for");
        let line =
            line.unwrap_or_else(|| panic!("the rewriting child reported nothing ({status})"));
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(|field| field.parse().expect("a number"))
            .collect();
        let [micros, rewritten, seen, complete, peak_kib] = fields[..] else {
            panic!("the child's report has five fields: {line}");
        };
        Rewritten {
            elapsed: Duration::from_micros(micros),
            rewritten,
            seen,
            complete: complete == 1,
            peak_kib,
        }
    }
}

/// The child's side: reads its settings, rewrites, reports, exits.
pub fn run() {
    let mut lines = std::io::stdin().lock().lines().map_while(Result::ok);
    let mut next = || lines.next().expect("a setting on standard input");
    let url = ConnectionUrl::new(&next());
    let a = KeyMaterial::parse(next().as_bytes()).expect("key A");
    let b = KeyMaterial::parse(next().as_bytes()).expect("key B");
    let writes_per_second: u32 = next().parse().expect("a rate");
    // The Job's runtime: tokio's multi-threaded default.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let (elapsed, progress) = runtime.block_on(async {
        let connection = Connection::connect("bench", DatabaseEngine::PostgreSQL, &url)
            .await
            .expect("connect");
        let read = EncryptionSettings {
            key: &b,
            old_key: Some(&a),
            enable_key_id: true,
        };
        let options = RewriteOptions {
            page_size: keyward::database::DEFAULT_PAGE_SIZE,
            writes_per_second,
            ..RewriteOptions::default()
        };
        let start = Instant::now();
        let progress = rewrite(
            &connection,
            &[EncryptedColumn::whole(TABLE, COLUMN)],
            &read,
            &b,
            &options,
            Checkpoint::default(),
            |_, _| {},
        )
        .await
        .expect("the rewrite runs");
        let elapsed = start.elapsed();
        connection.close().await;
        (elapsed, progress)
    });
    println!(
        "rewritten {} {} {} {} {}",
        elapsed.as_micros(),
        progress.rewritten,
        progress.seen,
        u8::from(progress.complete()),
        peak_kib().unwrap_or(0)
    );
}

/// This process's `VmHWM` (peak resident set) in kibibytes.
fn peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
