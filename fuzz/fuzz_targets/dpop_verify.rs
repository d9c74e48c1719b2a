//! DPoP verification, claims included, on arbitrary input.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use popkey::verify::dpop::DpopVerifier;
use popkey::verify::token::DecodeOnly;
use popkey::verify::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let v = DpopVerifier::new(Arc::new(DecodeOnly));
        let api = Request::new("GET", "https://api.example.com/x")
            .header("DPoP", text)
            .header("Authorization", "DPoP a.b.c");
        let _ = v.verify_at(&api, 1_800_000_000);
        let token = Request::new("POST", "https://api.example.com/token").header("DPoP", text);
        let _ = v.verify_at(&token, 1_800_000_000);
    }
});
