//! Requests per second through `PopClient` against the local API (loopback),
//! beside the same loop with a plain bearer token, in one run.
//!
//! `cargo bench --bench client` (keys from `POPKEY_BENCH_KEYS`, a
//! comma-separated list of key URIs; default `mem:`). A cached token plus a
//! fresh proof per request must add no network round trip: the PoP and DPoP
//! rows differ from the bearer row by the proof's signing and verification
//! cost only. Under `cargo test` it runs a few requests as a smoke test.

use popkey_testkit::authority;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use popkey::client::{ClientAuth, PopClient, RetryPolicy, Scheme, TokenCache, TokenRequest};
use popkey::PopKey;

#[tokio::main]
async fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let duration = if measuring {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(200)
    };
    let keys = std::env::var("POPKEY_BENCH_KEYS").unwrap_or_else(|_| "mem:".into());
    let server = authority::spawn(
        authority::Config {
            clients: vec![authority::Client {
                id: "bench".into(),
                secret: Some("s".into()),
                jwk: None,
            }],
            ..Default::default()
        },
        "127.0.0.1:0",
    )
    .await;
    println!(
        "{:<48} {:>8} {:>10} {:>10} {:>14}",
        "key", "scheme", "req/s", "p50 µs", "token fetches"
    );
    for uri in keys.split(',').filter(|k| !k.is_empty()) {
        let key = PopKey::open(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
        for scheme in [Scheme::Bearer, Scheme::Pop, Scheme::Dpop] {
            let req = TokenRequest::new(
                &server.token_endpoint,
                "bench",
                &["api://local/.default"],
                scheme,
                ClientAuth::secret("s"),
            )
            .expect("request");
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http");
            let client = PopClient::with_parts(
                key.clone(),
                req,
                http,
                Arc::new(TokenCache::new()),
                RetryPolicy::default(),
            )
            .expect("client");
            client.get(&server.api).await.expect("warm-up"); // token fetched and cached here
            let fetches_before = server.stats.token_requests.load(Ordering::SeqCst);
            let mut lat = Vec::new();
            let start = Instant::now();
            while start.elapsed() < duration {
                let t0 = Instant::now();
                let resp = client.get(&server.api).await.expect("call");
                assert!(resp.status().is_success(), "{}", resp.status());
                lat.push(t0.elapsed());
            }
            let rps = lat.len() as f64 / start.elapsed().as_secs_f64();
            lat.sort();
            let fetched = server.stats.token_requests.load(Ordering::SeqCst) - fetches_before;
            println!(
                "{:<16} {:>8} {:>10.0} {:>10.0} {:>14}",
                format!(
                    "{} {}",
                    key.location().backend,
                    popkey::PopCryptoProvider::algorithm(&key)
                ),
                format!("{scheme:?}"),
                rps,
                lat[lat.len() / 2].as_secs_f64() * 1e6,
                fetched
            );
        }
    }
}
