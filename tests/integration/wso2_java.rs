//! The Java stand-in for WSO2 API Manager 4.7 is faithful on its own: what it writes has the
//! byte layout of docs/wso2-interop.md §3, what it reads follows §2's rule phase by phase, and
//! its hashed records are org.json's bytes (§5). keyward's own WSO2 format is then proved
//! against this program; these tests need no control plane.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};

use crate::support::wso2_java::Wso2Java;

/// Key A, the key before a rotation, as deployment.toml carries it (64 hex characters).
const KEY_A: &str = "3f1c9a0b7e2d4c6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e1f";
/// Key B, the key a rotation moves to.
const KEY_B: &str = "c0ffee00deadbeef0123456789abcdef00112233445566778899aabbccddeeff";

/// A plaintext no string type could carry: invalid UTF-8, NUL and every byte value.
fn binary_plaintext() -> Vec<u8> {
    (0..=255u8).rev().chain([0xc3, 0x28, 0x00, 0xff]).collect()
}

/// The outer JSON text of a stored value, which must be padded standard Base64.
fn outer_text(value: &str) -> String {
    assert_eq!(value.len() % 4, 0, "stored value is padded Base64: {value}");
    let bytes = STANDARD
        .decode(value)
        .expect("stored value is standard Base64");
    String::from_utf8(bytes).expect("outer JSON is UTF-8")
}

/// The inner JSON text inside an AES-GCM value's outer `c`.
fn inner_text(outer: &Value) -> String {
    let c = outer["c"].as_str().expect("outer c");
    String::from_utf8(STANDARD.decode(c).expect("c is Base64")).expect("inner JSON is UTF-8")
}

/// Keys of a JSON object text in the order they are written.
fn key_order(text: &str) -> Vec<String> {
    // serde_json's preserve_order is off here, so read the order from the text itself.
    let object: Value = serde_json::from_str(text).expect("a JSON object");
    let mut keys: Vec<(usize, String)> = object
        .as_object()
        .expect("an object")
        .keys()
        .map(|key| {
            (
                text.find(&format!("\"{key}\":")).expect("key in text"),
                key.clone(),
            )
        })
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, key)| key).collect()
}

fn expected_key_id(hex_key: &str) -> String {
    STANDARD.encode(Sha256::digest(hex::decode(hex_key).expect("hex key")))
}

#[test]
fn java_stand_in_round_trips_both_iv_lengths_with_and_without_key_id() {
    let mut java = Wso2Java::start();
    let plaintexts: [&[u8]; 4] = [b"", b"client-secret", &binary_plaintext(), &[0u8; 1000]];
    for iv_length in [128, 16] {
        for enable_key_id in [true, false] {
            for plaintext in plaintexts {
                let value = java.encrypt(KEY_A, enable_key_id, iv_length, plaintext);
                let read = java.decrypt(KEY_A, None, enable_key_id, &value);
                assert_eq!(
                    read.as_deref(),
                    Ok(plaintext),
                    "round trip, IV {iv_length}, key id {enable_key_id}, {} bytes",
                    plaintext.len()
                );
            }
        }
    }
    // Two values of one plaintext never share an IV.
    let first = java.encrypt(KEY_A, true, 128, b"same");
    let second = java.encrypt(KEY_A, true, 128, b"same");
    assert_ne!(first, second);
}

#[test]
fn java_stand_in_writes_wso2s_layout_byte_for_byte() {
    let mut java = Wso2Java::start();
    let plaintext = binary_plaintext();
    for iv_length in [128usize, 16] {
        for enable_key_id in [true, false] {
            let value = java.encrypt(KEY_A, enable_key_id, iv_length, &plaintext);
            let outer_json = outer_text(&value);
            assert_eq!(key_order(&outer_json), ["c", "t", "iv"], "{outer_json}");
            // Gson writes no spaces and escapes no HTML characters.
            assert!(outer_json.starts_with("{\"c\":\""), "{outer_json}");
            assert!(!outer_json.contains(' ') && !outer_json.contains("\\u003d"));
            let outer: Value = serde_json::from_str(&outer_json).expect("outer JSON");
            assert_eq!(outer["t"], "AES/GCM/NoPadding");

            let inner_json = inner_text(&outer);
            let expected_keys: &[&str] = if enable_key_id {
                &["cipher", "initializationVector", "keyId"]
            } else {
                &["cipher", "initializationVector"]
            };
            assert_eq!(key_order(&inner_json), expected_keys, "{inner_json}");
            let inner: Value = serde_json::from_str(&inner_json).expect("inner JSON");
            if enable_key_id {
                assert_eq!(inner["keyId"], expected_key_id(KEY_A));
            }

            let iv = STANDARD
                .decode(inner["initializationVector"].as_str().expect("IV"))
                .expect("IV is Base64");
            assert_eq!(iv.len(), iv_length);
            assert_eq!(
                outer["iv"], inner["initializationVector"],
                "outer iv repeats the inner"
            );
            assert_eq!(
                iv[6] >> 4,
                1,
                "bytes 0-15 are a time-based (version 1) UUID"
            );
            assert_eq!(iv[8] >> 6, 0b10, "RFC 4122 variant");
            assert!(
                iv[16..].iter().all(|byte| *byte == 0),
                "bytes 16.. are zero"
            );

            let cipher = STANDARD
                .decode(inner["cipher"].as_str().expect("cipher"))
                .expect("cipher is Base64");
            assert_eq!(
                cipher.len(),
                plaintext.len() + 16,
                "ciphertext then a 128-bit tag"
            );
        }
    }
    assert_eq!(java.key_id(KEY_A), expected_key_id(KEY_A));
    // Upper-case hex is the same key (WSO2 decodes either case).
    assert_eq!(java.key_id(&KEY_A.to_uppercase()), expected_key_id(KEY_A));
}

