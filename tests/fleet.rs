//! A fleet of verifiers sharing one real `redis-server`: every proof is
//! accepted exactly once fleet-wide, faults fail closed, keys live no longer
//! than the proof's window, and nonces from a shared key ring are accepted
//! by every instance. Each test starts its own server (free port or unix
//! socket, own directory, no persistence) and kills it by PID on drop.
//! The core cases (exactly once, TTL, kill, pause) run against a real
//! Valkey server too. Redis Cluster: tests/fleet_cluster.rs.
#![cfg(feature = "redis")]

use popkey_testkit::common;
use popkey_testkit::redis as redis_server;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use popkey::dpop::DpopProof;
use popkey::verify::dpop::DpopVerifier;
use popkey::verify::nonce::NonceIssuer;
use popkey::verify::redis::RedisReplayStore;
use popkey::verify::token::DecodeOnly;
use popkey::verify::{ErrorKind, NoncePolicy, Request};
use popkey::PopKey;
use redis_server::RedisServer;
use serde_json::Value;

const URL: &str = "https://api.example.com/token";
/// max age (300 s) + clock skew (60 s), the default acceptance window.
const WINDOW_MS: i64 = 360_000;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn key() -> PopKey {
    PopKey::open("mem:").unwrap()
}

fn proof(key: &PopKey) -> String {
    DpopProof::new("POST", URL).unwrap().sign(key).unwrap()
}

fn verifier(store: Arc<RedisReplayStore>) -> DpopVerifier {
    DpopVerifier::new(Arc::new(DecodeOnly)).async_replay_store(store)
}

async fn check(v: &DpopVerifier, proof: &str) -> Result<(), ErrorKind> {
    v.verify_async(&Request::new("POST", URL).header("DPoP", proof))
        .await
        .map(|_| ())
        .map_err(|e| e.kind())
}

