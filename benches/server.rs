//! What the resource-server layer costs: the same axum app with
//! `PopAuthLayer` and without it, driven by the same reqwest client in the
//! same run, plus the verification work the layer cannot avoid, measured
//! in-process beside it. `cargo bench --bench server --features server,axum`.
//!
//! Every request carries `Authorization: DPoP <ES256 access token>` and a
//! fresh ES256 `DPoP` proof, signed before the clock starts (the client's
//! signing is not measured); like a real client, it sends one access token
//! with every proof. Every app gets the very same kind of requests:
//!
//! * without the layer (the handler only);
//! * raw signatures: the handler checks the proof's and the token's
//!   signatures with the crypto library (aws-lc-rs; keys known, no JOSE,
//!   no claims, no replay) — "the signature verification itself", the
//!   baseline of the target;
//! * with `PopAuthLayer` (its `JwksValidator` remembers accepted tokens,
//!   the default), and with the token cache off (every token's signature
//!   checked on every request);
//! * the full `DpopVerifier` called by hand in the handler.
//!
//! Printed: sequential (one request at a time) and concurrent (16 clients)
//! requests/s, mean, p50 and p99 for each app; each app's cost per request
//! (its sequential p50 minus the p50 without the layer) and the layer's
//! cost against the raw signatures' (target ≤ 1.10); in-process medians of
//! per-call timings over distinct proofs: raw verification of the proof's
//! signature and of both, the full verifier with and without the token
//! cache, and `ResourceServer::authenticate` (the layer's core without
//! HTTP).
//!
//! Rounds alternate the apps so background load hits all alike; the
//! medians of the rounds are printed. `POPKEY_BENCH_REQUESTS` (default
//! 4000 per sequential round) scales it. Under `cargo test` it runs one
//! small round as a smoke test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use popkey::dpop::DpopProof;
use popkey::server::{PopAuthLayer, ResourceServer};
use popkey::verify::dpop::DpopVerifier;
use popkey::verify::token::JwksValidator;
use popkey::verify::Request;
use popkey::{PopCryptoProvider, PopKey};
use serde_json::json;

mod raw;

const CLIENTS: usize = 16;

fn b64(bytes: impl AsRef<[u8]>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct Setup {
    jwks: String,
    token: String,
    key: PopKey,
    /// Uncompressed SEC1 points of the client's and the authority's keys,
    /// for the raw verifications.
    key_point: Vec<u8>,
    authority_point: Vec<u8>,
}

fn sec1_point(key: &PopKey) -> Vec<u8> {
    use base64::Engine;
    let jwk: serde_json::Value = serde_json::from_str(key.canonical_public_key_jwk()).expect("jwk");
    let coord = |c: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwk[c].as_str().expect("coordinate"))
            .expect("base64")
    };
    [vec![4u8], coord("x"), coord("y")].concat()
}

/// The two signatures of a request, checked raw: the proof's over its
/// signing input with the client's key, the token's with the authority's.
struct RawCheck {
    proof: raw::SharedVerifyFn,
    token: raw::SharedVerifyFn,
    token_input: Vec<u8>,
    token_sig: Vec<u8>,
}

impl RawCheck {
    fn new(s: &Setup) -> Self {
        let (input, sig) = split_sig(&s.token).expect("token");
        RawCheck {
            proof: raw::es256_verifier(s.key_point.clone()),
            token: raw::es256_verifier(s.authority_point.clone()),
            token_input: input.as_bytes().to_vec(),
            token_sig: sig,
        }
    }

    /// Both signatures of a request whose proof is `proof` and whose token
    /// is `token` (the setup's, which is what the bench sends).
    fn both(&self, proof: &str, token: &str) -> bool {
        let Some((input, sig)) = split_sig(proof) else {
            return false;
        };
        let Some((t_input, t_sig)) = split_sig(token) else {
            return false;
        };
        (self.proof)(input.as_bytes(), &sig) && (self.token)(t_input.as_bytes(), &t_sig)
    }
}

