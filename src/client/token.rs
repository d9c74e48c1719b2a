//! The token endpoint: client-credentials requests for `pop`, `DPoP` and
//! bearer tokens.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde_json::{Map, Value};
use url::Url;
use zeroize::Zeroizing;

use super::key_source::KeySource;
use super::mtls::BindingCertificate;
use super::retry::{send_with_retry, RetryPolicy};
use super::{display_url, header, origin, sign_blocking, Nonces};
use crate::assertion::{ClientAssertion, ASSERTION_TYPE};
use crate::dpop::DpopProof;
use crate::error::{Error, Result};
use crate::key::PopKey;

/// Microsoft Entra ID's token endpoint for a tenant:
/// `{authority}/{tenant}/oauth2/v2.0/token`, authority defaulting to
/// `https://login.microsoftonline.com`.
pub fn entra_token_endpoint(authority: Option<&str>, tenant: &str) -> String {
    let authority = authority
        .unwrap_or("https://login.microsoftonline.com")
        .trim_end_matches('/');
    format!("{authority}/{tenant}/oauth2/v2.0/token")
}

/// The client-credentials scope Entra ID expects for a resource:
/// `api://orders` becomes `api://orders/.default`.
pub fn entra_scope(resource: &str) -> String {
    if resource.ends_with("/.default") {
        resource.to_owned()
    } else {
        format!("{}/.default", resource.trim_end_matches('/'))
    }
}

/// Which kind of token to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// MSAL-style PoP: `token_type=pop` and `req_cnf`; used with SHRs.
    Pop,
    /// RFC 9449 DPoP: a `DPoP` proof at the token endpoint and on every call.
    Dpop,
    /// A plain bearer token (for comparison; not bound to a key).
    Bearer,
    /// RFC 8705 certificate-bound token: the token request goes over
    /// mutual TLS with a certificate for the popkey key, the token's
    /// `cnf.x5t#S256` names that certificate, and every API call presents
    /// the same certificate with `Authorization: Bearer <token>`. One
    /// signature per TLS connection instead of one per request.
    ///
    /// The request must carry the certificate
    /// ([`TokenRequest::client_certificate`]) and the HTTP client must
    /// present it. The answer's `token_type` may be `Bearer` (RFC 8705) or
    /// `mtls_pop` (the name Microsoft's MSAL libraries use for these
    /// tokens).
    ///
    /// The certificate names one key: use a fixed key (the TLS identity's),
    /// not a rotating [`KeySource`] slot.
    Mtls,
}

impl Scheme {
    /// The `token_type` the server must answer with.
    pub fn expected_token_type(self) -> &'static str {
        match self {
            Scheme::Pop => "pop",
            Scheme::Dpop => "DPoP",
            Scheme::Bearer => "Bearer",
            Scheme::Mtls => "Bearer",
        }
    }

    /// Whether a token endpoint's `token_type` answers a request for this
    /// scheme (ASCII case-insensitive).
    pub fn accepts_token_type(self, token_type: &str) -> bool {
        token_type.eq_ignore_ascii_case(self.expected_token_type())
            || (self == Scheme::Mtls && token_type.eq_ignore_ascii_case("mtls_pop"))
    }
}

impl FromStr for Scheme {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "pop" => Ok(Scheme::Pop),
            "dpop" => Ok(Scheme::Dpop),
            "bearer" => Ok(Scheme::Bearer),
            "mtls" | "mtls_pop" | "mtls-pop" => Ok(Scheme::Mtls),
            _ => Err(Error::Config(format!(
                "scheme `{}` is not pop, dpop, bearer or mtls",
                s.chars().take(16).collect::<String>()
            ))),
        }
    }
}

/// How the client proves who it is to the token endpoint.
#[derive(Clone)]
pub enum ClientAuth {
    /// `client_secret` in the form body.
    Secret(Arc<Zeroizing<String>>),
    /// `private_key_jwt`: an RFC 7523 assertion signed by a popkey key,
    /// optionally with the key's certificate (PEM) for `x5t#S256`/`x5c`.
    PrivateKeyJwt {
        /// The signing key (the PoP key or another).
        key: PopKey,
        /// The key's certificate chain, PEM, leaf first.
        certificate_pem: Option<String>,
    },
    /// RFC 8705 §2 mutual-TLS client authentication,
    /// `self_signed_tls_client_auth` or `tls_client_auth` (the authority's
    /// registration says which): the body carries only `client_id`, and the
    /// client certificate in the TLS handshake authenticates the client.
    /// The HTTP client must present that certificate.
    TlsClientAuth,
}

