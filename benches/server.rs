//! What the resource-server layer costs: the same axum app with
//! `PopAuthLayer` and without it, driven by the same reqwest client in the
//! same run, plus the verification work the layer cannot avoid, measured
//! in-process beside it. `cargo bench --bench server --features server,axum`.
//!
//! Every request carries `Authorization: DPoP <ES256 access token>` and a
//! fresh ES256 `DPoP` proof, signed before the clock starts (the client's
//! signing is not measured). The app without the layer gets the very same
//! requests. Printed:
//!
//! * sequential (one request at a time): mean, p50, p99 latency and
//!   requests/s for each app; the difference of the medians (p50) is the
//!   layer's cost per request (the means are printed too; on a busy machine
//!   they carry the scheduler's stalls);
//! * concurrent (16 clients): requests/s, p50, p99 for each app;
//! * in-process, the median of per-call timings: raw ES256 verification
//!   (aws-lc-rs, the key parsed per call) and the full
//!   `DpopVerifier::verify` (proof + access-token signature, JOSE, claims,
//!   replay record), and `ResourceServer::authenticate` (the layer's core
//!   without HTTP: scheme, public URL, headers, the verifier);
//! * the same app verifying by hand in its handler (`DpopVerifier` on the
//!   request's headers, no layer): the checks' own cost in the same HTTP
//!   context, to set the layer's cost against;
//! * the layer's cost against two raw ES256 verifications (the proof's and
//!   the token's) — the target is at most +10 % — and against the full
//!   verifier.
//!
//! Rounds alternate the two apps so background load hits both alike; the
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
use popkey::{Algorithm, PopCryptoProvider, PopKey};
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
        key,
    }
}

fn verifier(s: &Setup) -> DpopVerifier {
    DpopVerifier::new(Arc::new(
        JwksValidator::from_jwks(&s.jwks)
            .expect("jwks")
            .issuer("https://as.example")
            .audience("api"),
    ))
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

/// In-process costs, medians of per-call timings (robust to a busy
/// machine): (raw ES256 verify, full DpopVerifier::verify), µs.
fn in_process(s: &Setup, n: usize) -> (f64, f64) {
    let raw = raw::keys(Algorithm::ES256).remove(0);
    let msg = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9";
    let sig = (raw.sign)(msg);
    let us = |t: Instant| t.elapsed().as_secs_f64() * 1e6;
    let raw_times: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            assert!((raw.verify)(std::hint::black_box(msg), &sig));
            us(t)
        })
        .collect();
    let url = "http://127.0.0.1:1/items";
    let v = verifier(s);
    let ps = proofs(s, url, n);
    let auth = format!("DPoP {}", s.token);
    let full_times: Vec<f64> = ps
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
    (median(raw_times), median(full_times))
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
        let server = ResourceServer::builder()
            .dpop(verifier(&s))
            .build()
            .expect("server");
        let with = serve(
            Router::new()
                .route("/items", handler())
                .layer(PopAuthLayer::new(Arc::new(server))),
        )
        .await;
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
        let by_hand_url = format!("http://{by_hand}/items");
        let with_url = format!("http://{with}/items");
        let without_url = format!("http://{without}/items");
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("client");
        // Warm up both (connections, allocators).
        drive(&http, &with_url, &s.token, proofs(&s, &with_url, 200), 4).await;
        drive(&http, &without_url, &s.token, proofs(&s, &without_url, 200), 4).await;
        drive(&http, &by_hand_url, &s.token, proofs(&s, &by_hand_url, 200), 4).await;

        let mut seq = (Vec::new(), Vec::new(), Vec::new());
        let mut conc = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let p = proofs(&s, &without_url, n);
            seq.0.push(drive(&http, &without_url, &s.token, p, 1).await);
            let p = proofs(&s, &with_url, n);
            seq.1.push(drive(&http, &with_url, &s.token, p, 1).await);
            let p = proofs(&s, &by_hand_url, n);
            seq.2.push(drive(&http, &by_hand_url, &s.token, p, 1).await);
            let p = proofs(&s, &without_url, n * 2);
            conc.0.push(drive(&http, &without_url, &s.token, p, CLIENTS).await);
            let p = proofs(&s, &with_url, n * 2);
            conc.1.push(drive(&http, &with_url, &s.token, p, CLIENTS).await);
            let p = proofs(&s, &by_hand_url, n * 2);
            conc.2.push(drive(&http, &by_hand_url, &s.token, p, CLIENTS).await);
        }
        let (raw_us, full_us) = in_process(&s, n);
        let core_us = core_in_process(&s, n).await;
        let (plain, layer, hand) = (med_run(&seq.0), med_run(&seq.1), med_run(&seq.2));
        println!("server bench: ES256 DPoP proof + ES256 access token, {n} requests per sequential round, median of {rounds} rounds");
        println!("sequential (1 client):");
        print_run("without layer", plain);
        print_run("with layer", layer);
        print_run("by hand", hand);
        println!("concurrent ({CLIENTS} clients, {} requests):", n * 2);
        print_run("without layer", med_run(&conc.0));
        print_run("with layer", med_run(&conc.1));
        print_run("by hand", med_run(&conc.2));
        let cost = layer.p50_us - plain.p50_us;
        println!("in-process (median per call):");
        println!("  raw ES256 verify (aws-lc-rs)          {raw_us:>7.1} µs");
        println!("  2 × raw ES256 verify (proof + token)  {:>7.1} µs", 2.0 * raw_us);
        println!("  DpopVerifier::verify (full)           {full_us:>7.1} µs");
        println!("  ResourceServer::authenticate (core)   {core_us:>7.1} µs");
        println!(
            "layer cost per request (sequential p50 with − p50 without): {cost:.1} µs (means: {:.1} µs)",
            layer.mean_us - plain.mean_us
        );
        println!(
            "  = {:.2} × two raw ES256 verifications (target ≤ 1.10), {:.2} × the full verifier",
            cost / (2.0 * raw_us),
            cost / full_us
        );
        let hand_cost = hand.p50_us - plain.p50_us;
        println!(
            "verification by hand in the handler (p50 − p50 without): {hand_cost:.1} µs; layer / by hand = {:.2} (target ≤ 1.10)",
            cost / hand_cost
        );
    });
}
