//! Fleet verification throughput (printed, never asserted):
//! `cargo bench --features redis --bench fleet`.
//!
//! In one run, against real `redis-server`s it starts (TCP loopback and a
//! unix socket): DPoP verification with the in-memory store, with Redis over
//! TCP and over the socket, the raw `SET NX PX` round trip measured by the
//! same harness, and 2 concurrent verifying tasks against 1. Also a
//! 3-master Redis Cluster (`redis-server --cluster-enabled yes`, joined by
//! `redis-cli --cluster create`) on the same machine.

use popkey_testkit::redis as redis_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use popkey::dpop::DpopProof;
use popkey::verify::dpop::DpopVerifier;
use popkey::verify::redis::RedisReplayStore;
use popkey::verify::replay::{AsyncReplayStore, MemoryReplayCache};
use popkey::verify::token::DecodeOnly;
use popkey::verify::Request;
use popkey::PopKey;

const URL: &str = "https://api.example.com/token";

fn proofs(key: &PopKey, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| DpopProof::new("POST", URL).unwrap().sign(key).unwrap())
        .collect()
}

fn report(name: &str, n: usize, took: Duration) -> f64 {
    let rate = n as f64 / took.as_secs_f64();
    println!(
        "{name:<44} {n:>6} ops  {:>9.1} µs/op  {rate:>10.0} ops/s",
        took.as_secs_f64() * 1e6 / n as f64
    );
    rate
}

/// Verifies `proofs` split over `tasks` concurrent tasks; returns the time.
async fn verify_all(v: Arc<DpopVerifier>, proofs: Vec<String>, tasks: usize) -> Duration {
    let chunk = proofs.len().div_ceil(tasks);
    let start = Instant::now();
    let mut handles = Vec::new();
    for part in proofs.chunks(chunk).map(|c| c.to_vec()) {
        let v = v.clone();
        handles.push(tokio::spawn(async move {
            for p in &part {
                v.verify_async(&Request::new("POST", URL).header("DPoP", p))
                    .await
                    .expect("valid proof");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    start.elapsed()
}

fn verifier_with(store: Arc<dyn AsyncReplayStore>) -> Arc<DpopVerifier> {
    Arc::new(DpopVerifier::new(Arc::new(DecodeOnly)).async_replay_store(store))
}

fn main() {
    let n: usize = std::env::var("POPKEY_BENCH_PROOFS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let key = PopKey::open("mem:").expect("key");
    let tcp = redis_server::RedisServer::tcp();
    let unix = redis_server::RedisServer::unix();
    let cluster = redis_server::RedisCluster::start(3);
    println!("fleet verification, ES256 DPoP, {n} proofs per line");

    rt.block_on(async {
        // Warm up (connections, caches) outside the measurements.
        let tcp_store = Arc::new(RedisReplayStore::new(&tcp.url()).expect("url"));
        let unix_store = Arc::new(RedisReplayStore::new(&unix.url()).expect("url"));
        let cluster_store = Arc::new(RedisReplayStore::cluster(&cluster.urls()).expect("urls"));
        let memory: Arc<dyn AsyncReplayStore> = Arc::new(MemoryReplayCache::new(1 << 20));
        for s in [&tcp_store, &unix_store, &cluster_store] {
            let v = verifier_with(s.clone());
            verify_all(v, proofs(&key, 50), 1).await;
        }

        let mem_v = verifier_with(memory.clone());
        let t = verify_all(mem_v.clone(), proofs(&key, n), 1).await;
        let mem1 = report("verify, memory store, 1 task", n, t);
        let t = verify_all(mem_v, proofs(&key, n), 2).await;
        let mem2 = report("verify, memory store, 2 tasks", n, t);

        let tcp_v = verifier_with(tcp_store.clone());
        let t = verify_all(tcp_v.clone(), proofs(&key, n), 1).await;
        let tcp1 = report("verify, Redis TCP loopback, 1 task", n, t);
        let t = verify_all(tcp_v, proofs(&key, n), 2).await;
        let tcp2 = report("verify, Redis TCP loopback, 2 tasks", n, t);

        let unix_v = verifier_with(unix_store.clone());
        let t = verify_all(unix_v.clone(), proofs(&key, n), 1).await;
        let unix1 = report("verify, Redis unix socket, 1 task", n, t);
        let t = verify_all(unix_v, proofs(&key, n), 2).await;
        let unix2 = report("verify, Redis unix socket, 2 tasks", n, t);

        let cluster_v = verifier_with(cluster_store.clone());
        let t = verify_all(cluster_v.clone(), proofs(&key, n), 1).await;
        let cluster1 = report("verify, Redis Cluster (3 masters), 1 task", n, t);
        let t = verify_all(cluster_v, proofs(&key, n), 2).await;
        let cluster2 = report("verify, Redis Cluster (3 masters), 2 tasks", n, t);

        // The raw round trip, through the same store code and harness.
        let mut raw = Vec::new();
        for (name, store) in [
            ("TCP", &tcp_store),
            ("unix", &unix_store),
            ("cluster", &cluster_store),
        ] {
            let start = Instant::now();
            for i in 0..n {
                store
                    .check_and_record_async(&format!("bench:raw:{i}"), 2_000_000_000, 1_999_999_000)
                    .await
                    .expect("SET NX");
            }
            raw.push(report(
                &format!("raw SET NX PX round trip, {name}"),
                n,
                start.elapsed(),
            ));
        }
        // And with the redis crate alone, no popkey code in the loop.
        let client = redis::Client::open(tcp.url()).expect("url");
        let mut conn = redis::aio::ConnectionManager::new(client)
            .await
            .expect("connect");
        let start = Instant::now();
        for i in 0..n {
            let _: Option<String> = redis::cmd("SET")
                .arg(format!("bench:plain:{i}"))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(60_000)
                .query_async(&mut conn)
                .await
                .expect("SET NX");
        }
        let plain = report("raw SET NX PX, redis crate only, TCP", n, start.elapsed());

        let per = |rate: f64| 1e6 / rate;
        println!();
        println!(
            "Redis TCP adds {:.1} µs per verification (raw round trip {:.1} µs, plain {:.1} µs): {:.2}× the memory-store time",
            per(tcp1) - per(mem1),
            per(raw[0]),
            per(plain),
            per(tcp1) / per(mem1)
        );
        println!(
            "Redis unix adds {:.1} µs per verification (raw round trip {:.1} µs)",
            per(unix1) - per(mem1),
            per(raw[1])
        );
        println!(
            "Redis Cluster adds {:.1} µs per verification (raw round trip {:.1} µs)",
            per(cluster1) - per(mem1),
            per(raw[2])
        );
        println!(
            "2 tasks / 1 task: memory {:.2}×, Redis TCP {:.2}×, Redis unix {:.2}×, Redis Cluster {:.2}×",
            mem2 / mem1,
            tcp2 / tcp1,
            unix2 / unix1,
            cluster2 / cluster1
        );
    });
}
