//! `popkey bench`: what a key's device costs, and what popkey adds.
//!
//! Three phases run one after another with the same key and thread count:
//! the provider's raw `sign` over a signing input of SHR size, SHR creation
//! and DPoP creation. Each prints operations per second and p50/p99 latency.

use std::time::{Duration, Instant};

use clap::Args;
use popkey::dpop::DpopProof;
use popkey::shr::SignedHttpRequest;
use popkey::{PopCryptoProvider, PopKey};
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

fn run_phase<F>(threads: u32, dur: Duration, op: F) -> Result<Phase, String>
where
    F: Fn() -> popkey::Result<()> + Sync,
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

pub(crate) fn run(args: &BenchArgs) -> Result<String, String> {
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err("--seconds must be between 0 and 3600".into());
    }
    let key: PopKey = args.key.open().map_err(|e| e.to_string())?;
    let dur = Duration::from_secs_f64(args.seconds);
    let url = "https://api.example.com/v1/items?page=2";
    // A realistic access token: about the size of an Entra ID JWT.
    let token = format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.{}.sig",
        "A".repeat(1200)
    );
    let shr = SignedHttpRequest::new("GET", url, &token).map_err(|e| e.to_string())?;
    let dpop = DpopProof::new("GET", url)
        .and_then(|p| p.access_token(&token))
        .map_err(|e| e.to_string())?;
    // The raw phase signs an input as long as an SHR's signing input.
    let sample = shr.sign(&key).map_err(|e| e.to_string())?;
    let raw_input = vec![b'A'; sample.rfind('.').unwrap_or(sample.len())];

    // Warm up caches, the CPU clock and any device session before measuring.
    run_phase(args.threads, dur.mul_f64(0.2), || {
        key.sign(&raw_input).map(drop)
    })?;
    let raw = run_phase(args.threads, dur, || key.sign(&raw_input).map(drop))?;
    let shr_phase = run_phase(args.threads, dur, || shr.sign(&key).map(drop))?;
    let dpop_phase = run_phase(args.threads, dur, || dpop.sign(&key).map(drop))?;

    let mut out = Map::new();
    out.insert("key".into(), json!(key.uri()));
    out.insert("backend".into(), json!(key.location().backend));
    out.insert("alg".into(), json!(key.algorithm().as_str()));
    out.insert("threads".into(), json!(args.threads));
    out.insert("seconds_per_phase".into(), json!(args.seconds));
    for (name, phase) in [
        ("raw_sign", &raw),
        ("shr", &shr_phase),
        ("dpop", &dpop_phase),
    ] {
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
    out.insert(
        "shr_vs_raw".into(),
        json!(round3(shr_phase.per_sec() / raw.per_sec())),
    );
    out.insert(
        "dpop_vs_raw".into(),
        json!(round3(dpop_phase.per_sec() / raw.per_sec())),
    );
    Ok(Value::Object(out).to_string())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