#[test]
fn java_stand_in_writes_an_empty_plaintext_without_a_gcm_call() {
    let mut java = Wso2Java::start();
    let value = java.encrypt(KEY_A, true, 128, b"");
    let outer: Value = serde_json::from_str(&outer_text(&value)).expect("outer JSON");
    let inner: Value = serde_json::from_str(&inner_text(&outer)).expect("inner JSON");
    assert_eq!(inner["cipher"], "", "no tag either: GCM was never called");
    // With no tag there is nothing to authenticate: WSO2 reads "" under any AES key, so an
    // empty value reads in every phase and proves nothing about which key it is under.
    assert_eq!(java.decrypt(KEY_B, None, true, &value), Ok(Vec::new()));
}

/// The four kinds of row a table holds around a rotation from A to B.
struct Rows {
    a_with_id: String,
    b_with_id: String,
    a_without_id: String,
    b_without_id: String,
}

/// A phase of docs/wso2-interop.md §2's table and what it must read of each kind of row.
struct Phase {
    name: &'static str,
    key: &'static str,
    old_key: Option<&'static str>,
    reads: [bool; 4],
}

const PHASES: [Phase; 4] = [
    Phase {
        name: "before",
        key: KEY_A,
        old_key: None,
        reads: [true, false, true, false],
    },
    Phase {
        name: "staged",
        key: KEY_A,
        old_key: Some(KEY_B),
        reads: [true, true, false, true],
    },
    Phase {
        name: "promoted",
        key: KEY_B,
        old_key: Some(KEY_A),
        reads: [true, true, true, false],
    },
    Phase {
        name: "retired",
        key: KEY_B,
        old_key: None,
        reads: [false, true, false, true],
    },
];

#[test]
fn java_stand_in_reads_each_rotation_phase_as_wso2s_decrypt_rule_says() {
    let mut java = Wso2Java::start();
    let plaintext = b"token-under-rotation";
    for iv_length in [128, 16] {
        let rows = Rows {
            a_with_id: java.encrypt(KEY_A, true, iv_length, plaintext),
            b_with_id: java.encrypt(KEY_B, true, iv_length, plaintext),
            a_without_id: java.encrypt(KEY_A, false, iv_length, plaintext),
            b_without_id: java.encrypt(KEY_B, false, iv_length, plaintext),
        };
        let named = [
            ("A's id", &rows.a_with_id),
            ("B's id", &rows.b_with_id),
            ("no id, under A", &rows.a_without_id),
            ("no id, under B", &rows.b_without_id),
        ];
        for phase in &PHASES {
            for ((row, value), expected) in named.iter().zip(phase.reads) {
                let read = java.decrypt(phase.key, phase.old_key, true, value);
                assert_eq!(
                    read.is_ok(),
                    expected,
                    "phase {}, row with {row}, IV {iv_length}: {read:?}",
                    phase.name
                );
                if let Ok(read) = read {
                    assert_eq!(read, plaintext);
                }
            }
        }
        // A blank old_key is unset, which is key: staged with "" reads as before.
        assert!(
            java.decrypt(KEY_A, Some(""), true, &rows.a_without_id)
                .is_ok()
        );
        // With enable_key_id off, old_key is ignored and every value is read with key.
        assert!(
            java.decrypt(KEY_A, Some(KEY_B), false, &rows.a_with_id)
                .is_ok()
        );
        assert!(
            java.decrypt(KEY_A, Some(KEY_B), false, &rows.a_without_id)
                .is_ok()
        );
        assert!(
            java.decrypt(KEY_B, Some(KEY_A), false, &rows.a_with_id)
                .is_err()
        );
    }
}