/// A compact JWS's signing input and decoded signature.
fn split_sig(jws: &str) -> Option<(&str, Vec<u8>)> {
    use base64::Engine;
    let (input, sig) = jws.rsplit_once('.')?;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .ok()?;
    Some((input, sig))
}

fn setup() -> Setup {
    let authority = PopKey::open("mem:").expect("key");
    let mut jwk: serde_json::Value =
        serde_json::from_str(authority.canonical_public_key_jwk()).expect("jwk");
    jwk["kid"] = "as".into();
    let key = PopKey::open("mem:").expect("key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({"iss": "https://as.example", "aud": "api", "sub": "bench",
        "exp": now + 3600, "cnf": {"jkt": key.kid()}});
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"ES256","kid":"as"}"#),
        b64(claims.to_string())
    );
    let token = format!(
        "{input}.{}",
        b64(authority.sign(input.as_bytes()).expect("sign"))
    );
    Setup {
        jwks: json!({"keys": [jwk]}).to_string(),
        token,
        key_point: sec1_point(&key),
        authority_point: sec1_point(&authority),
        key,
    }
}

/// The verifier the layer runs: `token_cache` is the `JwksValidator`'s
/// cache of accepted tokens (0: every token's signature checked on every
/// request).
fn verifier_with(s: &Setup, token_cache: usize) -> DpopVerifier {
    DpopVerifier::new(Arc::new(
        JwksValidator::from_jwks(&s.jwks)
            .expect("jwks")
            .issuer("https://as.example")
            .audience("api")
            .token_cache(token_cache),
    ))
}

fn verifier(s: &Setup) -> DpopVerifier {
    verifier_with(s, 1024)
}

