//! The database layer (`keyward::database`) against real PostgreSQL and MariaDB servers,
//! with WSO2's own table and column names, and the Java stand-in for WSO2 as the judge:
//! the census counts what WSO2 wrote without any key; the backfill and the rotation
//! leave every row a WSO2 node with the step's configuration reads; a concurrent write
//! is never overwritten; a resumed run ends where an uninterrupted one does; rows that
//! cannot be rewritten are named and left as they were; no error shows a credential.
//! These tests need no control plane.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward::crd::database::{DatabaseEngine, EncryptedColumn, RowFilter};
use keyward::crypto::KeyMaterial;
use keyward::crypto::wso2::{EncryptionSettings, KeyId, StoredValue};
use keyward::database::{
    Checkpoint, ColumnCheckpoint, Connection, ConnectionUrl, Problem, RewriteOptions,
    RewriteProgress, census, rewrite,
};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::support::database::{TestDatabase, server};
use crate::support::wso2_java::Wso2Java;

/// Key A, before the rotation; key B, after; key C, a key no step holds.
const KEY_A: &str = "3f1c9a0b7e2d4c6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e1f";
const KEY_B: &str = "c0ffee00deadbeef0123456789abcdef00112233445566778899aabbccddeeff";
const KEY_C: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A JSON document of API Manager's kind, the secret at `oauth.client_secret`, with
/// spacing and escapes that must survive the rewrite byte for byte.
const DOCUMENT: &str = r#"{ "name" : "Resident\/KM", "oauth":{"client_secret":"SECRET", "timeout": 30.50}, "list":[1, 2 ,3] }"#;

fn material(hex_key: &str) -> KeyMaterial {
    KeyMaterial::parse(hex_key.as_bytes()).expect("a 64-hex key")
}

/// Runs an async scenario on each engine, as one test per engine.
macro_rules! on_both_engines {
    ($scenario:ident) => {
        mod $scenario {
            use keyward::crd::database::DatabaseEngine;

            #[tokio::test]
            async fn postgresql() {
                super::$scenario(
                    DatabaseEngine::PostgreSQL,
                    concat!(stringify!($scenario), "_pg"),
                )
                .await;
            }

            #[tokio::test]
            async fn mariadb() {
                super::$scenario(DatabaseEngine::MySQL, concat!(stringify!($scenario), "_my"))
                    .await;
            }
        }
    };
}

on_both_engines!(backfill_then_rotation_leaves_every_row_readable_by_wso2);
on_both_engines!(a_concurrent_write_is_reread_and_never_overwritten);
on_both_engines!(a_resumed_run_ends_where_an_uninterrupted_one_does);
on_both_engines!(no_error_shows_the_connection_url_or_password);
on_both_engines!(keyward_scan_database_runs_the_census_by_hand);
on_both_engines!(logs_name_the_rows_left_and_never_show_a_value_or_the_password);
on_both_engines!(key_columns_that_do_not_identify_a_row_are_refused);
on_both_engines!(a_cell_larger_than_any_wso2_value_is_counted_and_named_never_read);

/// WSO2's tables as its scripts create them (unquoted, so PostgreSQL folds them to lower
/// case), with WSO2's widths: `IDN_IDENTITY_USER_DATA.DATA_VALUE` is 255 characters.
async fn create_wso2_tables(db: &TestDatabase) {
    let (_, binary) = db.types();
    db.execute(&format!(
        "CREATE TABLE IDN_OAUTH_CONSUMER_APPS (ID INTEGER NOT NULL PRIMARY KEY, \
           CONSUMER_KEY VARCHAR(255), CONSUMER_SECRET VARCHAR(2048));
         CREATE TABLE REG_PROPERTY (REG_ID INTEGER NOT NULL, REG_NAME VARCHAR(100) NOT NULL, \
           REG_VALUE VARCHAR(1000), REG_TENANT_ID INTEGER NOT NULL DEFAULT 0, \
           PRIMARY KEY (REG_ID, REG_TENANT_ID));
         CREATE TABLE IDN_IDENTITY_USER_DATA (TENANT_ID INTEGER NOT NULL, \
           USER_NAME VARCHAR(255) NOT NULL, DATA_KEY VARCHAR(255) NOT NULL, \
           DATA_VALUE VARCHAR(255), PRIMARY KEY (TENANT_ID, USER_NAME, DATA_KEY));
         CREATE TABLE AM_KEY_MANAGER (UUID VARCHAR(50) NOT NULL PRIMARY KEY, \
           NAME VARCHAR(100), ADDITIONAL_PROPERTIES {binary});"
    ))
    .await;
}

