//! Proofs and access tokens made by joserfc (Python), verified by popkey.
use super::VerifyParts;

use std::process::Command;
use std::sync::Arc;

use popkey::verify::dpop::DpopVerifier;
use popkey::verify::shr::ShrVerifier;
use popkey::verify::token::JwksValidator;
use popkey::verify::{ErrorKind, Request};
use serde_json::Value;

#[test]
fn proofs_made_by_joserfc_verify() {
    super::common::joserfc_verify(&[]); // asserts Python and joserfc are present
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/make_proofs.py");
    let out = Command::new("python3").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let validator = Arc::new(
        JwksValidator::from_jwks(&doc["jwks"].to_string())
            .unwrap()
            .issuer("https://as.example")
            .audience("api"),
    );
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let s = |k: &str| case[k].as_str().unwrap();
        let now = case["now"].as_u64().unwrap();
        if s("kind") == "dpop" {
            let v = DpopVerifier::new(validator.clone())
                .verify_parts(
                    &[s("proof")],
                    s("method"),
                    s("url"),
                    Some(s("access_token")),
                    now,
                )
                .unwrap_or_else(|e| panic!("{} DPoP from joserfc rejected: {e}", s("alg")));
            assert_eq!(v.jkt, s("jkt"));
            // And the same proof for another URL is refused.
            let e = DpopVerifier::new(validator.clone())
                .verify_parts(
                    &[s("proof")],
                    "GET",
                    "https://api.example.com/v2",
                    Some(s("access_token")),
                    now,
                )
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::UrlMismatch);
        } else {
            let v = ShrVerifier::new(validator.clone())
                .verify_at(s("proof"), &Request::new(s("method"), s("url")), now)
                .unwrap_or_else(|e| panic!("{} SHR from joserfc rejected: {e}", s("alg")));
            assert_eq!(v.thumbprint, s("jkt"));
        }
    }
}
