use std::sync::Arc;

use popkey::shr::SignedHttpRequest;
use popkey::verify::nonce::NonceIssuer;
use popkey::verify::replay::MemoryReplayCache;
use popkey::verify::shr::ShrVerifier;
use popkey::verify::{ErrorKind, NoncePolicy, Request};
use popkey::{Algorithm, PopCryptoProvider, PopKey};
use serde_json::{json, Value};

use super::{flip_signature, sign, with_signature_of, Authority, NOW};

const URL: &str = "https://api.example.com/v1/items?b=bar&a=foo";

struct Case {
    key: PopKey,
    authority: Authority,
    at: String,
}

impl Case {
    fn new(alg: Algorithm) -> Self {
        let key = PopKey::open(&format!("mem:?alg={alg}")).unwrap();
        let authority = Authority::new();
        let at = authority.bound(json!({"kid": key.kid()}));
        Case { key, authority, at }
    }

    fn verifier(&self) -> ShrVerifier {
        ShrVerifier::new(self.authority.validator.clone())
    }

    /// The claims popkey would sign for URL, as JSON we can mutate.
    fn claims(&self) -> Value {
        let shr = self.shr_builder().sign(&self.key).unwrap();
        super::common::parts(&shr).1
    }

    fn shr_builder(&self) -> SignedHttpRequest {
        SignedHttpRequest::new("POST", URL, &self.at)
            .unwrap()
            .timestamp(NOW)
            .sign_query(true)
            .header("Content-Type", "application/json")
            .unwrap()
            .body(b"{}")
    }

    fn header(&self) -> Value {
        json!({"alg": self.key.algorithm().as_str(), "kid": self.key.kid(), "typ": "pop"})
    }

    fn mutated(&self, f: impl FnOnce(&mut Value, &mut Value)) -> String {
        let (mut h, mut c) = (self.header(), self.claims());
        f(&mut h, &mut c);
        sign(&self.key, h, c)
    }
}

fn request() -> Request<'static> {
    Request::new("POST", URL)
        .header("Content-Type", "application/json")
        .header("Authorization", "PoP x")
        .body(b"{}")
}

fn kind(r: Result<popkey::verify::shr::VerifiedShr, popkey::verify::VerifyError>) -> ErrorKind {
    match r {
        Ok(_) => panic!("expected a rejection"),
        Err(e) => {
            assert!(!e.message().contains("eyJ"), "no token in messages: {e}");
            e.kind()
        }
    }
}

#[test]
fn round_trip_for_every_algorithm() {
    for alg in Algorithm::ALL {
        let c = Case::new(alg);
        let shr = c.shr_builder().sign(&c.key).unwrap();
        let v = c.verifier().verify_at(&shr, &request(), NOW + 10).unwrap();
        assert_eq!(v.thumbprint, c.key.kid());
        assert_eq!(v.claims["m"], "POST");
        assert!(v.access_token_signature_checked);
        assert_eq!(v.access_token_claims["aud"], "api");
    }
}

