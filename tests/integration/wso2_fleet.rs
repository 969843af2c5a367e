//! A live WSO2 fleet through a whole rotation. Two API-manager instances, played by the
//! Java stand-in (Java's JCE reads and writes every value), hold at every moment the
//! worst mix a rolling update can leave: one the previous rendering of the key's
//! distribution Secret, one the current — until the operator moves on, which it does
//! only once every pod holds the current one. Both read random rows of a real
//! PostgreSQL database and write new ones, as WSO2 does, while keyward backfills,
//! stages, promotes, re-encrypts, verifies and retires. The table starts with rows with
//! and without key ids, both IV lengths and legacy AES/ECB, and a second table holds
//! values inside JSON documents. No read may fail at any moment; at the end every row
//! reads with the new key alone, the old key is in no rendering, and the census finds
//! nothing under it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use keyward::crd::database::{DatabaseEngine, EncryptedColumn};
use keyward::crd::encryption_key::RotationPhase;
use keyward::crypto::KeyMaterial;
use keyward::crypto::wso2::KeyId;
use keyward::database::{Connection, ConnectionUrl, census};
use serde_json::json;
use sqlx::Row as _;
use sqlx::any::AnyPoolOptions;

use crate::support::api::{keys, secrets};
use crate::support::database::{TestDatabase, server};
use crate::support::encryption_key::{bump, stored_keyring, until_rotated};
use crate::support::jobs;
use crate::support::operator::operator_running_jobs;
use crate::support::wso2_java::Wso2Java;
use crate::support::wso2_rendering::{Pair, pair_of, renderings};
use crate::support::{self, wait};
use crate::wso2_rotation::{KEY_A, apply_wso2_key, apps_column, create_apps_table, insert};

/// A row of one of the two tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Row {
    App(i32),
    KeyManager(i32),
}

/// What the fleet saw in one phase of the rotation.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    reads: u64,
    writes: u64,
    failures: u64,
}

/// What the two instances share with the test.
#[derive(Default)]
struct Fleet {
    /// (previous, current) renderings.
    renderings: Mutex<(Option<Pair>, Option<Pair>)>,
    phase: Mutex<String>,
    /// Every plaintext ever written to each row: a read may return any of them (a
    /// concurrent update), never anything else.
    history: Mutex<BTreeMap<Row, Vec<Vec<u8>>>>,
    next_id: AtomicI32,
    stop: AtomicBool,
    tally: Mutex<BTreeMap<String, Tally>>,
    /// Failed reads, as row, phase and WSO2's error (never a value).
    failures: Mutex<Vec<String>>,
}

impl Fleet {
    fn count(&self, what: impl FnOnce(&mut Tally)) {
        let phase = self.phase.lock().expect("phase").clone();
        let mut tally = self.tally.lock().expect("tally");
        what(tally.entry(phase).or_default());
    }

    fn pair(&self, previous: bool) -> Option<Pair> {
        let renderings = self.renderings.lock().expect("renderings");
        if previous {
            renderings.0.clone().or_else(|| renderings.1.clone())
        } else {
            renderings.1.clone()
        }
    }
}

/// A small deterministic generator for choosing rows and actions (not for keys).
struct Choices(u64);

