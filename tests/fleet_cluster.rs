//! A fleet of verifiers sharing one real Redis Cluster: three
//! `redis-server --cluster-enabled yes` masters (own free ports, bus ports
//! and directories, killed by PID on drop) joined by
//! `redis-cli --cluster create`. Every proof is accepted exactly once
//! fleet-wide, the keys spread over every master, a replay sent to the
//! other verifier is refused, and a dead master fails closed.
#![cfg(feature = "redis")]

use popkey_testkit::common;
use popkey_testkit::redis::RedisCluster;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use popkey::dpop::DpopProof;
use popkey::verify::dpop::DpopVerifier;
use popkey::verify::redis::RedisReplayStore;
use popkey::verify::token::DecodeOnly;
use popkey::verify::{ErrorKind, Request};
use popkey::PopKey;
use serde_json::Value;

const URL: &str = "https://api.example.com/token";
/// max age (300 s) + clock skew (60 s), the default acceptance window.
const WINDOW_MS: i64 = 360_000;

fn key() -> PopKey {
    PopKey::open("mem:").unwrap()
}

fn proof(key: &PopKey) -> String {
    DpopProof::new("POST", URL).unwrap().sign(key).unwrap()
}

fn store(cluster: &RedisCluster, prefix: &str) -> Arc<RedisReplayStore> {
    Arc::new(
        RedisReplayStore::cluster(&cluster.urls())
            .unwrap()
            .prefix(prefix)
            .timeout(Duration::from_millis(1_000)),
    )
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

/// `popkey verify dpop` against the cluster reached through `seeds`.
fn cli(seeds: &[String], prefix: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_popkey"));
    cmd.args(["verify", "dpop", "--method", "POST", "--url", URL]);
    for s in seeds {
        cmd.args(["--replay-store", s]);
    }
    cmd.args(["--replay-cluster", "--replay-prefix", prefix])
        .args(["--replay-timeout-ms", "2000"]);
    cmd
}

/// Sends every proof to `child` (`--lines`), returns its per-proof results.
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

/// Two `popkey verify --lines` processes, one given every node, the other
/// one seed only (it learns the rest from the cluster): each proof sent to
/// both is accepted exactly once, and the keys spread over all masters.
#[test]
fn two_processes_share_a_cluster_and_accept_each_proof_exactly_once() {
    let cluster = RedisCluster::start(3);
    let n = 2_000;
    let k = key();
    let proofs: Vec<String> = (0..n).map(|_| proof(&k)).collect();
    // The proofs are genuine: ring (not popkey) checks a sample.
    for p in proofs.iter().step_by(250) {
        common::verify_dpop(p);
    }
    let proofs = Arc::new(proofs);
    let spawn = |seeds: &[String]| {
        cli(seeds, "fleet:")
            .args(["--proof", "-", "--lines"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let urls = cluster.urls();
    let a = spawn(&urls);
    let b = spawn(&urls[2..]);
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
    // One key per proof, spread over the three masters (each owns a third
    // of the slots; a hash-named key lands anywhere).
    let sizes = cluster.dbsizes();
    eprintln!("keys per master: {sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), n, "{sizes:?}");
    for s in &sizes {
        assert!(*s >= n / 6, "keys not spread over the masters: {sizes:?}");
    }
    // Keys are named by a hash and live no longer than the window, on the
    // master that owns their slot.
    for (i, size) in sizes.iter().enumerate() {
        let node = cluster.node(i);
        let keys = node.cli(&["--scan", "--pattern", "fleet:*"]);
        let keys: Vec<&str> = keys.lines().collect();
        assert_eq!(keys.len(), *size);
        for key in keys.iter().step_by(53) {
            let id = key.strip_prefix("fleet:dpop:").unwrap();
            assert_eq!(id.len(), 43, "{key}");
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let ttl: i64 = node.cli(&["PTTL", key]).parse().unwrap();
            assert!(ttl > 0 && ttl <= WINDOW_MS, "{key}: {ttl}");
        }
    }
}

/// A proof accepted by one verifier (library, its own cluster connection)
/// is refused by another and by a `popkey verify` process, and the other
/// way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_sent_to_another_verifier_is_refused() {
    let cluster = RedisCluster::start(3);
    let a = verifier(store(&cluster, "r:"));
    let b = verifier(store(&cluster, "r:"));
    let k = key();
    for _ in 0..30 {
        let p = proof(&k);
        common::verify_dpop(&p);
        check(&a, &p).await.unwrap();
        assert_eq!(check(&b, &p).await, Err(ErrorKind::Replay));
        assert_eq!(check(&a, &p).await, Err(ErrorKind::Replay));
    }
    let run = |p: &str| {
        let out = cli(&cluster.urls()[..1], "r:")
            .args(["--proof", p])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.success(), v)
    };
    // Accepted by A, then sent to the CLI.
    let p = proof(&k);
    check(&a, &p).await.unwrap();
    let (ok, v) = run(&p);
    assert!(!ok);
    assert_eq!(v["error"], "replay", "{v}");
    // Accepted by the CLI, then sent to B.
    let p = proof(&k);
    common::verify_dpop(&p);
    let (ok, v) = run(&p);
    assert!(ok, "{v}");
    assert_eq!(check(&b, &p).await, Err(ErrorKind::Replay));
    assert_eq!(cluster.dbsizes().iter().sum::<usize>(), 32);
    // Several URLs without --replay-cluster: refused, not half-used.
    let out = Command::new(env!("CARGO_BIN_EXE_popkey"))
        .args(["verify", "dpop", "--method", "POST", "--url", URL])
        .args(["--proof", &proof(&k)])
        .args(["--replay-store", &cluster.urls()[0]])
        .args(["--replay-store", &cluster.urls()[1]])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--replay-cluster"), "{stderr}");
    assert_eq!(cluster.dbsizes().iter().sum::<usize>(), 32);
}

/// A master killed: verifications whose key it owns fail closed with
/// `replay_store_unavailable`; nothing is accepted without being recorded
/// on a live master. After it restarts (rejoining with its slots) the same
/// verifier object records keys on it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_fails_closed_and_the_same_verifier_recovers() {
    let mut cluster = RedisCluster::start(3);
    let store = Arc::new(
        RedisReplayStore::cluster(&cluster.urls())
            .unwrap()
            .prefix("k:")
            .timeout(Duration::from_millis(300)),
    );
    let v = verifier(store);
    let k = key();
    for _ in 0..30 {
        check(&v, &proof(&k)).await.unwrap();
    }
    let before = cluster.dbsizes();
    assert_eq!(before.iter().sum::<usize>(), 30);
    cluster.node_mut(1).kill();
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..60 {
        let p = proof(&k);
        match check(&v, &p).await {
            Ok(()) => accepted += 1,
            Err(ErrorKind::ReplayStoreUnavailable) => refused += 1,
            Err(e) => panic!("proof {i} during the outage: {e:?}"),
        }
    }
    eprintln!("with a master down: {accepted} accepted, {refused} refused");
    // About a third of the keys belong to the dead master (and once the
    // survivors mark it failed, the cluster refuses every write).
    assert!(refused > 0);
    // Every accepted proof is recorded on a live master.
    let live = |i: usize| -> usize { cluster.node(i).cli(&["DBSIZE"]).parse().unwrap() };
    assert_eq!(
        live(0) + live(2),
        before[0] + before[2] + accepted,
        "accepted proofs not recorded"
    );
    cluster.node_mut(1).start();
    cluster.wait_ok();
    // The same verifier accepts again, and keys land on the restarted
    // master (it came back empty: no persistence).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut recorded = 0;
    while recorded < 60 {
        match check(&v, &proof(&k)).await {
            Ok(()) => recorded += 1,
            Err(ErrorKind::ReplayStoreUnavailable) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("after the restart: {e:?}"),
        }
    }
    let restarted: usize = cluster.node(1).cli(&["DBSIZE"]).parse().unwrap();
    assert!(restarted > 0, "no key on the restarted master");
    let p = proof(&k);
    check(&v, &p).await.unwrap();
    assert_eq!(check(&v, &p).await, Err(ErrorKind::Replay));
}

/// `rediss://` seeds with the password from a file: a TLS cluster (clients
/// and bus), verified against the test CA (through SSL_CERT_FILE) for every
/// master the client learns; the password never printed.
#[test]
fn cli_against_a_tls_cluster_with_a_password_file() {
    let password = "s3cret-Cluster-Pass";
    let cluster = RedisCluster::tls_with_password(3, password);
    let dir = tempfile::tempdir().unwrap();
    let pass_file = dir.path().join("redis-password");
    std::fs::write(&pass_file, format!("{password}\n")).unwrap();
    let k = key();
    let run = |p: &str, pass: Option<&std::path::Path>| {
        let mut cmd = cli(&cluster.urls()[..1], "tls:");
        cmd.args(["--proof", p])
            .env("SSL_CERT_FILE", cluster.ca_file());
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
    let p = proof(&k);
    common::verify_dpop(&p);
    // Without the password: refused, fail closed.
    let (ok, v) = run(&p, None);
    assert!(!ok);
    assert_eq!(v["error"], "replay_store_unavailable", "{v}");
    // Enough proofs that every master gets keys (each through TLS).
    let proofs: Vec<String> = (0..30).map(|_| proof(&k)).collect();
    for p in &proofs {
        let (ok, v) = run(p, Some(&pass_file));
        assert!(ok, "{v}");
    }
    let (ok, v) = run(&proofs[7], Some(&pass_file));
    assert!(!ok);
    assert_eq!(v["error"], "replay");
    let sizes = cluster.dbsizes();
    assert_eq!(sizes.iter().sum::<usize>(), 30, "{sizes:?}");
    assert!(sizes.iter().all(|s| *s > 0), "{sizes:?}");
}
