//! `popkey gateway` behind nginx, measured (printed, never asserted):
//! `cargo bench --features gateway --bench gateway`.
//!
//! In one run, with one client (reqwest, keep-alive, C concurrent tasks)
//! and one upstream (the testkit's axum echo app):
//!
//! * nginx → upstream directly (no authentication);
//! * nginx → `auth_request` → `popkey gateway` → upstream, every request
//!   with a fresh ES256 DPoP proof (signed beforehand, not timed) and a
//!   DPoP-bound access token from the testkit's local authority;
//! * the gateway alone (Traefik-style `X-Forwarded-*` headers, no nginx).
//!
//! Prints requests/s and p50/p99 latency for each, raw. Sizes:
//! `POPKEY_BENCH_REQUESTS` (default 4000 per line) and
//! `POPKEY_BENCH_CONCURRENCY` (default 16).

use popkey_testkit::authority;
use popkey_testkit::gateway::{auth_request_http, EchoUpstream, GatewayProcess};
use popkey_testkit::nginx::Nginx;

use std::sync::Arc;
use std::time::{Duration, Instant};

use popkey::client::{ClientAuth, Scheme, TokenClient, TokenRequest};
use popkey::dpop::DpopProof;
use popkey::PopKey;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One request: URL and headers.
struct Req {
    url: String,
    headers: Vec<(&'static str, String)>,
}

/// Sends every request, `concurrency` at a time; returns the wall time and
/// each request's latency. Panics on a status other than 200.
async fn run(
    client: &reqwest::Client,
    reqs: Vec<Req>,
    concurrency: usize,
) -> (Duration, Vec<Duration>) {
    let queue = Arc::new(std::sync::Mutex::new(reqs));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let queue = queue.clone();
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let next = queue.lock().expect("queue").pop();
                let Some(r) = next else { break };
                let mut b = client.get(&r.url);
                for (n, v) in &r.headers {
                    b = b.header(*n, v);
                }
                let t = Instant::now();
                let resp = b.send().await.expect("request");
                let status = resp.status();
                let _ = resp.bytes().await.expect("body");
                lat.push(t.elapsed());
                assert_eq!(status, 200, "{}", r.url);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    (start.elapsed(), all)
}

fn report(name: &str, took: Duration, mut lat: Vec<Duration>) {
    lat.sort();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1e6
    };
    println!(
        "{name:<52} {:>6} req  {:>8.0} req/s  p50 {:>7.0} µs  p99 {:>7.0} µs",
        lat.len(),
        lat.len() as f64 / took.as_secs_f64(),
        pct(0.50),
        pct(0.99),
    );
}

fn main() {
    let n = env_usize("POPKEY_BENCH_REQUESTS", 4000);
    let c = env_usize("POPKEY_BENCH_CONCURRENCY", 16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = PopKey::open("mem:").expect("key");
    let auth = rt.block_on(authority::spawn(
        authority::Config {
            clients: vec![authority::Client {
                id: "bench".into(),
                secret: Some("bench-secret".into()),
                jwk: None,
            }],
            ..Default::default()
        },
        "127.0.0.1:0",
    ));
    let token = rt
        .block_on(async {
            let req = TokenRequest::new(
                &auth.token_endpoint,
                "bench",
                &["api://local/.default"],
                Scheme::Dpop,
                ClientAuth::secret("bench-secret"),
            )?;
            TokenClient::new()?.request(&req, &key).await
        })
        .expect("token")
        .access_token()
        .to_owned();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, auth.jwks.to_string()).expect("write");
    let issuer = format!("{}/{}/v2.0", auth.base, authority::TENANT);
    let gateway = GatewayProcess::start(&[
        "--issuer",
        &issuer,
        "--audience",
        "api://local",
        "--jwks",
        jwks.to_str().expect("path"),
        "--log-level",
        "warn",
    ]);
    let upstream = EchoUpstream::start();
    let nginx = Nginx::builder()
        .ports(2)
        .http(&auth_request_http(gateway.port, upstream.port))
        .start();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(c)
        .build()
        .expect("client");
    let authz = format!("DPoP {token}");
    let signed = |base: &str, public: &str, count: usize, traefik: bool| -> Vec<Req> {
        (0..count)
            .map(|i| {
                let path = format!("/api/items/{}", i % 50);
                let public_url = format!("{public}{path}");
                let proof = DpopProof::new("GET", &public_url)
                    .and_then(|p| p.access_token(&token))
                    .and_then(|p| p.sign(&key))
                    .expect("proof");
                let mut headers = vec![("Authorization", authz.clone()), ("DPoP", proof)];
                if traefik {
                    headers.push(("X-Forwarded-Method", "GET".into()));
                    headers.push(("X-Forwarded-Proto", "http".into()));
                    headers.push((
                        "X-Forwarded-Host",
                        public.trim_start_matches("http://").into(),
                    ));
                    headers.push(("X-Forwarded-Uri", path.clone()));
                }
                Req {
                    url: format!("{base}{path}"),
                    headers,
                }
            })
            .collect()
    };
    let via_gateway = nginx.url(0);
    let direct = nginx.url(1);
    let gw = format!("http://127.0.0.1:{}", gateway.port);
    println!("popkey gateway bench: {n} requests per line, {c} concurrent, ES256 DPoP, loopback");
    rt.block_on(async {
        // Warm-up: connections, keys, caches.
        run(&client, signed(&direct, &direct, 200, false), c).await;
        run(&client, signed(&via_gateway, &via_gateway, 200, false), c).await;
        run(&client, signed(&gw, "http://api.example", 200, true), c).await;
        for round in 1..=2 {
            let (t, l) = run(&client, signed(&direct, &direct, n, false), c).await;
            report(&format!("[{round}] nginx -> upstream (no auth)"), t, l);
            let (t, l) = run(&client, signed(&via_gateway, &via_gateway, n, false), c).await;
            report(
                &format!("[{round}] nginx -> auth_request gateway -> upstream"),
                t,
                l,
            );
            let (t, l) = run(&client, signed(&gw, "http://api.example", n, true), c).await;
            report(&format!("[{round}] gateway alone (X-Forwarded-*)"), t, l);
        }
    });
    drop(nginx);
    drop(upstream);
    drop(gateway);
}