impl Choices {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

fn document(secret: &str) -> String {
    json!({"type": "WSO2-IS", "client_secret": secret, "enabled": true}).to_string()
}

/// One API-manager instance: reads random rows and writes new ones with the rendering
/// it holds (`previous` or current), until told to stop.
fn instance(fleet: Arc<Fleet>, url: String, previous: bool, seed: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pool = runtime
        .block_on(AnyPoolOptions::new().max_connections(1).connect(&url))
        .expect("the instance connects");
    let mut java = Wso2Java::start();
    let mut choices = Choices(seed);
    while !fleet.stop.load(Ordering::Relaxed) {
        let Some(pair) = fleet.pair(previous) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let rows: Vec<Row> = fleet
            .history
            .lock()
            .expect("history")
            .keys()
            .copied()
            .collect();
        match choices.below(10) {
            // A new application, its secret under the instance's key.
            0 => {
                let id = fleet.next_id.fetch_add(1, Ordering::Relaxed);
                let plaintext = format!("new-secret-{id}").into_bytes();
                let value = java.encrypt(&pair.key, true, 128, &plaintext);
                runtime
                    .block_on(
                        sqlx::query(
                            "INSERT INTO IDN_OAUTH_CONSUMER_APPS (ID, CONSUMER_KEY, CONSUMER_SECRET) VALUES ($1, $2, $3)",
                        )
                        .bind(id)
                        .bind(format!("key-{id}"))
                        .bind(value)
                        .execute(&pool),
                    )
                    .expect("insert");
                // Readable by the others once it is in the table.
                fleet
                    .history
                    .lock()
                    .expect("history")
                    .insert(Row::App(id), vec![plaintext]);
                fleet.count(|tally| tally.writes += 1);
            }
            // A regenerated secret of an existing application.
            1 => {
                let apps: Vec<i32> = rows
                    .iter()
                    .filter_map(|row| match row {
                        Row::App(id) => Some(*id),
                        Row::KeyManager(_) => None,
                    })
                    .collect();
                let id = apps[choices.below(apps.len())];
                let plaintext =
                    format!("regenerated-{id}-{}", choices.below(1_000_000)).into_bytes();
                let value = java.encrypt(&pair.key, true, 128, &plaintext);
                fleet
                    .history
                    .lock()
                    .expect("history")
                    .entry(Row::App(id))
                    .or_default()
                    .push(plaintext);
                runtime
                    .block_on(
                        sqlx::query(
                            "UPDATE IDN_OAUTH_CONSUMER_APPS SET CONSUMER_SECRET = $1 WHERE ID = $2",
                        )
                        .bind(value)
                        .bind(id)
                        .execute(&pool),
                    )
                    .expect("update");
                fleet.count(|tally| tally.writes += 1);
            }
            _ => {
                let row = rows[choices.below(rows.len())];
                let value = runtime.block_on(read(&pool, row));
                let read = java.decrypt(&pair.key, Some(&pair.old_key), true, &value);
                let known = fleet.history.lock().expect("history")[&row].clone();
                match read {
                    Ok(plaintext) if known.contains(&plaintext) => {
                        fleet.count(|tally| tally.reads += 1);
                    }
                    outcome => {
                        let phase = fleet.phase.lock().expect("phase").clone();
                        let why = match outcome {
                            Ok(_) => "a plaintext never written".to_owned(),
                            Err(error) => error,
                        };
                        let holder = if previous { "previous" } else { "current" };
                        fleet
                            .failures
                            .lock()
                            .expect("failures")
                            .push(format!("{row:?} in {phase}, {holder} rendering: {why}"));
                        fleet.count(|tally| {
                            tally.reads += 1;
                            tally.failures += 1;
                        });
                    }
                }
            }
        }
    }
}

async fn read(pool: &sqlx::AnyPool, row: Row) -> String {
    match row {
        Row::App(id) => {
            let found =
                sqlx::query("SELECT CONSUMER_SECRET FROM IDN_OAUTH_CONSUMER_APPS WHERE ID = $1")
                    .bind(id)
                    .fetch_one(pool)
                    .await
                    .expect("select an app");
            found.try_get(0).expect("a secret")
        }
        Row::KeyManager(id) => {
            let found =
                sqlx::query("SELECT ADDITIONAL_PROPERTIES FROM AM_KEY_MANAGER WHERE ID = $1")
                    .bind(id)
                    .fetch_one(pool)
                    .await
                    .expect("select a key manager");
            let text: String = found.try_get(0).expect("a document");
            let document: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            document["client_secret"]
                .as_str()
                .expect("the secret")
                .to_owned()
        }
    }
}

/// Seeds what API Manager wrote over the years under key A: rows with and without key
/// ids, with both IV lengths, legacy AES/ECB, and secrets inside JSON documents.
async fn seed(db: &TestDatabase, fleet: &Fleet) {
    create_apps_table(db).await;
    db.execute(
        "CREATE TABLE AM_KEY_MANAGER (ID INTEGER NOT NULL PRIMARY KEY, ADDITIONAL_PROPERTIES TEXT)",
    )
    .await;
    let mut java = Wso2Java::start();
    let mut history = fleet.history.lock().expect("history").clone();
    for id in 1..=40 {
        let plaintext = format!("consumer-secret-{id}").into_bytes();
        let value = match id % 4 {
            0 => java.encrypt(KEY_A, true, 128, &plaintext),
            1 => java.encrypt(KEY_A, false, 16, &plaintext),
            2 => java.encrypt(KEY_A, false, 128, &plaintext),
            _ => java.encrypt_legacy(KEY_A, &plaintext),
        };
        insert(db, id, Some(&value)).await;
        history.insert(Row::App(id), vec![plaintext]);
    }
    for id in 1..=10 {
        let plaintext = format!("key-manager-secret-{id}").into_bytes();
        let value = java.encrypt(KEY_A, id % 2 == 0, 128, &plaintext);
        sqlx::query("INSERT INTO AM_KEY_MANAGER (ID, ADDITIONAL_PROPERTIES) VALUES ($1, $2)")
            .bind(id)
            .bind(document(&value))
            .execute(&db.pool)
            .await
            .expect("insert a key manager");
        history.insert(Row::KeyManager(id), vec![plaintext]);
    }
    *fleet.history.lock().expect("history") = history;
    fleet.next_id.store(1000, Ordering::Relaxed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_wso2_fleet_never_fails_a_read_through_a_whole_rotation() {
    live_fleet("wso2-fleet", Chaos::None).await;
}

/// The same, with the operator SIGKILLed at every step it records and the Job's process
/// killed mid-batch, while it backfills and while it re-encrypts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_wso2_fleet_never_fails_a_read_with_the_operator_and_the_job_killed() {
    live_fleet("wso2-fleet-chaos", Chaos::KillEverything).await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Chaos {
    None,
    KillEverything,
}

async fn live_fleet(test: &str, chaos: Chaos) {
    let cluster = support::cluster(test).await;
    let mut operator = Some(operator_running_jobs(&cluster, &[]));
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    let db = server(DatabaseEngine::PostgreSQL)
        .database(&test.replace('-', "_"))
        .await;
    let fleet = Arc::new(Fleet::default());
    *fleet.phase.lock().expect("phase") = "Idle".to_owned();
    seed(&db, &fleet).await;
    let mut columns = apps_column();
    columns
        .as_array_mut()
        .expect("a list")
        .push(json!({"table": "AM_KEY_MANAGER", "column": "ADDITIONAL_PROPERTIES", "jsonPath": "client_secret"}));
    let spec = apply_wso2_key(&cluster, &db, columns).await;

    // The fleet follows the renderings: a new one becomes current, the one it replaces
    // stays on the other instance until the operator moves on.
    let renderings = {
        let fleet = Arc::clone(&fleet);
        let stream = renderings(&cluster, "apim-distribution");
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(pair) = stream.next().await {
                let mut renderings = fleet.renderings.lock().expect("renderings");
                if renderings.1.as_ref() != Some(&pair) {
                    renderings.0 = renderings.1.take();
                    renderings.1 = Some(pair);
                }
            }
        })
    };

    let phases = {
        let fleet = Arc::clone(&fleet);
        let keys = keys(&cluster);
        tokio::spawn(async move {
            loop {
                let phase = keys
                    .get("apim")
                    .await
                    .ok()
                    .and_then(|key| key.status)
                    .and_then(|status| status.rotation)
                    .map(|rotation| rotation.phase.as_str().to_owned())
                    .unwrap_or_else(|| "Idle".to_owned());
                let changed = *fleet.phase.lock().expect("phase") != phase;
                if changed {
                    // The operator moved on: every pod holds the current rendering.
                    let mut renderings = fleet.renderings.lock().expect("renderings");
                    renderings.0 = renderings.1.clone();
                    *fleet.phase.lock().expect("phase") = phase;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let instances: Vec<_> = [
        (true, 0x9e37_79b9_7f4a_7c15),
        (false, 0x2545_f491_4f6c_dd1d),
    ]
    .into_iter()
    .map(|(previous, seed)| {
        let (fleet, url) = (Arc::clone(&fleet), db.url.clone());
        std::thread::spawn(move || instance(fleet, url, previous, seed))
    })
    .collect();
    wait::until_true("the fleet is reading", support::WAIT, || {
        fleet
            .tally
            .lock()
            .expect("tally")
            .values()
            .map(|tally| tally.reads)
            .sum::<u64>()
            >= 20
    })
    .await;

    let mut spec = spec;
    if chaos == Chaos::KillEverything {
        // Slow enough that each Job is caught mid-batch.
        spec["reencryption"]["writesPerSecond"] = json!(10);
    }
    bump(&cluster, "apim", &spec, 1).await;
    if chaos == Chaos::KillEverything {
        let mut kills = 0;
        let mut jobs_killed = Vec::new();
        let mut last_phase = None;
        let deadline = tokio::time::Instant::now() + crate::support::encryption_key::ROTATION;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the rotation did not finish in time"
            );
            let key = keys(&cluster).get("apim").await.expect("the key");
            let Some(rotation) = key.status.and_then(|status| status.rotation) else {
                continue;
            };
            if rotation.target_version == 2 && rotation.phase == RotationPhase::Succeeded {
                break;
            }
            if rotation.target_version == 2 && last_phase != Some(rotation.phase) {
                last_phase = Some(rotation.phase);
                drop(operator.take());
                kills += 1;
                operator = Some(operator_running_jobs(&cluster, &[]));
            }
            let working = rotation.progress.as_ref().is_some_and(|p| p.done > 0);
            if rotation.phase.runs_jobs() && working && !jobs_killed.contains(&rotation.phase) {
                jobs_killed.push(rotation.phase);
                jobs::runner().kill_jobs_in(&cluster.namespace);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("operator killed {kills} times; Jobs killed in {jobs_killed:?}");
        assert!(kills >= 6, "the operator was killed at every step: {kills}");
        assert!(
            jobs_killed.contains(&RotationPhase::Reencrypting),
            "a Job was killed mid-batch: {jobs_killed:?}"
        );
    }
    until_rotated(&cluster, "apim", 2).await;
    // A little longer on the final rendering alone.
    let settled = fleet
        .tally
        .lock()
        .expect("tally")
        .get("Succeeded")
        .map_or(0, |t| t.reads);
    wait::until_true(
        "the fleet reads on the final rendering",
        support::WAIT,
        || {
            fleet
                .tally
                .lock()
                .expect("tally")
                .get("Succeeded")
                .map_or(0, |t| t.reads)
                >= settled + 20
        },
    )
    .await;
    fleet.stop.store(true, Ordering::Relaxed);
    for instance in instances {
        instance.join().expect("an instance ends");
    }
    renderings.abort();
    phases.abort();

    let tally = fleet.tally.lock().expect("tally").clone();
    eprintln!("live fleet, per phase (reads / writes / failures):");
    for (phase, counted) in &tally {
        eprintln!(
            "  {phase}: {} / {} / {}",
            counted.reads, counted.writes, counted.failures
        );
    }
    let failures = fleet.failures.lock().expect("failures").clone();
    assert!(failures.is_empty(), "reads failed: {failures:#?}");
    // Phases are polled, so a short one may go unseen; the fleet read before, during
    // and after the rotation.
    let during: u64 = tally
        .iter()
        .filter(|(phase, _)| !matches!(phase.as_str(), "Idle" | "Succeeded"))
        .map(|(_, counted)| counted.reads)
        .sum();
    assert!(during > 0, "the fleet read during the rotation: {tally:?}");
    let writes: u64 = tally.values().map(|counted| counted.writes).sum();
    assert!(writes > 0, "the fleet wrote");

    // Every row that existed or was written reads with the new key alone.
    let keyring = stored_keyring(&cluster, "apim").await;
    let b = keyring.version(2).expect("version 2");
    let b_hex = hex::encode(b.material.expose());
    let final_rendering = pair_of(
        &secrets(&cluster)
            .get("apim-distribution")
            .await
            .expect("distribution Secret"),
    )
    .expect("both keys");
    assert_eq!(
        final_rendering,
        Pair {
            key: b_hex.clone(),
            old_key: b_hex.clone()
        },
        "the old key is in no rendering"
    );
    let mut java = Wso2Java::start();
    let history = fleet.history.lock().expect("history").clone();
    for (row, plaintexts) in &history {
        let value = read(&db.pool, *row).await;
        let plaintext = java
            .decrypt(&b_hex, Some(&b_hex), true, &value)
            .unwrap_or_else(|error| panic!("{row:?} does not read with the new key: {error}"));
        assert!(plaintexts.contains(&plaintext), "{row:?}");
    }
    let a = KeyMaterial::parse(KEY_A.as_bytes()).expect("key A");
    let connection = Connection::connect(
        "apim-db",
        DatabaseEngine::PostgreSQL,
        &ConnectionUrl::new(&db.url),
    )
    .await
    .expect("connect");
    let columns = [
        EncryptedColumn::whole("IDN_OAUTH_CONSUMER_APPS", "CONSUMER_SECRET"),
        EncryptedColumn {
            json_path: Some("client_secret".to_owned()),
            ..EncryptedColumn::whole("AM_KEY_MANAGER", "ADDITIONAL_PROPERTIES")
        },
    ];
    let counted = census(&connection, &columns, 100).await.expect("census");
    assert_eq!(counted.rows_under(&KeyId::of(&a)), 0);
    assert_eq!(counted.rows_without_key_id() + counted.legacy_ecb_rows(), 0);
    assert_eq!(
        counted.rows_under(&KeyId::of(&b.material)),
        history.len() as u64
    );
}
