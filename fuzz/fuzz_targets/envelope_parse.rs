//! The envelope parser takes untrusted text (anything a user puts in a Secret): it must
//! return an error, never panic, and what it accepts must print back to the same text.
#![no_main]

use keyward::crypto::envelope::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(envelope) = Envelope::parse(text)
    {
        assert_eq!(envelope.to_string(), text, "accepted envelopes are canonical");
    }
});