impl ClientAuth {
    /// A client secret.
    pub fn secret(secret: &str) -> Self {
        ClientAuth::Secret(Arc::new(Zeroizing::new(secret.to_owned())))
    }

    /// A client secret read from a file (surrounding whitespace trimmed).
    pub fn secret_file(path: &std::path::Path) -> Result<Self> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::Io {
            action: "cannot read client secret file",
            path: path.to_path_buf(),
            source: e,
        })?);
        if text.trim().is_empty() {
            return Err(Error::Config(format!(
                "client secret file {} is empty",
                path.display()
            )));
        }
        Ok(Self::secret(text.trim()))
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAuth::Secret(_) => f.write_str("ClientAuth::Secret(<redacted>)"),
            ClientAuth::PrivateKeyJwt {
                key,
                certificate_pem,
            } => f
                .debug_struct("ClientAuth::PrivateKeyJwt")
                .field("key", key)
                .field("certificate", &certificate_pem.is_some())
                .finish(),
            ClientAuth::TlsClientAuth => f.write_str("ClientAuth::TlsClientAuth"),
        }
    }
}

/// What to ask the token endpoint for.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The token endpoint.
    pub token_endpoint: Url,
    /// The client id.
    pub client_id: String,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// Token kind.
    pub scheme: Scheme,
    /// Client authentication.
    pub auth: ClientAuth,
    /// The client certificate of the mTLS connection ([`Scheme::Mtls`]):
    /// the token must be bound to it.
    pub client_certificate: Option<BindingCertificate>,
}

impl TokenRequest {
    /// A client-credentials request.
    pub fn new(
        token_endpoint: &str,
        client_id: &str,
        scopes: &[&str],
        scheme: Scheme,
        auth: ClientAuth,
    ) -> Result<Self> {
        let url = Url::parse(token_endpoint).map_err(|e| {
            Error::Config(format!(
                "token endpoint `{token_endpoint}` is not a URL: {e}"
            ))
        })?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err(Error::Config(format!(
                "token endpoint `{token_endpoint}` must be an http(s) URL"
            )));
        }
        // Client secrets and assertions travel in the body: plain http only
        // to this machine (local authorities, tests).
        if url.scheme() == "http" && !is_loopback(&url) {
            return Err(Error::Config(format!(
                "token endpoint `{}` must use https (plain http is allowed for loopback addresses only)",
                display_url(&url)
            )));
        }
        if client_id.is_empty() {
            return Err(Error::Config("the client id is empty".into()));
        }
        Ok(TokenRequest {
            token_endpoint: url,
            client_id: client_id.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            scheme,
            auth,
            client_certificate: None,
        })
    }

    /// The client certificate the connection presents,
    /// for [`Scheme::Mtls`]: the returned token must be bound to it
    /// (checked when the token is a JWT), and tokens are cached per
    /// certificate. The HTTP client must present the same certificate.
    pub fn client_certificate(mut self, certificate: BindingCertificate) -> Self {
        self.client_certificate = Some(certificate);
        self
    }

    /// The thumbprint the token is bound to: the certificate's
    /// `x5t#S256` for [`Scheme::Mtls`], else the key's RFC 7638
    /// thumbprint. Tokens are cached under it.
    pub fn binding_thumbprint<'a>(&'a self, key: &'a PopKey) -> &'a str {
        match (&self.scheme, &self.client_certificate) {
            (Scheme::Mtls, Some(c)) => c.thumbprint(),
            _ => key.kid(),
        }
    }
}

/// A token endpoint's answer.
#[derive(Clone)]
pub struct TokenResponse {
    access_token: Zeroizing<String>,
    /// `token_type` as the server sent it.
    pub token_type: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// When to refresh (Entra's `refresh_in`), if the server said.
    pub refresh_in: Option<u64>,
    /// The whole JSON answer (contains the token: do not log it).
    pub raw: Map<String, Value>,
}

impl TokenResponse {
    /// The access token.
    pub fn access_token(&self) -> &str {
        &self.access_token
    }
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("refresh_in", &self.refresh_in)
            .finish()
    }
}

/// Talks to token endpoints.
#[derive(Clone, Debug)]
pub struct TokenClient {
    http: reqwest::Client,
    nonces: Arc<Nonces>,
    retry: RetryPolicy,
}

