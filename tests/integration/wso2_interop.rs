//! keyward's WSO2 ciphertext format (`keyward::crypto::wso2`) and WSO2's own, played by
//! the Java stand-in (`interop/wso2/`, Java's JCE, Gson and org.json), read each other's
//! values in every case: both IV lengths, with and without a key id, the empty and a
//! binary plaintext, legacy AES/ECB; and keyward decides which key reads a value exactly
//! as a WSO2 node does in every phase of a rotation. These tests need no control plane.

use keyward::crypto::KeyMaterial;
use keyward::crypto::wso2::{
    self, EncryptionSettings, IvLength, KeyId, Kind, StoredValue, read_key_id,
};

use crate::support::wso2_java::Wso2Java;

/// Key A, the key before a rotation, as deployment.toml carries it (64 hex characters).
const KEY_A: &str = "3f1c9a0b7e2d4c6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e1f";
/// Key B, the key a rotation moves to.
const KEY_B: &str = "c0ffee00deadbeef0123456789abcdef00112233445566778899aabbccddeeff";

fn material(hex_key: &str) -> KeyMaterial {
    KeyMaterial::parse(hex_key.as_bytes()).expect("a 64-hex key")
}

/// The plaintexts every case carries: empty, an OAuth-like secret, and bytes no string
/// type could carry (invalid UTF-8, NUL, every byte value).
fn plaintexts() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"client-secret-0123456789".to_vec(),
        (0..=255u8).rev().chain([0xc3, 0x28, 0x00, 0xff]).collect(),
    ]
}

const IV_LENGTHS: [(usize, IvLength); 2] = [(128, IvLength::Bytes128), (16, IvLength::Bytes16)];

#[test]
fn what_wso2_writes_keyward_reads_and_classifies_without_a_key() {
    let mut java = Wso2Java::start();
    let (a, b) = (material(KEY_A), material(KEY_B));
    assert_eq!(KeyId::of(&a).as_str(), java.key_id(KEY_A), "key ids agree");
    for plaintext in plaintexts() {
        for (iv_bytes, iv_length) in IV_LENGTHS {
            for with_key_id in [true, false] {
                let case = format!(
                    "{} bytes, IV {iv_bytes}, key id {with_key_id}",
                    plaintext.len()
                );
                let value = java.encrypt(KEY_A, with_key_id, iv_bytes, &plaintext);
                let stored = StoredValue::parse(&value).unwrap_or_else(|e| panic!("{case}: {e}"));
                let read = stored
                    .decrypt_with(&a)
                    .unwrap_or_else(|e| panic!("{case}: {e}"));
                assert_eq!(*read, plaintext, "{case}");
                let read_key_id = read_key_id(&value).expect("a key id is read without a key");
                if plaintext.is_empty() {
                    assert_eq!(stored.kind(), Kind::Empty, "{case}");
                    continue;
                }
                assert_eq!(stored.iv_length(), Some(iv_length), "{case}");
                if with_key_id {
                    assert_eq!(stored.kind(), Kind::GcmWithKeyId(KeyId::of(&a)), "{case}");
                    assert_eq!(read_key_id, Some(KeyId::of(&a)), "{case}");
                } else {
                    assert_eq!(stored.kind(), Kind::GcmWithoutKeyId, "{case}");
                    assert_eq!(read_key_id, None, "{case}");
                }
                assert!(
                    stored.decrypt_with(&b).is_err(),
                    "{case}: B reads A's value"
                );
            }
        }
        let legacy = java.encrypt_legacy(KEY_A, &plaintext);
        let stored = StoredValue::parse(&legacy).expect("a legacy value parses");
        assert_eq!(
            *stored.decrypt_with(&a).expect("legacy read with A"),
            plaintext
        );
        if !plaintext.is_empty() {
            assert_eq!(stored.kind(), Kind::LegacyEcb);
        }
    }
}

