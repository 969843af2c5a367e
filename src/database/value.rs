//! What one cell holds, and what the rewrite does with it: pure, no I/O.

use std::ops::Range;

use super::json_path::{self, Found};
use crate::crypto::KeyMaterial;
use crate::crypto::wso2::{self, EncryptionSettings, Field, KeyId, Kind, StoredValue, Wso2Error};

/// A cell's text, read for WSO2 ciphertext (whole, or at a JSON path).
pub(crate) enum Classified {
    /// Empty, or the JSON path is not set: nothing to count or rewrite.
    Absent,
    /// Not WSO2 ciphertext (a plaintext value, or not JSON at the path).
    NotCiphertext,
    /// WSO2 ciphertext.
    Ciphertext(StoredValue),
}

/// Reads `text` (a cell) as WSO2 ciphertext, at `path` when given.
pub(crate) fn classify(text: &str, path: Option<&[&str]>) -> Classified {
    match ciphertext_text(text, path) {
        Located::Found(ciphertext, _) => match StoredValue::parse(&ciphertext) {
            Ok(value) => Classified::Ciphertext(value),
            Err(_) => Classified::NotCiphertext,
        },
        Located::Absent => Classified::Absent,
        Located::NotAString => Classified::NotCiphertext,
    }
}

/// What the rewrite does with a cell.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Nothing to rewrite (empty, NULL, path not set).
    Absent,
    /// Not WSO2 ciphertext: left as it is.
    NotCiphertext,
    /// AES-GCM under the write key with its key id already (or the empty plaintext,
    /// which every key reads).
    Current,
    /// RSA: no symmetric key reads it.
    Rsa,
    /// WSO2's rule names a key that does not decrypt it.
    Undecryptable(Wso2Error),
    /// The cell's new text.
    Write(String),
}

/// Decides the cell `text`: a value not yet AES-GCM with `write`'s key id is decrypted as
/// a WSO2 node with `read` decrypts it and encrypted under `write`, with its key id.
pub(crate) fn decide(
    text: &str,
    path: Option<&[&str]>,
    read: &EncryptionSettings<'_>,
    write: &KeyMaterial,
    write_id: &KeyId,
) -> Decision {
    let (ciphertext, span) = match ciphertext_text(text, path) {
        Located::Found(ciphertext, span) => (ciphertext, span),
        Located::Absent => return Decision::Absent,
        Located::NotAString => return Decision::NotCiphertext,
    };
    let value = match StoredValue::parse(&ciphertext) {
        Ok(value) => value,
        Err(error) if shaped_like_wso2(&error) => return Decision::Undecryptable(error),
        Err(_) => return Decision::NotCiphertext,
    };
    match value.kind() {
        Kind::Empty => return Decision::Current,
        Kind::Rsa => return Decision::Rsa,
        Kind::GcmWithKeyId(id) if id == *write_id => return Decision::Current,
        Kind::GcmWithKeyId(_) | Kind::GcmWithoutKeyId | Kind::LegacyEcb => {}
    }
    let plaintext = match value.decrypt_as_wso2(read) {
        Ok(plaintext) => plaintext,
        Err(error) => return Decision::Undecryptable(error),
    };
    let rewritten = match wso2::encrypt(write, &plaintext) {
        Ok(rewritten) => rewritten,
        Err(error) => return Decision::Undecryptable(error),
    };
    match span {
        None => Decision::Write(rewritten),
        Some(span) => match json_path::replace(text, &span, &rewritten) {
            Some(document) => Decision::Write(document),
            None => Decision::NotCiphertext,
        },
    }
}

/// Whether a value that does not parse is nevertheless WSO2's (Base64 of a JSON object):
/// such a value is one WSO2 cannot read either, named rather than passed over as a
/// plaintext, since a rotation that skipped it could retire the key it needs.
fn shaped_like_wso2(error: &Wso2Error) -> bool {
    !matches!(
        error,
        Wso2Error::Base64(Field::Value)
            | Wso2Error::NotJson(Field::Outer)
            | Wso2Error::TooLong { .. }
    )
}

