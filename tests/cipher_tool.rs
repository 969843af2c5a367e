//! The cipher tool as a platform engineer uses it: generate a keyring, encrypt a value
//! for one place, decrypt it there, and see it refused anywhere else.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn keyward(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyward runs");
    let written = child.stdin.take().expect("stdin").write_all(stdin);
    // A command that refuses its arguments exits before it reads: what it says and how
    // it exits are what the tests look at.
    if let Err(error) = written {
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::BrokenPipe,
            "stdin written: {error}"
        );
    }
    child.wait_with_output().expect("keyward exits")
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

#[test]
fn encrypt_then_decrypt_round_trips_and_a_moved_ciphertext_is_refused() {
    let dir = std::env::temp_dir().join(format!("keyward-cipher-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let keyring = keyward(&["genkey", "--output", "keyring", "--name", "apim"], b"");
    assert!(keyring.status.success());
    std::fs::write(dir.join("keyring.json"), &keyring.stdout).expect("keyring written");
    let keyring_path = path(&dir, "keyring.json");

    let here = [
        "--keyring",
        keyring_path.as_str(),
        "--context",
        "apps/portal-verifier/clientSecret",
    ];
    let encrypted = keyward(&[&["encrypt"], &here[..]].concat(), b"the value\n");
    assert!(
        encrypted.status.success(),
        "{}",
        String::from_utf8_lossy(&encrypted.stderr)
    );
    let envelope = String::from_utf8(encrypted.stdout).expect("UTF-8");
    assert!(
        envelope.starts_with("keyward:v1:apim:1:") && !envelope.contains("the value"),
        "{envelope}"
    );

    let decrypted = keyward(&[&["decrypt"], &here[..]].concat(), envelope.as_bytes());
    assert!(
        decrypted.status.success(),
        "{}",
        String::from_utf8_lossy(&decrypted.stderr)
    );
    assert_eq!(decrypted.stdout, b"the value");

    let elsewhere = [
        "decrypt",
        "--keyring",
        keyring_path.as_str(),
        "--context",
        "apps/other-secret/clientSecret",
    ];
    let refused = keyward(&elsewhere, envelope.as_bytes());
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("belongs to another Secret or field"),
        "{message}"
    );
    assert!(!message.contains("the value"));

    let kek = keyward(&["genkey"], b"");
    assert_eq!(
        String::from_utf8_lossy(&kek.stdout).trim().len(),
        64,
        "64 hex characters"
    );
    let bad_context = keyward(
        &[
            "encrypt",
            "--keyring",
            keyring_path.as_str(),
            "--context",
            "portal",
        ],
        b"x",
    );
    assert!(String::from_utf8_lossy(&bad_context.stderr).contains("NAMESPACE/NAME/FIELD"));
    std::fs::remove_dir_all(&dir).expect("temp dir removed");
}
