//! `PopClient`: every request with a cached token and a fresh proof, both
//! from one snapshot of the client's key.

use std::sync::Arc;

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use super::cache::{CacheKey, TokenCache};
use super::challenge::{next_nonce, parse_www_authenticate};
use super::key_source::KeySource;
use super::retry::{send_with_retry, RetryPolicy};
use super::token::{Scheme, TokenClient, TokenRequest, TokenResponse};
use super::{default_http, header, origin, sign_blocking, Nonces};
use crate::dpop::DpopProof;
use crate::error::{Error, Result};
use crate::key::PopKey;
use crate::shr::SignedHttpRequest;

/// An HTTP client that sends every request with a PoP or DPoP token and a
/// fresh proof bound to that request.
///
/// The key comes from a [`KeySource`]: a fixed [`PopKey`], a rotating
/// [`KeySlot`](crate::KeySlot) or the process-wide key. Each request takes
/// one snapshot of it and uses that snapshot for the token (cached per key
/// thumbprint: a rotated key gets a token bound to it, fetched once) and for
/// the proof, so the token's `cnf` and the proof's key always match.
///
/// ```no_run
/// # async fn demo() -> popkey::Result<()> {
/// use popkey::client::{ClientAuth, PopClient, Scheme, TokenRequest};
/// let key = popkey::PopKey::open("tpm:handle=0x81000100")?;
/// let req = TokenRequest::new(
///     "https://login.microsoftonline.com/contoso/oauth2/v2.0/token",
///     "11111111-2222-3333-4444-555555555555",
///     &["api://orders/.default"],
///     Scheme::Dpop,
///     ClientAuth::PrivateKeyJwt { key: key.clone(), certificate_pem: None },
/// )?;
/// let client = PopClient::new(key, req)?;
/// let resp = client.get("https://orders.example.com/v1/orders").await?;
/// println!("{}", resp.status());
/// # Ok(()) }
/// ```
///
/// Following the process-wide key (MSAL's rotating in-memory key):
///
/// ```no_run
/// # async fn demo(req: popkey::client::TokenRequest) -> popkey::Result<()> {
/// use popkey::client::{KeySource, PopClient};
/// popkey::install_default_slot(popkey::KeySlot::open("mem:?rotate=8h")?)?;
/// let client = PopClient::new(KeySource::process_default()?, req)?;
/// // Every call signs with the key installed at that moment, and uses a
/// // token bound to that key.
/// let resp = client.get("https://orders.example.com/v1/orders").await?;
/// # let _ = resp; Ok(()) }
/// ```
///
/// With your own `reqwest::Client` and request builders, see
/// [`PopClient::authorize`].
#[derive(Clone, Debug)]
pub struct PopClient {
    http: reqwest::Client,
    tokens: TokenClient,
    cache: Arc<TokenCache>,
    request: TokenRequest,
    key: KeySource,
    nonces: Arc<Nonces>,
    retry: RetryPolicy,
}

impl PopClient {
    /// A client for `request`'s tokens, bound to the key from `key`: a
    /// [`PopKey`], an `Arc<KeySlot>`, a `&'static KeySlot` or any
    /// [`KeySource`].
    pub fn new(key: impl Into<KeySource>, request: TokenRequest) -> Result<Self> {
        Self::with_parts(
            key,
            request,
            default_http()?,
            Arc::new(TokenCache::new()),
            RetryPolicy::default(),
        )
    }

    /// A client like [`PopClient::new`] with these TLS settings (trust
    /// anchors, client identity) for both the token endpoint and the API.
    ///
    /// With [`Scheme::Mtls`] and a client identity, tokens are bound to
    /// the identity's certificate (unless the request names one already).
    pub fn with_tls(
        key: impl Into<KeySource>,
        request: TokenRequest,
        tls: &super::TlsConfig,
    ) -> Result<Self> {
        #[cfg(feature = "mtls")]
        let request = match (request.scheme, &request.client_certificate, tls.identity()) {
            (Scheme::Mtls, None, Some(identity)) => {
                request.client_certificate(super::BindingCertificate::from(identity))
            }
            _ => request,
        };
        Self::with_parts(
            key,
            request,
            tls.http_client()?,
            Arc::new(TokenCache::new()),
            RetryPolicy::default(),
        )
    }

