//! A local Entra-style authority and protected API on loopback, for the
//! main demo and for trying popkey without a cloud tenant.
//!
//! ```sh
//! cargo run --example local_authority -- --listen 127.0.0.1:8400 \
//!     --client-secret-file secret.txt --client-jwk client-jwk.json
//! ```
//!
//! Prints one JSON line (`token_endpoint`, `api`, `jwks`) and serves until
//! stopped. Clients: `demo-secret` (client secret from the file) and
//! `demo-jwt` (private_key_jwt with the public JWK from the file).

use popkey_testkit::authority;

use clap::Parser;
use popkey::PublicJwk;

#[derive(Parser)]
struct Args {
    /// Address to listen on (loopback).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Register client `demo-secret` with the secret in this file.
    #[arg(long)]
    client_secret_file: Option<std::path::PathBuf>,
    /// Register client `demo-jwt` with this public JWK (JSON file).
    #[arg(long)]
    client_jwk: Option<std::path::PathBuf>,
    /// Demand DPoP nonces at the token endpoint and the API.
    #[arg(long)]
    require_nonces: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut clients = Vec::new();
    if let Some(f) = &args.client_secret_file {
        clients.push(authority::Client {
            id: "demo-secret".into(),
            secret: Some(std::fs::read_to_string(f)?.trim().to_owned()),
            jwk: None,
        });
    }
    if let Some(f) = &args.client_jwk {
        clients.push(authority::Client {
            id: "demo-jwt".into(),
            secret: None,
            jwk: Some(PublicJwk::parse(&std::fs::read_to_string(f)?)?),
        });
    }
    let config = authority::Config {
        clients,
        token_dpop_nonce: args.require_nonces,
        api_dpop_nonce: args.require_nonces,
        ..Default::default()
    };
    let running = authority::spawn(config, &args.listen).await;
    println!(
        "{}",
        serde_json::json!({"token_endpoint": running.token_endpoint, "api": running.api, "jwks": running.jwks})
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
