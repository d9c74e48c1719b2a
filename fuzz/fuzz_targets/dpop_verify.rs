//! DPoP verification, claims included, on arbitrary input.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use popkey::verify::dpop::DpopVerifier;
use popkey::verify::token::DecodeOnly;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let v = DpopVerifier::new(Arc::new(DecodeOnly));
        let _ = v.verify_at(&[text], "GET", "https://api.example.com/x", Some("a.b.c"), 1_800_000_000);
        let _ = v.verify_at(&[text], "POST", "https://api.example.com/token", None, 1_800_000_000);
    }
});