impl TokenClient {
    /// A client with its own connection pool and the default retry policy.
    pub fn new() -> Result<Self> {
        Ok(Self::with_http(
            super::default_http()?,
            Arc::new(Nonces::default()),
            RetryPolicy::default(),
        ))
    }

    /// A client with these TLS settings (trust anchors, client identity).
    pub fn with_tls(tls: &super::TlsConfig) -> Result<Self> {
        Ok(Self::with_http(
            tls.http_client()?,
            Arc::new(Nonces::default()),
            RetryPolicy::default(),
        ))
    }

    pub(crate) fn with_http(
        http: reqwest::Client,
        nonces: Arc<Nonces>,
        retry: RetryPolicy,
    ) -> Self {
        TokenClient {
            http,
            nonces,
            retry,
        }
    }

    /// One token request, made afresh for every attempt: a new client
    /// assertion (its `jti` must not repeat) and a new DPoP proof with the
    /// latest nonce.
    async fn build(
        &self,
        req: &TokenRequest,
        key: &PopKey,
        origin: &str,
    ) -> Result<reqwest::RequestBuilder> {
        let endpoint = &req.token_endpoint;
        // Zeroized on drop: the form may carry the client secret.
        let mut form: Vec<(&str, Zeroizing<String>)> = vec![
            ("grant_type", Zeroizing::new("client_credentials".into())),
            ("client_id", Zeroizing::new(req.client_id.clone())),
        ];
        if !req.scopes.is_empty() {
            form.push(("scope", Zeroizing::new(req.scopes.join(" "))));
        }
        match &req.auth {
            ClientAuth::Secret(s) => {
                form.push(("client_secret", Zeroizing::new(s.as_str().to_owned())))
            }
            // RFC 8705 §2: the certificate in the handshake authenticates.
            ClientAuth::TlsClientAuth => {}
            ClientAuth::PrivateKeyJwt {
                key,
                certificate_pem,
            } => {
                let (key, cert) = (key.clone(), certificate_pem.clone());
                let (id, aud) = (req.client_id.clone(), display_url(endpoint));
                let jwt = sign_blocking(move || {
                    let mut a = ClientAssertion::new(&id, &aud)?;
                    if let Some(pem) = cert {
                        a = a.certificate_pem(&pem, true)?;
                    }
                    a.sign(&key)
                })
                .await?;
                form.push((
                    "client_assertion_type",
                    Zeroizing::new(ASSERTION_TYPE.into()),
                ));
                form.push(("client_assertion", Zeroizing::new(jwt)));
            }
        }
        let mut dpop_header = None;
        match req.scheme {
            Scheme::Pop => {
                form.push(("token_type", Zeroizing::new("pop".into())));
                form.push(("req_cnf", Zeroizing::new(crate::shr::req_cnf(key))));
            }
            Scheme::Dpop => {
                let nonce = self.nonces.get(origin);
                let (key, url) = (key.clone(), endpoint.to_string());
                dpop_header = Some(
                    sign_blocking(move || {
                        let mut p = DpopProof::new("POST", &url)?;
                        if let Some(n) = nonce {
                            p = p.nonce(&n)?;
                        }
                        p.sign(&key)
                    })
                    .await?,
                );
            }
            // RFC 8705 §3: nothing in the body; the handshake's certificate
            // is what the authority binds the token to.
            Scheme::Bearer | Scheme::Mtls => {}
        }
        let body = serde_urlencoded_form(&form);
        drop(form);
        let mut b = self
            .http
            .post(endpoint.clone())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json")
            .body(body.to_vec());
        if let Some(p) = &dpop_header {
            b = b.header("DPoP", p);
        }
        Ok(b)
    }

    /// Takes one snapshot of `keys` and requests a token bound to it.
    /// Returns the snapshot with the token: sign the proofs that go with
    /// this token with that key (the source may have rotated since).
    pub async fn request_current(
        &self,
        req: &TokenRequest,
        keys: &KeySource,
    ) -> Result<(PopKey, TokenResponse)> {
        let key = keys.current();
        let token = self.request(req, &key).await?;
        Ok((key, token))
    }

