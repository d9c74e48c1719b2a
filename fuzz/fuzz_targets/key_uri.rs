//! Key-URI parsing for every scheme.
#![no_main]
use libfuzzer_sys::fuzz_target;
use popkey::KeyUri;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = KeyUri::parse(text);
        let _ = popkey::redact(text);
    }
});