#[test]
fn every_check_rejects_its_own_mutation() {
    let c = Case::new(Algorithm::ES256);
    let v = c.verifier();
    let req = request();
    let at = |shr: &str, now: u64| kind(v.verify_at(shr, &req, now));
    let check = |shr: String, want: ErrorKind| assert_eq!(at(&shr, NOW), want, "{shr}");

    // The unmutated proof passes (so each rejection below is its mutation's).
    v.verify_at(&c.mutated(|_, _| {}), &req, NOW).unwrap();

    check(
        c.mutated(|h, _| h["alg"] = "HS256".into()),
        ErrorKind::UnsupportedAlgorithm,
    );
    check(
        c.mutated(|h, _| h["alg"] = "none".into()),
        ErrorKind::UnsupportedAlgorithm,
    );
    check(
        c.mutated(|h, _| h["typ"] = "JWT".into()),
        ErrorKind::WrongType,
    );
    check(
        c.mutated(|h, _| h["kid"] = "other".into()),
        ErrorKind::InvalidKey,
    );
    check(
        c.mutated(|_, p| p["cnf"]["jwk"]["d"] = "AAAA".into()),
        ErrorKind::InvalidKey,
    );
    check(
        c.mutated(|_, p| p["cnf"]["jwk"]["crv"] = "P-384".into()),
        ErrorKind::InvalidKey,
    );
    check(
        c.mutated(|_, p| p["cnf"] = json!({})),
        ErrorKind::InvalidKey,
    );
    check(
        flip_signature(&c.mutated(|_, _| {})),
        ErrorKind::BadSignature,
    );
    let other = PopKey::open("mem:").unwrap();
    let forged = sign(&other, c.header(), c.claims());
    check(forged, ErrorKind::BadSignature);
    check(
        c.mutated(|_, p| p["ts"] = (NOW - 301).into()),
        ErrorKind::Expired,
    );
    check(
        c.mutated(|_, p| p["ts"] = (NOW + 61).into()),
        ErrorKind::NotYetValid,
    );
    check(
        c.mutated(|_, p| p["ts"] = "1800000000".into()),
        ErrorKind::MissingClaim,
    );
    check(
        c.mutated(|_, p| p["ts"] = json!(1e30)),
        ErrorKind::MissingClaim,
    );
    check(
        c.mutated(|_, p| p["ts"] = json!(-5)),
        ErrorKind::MissingClaim,
    );
    check(
        c.mutated(|_, p| p["m"] = "GET".into()),
        ErrorKind::MethodMismatch,
    );
    check(
        c.mutated(|_, p| p["u"] = "evil.example.com".into()),
        ErrorKind::UrlMismatch,
    );
    check(
        c.mutated(|_, p| p["u"] = "api.example.com:8443".into()),
        ErrorKind::UrlMismatch,
    );
    check(
        c.mutated(|_, p| p["p"] = "/v1/other".into()),
        ErrorKind::UrlMismatch,
    );
    check(
        c.mutated(|_, p| p["p"] = "/v1/items?b=bar".into()),
        ErrorKind::UrlMismatch,
    );
    check(
        c.mutated(|_, p| p["q"][1] = "AAAA".into()),
        ErrorKind::QueryMismatch,
    );
    check(
        c.mutated(|_, p| p["q"][0] = json!(["b", "zzz"])),
        ErrorKind::QueryMismatch,
    );
    check(
        c.mutated(|_, p| p["q"] = json!("b=bar")),
        ErrorKind::MissingClaim,
    );
    check(
        c.mutated(|_, p| p["h"][1] = "AAAA".into()),
        ErrorKind::HeaderMismatch,
    );
    check(
        c.mutated(|_, p| p["b"] = "AAAA".into()),
        ErrorKind::BodyMismatch,
    );
    check(
        c.mutated(|_, p| {
            p.as_object_mut().unwrap().remove("at");
        }),
        ErrorKind::MissingClaim,
    );
    check(
        c.mutated(|_, p| {
            p.as_object_mut().unwrap().remove("m");
        }),
        ErrorKind::MissingClaim,
    );
    check(
        c.mutated(|_, p| {
            p.as_object_mut().unwrap().remove("nonce");
        }),
        ErrorKind::MissingClaim,
    );

    // The request changes instead of the proof.
    let shr = c.mutated(|_, _| {});
    let changed = |r: Request<'_>| kind(v.verify_at(&shr, &r, NOW));
    let base = || Request::new("POST", URL).header("Content-Type", "application/json");
    assert_eq!(changed(base().body(b"{\"x\":1}")), ErrorKind::BodyMismatch);
    assert_eq!(
        changed(base()),
        ErrorKind::BodyMismatch,
        "b signed, body not given"
    );
    assert_eq!(
        changed(
            Request::new("POST", "https://api.example.com/v1/items?b=bar&a=fob")
                .header("Content-Type", "application/json")
                .body(b"{}")
        ),
        ErrorKind::QueryMismatch
    );
    assert_eq!(
        changed(
            Request::new("POST", "https://api.example.com/v1/items?b=bar&a=foo&a=x")
                .header("Content-Type", "application/json")
                .body(b"{}")
        ),
        ErrorKind::QueryMismatch
    );
    assert_eq!(
        changed(
            Request::new("POST", URL)
                .header("Content-Type", "text/plain")
                .body(b"{}")
        ),
        ErrorKind::HeaderMismatch
    );
    assert_eq!(
        changed(
            Request::new("PUT", URL)
                .header("Content-Type", "application/json")
                .body(b"{}")
        ),
        ErrorKind::MethodMismatch
    );
    assert_eq!(
        changed(
            Request::new("POST", "https://api.example.com/v2/items?b=bar&a=foo")
                .header("Content-Type", "application/json")
                .body(b"{}")
        ),
        ErrorKind::UrlMismatch
    );
}

