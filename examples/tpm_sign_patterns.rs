//! What a TPM signature costs, by usage pattern, on one TCTI:
//!
//! * `loaded_password`: the key stays loaded, password authorization (what
//!   popkey does): one TPM2_Sign round trip per signature;
//! * `load_sign_flush`: TPM2_Load, TPM2_Sign, TPM2_FlushContext per signature;
//! * `loaded_fresh_session`: the key stays loaded, but every signature runs
//!   in tss-esapi's `execute_with_nullauth_session` (a new HMAC session per
//!   command);
//! * `popkey_sign` and `popkey_shr`: popkey's `PopKey::sign` and a whole SHR.
//!
//! ```text
//! swtpm socket --tpm2 --server type=tcp,port=2321 --ctrl type=tcp,port=2322 \
//!   --tpmstate dir=$(mktemp -d) --flags not-need-init,startup-clear &
//! cargo run --release --features tpm --example tpm_sign_patterns -- swtpm:host=127.0.0.1,port=2321 500 [ES256|RS256|PS256]
//! ```
//!
//! Prints one JSON object: p50 and mean latency in microseconds per pattern.
//! `popkey_sign` and `popkey_shr` run interleaved (one of each per round),
//! so load from other processes on a shared machine hits both alike.

use std::error::Error;
use std::str::FromStr;
use std::time::Instant;

use popkey::shr::SignedHttpRequest;
use popkey::{CreateOptions, PopKey};
use serde_json::{json, Map, Value};
use tss_esapi::attributes::ObjectAttributes;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, EccPoint, EccScheme, HashScheme, HashcheckTicket, Public, PublicBuilder,
    PublicEccParametersBuilder, SignatureScheme, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::Context;

fn ecc_public(attrs: ObjectAttributes, restricted_decrypt: bool) -> Result<Public, Box<dyn Error>> {
    let params = if restricted_decrypt {
        PublicEccParametersBuilder::new_restricted_decryption_key(
            SymmetricDefinitionObject::AES_128_CFB,
            EccCurve::NistP256,
        )
    } else {
        PublicEccParametersBuilder::new_unrestricted_signing_key(
            EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
            EccCurve::NistP256,
        )
    }
    .build()?;
    Ok(PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()?)
}

fn ticket() -> Result<HashcheckTicket, Box<dyn Error>> {
    Ok(HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
        tag: TPM2_ST_HASHCHECK,
        hierarchy: TPM2_RH_NULL,
        digest: Default::default(),
    })?)
}

/// Runs `op` `n` times; returns (p50, mean) in microseconds.
fn measure(
    n: usize,
    mut op: impl FnMut() -> Result<(), Box<dyn Error>>,
) -> Result<(f64, f64), Box<dyn Error>> {
    for _ in 0..n / 10 {
        op()?;
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        op()?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    let mean = lat.iter().sum::<f64>() / n as f64;
    Ok((lat[n / 2], mean))
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let tcti = args
        .next()
        .ok_or("usage: tpm_sign_patterns TCTI [SIGNATURES]")?;
    let n: usize = args.next().map_or(Ok(500), |s| s.parse())?;
    // The algorithm of the popkey key (the raw patterns always use ES256).
    let alg: popkey::Algorithm = args
        .next()
        .map_or(Ok(popkey::Algorithm::ES256), |s| s.parse())?;
    let mut out = Map::new();
    let mut record = |name: &str, (p50, mean): (f64, f64)| {
        out.insert(
            name.into(),
            json!({"p50_us": (p50 * 10.0).round() / 10.0, "mean_us": (mean * 10.0).round() / 10.0}),
        );
    };

    {
        let mut ctx = Context::new(TctiNameConf::from_str(&tcti)?)?;
        let primary_attrs = ObjectAttributes::builder()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_no_da(true)
            .with_restricted(true)
            .with_decrypt(true)
            .build()?;
        let key_attrs = ObjectAttributes::builder()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_sign_encrypt(true)
            .build()?;
        let primary_public = ecc_public(primary_attrs, true)?;
        let key_public = ecc_public(key_attrs, false)?;
        ctx.set_sessions((Some(AuthSession::Password), None, None));
        let primary = ctx
            .create_primary(Hierarchy::Owner, primary_public, None, None, None, None)?
            .key_handle;
        let blob = ctx.create(primary, key_public, None, None, None, None)?;
        let digest = Digest::try_from(vec![7u8; 32])?;
        let scheme = SignatureScheme::EcDsa {
            hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
        };

        let key = ctx.load(primary, blob.out_private.clone(), blob.out_public.clone())?;
        record(
            "loaded_password",
            measure(n, || {
                ctx.sign(key, digest.clone(), scheme, ticket()?)?;
                Ok(())
            })?,
        );
        record(
            "load_sign_flush",
            measure(n, || {
                let k = ctx.load(primary, blob.out_private.clone(), blob.out_public.clone())?;
                ctx.sign(k, digest.clone(), scheme, ticket()?)?;
                ctx.flush_context(k.into())?;
                Ok(())
            })?,
        );
        ctx.clear_sessions();
        record(
            "loaded_fresh_session",
            measure(n / 5, || {
                ctx.execute_with_nullauth_session(|c| {
                    c.sign(key, digest.clone(), scheme, ticket()?)
                        .map_err(Box::<dyn Error>::from)
                })?;
                Ok(())
            })?,
        );
        ctx.flush_context(key.into())?;
        ctx.flush_context(primary.into())?;
    } // the context closes: swtpm serves one client at a time

    let dir = tempfile::tempdir()?;
    let uri = format!(
        "tpm:path={};tcti={tcti}",
        dir.path().join("key.pem").display()
    );
    let key = PopKey::create(&uri, &CreateOptions::new().alg(alg))?;
    let input = vec![b'A'; 1800];
    let token = format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.{}.sig",
        "A".repeat(1200)
    );
    let shr = SignedHttpRequest::new("GET", "https://api.example.com/v1/items?page=2", &token)?;
    let (mut raw, mut full) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + n / 10 {
        let t = Instant::now();
        key.sign(&input)?;
        let a = t.elapsed().as_secs_f64() * 1e6;
        let t = Instant::now();
        shr.sign(&key)?;
        let b = t.elapsed().as_secs_f64() * 1e6;
        if i >= n / 10 {
            raw.push(a);
            full.push(b);
        }
    }
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v.iter().sum::<f64>() / v.len() as f64)
    };
    let (raw, full) = (stats(raw), stats(full));
    record("popkey_sign", raw);
    record("popkey_shr", full);
    out.insert("popkey_alg".into(), json!(alg.as_str()));
    out.insert(
        "shr_over_sign_p50".into(),
        json!((full.0 / raw.0 * 1000.0).round() / 1000.0),
    );
    println!("{}", Value::Object(out));
    Ok(())
}
