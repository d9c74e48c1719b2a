//! `popkey bench`: what a key's device costs, what popkey adds, and what a
//! resource server verifying the key's proofs can expect.
//!
//! Phases run one after another with the same key and thread count:
//!
//! * signing: the key's raw `sign` over a signing input of SHR size, SHR
//!   creation and DPoP creation;
//! * verification: the raw signature check of the key's public JWK, then
//!   the full `ShrVerifier` and `DpopVerifier` (replay store included) over
//!   proofs signed beforehand, each verified once;
//! * crypto libraries: raw sign and verify of a software key of the same
//!   algorithm with aws-lc-rs (the default provider) and the pure-Rust
//!   RustCrypto crates, so the provider choice stays visible.
//!
//! Each phase reports operations per second and p50/p99 latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::Args;
use popkey::dpop::DpopProof;
use popkey::shr::SignedHttpRequest;
use popkey::verify::dpop::DpopVerifier;
use popkey::verify::replay::MemoryReplayCache;
use popkey::verify::shr::ShrVerifier;
use popkey::verify::token::DecodeOnly;
use popkey::verify::Request;
use popkey::{Algorithm, PopCryptoProvider, PopKey};
use serde_json::{json, Map, Value};

use crate::KeyArg;

#[derive(Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    key: KeyArg,
    /// Signing threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// Seconds per phase.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

struct Phase {
    ops: u64,
    elapsed: Duration,
    latencies_ns: Vec<u64>,
}

impl Phase {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return 0.0;
        }
        let idx = ((self.latencies_ns.len() - 1) as f64 * p).round() as usize;
        self.latencies_ns[idx] as f64 / 1000.0
    }
}

fn run_phase<F, E>(threads: u32, dur: Duration, op: F) -> Result<Phase, String>
where
    F: Fn() -> Result<(), E> + Sync,
    E: std::fmt::Display,
{
    let start = Instant::now();
    let deadline = start + dur;
    let results: Vec<Result<Vec<u64>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut lat = Vec::with_capacity(1 << 16);
                    loop {
                        let t0 = Instant::now();
                        op().map_err(|e| e.to_string())?;
                        let t1 = Instant::now();
                        lat.push((t1 - t0).as_nanos() as u64);
                        if t1 >= deadline {
                            return Ok(lat);
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a bench thread panicked".into()))
            })
            .collect()
    });
    let elapsed = start.elapsed();
    finish(results, elapsed)
}

fn finish(results: Vec<Result<Vec<u64>, String>>, elapsed: Duration) -> Result<Phase, String> {
    let mut latencies_ns = Vec::new();
    for r in results {
        latencies_ns.extend(r?);
    }
    latencies_ns.sort_unstable();
    Ok(Phase {
        ops: latencies_ns.len() as u64,
        elapsed,
        latencies_ns,
    })
}

/// Runs `op` once on every item of `items`, split over `threads` threads
/// (for work that must not repeat, like verifying with a replay store).
fn run_each<T, F, E>(threads: u32, items: &[T], op: F) -> Result<Phase, String>
where
    T: Sync,
    F: Fn(&T) -> Result<(), E> + Sync,
    E: std::fmt::Display,
{
    let chunk = items.len().div_ceil(threads as usize).max(1);
    let start = Instant::now();
    let results: Vec<Result<Vec<u64>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let op = &op;
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(part.len());
                    for item in part {
                        let t0 = Instant::now();
                        op(item).map_err(|e| e.to_string())?;
                        lat.push(t0.elapsed().as_nanos() as u64);
                    }
                    Ok(lat)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a bench thread panicked".into()))
            })
            .collect()
    });
    finish(results, start.elapsed())
}

