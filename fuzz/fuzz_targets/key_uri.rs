//! Key-URI parsing for every scheme.
#![no_main]
use libfuzzer_sys::fuzz_target;
use popkey::KeyUri;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Parsing, and the redacting Debug form of whatever parses.
        if let Ok(uri) = KeyUri::parse(text) {
            let _ = format!("{uri:?}");
        }
    }
});
