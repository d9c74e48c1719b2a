//! Compact-JWS parsing: any input yields a value or a typed error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use popkey::verify::ParsedJws;
use popkey::Algorithm;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(jws) = ParsedJws::parse(text, &Algorithm::ALL) {
            let _ = jws.str_claim("jti");
            let _ = jws.time_claim("iat");
        }
    }
});