/// `popkey verify dpop --lines` sharing `url`: one process of the fleet.
fn instance(url: &str, prefix: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_popkey"))
        .args(["verify", "dpop", "--proof", "-", "--lines"])
        .args(["--method", "POST", "--url", URL])
        .args(["--replay-store", url, "--replay-prefix", prefix])
        .args(["--replay-timeout-ms", "2000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Sends every proof to `child`, returns its per-proof results.
fn feed(mut child: std::process::Child, proofs: Arc<Vec<String>>) -> Vec<Value> {
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for p in proofs.iter() {
            writeln!(stdin, "{p}").unwrap();
        }
    });
    let mut results: Vec<Value> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    writer.join().unwrap();
    assert!(child.wait().unwrap().success());
    results.pop(); // the summary line
    results
}

#[test]
fn two_processes_accept_each_proof_exactly_once() {
    let n: usize = std::env::var("POPKEY_FLEET_PROOFS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    exactly_once(RedisServer::tcp(), n);
}

/// The same fleet against a real Valkey server.
#[test]
fn valkey_two_processes_accept_each_proof_exactly_once() {
    let server = RedisServer::valkey_tcp();
    assert!(
        server.version().starts_with("Valkey"),
        "{}",
        server.version()
    );
    exactly_once(server, 2_000);
}

fn exactly_once(server: RedisServer, n: usize) {
    let k = key();
    let proofs: Vec<String> = (0..n).map(|_| proof(&k)).collect();
    // The proofs are genuine: ring (not popkey) checks a sample.
    for p in proofs.iter().step_by(250) {
        common::verify_dpop(p);
    }
    let proofs = Arc::new(proofs);
    let a = instance(&server.url(), "fleet:");
    let b = instance(&server.url(), "fleet:");
    let (pa, pb) = (proofs.clone(), proofs.clone());
    let ta = std::thread::spawn(move || feed(a, pa));
    let tb = std::thread::spawn(move || feed(b, pb));
    let (ra, rb) = (ta.join().unwrap(), tb.join().unwrap());
    assert_eq!(ra.len(), n);
    assert_eq!(rb.len(), n);
    let (mut by_a, mut by_b) = (0, 0);
    for (i, (x, y)) in ra.iter().zip(&rb).enumerate() {
        let ok = |v: &Value| v.get("error").is_none();
        match (ok(x), ok(y)) {
            (true, false) => {
                by_a += 1;
                assert_eq!(y["error"], "replay", "proof {i}: {y}");
            }
            (false, true) => {
                by_b += 1;
                assert_eq!(x["error"], "replay", "proof {i}: {x}");
            }
            _ => panic!("proof {i} not accepted exactly once: {x} / {y}"),
        }
    }
    assert_eq!(by_a + by_b, n);
    eprintln!("accepted by A: {by_a}, by B: {by_b}");
    // One key per proof, named by a hash, living no longer than the window.
    assert_eq!(server.cli(&["DBSIZE"]), n.to_string());
    let keys = server.cli(&["--scan", "--pattern", "fleet:*"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), n);
    for key in keys.iter().step_by(97) {
        let id = key.strip_prefix("fleet:dpop:").unwrap();
        assert_eq!(id.len(), 43, "{key}");
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let ttl: i64 = server.cli(&["PTTL", key]).parse().unwrap();
        assert!(ttl > 0 && ttl <= WINDOW_MS, "{key}: {ttl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_is_the_remaining_window() {
    ttl_check(RedisServer::tcp()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_ttl_is_the_remaining_window() {
    ttl_check(RedisServer::valkey_tcp()).await;
}

async fn ttl_check(server: RedisServer) {
    let store = Arc::new(RedisReplayStore::new(&server.url()).unwrap().prefix("t:"));
    let v = verifier(store);
    let k = key();
    let old = DpopProof::new("POST", URL)
        .unwrap()
        .issued_at(now() - 200)
        .sign(&k)
        .unwrap();
    common::verify_dpop(&old);
    check(&v, &old).await.unwrap();
    let keys = server.cli(&["--scan", "--pattern", "t:*"]);
    let ttl: i64 = server.cli(&["PTTL", keys.trim()]).parse().unwrap();
    // 360 s window, 200 s of it already gone (one second of slack for the
    // clock ticking between signing and checking).
    assert!(ttl > 0 && ttl <= WINDOW_MS - 199_000, "{ttl}");
    assert_eq!(check(&v, &old).await, Err(ErrorKind::Replay));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_fails_closed_and_the_same_verifier_recovers() {
    kill_and_recover(RedisServer::tcp()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_valkey_fails_closed_and_the_same_verifier_recovers() {
    kill_and_recover(RedisServer::valkey_tcp()).await;
}

async fn kill_and_recover(mut server: RedisServer) {
    let store = Arc::new(RedisReplayStore::new(&server.url()).unwrap());
    let v = verifier(store);
    let k = key();
    for _ in 0..20 {
        check(&v, &proof(&k)).await.unwrap();
    }
    server.kill();
    for i in 0..20 {
        let p = proof(&k);
        common::verify_dpop(&p);
        assert_eq!(
            check(&v, &p).await,
            Err(ErrorKind::ReplayStoreUnavailable),
            "proof {i} during the outage"
        );
    }
    server.start();
    // The connection manager reconnects in the background: the same
    // verifier object accepts again once Redis answers.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match check(&v, &proof(&k)).await {
            Ok(()) => break,
            Err(ErrorKind::ReplayStoreUnavailable) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("after the restart: {e}"),
        }
    }
    let p = proof(&k);
    check(&v, &p).await.unwrap();
    assert_eq!(check(&v, &p).await, Err(ErrorKind::Replay));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_times_out_and_fails_closed() {
    pause_and_resume(RedisServer::tcp()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_valkey_times_out_and_fails_closed() {
    pause_and_resume(RedisServer::valkey_tcp()).await;
}

async fn pause_and_resume(server: RedisServer) {
    let store = Arc::new(
        RedisReplayStore::new(&server.url())
            .unwrap()
            .timeout(Duration::from_millis(250)),
    );
    let v = verifier(store);
    let k = key();
    check(&v, &proof(&k)).await.unwrap();
    server.pause();
    for _ in 0..3 {
        assert_eq!(
            check(&v, &proof(&k)).await,
            Err(ErrorKind::ReplayStoreUnavailable)
        );
    }
    server.resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match check(&v, &proof(&k)).await {
            Ok(()) => break,
            Err(ErrorKind::ReplayStoreUnavailable) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("after resuming: {e}"),
        }
    }
}

/// A shell loop of `popkey verify` runs over a unix socket: the second use
/// of a proof is refused by another process.
#[test]
fn cli_runs_share_replay_state_over_a_unix_socket() {
    let server = RedisServer::unix();
    let k = key();
    let p = proof(&k);
    common::verify_dpop(&p);
    let url = server.url();
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_popkey"))
            .args([
                "verify", "dpop", "--proof", &p, "--method", "POST", "--url", URL,
            ])
            .args(["--replay-store", &url])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.success(), v)
    };
    let (ok, first) = run();
    assert!(ok, "{first}");
    let (ok, second) = run();
    assert!(!ok);
    assert_eq!(second["error"], "replay");
    assert_eq!(server.cli(&["DBSIZE"]), "1");
    drop(server);
    // Store gone: the CLI refuses, with the code that maps to 503.
    let (ok, third) = run();
    assert!(!ok);
    assert_eq!(third["error"], "replay_store_unavailable");
}

/// `rediss://` with the password from a file: TLS verified against the
/// test CA (through SSL_CERT_FILE), the password never printed.
#[test]
fn cli_over_tls_with_a_password_file() {
    let password = "s3cret-Replay-Pass";
    let server = RedisServer::tls_with_password(password);
    let dir = tempfile::tempdir().unwrap();
    let pass_file = dir.path().join("redis-password");
    std::fs::write(&pass_file, format!("{password}\n")).unwrap();
    let k = key();
    let p = proof(&k);
    common::verify_dpop(&p);
    let run = |pass: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_popkey"));
        cmd.args([
            "verify", "dpop", "--proof", &p, "--method", "POST", "--url", URL,
        ])
        .args([
            "--replay-store",
            &server.url(),
            "--replay-timeout-ms",
            "2000",
        ])
        .env("SSL_CERT_FILE", server.ca_file());
        if let Some(f) = pass {
            cmd.arg("--replay-password-file").arg(f);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains(password), "{stderr}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(!v.to_string().contains(password));
        (out.status.success(), v)
    };
    // Without the password: refused, fail closed.
    let (ok, v) = run(None);
    assert!(!ok);
    assert_eq!(v["error"], "replay_store_unavailable", "{v}");
    let (ok, v) = run(Some(&pass_file));
    assert!(ok, "{v}");
    let (ok, v) = run(Some(&pass_file));
    assert!(!ok);
    assert_eq!(v["error"], "replay");
    assert_eq!(server.cli(&["DBSIZE"]), "1");
}

#[test]
fn key_ring_nonces_cross_instances_and_rotate() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("nonce-ring");
    let secret = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
    std::fs::write(&ring, format!("k1 {}\n", secret(1))).unwrap();
    let a = NonceIssuer::from_key_ring_file(&ring, 120).unwrap();
    let b = NonceIssuer::from_key_ring_file(&ring, 120).unwrap();
    let t = now();
    let nonce_a = a.issue_at(t);
    b.validate_at(&nonce_a, t + 1).unwrap();
    // Another process (the CLI) loading the same ring accepts A's nonce.
    let k = key();
    let with_nonce = |n: &str| {
        DpopProof::new("POST", URL)
            .unwrap()
            .nonce(n)
            .unwrap()
            .sign(&k)
            .unwrap()
    };
    let cli = |p: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_popkey"))
            .args([
                "verify", "dpop", "--proof", p, "--method", "POST", "--url", URL,
            ])
            .args(["--nonce-key-ring", ring.to_str().unwrap()])
            .args(["--nonce-lifetime", "120"])
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let p = with_nonce(&nonce_a);
    common::verify_dpop(&p);
    let claims = cli(&p);
    assert_eq!(claims["nonce"], nonce_a.as_str(), "{claims}");
    let foreign = with_nonce(&NonceIssuer::random(120).issue_at(t));
    assert_eq!(cli(&foreign)["error"], "invalid_nonce");
    // Rotation, step 1: the new key is accepted everywhere first.
    std::fs::write(&ring, format!("k2 {}\nk1 {}\n", secret(2), secret(1))).unwrap();
    b.reload_key_ring(&std::fs::read_to_string(&ring).unwrap())
        .unwrap();
    assert_eq!(b.issue_at(t), a.issue_at(t), "k1 still issues");
    // Step 2: the new key issues; old nonces are accepted until they expire.
    std::fs::write(&ring, format!("k1 {}\nk2 {}\n", secret(1), secret(2))).unwrap();
    a.reload_key_ring(&std::fs::read_to_string(&ring).unwrap())
        .unwrap();
    b.reload_key_ring(&std::fs::read_to_string(&ring).unwrap())
        .unwrap();
    let nonce_new = a.issue_at(t + 2);
    b.validate_at(&nonce_new, t + 3).unwrap();
    b.validate_at(&nonce_a, t + 120).unwrap();
    assert_eq!(
        b.validate_at(&nonce_a, t + 121).unwrap_err().kind(),
        ErrorKind::NonceRequired
    );
    let p = with_nonce(&nonce_a);
    assert!(cli(&p).get("error").is_none(), "old nonce still accepted");
    // Step 3: the old key leaves the ring; its nonces are refused.
    std::fs::write(&ring, format!("k2 {}\n", secret(2))).unwrap();
    b.reload_key_ring(&std::fs::read_to_string(&ring).unwrap())
        .unwrap();
    assert_eq!(
        b.validate_at(&nonce_a, t + 3).unwrap_err().kind(),
        ErrorKind::InvalidNonce
    );
    assert_eq!(cli(&p)["error"], "invalid_nonce");
    b.validate_at(&nonce_new, t + 3).unwrap();
    let verifier = DpopVerifier::new(Arc::new(DecodeOnly)).nonce(NoncePolicy::Issuer(Arc::new(b)));
    verifier
        .verify_at(
            &Request::new("POST", URL).header("DPoP", &with_nonce(&nonce_new)),
            t + 3,
        )
        .unwrap();
}