/// Where a cell's ciphertext text is.
enum Located {
    /// Empty, or the JSON path is not set.
    Absent,
    /// The JSON path does not lead to a string.
    NotAString,
    /// The text, and for a JSON path the byte range of its string in the document.
    Found(String, Option<Range<usize>>),
}

/// The ciphertext text of a cell, at `path` when given.
fn ciphertext_text(text: &str, path: Option<&[&str]>) -> Located {
    let Some(path) = path else {
        return if text.is_empty() {
            Located::Absent
        } else {
            Located::Found(text.to_owned(), None)
        };
    };
    if text.trim().is_empty() {
        return Located::Absent;
    }
    match json_path::find(text, path) {
        Found::String(located) if located.content.is_empty() => Located::Absent,
        Found::String(located) => Located::Found(located.content, Some(located.span)),
        Found::Absent => Located::Absent,
        Found::NotAString => Located::NotAString,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::wso2::IvLength;

    fn key(byte: u8) -> KeyMaterial {
        KeyMaterial::parse(hex::encode([byte; 32]).as_bytes()).expect("key")
    }

    #[test]
    fn backfill_and_rotation_rewrite_what_wso2_would_not_read_after_the_step() {
        let (a, b) = (key(1), key(2));
        let a_id = KeyId::of(&a);
        let backfill = EncryptionSettings {
            key: &a,
            old_key: None,
            enable_key_id: true,
        };
        let without_id = wso2::encrypt_as(&a, b"s1", IvLength::Bytes16, false).expect("enc");
        let legacy = wso2::encrypt_legacy_ecb(&a, b"s2").expect("enc");
        let current = wso2::encrypt(&a, b"s3").expect("enc");
        for (value, plaintext) in [(&without_id, b"s1"), (&legacy, b"s2")] {
            let Decision::Write(new) = decide(value, None, &backfill, &a, &a_id) else {
                panic!("rewritten");
            };
            let parsed = StoredValue::parse(&new).expect("parses");
            assert_eq!(parsed.key_id(), Some(&a_id));
            assert_eq!(parsed.iv_length(), Some(IvLength::Bytes128));
            assert_eq!(&parsed.decrypt_with(&a).expect("dec")[..], plaintext);
        }
        assert!(matches!(
            decide(&current, None, &backfill, &a, &a_id),
            Decision::Current
        ));

        let rotation = EncryptionSettings {
            key: &b,
            old_key: Some(&a),
            enable_key_id: true,
        };
        let Decision::Write(new) = decide(&current, None, &rotation, &b, &KeyId::of(&b)) else {
            panic!("rewritten");
        };
        assert_eq!(
            &StoredValue::parse(&new)
                .expect("p")
                .decrypt_with(&b)
                .expect("d")[..],
            b"s3"
        );
        // A key WSO2's rule does not reach is reported, not guessed at.
        let under_other = wso2::encrypt(&key(3), b"x").expect("enc");
        assert!(matches!(
            decide(&under_other, None, &rotation, &b, &KeyId::of(&b)),
            Decision::Undecryptable(_)
        ));
        assert!(matches!(
            decide("plain", None, &rotation, &b, &KeyId::of(&b)),
            Decision::NotCiphertext
        ));
        // Base64 that is no JSON is a plaintext (a token, say); Base64 of a JSON object
        // that is not a valid WSO2 value is WSO2's, broken, and named.
        use base64::Engine;
        let base64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        assert!(matches!(
            decide(&base64("opaque-token"), None, &rotation, &b, &KeyId::of(&b)),
            Decision::NotCiphertext
        ));
        assert!(matches!(
            decide(
                &base64(r#"{"c":"%%%","t":"AES/GCM/NoPadding"}"#),
                None,
                &rotation,
                &b,
                &KeyId::of(&b)
            ),
            Decision::Undecryptable(_)
        ));
        assert!(matches!(
            decide("", None, &rotation, &b, &KeyId::of(&b)),
            Decision::Absent
        ));
    }
}
