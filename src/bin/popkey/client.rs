//! `popkey token` and `popkey call`: get a bound token, call an API with it.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
#[cfg(feature = "mtls")]
use popkey::client::BindingCertificate;
use popkey::client::{ClientAuth, PopClient, Scheme, TlsConfig, TokenClient, TokenRequest};
use popkey::PopKey;

use crate::KeyArg;

#[derive(Args)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    key: KeyArg,
    /// The token endpoint, e.g. https://login.microsoftonline.com/TENANT/oauth2/v2.0/token.
    #[arg(
        long,
        env = "POPKEY_TOKEN_ENDPOINT",
        required_unless_present = "tenant",
        conflicts_with = "tenant"
    )]
    token_endpoint: Option<String>,
    /// A Microsoft Entra ID tenant (id or domain): the token endpoint is
    /// {authority}/{tenant}/oauth2/v2.0/token.
    #[arg(long)]
    tenant: Option<String>,
    /// The Entra authority host for --tenant.
    #[arg(
        long,
        default_value = "https://login.microsoftonline.com",
        requires = "tenant"
    )]
    authority: String,
    /// The client (application) id.
    #[arg(long, env = "POPKEY_CLIENT_ID")]
    client_id: String,
    /// A scope to request (repeatable), e.g. api://orders/.default.
    #[arg(long = "scope", required = true)]
    scopes: Vec<String>,
    /// Token kind.
    #[arg(long, default_value = "pop", value_parser = parse_scheme)]
    scheme: Scheme,
    /// Authenticate with the client secret in this file.
    #[arg(long, conflicts_with = "assertion_key")]
    client_secret_file: Option<PathBuf>,
    /// Authenticate with a private_key_jwt assertion signed by this key URI
    /// (it may be the --key itself).
    #[arg(long)]
    assertion_key: Option<String>,
    /// The assertion key's certificate chain (PEM), for x5t#S256 and x5c.
    #[arg(long, requires = "assertion_key")]
    assertion_cert: Option<PathBuf>,
    /// Also trust the CA certificates (PEM) in this file, for an authority
    /// or API behind a private CA. Repeatable. The platform's trust store
    /// is always used too.
    #[arg(long = "ca-file", value_name = "FILE")]
    ca_files: Vec<PathBuf>,
    /// The key's certificate (PEM, leaf first): presented in the TLS
    /// handshake (mutual TLS) to the token endpoint and the API. Required
    /// with --scheme mtls: the token is bound to it (RFC 8705). Make one
    /// with `popkey cert self-signed` or `popkey cert csr`.
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Authenticate the client with its TLS certificate (RFC 8705 §2:
    /// self_signed_tls_client_auth or tls_client_auth): only the client id
    /// goes in the body. Needs --cert.
    #[arg(long, requires = "cert", conflicts_with_all = ["client_secret_file", "assertion_key"])]
    tls_client_auth: bool,
}

#[derive(Args)]
pub(crate) struct CallArgs {
    #[command(flatten)]
    token: TokenArgs,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// A request header, 'Name: value'. Repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A file whose bytes are the request body.
    #[arg(long)]
    data_file: Option<PathBuf>,
    /// The API URL.
    url: String,
}

fn parse_scheme(s: &str) -> Result<Scheme, String> {
    s.parse().map_err(|e: popkey::Error| e.to_string())
}

impl TokenArgs {
    fn build(&self) -> Result<(PopKey, TokenRequest), String> {
        let s = |e: popkey::Error| e.to_string();
        let key = self.key.open().map_err(s)?;
        let auth = match (&self.client_secret_file, &self.assertion_key) {
            _ if self.tls_client_auth => ClientAuth::TlsClientAuth,
            (Some(f), None) => ClientAuth::secret_file(f).map_err(s)?,
            (None, Some(uri)) => {
                let signer = if uri == &self.key.key { key.clone() } else { PopKey::open(uri).map_err(s)? };
                let certificate_pem = match &self.assertion_cert {
                    Some(p) => Some(std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?),
                    None => None,
                };
                ClientAuth::PrivateKeyJwt { key: signer, certificate_pem }
            }
            (None, None) => match std::env::var("POPKEY_CLIENT_SECRET") {
                Ok(secret) if !secret.is_empty() => ClientAuth::secret(&secret),
                _ => return Err("authenticate the client with --client-secret-file, --assertion-key, --tls-client-auth or POPKEY_CLIENT_SECRET".into()),
            },
            (Some(_), Some(_)) => return Err("give --client-secret-file or --assertion-key, not both".into()),
        };
        let scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        let endpoint = match (&self.token_endpoint, &self.tenant) {
            (Some(e), _) => e.clone(),
            (None, Some(t)) => popkey::client::entra_token_endpoint(Some(&self.authority), t),
            (None, None) => return Err("give --token-endpoint or --tenant".into()),
        };
        let req =
            TokenRequest::new(&endpoint, &self.client_id, &scopes, self.scheme, auth).map_err(s)?;
        Ok((key, req))
    }
}

