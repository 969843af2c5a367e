//! The scale benchmark: keyward against a real control plane, every figure beside a
//! baseline measured in the same run on the same API server, printed as a markdown table.
//!
//! - `cargo bench --bench scale` (`make bench`): the full run, N = 1,000 and 10,000.
//!   With `-- --write-doc docs/benchmarks.md` it also writes that page.
//! - `cargo bench --bench scale -- --quick`, or `cargo test` (which runs bench targets
//!   without `--bench`, so `make test` runs it): N = 200, one run of each measurement,
//!   panicking unless every measurement completed and every object became ready. It
//!   times nothing against a limit.
//!
//! What runs: `hack/control-plane.sh` (etcd, kube-apiserver with its default limits,
//! kube-controller-manager, kube-scheduler, kwok), `hack/job-runner.py` (the stand-in
//! kubelet that runs re-encryption Jobs as processes), the `keyward` binary of this build
//! as the operator, and the sealed-secrets controller as the peer. The measured clients
//! authenticate as a ServiceAccount (see `identity`). Memory is `VmRSS` from `/proc`,
//! sampled every 100 ms.

#[allow(
    dead_code,
    unused_imports,
    reason = "the integration tests' support module, of which the benchmark uses a part"
)]
#[path = "../../tests/integration/support/mod.rs"]
mod support;

#[allow(dead_code, reason = "the scale benchmark only keeps the section")]
#[path = "../database/doc_section.rs"]
mod doc_section;

mod apiserver;
mod clients;
mod cpu;
mod identity;
mod process;
mod report;
mod rotation;
mod rss;
mod sealed;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use keyward::crypto::envelope::{Context, Envelope};
use keyward::crypto::secret::generate_client_secret;
use keyward::crypto::{Credential, HashAlgorithm, KeyMaterial, Keyring};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::report::{PeerRun, Report, RotationRun, Throughput};
use crate::rss::{Sampler, Target};

/// How a run is sized.
struct Plan {
    quick: bool,
    sizes: Vec<usize>,
    latency_samples: usize,
    crypto_iterations: u32,
    round_trips: usize,
    /// How long the operator stays idle before its idle memory is read.
    idle: Duration,
    write_doc: Option<PathBuf>,
}

impl Plan {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        // `cargo bench` passes --bench; `cargo test` does not, and gets the quick run.
        let quick = args.iter().any(|arg| arg == "--quick") || !args.iter().any(|a| a == "--bench");
        let write_doc = args
            .iter()
            .position(|arg| arg == "--write-doc")
            .and_then(|at| args.get(at + 1))
            .map(PathBuf::from);
        if quick {
            Self {
                quick,
                sizes: vec![200],
                latency_samples: 5,
                crypto_iterations: 2_000,
                round_trips: 20,
                idle: Duration::from_secs(2),
                write_doc,
            }
        } else {
            Self {
                quick,
                sizes: vec![1_000, 10_000],
                latency_samples: 30,
                crypto_iterations: 20_000,
                round_trips: 200,
                idle: Duration::from_secs(10),
                write_doc,
            }
        }
    }

    /// Per-measurement bounds: past them the table says "did not finish".
    fn issue_timeout(&self, n: usize) -> Duration {
        Duration::from_secs(120) + Duration::from_millis(48) * n as u32
    }
    fn restart_timeout(&self, n: usize) -> Duration {
        Duration::from_secs(60) + Duration::from_millis(24) * n as u32
    }
    fn rotation_timeout(&self, n: usize) -> Duration {
        Duration::from_secs(180) + Duration::from_millis(20) * n as u32
    }
    fn kubectl_timeout(&self, n: usize) -> Duration {
        Duration::from_secs(120) + Duration::from_millis(30) * n as u32
    }
    fn sealed_timeout(&self, n: usize) -> Duration {
        Duration::from_secs(180) + Duration::from_millis(40) * n as u32
    }
}

/// Records what did not complete; the quick run fails on any.
#[derive(Default)]
struct Incomplete(Vec<String>);

impl Incomplete {
    fn note(&mut self, what: String) {
        eprintln!("bench: {what}");
        self.0.push(what);
    }
}

