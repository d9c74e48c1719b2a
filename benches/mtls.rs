//! mTLS with popkey keys: the cost of a full handshake with a file, SoftHSM
//! and swtpm key in one run, and the handshake signatures a pooled
//! connection saves.
//!
//! `cargo bench --all-features --bench mtls`. Starts its own test CA
//! (`openssl`), Node `https` server (tests/tls/server.mjs, client
//! certificates required), SoftHSM token and swtpm. Per key it prints raw
//! numbers: the key's own signing time, a request over a fresh connection
//! (full handshake, one client signature each), a request over a pooled
//! connection, and how many handshake signatures each way needed. The
//! `no client cert` row is the same fresh-connection loop against a server
//! that asks for no certificate. Under `cargo test` it runs a few rounds as
//! a smoke test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use popkey::cert::CertificateTemplate;
use popkey::client::TlsConfig;
use popkey::tls::ClientIdentity;
use popkey::{Algorithm, CreateOptions, PopKey};
use popkey_testkit::softhsm;
use popkey_testkit::swtpm::Swtpm;

fn make_pki(dir: &Path) {
    popkey_testkit::pki::ca_and_server(dir, "bench CA");
}

struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(dir: &Path, client_ca: Option<&Path>) -> Server {
    let mut cmd = Command::new("node");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/server.mjs"))
        .arg(dir.join("server.pem"))
        .arg(dir.join("server.key"));
    if let Some(ca) = client_ca {
        cmd.arg(ca);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node is needed");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let v: serde_json::Value = serde_json::from_str(&line).expect("server did not start");
    let port = v["port"].as_u64().unwrap() as u16;
    Server(child, port)
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e6
}

fn tls(ca: &Path, id: Option<&ClientIdentity>) -> TlsConfig {
    let t = TlsConfig::new()
        .without_platform_roots()
        .add_ca_pem_file(ca)
        .unwrap();
    match id {
        Some(id) => t.client_identity(id.clone()),
        None => t,
    }
}

async fn request(http: &reqwest::Client, url: &str) {
    let r = http.get(url).send().await.unwrap();
    assert!(r.status().is_success());
    let _ = r.bytes().await.unwrap();
}

/// Fresh connections: `n` requests, each on a new client (new pool, new
/// TLS session cache: a full handshake). Returns per-request times.
async fn fresh(ca: &Path, id: Option<&ClientIdentity>, url: &str, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let http = tls(ca, id).http_client().unwrap();
        let t = Instant::now();
        request(&http, url).await;
        times.push(t.elapsed());
    }
    times
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let (handshakes, pooled) = if measuring { (30, 200) } else { (2, 5) };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_pki(d);
    let ca: PathBuf = d.join("ca.pem");

    let token = softhsm::token();
    let tpm = Swtpm::start();
    let file = |n: &str| format!("file:{}", d.join(n).display());
    let specs: Vec<(&str, String, Algorithm)> = vec![
        ("file ES256", file("es.pem"), Algorithm::ES256),
        ("softhsm ES256", token.uri("bench-es"), Algorithm::ES256),
        (
            "swtpm ES256",
            tpm.uri("handle=0x81000120"),
            Algorithm::ES256,
        ),
        ("file RS256", file("rs.pem"), Algorithm::RS256),
        ("softhsm RS256", token.uri("bench-rs"), Algorithm::RS256),
        (
            "swtpm RS256",
            tpm.uri("handle=0x81000121"),
            Algorithm::RS256,
        ),
    ];
    let mut ids = Vec::new();
    for (name, uri, alg) in &specs {
        let key = PopKey::create(uri, &CreateOptions::new().alg(*alg))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let cert = CertificateTemplate::new(&format!("CN={name}"))
            .unwrap()
            .self_signed(&key)
            .unwrap();
        ids.push((*name, ClientIdentity::new(key, cert).unwrap()));
    }
    let clients = d.join("clients.pem");
    let pem: String = ids
        .iter()
        .map(|(_, i)| i.certificate_chain().to_pem())
        .collect();
    std::fs::write(&clients, pem).unwrap();
    let mtls = start_server(d, Some(&clients));
    let plain = start_server(d, None);
    let url = |s: &Server| format!("https://127.0.0.1:{}/", s.1);

    println!("fresh connections: {handshakes} per key; pooled: {pooled} requests on one client");
    println!(
        "{:<16} {:>5} {:>10} {:>14} {:>10} {:>14} {:>10} {:>10}",
        "key",
        "TLS",
        "sign µs",
        "fresh req µs",
        "fresh sigs",
        "pooled req µs",
        "pool sigs",
        "saved"
    );
    // Warm-up (Node's first TLS connections are slower).
    fresh(&ca, None, &url(&plain), 3).await;
    let base = fresh(&ca, None, &url(&plain), handshakes).await;
    println!(
        "{:<16} {:>5} {:>10} {:>14.0} {:>10} {:>14} {:>10} {:>10}",
        "no client cert",
        "1.3",
        "-",
        median(base),
        0,
        "-",
        "-",
        "-"
    );
    for (name, id) in &ids {
        // The key's own signing time, off the TLS path.
        let key = id.key().clone();
        let sign_times: Vec<Duration> = tokio::task::spawn_blocking(move || {
            (0..handshakes)
                .map(|_| {
                    let t = Instant::now();
                    key.sign(b"bench").unwrap();
                    t.elapsed()
                })
                .collect()
        })
        .await
        .unwrap();
        let before = id.handshake_signatures();
        let fresh_times = fresh(&ca, Some(id), &url(&mtls), handshakes).await;
        let fresh_sigs = id.handshake_signatures() - before;

        let http = tls(&ca, Some(id)).http_client().unwrap();
        let before = id.handshake_signatures();
        let mut pooled_times = Vec::with_capacity(pooled);
        for _ in 0..pooled {
            let t = Instant::now();
            request(&http, &url(&mtls)).await;
            pooled_times.push(t.elapsed());
        }
        let pool_sigs = id.handshake_signatures() - before;
        println!(
            "{:<16} {:>5} {:>10.0} {:>14.0} {:>10} {:>14.0} {:>10} {:>10}",
            name,
            if id.needs_tls12() { "1.2" } else { "1.3" },
            median(sign_times),
            median(fresh_times),
            fresh_sigs,
            median(pooled_times),
            pool_sigs,
            pooled as u64 - pool_sigs,
        );
        assert_eq!(fresh_sigs, handshakes as u64, "{name}");
        assert_eq!(pool_sigs, 1, "{name}");
    }
}
