//! A WSO2 key rotated for real: an EncryptionKey in the `Wso2Toml` format whose
//! `spec.reencryption.databases` names a real PostgreSQL database holding WSO2's own
//! ciphertext, written by the Java stand-in as API Manager writes it — with and without
//! key ids, both IV lengths, legacy AES/ECB. Bumping the counter backfills key ids,
//! stages, promotes, re-encrypts the database through the real Job, verifies with a
//! key-free census and retires; at the end every row reads with the new key alone, as a
//! WSO2 node reads it, and none is left under the old key or without a key id.

use std::collections::BTreeMap;

use keyward::crd::database::{DatabaseEngine, EncryptedColumn};
use keyward::crypto::KeyMaterial;
use keyward::crypto::wso2::{KeyId, read_key_id};
use keyward::database::{Connection, ConnectionUrl, census};
use serde_json::json;
use sqlx::Row;

use crate::support::api::keys;
use crate::support::database::{TestDatabase, server};
use crate::support::encryption_key::{
    apply_key, bump, key_until, stored_keyring, until_rotated, user_secret,
};
use crate::support::events::until_event;
use crate::support::jobs;
use crate::support::operator::operator_running_jobs;
use crate::support::workload::deploy;
use crate::support::wso2_java::Wso2Java;
use crate::support::{self, TestCluster, wait};

/// Version 1 of the key, as the user supplies it (so Java can write under it first).
pub const KEY_A: &str = "3f1c9a0b7e2d4c6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e1f";

pub async fn insert(db: &TestDatabase, id: i32, secret: Option<&str>) {
    sqlx::query(&db.placeholders(
        "INSERT INTO IDN_OAUTH_CONSUMER_APPS (ID, CONSUMER_KEY, CONSUMER_SECRET) VALUES (?, ?, ?)",
    ))
    .bind(id)
    .bind(format!("key-{id}"))
    .bind(secret.map(str::to_owned))
    .execute(&db.pool)
    .await
    .expect("insert an app");
}

pub async fn secrets_by_id(db: &TestDatabase) -> BTreeMap<i32, Option<String>> {
    sqlx::query("SELECT ID, CONSUMER_SECRET FROM IDN_OAUTH_CONSUMER_APPS")
        .fetch_all(&db.pool)
        .await
        .expect("select apps")
        .iter()
        .map(|row| {
            let id: i32 = row.try_get(0).expect("id");
            let secret: Option<String> = row.try_get(1).expect("secret");
            (id, secret)
        })
        .collect()
}

/// The key of a WSO2 deployment: version 1 is key A, pods get both keys by environment,
/// and the database `db` is re-encrypted; applied and distributed. Returns its spec.
pub async fn apply_wso2_key(
    cluster: &TestCluster,
    db: &TestDatabase,
    columns: serde_json::Value,
) -> serde_json::Value {
    user_secret(cluster, "apim-key", "key", KEY_A.as_bytes()).await;
    user_secret(cluster, "apim-db", "url", db.url.as_bytes()).await;
    deploy(cluster, "apim", 2).await;
    let spec = json!({
        "source": {"secretRef": {"name": "apim-key", "key": "key"}},
        "targets": [{"kind": "Deployment", "name": "apim"}],
        "distribution": {"format": "Wso2Toml", "projection": "Env"},
        "reencryption": {
            "batchSize": 5,
            "databases": [{
                "name": "apim-db",
                "engine": "PostgreSQL",
                "connectionSecretRef": {"name": "apim-db", "key": "url"},
                "columns": columns,
            }],
        },
    });
    apply_key(cluster, "apim", spec.clone()).await;
    key_until(cluster, "apim", "True", "KeyDistributed").await;

    spec
}

/// The column of WSO2's OAuth applications' secrets, as the spec lists it.
pub fn apps_column() -> serde_json::Value {
    json!([{"table": "IDN_OAUTH_CONSUMER_APPS", "column": "CONSUMER_SECRET"}])
}

