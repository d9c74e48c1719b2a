//! `popkey verify shr|dpop`: check a proof the way an API would.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use popkey::verify::dpop::DpopVerifier;
use popkey::verify::shr::ShrVerifier;
use popkey::verify::token::{AccessTokenValidator, DecodeOnly, JwksValidator};
use popkey::verify::{NoncePolicy, Request, VerifyError};
use serde_json::Value;

#[derive(Subcommand)]
pub(crate) enum VerifyCommand {
    /// Verify a Signed HTTP Request for a request.
    ///
    /// Replay protection is on. Its cache is in memory and each process has
    /// its own unless --replay-store names a Redis/Valkey shared by every
    /// process (then a proof accepted by any of them is refused as `replay`
    /// by the others).
    Shr(ShrVerifyArgs),
    /// Verify a DPoP proof for a request.
    ///
    /// Replay protection is on. Its cache is in memory and each process has
    /// its own unless --replay-store names a Redis/Valkey shared by every
    /// process (then a proof accepted by any of them is refused as `replay`
    /// by the others).
    Dpop(DpopVerifyArgs),
}

#[derive(Args)]
pub(crate) struct Common {
    /// The request's HTTP method.
    #[arg(long)]
    method: String,
    /// The request's absolute URL.
    #[arg(long)]
    url: String,
    /// The nonce the server expects.
    #[arg(long, allow_hyphen_values = true, conflicts_with = "nonce_key_ring")]
    nonce: Option<String>,
    /// Oldest acceptable proof, in seconds.
    #[arg(long, default_value_t = 300)]
    max_age: u64,
    /// Check against this clock (Unix seconds) instead of now.
    #[arg(long)]
    now: Option<u64>,
    /// A JWKS file to validate the access token's signature with. Without
    /// it (and without --jkt) the token's claims are only decoded (and a
    /// note says so).
    #[arg(long, conflicts_with = "jkt")]
    jwks: Option<PathBuf>,
    /// The RFC 7638 thumbprint the access token is bound to, learned
    /// elsewhere (introspection, a gateway): for opaque tokens. The token is
    /// then only hashed (`ath`), never parsed.
    #[arg(long, value_name = "THUMBPRINT", allow_hyphen_values = true)]
    jkt: Option<String>,
    #[cfg(feature = "client")]
    /// An RFC 7662 introspection endpoint to validate the (opaque) access
    /// token with; the binding (`cnf.jkt`) comes from its answer.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with_all = ["jwks", "jkt"],
        requires_all = ["introspect_client_id", "introspect_secret_file"]
    )]
    introspect: Option<String>,
    #[cfg(feature = "client")]
    /// The client id to authenticate to the introspection endpoint with.
    #[arg(long, requires = "introspect")]
    introspect_client_id: Option<String>,
    #[cfg(feature = "client")]
    /// A file holding the client secret for the introspection endpoint
    /// (a file, so the secret stays out of the process list).
    #[arg(long, requires = "introspect")]
    introspect_secret_file: Option<PathBuf>,
    #[cfg(feature = "client")]
    /// Also trust the PEM CA certificates in FILE when asking the
    /// introspection endpoint (a private CA; repeatable).
    #[arg(long = "ca-file", value_name = "FILE", requires = "introspect")]
    ca_files: Vec<PathBuf>,
    /// Required access-token issuer (with --jwks).
    #[arg(long, requires = "jwks")]
    issuer: Option<String>,
    /// Required access-token audience (with --jwks or --introspect).
    #[arg(long, conflicts_with = "jkt")]
    audience: Option<String>,
    #[command(flatten)]
    fleet: crate::fleet::FleetArgs,
    /// With `--proof -`: every line of standard input is one proof; print
    /// one result line each (claims, or `{"error": …}`), then a summary.
    #[arg(long)]
    lines: bool,
}

#[derive(Args)]
pub(crate) struct ShrVerifyArgs {
    /// The SHR (the value after `PoP `); `-` reads it from standard input.
    #[arg(long)]
    proof: String,
    /// Accept what MSAL.js signs: it lower-cases the URL, so `p` and a raw
    /// `q` are compared ignoring ASCII case. RISK: on a case-sensitive
    /// server `/Users/Alice` and `/users/alice` are different resources, and
    /// a proof for one is then accepted for the other.
    #[arg(long, value_enum)]
    compat: Option<Compat>,
    #[command(flatten)]
    common: Common,
    /// A request header, as 'Name: value' (for `h`). Repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A file holding the request body (for `b`).
    #[arg(long)]
    body_file: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct DpopVerifyArgs {
    /// The DPoP proof (the `DPoP` header's value); `-` reads it from
    /// standard input.
    #[arg(long)]
    proof: String,
    #[command(flatten)]
    common: Common,
    /// The access token presented with the proof (`Authorization: DPoP <token>`).
    #[arg(long, allow_hyphen_values = true)]
    access_token: Option<String>,
}

/// Client families whose quirks `verify shr` can accept.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Compat {
    /// MSAL.js (`@azure/msal-common`): lower-cased URLs.
    MsalJs,
}

