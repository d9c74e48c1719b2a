//! The `popkey` command: create and inspect PoP keys, sign SHRs and DPoP
//! proofs, measure a device.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use popkey::dpop::DpopProof;
use popkey::shr::SignedHttpRequest;
use popkey::{Algorithm, CreateOptions, OpenOptions, PopCryptoProvider, PopKey};
use serde_json::json;

mod bench;
#[cfg(feature = "cert")]
mod cert;
#[cfg(feature = "client")]
mod client;
mod fleet;
#[cfg(feature = "gateway")]
mod gateway;
mod verify;

/// Proof-of-Possession keys in TPMs and HSMs: SHR and DPoP signing.
#[derive(Parser)]
#[command(name = "popkey", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or inspect keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print a Signed HTTP Request (for `Authorization: PoP <shr>`).
    Shr(ShrArgs),
    /// Print a DPoP proof (for the `DPoP` header).
    Dpop(DpopArgs),
    /// Print the `req_cnf` token-request parameter for a key.
    ReqCnf(KeyArg),
    /// Measure raw signing, SHR and DPoP creation with a key.
    Bench(bench::BenchArgs),
    /// Verify an SHR or a DPoP proof as an API would. Prints the verified
    /// claims, or {"error":"<kind>","message":"…"} and exits 1.
    #[command(subcommand)]
    Verify(verify::VerifyCommand),
    /// Get a token bound to the key (client credentials) and print the
    /// token response JSON.
    #[cfg(feature = "client")]
    Token(client::TokenArgs),
    /// Get a token, call an API with it and a fresh proof, print the body.
    #[cfg(feature = "client")]
    Call(client::CallArgs),
    /// Make a CSR or a self-signed certificate for a key (for mTLS), or
    /// describe a certificate.
    #[cfg(feature = "cert")]
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Forward authentication for nginx auth_request, Traefik forwardAuth
    /// and Envoy ext_authz: verifies DPoP/PoP requests, answers 200 with
    /// X-Pop-Subject/-Jkt/-Scheme or 401/400/503 with the challenge.
    #[cfg(feature = "gateway")]
    Gateway(gateway::GatewayArgs),
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a key and print its description as JSON.
    Create {
        #[command(flatten)]
        key: KeyArg,
        /// Algorithm of the new key.
        #[arg(long, value_parser = parse_alg)]
        alg: Option<Algorithm>,
        /// Replace an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Open a key and print its description as JSON.
    Show(KeyArg),
}

/// The key to use.
#[derive(Args)]
pub(crate) struct KeyArg {
    /// Key URI: mem:, file:/path.pem, pkcs11:…, tpm:…
    #[arg(long, env = "POPKEY_KEY", hide_env_values = true)]
    key: String,
    /// Accept a PKCS#11 or TPM key whose device says it is exportable.
    #[arg(long)]
    allow_exportable: bool,
}

impl KeyArg {
    pub(crate) fn open(&self) -> popkey::Result<PopKey> {
        PopKey::open_with(
            &self.key,
            &OpenOptions::new().allow_exportable(self.allow_exportable),
        )
    }
}

#[derive(Args)]
struct TokenArg {
    /// The access token (visible to other local users in the process list;
    /// prefer --access-token-file).
    #[arg(long, conflicts_with = "access_token_file", allow_hyphen_values = true)]
    access_token: Option<String>,
    /// A file holding the access token.
    #[arg(long)]
    access_token_file: Option<PathBuf>,
}

impl TokenArg {
    fn get(&self) -> Result<Option<String>, String> {
        match (&self.access_token, &self.access_token_file) {
            (Some(t), _) => Ok(Some(t.clone())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|t| Some(t.trim().to_owned()))
                .map_err(|e| format!("cannot read access token file {}: {e}", path.display())),
            (None, None) => Ok(None),
        }
    }
}

#[derive(Args)]
struct ShrArgs {
    #[command(flatten)]
    key: KeyArg,
    /// HTTP method, uppercase.
    #[arg(long)]
    method: String,
    /// Absolute request URL.
    #[arg(long)]
    url: String,
    #[command(flatten)]
    token: TokenArg,
    /// Server-provided nonce (default: 128 random bits).
    #[arg(long, allow_hyphen_values = true)]
    nonce: Option<String>,
    /// A JSON object to carry as `client_claims`.
    #[arg(long)]
    client_claims: Option<String>,
    /// Sign the URL's query parameters into `q`.
    #[arg(long)]
    sign_query: bool,
    /// A header to sign into `h`, as 'Name: value'. Repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A file whose bytes are the request body, signed into `b`.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Use this `ts` (Unix seconds) instead of now.
    #[arg(long)]
    ts: Option<u64>,
}

#[derive(Args)]
struct DpopArgs {
    #[command(flatten)]
    key: KeyArg,
    /// HTTP method, uppercase.
    #[arg(long)]
    method: String,
    /// Absolute request URL (query and fragment are left out of `htu`).
    #[arg(long)]
    url: String,
    #[command(flatten)]
    token: TokenArg,
    /// Server-provided DPoP nonce.
    #[arg(long, allow_hyphen_values = true)]
    nonce: Option<String>,
    /// Use this `iat` (Unix seconds) instead of now.
    #[arg(long)]
    iat: Option<u64>,
}