#[test]
fn java_stand_in_ignores_an_outer_kid_and_refuses_tampering_and_unpadded_base64() {
    let mut java = Wso2Java::start();
    let value = java.encrypt(KEY_A, true, 128, b"payload");
    let mut outer: Value = serde_json::from_str(&outer_text(&value)).expect("outer JSON");

    // An outer kid naming B changes nothing: only the inner keyId counts.
    outer["kid"] = Value::String(expected_key_id(KEY_B));
    let with_kid = STANDARD.encode(outer.to_string());
    assert_eq!(
        java.decrypt(KEY_A, Some(KEY_B), true, &with_kid),
        Ok(b"payload".to_vec())
    );

    // A flipped ciphertext bit fails the tag.
    let mut inner: Value = serde_json::from_str(&inner_text(&outer)).expect("inner JSON");
    let mut cipher = STANDARD
        .decode(inner["cipher"].as_str().expect("cipher"))
        .expect("Base64");
    cipher[0] ^= 1;
    inner["cipher"] = Value::String(STANDARD.encode(&cipher));
    outer["c"] = Value::String(STANDARD.encode(inner.to_string()));
    let tampered = STANDARD.encode(outer.to_string());
    let error = java
        .decrypt(KEY_A, None, true, &tampered)
        .expect_err("tampered value");
    assert!(error.contains("tag mismatch"), "{error}");

    // WSO2's decoder would drop a trailing partial group; the stand-in refuses it.
    let padded = (1..=3)
        .map(|length| java.encrypt(KEY_A, true, 128, &vec![7u8; length]))
        .find(|value| value.ends_with('='))
        .expect("one of three lengths needs padding");
    let unpadded = padded.trim_end_matches('=');
    let error = java
        .decrypt(KEY_A, None, true, unpadded)
        .expect_err("unpadded value");
    assert!(error.contains("not padded Base64"), "{error}");
}

#[test]
fn java_stand_in_reads_legacy_aes_ecb_only_with_the_current_key() {
    let mut java = Wso2Java::start();
    let plaintext = binary_plaintext();
    let value = java.encrypt_legacy(KEY_A, &plaintext);
    let outer_json = outer_text(&value);
    assert_eq!(key_order(&outer_json), ["c", "t"], "{outer_json}");
    let outer: Value = serde_json::from_str(&outer_json).expect("outer JSON");
    assert_eq!(outer["t"], "AES");
    let cipher = STANDARD
        .decode(outer["c"].as_str().expect("c"))
        .expect("Base64");
    assert_eq!(
        cipher.len(),
        (plaintext.len() / 16 + 1) * 16,
        "ECB with PKCS#5 padding"
    );

    for phase in &PHASES {
        let read = java.decrypt(phase.key, phase.old_key, true, &value);
        // Read with key only, never old_key: it stops reading at promotion.
        assert_eq!(
            read.is_ok(),
            phase.key == KEY_A,
            "phase {}: {read:?}",
            phase.name
        );
        if let Ok(read) = read {
            assert_eq!(read, plaintext);
        }
    }
    assert_eq!(java.decrypt(KEY_A, None, false, &value), Ok(plaintext));

    let empty = java.encrypt_legacy(KEY_A, b"");
    assert_eq!(outer_text(&empty), r#"{"c":"","t":"AES"}"#);
    assert_eq!(java.decrypt(KEY_A, None, true, &empty), Ok(Vec::new()));
}

#[test]
fn java_stand_in_fails_rsa_values_and_keys_that_are_not_hex() {
    let mut java = Wso2Java::start();
    let rsa = STANDARD.encode(format!(
        r#"{{"c":"{}","t":"RSA/ECB/OAEPwithSHA1andMGF1Padding","tp":"00ff","tpd":"SHA-1"}}"#,
        STANDARD.encode([0x5au8; 256])
    ));
    for phase in &PHASES {
        let read = java.decrypt(phase.key, phase.old_key, true, &rsa);
        assert!(
            read.is_err(),
            "phase {}: an RSA value never reads with an AES key",
            phase.name
        );
    }

    // A 64-character key with a non-hex character leaves WSO2 with no crypto provider.
    let not_hex = format!("{}g", &KEY_A[..63]);
    let value = java.encrypt(KEY_A, true, 128, b"x");
    for (key, old_key) in [(not_hex.as_str(), None), (KEY_A, Some(not_hex.as_str()))] {
        let error = java
            .decrypt(key, old_key, true, &value)
            .expect_err("invalid key");
        assert!(error.contains("not hex"), "{error}");
        assert!(
            !error.contains(KEY_A),
            "errors never carry key material: {error}"
        );
    }
}

#[test]
fn java_stand_in_renders_hashed_client_secrets_as_org_json_does() {
    let mut java = Wso2Java::start();
    let secret = b"s3cr3t-client-secret";
    let sha256 = hex::encode(Sha256::digest(secret));
    // org.json 20250517's JSONObject keeps a HashMap; for these two keys it writes hash
    // first, and the algorithm exactly as configured.
    assert_eq!(
        java.hash(secret, "SHA-256"),
        format!(r#"{{"hash":"{sha256}","algorithm":"SHA-256"}}"#)
    );
    let sha512 = hex::encode(Sha512::digest(secret));
    assert_eq!(
        java.hash(secret, "SHA-512"),
        format!(r#"{{"hash":"{sha512}","algorithm":"SHA-512"}}"#)
    );
}