#[test]
fn malformed_proofs() {
    let c = Case::new(Algorithm::ES256);
    let v = c.verifier();
    let good = c.mutated(|_, _| {});
    let (h, rest) = good.split_once('.').unwrap();
    let array_payload = format!("{h}.{}.{}", b64("[1,2]"), rest.split_once('.').unwrap().1);
    let dup = format!(
        "{}.{}",
        b64(r#"{"alg":"ES256","alg":"ES256","typ":"pop"}"#),
        rest
    );
    for bad in [
        String::new(),
        "a.b".to_owned(),
        "a.b.c.d".to_owned(),
        format!("{h}..x"),
        format!("{h}.!!!.x"),
        format!("{good}="),
        array_payload,
        dup,
        format!("{}.{}", b64("x".repeat(70_000)), rest),
    ] {
        assert_eq!(
            kind(v.verify_at(&bad, &request(), NOW)),
            ErrorKind::Malformed,
            "{bad:.80}"
        );
    }
}

#[test]
fn access_token_binding_and_validation() {
    let c = Case::new(Algorithm::ES256);
    let with_token = |at: &str| {
        let at = at.to_owned();
        c.mutated(move |_, p| p["at"] = at.into())
    };
    let v = c.verifier();
    let req = request();
    let other = PopKey::open("mem:").unwrap();
    // cnf.jwk and cnf.jkt forms bind as well as cnf.kid.
    let jwk: Value = serde_json::from_str(c.key.canonical_public_key_jwk()).unwrap();
    v.verify_at(
        &with_token(&c.authority.bound(json!({"jwk": jwk}))),
        &req,
        NOW,
    )
    .unwrap();
    v.verify_at(
        &with_token(&c.authority.bound(json!({"jkt": c.key.kid()}))),
        &req,
        NOW,
    )
    .unwrap();

    let check = |at: String, want: ErrorKind| {
        assert_eq!(kind(v.verify_at(&with_token(&at), &req, NOW)), want)
    };
    check(
        c.authority.bound(json!({"kid": other.kid()})),
        ErrorKind::KeyNotBound,
    );
    check(
        c.authority
            .token(json!({"iss": "https://as.example", "aud": "api", "exp": NOW + 600})),
        ErrorKind::KeyNotBound,
    );
    check(
        Authority::new().bound(json!({"kid": c.key.kid()})),
        ErrorKind::InvalidAccessToken,
    );
    check(c.authority.token(json!({"iss": "https://as.example", "aud": "api", "exp": NOW - 3600, "cnf": {"kid": c.key.kid()}})), ErrorKind::InvalidAccessToken);
    check(c.authority.token(json!({"iss": "https://as.example", "aud": "other", "exp": NOW + 600, "cnf": {"kid": c.key.kid()}})), ErrorKind::InvalidAccessToken);
    check(c.authority.token(json!({"iss": "https://evil.example", "aud": "api", "exp": NOW + 600, "cnf": {"kid": c.key.kid()}})), ErrorKind::InvalidAccessToken);
    check(
        c.authority
            .token(json!({"iss": "https://as.example", "aud": "api", "cnf": {"kid": c.key.kid()}})),
        ErrorKind::InvalidAccessToken,
    );
    check("not-a-jwt".to_owned(), ErrorKind::InvalidAccessToken);
    let _ = with_signature_of;
}

#[test]
fn nonces_and_replay() {
    let c = Case::new(Algorithm::ES256);
    let issuer = Arc::new(NonceIssuer::random(120));
    let v = c
        .verifier()
        .nonce(NoncePolicy::Issuer(issuer.clone()))
        .replay_store(Arc::new(MemoryReplayCache::new(1000)));
    let req = request();
    let fresh = issuer.issue_at(NOW);
    let shr = c.shr_builder().nonce(&fresh).sign(&c.key).unwrap();
    v.verify_at(&shr, &req, NOW).unwrap();
    assert_eq!(kind(v.verify_at(&shr, &req, NOW + 1)), ErrorKind::Replay);
    // A second, different request with the same server nonce is fine.
    let shr2 = c
        .shr_builder()
        .nonce(&fresh)
        .timestamp(NOW + 1)
        .sign(&c.key)
        .unwrap();
    v.verify_at(&shr2, &req, NOW + 1).unwrap();
    // Expired, foreign and absent nonces.
    let old = issuer.issue_at(NOW - 200);
    let shr = c.shr_builder().nonce(&old).sign(&c.key).unwrap();
    assert_eq!(kind(v.verify_at(&shr, &req, NOW)), ErrorKind::NonceRequired);
    let foreign = NonceIssuer::random(120).issue_at(NOW);
    let shr = c.shr_builder().nonce(&foreign).sign(&c.key).unwrap();
    assert_eq!(kind(v.verify_at(&shr, &req, NOW)), ErrorKind::InvalidNonce);
    let shr = c.mutated(|_, p| {
        p.as_object_mut().unwrap().remove("nonce");
    });
    assert_eq!(kind(v.verify_at(&shr, &req, NOW)), ErrorKind::NonceRequired);
    // An exact expected nonce.
    let v = c.verifier().nonce(NoncePolicy::Expected("abc".into()));
    let shr = c.shr_builder().nonce("abd").sign(&c.key).unwrap();
    assert_eq!(kind(v.verify_at(&shr, &req, NOW)), ErrorKind::InvalidNonce);
    let shr = c.shr_builder().nonce("abc").sign(&c.key).unwrap();
    v.verify_at(&shr, &req, NOW).unwrap();
}

/// The access token an SHR carries never shows in `Debug` output.
#[test]
fn debug_output_hides_the_access_token() {
    let c = Case::new(Algorithm::ES256);
    let shr = c.shr_builder().sign(&c.key).unwrap();
    let verified = c.verifier().verify_at(&shr, &request(), NOW).unwrap();
    assert_eq!(verified.claims["at"], c.at.as_str());
    let parsed = popkey::verify::ParsedJws::parse(&shr, &[Algorithm::ES256]).unwrap();
    for shown in [format!("{verified:?}"), format!("{parsed:?}")] {
        assert!(!shown.contains(&c.at), "{shown}");
        assert!(!shown.contains(shr.split('.').nth(1).unwrap()), "{shown}");
        assert!(
            shown.contains(&format!("<access token, {} bytes>", c.at.len())),
            "{shown}"
        );
        assert!(shown.contains("\"m\": String(\"POST\")"), "{shown}");
    }
}

/// An SHR is named for replay by what it signs, not by its signature bytes:
/// ECDSA's second valid signature over the same input, (r, n − s), and a
/// fresh signature over the same header and payload are the same proof.
#[test]
fn replay_is_judged_on_the_signed_content() {
    let c = Case::new(Algorithm::ES256);
    let v = c
        .verifier()
        .replay_store(Arc::new(MemoryReplayCache::new(1000)));
    let req = request();
    let shr = c.shr_builder().sign(&c.key).unwrap();
    v.verify_at(&shr, &req, NOW).unwrap();

    // (r, n - s) over the same input: valid (a verifier that has not seen
    // the proof accepts it), and a replay for the one that has.
    let (input, sig) = shr.rsplit_once('.').unwrap();
    let sig = super::common::b64d(sig);
    let mut s = [0u8; 32];
    s.copy_from_slice(&sig[32..]);
    let mut twin = sig[..32].to_vec();
    twin.extend(p256_order_minus(&s));
    let twin = format!("{input}.{}", b64(&twin));
    assert_ne!(twin, shr);
    c.verifier().verify_at(&twin, &req, NOW).unwrap();
    assert_eq!(kind(v.verify_at(&twin, &req, NOW)), ErrorKind::Replay);

    // The same header and payload signed again: another random k with
    // aws-lc-rs, the very same signature with RustCrypto (RFC 6979
    // deterministic k). A replay either way.
    let again = format!("{input}.{}", b64(c.key.sign(input.as_bytes()).unwrap()));
    assert_eq!(
        again != shr,
        popkey::crypto_provider() == "aws-lc-rs",
        "signatures are randomized exactly with aws-lc-rs"
    );
    assert_eq!(kind(v.verify_at(&again, &req, NOW)), ErrorKind::Replay);
}

/// n − s for the P-256 group order n (big-endian, 0 < s < n).
fn p256_order_minus(s: &[u8; 32]) -> [u8; 32] {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(N[i]) - i16::from(s[i]) - borrow;
        out[i] = d.rem_euclid(256) as u8;
        borrow = i16::from(d < 0);
    }
    out
}

