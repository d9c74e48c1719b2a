//! The job popkey is for: a long-running daemon that calls a protected API
//! with a token bound to a hardware key, a fresh proof on every request.
//!
//! Configured by environment:
//!
//! | variable | meaning |
//! |---|---|
//! | `POPKEY_KEY` | the key URI (`tpm:…`, `pkcs11:…`, `file:…`, `mem:`) |
//! | `POPKEY_TOKEN_ENDPOINT` | the token endpoint |
//! | `POPKEY_CLIENT_ID` | the client id |
//! | `POPKEY_SCOPE` | the scope (e.g. `api://orders/.default`) |
//! | `POPKEY_SCHEME` | `pop` (default), `dpop` or `bearer` |
//! | `POPKEY_CLIENT_SECRET_FILE` or `POPKEY_ASSERTION_KEY` | client authentication |
//! | `POPKEY_API_URL` | the API to call |
//! | `POPKEY_INTERVAL_MS` | pause between calls (default 5000) |
//! | `POPKEY_ITERATIONS` | stop after this many calls (default: run until Ctrl-C) |
//!
//! The key is installed as the process-wide key and the client follows it:
//! with `POPKEY_KEY=mem:?rotate=8h` (MSAL's in-memory key) the key rotates
//! every 8 hours and the next call fetches a token bound to the new key.
//!
//! Logs with `tracing` (`RUST_LOG=debug` for more). Never logs tokens.

use std::time::Duration;

use popkey::client::{ClientAuth, KeySource, PopClient, Scheme, TokenRequest};
use popkey::{KeySlot, PopKey};
use tracing::{error, info, warn};

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

fn setup() -> Result<(PopClient, String, Duration, u64), String> {
    let s = |e: popkey::Error| e.to_string();
    let slot = KeySlot::open(&env("POPKEY_KEY")?).map_err(s)?;
    let key = slot.current();
    popkey::install_default_slot(slot).map_err(s)?;
    info!(
        kid = key.kid(),
        backend = key.location().backend.as_str(),
        non_exportable = key.location().non_exportable,
        "key opened"
    );
    let scheme: Scheme = std::env::var("POPKEY_SCHEME")
        .unwrap_or_else(|_| "pop".into())
        .parse()
        .map_err(s)?;
    let auth = match (
        std::env::var("POPKEY_CLIENT_SECRET_FILE"),
        std::env::var("POPKEY_ASSERTION_KEY"),
    ) {
        (Ok(f), _) => ClientAuth::secret_file(f.as_ref()).map_err(s)?,
        (_, Ok(uri)) => ClientAuth::PrivateKeyJwt {
            key: if uri == env("POPKEY_KEY")? {
                key.clone()
            } else {
                PopKey::open(&uri).map_err(s)?
            },
            certificate_pem: None,
        },
        _ => return Err("set POPKEY_CLIENT_SECRET_FILE or POPKEY_ASSERTION_KEY".into()),
    };
    let scope = env("POPKEY_SCOPE")?;
    let req = TokenRequest::new(
        &env("POPKEY_TOKEN_ENDPOINT")?,
        &env("POPKEY_CLIENT_ID")?,
        &[scope.as_str()],
        scheme,
        auth,
    )
    .map_err(s)?;
    let interval = std::env::var("POPKEY_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let iterations = std::env::var("POPKEY_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((
        PopClient::new(KeySource::process_default().map_err(s)?, req).map_err(s)?,
        env("POPKEY_API_URL")?,
        Duration::from_millis(interval),
        iterations,
    ))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let (client, api, interval, iterations) = match setup() {
        Ok(v) => v,
        Err(e) => {
            error!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut n = 0u64;
    let mut failures = 0u64;
    loop {
        n += 1;
        let started = std::time::Instant::now();
        match client.get(&api).await {
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                if status.is_success() {
                    info!(call = n, %status, ms = started.elapsed().as_millis() as u64, body = %body.chars().take(200).collect::<String>(), "API call");
                } else {
                    failures += 1;
                    warn!(call = n, %status, body = %body.chars().take(200).collect::<String>(), "API refused the call");
                }
            }
            Err(e) => {
                failures += 1;
                warn!(call = n, error = %e, "API call failed");
            }
        }
        if iterations > 0 && n >= iterations {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => { info!("stopping"); break; }
        }
    }
    info!(calls = n, failures, "done");
    if failures == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