/// An access token whose binding is known from elsewhere (`--jkt`): it is
/// never parsed, and its claims are just that binding.
struct KnownBinding {
    jkt: String,
}

impl AccessTokenValidator for KnownBinding {
    fn validate(
        &self,
        _token: &str,
        _now: u64,
    ) -> Result<serde_json::Map<String, Value>, VerifyError> {
        let mut cnf = serde_json::Map::new();
        cnf.insert("jkt".into(), Value::String(self.jkt.clone()));
        let mut claims = serde_json::Map::new();
        claims.insert("cnf".into(), Value::Object(cnf));
        Ok(claims)
    }

    fn checks_signature(&self) -> bool {
        false
    }
}

/// `--proof VALUE`, or the proof read from standard input for `--proof -`.
fn read_proof(arg: &str) -> Result<String, String> {
    if arg != "-" {
        return Ok(arg.to_owned());
    }
    use std::io::Read;
    let mut text = String::new();
    std::io::stdin()
        .take(1 << 20)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the proof from standard input: {e}"))?;
    Ok(text.trim().to_owned())
}

/// What `verify` ends with: the claims, or a rejection.
pub(crate) enum Outcome {
    Verified(String),
    Rejected(String),
}

fn validator(
    c: &Common,
    has_token: bool,
    #[cfg_attr(not(feature = "client"), allow(unused_variables))] token_type: &str,
) -> Result<Arc<dyn AccessTokenValidator>, String> {
    #[cfg(feature = "client")]
    if let (Some(url), Some(id), Some(secret_file)) = (
        &c.introspect,
        &c.introspect_client_id,
        &c.introspect_secret_file,
    ) {
        let secret = std::fs::read_to_string(secret_file).map_err(|e| {
            format!(
                "cannot read the introspection secret file {}: {e}",
                secret_file.display()
            )
        })?;
        let mut v = popkey::verify::introspect::IntrospectionValidator::new(url, id, secret.trim())
            .map_err(|e| e.to_string())?
            .require_token_type(token_type);
        if !c.ca_files.is_empty() {
            let mut tls = popkey::client::TlsConfig::new();
            for f in &c.ca_files {
                tls = tls
                    .add_ca_pem_file(f)
                    .map_err(|e| format!("--ca-file: {e}"))?;
            }
            v = v.tls(&tls).map_err(|e| e.to_string())?;
        }
        if let Some(a) = &c.audience {
            v = v.audience(a);
        }
        return Ok(Arc::new(v));
    }
    if let Some(jkt) = &c.jkt {
        return Ok(Arc::new(KnownBinding { jkt: jkt.clone() }));
    }
    let Some(path) = &c.jwks else {
        if c.audience.is_some() {
            return Err("--audience needs --jwks or --introspect".into());
        }
        if has_token {
            eprintln!("popkey: note: the access token's signature is not checked (no --jwks)");
        }
        return Ok(Arc::new(DecodeOnly));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read JWKS {}: {e}", path.display()))?;
    let mut v = JwksValidator::from_jwks(&text).map_err(|e| e.to_string())?;
    if c.issuer.is_none() || c.audience.is_none() {
        eprintln!(
            "popkey: note: without --issuer and --audience, any token this JWKS signed is accepted"
        );
    }
    if let Some(i) = &c.issuer {
        v = v.issuer(i);
    }
    if let Some(a) = &c.audience {
        v = v.audience(a);
    }
    Ok(Arc::new(v))
}

fn policy(c: &Common) -> Result<NoncePolicy, String> {
    if let Some(issuer) = c.fleet.nonce_issuer()? {
        return Ok(NoncePolicy::Issuer(issuer));
    }
    Ok(match &c.nonce {
        Some(n) => NoncePolicy::Expected(n.clone()),
        None => NoncePolicy::ClientChosen,
    })
}

/// The shared replay store, when `--replay-store` names one, and the
/// runtime its calls run on.
struct SharedReplay {
    #[cfg(feature = "redis")]
    store: Option<(
        Arc<popkey::verify::redis::RedisReplayStore>,
        tokio::runtime::Runtime,
    )>,
}

impl SharedReplay {
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    fn new(c: &Common) -> Result<Self, String> {
        #[cfg(feature = "redis")]
        if let Some(store) = c.fleet.replay_store()? {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the async runtime: {e}"))?;
            return Ok(SharedReplay {
                store: Some((store, rt)),
            });
        }
        Ok(SharedReplay {
            #[cfg(feature = "redis")]
            store: None,
        })
    }
}

/// Runs `check` on the proof (or on every line of standard input with
/// `--lines`).
fn run_proofs(
    proof_arg: &str,
    lines: bool,
    mut check: impl FnMut(&str) -> Result<serde_json::Map<String, Value>, VerifyError>,
) -> Result<Outcome, String> {
    if !lines {
        let proof = read_proof(proof_arg)?;
        return Ok(finish(check(&proof)));
    }
    if proof_arg != "-" {
        return Err("--lines reads proofs from standard input: use --proof -".into());
    }
    use std::io::{BufRead, Read, Write};
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let stdout = std::io::stdout();
    let mut input = std::io::stdin().lock();
    let mut line = String::new();
    loop {
        line.clear();
        // At most 1 MiB per line, as for a single proof.
        let n = (&mut input)
            .take(1 << 20)
            .read_line(&mut line)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        if n == 0 {
            break;
        }
        if !line.ends_with('\n') && n == 1 << 20 {
            return Err("a line of standard input is longer than 1 MiB".into());
        }
        let proof = line.trim();
        if proof.is_empty() {
            continue;
        }
        let text = match finish(check(proof)) {
            Outcome::Verified(t) => {
                accepted += 1;
                t
            }
            Outcome::Rejected(t) => {
                rejected += 1;
                t
            }
        };
        let mut out = stdout.lock();
        writeln!(out, "{text}")
            .and_then(|_| out.flush())
            .map_err(|e| format!("cannot write the result: {e}"))?;
    }
    Ok(Outcome::Verified(
        serde_json::json!({"accepted": accepted, "rejected": rejected}).to_string(),
    ))
}

fn finish(r: Result<serde_json::Map<String, Value>, VerifyError>) -> Outcome {
    match r {
        Ok(claims) => Outcome::Verified(Value::Object(claims).to_string()),
        Err(e) => Outcome::Rejected(e.to_json().to_string()),
    }
}

pub(crate) fn run(cmd: &VerifyCommand) -> Result<Outcome, String> {
    match cmd {
        VerifyCommand::Shr(a) => {
            let c = &a.common;
            let body = match &a.body_file {
                Some(p) => Some(
                    std::fs::read(p)
                        .map_err(|e| format!("cannot read body file {}: {e}", p.display()))?,
                ),
                None => None,
            };
            let mut req = Request::new(&c.method, &c.url);
            for h in &a.headers {
                let (n, v) = h
                    .split_once(':')
                    .ok_or_else(|| format!("--header `{h}` is not 'Name: value'"))?;
                req = req.header(n.trim(), v.trim());
            }
            if let Some(b) = &body {
                req = req.body(b);
            }
            // Without --replay-store the replay cache lives and dies with
            // this process, so it cannot catch a replay across runs.
            let mut v = ShrVerifier::new(validator(c, true, "PoP")?)
                .max_age(c.max_age)
                .nonce(policy(c)?);
            if matches!(a.compat, Some(Compat::MsalJs)) {
                v = v.msal_js_compat();
            }
            let shared = SharedReplay::new(c)?;
            #[cfg(feature = "redis")]
            if let Some((store, rt)) = &shared.store {
                let v = v.async_replay_store(store.clone());
                return run_proofs(&a.proof, c.lines, |proof| {
                    let now = c.now.unwrap_or_else(unix_now);
                    rt.block_on(v.verify_async_at(proof, &req, now))
                        .map(|ok| ok.claims)
                });
            }
            let _ = shared;
            run_proofs(&a.proof, c.lines, |proof| {
                let now = c.now.unwrap_or_else(unix_now);
                v.verify_at(proof, &req, now).map(|ok| ok.claims)
            })
        }
        VerifyCommand::Dpop(a) => {
            let c = &a.common;
            let v = DpopVerifier::new(validator(c, a.access_token.is_some(), "DPoP")?)
                .max_age(c.max_age)
                .nonce(policy(c)?);
            let authorization = a.access_token.as_ref().map(|t| format!("DPoP {t}"));
            let authorization = authorization.as_deref();
            let shared = SharedReplay::new(c)?;
            #[cfg(feature = "redis")]
            if let Some((store, rt)) = &shared.store {
                let v = v.async_replay_store(store.clone());
                return run_proofs(&a.proof, c.lines, |proof| {
                    let now = c.now.unwrap_or_else(unix_now);
                    rt.block_on(v.verify_async_at(&dpop_request(c, authorization, proof), now))
                        .map(|ok| ok.claims)
                });
            }
            let _ = shared;
            run_proofs(&a.proof, c.lines, |proof| {
                let now = c.now.unwrap_or_else(unix_now);
                v.verify_at(&dpop_request(c, authorization, proof), now)
                    .map(|ok| ok.claims)
            })
        }
    }
}

/// The request a DPoP proof arrives with.
fn dpop_request<'a>(c: &'a Common, authorization: Option<&'a str>, proof: &'a str) -> Request<'a> {
    let req = Request::new(&c.method, &c.url).header("DPoP", proof);
    match authorization {
        Some(auth) => req.header("Authorization", auth),
        None => req,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
