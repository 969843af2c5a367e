//! The cryptography of one object, through keyward's public API: hashing a client secret
//! for its verifier record (each issued OAuthClient), and sealing and opening one value
//! under a keyring (each encrypted client, and each value a rotation re-encrypts).
//!
//! `cargo bench --bench crypto` measures; `cargo test` runs each once. The scale
//! benchmark (`benches/scale`) times the same calls beside an API round trip measured in
//! the same run, which is the ratio the performance targets speak of.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::jiff::Timestamp;
use keyward::crypto::envelope::{Context, Envelope};
use keyward::crypto::secret::generate_client_secret;
use keyward::crypto::{Credential, HashAlgorithm, KeyMaterial, Keyring};

/// The default `spec.secretLength`: 32 bytes of entropy.
const SECRET_ENTROPY: usize = 32;

fn hash(criterion: &mut Criterion) {
    let secret = generate_client_secret(SECRET_ENTROPY).expect("randomness");
    let mut group = criterion.benchmark_group("hash");
    for algorithm in [HashAlgorithm::Sha256, HashAlgorithm::Sha512] {
        group.bench_function(algorithm.as_str(), |bench| {
            bench.iter(|| Credential::hashed(algorithm, black_box(secret.expose())));
        });
    }
    group.finish();
}

fn envelope(criterion: &mut Criterion) {
    let keyring = Keyring::new(
        "bench",
        KeyMaterial::generate().expect("randomness"),
        Timestamp::now(),
    );
    let context = Context {
        namespace: "default",
        name: "portal-verifier",
        field: "encryptedClientSecret",
    };
    let secret = generate_client_secret(SECRET_ENTROPY).expect("randomness");
    let sealed = Envelope::seal(&keyring, &context, secret.expose()).expect("seals");
    let text = sealed.to_string();
    criterion.bench_function("seal", |bench| {
        bench.iter(|| Envelope::seal(&keyring, black_box(&context), black_box(secret.expose())));
    });
    criterion.bench_function("open", |bench| {
        bench.iter(|| black_box(&sealed).open(&keyring, black_box(&context)));
    });
    // What the re-encryption Job does per value: parse, open, seal, format.
    criterion.bench_function("reencrypt-one-value", |bench| {
        bench.iter(|| {
            let envelope = Envelope::parse(black_box(&text)).expect("parses");
            let plaintext = envelope.open(&keyring, &context).expect("opens");
            Envelope::seal(&keyring, &context, plaintext.expose())
                .expect("seals")
                .to_string()
        });
    });
}

criterion_group!(benches, hash, envelope);
criterion_main!(benches);
