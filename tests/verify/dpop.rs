use std::sync::Arc;

use popkey::dpop::DpopProof;
use popkey::verify::dpop::{DpopVerifier, VerifiedDpop};
use popkey::verify::nonce::NonceIssuer;
use popkey::verify::replay::MemoryReplayCache;
use popkey::verify::token::DecodeOnly;
use popkey::verify::{dpop_challenge, ErrorKind, NoncePolicy, Request, VerifyError};
use popkey::{Algorithm, PopKey};
use serde_json::{json, Value};

use super::{flip_signature, sign, Authority, VerifyParts, NOW};

const URL: &str = "https://resource.example.org/protected";

fn kind(r: Result<VerifiedDpop, VerifyError>) -> ErrorKind {
    match r {
        Ok(_) => panic!("expected a rejection"),
        Err(e) => e.kind(),
    }
}

struct Case {
    key: PopKey,
    authority: Authority,
    at: String,
}

impl Case {
    fn new(alg: Algorithm) -> Self {
        let key = PopKey::open(&format!("mem:?alg={alg}")).unwrap();
        let authority = Authority::new();
        let at = authority.bound(json!({"jkt": key.kid()}));
        Case { key, authority, at }
    }

    fn verifier(&self) -> DpopVerifier {
        DpopVerifier::new(self.authority.validator.clone())
    }

    fn proof(&self) -> String {
        DpopProof::new("GET", URL)
            .unwrap()
            .access_token(&self.at)
            .unwrap()
            .issued_at(NOW)
            .sign(&self.key)
            .unwrap()
    }

    fn mutated(&self, f: impl FnOnce(&mut Value, &mut Value)) -> String {
        let (mut h, mut c) = super::common::parts(&self.proof());
        f(&mut h, &mut c);
        sign(&self.key, h, c)
    }

    fn check(&self, proof: &str) -> Result<VerifiedDpop, VerifyError> {
        self.verifier()
            .verify_parts(&[proof], "GET", URL, Some(&self.at), NOW)
    }
}