fn spec() -> Vec<EncryptedColumn> {
    vec![
        EncryptedColumn::whole("IDN_OAUTH_CONSUMER_APPS", "CONSUMER_SECRET"),
        EncryptedColumn {
            filter: Some(RowFilter {
                column: "REG_NAME".to_owned(),
                values: vec!["password".to_owned(), "privatekeyPass".to_owned()],
            }),
            ..EncryptedColumn::whole("REG_PROPERTY", "REG_VALUE")
        },
        EncryptedColumn::whole("IDN_IDENTITY_USER_DATA", "DATA_VALUE"),
        EncryptedColumn {
            json_path: Some("oauth.client_secret".to_owned()),
            ..EncryptedColumn::whole("AM_KEY_MANAGER", "ADDITIONAL_PROPERTIES")
        },
    ]
}

/// An RSA value as WSO2's asymmetric provider stores it (no symmetric key reads it).
fn rsa_value() -> String {
    let outer = format!(
        r#"{{"c":"{}","t":"RSA/ECB/OAEPwithSHA1andMGF1Padding","tp":"{}","tpd":"SHA-1"}}"#,
        STANDARD.encode([7u8; 256]),
        STANDARD.encode([9u8; 20])
    );
    STANDARD.encode(outer)
}

async fn insert_app(db: &TestDatabase, id: i32, secret: Option<&str>) {
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

/// The text of a cell, whether the column is text or binary.
fn text_at(row: &AnyRow, index: usize) -> Option<String> {
    row.try_get::<Option<String>, _>(index)
        .or_else(|_| {
            row.try_get::<Option<Vec<u8>>, _>(index)
                .map(|bytes| bytes.map(|bytes| String::from_utf8(bytes).expect("UTF-8")))
        })
        .expect("a text or binary cell")
}

async fn apps(db: &TestDatabase) -> BTreeMap<i32, Option<String>> {
    sqlx::query("SELECT ID, CONSUMER_SECRET FROM IDN_OAUTH_CONSUMER_APPS")
        .fetch_all(&db.pool)
        .await
        .expect("select apps")
        .iter()
        .map(|row| (row.try_get::<i32, _>(0).expect("id"), text_at(row, 1)))
        .collect()
}

async fn single(db: &TestDatabase, sql: &str) -> Option<String> {
    let row = sqlx::query(sql).fetch_one(&db.pool).await.expect(sql);
    text_at(&row, 0)
}

async fn connect(db: &TestDatabase) -> Connection {
    Connection::connect("apim-db", db.engine(), &ConnectionUrl::new(&db.url))
        .await
        .expect("connect")
}

fn no_progress(_: &Checkpoint, _: &RewriteProgress) {}

fn fast() -> RewriteOptions {
    RewriteOptions {
        page_size: 4,
        writes_per_second: 10_000,
        attempts: 3,
    }
}

async fn backfill_then_rotation_leaves_every_row_readable_by_wso2(
    engine: DatabaseEngine,
    test: &str,
) {
    let db = server(engine).database(test).await;
    create_wso2_tables(&db).await;
    let mut java = Wso2Java::start();
    let (a, b, c) = (material(KEY_A), material(KEY_B), material(KEY_C));
    let (id_a, id_b, id_c) = (KeyId::of(&a), KeyId::of(&b), KeyId::of(&c));

    // What a WSO2 deployment's rows look like before key ids: every form WSO2 has written.
    let mut plaintexts: BTreeMap<i32, Vec<u8>> = BTreeMap::new();
    let forms: [(i32, Option<(bool, usize)>); 4] = [
        (1, Some((true, 128))),
        (2, Some((false, 16))),
        (3, Some((false, 128))),
        (4, Some((true, 16))),
    ];
    for (id, form) in forms {
        let plaintext = format!("client-secret-{id}").into_bytes();
        let (with_key_id, iv) = form.expect("a form");
        let value = java.encrypt(KEY_A, with_key_id, iv, &plaintext);
        insert_app(&db, id, Some(&value)).await;
        plaintexts.insert(id, plaintext);
    }
    insert_app(&db, 5, Some(&java.encrypt_legacy(KEY_A, b"legacy-secret"))).await;
    plaintexts.insert(5, b"legacy-secret".to_vec());
    insert_app(&db, 6, Some(&rsa_value())).await;
    insert_app(&db, 7, Some("a-plaintext-client-secret")).await;
    insert_app(&db, 8, None).await;
    insert_app(&db, 9, Some("")).await;
    let under_c = java.encrypt(KEY_C, true, 128, b"lost");
    insert_app(&db, 10, Some(&under_c)).await;

    for (id, name, value) in [
        (
            1,
            "password",
            java.encrypt(KEY_A, false, 16, b"registry-password"),
        ),
        (2, "mediaType", "application/json".to_owned()),
        (
            3,
            "privatekeyPass",
            java.encrypt(KEY_A, true, 128, b"keystore-pass"),
        ),
    ] {
        sqlx::query(&db.placeholders(
            "INSERT INTO REG_PROPERTY (REG_ID, REG_NAME, REG_VALUE, REG_TENANT_ID) VALUES (?, ?, ?, -1234)",
        ))
        .bind(id)
        .bind(name)
        .bind(value)
        .execute(&db.pool)
        .await
        .expect("insert a registry property");
    }
    // A legacy AES/ECB TOTP secret in WSO2's 255-character column: its AES-GCM form with
    // a 128-byte IV does not fit.
    let totp = java.encrypt_legacy(KEY_A, b"JBSWY3DPEHPK3PXP");
    sqlx::query(&db.placeholders(
        "INSERT INTO IDN_IDENTITY_USER_DATA (TENANT_ID, USER_NAME, DATA_KEY, DATA_VALUE) VALUES (-1234, 'admin', ?, ?)",
    ))
    .bind("http://wso2.org/claims/identity/secretkey")
    .bind(totp.clone())
    .execute(&db.pool)
    .await
    .expect("insert user data");
    let document = DOCUMENT.replace("SECRET", &java.encrypt(KEY_A, false, 16, b"km-secret"));
    for (uuid, properties) in [
        ("km-1", document.clone()),
        ("km-2", r#"{"oauth":{}}"#.to_owned()),
        ("km-3", "not json".to_owned()),
    ] {
        sqlx::query(&db.placeholders(
            "INSERT INTO AM_KEY_MANAGER (UUID, NAME, ADDITIONAL_PROPERTIES) VALUES (?, 'km', ?)",
        ))
        .bind(uuid)
        .bind(properties.into_bytes())
        .execute(&db.pool)
        .await
        .expect("insert a key manager");
    }

    let connection = connect(&db).await;
    let counted = census(&connection, &spec(), 3).await.expect("census");
    let apps_census = &counted.columns[0];
    assert_eq!(
        apps_census.column,
        "IDN_OAUTH_CONSUMER_APPS.CONSUMER_SECRET"
    );
    assert_eq!(
        apps_census.by_key_id,
        BTreeMap::from([(id_a.to_string(), 2), (id_c.to_string(), 1)])
    );
    assert_eq!(
        (
            apps_census.without_key_id,
            apps_census.legacy_ecb,
            apps_census.rsa,
            apps_census.not_ciphertext,
            apps_census.absent
        ),
        (2, 1, 1, 1, 2)
    );
    assert_eq!(
        counted.columns[1].without_key_id, 1,
        "the filter keeps only passwords"
    );
    assert_eq!(counted.columns[1].by_key_id.values().sum::<u64>(), 1);
    assert_eq!(
        counted.columns[1].not_ciphertext, 0,
        "mediaType is not read"
    );
    assert_eq!(counted.columns[2].legacy_ecb, 1);
    assert_eq!(
        (
            counted.columns[3].without_key_id,
            counted.columns[3].absent,
            counted.columns[3].not_ciphertext
        ),
        (1, 1, 1)
    );
    // The default columns: WSO2's tables this database has, the others skipped.
    let defaults = census(&connection, &[], 100).await.expect("default census");
    let labels: Vec<&str> = defaults.columns.iter().map(|c| c.column.as_str()).collect();
    assert_eq!(
        labels,
        [
            "IDN_IDENTITY_USER_DATA.DATA_VALUE",
            "IDN_OAUTH_CONSUMER_APPS.CONSUMER_SECRET",
            "REG_PROPERTY.REG_VALUE"
        ]
    );
    assert!(
        defaults
            .skipped
            .contains(&"WF_BPS_PROFILE.PASSWORD".to_owned())
    );

    // Backfill: as every pod reads before the rotation, written back under A with its id.
    let before = apps(&db).await;
    let backfill = EncryptionSettings {
        key: &a,
        old_key: None,
        enable_key_id: true,
    };
    let progress = rewrite(
        &connection,
        &spec(),
        &backfill,
        &a,
        &fast(),
        Checkpoint::default(),
        no_progress,
    )
    .await
    .expect("backfill");
    assert_eq!(
        (
            progress.rewritten,
            progress.current,
            progress.failed,
            progress.rsa,
            progress.too_wide
        ),
        (5, 3, 1, 1, 1),
        "{progress:?}"
    );
    let after = apps(&db).await;
    for id in [6, 7, 8, 9, 10] {
        assert_eq!(
            after[&id], before[&id],
            "row {id} is left exactly as it was"
        );
    }
    assert_eq!(
        single(&db, "SELECT DATA_VALUE FROM IDN_IDENTITY_USER_DATA")
            .await
            .as_deref(),
        Some(totp.as_str()),
        "the value that would not fit is left, never truncated"
    );
    // Named by table and key (as the catalog spells the key columns), never by value.
    let named: Vec<String> = progress
        .problems
        .iter()
        .map(|p| format!("{} {}", p.row, p.problem).to_lowercase())
        .collect();
    assert_eq!(named.len(), 3, "{named:?}");
    assert!(
        named[0].starts_with("idn_oauth_consumer_apps.consumer_secret [id=6] rsa"),
        "{named:?}"
    );
    assert!(
        named[1].starts_with("idn_oauth_consumer_apps.consumer_secret [id=10] does not decrypt"),
        "{named:?}"
    );
    assert!(
        named[2]
            .contains(r#"data_key="http://wso2.org/claims/identity/secretkey"] the new value is"#),
        "{named:?}"
    );
    assert!(matches!(
        progress.problems[2].problem,
        Problem::TooWide { width: 255, .. }
    ));
    let counted = census(&connection, &spec(), 3).await.expect("census");
    assert_eq!(counted.rows_without_key_id(), 0, "staging may go ahead");
    assert_eq!(
        counted.legacy_ecb_rows(),
        1,
        "the row that did not fit still holds promotion back"
    );
    assert_eq!(counted.rows_under(&id_a), 5 + 2 + 1);
    assert_eq!(counted.columns[0].by_key_id[id_a.as_str()], 5);
    assert_eq!(counted.columns[3].by_key_id[id_a.as_str()], 1);
    // Only the string at the path changed.
    let km = single(
        &db,
        "SELECT ADDITIONAL_PROPERTIES FROM AM_KEY_MANAGER WHERE UUID = 'km-1'",
    )
    .await
    .expect("a document");
    let (head, tail) = DOCUMENT.split_once("SECRET").expect("a placeholder");
    assert!(km.starts_with(head) && km.ends_with(tail), "{km}");
    let km_secret = &km[head.len()..km.len() - tail.len()];

    // Every phase a pod can be in around the backfill reads every rewritten row.
    for (key, old_key) in [(KEY_A, None), (KEY_A, Some(KEY_B))] {
        for (id, plaintext) in &plaintexts {
            let value = after[id].as_deref().expect("a value");
            assert_eq!(
                &java
                    .decrypt(key, old_key, true, value)
                    .expect("WSO2 reads it"),
                plaintext,
                "row {id}"
            );
        }
        assert_eq!(
            java.decrypt(key, old_key, true, km_secret).expect("reads"),
            b"km-secret"
        );
    }

    // Rotation: as pods read once B is promoted (key B, old_key A), written under B.
    let rotation = EncryptionSettings {
        key: &b,
        old_key: Some(&a),
        enable_key_id: true,
    };
    let progress = rewrite(
        &connection,
        &spec(),
        &rotation,
        &b,
        &fast(),
        Checkpoint::default(),
        no_progress,
    )
    .await
    .expect("rotation");
    assert_eq!(
        (
            progress.rewritten,
            progress.current,
            progress.failed,
            progress.rsa
        ),
        (8, 0, 2, 1),
        "the C row and the legacy row that never fit stay unreadable: {progress:?}"
    );
    let counted = census(&connection, &spec(), 3).await.expect("census");
    assert_eq!(counted.rows_under(&id_a), 0, "nothing left under A");
    assert_eq!(counted.columns[0].by_key_id[id_b.as_str()], 5);
    assert_eq!(counted.columns[1].by_key_id[id_b.as_str()], 2);
    let rotated = apps(&db).await;
    let km = single(
        &db,
        "SELECT ADDITIONAL_PROPERTIES FROM AM_KEY_MANAGER WHERE UUID = 'km-1'",
    )
    .await
    .expect("a document");
    let km_secret = &km[head.len()..km.len() - tail.len()];
    // Promoted and retired pods read every row.
    for (key, old_key) in [(KEY_B, Some(KEY_A)), (KEY_B, None)] {
        for (id, plaintext) in &plaintexts {
            let value = rotated[id].as_deref().expect("a value");
            assert_eq!(
                &java
                    .decrypt(key, old_key, true, value)
                    .expect("WSO2 reads it"),
                plaintext,
                "row {id}"
            );
        }
        assert_eq!(
            java.decrypt(key, old_key, true, km_secret).expect("reads"),
            b"km-secret"
        );
    }
    for (id_row, name) in [(1, "registry-password"), (3, "keystore-pass")] {
        let value = single(
            &db,
            &format!("SELECT REG_VALUE FROM REG_PROPERTY WHERE REG_ID = {id_row}"),
        )
        .await
        .expect("a value");
        assert_eq!(
            java.decrypt(KEY_B, None, true, &value).expect("reads"),
            name.as_bytes()
        );
    }
    assert_eq!(
        single(&db, "SELECT REG_VALUE FROM REG_PROPERTY WHERE REG_ID = 2")
            .await
            .as_deref(),
        Some("application/json"),
        "rows outside the filter are never touched"
    );
    assert_eq!(
        StoredValue::parse(&rotated[&10].clone().expect("kept"))
            .expect("parses")
            .key_id(),
        Some(&id_c)
    );
    connection.close().await;
}

async fn a_concurrent_write_is_reread_and_never_overwritten(engine: DatabaseEngine, test: &str) {
    let db = server(engine).database(test).await;
    create_wso2_tables(&db).await;
    let mut java = Wso2Java::start();
    let a = material(KEY_A);
    let rows = 10;
    for id in 1..=rows {
        let value = java.encrypt(KEY_A, false, 16, format!("original-{id}").as_bytes());
        insert_app(&db, id, Some(&value)).await;
    }
    let concurrent = java.encrypt(KEY_A, false, 128, b"written-by-wso2-meanwhile");
    let connection = connect(&db).await;
    let backfill = EncryptionSettings {
        key: &a,
        old_key: None,
        enable_key_id: true,
    };
    // One page of every row, written at 10 a second: the last row's write comes about a
    // second after the page was read.
    let options = RewriteOptions {
        page_size: 100,
        writes_per_second: 10,
        attempts: 3,
    };
    let apps_only = &spec()[..1].to_vec();
    let run = rewrite(
        &connection,
        apps_only,
        &backfill,
        &a,
        &options,
        Checkpoint::default(),
        no_progress,
    );
    let writer = async {
        // Once the first row is rewritten, the page has been read: change the last row.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let first = apps(&db).await.remove(&1).flatten().expect("row 1");
            if StoredValue::parse(&first)
                .expect("parses")
                .key_id()
                .is_some()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the rewrite never wrote row 1"
            );
            tokio::task::yield_now().await;
        }
        sqlx::query(
            &db.placeholders("UPDATE IDN_OAUTH_CONSUMER_APPS SET CONSUMER_SECRET = ? WHERE ID = ?"),
        )
        .bind(concurrent.clone())
        .bind(rows)
        .execute(&db.pool)
        .await
        .expect("a concurrent write");
    };
    let (progress, ()) = tokio::join!(run, writer);
    let progress = progress.expect("rewrite");
    assert_eq!(progress.rewritten, rows as u64, "{progress:?}");
    assert_eq!(
        progress.writes,
        rows as u64 + 1,
        "one write found the row changed: {progress:?}"
    );
    let last = apps(&db)
        .await
        .remove(&rows)
        .flatten()
        .expect("the last row");
    assert_eq!(
        java.decrypt(KEY_A, Some(KEY_B), true, &last)
            .expect("WSO2 reads it"),
        b"written-by-wso2-meanwhile",
        "the concurrent value was re-read and rewritten, not overwritten"
    );
    connection.close().await;
}

async fn a_resumed_run_ends_where_an_uninterrupted_one_does(engine: DatabaseEngine, test: &str) {
    let db = server(engine).database(test).await;
    create_wso2_tables(&db).await;
    let mut java = Wso2Java::start();
    let (a, b) = (material(KEY_A), material(KEY_B));
    let rows = 12;
    for id in 1..=rows {
        let value = java.encrypt(KEY_A, true, 128, format!("secret-{id}").as_bytes());
        insert_app(&db, id, Some(&value)).await;
    }
    let connection = connect(&db).await;
    let rotation = EncryptionSettings {
        key: &b,
        old_key: Some(&a),
        enable_key_id: true,
    };
    let options = fast();
    // Killed after the second page: the future is dropped where it stands.
    let (pages, mut kill) = tokio::sync::mpsc::unbounded_channel::<Checkpoint>();
    let apps_only = &spec()[..1].to_vec();
    let run = rewrite(
        &connection,
        apps_only,
        &rotation,
        &b,
        &options,
        Checkpoint::default(),
        move |checkpoint, _| {
            let _ = pages.send(checkpoint.clone());
        },
    );
    let checkpoint = tokio::select! {
        _ = run => panic!("the run was to be killed before its end"),
        checkpoint = async { kill.recv().await; kill.recv().await.expect("a second page") } => checkpoint,
    };
    assert_eq!(
        checkpoint.columns["IDN_OAUTH_CONSUMER_APPS.CONSUMER_SECRET"],
        ColumnCheckpoint::After(vec![keyward::database::KeyValue::Integer(8)])
    );
    // The checkpoint survives serialization, as a Job's progress record would keep it.
    let checkpoint: Checkpoint =
        serde_json::from_str(&serde_json::to_string(&checkpoint).expect("json"))
            .expect("read back");
    let mut last = None;
    let progress = rewrite(
        &connection,
        &spec()[..1],
        &rotation,
        &b,
        &options,
        checkpoint,
        |checkpoint, _| {
            last = Some(checkpoint.clone());
        },
    )
    .await
    .expect("the resumed run");
    // (A row of the third page may have been written before the kill: it is current now.)
    assert_eq!(
        (progress.seen, progress.rewritten + progress.current),
        (4, 4),
        "only rows after the checkpoint: {progress:?}"
    );
    assert_eq!(
        last.expect("a page").columns["IDN_OAUTH_CONSUMER_APPS.CONSUMER_SECRET"],
        ColumnCheckpoint::Done
    );
    let counted = census(&connection, &spec()[..1], 100)
        .await
        .expect("census");
    assert_eq!(
        counted.columns[0].by_key_id,
        BTreeMap::from([(KeyId::of(&b).to_string(), rows as u64)])
    );
    for (id, value) in apps(&db).await {
        let value = value.expect("a value");
        assert_eq!(
            java.decrypt(KEY_B, None, true, &value)
                .expect("WSO2 reads it"),
            format!("secret-{id}").as_bytes()
        );
    }
    // Running again finds nothing to do.
    let again = rewrite(
        &connection,
        &spec()[..1],
        &rotation,
        &b,
        &options,
        Checkpoint::default(),
        no_progress,
    )
    .await
    .expect("again");
    assert_eq!((again.current, again.writes), (rows as u64, 0));
    connection.close().await;
}

async fn no_error_shows_the_connection_url_or_password(engine: DatabaseEngine, test: &str) {
    let server = server(engine);
    let db = server.database(test).await;
    let password = server.password();
    let base = server.base_url();
    let wrong_password = base.replace(password, "not-the-password-0123");
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let (scheme, _) = base.split_once("://").expect("a scheme");
        format!("{scheme}://keyward:{password}@127.0.0.1:{port}/x")
    };
    let cases = [
        (format!("{}/no_such_database", base), engine),
        (format!("{wrong_password}/{test}"), engine),
        (closed_port, engine),
        (
            format!("{base}/{test}?sslmode=nonsense&ssl-mode=nonsense"),
            engine,
        ),
        (db.url.clone(), other(engine)),
    ];
    for (url, engine) in cases {
        let error = Connection::connect("apim-db", engine, &ConnectionUrl::new(&url))
            .await
            .expect_err("refused");
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(password), "{shown}");
        assert!(!shown.contains("not-the-password"), "{shown}");
        assert!(shown.contains("apim-db"), "the database is named: {shown}");
    }
    let url = ConnectionUrl::new(&db.url);
    assert!(!format!("{url:?}").contains(password));
    let connection = Connection::connect("apim-db", engine, &url)
        .await
        .expect("connect");
    assert!(!format!("{connection:?}").contains(password));
    // A spec naming what the database does not have is refused by name.
    let error = census(
        &connection,
        &[EncryptedColumn::whole("NO_SUCH_TABLE", "X")],
        10,
    )
    .await
    .expect_err("refused");
    assert!(error.to_string().contains("NO_SUCH_TABLE"), "{error}");
    assert!(!format!("{error:?}").contains(password));
    connection.close().await;
}