fn proofs(s: &Setup, url: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            DpopProof::new("GET", url)
                .and_then(|p| p.access_token(&s.token))
                .and_then(|p| p.sign(&s.key))
                .expect("proof")
        })
        .collect()
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[derive(Clone, Copy)]
struct Run {
    rps: f64,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Sends every proof to `url` from `clients` tasks; all must pass.
async fn drive(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    proofs: Vec<String>,
    clients: usize,
) -> Run {
    let per = proofs.len() / clients;
    let mut chunks: Vec<Vec<String>> = Vec::new();
    let mut it = proofs.into_iter();
    for _ in 0..clients {
        chunks.push(it.by_ref().take(per).collect());
    }
    let auth = format!("DPoP {token}");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let (http, url, auth) = (http.clone(), url.to_owned(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(chunk.len());
            for proof in chunk {
                let t = Instant::now();
                let resp = http
                    .get(&url)
                    .header("authorization", &auth)
                    .header("dpop", proof)
                    .send()
                    .await
                    .expect("send");
                assert_eq!(resp.status(), 200, "the bench request was refused");
                let _ = resp.bytes().await.expect("body");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all: Vec<Duration> = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    let wall = start.elapsed();
    all.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Run {
        rps: all.len() as f64 / wall.as_secs_f64(),
        mean_us: all.iter().map(|d| us(*d)).sum::<f64>() / all.len() as f64,
        p50_us: us(all[all.len() / 2]),
        p99_us: us(all[(all.len() * 99 / 100).min(all.len() - 1)]),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn med_run(runs: &[Run]) -> Run {
    Run {
        rps: median(runs.iter().map(|r| r.rps).collect()),
        mean_us: median(runs.iter().map(|r| r.mean_us).collect()),
        p50_us: median(runs.iter().map(|r| r.p50_us).collect()),
        p99_us: median(runs.iter().map(|r| r.p99_us).collect()),
    }
}

fn print_run(name: &str, r: Run) {
    println!(
        "  {name:<14} {:>9.0} req/s   mean {:>7.1} µs   p50 {:>7.1} µs   p99 {:>7.1} µs",
        r.rps, r.mean_us, r.p50_us, r.p99_us
    );
}

/// In-process costs, medians of per-call timings over distinct proofs
/// (robust to a busy machine), µs: (raw ES256 verification of the proof's
/// signature and the token's, the proof's alone, the full
/// `DpopVerifier::verify` with the token cache, without it).
fn in_process(s: &Setup, n: usize) -> (f64, f64, f64, f64) {
    let url = "http://127.0.0.1:1/items";
    let ps = proofs(s, url, n);
    let raw = RawCheck::new(s);
    let us = |t: Instant| t.elapsed().as_secs_f64() * 1e6;
    let pairs: Vec<(&str, Vec<u8>)> = ps.iter().map(|p| split_sig(p).expect("proof")).collect();
    let mut both_times = Vec::with_capacity(n);
    let mut proof_times = Vec::with_capacity(n);
    for (input, sig) in &pairs {
        let t = Instant::now();
        assert!((raw.proof)(std::hint::black_box(input.as_bytes()), sig));
        proof_times.push(us(t));
        let t = Instant::now();
        assert!((raw.proof)(std::hint::black_box(input.as_bytes()), sig));
        assert!((raw.token)(&raw.token_input, &raw.token_sig));
        both_times.push(us(t));
    }
    let auth = format!("DPoP {}", s.token);
    let full = |v: DpopVerifier| -> f64 {
        let times: Vec<f64> = ps
            .iter()
            .map(|p| {
                let t = Instant::now();
                let r = Request::new("GET", url)
                    .header("authorization", &auth)
                    .header("dpop", p);
                v.verify(&r).expect("verify");
                us(t)
            })
            .collect();
        median(times)
    };
    (
        median(both_times),
        median(proof_times),
        full(verifier(s)),
        full(verifier_with(s, 0)),
    )
}

/// `ResourceServer::authenticate` in-process (no HTTP), median per call, µs.
async fn core_in_process(s: &Setup, n: usize) -> f64 {
    let server = ResourceServer::builder()
        .dpop(verifier(s))
        .build()
        .expect("server");
    let ps = proofs(s, "http://127.0.0.1:1/items", n);
    let uri: http::Uri = "/items".parse().expect("uri");
    let mut times = Vec::with_capacity(n);
    for p in ps {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "authorization",
            format!("DPoP {}", s.token).parse().expect("header"),
        );
        headers.insert("dpop", p.parse().expect("header"));
        headers.insert("host", "127.0.0.1:1".parse().expect("header"));
        let t = Instant::now();
        server
            .authenticate(&http::Method::GET, &uri, &headers, None, None)
            .await
            .expect("authenticate");
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    median(times)
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("POPKEY_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|_| measuring)
        .unwrap_or(if measuring { 4000 } else { 64 });
    let rounds = if measuring { 3 } else { 1 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let s = setup();
    rt.block_on(async {
        let handler = || get(|| async { "ok" });
        let layered = |v: DpopVerifier| {
            let server = ResourceServer::builder().dpop(v).build().expect("server");
            Router::new()
                .route("/items", handler())
                .layer(PopAuthLayer::new(Arc::new(server)))
        };
        let with = serve(layered(verifier(&s))).await;
        let uncached = serve(layered(verifier_with(&s, 0))).await;
        let without = serve(Router::new().route("/items", handler())).await;
        // The same verification written by hand in the handler: what an app
        // pays for the checks themselves, in the same HTTP context.
        let by_hand = Arc::new(verifier(&s));
        let by_hand = serve(Router::new().route(
            "/items",
            get(move |headers: http::HeaderMap| {
                let v = by_hand.clone();
                async move {
                    let host = headers["host"].to_str().unwrap_or_default();
                    let url = format!("http://{host}/items");
                    let mut r = Request::new("GET", &url);
                    for (n, value) in &headers {
                        if let Ok(value) = value.to_str() {
                            r = r.header(n.as_str(), value);
                        }
                    }
                    match v.verify_async(&r).await {
                        Ok(_) => http::StatusCode::OK,
                        Err(_) => http::StatusCode::UNAUTHORIZED,
                    }
                }
            }),
        ))
        .await;
        // The signature verification itself and nothing else: the handler
        // checks the proof's and the token's signatures raw (keys known,
        // no JOSE, no claims, no replay) — the target's baseline.
        let raw_check = Arc::new(RawCheck::new(&s));
        let raw_sigs = serve(Router::new().route(
            "/items",
            get(move |headers: http::HeaderMap| {
                let raw = raw_check.clone();
                async move {
                    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
                    let token = header("authorization").and_then(|a| a.strip_prefix("DPoP "));
                    match (header("dpop"), token) {
                        (Some(proof), Some(token)) if raw.both(proof, token) => http::StatusCode::OK,
                        _ => http::StatusCode::UNAUTHORIZED,
                    }
                }
            }),
        ))
        .await;
        let url = |a: SocketAddr| format!("http://{a}/items");
        let apps = [
            ("without layer", url(without)),
            ("raw signatures", url(raw_sigs)),
            ("with layer", url(with)),
            ("layer, no cache", url(uncached)),
            ("by hand", url(by_hand)),
        ];
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("client");
        // Warm up every app (connections, allocators, the token cache).
        for (_, u) in &apps {
            drive(&http, u, &s.token, proofs(&s, u, 200), 4).await;
        }
        let mut seq: Vec<Vec<Run>> = vec![Vec::new(); apps.len()];
        let mut conc: Vec<Vec<Run>> = vec![Vec::new(); apps.len()];
        // Rounds alternate the apps so background load hits all alike.
        for _ in 0..rounds {
            for (i, (_, u)) in apps.iter().enumerate() {
                let p = proofs(&s, u, n);
                seq[i].push(drive(&http, u, &s.token, p, 1).await);
            }
            for (i, (_, u)) in apps.iter().enumerate() {
                let p = proofs(&s, u, n * 2);
                conc[i].push(drive(&http, u, &s.token, p, CLIENTS).await);
            }
        }
        let (raw2_us, raw1_us, full_us, full_nocache_us) = in_process(&s, n);
        let core_us = core_in_process(&s, n).await;
        let seq: Vec<Run> = seq.iter().map(|r| med_run(r)).collect();
        let conc: Vec<Run> = conc.iter().map(|r| med_run(r)).collect();
        println!("server bench: ES256 DPoP proof + ES256 access token, {n} requests per sequential round, median of {rounds} rounds");
        println!("sequential (1 client):");
        for ((name, _), r) in apps.iter().zip(&seq) {
            print_run(name, *r);
        }
        println!("concurrent ({CLIENTS} clients, {} requests):", n * 2);
        for ((name, _), r) in apps.iter().zip(&conc) {
            print_run(name, *r);
        }
        println!("in-process (median per call, distinct proofs):");
        println!("  raw ES256 verify, the proof's signature          {raw1_us:>7.1} µs");
        println!("  raw ES256 verify, the proof's and the token's    {raw2_us:>7.1} µs");
        println!("  DpopVerifier::verify (token cache)               {full_us:>7.1} µs");
        println!("  DpopVerifier::verify (no token cache)            {full_nocache_us:>7.1} µs");
        println!("  ResourceServer::authenticate (core, cache)       {core_us:>7.1} µs");
        let cost = |i: usize| seq[i].p50_us - seq[0].p50_us;
        let (raw_cost, layer, nocache, hand) = (cost(1), cost(2), cost(3), cost(4));
        println!("cost per request (sequential p50 − p50 without the layer):");
        println!("  raw signatures (proof + token)  {raw_cost:>7.1} µs");
        println!(
            "  layer                           {layer:>7.1} µs = {:.2} × the raw signatures (target ≤ 1.10)",
            layer / raw_cost
        );
        println!(
            "  layer, no token cache           {nocache:>7.1} µs = {:.2} × the raw signatures",
            nocache / raw_cost
        );
        println!(
            "  verifier by hand                {hand:>7.1} µs; layer / by hand = {:.2}",
            layer / hand
        );
        let rps = |i: usize| conc[i].rps;
        println!(
            "concurrent throughput: layer {:.2} × the raw signatures' app, no token cache {:.2} ×",
            rps(2) / rps(1),
            rps(3) / rps(1)
        );
    });
}
