//! The WSO2-shaped table the benchmark rewrites, filled with N rows of keyward's own
//! WSO2 ciphertext, and the baseline: the UPDATE statements the rewrite issues, with
//! their new values computed before the clock starts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use keyward::crypto::KeyMaterial;
use keyward::crypto::wso2;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::{Row, query};

/// WSO2's table of OAuth applications, as its PostgreSQL script creates it (the
/// ciphertext column as wide as WSO2 makes it).
pub const TABLE: &str = "IDN_OAUTH_CONSUMER_APPS";
pub const COLUMN: &str = "CONSUMER_SECRET";
const CREATE: &str = "CREATE TABLE IDN_OAUTH_CONSUMER_APPS (ID INTEGER PRIMARY KEY, \
                      CONSUMER_KEY VARCHAR(255), CONSUMER_SECRET VARCHAR(2048))";

/// Rows per INSERT statement while filling (three parameters each, far below
/// PostgreSQL's 65,535).
const INSERT_ROWS: usize = 1_000;

/// The plaintext of row `id`: a consumer secret's length, different in every row, so the
/// fleet reader can tell a right decryption from a wrong one.
pub fn plaintext(id: i64) -> String {
    format!("bench-consumer-secret-{id:010}")
}

/// Creates the table in each of `pools` and fills rows 1..=n with the same ciphertext
/// (under `key`, with its key id), so every copy starts identical.
pub async fn fill(pools: &[&AnyPool], key: &KeyMaterial, n: usize) {
    for pool in pools {
        sqlx::raw_sql(CREATE)
            .execute(*pool)
            .await
            .expect("create the table");
    }
    let mut first = 1;
    while first <= n {
        let last = (first + INSERT_ROWS - 1).min(n);
        let mut sql = format!("INSERT INTO {TABLE} (ID, CONSUMER_KEY, {COLUMN}) VALUES ");
        for (index, _) in (first..=last).enumerate() {
            if index > 0 {
                sql.push_str(", ");
            }
            let p = index * 3;
            sql.push_str(&format!("(${}, ${}, ${})", p + 1, p + 2, p + 3));
        }
        let rows: Vec<(i64, String, String)> = (first..=last)
            .map(|id| {
                let id = id as i64;
                let secret = wso2::encrypt(key, plaintext(id).as_bytes()).expect("encrypts");
                (id, format!("bench-consumer-key-{id}"), secret)
            })
            .collect();
        for pool in pools {
            let mut insert = query(&sql);
            for (id, consumer_key, secret) in &rows {
                insert = insert
                    .bind(*id)
                    .bind(consumer_key.clone())
                    .bind(secret.clone());
            }
            insert.execute(*pool).await.expect("insert a batch");
        }
        first = last + 1;
    }
    for pool in pools {
        sqlx::raw_sql(&format!("VACUUM ANALYZE {TABLE}"))
            .execute(*pool)
            .await
            .expect("vacuum");
    }
}

/// The new value of every row (under `key`), computed before the baseline's clock starts.
pub fn precompute(key: &KeyMaterial, n: usize) -> HashMap<i64, String> {
    (1..=n as i64)
        .map(|id| {
            let secret = wso2::encrypt(key, plaintext(id).as_bytes()).expect("encrypts");
            (id, secret)
        })
        .collect()
}

/// A pool as the rewrite holds one: two connections (one pages, one writes).
pub async fn pool(url: &str) -> AnyPool {
    AnyPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("connect")
}

/// What the baseline did: how long, and how many rows it updated.
pub struct Baseline {
    pub elapsed: Duration,
    pub updated: u64,
}

/// The rewrite's statements with precomputed values: rows paged by key, `page_size` at a
/// time, with the page query keyward sends, and one compare-and-swap UPDATE per row (as
/// keyward quotes and binds it), through a pool of the same size.
pub async fn baseline(pool: &AnyPool, new: &HashMap<i64, String>, page_size: u32) -> Baseline {
    // Unquoted names fold to lower case in PostgreSQL; keyward reads them back from the
    // catalog and quotes them, as here.
    let (table, column) = (TABLE.to_lowercase(), COLUMN.to_lowercase());
    let first_page =
        format!(r#"SELECT "id", "{column}" FROM "{table}" ORDER BY "id" LIMIT {page_size}"#);
    let next_page = format!(
        r#"SELECT "id", "{column}" FROM "{table}" WHERE ("id") > ($1) ORDER BY "id" LIMIT {page_size}"#
    );
    let update =
        format!(r#"UPDATE "{table}" SET "{column}" = $1 WHERE "id" = $2 AND "{column}" = $3"#);
    let start = Instant::now();
    let mut updated = 0;
    let mut after: Option<i64> = None;
    loop {
        let rows = match after {
            None => query(&first_page).fetch_all(pool).await,
            Some(last) => query(&next_page).bind(last).fetch_all(pool).await,
        }
        .expect("read a page");
        for row in &rows {
            let id: i64 = row.try_get(0).expect("an id");
            let old: String = row.try_get(1).expect("a value");
            let result = query(&update)
                .bind(new[&id].clone())
                .bind(id)
                .bind(old)
                .execute(pool)
                .await
                .expect("update a row");
            updated += result.rows_affected();
        }
        if rows.len() < page_size as usize {
            break;
        }
        after = rows
            .last()
            .map(|row| row.try_get::<i64, _>(0).expect("an id"));
    }
    Baseline {
        elapsed: start.elapsed(),
        updated,
    }
}
