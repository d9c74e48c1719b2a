//! Resource-server verification: round trips, one negative test per check,
//! replay, nonces, and proofs made by an independent implementation.

use popkey_testkit::common;

mod cli;
mod dpop;
mod hardening;
mod interop;
mod msaljs;
mod shr;

use std::sync::Arc;

use popkey::verify::token::JwksValidator;
use popkey::{PopCryptoProvider, PopKey};
use serde_json::{json, Value};

pub const NOW: u64 = 1_800_000_000;

/// A token issuer for the tests: signs JWT access tokens with its own key,
/// and hands out a JWKS validator that trusts it.
pub struct Authority {
    key: PopKey,
    pub validator: Arc<JwksValidator>,
}

// Each Authority is a fresh random issuer, so no Default.
#[allow(clippy::new_without_default)]
impl Authority {
    pub fn new() -> Self {
        let key = PopKey::open("mem:").unwrap();
        let mut jwk: Value = serde_json::from_str(key.canonical_public_key_jwk()).unwrap();
        jwk["kid"] = "as-1".into();
        let jwks = json!({"keys": [jwk]}).to_string();
        let validator = JwksValidator::from_jwks(&jwks)
            .unwrap()
            .issuer("https://as.example")
            .audience("api");
        Authority {
            key,
            validator: Arc::new(validator),
        }
    }

    pub fn token(&self, claims: Value) -> String {
        sign(
            &self.key,
            json!({"alg": "ES256", "kid": "as-1", "typ": "at+jwt"}),
            claims,
        )
    }

    /// A valid token bound by `cnf`.
    pub fn bound(&self, cnf: Value) -> String {
        self.token(json!({"iss": "https://as.example", "aud": "api", "exp": NOW + 600, "cnf": cnf}))
    }
}

/// Signs arbitrary JSON as a compact JWS with `key`.
pub fn sign(key: &PopKey, header: Value, claims: Value) -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Replaces the signature of a compact JWS with `sig`'s.
pub fn with_signature_of(compact: &str, other: &str) -> String {
    let (a, _) = compact.rsplit_once('.').unwrap();
    let (_, s) = other.rsplit_once('.').unwrap();
    format!("{a}.{s}")
}

/// Flips one bit in the signature.
pub fn flip_signature(compact: &str) -> String {
    let (a, s) = compact.rsplit_once('.').unwrap();
    let mut sig = common::b64d(s);
    sig[5] ^= 1;
    format!(
        "{a}.{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig)
    )
}

/// The request a DPoP proof arrives with: its `DPoP` header(s) and, with a
/// token, `Authorization: DPoP <token>`.
pub(crate) trait VerifyParts {
    fn verify_parts(
        &self,
        proofs: &[&str],
        method: &str,
        url: &str,
        token: Option<&str>,
        now: u64,
    ) -> Result<popkey::verify::dpop::VerifiedDpop, popkey::verify::VerifyError>;
}

impl VerifyParts for popkey::verify::dpop::DpopVerifier {
    fn verify_parts(
        &self,
        proofs: &[&str],
        method: &str,
        url: &str,
        token: Option<&str>,
        now: u64,
    ) -> Result<popkey::verify::dpop::VerifiedDpop, popkey::verify::VerifyError> {
        let authorization = token.map(|t| format!("DPoP {t}"));
        let mut request = popkey::verify::Request::new(method, url);
        for p in proofs {
            request = request.header("DPoP", p);
        }
        if let Some(a) = &authorization {
            request = request.header("Authorization", a);
        }
        self.verify_at(&request, now)
    }
}