#[test]
fn rfc9449_example_proof_verifies_with_its_clock() {
    // RFC 9449 §4.1, Figure 3 (iat 1562262616), for the token request.
    let proof = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";
    let v = DpopVerifier::new(Arc::new(DecodeOnly));
    let ok = v
        .verify_parts(
            &[proof],
            "POST",
            "https://server.example.com/token",
            None,
            1_562_262_620,
        )
        .unwrap();
    assert_eq!(ok.jkt, "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
    // The same proof an hour later is stale.
    let late = v.verify_parts(
        &[proof],
        "POST",
        "https://server.example.com/token",
        None,
        1_562_266_216,
    );
    assert_eq!(kind(late), ErrorKind::Expired);
}

/// An introspection-style validator for an opaque token (the hook a caller
/// provides): it knows one token and the key it is bound to.
struct Introspection {
    token: &'static str,
    jkt: &'static str,
}

impl popkey::verify::token::AccessTokenValidator for Introspection {
    fn validate(
        &self,
        token: &str,
        _now: u64,
    ) -> Result<serde_json::Map<String, Value>, VerifyError> {
        if token != self.token {
            return Err(VerifyError::new(
                ErrorKind::InvalidAccessToken,
                "unknown token",
            ));
        }
        Ok(json!({"active": true, "cnf": {"jkt": self.jkt}})
            .as_object()
            .unwrap()
            .clone())
    }
}

#[test]
fn rfc9449_resource_example_proof_verifies_with_its_token() {
    // RFC 9449 §7.1, Figure 13: a proof for a protected resource, with `ath`
    // for the opaque access token of the example.
    let proof = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA";
    let token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
    let jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
    let v = DpopVerifier::new(Arc::new(Introspection { token, jkt }));
    let url = "https://resource.example.org/protectedresource";
    let ok = v
        .verify_parts(&[proof], "GET", url, Some(token), 1_562_262_620)
        .unwrap();
    assert_eq!(ok.jkt, jkt);
    assert_eq!(
        ok.claims["ath"],
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
    // Bound to another key, the same proof and token are refused.
    let other = DpopVerifier::new(Arc::new(Introspection {
        token,
        jkt: "another-thumbprint",
    }));
    assert_eq!(
        kind(other.verify_parts(&[proof], "GET", url, Some(token), 1_562_262_620)),
        ErrorKind::KeyNotBound
    );
    assert_eq!(
        kind(v.verify_parts(&[proof], "GET", url, Some("other-token"), 1_562_262_620)),
        ErrorKind::AccessTokenHashMismatch
    );
}

#[test]
fn round_trip_for_every_algorithm() {
    for alg in Algorithm::ALL {
        let c = Case::new(alg);
        let v = c.check(&c.proof()).unwrap();
        assert_eq!(v.jkt, c.key.kid());
        assert_eq!(v.claims["htm"], "GET");
        assert!(v.access_token_signature_checked);
        assert_eq!(v.access_token_claims.unwrap()["cnf"]["jkt"], c.key.kid());
    }
}

#[test]
fn every_check_rejects_its_own_mutation() {
    let c = Case::new(Algorithm::ES256);
    c.check(&c.mutated(|_, _| {})).unwrap();
    let check = |p: String, want: ErrorKind| assert_eq!(kind(c.check(&p)), want, "{p}");
    check(
        c.mutated(|h, _| h["typ"] = "JWT".into()),
        ErrorKind::WrongType,
    );
    check(
        c.mutated(|h, _| {
            h.as_object_mut().unwrap().remove("typ");
        }),
        ErrorKind::WrongType,
    );
    check(
        c.mutated(|h, _| h["alg"] = "none".into()),
        ErrorKind::UnsupportedAlgorithm,
    );
    check(
        c.mutated(|h, _| h["alg"] = "HS256".into()),
        ErrorKind::UnsupportedAlgorithm,
    );
    check(
        c.mutated(|h, _| h["alg"] = "RS256".into()),
        ErrorKind::InvalidKey,
    );
    check(
        c.mutated(|h, _| h["jwk"]["d"] = "AAAA".into()),
        ErrorKind::InvalidKey,
    );
    check(
        c.mutated(|h, _| {
            h.as_object_mut().unwrap().remove("jwk");
        }),
        ErrorKind::InvalidKey,
    );
    check(
        c.mutated(|h, _| h["crit"] = json!(["exp"])),
        ErrorKind::Malformed,
    );
    check(flip_signature(&c.proof()), ErrorKind::BadSignature);
    let other = PopKey::open("mem:").unwrap();
    let (h, p) = super::common::parts(&c.proof());
    check(sign(&other, h, p), ErrorKind::BadSignature);
    check(
        c.mutated(|_, p| p["htm"] = "POST".into()),
        ErrorKind::MethodMismatch,
    );
    check(
        c.mutated(|_, p| p["htu"] = "https://resource.example.org/other".into()),
        ErrorKind::UrlMismatch,
    );
    check(
        c.mutated(|_, p| p["htu"] = "https://evil.example.org/protected".into()),
        ErrorKind::UrlMismatch,
    );
    check(
        c.mutated(|_, p| p["htu"] = "http://resource.example.org/protected".into()),
        ErrorKind::UrlMismatch,
    );
    check(
        c.mutated(|_, p| p["htu"] = "https://resource.example.org:8443/protected".into()),
        ErrorKind::UrlMismatch,
    );
    check(
        c.mutated(|_, p| p["iat"] = (NOW - 301).into()),
        ErrorKind::Expired,
    );
    check(
        c.mutated(|_, p| p["iat"] = (NOW + 61).into()),
        ErrorKind::NotYetValid,
    );
    // A NumericDate may have a fraction (RFC 7519 §2): 1.5 is just old.
    check(c.mutated(|_, p| p["iat"] = json!(1.5)), ErrorKind::Expired);
    check(
        c.mutated(|_, p| p["iat"] = json!(-1.5)),
        ErrorKind::MissingClaim,
    );
    check(
        c.mutated(|_, p| p["jti"] = "".into()),
        ErrorKind::MissingClaim,
    );
    check(
        c.mutated(|_, p| {
            p.as_object_mut().unwrap().remove("jti");
        }),
        ErrorKind::MissingClaim,
    );
    check(
        c.mutated(|_, p| p["ath"] = "AAAA".into()),
        ErrorKind::AccessTokenHashMismatch,
    );
    check(
        c.mutated(|_, p| {
            p.as_object_mut().unwrap().remove("ath");
        }),
        ErrorKind::AccessTokenHashMismatch,
    );
    check(
        c.mutated(|_, p| p["htm"] = json!(["GET"])),
        ErrorKind::MissingClaim,
    );

    // Header count.
    let proof = c.proof();
    let v = c.verifier();
    assert_eq!(
        kind(v.verify_parts(&[], "GET", URL, Some(&c.at), NOW)),
        ErrorKind::HeaderCount
    );
    assert_eq!(
        kind(v.verify_parts(&[&proof, &proof], "GET", URL, Some(&c.at), NOW)),
        ErrorKind::HeaderCount
    );
    // ath present but no token.
    assert_eq!(
        kind(v.verify_parts(&[&proof], "GET", URL, None, NOW)),
        ErrorKind::AccessTokenHashMismatch
    );
}

#[test]
fn htu_is_compared_after_normalization() {
    let c = Case::new(Algorithm::ES256);
    for htu in [
        "HTTPS://Resource.Example.ORG/protected",
        "https://resource.example.org:443/protected",
        "https://resource.example.org/%70rotected",
        "https://resource.example.org/a/../protected",
        "https://resource.example.org/protected?ignored=1#frag",
    ] {
        c.check(&c.mutated(|_, p| p["htu"] = htu.into()))
            .unwrap_or_else(|e| panic!("{htu}: {e}"));
    }
    // The request URL's query does not matter either.
    let v = c.verifier();
    v.verify_parts(
        &[&c.proof()],
        "GET",
        "https://resource.example.org/protected?page=2",
        Some(&c.at),
        NOW,
    )
    .unwrap();
}

#[test]
fn token_binding() {
    let c = Case::new(Algorithm::PS256);
    let v = c.verifier();
    let other = PopKey::open("mem:").unwrap();
    let proof_for = |at: &str| {
        DpopProof::new("GET", URL)
            .unwrap()
            .access_token(at)
            .unwrap()
            .issued_at(NOW)
            .sign(&c.key)
            .unwrap()
    };
    let wrong = c.authority.bound(json!({"jkt": other.kid()}));
    assert_eq!(
        kind(v.verify_parts(&[&proof_for(&wrong)], "GET", URL, Some(&wrong), NOW)),
        ErrorKind::KeyNotBound
    );
    let unbound = c
        .authority
        .token(json!({"iss": "https://as.example", "aud": "api", "exp": NOW + 600}));
    assert_eq!(
        kind(v.verify_parts(&[&proof_for(&unbound)], "GET", URL, Some(&unbound), NOW)),
        ErrorKind::KeyNotBound
    );
    let forged = Authority::new().bound(json!({"jkt": c.key.kid()}));
    let e = v
        .verify_parts(&[&proof_for(&forged)], "GET", URL, Some(&forged), NOW)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidAccessToken);
    assert!(dpop_challenge(&e, &Algorithm::ALL).starts_with(r#"DPoP error="invalid_token""#));
}

#[test]
fn server_nonces_and_replay() {
    let c = Case::new(Algorithm::ES256);
    let issuer = Arc::new(NonceIssuer::random(60));
    let v = c
        .verifier()
        .nonce(NoncePolicy::Issuer(issuer.clone()))
        .replay_store(Arc::new(MemoryReplayCache::new(1000)));
    // No nonce: the answer asks for one.
    let e = v
        .verify_parts(&[&c.proof()], "GET", URL, Some(&c.at), NOW)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonceRequired);
    assert!(dpop_challenge(&e, v.allowed_algorithms()).contains(r#"error="use_dpop_nonce""#));
    let with_nonce = |n: &str| {
        DpopProof::new("GET", URL)
            .unwrap()
            .access_token(&c.at)
            .unwrap()
            .nonce(n)
            .unwrap()
            .issued_at(NOW)
            .sign(&c.key)
            .unwrap()
    };
    let proof = with_nonce(&issuer.issue_at(NOW));
    v.verify_parts(&[&proof], "GET", URL, Some(&c.at), NOW)
        .unwrap();
    // The same proof again is a replay; a fresh proof with the same nonce is fine.
    assert_eq!(
        kind(v.verify_parts(&[&proof], "GET", URL, Some(&c.at), NOW + 1)),
        ErrorKind::Replay
    );
    v.verify_parts(
        &[&with_nonce(&issuer.issue_at(NOW))],
        "GET",
        URL,
        Some(&c.at),
        NOW + 1,
    )
    .unwrap();
    // Expired and foreign nonces.
    let stale = with_nonce(&issuer.issue_at(NOW - 61));
    assert_eq!(
        kind(v.verify_parts(&[&stale], "GET", URL, Some(&c.at), NOW)),
        ErrorKind::NonceRequired
    );
    let foreign = with_nonce(&NonceIssuer::random(60).issue_at(NOW));
    assert_eq!(
        kind(v.verify_parts(&[&foreign], "GET", URL, Some(&c.at), NOW)),
        ErrorKind::InvalidNonce
    );
}

#[test]
fn replay_cache_under_concurrency() {
    let c = Case::new(Algorithm::ES256);
    let v = Arc::new(
        c.verifier()
            .replay_store(Arc::new(MemoryReplayCache::new(10_000))),
    );
    let proofs: Vec<String> = (0..50).map(|_| c.proof()).collect();
    let proofs = Arc::new(proofs);
    let at = Arc::new(c.at.clone());
    // 4 threads race to use the same 50 proofs: each is accepted exactly once.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (v, proofs, at) = (v.clone(), proofs.clone(), at.clone());
            std::thread::spawn(move || {
                proofs
                    .iter()
                    .filter(|p| {
                        v.verify_parts(&[p.as_str()], "GET", URL, Some(&at), NOW)
                            .is_ok()
                    })
                    .count()
            })
        })
        .collect();
    let accepted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(accepted, 50);
}

#[test]
fn bearer_scheme_is_not_a_dpop_presentation() {
    let c = Case::new(Algorithm::ES256);
    let v = c.verifier();
    let proof = c.proof();
    let auth = format!("Bearer {}", c.at);
    let request = Request::new("GET", URL)
        .header("dpop", &proof)
        .header("Authorization", &auth);
    // The proof has `ath`, but no token was presented with the DPoP scheme.
    assert_eq!(
        kind(v.verify_at(&request, NOW)),
        ErrorKind::AccessTokenHashMismatch
    );
    let auth = format!("dpop {}", c.at);
    let twice = Request::new("GET", URL)
        .header("DPoP", &proof)
        .header("Authorization", &auth)
        .header("authorization", &auth);
    assert_eq!(kind(v.verify_at(&twice, NOW)), ErrorKind::HeaderCount);
    let request = Request::new("GET", URL)
        .header("DPoP", &proof)
        .header("authorization", &auth);
    v.verify_at(&request, NOW).unwrap();
}

/// The async path runs the same checks and records through an async store
/// with the same semantics as the blocking one.
#[tokio::test]
async fn async_path_records_once_with_the_same_errors() {
    let c = Case::new(Algorithm::ES256);
    let store = Arc::new(MemoryReplayCache::new(1000));
    let v = c.verifier().async_replay_store(store.clone());
    let proof = c.proof();
    let auth = format!("DPoP {}", c.at);
    let request = Request::new("GET", URL)
        .header("DPoP", &proof)
        .header("Authorization", &auth);
    // A blocking call cannot use an async-only store: it fails closed.
    assert_eq!(
        kind(v.verify_at(&request, NOW)),
        ErrorKind::ReplayStoreUnavailable
    );
    assert!(store.is_empty(), "nothing recorded by the refused call");
    v.verify_async_at(&request, NOW).await.unwrap();
    assert_eq!(
        kind(v.verify_async_at(&request, NOW).await),
        ErrorKind::Replay
    );
    // A proof failing an earlier check is not recorded.
    let bad = Request::new("POST", URL)
        .header("DPoP", &proof)
        .header("Authorization", &auth);
    assert_eq!(
        kind(v.verify_async_at(&bad, NOW).await),
        ErrorKind::MethodMismatch
    );
    assert_eq!(store.len(), 1);
    // The blocking store and the async one agree on the same cache.
    let sync_v = c.verifier().replay_store(store.clone());
    assert_eq!(kind(sync_v.verify_at(&request, NOW)), ErrorKind::Replay);
}