/// WSO2's table of OAuth applications, with its width for the secret.
pub async fn create_apps_table(db: &TestDatabase) {
    db.execute(
        "CREATE TABLE IDN_OAUTH_CONSUMER_APPS (ID INTEGER NOT NULL PRIMARY KEY, \
         CONSUMER_KEY VARCHAR(255), CONSUMER_SECRET VARCHAR(2048))",
    )
    .await;
}

#[tokio::test]
async fn a_wso2_key_rotation_backfills_reencrypts_its_database_and_leaves_every_row_readable() {
    let cluster = support::cluster("wso2-rotation").await;
    let operator = operator_running_jobs(&cluster, &[]);
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    let db = server(DatabaseEngine::PostgreSQL)
        .database("wso2_rotation")
        .await;
    create_apps_table(&db).await;

    // What API Manager has written over the years under key A.
    let mut java = Wso2Java::start();
    let mut plaintexts = BTreeMap::new();
    for id in 1..=24 {
        let plaintext = format!("consumer-secret-{id}");
        let value = match id % 4 {
            0 => java.encrypt(KEY_A, true, 128, plaintext.as_bytes()),
            1 => java.encrypt(KEY_A, false, 16, plaintext.as_bytes()),
            2 => java.encrypt(KEY_A, false, 128, plaintext.as_bytes()),
            _ => java.encrypt_legacy(KEY_A, plaintext.as_bytes()),
        };
        insert(&db, id, Some(&value)).await;
        plaintexts.insert(id, plaintext);
    }
    insert(&db, 100, None).await;

    let spec = apply_wso2_key(&cluster, &db, apps_column()).await;

    bump(&cluster, "apim", &spec, 1).await;
    let started = until_event(&cluster, "apim", Some("Normal"), "RotationStarted").await;
    assert!(
        started.message.unwrap_or_default().contains("key id"),
        "a key with databases starts by backfilling key ids"
    );
    let rotated = until_rotated(&cluster, "apim", 2).await;
    until_event(&cluster, "apim", Some("Normal"), "RotationStaging").await;
    let rotation = rotated
        .status
        .as_ref()
        .and_then(|status| status.rotation.clone())
        .expect("rotation");
    assert_eq!(rotation.without_key_id, 0);
    assert!(
        rotation
            .scan
            .iter()
            .all(|count| count.version == 2 || count.ciphertexts == 0),
        "the verification scan found nothing under version 1: {:?}",
        rotation.scan
    );

    // Every row now reads with the new key alone, as a WSO2 node with the final
    // rendering reads it (key = old_key = B), and carries B's key id.
    let keyring = stored_keyring(&cluster, "apim").await;
    let b = keyring.version(2).expect("version 2");
    let b_hex = hex::encode(b.material.expose());
    let b_id = KeyId::of(&b.material);
    let rows = secrets_by_id(&db).await;
    assert_eq!(rows.get(&100), Some(&None), "a NULL stays NULL");
    for (id, plaintext) in &plaintexts {
        let value = rows[id].clone().expect("a value");
        assert_eq!(
            read_key_id(&value).expect("WSO2 ciphertext"),
            Some(b_id.clone()),
            "row {id} is under version 2 with its key id"
        );
        let read = java
            .decrypt(&b_hex, Some(&b_hex), true, &value)
            .unwrap_or_else(|error| panic!("row {id} does not read with the new key: {error}"));
        assert_eq!(read, plaintext.as_bytes(), "row {id}");
    }

    // The key-free census agrees: nothing under the old key, nothing without a key id.
    let a = KeyMaterial::parse(KEY_A.as_bytes()).expect("key A");
    let connection = Connection::connect(
        "apim-db",
        DatabaseEngine::PostgreSQL,
        &ConnectionUrl::new(&db.url),
    )
    .await
    .expect("connect");
    let counted = census(
        &connection,
        &[EncryptedColumn::whole(
            "IDN_OAUTH_CONSUMER_APPS",
            "CONSUMER_SECRET",
        )],
        100,
    )
    .await
    .expect("census");
    assert_eq!(counted.rows_under(&KeyId::of(&a)), 0);
    assert_eq!(counted.rows_without_key_id(), 0);
    assert_eq!(counted.legacy_ecb_rows(), 0);
    assert_eq!(counted.rows_under(&b_id), 24);

    // The census shows in the metrics by version, with no key id and no row data.
    let (code, page) = crate::support::http::get(&format!("{}/metrics", operator.metrics_url()))
        .expect("metrics answer");
    assert_eq!(code, 200);
    let labels = format!(r#"namespace="{}",encryption_key="apim""#, cluster.namespace);
    let sample = |name: &str, labels: &str| crate::support::http::sample(&page, name, labels);
    assert_eq!(
        sample("keyward_encryption_key_values_without_key_id", &labels),
        Some(0.0)
    );
    assert_eq!(
        sample(
            "keyward_encryption_key_version_ciphertexts",
            &format!(r#"{labels},version="2",state="Primary""#)
        ),
        Some(24.0)
    );
    assert!(!page.contains(b_id.as_str()), "no key id in the metrics");
}

#[tokio::test]
async fn a_database_row_that_does_not_decrypt_is_named_and_keeps_the_old_key() {
    let cluster = support::cluster("wso2-rotation-bad-row").await;
    let _operator = operator_running_jobs(&cluster, &[]);
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    let db = server(DatabaseEngine::PostgreSQL)
        .database("wso2_rotation_bad_row")
        .await;
    create_apps_table(&db).await;
    let mut java = Wso2Java::start();
    insert(&db, 1, Some(&java.encrypt(KEY_A, true, 128, b"fine"))).await;
    // Under key A's key id, but written with another key: no key of any phase reads it.
    let other = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let foreign = java.encrypt(other, true, 128, b"lost");
    let a = KeyMaterial::parse(KEY_A.as_bytes()).expect("key A");
    let forged = with_key_id(&foreign, KeyId::of(&a).as_str());
    insert(&db, 2, Some(&forged)).await;

    let spec = apply_wso2_key(&cluster, &db, apps_column()).await;
    bump(&cluster, "apim", &spec, 1).await;
    let stuck = wait::until_within(
        &keys(&cluster),
        "apim",
        "the rotation reports the row that does not decrypt",
        crate::support::encryption_key::ROTATION,
        |key| {
            key.status
                .as_ref()
                .and_then(|status| status.rotation.as_ref())
                .and_then(|rotation| rotation.failure.as_ref())
                .is_some_and(|failure| failure.reason == "UndecryptableCiphertext")
        },
    )
    .await;
    let rotation = stuck
        .status
        .as_ref()
        .and_then(|status| status.rotation.clone())
        .expect("rotation");
    let failures = rotation.progress.map(|p| p.failures).unwrap_or_default();
    assert_eq!(
        failures,
        ["apim-db/IDN_OAUTH_CONSUMER_APPS.CONSUMER_SECRET/2"],
        "the row is named by database, column and key"
    );
    // Nothing was retired: the old version stays for the row that still needs it.
    let keyring = stored_keyring(&cluster, "apim").await;
    assert!(
        keyring
            .versions
            .iter()
            .all(|version| version.state != keyward::crypto::keyring::VersionState::Retired)
    );
    let rows = secrets_by_id(&db).await;
    assert_eq!(
        rows[&2].as_deref(),
        Some(forged.as_str()),
        "the row is left as it was"
    );
}

/// `value` (WSO2's Base64 of an outer JSON around the Base64 of an inner JSON) claiming
/// `key_id` as its key id.
fn with_key_id(value: &str, key_id: &str) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let decode = |text: &str| -> serde_json::Value {
        serde_json::from_slice(&STANDARD.decode(text).expect("Base64")).expect("JSON")
    };
    let mut outer = decode(value);
    let mut inner = decode(outer["c"].as_str().expect("inner"));
    inner["keyId"] = json!(key_id);
    outer["c"] = json!(STANDARD.encode(inner.to_string()));
    STANDARD.encode(outer.to_string())
}
