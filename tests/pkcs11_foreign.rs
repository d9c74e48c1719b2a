//! A module that another library in the process initialized first: popkey
//! uses it but never finalizes it to recover. In a test process of its own
//! (this test initializes SoftHSM before popkey does).
#![cfg(feature = "pkcs11")]

use popkey_testkit::common;
use popkey_testkit::softhsm;

use popkey::shr::SignedHttpRequest;
use popkey::{CreateOptions, Error, PopCryptoProvider, PopKey};
use serde_json::Value;
use softhsm::{cryptoki, slot_of, token};

#[test]
fn module_of_another_library_is_never_reset() {
    let _serial = softhsm::serial();
    let t = token();
    // "Another library": C_Initialize before popkey, and a session of its own.
    let p = cryptoki();
    let s = p.open_ro_session(slot_of(&p, &t.label)).unwrap();
    let key = PopKey::create(&t.uri("k"), &CreateOptions::new()).unwrap();
    let shr = SignedHttpRequest::new("GET", "https://api.example.com/r", "at")
        .unwrap()
        .sign(&key)
        .unwrap();
    let jwk: Value = serde_json::from_str(key.canonical_public_key_jwk()).unwrap();
    common::ring_verify(&shr, &jwk);
    // A missing key would make popkey reset a module of its own; not this one.
    match PopKey::open(&t.uri("absent")) {
        Err(Error::KeyNotFound(m)) => {
            assert!(m.contains("another library"), "{m}")
        }
        other => panic!("expected KeyNotFound, got {other:?}"),
    }
    s.get_session_info()
        .expect("popkey finalized a module it did not initialize");
    let shr = SignedHttpRequest::new("GET", "https://api.example.com/r", "at")
        .unwrap()
        .sign(&key)
        .unwrap();
    common::ring_verify(&shr, &jwk);
}
