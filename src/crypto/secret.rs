//! Secret material in memory, and its generation from the operating system's CSPRNG.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Bytes that must stay secret: zeroized when dropped, never printed (`Debug` shows
/// `[redacted]`; there is no `Display`), compared only in constant time.
#[derive(Clone)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps `bytes`, taking ownership so no unzeroized copy is left behind.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret itself. Call only where the bytes are used, never to log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Constant-time equality with `other`.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        self.0.as_slice().ct_eq(other).into()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes([redacted])")
    }
}

/// The operating system's random number generator failed.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(getrandom::Error);

/// Fills `buffer` from the operating system's CSPRNG.
pub fn fill_random(buffer: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buffer).map_err(RandomError)
}

/// `len` bytes from the operating system's CSPRNG.
pub fn random_bytes(len: usize) -> Result<SecretBytes, RandomError> {
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    getrandom::fill(&mut bytes).map_err(RandomError)?;
    Ok(SecretBytes(bytes))
}

/// A client secret with `entropy_bytes` bytes of entropy, as URL-safe base64 text (no
/// padding) — the form client applications send.
pub fn generate_client_secret(entropy_bytes: usize) -> Result<SecretBytes, RandomError> {
    let raw = random_bytes(entropy_bytes)?;
    Ok(SecretBytes::new(
        URL_SAFE_NO_PAD.encode(raw.expose()).into_bytes(),
    ))
}

/// A client id of 128 random bits, as URL-safe base64 (22 characters).
pub fn generate_client_id() -> Result<String, RandomError> {
    let raw = random_bytes(16)?;
    Ok(URL_SAFE_NO_PAD.encode(raw.expose()))
}

/// Whether `id` is a client id as keyward issues and accepts them: 8 to 255 characters
/// of `A-Z a-z 0-9 . _ ~ -` (what `spec.clientId` allows, and what generated ids are).
/// Client ids are shown in status and events, so nothing else read from a Secret is
/// taken for one.
pub fn valid_client_id(id: &str) -> bool {
    (8..=255).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_client_ids_are_valid_and_text_with_spaces_is_not() {
        assert!(valid_client_id(&generate_client_id().expect("random")));
        assert!(!valid_client_id("legacy app"));
        assert!(!valid_client_id("short"));
        assert!(!valid_client_id(&"a".repeat(256)));
    }

    #[test]
    fn debug_never_shows_the_bytes() {
        let secret = SecretBytes::new(b"hunter2-hunter2".to_vec());
        let printed = format!("{secret:?} {:?}", Some(&secret));
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn generated_secrets_carry_the_requested_entropy_in_url_safe_text() {
        let secret = generate_client_secret(32).expect("randomness");
        // 32 bytes of entropy are 43 base64 characters without padding.
        assert_eq!(secret.expose().len(), 43);
        assert!(
            secret
                .expose()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        );
        let other = generate_client_secret(32).expect("randomness");
        assert!(
            !secret.ct_eq(other.expose()),
            "two generated secrets differ"
        );
    }

    #[test]
    fn generated_client_ids_have_128_bits_and_are_url_safe() {
        let id = generate_client_id().expect("randomness");
        assert_eq!(id.len(), 22);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(id, generate_client_id().expect("randomness"));
    }

    #[test]
    fn constant_time_equality_compares_whole_values() {
        let secret = SecretBytes::new(b"abc".to_vec());
        assert!(secret.ct_eq(b"abc"));
        assert!(!secret.ct_eq(b"abd"));
        assert!(!secret.ct_eq(b"ab"));
        assert!(!secret.ct_eq(b"abcd"));
    }
}