    /// A client with your own `reqwest::Client`, cache (share one between
    /// clients) and retry policy. Build that client with
    /// `redirect(reqwest::redirect::Policy::none())` and timeouts, as
    /// [`PopClient::new`] does: a proof is bound to one URL, and a 307/308
    /// redirect would resend a token request's body (with its client
    /// secret) to another host.
    pub fn with_parts(
        key: impl Into<KeySource>,
        request: TokenRequest,
        http: reqwest::Client,
        cache: Arc<TokenCache>,
        retry: RetryPolicy,
    ) -> Result<Self> {
        let nonces = Arc::new(Nonces::default());
        Ok(PopClient {
            tokens: TokenClient::with_http(http.clone(), nonces.clone(), retry.clone()),
            http,
            cache,
            request,
            key: key.into(),
            nonces,
            retry,
        })
    }

    /// A snapshot of the key proofs are signed with now (it changes when
    /// the client follows a rotating slot).
    pub fn key(&self) -> PopKey {
        self.key.current()
    }

    /// Where the client takes its key from.
    pub fn key_source(&self) -> &KeySource {
        &self.key
    }

    /// The token cache.
    pub fn cache(&self) -> &Arc<TokenCache> {
        &self.cache
    }

    /// A token bound to the current key (from the cache when fresh).
    pub async fn token(&self) -> Result<Arc<TokenResponse>> {
        self.token_for(&self.key.current()).await
    }

