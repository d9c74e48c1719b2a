//! SHR verification, claims included, on arbitrary input.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use popkey::verify::shr::ShrVerifier;
use popkey::verify::token::DecodeOnly;
use popkey::verify::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let v = ShrVerifier::new(Arc::new(DecodeOnly));
        let req = Request::new("GET", "https://api.example.com/x?a=1")
            .header("X-A", "1")
            .body(b"{}");
        let _ = v.verify_at(text, &req, 1_800_000_000);
        // MSAL.js shapes (`q = [[], raw]`, case-insensitive `p`), and
        // look-alike query names and header names.
        let compat = ShrVerifier::new(Arc::new(DecodeOnly))
            .msal_js_compat()
            .require_query(false)
            .require_headers(&["x-a"], false);
        let req = Request::new("GET", "https://api.example.com/X/?a=1&%61=2&a+b=%2F")
            .header("X-A", "1")
            .header("x_a", "2");
        let _ = compat.verify_at(text, &req, 1_800_000_000);
    }
});
