//! The WSO2 database benchmark: keyward's rewrite of WSO2 ciphertext in a real
//! PostgreSQL, beside the database's own limit measured in the same run, printed as a
//! markdown table.
//!
//! - `cargo bench --bench database` (`make bench`): the full run, N = 100,000 and
//!   1,000,000 (`-- --sizes 100000` for others). With `-- --write-doc docs/benchmarks.md`
//!   it also writes its section of that page.
//! - `cargo bench --bench database -- --quick`, or `cargo test` (which runs bench targets
//!   without `--bench`, so `make test` runs it): N = 10,000, panicking unless every row
//!   was rewritten and no fleet read failed to decrypt. It times nothing against a limit.
//!
//! Measured for each N: rows per second of keyward's rewrite A → B with no rate limit and
//! of the same UPDATE statements with precomputed values (two identical tables), and the
//! rewriting process's peak RSS; once: a WSO2 reader's latency idle and during a rewrite
//! at the default limit, and its decrypt failures.

#[allow(
    dead_code,
    reason = "the integration tests' database support, of which the benchmark uses a part"
)]
#[path = "../../tests/integration/support/database.rs"]
mod database;

mod child;
#[allow(
    dead_code,
    reason = "its `keep` is for the scale benchmark, which writes the rest of the page"
)]
mod doc_section;
mod fleet;
mod report;
mod table;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use keyward::crd::database::DatabaseEngine;
use keyward::crypto::KeyMaterial;
use keyward::database::DEFAULT_PAGE_SIZE;
use keyward::reencrypt::DEFAULT_WRITES_PER_SECOND;

use crate::report::Report;

/// A rate limit that does not bind: the throughput runs measure the rewrite itself.
const UNBOUND: u32 = 1_000_000;

/// How a run is sized.
struct Plan {
    quick: bool,
    sizes: Vec<usize>,
    /// Rows of the table the fleet reads while a rewrite at the default limit runs (it
    /// takes rows / 1000 seconds).
    latency_rows: usize,
    /// How long the fleet reads the idle table.
    idle: Duration,
    write_doc: Option<PathBuf>,
}

impl Plan {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let value = |flag: &str| {
            args.iter()
                .position(|arg| arg == flag)
                .and_then(|at| args.get(at + 1))
        };
        // `cargo bench` passes --bench; `cargo test` does not, and gets the quick run.
        let quick = args.iter().any(|arg| arg == "--quick") || !args.iter().any(|a| a == "--bench");
        let write_doc = value("--write-doc").map(PathBuf::from);
        let sizes = value("--sizes").map(|list| {
            list.split(',')
                .map(|n| {
                    n.trim()
                        .parse()
                        .expect("--sizes: numbers separated by commas")
                })
                .collect()
        });
        if quick {
            Self {
                quick,
                sizes: sizes.unwrap_or(vec![10_000]),
                latency_rows: 3_000,
                idle: Duration::from_secs(3),
                write_doc,
            }
        } else {
            Self {
                quick,
                sizes: sizes.unwrap_or(vec![100_000, 1_000_000]),
                latency_rows: 30_000,
                idle: Duration::from_secs(10),
                write_doc,
            }
        }
    }
}

fn main() {
    if std::env::args().any(|arg| arg == child::ARGUMENT) {
        child::run();
        return;
    }
    let plan = Plan::from_args();
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(bench(plan));
}

async fn bench(plan: Plan) {
    let began = Instant::now();
    let started = Timestamp::now().strftime("%Y-%m-%d %H:%M").to_string();
    let mut report = Report::new(plan.quick, started);
    let mut incomplete = Vec::new();
    eprintln!(
        "bench: {} run, N = {:?}, fleet reads over {} rows",
        if plan.quick { "quick" } else { "full" },
        plan.sizes,
        plan.latency_rows
    );
    let server = database::server(DatabaseEngine::PostgreSQL);
    let a = KeyMaterial::generate().expect("randomness");
    let b = KeyMaterial::generate().expect("randomness");

    for &n in &plan.sizes {
        let rewritten_db = server.database(&format!("bench_keyward_{n}")).await;
        let baseline_db = server.database(&format!("bench_baseline_{n}")).await;
        eprintln!("bench: filling two tables of {n} rows");
        table::fill(&[&rewritten_db.pool, &baseline_db.pool], &a, n).await;

        eprintln!("bench: baseline, {n} UPDATEs with precomputed values");
        let new_values = table::precompute(&b, n);
        let pool = table::pool(&baseline_db.url).await;
        let baseline = table::baseline(&pool, &new_values, DEFAULT_PAGE_SIZE).await;
        pool.close().await;
        drop(new_values);
        if baseline.updated != n as u64 {
            incomplete.push(format!(
                "the baseline updated {} of {n} rows",
                baseline.updated
            ));
        }

        eprintln!("bench: keyward's rewrite of {n} rows, limit off");
        let running = child::start(&rewritten_db.url, &a, &b, UNBOUND);
        let rewritten = tokio::task::spawn_blocking(move || running.wait())
            .await
            .expect("the child is waited for");
        if rewritten.rewritten != n as u64 || !rewritten.complete {
            incomplete.push(format!("the rewrite of {n} rows: {rewritten:?}"));
        }
        report.throughput(n, &rewritten, &baseline);
        drop(rewritten_db);
        drop(baseline_db);
    }

    let n = plan.latency_rows;
    eprintln!("bench: fleet reads over {n} rows, idle and during a rewrite at the default limit");
    let fleet_db = server.database("bench_fleet").await;
    table::fill(&[&fleet_db.pool], &a, n).await;
    let url = fleet_db.url.clone();
    let idle = fleet::read(
        url.clone(),
        a.clone(),
        b.clone(),
        n,
        Arc::default(),
        Some(plan.idle),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(fleet::read(
        url.clone(),
        a.clone(),
        b.clone(),
        n,
        stop.clone(),
        None,
    ));
    let running = child::start(&url, &a, &b, DEFAULT_WRITES_PER_SECOND);
    let rewritten = tokio::task::spawn_blocking(move || running.wait())
        .await
        .expect("the child is waited for");
    stop.store(true, Ordering::Relaxed);
    let during = reader.await.expect("the reader finishes");
    if rewritten.rewritten != n as u64 || !rewritten.complete {
        incomplete.push(format!("the rewrite at the default limit: {rewritten:?}"));
    }
    report.latency(n, &idle, &during, &rewritten);
    let failures = idle.failures + during.failures;

    println!("{}", report.table());
    if let Some(path) = &plan.write_doc {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let page = doc_section::replace(&old, &report.section(began.elapsed()));
        std::fs::write(path, page).expect("the benchmark page is written");
        eprintln!("bench: wrote its section of {}", path.display());
    }
    assert_eq!(failures, 0, "fleet reads that did not decrypt");
    if plan.quick {
        assert!(
            incomplete.is_empty(),
            "the quick benchmark did not complete: {incomplete:?}"
        );
        println!("bench: quick run complete, every row rewritten, no read failed");
    } else if !incomplete.is_empty() {
        eprintln!("bench: incomplete: {incomplete:?}");
    }
}