/// `n` proofs made by `make`, on `threads` threads.
fn make_pool<F>(threads: u32, n: usize, make: F) -> Result<Vec<String>, String>
where
    F: Fn() -> popkey::Result<String> + Sync,
{
    let per = n.div_ceil(threads as usize);
    let parts: Vec<Result<Vec<String>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    (0..per)
                        .map(|_| make().map_err(|e| e.to_string()))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a bench thread panicked".into()))
            })
            .collect()
    });
    let mut pool = Vec::with_capacity(per * threads as usize);
    for p in parts {
        pool.extend(p?);
    }
    pool.truncate(n);
    Ok(pool)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An access token about the size of an Entra ID JWT, bound to `key`
/// (`cnf.kid` for SHR, `cnf.jkt` for DPoP) and signed by `authority`.
fn access_token(authority: &PopKey, key: &PopKey) -> Result<String, String> {
    let header = b64(br#"{"typ":"JWT","alg":"ES256","kid":"as"}"#);
    let claims = json!({
        "exp": popkey_now() + 24 * 3600,
        "cnf": {"kid": key.kid(), "jkt": key.kid()},
        "pad": "A".repeat(900),
    });
    let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let sig = authority
        .sign(input.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(format!("{input}.{}", b64(&sig)))
}

fn popkey_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn run(args: &BenchArgs) -> Result<String, String> {
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err("--seconds must be between 0 and 3600".into());
    }
    let key: PopKey = args.key.open().map_err(|e| e.to_string())?;
    let dur = Duration::from_secs_f64(args.seconds);
    let threads = args.threads;
    let url = "https://api.example.com/v1/items?page=2";
    let authority = PopKey::open("mem:").map_err(|e| e.to_string())?;
    let token = access_token(&authority, &key)?;
    let shr = SignedHttpRequest::new("GET", url, &token).map_err(|e| e.to_string())?;
    let dpop = DpopProof::new("GET", url)
        .and_then(|p| p.access_token(&token))
        .map_err(|e| e.to_string())?;
    // The raw phases sign and verify an input as long as an SHR's signing input.
    let sample = shr.sign(&key).map_err(|e| e.to_string())?;
    let raw_input = vec![b'A'; sample.rfind('.').unwrap_or(sample.len())];
    let raw_sig = key.sign(&raw_input).map_err(|e| e.to_string())?;
    let public = key.public_jwk().clone();
    let alg = key.algorithm();

    // Warm up caches, the CPU clock and any device session before measuring.
    run_phase(threads, dur.mul_f64(0.2), || key.sign(&raw_input).map(drop))?;
    let raw = run_phase(threads, dur, || key.sign(&raw_input).map(drop))?;
    let shr_phase = run_phase(threads, dur, || shr.sign(&key).map(drop))?;
    let dpop_phase = run_phase(threads, dur, || dpop.sign(&key).map(drop))?;

    // Verification. The full verifiers keep a replay store, so each proof is
    // verified once: sign as many as one phase can verify (bounded by what
    // the key can sign in one phase, and by memory).
    let raw_verify = run_phase(threads, dur, || public.verify(alg, &raw_input, &raw_sig))?;
    let signable = dpop_phase.per_sec().min(shr_phase.per_sec()) * args.seconds;
    let pool_len = (raw_verify.per_sec() * args.seconds)
        .min(signable)
        .clamp(100.0, 60_000.0) as usize;
    let shr_pool = make_pool(threads, pool_len, || shr.sign(&key))?;
    let dpop_pool = make_pool(threads, pool_len, || dpop.sign(&key))?;
    let replay = || Arc::new(MemoryReplayCache::new(pool_len * 2 + 16));
    let shr_verifier = ShrVerifier::new(Arc::new(DecodeOnly))
        .algorithms(&[alg])
        .replay_store(replay());
    let dpop_verifier = DpopVerifier::new(Arc::new(DecodeOnly))
        .algorithms(&[alg])
        .replay_store(replay());
    let request = Request::new("GET", url);
    let verify_shr = run_each(threads, &shr_pool, |p| {
        shr_verifier.verify(p, &request).map(drop)
    })?;
    let dpop_authorization = format!("DPoP {token}");
    let verify_dpop = run_each(threads, &dpop_pool, |p| {
        let request = Request::new("GET", url)
            .header("Authorization", &dpop_authorization)
            .header("DPoP", p);
        dpop_verifier.verify(&request).map(drop)
    })?;
    drop((shr_pool, dpop_pool));

    let mut out = Map::new();
    out.insert("key".into(), json!(key.uri()));
    out.insert("backend".into(), json!(key.location().backend));
    out.insert("alg".into(), json!(alg.as_str()));
    out.insert("threads".into(), json!(threads));
    out.insert("seconds_per_phase".into(), json!(args.seconds));
    out.insert("crypto_provider".into(), json!(popkey::crypto_provider()));
    for (name, phase) in [
        ("raw_sign", &raw),
        ("shr", &shr_phase),
        ("dpop", &dpop_phase),
        ("raw_verify", &raw_verify),
        ("verify_shr", &verify_shr),
        ("verify_dpop", &verify_dpop),
    ] {
        insert_phase(&mut out, name, phase);
    }
    out.insert(
        "shr_vs_raw".into(),
        json!(round3(shr_phase.per_sec() / raw.per_sec())),
    );
    out.insert(
        "dpop_vs_raw".into(),
        json!(round3(dpop_phase.per_sec() / raw.per_sec())),
    );
    out.insert(
        "verify_shr_vs_raw_verify".into(),
        json!(round3(verify_shr.per_sec() / raw_verify.per_sec())),
    );
    out.insert(
        "verify_dpop_vs_raw_verify".into(),
        json!(round3(verify_dpop.per_sec() / raw_verify.per_sec())),
    );
    out.insert(
        "crypto_libraries".into(),
        libraries::measure(alg, threads, dur, &raw_input)?,
    );
    Ok(Value::Object(out).to_string())
}

fn insert_phase(out: &mut Map<String, Value>, name: &str, phase: &Phase) {
    out.insert(format!("{name}_per_sec"), json!(round1(phase.per_sec())));
    out.insert(
        format!("{name}_p50_us"),
        json!(round1(phase.percentile_us(0.50))),
    );
    out.insert(
        format!("{name}_p99_us"),
        json!(round1(phase.percentile_us(0.99))),
    );
    out.insert(format!("{name}_ops"), json!(phase.ops));
}

/// Raw sign/verify of the crypto libraries themselves, with software keys
/// of the benchmarked algorithm. Verification parses the public key on
/// every call, as a verifier of a proof that carries its key must.
mod libraries {
    use super::*;

    pub(super) fn measure(
        alg: Algorithm,
        threads: u32,
        dur: Duration,
        input: &[u8],
    ) -> Result<Value, String> {
        let mut out = Map::new();
        #[cfg(feature = "aws-lc-rs")]
        out.insert("aws-lc-rs".into(), aws_lc(alg, threads, dur, input)?);
        out.insert("rust-crypto".into(), rust_crypto(alg, threads, dur, input)?);
        Ok(Value::Object(out))
    }

    fn pair(sign: &Phase, verify: &Phase) -> Value {
        let mut m = Map::new();
        insert_phase(&mut m, "sign", sign);
        insert_phase(&mut m, "verify", verify);
        Value::Object(m)
    }

    #[cfg(feature = "aws-lc-rs")]
    fn aws_lc(alg: Algorithm, threads: u32, dur: Duration, input: &[u8]) -> Result<Value, String> {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{self as sig, KeyPair, UnparsedPublicKey};
        let fail = |e: aws_lc_rs::error::Unspecified| e.to_string();
        let rng = SystemRandom::new();
        match alg {
            Algorithm::ES256 => {
                let key = sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(fail)?;
                let public = key.public_key().as_ref().to_vec();
                let signature = key.sign(&rng, input).map_err(fail)?;
                let sign = run_phase(threads, dur, || key.sign(&rng, input).map(drop))?;
                let verify = run_phase(threads, dur, || {
                    UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, &public)
                        .verify(input, signature.as_ref())
                })?;
                Ok(pair(&sign, &verify))
            }
            Algorithm::RS256 | Algorithm::PS256 => {
                let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(fail)?;
                let (padding, params): (&'static dyn sig::RsaEncoding, _) =
                    if alg == Algorithm::PS256 {
                        (&sig::RSA_PSS_SHA256, &sig::RSA_PSS_2048_8192_SHA256)
                    } else {
                        (&sig::RSA_PKCS1_SHA256, &sig::RSA_PKCS1_2048_8192_SHA256)
                    };
                let public = key.public_key().as_ref().to_vec();
                let mut signature = vec![0u8; key.public_modulus_len()];
                key.sign(padding, &rng, input, &mut signature)
                    .map_err(fail)?;
                let sign = run_phase(threads, dur, || {
                    let mut out = vec![0u8; key.public_modulus_len()];
                    key.sign(padding, &rng, input, &mut out)
                })?;
                let verify = run_phase(threads, dur, || {
                    UnparsedPublicKey::new(params, &public).verify(input, &signature)
                })?;
                Ok(pair(&sign, &verify))
            }
        }
    }

    fn rust_crypto(
        alg: Algorithm,
        threads: u32,
        dur: Duration,
        input: &[u8],
    ) -> Result<Value, String> {
        use rand::rngs::OsRng;
        use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer, Verifier};
        let fail = |e: rsa::signature::Error| e.to_string();
        match alg {
            Algorithm::ES256 => {
                let key = p256::ecdsa::SigningKey::random(&mut OsRng);
                let point = key.verifying_key().to_encoded_point(false);
                let signature: p256::ecdsa::Signature = key.try_sign(input).map_err(fail)?;
                let sign = run_phase(threads, dur, || {
                    key.try_sign(input).map(|_: p256::ecdsa::Signature| ())
                })?;
                let verify = run_phase(threads, dur, || {
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(point.as_bytes())
                        .and_then(|k| k.verify(input, &signature))
                })?;
                Ok(pair(&sign, &verify))
            }
            Algorithm::RS256 | Algorithm::PS256 => {
                let private =
                    rsa::RsaPrivateKey::new(&mut OsRng, 2048).map_err(|e| e.to_string())?;
                let public = private.to_public_key();
                let (n, e) = {
                    use rsa::traits::PublicKeyParts;
                    (public.n().clone(), public.e().clone())
                };
                let parse = || rsa::RsaPublicKey::new(n.clone(), e.clone());
                let (sign, verify) = if alg == Algorithm::PS256 {
                    let key = rsa::pss::BlindedSigningKey::<sha256::Sha256>::new(private);
                    let signature = key.try_sign_with_rng(&mut OsRng, input).map_err(fail)?;
                    let sign = run_phase(threads, dur, || {
                        key.try_sign_with_rng(&mut OsRng, input)
                            .map(|s| drop(s.to_vec()))
                    })?;
                    let verify = run_phase(threads, dur, || {
                        let k = parse().map_err(|e| e.to_string())?;
                        rsa::pss::VerifyingKey::<sha256::Sha256>::new(k)
                            .verify(input, &signature)
                            .map_err(|e| e.to_string())
                    })?;
                    (sign, verify)
                } else {
                    let key = rsa::pkcs1v15::SigningKey::<sha256::Sha256>::new(private);
                    let signature = key.try_sign(input).map_err(fail)?;
                    let sign = run_phase(threads, dur, || {
                        key.try_sign(input).map(|s| drop(s.to_vec()))
                    })?;
                    let verify = run_phase(threads, dur, || {
                        let k = parse().map_err(|e| e.to_string())?;
                        rsa::pkcs1v15::VerifyingKey::<sha256::Sha256>::new(k)
                            .verify(input, &signature)
                            .map_err(|e| e.to_string())
                    })?;
                    (sign, verify)
                };
                Ok(pair(&sign, &verify))
            }
        }
    }

    /// SHA-256 as the `rsa` crate re-exports it (its `sha2` feature).
    mod sha256 {
        pub(super) use rsa::sha2::Sha256;
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
