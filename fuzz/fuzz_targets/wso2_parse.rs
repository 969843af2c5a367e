//! WSO2 values are read from the API manager's database, which keyward does not control:
//! parsing and decrypting arbitrary data must fail cleanly, never panic, and whatever
//! parses must describe itself consistently.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward::crypto::KeyMaterial;
use keyward::crypto::wso2::{EncryptionSettings, Kind, StoredValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the layer the rest stands for, so the inner JSON and the
    // ciphers are reached without first guessing three layers of Base64.
    let Some((layer, rest)) = data.split_first() else {
        return;
    };
    let text = match layer % 3 {
        0 => match std::str::from_utf8(rest) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        },
        1 => STANDARD.encode(rest),
        _ => {
            let outer = format!(
                r#"{{"c":"{}","t":"AES/GCM/NoPadding"}}"#,
                STANDARD.encode(rest)
            );
            STANDARD.encode(outer)
        }
    };
    let Ok(value) = StoredValue::parse(&text) else {
        return;
    };
    match value.kind() {
        Kind::GcmWithKeyId(id) => assert_eq!(value.key_id(), Some(&id)),
        Kind::GcmWithoutKeyId => assert_eq!(value.key_id(), None),
        Kind::LegacyEcb | Kind::Rsa => assert_eq!(value.iv_length(), None),
        Kind::Empty => {}
    }
    let Ok(key) = KeyMaterial::parse(&[b'a'; 64]) else {
        return;
    };
    let settings = EncryptionSettings {
        key: &key,
        old_key: None,
        enable_key_id: true,
    };
    let _ = value.decrypt_with(&key);
    let _ = value.decrypt_as_wso2(&settings);
});