#[test]
fn what_keyward_writes_wso2_reads() {
    let mut java = Wso2Java::start();
    let a = material(KEY_A);
    for plaintext in plaintexts() {
        let mut values = vec![(
            "keyward's own form".to_owned(),
            wso2::encrypt(&a, &plaintext).expect("encrypts"),
        )];
        for (iv_bytes, iv_length) in IV_LENGTHS {
            for with_key_id in [true, false] {
                let value =
                    wso2::encrypt_as(&a, &plaintext, iv_length, with_key_id).expect("encrypts");
                values.push((format!("IV {iv_bytes}, key id {with_key_id}"), value));
            }
        }
        let legacy = wso2::encrypt_legacy_ecb(&a, &plaintext).expect("encrypts");
        values.push(("legacy AES/ECB".to_owned(), legacy));
        for (form, value) in values {
            let case = format!("{form}, {} bytes", plaintext.len());
            // A node on key A with key ids off reads every form under A.
            let read = java.decrypt(KEY_A, None, false, &value);
            assert_eq!(read.as_deref(), Ok(&plaintext[..]), "{case}");
            // With key ids on, key A, old_key unset: everything under A still reads.
            let read = java.decrypt(KEY_A, None, true, &value);
            assert_eq!(read.as_deref(), Ok(&plaintext[..]), "{case}");
            if !plaintext.is_empty() {
                assert!(
                    java.decrypt(KEY_B, None, false, &value).is_err(),
                    "{case}: B reads it"
                );
            }
        }
    }
}

/// The `[encryption]` settings of a node in each phase of a rotation from A to B:
/// (phase, `key`, `old_key`, `enable_key_id`).
const PHASES: [(&str, &str, Option<&str>, bool); 6] = [
    ("before", KEY_A, None, true),
    ("staged", KEY_A, Some(KEY_B), true),
    ("promoted", KEY_B, Some(KEY_A), true),
    ("retired", KEY_B, None, true),
    ("staged, key ids off", KEY_A, Some(KEY_B), false),
    ("promoted, key ids off", KEY_B, Some(KEY_A), false),
];

#[test]
fn keyward_reads_exactly_what_a_wso2_node_reads_in_every_phase_of_a_rotation() {
    let mut java = Wso2Java::start();
    let plaintext = b"client-secret-0123456789";
    // Rows as a table holds them mid-rotation, written by both sides.
    let mut rows = Vec::new();
    for key in [KEY_A, KEY_B] {
        let under = material(key);
        for (iv_bytes, iv_length) in IV_LENGTHS {
            for with_key_id in [true, false] {
                let shape = format!("IV {iv_bytes}, key id {with_key_id}");
                let java_row = java.encrypt(key, with_key_id, iv_bytes, plaintext);
                rows.push((format!("WSO2's, {shape}, under {}", &key[..4]), java_row));
                let own =
                    wso2::encrypt_as(&under, plaintext, iv_length, with_key_id).expect("encrypts");
                rows.push((format!("keyward's, {shape}, under {}", &key[..4]), own));
            }
        }
        let legacy = java.encrypt_legacy(key, plaintext);
        rows.push((format!("WSO2's legacy, under {}", &key[..4]), legacy));
        let legacy = wso2::encrypt_legacy_ecb(&under, plaintext).expect("encrypts");
        rows.push((format!("keyward's legacy, under {}", &key[..4]), legacy));
        rows.push(("empty".to_owned(), java.encrypt(key, true, 128, b"")));
    }
    let (mut readable, mut unreadable) = (0, 0);
    for (phase, key, old_key, enable_key_id) in PHASES {
        let key_material = material(key);
        let old_material = old_key.map(material);
        let settings = EncryptionSettings {
            key: &key_material,
            old_key: old_material.as_ref(),
            enable_key_id,
        };
        for (row, value) in &rows {
            let wso2_reads = java.decrypt(key, old_key, enable_key_id, value).ok();
            let keyward_reads = StoredValue::parse(value)
                .expect("every row parses")
                .decrypt_as_wso2(&settings)
                .ok()
                .map(|read| read.to_vec());
            assert_eq!(keyward_reads, wso2_reads, "{phase}: {row}");
            match wso2_reads {
                Some(_) => readable += 1,
                None => unreadable += 1,
            }
        }
    }
    // Both outcomes occur, so the comparison is not vacuous.
    assert!(
        readable > 0 && unreadable > 0,
        "{readable} read, {unreadable} did not"
    );
}
