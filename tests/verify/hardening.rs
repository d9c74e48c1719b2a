//! Regression tests for the defects a hostile review of the verifiers
//! found: encoded look-alike query parameters and header names, repeated
//! names, NumericDate, JWKS keys restricted by `alg`, DPoP `typ`, and
//! replay protection on by default.
use super::VerifyParts;

use std::sync::Arc;

use popkey::dpop::DpopProof;
use popkey::verify::dpop::DpopVerifier;
use popkey::verify::shr::ShrVerifier;
use popkey::verify::token::{AccessTokenValidator, JwksValidator};
use popkey::verify::{ErrorKind, Request};
use popkey::{Algorithm, PopCryptoProvider, PopKey};
use serde_json::{json, Value};

use super::{sign, Authority, NOW};

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    b64(&sha2::Sha256::digest(bytes))
}

struct Shr {
    key: PopKey,
    authority: Authority,
    at: String,
}

impl Shr {
    fn new() -> Self {
        let key = PopKey::open("mem:").unwrap();
        let authority = Authority::new();
        let at = authority.bound(json!({"kid": key.kid()}));
        Shr { key, authority, at }
    }

    fn sign(&self, extra: Value) -> String {
        let jwk: Value = serde_json::from_str(self.key.canonical_public_key_jwk()).unwrap();
        let mut claims = json!({
            "at": self.at, "ts": NOW, "m": "GET", "u": "api.example.com",
            "p": "/items", "nonce": "0123456789abcdef0123456789abcdef",
            "cnf": {"jwk": jwk},
        });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        sign(
            &self.key,
            json!({"alg": "ES256", "kid": self.key.kid(), "typ": "pop"}),
            claims,
        )
    }

    fn verify(&self, shr: &str, req: &Request<'_>) -> Result<(), ErrorKind> {
        ShrVerifier::new(self.authority.validator.clone())
            .verify_at(shr, req, NOW)
            .map(|_| ())
            .map_err(|e| e.kind())
    }
}

#[test]
fn query_names_compare_after_percent_decoding() {
    let c = Shr::new();
    let shr = c.sign(json!({"q": [["a"], sha(b"a=1")]}));
    let ok = "https://api.example.com/items?a=1&b=2";
    c.verify(&shr, &Request::new("GET", ok)).unwrap();
    for bad in [
        "https://api.example.com/items?a=1&%61=2",
        "https://api.example.com/items?%61=2&a=1",
        "https://api.example.com/items?a=1&%61",
    ] {
        assert_eq!(
            c.verify(&shr, &Request::new("GET", bad)),
            Err(ErrorKind::QueryMismatch),
            "{bad}"
        );
    }
    // `+` is a space to form parsers.
    let shr = c.sign(json!({"q": [["a b"], sha(b"a b=1")]}));
    assert_eq!(
        c.verify(
            &shr,
            &Request::new("GET", "https://api.example.com/items?a%20b=1&a+b=2")
        ),
        Err(ErrorKind::QueryMismatch)
    );
    // A name listed twice is refused outright.
    let shr = c.sign(json!({"q": [["a", "a"], sha(b"a=1&a=1")]}));
    assert_eq!(
        c.verify(&shr, &Request::new("GET", ok)),
        Err(ErrorKind::QueryMismatch)
    );
}

#[test]
fn header_names_differing_by_underscore_or_case_are_one_header() {
    let c = Shr::new();
    let shr = c.sign(json!({"h": [["x-user"], sha(b"x-user: alice")]}));
    let url = "https://api.example.com/items";
    c.verify(&shr, &Request::new("GET", url).header("X-User", "alice"))
        .unwrap();
    for other in ["x_user", "X_USER", "x-USER"] {
        let req = Request::new("GET", url)
            .header("X-User", "alice")
            .header(other, "mallory");
        assert_eq!(
            c.verify(&shr, &req),
            Err(ErrorKind::HeaderMismatch),
            "{other}"
        );
    }
    let shr = c.sign(json!({"h": [["x-user", "X_User"], sha(b"x-user: alice\nx_user: alice")]}));
    assert_eq!(
        c.verify(&shr, &Request::new("GET", url).header("X-User", "alice")),
        Err(ErrorKind::HeaderMismatch)
    );
}

#[test]
fn shr_ts_stays_an_integer() {
    let c = Shr::new();
    let req = Request::new("GET", "https://api.example.com/items");
    c.verify(&c.sign(json!({})), &req).unwrap();
    assert_eq!(
        c.verify(&c.sign(json!({"ts": NOW as f64 + 0.5})), &req),
        Err(ErrorKind::MissingClaim)
    );
}

