//! SHR and DPoP for every algorithm, checked by ring (not popkey's code).

use popkey_testkit::common;

use popkey::dpop::DpopProof;
use popkey::shr::SignedHttpRequest;
use popkey::{Algorithm, PopCryptoProvider, PopKey};
use serde_json::json;
use sha2::{Digest, Sha256};

fn key(alg: Algorithm) -> PopKey {
    PopKey::open(&format!("mem:?alg={alg}")).unwrap()
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn shr_for_every_algorithm() {
    for alg in Algorithm::ALL {
        let key = key(alg);
        let shr = SignedHttpRequest::new(
            "POST",
            "https://API.example.com:443/v1/items?x=1",
            "the-token",
        )
        .unwrap()
        .sign(&key)
        .unwrap();
        let (h, p) = common::verify_shr(&shr);
        assert_eq!(
            h,
            json!({"alg": alg.as_str(), "kid": key.kid(), "typ": "pop"})
        );
        assert_eq!(h["kid"], common::thumbprint(&p["cnf"]["jwk"]));
        assert_eq!(p["at"], "the-token");
        assert_eq!(p["m"], "POST");
        assert_eq!(p["u"], "api.example.com", "default port and case dropped");
        assert_eq!(p["p"], "/v1/items");
        assert!(p.get("q").is_none() && p.get("h").is_none() && p.get("b").is_none());
        let nonce = p["nonce"].as_str().unwrap();
        assert_eq!(nonce.len(), 32);
        assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit()));
        let ts = p["ts"].as_u64().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(ts.abs_diff(now) < 60);
        assert_eq!(
            serde_json::to_string(&p["cnf"]["jwk"]).unwrap(),
            key.canonical_public_key_jwk()
        );
    }
}

#[test]
fn shr_optional_claims_per_draft() {
    let key = key(Algorithm::ES256);
    let body = br#"{"name":"widget"}"#;
    let shr = SignedHttpRequest::new(
        "PUT",
        "http://localhost:8080/a%20b/c?b=bar&a=foo&c=duck",
        "t",
    )
    .unwrap()
    .sign_query(true)
    .header("Content-Type", "application/json")
    .unwrap()
    .header("ETag", "742-3u8f34-3r2nvv3")
    .unwrap()
    .body(body)
    .nonce("server-nonce")
    .timestamp(1_700_000_000)
    .client_claims(r#"{"device":"d1"}"#)
    .unwrap()
    .sign(&key)
    .unwrap();
    let (_, p) = common::verify_shr(&shr);
    assert_eq!(p["u"], "localhost:8080");
    assert_eq!(p["p"], "/a%20b/c", "path as sent, not decoded");
    assert_eq!(p["ts"], 1_700_000_000);
    assert_eq!(p["nonce"], "server-nonce");
    assert_eq!(
        p["q"],
        json!([
            ["b", "a", "c"],
            "u4LgkGUWhP9MsKrEjA4dizIllDXluDku6ZqCeyuR-JY"
        ])
    );
    assert_eq!(
        p["h"],
        json!([
            ["content-type", "etag"],
            "P6z5XN4tTzHkfwe3XO1YvVUIurSuhvh_UG10N_j-aGs"
        ])
    );
    assert_eq!(p["b"], b64(Sha256::digest(body)));
    assert_eq!(p["client_claims"], r#"{"device":"d1"}"#);
}

#[test]
fn dpop_for_every_algorithm() {
    for alg in Algorithm::ALL {
        let key = key(alg);
        let proof = DpopProof::new("GET", "https://Resource.example.org/protected?q=1#frag")
            .unwrap()
            .access_token("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU")
            .unwrap()
            .nonce("eyJ7S_zG.eyJH0-Z.HX4w-7v")
            .unwrap()
            .sign(&key)
            .unwrap();
        let (h, p) = common::verify_dpop(&proof);
        assert_eq!(h["typ"], "dpop+jwt");
        assert_eq!(h["alg"], alg.as_str());
        assert_eq!(common::thumbprint(&h["jwk"]), key.kid());
        assert!(h["jwk"].get("d").is_none());
        assert_eq!(p["htm"], "GET");
        assert_eq!(p["htu"], "https://resource.example.org/protected");
        assert_eq!(p["ath"], "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo");
        assert_eq!(p["nonce"], "eyJ7S_zG.eyJH0-Z.HX4w-7v");
        let jti = common::b64d(p["jti"].as_str().unwrap());
        assert!(jti.len() * 8 >= 96, "jti carries at least 96 random bits");
        assert!(p["iat"].is_u64());
    }
}

#[test]
fn dpop_jti_is_fresh_and_optional_claims_absent() {
    let key = key(Algorithm::ES256);
    let make = || {
        DpopProof::new("POST", "https://server.example.com/token")
            .unwrap()
            .issued_at(1_562_262_616)
            .sign(&key)
            .unwrap()
    };
    let (_, a) = common::verify_dpop(&make());
    let (_, b) = common::verify_dpop(&make());
    assert_ne!(a["jti"], b["jti"]);
    assert_eq!(a["iat"], 1_562_262_616);
    assert!(a.get("ath").is_none() && a.get("nonce").is_none());
}

#[test]
fn req_cnf_is_base64url_kid_object() {
    let key = key(Algorithm::RS256);
    let v: serde_json::Value =
        serde_json::from_slice(&common::b64d(&popkey::shr::req_cnf(&key))).unwrap();
    assert_eq!(v, json!({"kid": key.kid()}));
    let params = popkey::shr::token_request_params(&key);
    assert_eq!(params[0], ("token_type", "pop".to_owned()));
}

#[test]
fn bad_requests_are_typed_errors() {
    use popkey::Error::InvalidRequest;
    for (m, u) in [
        ("get", "https://a.example/"),
        ("", "https://a.example/"),
        ("GET", "https://"),
        ("GET", "http://:80/x"),
        ("GET", "/relative"),
        ("GET", "ftp://a.example/"),
    ] {
        assert!(
            matches!(SignedHttpRequest::new(m, u, "t"), Err(InvalidRequest(_))),
            "{m} {u}"
        );
        assert!(
            matches!(DpopProof::new(m, u), Err(InvalidRequest(_))),
            "{m} {u}"
        );
    }
    let ok = SignedHttpRequest::new("GET", "https://a.example/", "t").unwrap();
    assert!(matches!(
        ok.clone().header("Bad Name", "v"),
        Err(InvalidRequest(_))
    ));
    assert!(matches!(
        ok.clone().header("X", "a\r\nb"),
        Err(InvalidRequest(_))
    ));
    assert!(matches!(ok.client_claims("[1]"), Err(InvalidRequest(_))));
    assert!(matches!(
        SignedHttpRequest::new("GET", "https://a.example/", ""),
        Err(InvalidRequest(_))
    ));
    assert!(matches!(
        DpopProof::new("GET", "https://a.example/")
            .unwrap()
            .nonce("has space"),
        Err(InvalidRequest(_))
    ));
}

#[test]
fn debug_output_hides_the_access_token() {
    let req = SignedHttpRequest::new("GET", "https://a.example/", "very-secret-token").unwrap();
    assert!(!format!("{req:?}").contains("very-secret-token"));
}
