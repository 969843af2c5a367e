//! Verifier records are read from Secrets anyone with write access can edit: parsing
//! arbitrary data must fail cleanly, never panic.
#![no_main]

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use keyward::crypto::VerifierRecord;
use libfuzzer_sys::fuzz_target;

const KEYS: [&str; 10] = [
    "clientId", "secretVersion", "algorithm", "hash", "clientSecret", "encryptedClientSecret",
    "previousAlgorithm", "previousHash", "previousExpiresAt", "previousEncryptedClientSecret",
];

fuzz_target!(|data: &[u8]| {
    // Split the input into up to ten values, one per record key, at 0xff bytes.
    let data: BTreeMap<String, ByteString> = data
        .split(|byte| *byte == 0xff)
        .zip(KEYS)
        .filter(|(value, _)| !value.is_empty())
        .map(|(value, key)| (key.to_owned(), ByteString(value.to_vec())))
        .collect();
    let _ = VerifierRecord::from_data(&data);
});