fn parse_alg(s: &str) -> Result<Algorithm, String> {
    s.parse().map_err(|e: popkey::Error| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Verify(cmd) = &cli.command {
        return match verify::run(cmd) {
            Ok(verify::Outcome::Verified(claims)) => {
                println!("{claims}");
                ExitCode::SUCCESS
            }
            Ok(verify::Outcome::Rejected(error)) => {
                println!("{error}");
                ExitCode::FAILURE
            }
            Err(msg) => {
                eprintln!("popkey: error: {msg}");
                ExitCode::from(2)
            }
        };
    }
    match run(cli.command) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("popkey: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<String, String> {
    let s = |e: popkey::Error| cli_message(&e);
    match command {
        Command::Key(KeyCommand::Create { key, alg, force }) => {
            let mut opts = CreateOptions::new().overwrite(force);
            opts.alg = alg;
            let k = PopKey::create(&key.key, &opts).map_err(s)?;
            Ok(describe(&k))
        }
        Command::Key(KeyCommand::Show(key)) => Ok(describe(&key.open().map_err(s)?)),
        Command::ReqCnf(key) => Ok(popkey::shr::req_cnf(&key.open().map_err(s)?)),
        Command::Shr(a) => {
            let token = a
                .token
                .get()?
                .ok_or("give the access token with --access-token or --access-token-file")?;
            let mut req = SignedHttpRequest::new(&a.method, &a.url, &token)
                .map_err(s)?
                .sign_query(a.sign_query);
            if let Some(n) = &a.nonce {
                req = req.nonce(n);
            }
            if let Some(ts) = a.ts {
                req = req.timestamp(ts);
            }
            if let Some(c) = &a.client_claims {
                req = req.client_claims(c).map_err(s)?;
            }
            for h in &a.headers {
                let (name, value) = h
                    .split_once(':')
                    .ok_or_else(|| format!("--header `{h}` is not 'Name: value'"))?;
                req = req.header(name.trim(), value.trim()).map_err(s)?;
            }
            if let Some(path) = &a.body_file {
                let body = std::fs::read(path)
                    .map_err(|e| format!("cannot read body file {}: {e}", path.display()))?;
                req = req.body(&body);
            }
            let key = a.key.open().map_err(s)?;
            req.sign(&key).map_err(s)
        }
        Command::Dpop(a) => {
            let mut proof = DpopProof::new(&a.method, &a.url).map_err(s)?;
            if let Some(t) = a.token.get()? {
                proof = proof.access_token(&t).map_err(s)?;
            }
            if let Some(n) = &a.nonce {
                proof = proof.nonce(n).map_err(s)?;
            }
            if let Some(iat) = a.iat {
                proof = proof.issued_at(iat);
            }
            let key = a.key.open().map_err(s)?;
            proof.sign(&key).map_err(s)
        }
        Command::Bench(a) => bench::run(&a),
        Command::Verify(_) => Err("verify is handled in main".into()),
        #[cfg(feature = "client")]
        Command::Token(a) => client::token(&a),
        #[cfg(feature = "client")]
        Command::Call(a) => client::call(&a).map(|_| String::new()),
        #[cfg(feature = "cert")]
        Command::Cert(c) => cert::run(&c),
        #[cfg(feature = "gateway")]
        Command::Gateway(a) => gateway::run(&a),
    }
}

/// The library's message, plus the flag of this command line that
/// addresses it (the library names its API options, not our flags).
fn cli_message(e: &popkey::Error) -> String {
    let hint = match e.kind() {
        popkey::ErrorKind::KeyExists => "; pass --force to replace it",
        popkey::ErrorKind::ExportableKey => "; pass --allow-exportable to accept it",
        popkey::ErrorKind::KeyNotFound => "; create a key with `popkey key create --key URI`",
        popkey::ErrorKind::CertificateKeyMismatch | popkey::ErrorKind::CertificateExpired => {
            "; make a certificate for the key with `popkey cert self-signed --key URI` or `popkey cert csr`"
        }
        _ => "",
    };
    format!("{e}{hint}")
}

/// `{"uri","backend","alg","jwk","kid","hardware","non_exportable","device"}`;
/// `device` is what the PKCS#11 token or TPM says about itself, `null` for
/// software keys.
fn describe(key: &PopKey) -> String {
    let jwk: serde_json::Value =
        serde_json::from_str(key.canonical_public_key_jwk()).unwrap_or_default();
    json!({
        "uri": key.uri(),
        "backend": key.location().backend,
        "alg": key.algorithm().as_str(),
        "jwk": jwk,
        "kid": key.kid(),
        "hardware": key.location().hardware,
        "non_exportable": key.location().non_exportable,
        "device": key.location().device,
    })
    .to_string()
}
