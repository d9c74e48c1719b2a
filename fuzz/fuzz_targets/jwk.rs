//! Public-JWK parsing and validation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use popkey::{Algorithm, PublicJwk};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = PublicJwk::parse(text) {
            // A key that parses has a canonical form that parses to itself.
            let again = PublicJwk::parse(key.canonical_json()).expect("canonical JWK reparses");
            assert_eq!(again.thumbprint(), key.thumbprint());
            let _ = key.verify(Algorithm::ES256, b"m", &[0u8; 64]);
        }
    }
});