#[test]
fn header_kid_forms_and_optional_jwk_members() {
    let c = Shr::new();
    let req = Request::new("GET", "https://api.example.com/items");
    let jwk: Value = serde_json::from_str(c.key.canonical_public_key_jwk()).unwrap();
    let with = |header: Value, jwk: Value| {
        let claims = json!({
            "at": c.at, "ts": NOW, "m": "GET", "u": "api.example.com",
            "p": "/items", "nonce": "n", "cnf": {"jwk": jwk},
        });
        c.verify(&sign(&c.key, header, claims), &req)
    };
    let wrapped = b64(json!({"kid": c.key.kid(), "xms_ksl": "sw"})
        .to_string()
        .as_bytes());
    let wrong = b64(json!({"kid": "other"}).to_string().as_bytes());
    with(json!({"alg": "ES256", "typ": "pop"}), jwk.clone()).unwrap();
    with(
        json!({"alg": "ES256", "typ": "pop", "kid": c.key.kid()}),
        jwk.clone(),
    )
    .unwrap();
    with(
        json!({"alg": "ES256", "typ": "pop", "kid": wrapped}),
        jwk.clone(),
    )
    .unwrap();
    for kid in [json!(wrong), json!("other"), json!(7), json!(b64(b"[1]"))] {
        assert_eq!(
            with(
                json!({"alg": "ES256", "typ": "pop", "kid": kid}),
                jwk.clone()
            ),
            Err(ErrorKind::InvalidKey),
            "{kid}"
        );
    }
    let mut extra = jwk.clone();
    extra["alg"] = "ES256".into();
    extra["ext"] = true.into();
    extra["key_ops"] = json!(["verify"]);
    extra["use"] = "sig".into();
    extra["kid"] = "k".into();
    with(json!({"alg": "ES256", "typ": "pop"}), extra.clone()).unwrap();
    for (member, value) in [
        ("alg", json!("RS256")),
        ("key_ops", json!(["sign"])),
        ("key_ops", json!("verify")),
        ("use", json!("enc")),
        ("ext", json!("yes")),
        ("d", json!("AAAA")),
    ] {
        let mut bad = extra.clone();
        bad[member] = value.clone();
        assert_eq!(
            with(json!({"alg": "ES256", "typ": "pop"}), bad),
            Err(ErrorKind::InvalidKey),
            "{member}: {value}"
        );
    }
}

const DPOP_URL: &str = "https://resource.example.org/protected";

fn dpop_with(
    key: &PopKey,
    header: impl FnOnce(&mut Value),
    claims: impl FnOnce(&mut Value),
) -> String {
    let proof = DpopProof::new("GET", DPOP_URL)
        .unwrap()
        .issued_at(NOW)
        .sign(key)
        .unwrap();
    let (mut h, mut c) = super::common::parts(&proof);
    header(&mut h);
    claims(&mut c);
    sign(key, h, c)
}

#[test]
fn dpop_typ_per_rfc7515() {
    let key = PopKey::open("mem:").unwrap();
    let v = DpopVerifier::new(Arc::new(popkey::verify::token::DecodeOnly));
    for typ in [
        "dpop+jwt",
        "DPoP+JWT",
        "application/dpop+jwt",
        "Application/DPOP+jwt",
    ] {
        let p = dpop_with(&key, |h| h["typ"] = typ.into(), |_| {});
        v.verify_parts(&[&p], "GET", DPOP_URL, None, NOW).unwrap();
    }
    for typ in [
        "jwt",
        "application/jwt",
        "application/",
        "xapplication/dpop+jwt",
        "dpop",
    ] {
        let p = dpop_with(&key, |h| h["typ"] = typ.into(), |_| {});
        assert_eq!(
            v.verify_parts(&[&p], "GET", DPOP_URL, None, NOW)
                .unwrap_err()
                .kind(),
            ErrorKind::WrongType,
            "{typ}"
        );
    }
}