impl TokenArgs {
    /// The TLS settings of the token and API requests: the platform's
    /// trust store plus every --ca-file.
    fn tls(&self) -> Result<TlsConfig, String> {
        let mut tls = TlsConfig::new();
        for path in &self.ca_files {
            tls = tls.add_ca_pem_file(path).map_err(|e| e.to_string())?;
        }
        Ok(tls)
    }
}

impl TokenArgs {
    /// With --cert: the key and its certificate as the TLS client identity
    /// (refused here, before any network call, when the certificate is not
    /// for --key, not valid now or not a certificate) and, for --scheme
    /// mtls, the certificate the token must be bound to.
    #[cfg(feature = "mtls")]
    fn client_identity(
        &self,
        key: &PopKey,
        req: TokenRequest,
        tls: TlsConfig,
    ) -> Result<(TokenRequest, TlsConfig), String> {
        let path = match &self.cert {
            Some(path) => path,
            None if self.scheme == Scheme::Mtls => {
                return Err("--scheme mtls needs the key's certificate: --cert FILE (make one with `popkey cert self-signed` or `popkey cert csr`)".into())
            }
            None => return Ok((req, tls)),
        };
        let identity = popkey::tls::ClientIdentity::from_pem_file(key.clone(), path)
            .map_err(|e| format!("--cert {}: {e}", path.display()))?;
        let req = if self.scheme == Scheme::Mtls {
            req.client_certificate(BindingCertificate::from(&identity))
        } else {
            req
        };
        Ok((req, tls.client_identity(identity)))
    }

    #[cfg(not(feature = "mtls"))]
    fn client_identity(
        &self,
        _key: &PopKey,
        req: TokenRequest,
        tls: TlsConfig,
    ) -> Result<(TokenRequest, TlsConfig), String> {
        if self.cert.is_some() || self.scheme == Scheme::Mtls {
            return Err("this popkey was built without the `mtls` feature: --cert and --scheme mtls are not available".into());
        }
        Ok((req, tls))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

pub(crate) fn token(args: &TokenArgs) -> Result<String, String> {
    let (key, req) = args.build()?;
    let (req, tls) = args.client_identity(&key, req, args.tls()?)?;
    let resp = runtime()?
        .block_on(async { TokenClient::with_tls(&tls)?.request(&req, &key).await })
        .map_err(|e| e.to_string())?;
    Ok(serde_json::Value::Object(resp.raw).to_string())
}

/// Prints the body; fails (after printing it) when the status is an error.
pub(crate) fn call(args: &CallArgs) -> Result<Option<String>, String> {
    let (key, req) = args.token.build()?;
    let (req, tls) = args.token.client_identity(&key, req, args.token.tls()?)?;
    let method = reqwest::Method::from_bytes(args.method.as_bytes())
        .map_err(|_| format!("`{}` is not an HTTP method", args.method))?;
    let mut headers = Vec::new();
    for h in &args.headers {
        let (n, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header `{h}` is not 'Name: value'"))?;
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    let body = match &args.data_file {
        Some(p) => Some(std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?),
        None => None,
    };
    let (status, bytes) = runtime()?
        .block_on(async {
            let client = PopClient::with_tls(key, req, &tls)?;
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let resp = client.send(method, &args.url, &h, body).await?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| popkey::ClientError::Http {
                url: args.url.clone(),
                message: format!("reading the body failed: {e}"),
            })?;
            Ok::<_, popkey::Error>((status, bytes))
        })
        .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&bytes);
    let _ = out.flush();
    if status.is_client_error() || status.is_server_error() {
        return Err(format!("the API answered HTTP {status}"));
    }
    Ok(None)
}