    /// A token bound to `key`, a snapshot the caller also signs with.
    async fn token_for(&self, key: &PopKey) -> Result<Arc<TokenResponse>> {
        // Scheme::Mtls: cached per certificate thumbprint.
        let cache_key = CacheKey::new(&self.request, self.request.binding_thumbprint(key));
        self.cache
            .get_or_fetch(&cache_key, || self.tokens.request(&self.request, key))
            .await
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<Response> {
        self.send(Method::GET, url, &[], None).await
    }

    /// Adds a token and a fresh proof to a request you built with your own
    /// `reqwest::Client` (with `.query()`, `.json()`, your headers), then
    /// send it with that client: the `reqwest` integration.
    ///
    /// The proof is signed for the request's final method and URL (query
    /// included), so call this last, after everything that changes the URL.
    /// It sets `Authorization` (`PoP <shr>`, `DPoP <token>` or
    /// `Bearer <token>`) and, for DPoP, the `DPoP` header, replacing any
    /// already there. The token and the proof come from one snapshot of the
    /// key. A proof is good for one send: authorize again for every retry.
    ///
    /// ```no_run
    /// # async fn demo(client: popkey::client::PopClient) -> Result<(), Box<dyn std::error::Error>> {
    /// let http = reqwest::Client::new();
    /// let request = http
    ///     .post("https://orders.example.com/v1/orders")
    ///     .query(&[("dry_run", "true")])
    ///     .json(&serde_json::json!({"item": "widget"}))
    ///     .build()?;
    /// let mut response = http.execute(client.authorize(request).await?).await?;
    /// if client.learn_nonce(&response) {
    ///     // The server asked for a nonce: sign a fresh proof that carries it.
    ///     let retry = http
    ///         .post("https://orders.example.com/v1/orders")
    ///         .query(&[("dry_run", "true")])
    ///         .json(&serde_json::json!({"item": "widget"}))
    ///         .build()?;
    ///     response = http.execute(client.authorize(retry).await?).await?;
    /// }
    /// println!("{}", response.status());
    /// # Ok(()) }
    /// ```
    pub async fn authorize(&self, mut request: reqwest::Request) -> Result<reqwest::Request> {
        let key = self.key.current();
        let token = self.token_for(&key).await?;
        let nonce = self.nonces.get(&origin(request.url()));
        let method = request.method().clone();
        let url = request.url().as_str().to_owned();
        let (auth, dpop) = self
            .authorization(&key, &method, &url, &token, nonce.as_deref())
            .await?;
        let value = |v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| Error::request("a token or proof is not a valid header value"))
        };
        let mut auth = value(&auth)?;
        auth.set_sensitive(true);
        let headers = request.headers_mut();
        headers.insert(AUTHORIZATION, auth);
        match dpop {
            Some(p) => {
                headers.insert("DPoP", value(&p)?);
            }
            None => {
                headers.remove("DPoP");
            }
        }
        Ok(request)
    }

    /// Learns from a response to an [authorized](PopClient::authorize)
    /// request: remembers the server nonce it carries (`DPoP-Nonce`,
    /// `WWW-Authenticate: PoP nonce=…`, `Authentication-Info: nextnonce`)
    /// for the next proof to that origin, and returns true when the
    /// response is a nonce challenge (a 401 asking for a DPoP or PoP
    /// nonce). Then authorize the request afresh and send it once more.
    pub fn learn_nonce(&self, response: &Response) -> bool {
        self.nonce_challenge(&origin(response.url()), response)
    }

    /// Records the nonces in `resp`; true when it is a 401 nonce challenge
    /// for this client's scheme.
    fn nonce_challenge(&self, origin: &str, resp: &Response) -> bool {
        if let Some(n) = header(resp, "DPoP-Nonce") {
            self.nonces.set(origin, &n);
        }
        if let Some(n) = header(resp, "Authentication-Info").and_then(|v| next_nonce(&v)) {
            self.nonces.set(origin, &n);
        }
        if resp.status() != StatusCode::UNAUTHORIZED {
            return false;
        }
        let challenges = header(resp, "WWW-Authenticate")
            .map(|v| parse_www_authenticate(&v))
            .unwrap_or_default();
        match self.request.scheme {
            Scheme::Dpop => {
                challenges
                    .iter()
                    .any(|c| c.is("DPoP") && c.param("error") == Some("use_dpop_nonce"))
                    && self.nonces.get(origin).is_some()
            }
            Scheme::Pop => {
                let pop_nonce = challenges
                    .iter()
                    .find(|c| c.is("PoP"))
                    .and_then(|c| c.param("nonce"));
                if let Some(n) = pop_nonce {
                    self.nonces.set(origin, n);
                }
                pop_nonce.is_some()
            }
            Scheme::Bearer | Scheme::Mtls => false,
        }
    }

    /// Sends a request with a token and a fresh proof. A nonce challenge
    /// (`401` with `DPoP-Nonce` / `use_dpop_nonce`, or `PoP nonce=…`) is
    /// answered once; 429 and 5xx are retried per the [`RetryPolicy`]. The
    /// final response is returned whatever its status.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response> {
        let parsed = Url::parse(url).map_err(|e| {
            Error::request(format!(
                "`{}` is not a URL: {e}",
                crate::text::clip(url.split(['?', '#']).next().unwrap_or_default(), 80)
            ))
        })?;
        let origin = origin(&parsed);
        // One snapshot for the token and every proof of this request.
        let key = self.key.current();
        let token = self.token_for(&key).await?;
        let idempotent = matches!(
            method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        let mut nonce_retry_done = false;
        loop {
            // The nonce the last attempt was signed with.
            let used = std::sync::Mutex::new(None::<String>);
            let resp = send_with_retry(&self.retry, &parsed, idempotent, || async {
                // A fresh proof for every attempt, with the latest nonce.
                let nonce = self.nonces.get(&origin);
                if let Ok(mut u) = used.lock() {
                    u.clone_from(&nonce);
                }
                let auth = self
                    .authorization(&key, &method, url, &token, nonce.as_deref())
                    .await?;
                let mut b = self.http.request(method.clone(), parsed.clone());
                for (n, v) in headers {
                    b = b.header(*n, *v);
                }
                b = b.header("Authorization", &auth.0);
                if let Some(p) = &auth.1 {
                    b = b.header("DPoP", p);
                }
                if let Some(body) = &body {
                    b = b.body(body.clone());
                }
                Ok(b)
            })
            .await?;
            let nonce = used.into_inner().unwrap_or_else(|e| e.into_inner());
            if self.nonce_challenge(&origin, &resp)
                && !nonce_retry_done
                && self.nonces.get(&origin) != nonce
            {
                nonce_retry_done = true;
                continue;
            }
            return Ok(resp);
        }
    }

    /// (`Authorization` value, `DPoP` header value), signed by `key`.
    async fn authorization(
        &self,
        key: &PopKey,
        method: &Method,
        url: &str,
        token: &TokenResponse,
        nonce: Option<&str>,
    ) -> Result<(String, Option<String>)> {
        let (key, m, u, at, n) = (
            key.clone(),
            method.as_str().to_owned(),
            url.to_owned(),
            token.access_token().to_owned(),
            nonce.map(str::to_owned),
        );
        match self.request.scheme {
            Scheme::Pop => {
                let shr = sign_blocking(move || {
                    let mut r = SignedHttpRequest::new(&m, &u, &at)?;
                    if let Some(n) = n {
                        r = r.nonce(&n);
                    }
                    r.sign(&key)
                })
                .await?;
                Ok((format!("PoP {shr}"), None))
            }
            Scheme::Dpop => {
                let at2 = at.clone();
                let proof = sign_blocking(move || {
                    let mut p = DpopProof::new(&m, &u)?.access_token(&at2)?;
                    if let Some(n) = n {
                        p = p.nonce(&n)?;
                    }
                    p.sign(&key)
                })
                .await?;
                Ok((format!("DPoP {at}"), Some(proof)))
            }
            // RFC 8705: a certificate-bound token goes as a bearer token;
            // the TLS connection (this client's certificate) is the proof.
            Scheme::Bearer | Scheme::Mtls => Ok((format!("Bearer {at}"), None)),
        }
    }
}