#[test]
fn numeric_dates_may_have_fractions() {
    let key = PopKey::open("mem:").unwrap();
    let v = DpopVerifier::new(Arc::new(popkey::verify::token::DecodeOnly));
    let p = dpop_with(&key, |_| {}, |c| c["iat"] = json!(NOW as f64 + 0.5));
    v.verify_parts(&[&p], "GET", DPOP_URL, None, NOW).unwrap();
    for bad in [
        json!("1800000000"),
        json!(-1),
        json!(-0.5),
        json!(1e300),
        json!(null),
    ] {
        let p = dpop_with(&key, |_| {}, |c| c["iat"] = bad.clone());
        assert_eq!(
            v.verify_parts(&[&p], "GET", DPOP_URL, None, NOW)
                .unwrap_err()
                .kind(),
            ErrorKind::MissingClaim,
            "{bad}"
        );
    }
    // JWKS-validated access tokens: fractional exp / nbf are fine too.
    let a = Authority::new();
    let base = json!({"iss": "https://as.example", "aud": "api", "cnf": {"jkt": "x"}});
    let token = |exp: Value, nbf: Option<Value>| {
        let mut c = base.clone();
        c["exp"] = exp;
        if let Some(n) = nbf {
            c["nbf"] = n;
        }
        a.token(c)
    };
    let kind = |t: String| {
        a.validator
            .validate(&t, NOW)
            .map(|_| ())
            .map_err(|e| e.kind())
    };
    kind(token(
        json!(NOW as f64 + 600.25),
        Some(json!(NOW as f64 - 0.75)),
    ))
    .unwrap();
    assert_eq!(
        kind(token(json!(NOW as f64 - 3600.5), None)),
        Err(ErrorKind::InvalidAccessToken)
    );
    assert_eq!(
        kind(token(
            json!(NOW as f64 + 600.0),
            Some(json!(NOW as f64 + 3600.5))
        )),
        Err(ErrorKind::InvalidAccessToken)
    );
    for bad in [json!("soon"), json!(-5), json!(1e300)] {
        assert_eq!(
            kind(token(bad.clone(), None)),
            Err(ErrorKind::InvalidAccessToken),
            "{bad}"
        );
    }
}

#[test]
fn jwks_key_with_another_alg_verifies_only_that_alg() {
    let rsa = PopKey::open("mem:?alg=RS256").unwrap();
    let jwks = |alg: Value| {
        let mut jwk: Value = serde_json::from_str(rsa.canonical_public_key_jwk()).unwrap();
        jwk["kid"] = "r1".into();
        jwk["alg"] = alg;
        JwksValidator::from_jwks(&json!({"keys": [jwk]}).to_string()).unwrap()
    };
    let token = sign(
        &rsa,
        json!({"alg": "RS256", "kid": "r1"}),
        json!({"exp": NOW + 600, "cnf": {"jkt": "x"}}),
    );
    jwks(json!("RS256")).validate(&token, NOW).unwrap();
    for alg in [json!("RS512"), json!("PS256"), json!("rs256"), json!(256)] {
        assert_eq!(
            jwks(alg.clone()).validate(&token, NOW).unwrap_err().kind(),
            ErrorKind::InvalidAccessToken,
            "{alg}"
        );
    }
}

#[test]
fn replay_protection_is_on_by_default() {
    let c = Shr::new();
    let req = Request::new("GET", "https://api.example.com/items");
    let shr = c.sign(json!({}));
    let v = ShrVerifier::new(c.authority.validator.clone());
    v.verify_at(&shr, &req, NOW).unwrap();
    assert_eq!(
        v.verify_at(&shr, &req, NOW + 1).unwrap_err().kind(),
        ErrorKind::Replay
    );
    let off = ShrVerifier::new(c.authority.validator.clone()).without_replay_protection();
    off.verify_at(&shr, &req, NOW).unwrap();
    off.verify_at(&shr, &req, NOW).unwrap();

    let key = PopKey::open(&format!("mem:?alg={}", Algorithm::ES256)).unwrap();
    let p = dpop_with(&key, |_| {}, |_| {});
    let v = DpopVerifier::new(Arc::new(popkey::verify::token::DecodeOnly));
    v.verify_parts(&[&p], "GET", DPOP_URL, None, NOW).unwrap();
    assert_eq!(
        v.verify_parts(&[&p], "GET", DPOP_URL, None, NOW)
            .unwrap_err()
            .kind(),
        ErrorKind::Replay
    );
    let off =
        DpopVerifier::new(Arc::new(popkey::verify::token::DecodeOnly)).without_replay_protection();
    off.verify_parts(&[&p], "GET", DPOP_URL, None, NOW).unwrap();
    off.verify_parts(&[&p], "GET", DPOP_URL, None, NOW).unwrap();
}

#[test]
fn one_trailing_slash_on_p_is_ignored() {
    let c = Shr::new();
    let req = Request::new("GET", "https://api.example.com/items");
    c.verify(&c.sign(json!({"p": "/items/"})), &req).unwrap();
    let req_slash = Request::new("GET", "https://api.example.com/items/");
    c.verify(&c.sign(json!({"p": "/items"})), &req_slash)
        .unwrap();
    for p in ["/items//", "/item", "/Items"] {
        assert_eq!(
            c.verify(&c.sign(json!({ "p": p })), &req),
            Err(ErrorKind::UrlMismatch),
            "{p}"
        );
    }
}
