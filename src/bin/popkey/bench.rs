//! `popkey bench`: what a key's device costs, what popkey adds, and what a
//! resource server verifying the key's proofs can expect.
//!
//! Phases run one after another with the same key and thread count:
//!
//! * signing, interleaved in slices: the key's raw `sign` over a signing
//!   input of SHR size, SHR creation and DPoP creation;
//! * verification: over proofs signed beforehand, the full `ShrVerifier`
//!   and `DpopVerifier` (replay store included), each proof verified once,
//!   beside the raw signature check of the same proofs (their signing
//!   inputs and signatures with the key's public JWK: `raw_verify` for the
//!   SHRs, `raw_verify_dpop` for the DPoP proofs), interleaved in slices,
//!   and what the verifiers add to the raw check per proof
//!   (`verify_shr_overhead_us`, `verify_dpop_overhead_us`: p50 minus p50);
//! * crypto libraries: raw sign and verify of a software key of the same
//!   algorithm with aws-lc-rs (the default provider) and the pure-Rust
//!   RustCrypto crates, so the provider choice stays visible.
//!
//! Each phase reports operations per second, p50/p99 latency and (Linux)
//! `*_cpu_us`, the mean CPU time per operation of the measuring threads,
//! which a busy machine inflates far less than wall-clock latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::Args;
use popkey::dpop::DpopProof;
use popkey::shr::SignedHttpRequest;
use popkey::verify::dpop::DpopVerifier;
use popkey::verify::replay::MemoryReplayCache;
use popkey::verify::shr::ShrVerifier;
use popkey::verify::token::DecodeOnly;
use popkey::verify::Request;
use popkey::{Algorithm, PopCryptoProvider, PopKey};
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
    /// Runs one phase only and prints its figures (for profilers):
    /// raw_sign, shr, dpop, raw_verify, verify_shr or verify_dpop.
    #[arg(long, hide = true)]
    only: Option<String>,
}

struct Phase {
    ops: u64,
    elapsed: Duration,
    latencies_ns: Vec<u64>,
    /// CPU time the measuring threads spent (Linux), which other processes
    /// on a busy machine do not inflate the way they inflate wall time.
    cpu_ns: Option<u64>,
}

/// This thread's CPU time so far, in ns (Linux: `/proc/thread-self/schedstat`).
/// The kernel brings a running thread's figure up to date only when it
/// schedules; yielding first makes it do so now, so short phases are not
/// undercounted by up to a tick.
fn thread_cpu_ns() -> Option<u64> {
    std::thread::yield_now();
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// What one measuring thread returns: latencies and the CPU time it used.
type ThreadResult = Result<(Vec<u64>, Option<u64>), String>;

impl Phase {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// Mean CPU time per operation, µs.
    fn cpu_us(&self) -> Option<f64> {
        let ops = self.ops.max(1) as f64;
        self.cpu_ns.map(|c| c as f64 / ops / 1000.0)
    }

    fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return 0.0;
        }
        let idx = ((self.latencies_ns.len() - 1) as f64 * p).round() as usize;
        self.latencies_ns[idx] as f64 / 1000.0
    }
}

