//! What popkey adds around a signature: SHR and DPoP creation with a
//! software key (ES256, RS256, PS256), beside the raw signature of the
//! crypto libraries in the same run (`raw_aws_lc_rs_sign`, the default
//! provider; `raw_rust_crypto_sign`, the pure-Rust fallback).
//!
//! `cargo bench --bench signing`. Read `shr` minus the raw row of the
//! provider in use (or the `*_jose_only` rows, where the signature costs
//! nothing) as popkey's own work.

mod raw;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use popkey::dpop::DpopProof;
use popkey::shr::SignedHttpRequest;
use popkey::{Algorithm, PopCryptoProvider, PopKey};

/// A provider whose signature is free, to isolate the JOSE work.
struct FreeSignature(PopKey);

impl PopCryptoProvider for FreeSignature {
    fn canonical_public_key_jwk(&self) -> &str {
        self.0.canonical_public_key_jwk()
    }
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
    fn sign(&self, _: &[u8]) -> popkey::Result<Vec<u8>> {
        Ok(vec![0u8; 64])
    }
    fn thumbprint(&self) -> String {
        self.0.kid().to_owned()
    }
}

fn bench(c: &mut Criterion) {
    let url = "https://api.example.com/v1/items?page=2";
    let token = format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.{}.sig",
        "A".repeat(1200)
    );
    let shr = SignedHttpRequest::new("GET", url, &token).expect("request");
    let dpop = DpopProof::new("GET", url)
        .and_then(|p| p.access_token(&token))
        .expect("proof");
    for alg in Algorithm::ALL {
        let key = PopKey::open(&format!("mem:?alg={alg}")).expect("mem key");
        let sample = shr.sign(&key).expect("sign");
        // The raw rows sign an input exactly as long as the SHR's signing
        // input (~2 kB with the access token), so the hashing they include
        // is the same and `shr - raw` is popkey's JOSE work alone.
        let input = vec![b'A'; sample.rfind('.').unwrap_or(0)];

        let mut g = c.benchmark_group(alg.as_str().to_lowercase());
        for raw in raw::keys(alg) {
            g.bench_function(format!("raw_{}_sign", raw.name), |b| {
                b.iter(|| (raw.sign)(black_box(&input)))
            });
        }
        g.bench_function("popkey_sign", |b| b.iter(|| key.sign(black_box(&input))));
        g.bench_function("shr", |b| b.iter(|| shr.sign(&key)));
        g.bench_function("dpop", |b| b.iter(|| dpop.sign(&key)));
        if alg == Algorithm::ES256 {
            let free = FreeSignature(key.clone());
            g.bench_function("shr_jose_only", |b| b.iter(|| shr.sign(&free)));
            g.bench_function("dpop_jose_only", |b| b.iter(|| dpop.sign(&free)));
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
