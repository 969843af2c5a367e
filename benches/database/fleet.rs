//! A live WSO2 fleet's reads: one connection reading random rows by ID, each decrypted
//! with WSO2's rule as a promoted pod does (`key` B, `old_key` A, key ids on), whatever
//! the rewrite has or has not reached yet.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyward::crypto::KeyMaterial;
use keyward::crypto::wso2::{EncryptionSettings, StoredValue};
use sqlx::any::AnyPoolOptions;
use sqlx::{Row, query};

use crate::table::{COLUMN, TABLE, plaintext};

/// Time between two reads: a steady 500 reads per second.
const READ_EVERY: Duration = Duration::from_millis(2);

/// What the reader saw.
#[derive(Default)]
pub struct Reads {
    /// Each read's latency: the query and the decryption.
    pub latencies: Vec<Duration>,
    /// Reads that did not decrypt, or decrypted to the wrong plaintext.
    pub failures: u64,
}

impl Reads {
    /// The `q`-quantile latency (`q` in 0..=1).
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let last = sorted.len().checked_sub(1)?;
        sorted.get(((last as f64) * q).round() as usize).copied()
    }
}

/// Reads random rows of 1..=n at `url` until `stop` is set (or, when `for_at_least` is
/// given, until that much time has passed).
pub async fn read(
    url: String,
    a: KeyMaterial,
    b: KeyMaterial,
    n: usize,
    stop: Arc<AtomicBool>,
    for_at_least: Option<Duration>,
) -> Reads {
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("the reader connects");
    let promoted = EncryptionSettings {
        key: &b,
        old_key: Some(&a),
        enable_key_id: true,
    };
    let select = format!("SELECT {COLUMN} FROM {TABLE} WHERE ID = $1");
    let mut reads = Reads::default();
    let mut random = Xorshift(0x9e37_79b9_7f4a_7c15 ^ n as u64);
    let mut ticks = tokio::time::interval(READ_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let began = Instant::now();
    loop {
        let done = match for_at_least {
            Some(bound) => began.elapsed() >= bound,
            None => stop.load(Ordering::Relaxed),
        };
        if done {
            break;
        }
        ticks.tick().await;
        let id = (random.next() % n as u64) as i64 + 1;
        let start = Instant::now();
        let text: String = query(&select)
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("the reader reads a row")
            .try_get(0)
            .expect("a value");
        let right = StoredValue::parse(&text)
            .and_then(|value| value.decrypt_as_wso2(&promoted))
            .is_ok_and(|plain| plain.as_slice() == plaintext(id).as_bytes());
        reads.latencies.push(start.elapsed());
        if !right {
            reads.failures += 1;
        }
    }
    pool.close().await;
    reads
}

/// Which rows to read: uniform enough, and the same sequence every run.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
