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
    Shr(ShrVerifyArgs),
    /// Verify a DPoP proof for a request.
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
    #[arg(long)]
    nonce: Option<String>,
    /// Oldest acceptable proof, in seconds.
    #[arg(long, default_value_t = 300)]
    max_age: u64,
    /// Check against this clock (Unix seconds) instead of now.
    #[arg(long)]
    now: Option<u64>,
    /// A JWKS file to validate the access token's signature with. Without
    /// it the token's claims are only decoded (and a note says so).
    #[arg(long)]
    jwks: Option<PathBuf>,
    /// Required access-token issuer (with --jwks).
    #[arg(long, requires = "jwks")]
    issuer: Option<String>,
    /// Required access-token audience (with --jwks).
    #[arg(long, requires = "jwks")]
    audience: Option<String>,
}

#[derive(Args)]
pub(crate) struct ShrVerifyArgs {
    /// The SHR (the value after `PoP `).
    #[arg(long)]
    proof: String,
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
    /// The DPoP proof (the `DPoP` header's value).
    #[arg(long)]
    proof: String,
    #[command(flatten)]
    common: Common,
    /// The access token presented with the proof (`Authorization: DPoP <token>`).
    #[arg(long)]
    access_token: Option<String>,
}

/// What `verify` ends with: the claims, or a rejection.
pub(crate) enum Outcome {
    Verified(String),
    Rejected(String),
}

fn validator(c: &Common, has_token: bool) -> Result<Arc<dyn AccessTokenValidator>, String> {
    let Some(path) = &c.jwks else {
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

fn policy(c: &Common) -> NoncePolicy {
    match &c.nonce {
        Some(n) => NoncePolicy::Expected(n.clone()),
        None => NoncePolicy::ClientChosen,
    }
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
            let v = ShrVerifier::new(validator(c, true)?)
                .max_age(c.max_age)
                .nonce(policy(c));
            let now = c.now.unwrap_or_else(unix_now);
            Ok(finish(v.verify_at(&a.proof, &req, now).map(|ok| ok.claims)))
        }
        VerifyCommand::Dpop(a) => {
            let c = &a.common;
            let v = DpopVerifier::new(validator(c, a.access_token.is_some())?)
                .max_age(c.max_age)
                .nonce(policy(c));
            let now = c.now.unwrap_or_else(unix_now);
            Ok(finish(
                v.verify_at(
                    &[&a.proof],
                    &c.method,
                    &c.url,
                    a.access_token.as_deref(),
                    now,
                )
                .map(|ok| ok.claims),
            ))
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
