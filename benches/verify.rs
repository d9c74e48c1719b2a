//! Verification cost: SHR and DPoP verification beside the raw signature
//! verification they contain, in the same run. `cargo bench --bench verify`.
//!
//! `raw_signature_verify` is popkey's `PublicJwk::verify` (the crate's
//! provider, key parsed once); `raw_aws_lc_rs_verify` and
//! `raw_rust_crypto_verify` are the libraries alone, parsing the public key
//! on every call as a verifier of a proof carrying its key must. The full
//! verifiers with a replay store are measured by `popkey bench` (a replay
//! store refuses the repeated proof a criterion loop would send).
//!
//! The access token is only decoded here (`DecodeOnly`), so the difference
//! between a `verify_*` row and its `raw_*` row is popkey's JOSE and claim
//! work. Validating the token's own signature with a JWKS adds one more
//! signature verification (`*_with_jwks`).

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
mod raw;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use popkey::dpop::DpopProof;
use popkey::shr::SignedHttpRequest;
use popkey::verify::dpop::DpopVerifier;
use popkey::verify::shr::ShrVerifier;
use popkey::verify::token::{DecodeOnly, JwksValidator};
use popkey::verify::Request;
use popkey::{PopCryptoProvider, PopKey};
use serde_json::json;

const URL: &str = "https://api.example.com/v1/items?page=2";

fn bench(c: &mut Criterion) {
    let authority = PopKey::open("mem:").expect("key");
    let mut jwk: serde_json::Value =
        serde_json::from_str(authority.canonical_public_key_jwk()).expect("jwk");
    jwk["kid"] = "as".into();
    let jwks =
        Arc::new(JwksValidator::from_jwks(&json!({"keys": [jwk]}).to_string()).expect("jwks"));

    for alg in ["ES256", "RS256", "PS256"] {
        let key = PopKey::open(&format!("mem:?alg={alg}")).expect("key");
        let now = 1_800_000_000;
        let claims = json!({"exp": now + 3600, "cnf": {"kid": key.kid(), "jkt": key.kid()}, "pad": "A".repeat(900)});
        let at = sign_jws(
            &authority,
            br#"{"alg":"ES256","kid":"as"}"#,
            claims.to_string().as_bytes(),
        )
        .expect("token");
        let shr = SignedHttpRequest::new("GET", URL, &at)
            .and_then(|r| r.timestamp(now).sign(&key))
            .expect("shr");
        let dpop = DpopProof::new("GET", URL)
            .and_then(|p| p.access_token(&at))
            .and_then(|p| p.issued_at(now).sign(&key))
            .expect("dpop");
        let (input, sig) = shr.rsplit_once('.').expect("jws");
        let sig = URL_SAFE_NO_PAD.decode(sig).expect("b64");
        let public = key.public_jwk().clone();
        let alg_v = key.algorithm();
        // The same proof is verified again and again: no replay cache.
        let shr_v = ShrVerifier::new(Arc::new(DecodeOnly)).without_replay_protection();
        let shr_jwks = ShrVerifier::new(jwks.clone()).without_replay_protection();
        let dpop_v = DpopVerifier::new(Arc::new(DecodeOnly)).without_replay_protection();
        let req = Request::new("GET", URL);

        let mut g = c.benchmark_group(alg.to_lowercase());
        for raw in raw::keys(alg_v) {
            let raw_sig = (raw.sign)(input.as_bytes());
            g.bench_function(format!("raw_{}_verify", raw.name), |b| {
                b.iter(|| assert!((raw.verify)(black_box(input.as_bytes()), &raw_sig)))
            });
        }
        g.bench_function("raw_signature_verify", |b| {
            b.iter(|| public.verify(alg_v, black_box(input.as_bytes()), &sig))
        });
        g.bench_function("verify_shr", |b| {
            b.iter(|| shr_v.verify_at(black_box(&shr), &req, now).expect("valid"))
        });
        let authorization = format!("DPoP {at}");
        let dpop_req = Request::new("GET", URL)
            .header("DPoP", &dpop)
            .header("Authorization", &authorization);
        g.bench_function("verify_dpop", |b| {
            b.iter(|| dpop_v.verify_at(black_box(&dpop_req), now).expect("valid"))
        });
        g.bench_function("verify_shr_with_jwks", |b| {
            b.iter(|| {
                shr_jwks
                    .verify_at(black_box(&shr), &req, now)
                    .expect("valid")
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

/// A compact JWS of `header` and `payload` signed by `key`.
fn sign_jws(key: &PopKey, header: &[u8], payload: &[u8]) -> popkey::Result<String> {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = key.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}