fn run_phase<F, E>(threads: u32, dur: Duration, op: F) -> Result<Phase, String>
where
    F: Fn() -> Result<(), E> + Sync,
    E: std::fmt::Display,
{
    let start = Instant::now();
    let deadline = start + dur;
    let results: Vec<ThreadResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut lat = Vec::with_capacity(1 << 16);
                    let cpu0 = thread_cpu_ns();
                    loop {
                        let t0 = Instant::now();
                        op().map_err(|e| e.to_string())?;
                        let t1 = Instant::now();
                        lat.push((t1 - t0).as_nanos() as u64);
                        if t1 >= deadline {
                            let cpu = cpu0.zip(thread_cpu_ns()).map(|(a, b)| b.saturating_sub(a));
                            return Ok((lat, cpu));
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
    finish(results, elapsed)
}

fn finish(results: Vec<ThreadResult>, elapsed: Duration) -> Result<Phase, String> {
    let mut latencies_ns = Vec::new();
    let mut cpu_ns = Some(0u64);
    for r in results {
        let (lat, cpu) = r?;
        latencies_ns.extend(lat);
        cpu_ns = cpu_ns.zip(cpu).map(|(a, b)| a + b);
    }
    latencies_ns.sort_unstable();
    Ok(Phase {
        ops: latencies_ns.len() as u64,
        elapsed,
        latencies_ns,
        cpu_ns,
    })
}

/// Runs `op` once on every item of `items`, split over `threads` threads
/// (for work that must not repeat, like verifying with a replay store).
fn run_each<T, F, E>(threads: u32, items: &[T], op: F) -> Result<Phase, String>
where
    T: Sync,
    F: Fn(&T) -> Result<(), E> + Sync,
    E: std::fmt::Display,
{
    let chunk = items.len().div_ceil(threads as usize).max(1);
    let start = Instant::now();
    let results: Vec<ThreadResult> = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let op = &op;
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(part.len());
                    let cpu0 = thread_cpu_ns();
                    for item in part {
                        let t0 = Instant::now();
                        op(item).map_err(|e| e.to_string())?;
                        lat.push(t0.elapsed().as_nanos() as u64);
                    }
                    let cpu = cpu0.zip(thread_cpu_ns()).map(|(a, b)| b.saturating_sub(a));
                    Ok((lat, cpu))
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
    finish(results, start.elapsed())
}

/// How many slices the phases compared with each other interleave in
/// (raw signing with SHR and DPoP signing; each raw verification with its
/// full verifier): the machine's speed drifts over seconds (clock, other
/// tenants), and fine slices let the drift touch both sides alike.
const INTERLEAVE: usize = 40;

/// Phases measured in slices, as one.
fn merge(parts: Vec<Phase>) -> Phase {
    let mut all = Phase {
        ops: 0,
        elapsed: Duration::ZERO,
        latencies_ns: Vec::new(),
        cpu_ns: Some(0),
    };
    for p in parts {
        all.ops += p.ops;
        all.elapsed += p.elapsed;
        all.latencies_ns.extend(p.latencies_ns);
        all.cpu_ns = all.cpu_ns.zip(p.cpu_ns).map(|(a, b)| a + b);
    }
    all.latencies_ns.sort_unstable();
    all
}

/// Each proof's signing input and decoded signature, for the raw phases.
fn raw_pairs(pool: &[String]) -> Result<Vec<(&str, Vec<u8>)>, String> {
    pool.iter()
        .map(|p| {
            let (input, sig) = p.rsplit_once('.').ok_or("a proof without a signature")?;
            let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|e| e.to_string())?;
            Ok((input, sig))
        })
        .collect()
}

/// `n` proofs made by `make`, on `threads` threads.
fn make_pool<F>(threads: u32, n: usize, make: F) -> Result<Vec<String>, String>
where
    F: Fn() -> popkey::Result<String> + Sync,
{
    let per = n.div_ceil(threads as usize);
    let parts: Vec<Result<Vec<String>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    (0..per)
                        .map(|_| make().map_err(|e| e.to_string()))
                        .collect()
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
    let mut pool = Vec::with_capacity(per * threads as usize);
    for p in parts {
        pool.extend(p?);
    }
    pool.truncate(n);
    Ok(pool)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An access token about the size of an Entra ID JWT, bound to `key`
/// (`cnf.kid` for SHR, `cnf.jkt` for DPoP) and signed by `authority`.
fn access_token(authority: &PopKey, key: &PopKey) -> Result<String, String> {
    let header = b64(br#"{"typ":"JWT","alg":"ES256","kid":"as"}"#);
    let claims = json!({
        "exp": popkey_now() + 24 * 3600,
        "cnf": {"kid": key.kid(), "jkt": key.kid()},
        "pad": "A".repeat(900),
    });
    let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let sig = authority
        .sign(input.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(format!("{input}.{}", b64(&sig)))
}

fn popkey_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn run(args: &BenchArgs) -> Result<String, String> {
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err("--seconds must be between 0 and 3600".into());
    }
    let key: PopKey = args.key.open().map_err(|e| e.to_string())?;
    let dur = Duration::from_secs_f64(args.seconds);
    let threads = args.threads;
    let url = "https://api.example.com/v1/items?page=2";
    let authority = PopKey::open("mem:").map_err(|e| e.to_string())?;
    let token = access_token(&authority, &key)?;
    let shr = SignedHttpRequest::new("GET", url, &token).map_err(|e| e.to_string())?;
    let dpop = DpopProof::new("GET", url)
        .and_then(|p| p.access_token(&token))
        .map_err(|e| e.to_string())?;
    // The raw phases sign and verify an input as long as an SHR's signing input.
    let sample = shr.sign(&key).map_err(|e| e.to_string())?;
    let raw_input = vec![b'A'; sample.rfind('.').unwrap_or(sample.len())];
    let raw_sig = key.sign(&raw_input).map_err(|e| e.to_string())?;
    let public = key.public_jwk().clone();
    let alg = key.algorithm();

    if let Some(name) = &args.only {
        return only(
            name, &key, threads, dur, &shr, &dpop, &token, url, &raw_input,
        );
    }
    // Warm up caches, the CPU clock and any device session before measuring.
    run_phase(threads, dur.mul_f64(0.2), || key.sign(&raw_input).map(drop))?;
    let (mut raw, mut shr_phase, mut dpop_phase) = (Vec::new(), Vec::new(), Vec::new());
    let slice_dur = dur.div_f64(INTERLEAVE as f64);
    for _ in 0..INTERLEAVE {
        raw.push(run_phase(threads, slice_dur, || {
            key.sign(&raw_input).map(drop)
        })?);
        shr_phase.push(run_phase(threads, slice_dur, || shr.sign(&key).map(drop))?);
        dpop_phase.push(run_phase(threads, slice_dur, || dpop.sign(&key).map(drop))?);
    }
    let (raw, shr_phase, dpop_phase) = (merge(raw), merge(shr_phase), merge(dpop_phase));

    // Verification. The full verifiers keep a replay store, so each proof is
    // verified once: sign as many as one phase can verify (bounded by what
    // the key can sign in one phase, and by memory). A short raw phase
    // over one signature estimates the rate.
    let estimate = run_phase(threads, dur.mul_f64(0.2), || {
        public.verify(alg, &raw_input, &raw_sig)
    })?;
    let signable = dpop_phase.per_sec().min(shr_phase.per_sec()) * args.seconds;
    let pool_len = (estimate.per_sec() * args.seconds)
        .min(signable)
        .clamp(100.0, 60_000.0) as usize;
    let shr_pool = make_pool(threads, pool_len, || shr.sign(&key))?;
    let dpop_pool = make_pool(threads, pool_len, || dpop.sign(&key))?;
    // The raw baselines verify the very same proofs' signatures over their
    // signing inputs (pre-split, pre-decoded): the signature work the full
    // verifiers cannot avoid, on the same distinct inputs.
    let shr_raw = raw_pairs(&shr_pool)?;
    let dpop_raw = raw_pairs(&dpop_pool)?;
    let replay = || Arc::new(MemoryReplayCache::new(pool_len * 2 + 16));
    let shr_verifier = ShrVerifier::new(Arc::new(DecodeOnly))
        .algorithms(&[alg])
        .replay_store(replay());
    let dpop_verifier = DpopVerifier::new(Arc::new(DecodeOnly))
        .algorithms(&[alg])
        .replay_store(replay());
    let request = Request::new("GET", url);
    let dpop_authorization = format!("DPoP {token}");
    let raw_check = |(input, sig): &(&str, Vec<u8>)| public.verify(alg, input.as_bytes(), sig);
    // Raw and full phases interleave in slices, so drift in the machine's
    // speed during the run touches both alike.
    let (mut raw_verify, mut verify_shr, mut raw_verify_dpop, mut verify_dpop) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let slice = pool_len.div_ceil(INTERLEAVE);
    for k in 0..INTERLEAVE {
        let range = (k * slice).min(pool_len)..((k + 1) * slice).min(pool_len);
        if range.is_empty() {
            break;
        }
        raw_verify.push(run_each(threads, &shr_raw[range.clone()], raw_check)?);
        verify_shr.push(run_each(threads, &shr_pool[range.clone()], |p| {
            shr_verifier.verify(p, &request).map(drop)
        })?);
        raw_verify_dpop.push(run_each(threads, &dpop_raw[range.clone()], raw_check)?);
        verify_dpop.push(run_each(threads, &dpop_pool[range], |p| {
            let request = Request::new("GET", url)
                .header("Authorization", &dpop_authorization)
                .header("DPoP", p);
            dpop_verifier.verify(&request).map(drop)
        })?);
    }
    let (raw_verify, verify_shr, raw_verify_dpop, verify_dpop) = (
        merge(raw_verify),
        merge(verify_shr),
        merge(raw_verify_dpop),
        merge(verify_dpop),
    );
    drop((shr_raw, dpop_raw));
    drop((shr_pool, dpop_pool));

    let mut out = Map::new();
    out.insert("key".into(), json!(key.uri()));
    out.insert("backend".into(), json!(key.location().backend));
    out.insert("alg".into(), json!(alg.as_str()));
    out.insert("threads".into(), json!(threads));
    out.insert("seconds_per_phase".into(), json!(args.seconds));
    out.insert("crypto_provider".into(), json!(popkey::crypto_provider()));
    for (name, phase) in [
        ("raw_sign", &raw),
        ("shr", &shr_phase),
        ("dpop", &dpop_phase),
        ("raw_verify", &raw_verify),
        ("verify_shr", &verify_shr),
        ("raw_verify_dpop", &raw_verify_dpop),
        ("verify_dpop", &verify_dpop),
    ] {
        insert_phase(&mut out, name, phase);
    }
    out.insert(
        "shr_vs_raw".into(),
        json!(round3(shr_phase.per_sec() / raw.per_sec())),
    );
    out.insert(
        "dpop_vs_raw".into(),
        json!(round3(dpop_phase.per_sec() / raw.per_sec())),
    );
    out.insert(
        "verify_shr_vs_raw_verify".into(),
        json!(round3(verify_shr.per_sec() / raw_verify.per_sec())),
    );
    out.insert(
        "verify_dpop_vs_raw_verify".into(),
        json!(round3(verify_dpop.per_sec() / raw_verify_dpop.per_sec())),
    );
    // What a proof costs beyond its signature check, in µs (p50 against
    // p50 of the interleaved raw check of the same proofs): the figure to
    // size a resource server by when the signature itself is cheap (RSA).
    for (name, full, raw) in [
        ("verify_shr_overhead_us", &verify_shr, &raw_verify),
        ("verify_dpop_overhead_us", &verify_dpop, &raw_verify_dpop),
    ] {
        out.insert(
            name.into(),
            json!(round1(full.percentile_us(0.50) - raw.percentile_us(0.50))),
        );
    }
    out.insert(
        "crypto_libraries".into(),
        libraries::measure(alg, threads, dur, &raw_input)?,
    );
    Ok(Value::Object(out).to_string())
}

/// One phase alone, for a profiler: proofs for the verify phases are
/// signed first (a line on stderr says when measuring starts).
#[allow(clippy::too_many_arguments)]
fn only(
    name: &str,
    key: &PopKey,
    threads: u32,
    dur: Duration,
    shr: &SignedHttpRequest,
    dpop: &DpopProof,
    token: &str,
    url: &str,
    raw_input: &[u8],
) -> Result<String, String> {
    let alg = key.algorithm();
    let public = key.public_jwk().clone();
    let pool_len = (20_000.0 * dur.as_secs_f64()) as usize;
    let replay = || Arc::new(MemoryReplayCache::new(pool_len * 2 + 16));
    let started = || eprintln!("measuring {name}");
    let phase = match name {
        "raw_sign" => {
            started();
            run_phase(threads, dur, || key.sign(raw_input).map(drop))?
        }
        "shr" => {
            started();
            run_phase(threads, dur, || shr.sign(key).map(drop))?
        }
        "dpop" => {
            started();
            run_phase(threads, dur, || dpop.sign(key).map(drop))?
        }
        "raw_verify" => {
            let sig = key.sign(raw_input).map_err(|e| e.to_string())?;
            started();
            run_phase(threads, dur, || public.verify(alg, raw_input, &sig))?
        }
        "verify_shr" => {
            let pool = make_pool(threads, pool_len, || shr.sign(key))?;
            let verifier = ShrVerifier::new(Arc::new(DecodeOnly))
                .algorithms(&[alg])
                .replay_store(replay());
            let request = Request::new("GET", url);
            started();
            run_each(threads, &pool, |p| verifier.verify(p, &request).map(drop))?
        }
        "verify_dpop" => {
            let pool = make_pool(threads, pool_len, || dpop.sign(key))?;
            let verifier = DpopVerifier::new(Arc::new(DecodeOnly))
                .algorithms(&[alg])
                .replay_store(replay());
            let authorization = format!("DPoP {token}");
            started();
            run_each(threads, &pool, |p| {
                let request = Request::new("GET", url)
                    .header("Authorization", &authorization)
                    .header("DPoP", p);
                verifier.verify(&request).map(drop)
            })?
        }
        "pair_shr" | "pair_dpop" | "pair_sign_shr" | "pair_sign_dpop" => {
            return pair(name, key, dur, shr, dpop, token, url, raw_input);
        }
        other => return Err(format!("no phase `{other}`")),
    };
    let mut out = Map::new();
    insert_phase(&mut out, name, &phase);
    Ok(Value::Object(out).to_string())
}

/// Raw and full operations interleaved in batches of 100 on one thread, for
/// a busy machine: both see the same interference, and the fastest batches
/// (least disturbed) and the median batches give the overhead of the full
/// operation over the raw one.
#[allow(clippy::too_many_arguments)]
fn pair(
    name: &str,
    key: &PopKey,
    dur: Duration,
    shr: &SignedHttpRequest,
    dpop: &DpopProof,
    token: &str,
    url: &str,
    raw_input: &[u8],
) -> Result<String, String> {
    const BATCH: usize = 100;
    let alg = key.algorithm();
    let public = key.public_jwk().clone();
    let batches = ((5_000.0 * dur.as_secs_f64()) as usize / BATCH).max(4);
    let n = batches * BATCH;
    let verifying = name.starts_with("pair_shr") || name.starts_with("pair_dpop");
    let pool = match name {
        "pair_shr" => make_pool(1, n, || shr.sign(key))?,
        "pair_dpop" => make_pool(1, n, || dpop.sign(key))?,
        _ => Vec::new(),
    };
    let shr_verifier = ShrVerifier::new(Arc::new(DecodeOnly))
        .algorithms(&[alg])
        .replay_store(Arc::new(MemoryReplayCache::new(n * 2 + 16)));
    let dpop_verifier = DpopVerifier::new(Arc::new(DecodeOnly))
        .algorithms(&[alg])
        .replay_store(Arc::new(MemoryReplayCache::new(n * 2 + 16)));
    let authorization = format!("DPoP {token}");
    let request = Request::new("GET", url);
    let full = |i: usize| -> Result<(), String> {
        let fail = |e: &dyn std::fmt::Display| e.to_string();
        match name {
            "pair_shr" => shr_verifier
                .verify(&pool[i], &request)
                .map(drop)
                .map_err(|e| fail(&e)),
            "pair_dpop" => dpop_verifier
                .verify(
                    &Request::new("GET", url)
                        .header("Authorization", &authorization)
                        .header("DPoP", &pool[i]),
                )
                .map(drop)
                .map_err(|e| fail(&e)),
            "pair_sign_shr" => shr.sign(key).map(drop).map_err(|e| fail(&e)),
            _ => dpop.sign(key).map(drop).map_err(|e| fail(&e)),
        }
    };
    let raw_pool = raw_pairs(&pool)?;
    let raw = |i: usize| -> Result<(), String> {
        if verifying {
            let (input, sig) = &raw_pool[i];
            public
                .verify(alg, input.as_bytes(), sig)
                .map_err(|e| e.to_string())
        } else {
            key.sign(raw_input).map(drop).map_err(|e| e.to_string())
        }
    };
    eprintln!("measuring {name}");
    let (mut raw_ns, mut full_ns, mut raw_cpu, mut full_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for b in 0..batches {
        let (c0, t0) = (thread_cpu_ns(), Instant::now());
        for i in b * BATCH..(b + 1) * BATCH {
            raw(i)?;
        }
        let (c1, t1) = (thread_cpu_ns(), Instant::now());
        for i in b * BATCH..(b + 1) * BATCH {
            full(i)?;
        }
        let (c2, t2) = (thread_cpu_ns(), Instant::now());
        raw_ns.push((t1 - t0).as_nanos() as f64 / BATCH as f64);
        full_ns.push((t2 - t1).as_nanos() as f64 / BATCH as f64);
        if let (Some(c0), Some(c1), Some(c2)) = (c0, c1, c2) {
            raw_cpu.push(c1.saturating_sub(c0) as f64 / BATCH as f64);
            full_cpu.push(c2.saturating_sub(c1) as f64 / BATCH as f64);
        }
    }
    let stats = |v: &mut Vec<f64>| -> (f64, f64) {
        v.sort_by(f64::total_cmp);
        let min = v.first().copied().unwrap_or(0.0);
        let median = v.get(v.len() / 2).copied().unwrap_or(0.0);
        (round1(min / 1000.0), round1(median / 1000.0))
    };
    let mut out = Map::new();
    out.insert("batches".into(), json!(batches));
    out.insert("batch".into(), json!(BATCH));
    for (what, v) in [
        ("raw_wall", &mut raw_ns),
        ("full_wall", &mut full_ns),
        ("raw_cpu", &mut raw_cpu),
        ("full_cpu", &mut full_cpu),
    ] {
        let (min, median) = stats(v);
        out.insert(format!("{what}_min_us"), json!(min));
        out.insert(format!("{what}_median_us"), json!(median));
    }
    Ok(Value::Object(out).to_string())
}

fn insert_phase(out: &mut Map<String, Value>, name: &str, phase: &Phase) {
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
    if let Some(cpu) = phase.cpu_us() {
        out.insert(format!("{name}_cpu_us"), json!(round1(cpu)));
    }
}

/// Raw sign/verify of the crypto libraries themselves, with software keys
/// of the benchmarked algorithm. Verification parses the public key on
/// every call, as a verifier of a proof that carries its key must.
mod libraries {
    use super::*;

    pub(super) fn measure(
        alg: Algorithm,
        threads: u32,
        dur: Duration,
        input: &[u8],
    ) -> Result<Value, String> {
        let mut out = Map::new();
        #[cfg(feature = "aws-lc-rs")]
        out.insert("aws-lc-rs".into(), aws_lc(alg, threads, dur, input)?);
        out.insert("rust-crypto".into(), rust_crypto(alg, threads, dur, input)?);
        Ok(Value::Object(out))
    }

    fn pair(sign: &Phase, verify: &Phase) -> Value {
        let mut m = Map::new();
        insert_phase(&mut m, "sign", sign);
        insert_phase(&mut m, "verify", verify);
        Value::Object(m)
    }

    #[cfg(feature = "aws-lc-rs")]
    fn aws_lc(alg: Algorithm, threads: u32, dur: Duration, input: &[u8]) -> Result<Value, String> {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{self as sig, KeyPair, UnparsedPublicKey};
        let fail = |e: aws_lc_rs::error::Unspecified| e.to_string();
        let rng = SystemRandom::new();
        match alg {
            Algorithm::ES256 => {
                let key = sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(fail)?;
                let public = key.public_key().as_ref().to_vec();
                let signature = key.sign(&rng, input).map_err(fail)?;
                let sign = run_phase(threads, dur, || key.sign(&rng, input).map(drop))?;
                let verify = run_phase(threads, dur, || {
                    UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, &public)
                        .verify(input, signature.as_ref())
                })?;
                Ok(pair(&sign, &verify))
            }
            Algorithm::RS256 | Algorithm::PS256 => {
                let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(fail)?;
                let (padding, params): (&'static dyn sig::RsaEncoding, _) =
                    if alg == Algorithm::PS256 {
                        (&sig::RSA_PSS_SHA256, &sig::RSA_PSS_2048_8192_SHA256)
                    } else {
                        (&sig::RSA_PKCS1_SHA256, &sig::RSA_PKCS1_2048_8192_SHA256)
                    };
                let public = key.public_key().as_ref().to_vec();
                let mut signature = vec![0u8; key.public_modulus_len()];
                key.sign(padding, &rng, input, &mut signature)
                    .map_err(fail)?;
                let sign = run_phase(threads, dur, || {
                    let mut out = vec![0u8; key.public_modulus_len()];
                    key.sign(padding, &rng, input, &mut out)
                })?;
                let verify = run_phase(threads, dur, || {
                    UnparsedPublicKey::new(params, &public).verify(input, &signature)
                })?;
                Ok(pair(&sign, &verify))
            }
        }
    }

    fn rust_crypto(
        alg: Algorithm,
        threads: u32,
        dur: Duration,
        input: &[u8],
    ) -> Result<Value, String> {
        use rand::rngs::OsRng;
        use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer, Verifier};
        let fail = |e: rsa::signature::Error| e.to_string();
        match alg {
            Algorithm::ES256 => {
                let key = p256::ecdsa::SigningKey::random(&mut OsRng);
                let point = key.verifying_key().to_encoded_point(false);
                let signature: p256::ecdsa::Signature = key.try_sign(input).map_err(fail)?;
                let sign = run_phase(threads, dur, || {
                    key.try_sign(input).map(|_: p256::ecdsa::Signature| ())
                })?;
                let verify = run_phase(threads, dur, || {
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(point.as_bytes())
                        .and_then(|k| k.verify(input, &signature))
                })?;
                Ok(pair(&sign, &verify))
            }
            Algorithm::RS256 | Algorithm::PS256 => {
                let private =
                    rsa::RsaPrivateKey::new(&mut OsRng, 2048).map_err(|e| e.to_string())?;
                let public = private.to_public_key();
                let (n, e) = {
                    use rsa::traits::PublicKeyParts;
                    (public.n().clone(), public.e().clone())
                };
                let parse = || rsa::RsaPublicKey::new(n.clone(), e.clone());
                let (sign, verify) = if alg == Algorithm::PS256 {
                    let key = rsa::pss::BlindedSigningKey::<sha256::Sha256>::new(private);
                    let signature = key.try_sign_with_rng(&mut OsRng, input).map_err(fail)?;
                    let sign = run_phase(threads, dur, || {
                        key.try_sign_with_rng(&mut OsRng, input)
                            .map(|s| drop(s.to_vec()))
                    })?;
                    let verify = run_phase(threads, dur, || {
                        let k = parse().map_err(|e| e.to_string())?;
                        rsa::pss::VerifyingKey::<sha256::Sha256>::new(k)
                            .verify(input, &signature)
                            .map_err(|e| e.to_string())
                    })?;
                    (sign, verify)
                } else {
                    let key = rsa::pkcs1v15::SigningKey::<sha256::Sha256>::new(private);
                    let signature = key.try_sign(input).map_err(fail)?;
                    let sign = run_phase(threads, dur, || {
                        key.try_sign(input).map(|s| drop(s.to_vec()))
                    })?;
                    let verify = run_phase(threads, dur, || {
                        let k = parse().map_err(|e| e.to_string())?;
                        rsa::pkcs1v15::VerifyingKey::<sha256::Sha256>::new(k)
                            .verify(input, &signature)
                            .map_err(|e| e.to_string())
                    })?;
                    (sign, verify)
                };
                Ok(pair(&sign, &verify))
            }
        }
    }

    /// SHA-256 as the `rsa` crate re-exports it (its `sha2` feature).
    mod sha256 {
        pub(super) use rsa::sha2::Sha256;
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