    /// Requests a token for `req`, bound (for `pop` and `dpop`) to `key`.
    ///
    /// For [`Scheme::Mtls`] the request must name its client certificate
    /// ([`TokenRequest::client_certificate`]) and this client must present
    /// it; a JWT access token whose `cnf.x5t#S256` is not that
    /// certificate's thumbprint is refused
    /// ([`ErrorKind::TokenNotBound`](crate::ErrorKind::TokenNotBound)).
    pub async fn request(&self, req: &TokenRequest, key: &PopKey) -> Result<TokenResponse> {
        let endpoint = &req.token_endpoint;
        if req.scheme == Scheme::Mtls && req.client_certificate.is_none() {
            return Err(Error::Config(
                "Scheme::Mtls needs the client certificate: set TokenRequest::client_certificate"
                    .into(),
            ));
        }
        let origin = origin(endpoint);
        let mut used_fresh_nonce = false;
        loop {
            // Token requests are safe to repeat (client credentials), so
            // timeouts and 5xx are retried too.
            let resp = send_with_retry(&self.retry, endpoint, true, || {
                self.build(req, key, &origin)
            })
            .await?;
            let status = resp.status().as_u16();
            let server_nonce = header(&resp, "DPoP-Nonce");
            if let Some(n) = &server_nonce {
                self.nonces.set(&origin, n);
            }
            let text = resp.text().await.map_err(|e| {
                Error::http(
                    display_url(endpoint),
                    format!("reading the response failed: {e}"),
                )
            })?;
            let json = crate::json::parse_object(&text).ok();
            if !(200..300).contains(&status) {
                let error = json
                    .as_ref()
                    .and_then(|j| j.get("error"))
                    .and_then(Value::as_str);
                if req.scheme == Scheme::Dpop
                    && error == Some("use_dpop_nonce")
                    && server_nonce.is_some()
                {
                    if used_fresh_nonce {
                        return Err(Error::token_endpoint(display_url(endpoint), status, "use_dpop_nonce", Some("the server rejected the nonce it had just sent; giving up rather than looping".into())));
                    }
                    used_fresh_nonce = true;
                    continue;
                }
                return Err(endpoint_error(endpoint, status, json.as_ref(), &text));
            }
            let json = json.ok_or_else(|| {
                Error::unexpected_response(
                    display_url(endpoint),
                    status,
                    format!("the body is not a JSON object ({} bytes)", text.len()),
                )
            })?;
            let token = parse_token_response(endpoint, status, json, req.scheme)?;
            if let (Scheme::Mtls, Some(cert)) = (req.scheme, &req.client_certificate) {
                cert.check_token(&display_url(endpoint), token.access_token())?;
            }
            return Ok(token);
        }
    }
}

/// `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `application/x-www-form-urlencoded`, zeroized after use.
fn serde_urlencoded_form(pairs: &[(&str, Zeroizing<String>)]) -> Zeroizing<Vec<u8>> {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v.as_str());
    }
    Zeroizing::new(s.finish().into_bytes())
}

fn endpoint_error(
    endpoint: &Url,
    status: u16,
    json: Option<&Map<String, Value>>,
    text: &str,
) -> Error {
    let get = |k: &str| {
        json.and_then(|j| j.get(k))
            .and_then(Value::as_str)
            .map(|s| s.chars().take(500).collect::<String>())
    };
    match get("error") {
        Some(error) => Error::token_endpoint(
            display_url(endpoint),
            status,
            error,
            get("error_description"),
        ),
        None => Error::unexpected_response(
            display_url(endpoint),
            status,
            if text.trim_start().starts_with('<') {
                format!(
                    "an HTML page ({} bytes) instead of an OAuth error",
                    text.len()
                )
            } else {
                format!(
                    "a non-JSON body ({} bytes) instead of an OAuth error",
                    text.len()
                )
            },
        ),
    }
}

fn parse_token_response(
    endpoint: &Url,
    status: u16,
    raw: Map<String, Value>,
    scheme: Scheme,
) -> Result<TokenResponse> {
    let bad = |m: String| Error::unexpected_response(display_url(endpoint), status, m);
    let access_token = match raw.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => Zeroizing::new(t.clone()),
        _ => return Err(bad("no `access_token` string in the response".into())),
    };
    let token_type = raw
        .get("token_type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no `token_type` in the response".into()))?
        .to_owned();
    if !scheme.accepts_token_type(&token_type) {
        return Err(bad(format!(
            "asked for a {} token but got token_type `{}`",
            scheme.expected_token_type(),
            token_type.chars().take(32).collect::<String>()
        )));
    }
    let seconds = |k: &str| match raw.get(k) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let expires_in = seconds("expires_in")
        .ok_or_else(|| bad("no usable `expires_in` in the response".into()))?;
    let refresh_in = seconds("refresh_in");
    Ok(TokenResponse {
        access_token,
        token_type,
        expires_in,
        refresh_in,
        raw,
    })
}