fn other(engine: DatabaseEngine) -> DatabaseEngine {
    match engine {
        DatabaseEngine::PostgreSQL => DatabaseEngine::MySQL,
        DatabaseEngine::MySQL => DatabaseEngine::PostgreSQL,
    }
}

async fn keyward_scan_database_runs_the_census_by_hand(engine: DatabaseEngine, test: &str) {
    let db = server(engine).database(test).await;
    create_wso2_tables(&db).await;
    let a = material(KEY_A);
    for (id, value) in [
        (
            1,
            keyward::crypto::wso2::encrypt(&a, b"one").expect("encrypt"),
        ),
        (
            2,
            keyward::crypto::wso2::encrypt_legacy_ecb(&a, b"two").expect("encrypt"),
        ),
    ] {
        insert_app(&db, id, Some(&value)).await;
    }
    let dir = std::env::temp_dir().join(format!("keyward-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let url_file = dir.join("url");
    std::fs::write(&url_file, format!("{}\n", db.url)).expect("write the URL");
    let engine_arg = match engine {
        DatabaseEngine::PostgreSQL => "postgresql",
        DatabaseEngine::MySQL => "mysql",
    };
    let password = db.server.password();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args([
            "scan", "database", "--engine", engine_arg, "--name", "apim-db", "-o", "json",
        ])
        .arg("--url-file")
        .arg(&url_file)
        .output()
        .expect("keyward runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    let census: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(census["database"], "apim-db");
    let apps = census["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .find(|column| column["column"] == "IDN_OAUTH_CONSUMER_APPS.CONSUMER_SECRET")
        .expect("the consumer secrets are a default column");
    assert_eq!(apps["byKeyId"][KeyId::of(&a).as_str()], 1);
    assert_eq!(apps["legacyEcb"], 1);
    // The text form, and a refused connection that names no credential.
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["scan", "database", "--engine", engine_arg])
        .arg("--url-file")
        .arg(&url_file)
        .output()
        .expect("keyward runs");
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains("IDN_OAUTH_CONSUMER_APPS.CONSUMER_SECRET: 1 under key id"),
        "{stdout}"
    );
    std::fs::write(&url_file, db.url.replace(password, "wrong-password-4567")).expect("write");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["scan", "database", "--engine", engine_arg])
        .arg("--url-file")
        .arg(&url_file)
        .output()
        .expect("keyward runs");
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(refused.status.code(), Some(2), "{shown}");
    assert!(shown.contains("cannot connect"), "{shown}");
    assert!(!shown.contains("wrong-password"), "{shown}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Log lines written while it is set as this thread's subscriber, at every level, the
/// driver's included.
#[derive(Clone, Default)]
struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("the log buffer")
            .extend_from_slice(buffer);
        Ok(buffer.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("the log buffer")).into_owned()
    }
}

async fn logs_name_the_rows_left_and_never_show_a_value_or_the_password(
    engine: DatabaseEngine,
    test: &str,
) {
    let db = server(engine).database(test).await;
    create_wso2_tables(&db).await;
    let mut java = Wso2Java::start();
    let a = material(KEY_A);
    let lost = java.encrypt(KEY_C, true, 128, b"lost-plaintext");
    let plain = "a-plaintext-client-secret";
    let fine = java.encrypt(KEY_A, false, 16, b"fine-plaintext");
    for (id, value) in [(1, &lost), (2, &plain.to_owned()), (3, &fine)] {
        insert_app(&db, id, Some(value)).await;
    }
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let connection = connect(&db).await;
    let backfill = EncryptionSettings {
        key: &a,
        old_key: None,
        enable_key_id: true,
    };
    let progress = rewrite(
        &connection,
        &spec()[..1],
        &backfill,
        &a,
        &fast(),
        Checkpoint::default(),
        no_progress,
    )
    .await
    .expect("rewrite");
    assert_eq!(
        (progress.rewritten, progress.failed, progress.not_ciphertext),
        (1, 1, 1)
    );
    let rewritten = apps(&db).await.remove(&3).flatten().expect("row 3");
    connection.close().await;
    let text = logs.text();
    assert!(
        text.to_lowercase().contains("[id=1]"),
        "the row left is named: {text}"
    );
    for secret in [
        db.server.password(),
        lost.as_str(),
        plain,
        fine.as_str(),
        rewritten.as_str(),
        "lost-plaintext",
        "fine-plaintext",
    ] {
        assert!(!text.contains(secret), "the logs show a secret: {text}");
    }
}

/// Rows are paged after the last key read: a key two rows share, or one that may be
/// NULL, would skip rows (and hide them from the census), so it is refused by name.
async fn key_columns_that_do_not_identify_a_row_are_refused(engine: DatabaseEngine, test: &str) {
    let db = server(engine).database(test).await;
    db.execute(
        "CREATE TABLE IDN_OAUTH_CONSUMER_APPS (ID INTEGER NOT NULL PRIMARY KEY, \
           CONSUMER_KEY VARCHAR(255), APP_NAME VARCHAR(100) NOT NULL, CONSUMER_SECRET VARCHAR(2048), \
           CONSTRAINT APP_NAME_UNIQUE UNIQUE (APP_NAME))",
    )
    .await;
    let connection = connect(&db).await;
    let keyed = |columns: &[&str]| EncryptedColumn {
        key_columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        ..EncryptedColumn::whole("IDN_OAUTH_CONSUMER_APPS", "CONSUMER_SECRET")
    };
    // Not unique (and nullable): refused, naming the table and columns.
    let refused = census(&connection, &[keyed(&["CONSUMER_KEY"])], 10)
        .await
        .expect_err("a key that does not identify a row");
    let message = refused.to_string();
    assert!(
        message.contains("keyColumns") && message.to_lowercase().contains("consumer_key"),
        "{message}"
    );
    // The primary key and a unique key of NOT NULL columns identify a row.
    for columns in [&["ID"][..], &["app_name"][..]] {
        census(&connection, &[keyed(columns)], 10)
            .await
            .unwrap_or_else(|error| panic!("{columns:?}: {error}"));
    }
    connection.close().await;
}

/// A cell far larger than any WSO2 value (the server is whoever the Secret names) is
/// never fetched: the census counts it as unread, which keeps every key, and the
/// rewrite names it and leaves it.
async fn a_cell_larger_than_any_wso2_value_is_counted_and_named_never_read(
    engine: DatabaseEngine,
    test: &str,
) {
    let db = server(engine).database(test).await;
    let (text, _) = db.types();
    db.execute(&format!(
        "CREATE TABLE IDN_OAUTH_CONSUMER_APPS (ID INTEGER NOT NULL PRIMARY KEY, \
           CONSUMER_KEY VARCHAR(255), CONSUMER_SECRET {text})"
    ))
    .await;
    let (a, b) = (material(KEY_A), material(KEY_B));
    let fine = keyward::crypto::wso2::encrypt(&a, b"fine").expect("encrypts");
    insert_app(&db, 1, Some(&fine)).await;
    insert_app(&db, 2, Some(&"A".repeat(4 * 1024 * 1024))).await;
    let connection = connect(&db).await;
    let spec = [EncryptedColumn::whole(
        "IDN_OAUTH_CONSUMER_APPS",
        "CONSUMER_SECRET",
    )];
    let counted = census(&connection, &spec, 10).await.expect("census");
    assert_eq!(counted.rows_unread(), 1);
    assert_eq!(counted.rows_under(&KeyId::of(&a)), 1);
    let read = EncryptionSettings {
        key: &b,
        old_key: Some(&a),
        enable_key_id: true,
    };
    let progress = rewrite(
        &connection,
        &spec,
        &read,
        &b,
        &fast(),
        Checkpoint::default(),
        no_progress,
    )
    .await
    .expect("rewrite");
    assert_eq!((progress.rewritten, progress.failed), (1, 1));
    assert!(matches!(
        progress.problems[0].problem,
        Problem::TooLarge { .. }
    ));
    assert_eq!(
        apps(&db).await[&2].as_deref().map(str::len),
        Some(4 * 1024 * 1024),
        "left as it was"
    );
    connection.close().await;
}