/// The async path: the same checks, the record made last, through an async
/// store sharing its semantics with the blocking one.
#[tokio::test]
async fn async_path_records_once() {
    let c = Case::new(Algorithm::ES256);
    let store = Arc::new(MemoryReplayCache::new(1000));
    let v = c.verifier().async_replay_store(store.clone());
    let req = request();
    let shr = c.shr_builder().sign(&c.key).unwrap();
    super::common::verify_shr(&shr);
    assert_eq!(
        kind(v.verify_at(&shr, &req, NOW)),
        ErrorKind::ReplayStoreUnavailable
    );
    let wrong = popkey::verify::Request::new("DELETE", URL);
    assert_eq!(
        kind(v.verify_async_at(&shr, &wrong, NOW).await),
        ErrorKind::MethodMismatch
    );
    assert!(store.is_empty());
    v.verify_async_at(&shr, &req, NOW).await.unwrap();
    assert_eq!(
        kind(v.verify_async_at(&shr, &req, NOW + 1).await),
        ErrorKind::Replay
    );
    let blocking = c.verifier().replay_store(store);
    assert_eq!(kind(blocking.verify_at(&shr, &req, NOW)), ErrorKind::Replay);
}

#[test]
fn required_and_unsigned_parts() {
    let c = Case::new(Algorithm::ES256);
    let req = request();
    let plain = SignedHttpRequest::new("POST", URL, &c.at)
        .unwrap()
        .timestamp(NOW)
        .sign(&c.key)
        .unwrap();
    c.verifier().verify_at(&plain, &req, NOW).unwrap();
    assert_eq!(
        kind(
            c.verifier()
                .require_query(true)
                .verify_at(&plain, &req, NOW)
        ),
        ErrorKind::MissingClaim
    );
    assert_eq!(
        kind(c.verifier().require_body().verify_at(&plain, &req, NOW)),
        ErrorKind::MissingClaim
    );
    assert_eq!(
        kind(
            c.verifier()
                .require_headers(&["content-type"], true)
                .verify_at(&plain, &req, NOW)
        ),
        ErrorKind::MissingClaim
    );
    // Only `b` of the query signed: strict mode refuses the unsigned `a`.
    let partial = c.mutated(|_, p| {
        let (names, hash) = popkey::shr::query_claim("b=bar");
        p["q"] = json!([names, hash]);
    });
    c.verifier().verify_at(&partial, &req, NOW).unwrap();
    assert_eq!(
        kind(
            c.verifier()
                .require_query(false)
                .verify_at(&partial, &req, NOW)
        ),
        ErrorKind::QueryMismatch
    );
    // A valueless parameter (`?debug`) is an unsigned parameter too.
    let valueless = Request::new("POST", "https://api.example.com/v1/items?b=bar&a=foo&debug")
        .header("Content-Type", "application/json")
        .body(b"{}");
    let full_q = c.mutated(|_, _| {});
    c.verifier().verify_at(&full_q, &valueless, NOW).unwrap();
    assert_eq!(
        kind(
            c.verifier()
                .require_query(false)
                .verify_at(&full_q, &valueless, NOW)
        ),
        ErrorKind::QueryMismatch
    );
    let extra = Request::new("POST", URL)
        .header("Content-Type", "application/json")
        .header("X-Extra", "1")
        .body(b"{}");
    let full = c.mutated(|_, _| {});
    c.verifier()
        .require_headers(&["content-type"], true)
        .verify_at(&full, &extra, NOW)
        .unwrap();
    assert_eq!(
        kind(
            c.verifier()
                .require_headers(&[], false)
                .verify_at(&full, &extra, NOW)
        ),
        ErrorKind::HeaderMismatch
    );
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}