#[tokio::main]
async fn main() {
    let plan = Plan::from_args();
    let began = Instant::now();
    let mut report = Report::new(plan.quick);
    let mut incomplete = Incomplete::default();
    eprintln!(
        "bench: {} run, N = {:?}, operator {}",
        if plan.quick { "quick" } else { "full" },
        plan.sizes,
        env!("CARGO_BIN_EXE_keyward")
    );

    let control_plane = support::control_plane();
    let admin = control_plane.client().await;
    support::install_crds(&admin).await;
    let assets = support::jobs::kubectl()
        .parent()
        .expect("the assets directory")
        .to_owned();
    let work_dir = std::env::temp_dir().join(format!("keyward-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir).expect("work directory");
    let identity = identity::service_account(&admin, &control_plane.kubeconfig, &work_dir).await;
    let writer = identity::client(&identity).await;
    support::jobs::runner();
    report.versions(&assets);

    crypto_against_round_trip(&plan, &admin, &writer, &mut report).await;

    let jobs = Sampler::start(Target::Matching(rotation::is_reencrypt_job));
    let control_plane_dir = control_plane
        .kubeconfig
        .parent()
        .expect("the control plane's directory");
    let components = cpu::Processes::of_control_plane(control_plane_dir);
    for (position, &n) in plan.sizes.iter().enumerate() {
        let cluster = support::cluster(&format!("bench-{n}")).await;
        let namespace = cluster.namespace.clone();
        let operator = process::operator(
            &identity.kubeconfig,
            &namespace,
            &work_dir.join(format!("operator-{n}.log")),
        );
        let memory = Sampler::start(Target::Pid(operator.pid()));
        let processes = components.with("operator", operator.pid());
        let watch = clients::ReadyWatch::start(&admin, &namespace).await;
        // Once one client is ready, the operator leads, has listed, and is warm.
        clients::apply(&admin, &namespace, "warm-up")
            .await
            .expect("applies");
        let warm = watch
            .until(Instant::now() + Duration::from_secs(120), |watch| {
                watch.ready_at("warm-up").is_some()
            })
            .await;
        assert!(
            warm,
            "the operator issued no client within 2 minutes:\n{}",
            operator.log_tail(20)
        );

        // 1. Throughput, and the writes it took.
        eprintln!("bench: issuing {n} OAuthClients");
        let (cpu_before, wall) = (processes.snapshot(), Instant::now());
        let metrics_before = process::operator_metrics(&operator);
        let timeout = plan.issue_timeout(n);
        let issued = clients::issue(&admin, &watch, &namespace, "client", n, timeout).await;
        let issue_end = Instant::now();
        let cpu_issue = processes.used(&cpu_before, &processes.snapshot(), wall.elapsed());
        let metrics_after = process::operator_metrics(&operator);
        let operator_writes = clients::operator_writes(&issued.requests, n as u64);
        if issued.elapsed.is_none() {
            incomplete.note(format!(
                "{} of {n} OAuthClients ready after {}",
                issued.ready,
                rotation::minutes(plan.issue_timeout(n))
            ));
        }
        let issue_start = wall;
        let issuing_peak = memory.peak_between(issue_start, issue_end);
        let issuing_sockets = memory.peak_sockets_between(issue_start, issue_end);

        // 2. The same writes, issued directly.
        let raw = support::cluster(&format!("bench-{n}-raw")).await;
        let replay = clients::Plan::of(&operator_writes);
        eprintln!("bench: baseline, {} writes and {n} applies", replay.total());
        let (cpu_before, wall) = (processes.snapshot(), Instant::now());
        let requests_before = apiserver::requests(&admin).await;
        let baseline = clients::baseline(
            &admin,
            &writer,
            &raw.namespace,
            &replay,
            n,
            plan.issue_timeout(n),
        )
        .await;
        let baseline_writes = apiserver::filtered(
            &apiserver::delta(&requests_before, &apiserver::requests(&admin).await),
            |kind| apiserver::is_write(kind) && apiserver::is_client_work(kind),
        );
        let cpu_baseline = processes.used(&cpu_before, &processes.snapshot(), wall.elapsed());
        if baseline.is_none() {
            incomplete.note(format!("the baseline of {n} clients did not finish"));
        }
        report.throughput(
            n,
            &Throughput {
                issued: &issued,
                baseline,
                baseline_writes,
                operator_writes: &operator_writes,
                replay: &replay,
                cpu_issue,
                cpu_baseline,
            },
        );
        report.reconciles(n, "while issuing", &metrics_before, &metrics_after);

        // 3. Idle memory with N clients and their Secrets.
        let idle_start = Instant::now();
        tokio::time::sleep(plan.idle).await;
        let idle_peak = memory.peak_between(idle_start, Instant::now());

        // 4. Latency on the idle operator (once, at the first size).
        if position == 0 {
            eprintln!("bench: latency, {} single clients", plan.latency_samples);
            let latencies = clients::latencies(
                &admin,
                &watch,
                &namespace,
                plan.latency_samples,
                Duration::from_secs(60),
            )
            .await;
            if latencies.iter().any(Option::is_none) {
                incomplete.note("a single client was not ready within 60 s".into());
            }
            report.latency(n, &latencies);
        }

        // 5. Re-encryption of N Secrets, limit off and at the default, then kubectl.
        let key = "bench";
        rotation::apply_key(&admin, &namespace, key, 0, Some(10_000)).await;
        rotation::until_key_ready(&admin, &namespace, key, Duration::from_secs(120)).await;
        eprintln!("bench: writing {n} ciphertext Secrets");
        rotation::write_ciphertexts(&admin, &namespace, key, n).await;
        let (mut rotations, mut rotation_cpu) = (Vec::new(), Vec::new());
        for (generation, rate) in [(1, Some(10_000)), (2, None)] {
            eprintln!("bench: rotation {generation}, writesPerSecond {rate:?}");
            let (cpu_before, wall) = (processes.snapshot(), Instant::now());
            let rotated = rotation::rotate(
                &admin,
                &namespace,
                key,
                generation,
                generation + 1,
                rate,
                plan.rotation_timeout(n),
            )
            .await;
            if rotated.reencrypting.is_none() || !rotated.succeeded {
                incomplete.note(format!(
                    "rotation {generation} of {n} Secrets did not finish in {}",
                    rotation::minutes(plan.rotation_timeout(n))
                ));
            }
            rotation_cpu.push(processes.used(&cpu_before, &processes.snapshot(), wall.elapsed()));
            let (from, to) = rotated.window;
            let operator_peak = memory.peak_between(from, to);
            let job_peak = jobs.peak_between(from, to);
            rotations.push(RotationRun {
                limit: rate,
                rotated,
                operator_peak,
                job_peak,
            });
        }
        eprintln!("bench: kubectl get | kubectl replace over {n} Secrets");
        let (cpu_before, wall) = (processes.snapshot(), Instant::now());
        let kubectl = rotation::kubectl_replace(
            &assets.join("kubectl"),
            &identity.kubeconfig,
            &namespace,
            &keyward::reencrypt::default_selector(key),
            plan.kubectl_timeout(n),
        );
        if let Err(why) = &kubectl {
            incomplete.note(format!("kubectl replace of {n} Secrets: {why}"));
        }
        let kubectl_cpu = processes.used(&cpu_before, &processes.snapshot(), wall.elapsed());
        report.reencryption(n, &rotations, &kubectl);
        report.rotation_cpu(n, &rotation_cpu, &kubectl_cpu);
        let rotation_peak = rotations.iter().filter_map(|run| run.operator_peak).max();
        report.operator_memory(n, (issuing_peak, issuing_sockets), idle_peak, rotation_peak);
        drop(memory);
        drop(operator);

        // 6. A restarted operator: how long it takes to look at every client again, and
        // its memory holding the same objects without the history of issuing them.
        let clients_held = n
            + 1
            + if position == 0 {
                plan.latency_samples
            } else {
                0
            };
        let operator = process::operator(
            &identity.kubeconfig,
            &namespace,
            &work_dir.join(format!("operator-{n}-restarted.log")),
        );
        let memory = Sampler::start(Target::Pid(operator.pid()));
        let restarted = Instant::now();
        let resync_bound = plan.restart_timeout(n);
        let resynced = loop {
            let seen = process::operator_metrics(&operator)
                .get(r#"keyward_reconciles_total{controller="OAuthClient"}"#)
                .copied()
                .unwrap_or(0.0);
            if seen >= clients_held as f64 {
                break Some(restarted.elapsed());
            }
            if restarted.elapsed() > resync_bound {
                incomplete.note(format!(
                    "the restarted operator reconciled {seen} of {clients_held} clients in {}",
                    rotation::minutes(resync_bound)
                ));
                break None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let resync_end = Instant::now();
        let resync_metrics = process::operator_metrics(&operator);
        let idle_start = Instant::now();
        tokio::time::sleep(plan.idle).await;
        report.restart(
            n,
            &report::Restart {
                clients: clients_held,
                resynced,
                busy: memory.peak_between(restarted, resync_end),
                sockets: memory.peak_sockets_between(restarted, resync_end),
                idle: memory.peak_between(idle_start, Instant::now()),
            },
        );
        report.reconciles(n, "after a restart", &Default::default(), &resync_metrics);
        drop(watch);
        drop(memory);
        drop(operator);
    }
    drop(jobs);

    // 6. The peer: sealed-secrets holding as many SealedSecrets as the largest size.
    let n = *plan.sizes.iter().max().expect("a size");
    eprintln!("bench: sealed-secrets with {n} SealedSecrets");
    let peer_cluster = support::cluster("bench-sealed-secrets").await;
    let setup = sealed::Setup {
        admin: &admin,
        admin_kubeconfig: &control_plane.kubeconfig,
        assets: &assets,
        identity: &identity,
        work_dir: &work_dir,
    };
    let peer = sealed::run(&setup, &peer_cluster.namespace, n, plan.sealed_timeout(n)).await;
    match peer {
        Ok(peer) => {
            let busy = peer.memory.peak_between(peer.window.0, peer.window.1);
            let idle_start = Instant::now();
            tokio::time::sleep(plan.idle).await;
            let idle = peer.memory.peak_between(idle_start, Instant::now());
            if peer.elapsed.is_none() {
                incomplete.note(format!(
                    "sealed-secrets unsealed {} of {n} in {}",
                    peer.unsealed,
                    rotation::minutes(plan.sealed_timeout(n))
                ));
            }
            report.peer(
                n,
                Ok(PeerRun {
                    elapsed: peer.elapsed,
                    unsealed: peer.unsealed,
                    busy,
                    idle,
                }),
            );
        }
        // A peer that cannot run here (not built, no mount namespace) is reported in its
        // row; it fails no run, as keyward's own objects are what the quick run checks.
        Err(why) => {
            eprintln!("bench: sealed-secrets did not run: {why}");
            report.peer(n, Err(why));
        }
    }

    report.finish(began.elapsed());
    println!("{}", report.table());
    if let Some(path) = &plan.write_doc {
        // The database benchmark's section of the page is its own: kept as it was.
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let page = doc_section::keep(&report.document(), &old);
        std::fs::write(path, page).expect("the benchmark page is written");
        eprintln!("bench: wrote {}", path.display());
    }
    let _ = std::fs::remove_dir_all(&work_dir);
    if plan.quick {
        assert!(
            incomplete.0.is_empty(),
            "the quick benchmark did not complete: {:?}",
            incomplete.0
        );
        println!("bench: quick run complete, every object ready");
    }
}

/// Times hashing a client secret, sealing and opening one value, beside one API round
/// trip (a GET of one Secret) in the same run.
async fn crypto_against_round_trip(
    plan: &Plan,
    admin: &Client,
    writer: &Client,
    report: &mut Report,
) {
    let iterations = plan.crypto_iterations;
    let secret = generate_client_secret(32).expect("randomness");
    let keyring = Keyring::new(
        "bench",
        KeyMaterial::generate().expect("randomness"),
        Timestamp::now(),
    );
    let context = Context {
        namespace: "bench",
        name: "client-verifier",
        field: "encryptedClientSecret",
    };
    let time = |work: &dyn Fn()| {
        let start = Instant::now();
        for _ in 0..iterations {
            work();
        }
        start.elapsed() / iterations
    };
    let hash = time(&|| {
        std::hint::black_box(Credential::hashed(
            HashAlgorithm::Sha256,
            std::hint::black_box(secret.expose()),
        ));
    });
    let seal = time(&|| {
        std::hint::black_box(Envelope::seal(&keyring, &context, secret.expose()).expect("seals"));
    });
    let sealed = Envelope::seal(&keyring, &context, secret.expose()).expect("seals");
    let open = time(&|| {
        std::hint::black_box(sealed.open(&keyring, &context).expect("opens"));
    });

    let namespace = support::cluster("bench-round-trip").await.namespace;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &namespace);
    let probe = Secret {
        metadata: ObjectMeta {
            name: Some("probe".into()),
            ..ObjectMeta::default()
        },
        string_data: Some([("clientSecret".to_owned(), "x".repeat(43))].into()),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &probe)
        .await
        .expect("probe Secret");
    let reader: Api<Secret> = Api::namespaced(writer.clone(), &namespace);
    let mut round_trips = Vec::new();
    for _ in 0..plan.round_trips {
        let start = Instant::now();
        reader.get("probe").await.expect("GET");
        round_trips.push(start.elapsed());
    }
    round_trips.sort();
    let round_trip = round_trips[round_trips.len() / 2];
    report.crypto(hash, seal, open, round_trip);
}
