//! `PopClient`: every request with a cached token and a fresh proof.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use url::Url;

use super::cache::{CacheKey, TokenCache};
use super::challenge::{next_nonce, parse_www_authenticate};
use super::token::{header, Scheme, TokenClient, TokenRequest};
use super::{default_http, display_url, origin, sign_blocking, Nonces};
use crate::dpop::DpopProof;
use crate::error::{Error, Result};
use crate::key::PopKey;
use crate::shr::SignedHttpRequest;

/// How failed calls are retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt, for 429, 5xx and connection failures.
    pub max_retries: u32,
    /// First backoff delay; doubles each retry (with jitter).
    pub base_delay: Duration,
    /// Longest wait, also the cap on a server's `Retry-After`.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32, retry_after: Option<&str>) -> Duration {
        if let Some(secs) = retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
            return Duration::from_secs(secs).min(self.max_delay);
        }
        let exp = self.base_delay.saturating_mul(1u32 << attempt.min(16));
        let jitter = rand::random::<f64>() * 0.25 + 0.875;
        exp.mul_f64(jitter).min(self.max_delay)
    }
}

/// Whether an answer is worth another attempt: 429 and 503 say the request
/// was not processed; other 5xx only for requests that are safe to repeat.
fn retryable(status: StatusCode, idempotent: bool) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::SERVICE_UNAVAILABLE
        || (idempotent && status.is_server_error())
}

/// Sends what `build` makes, building it afresh for every attempt (a proof
/// must never be sent twice), and retries per `policy`: 429 and 503 always,
/// other 5xx and timeouts only when `idempotent`, connection failures always
/// (nothing was sent). Honours `Retry-After`. Returns the last response.
pub(crate) async fn send_with_retry<F, Fut>(
    policy: &RetryPolicy,
    url: &Url,
    idempotent: bool,
    mut build: F,
) -> Result<Response>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<reqwest::RequestBuilder>>,
{
    let mut attempt = 0;
    loop {
        match build().await?.send().await {
            Ok(resp) if retryable(resp.status(), idempotent) && attempt < policy.max_retries => {
                let wait = policy.delay(attempt, header(&resp, "Retry-After").as_deref());
                tracing::debug!(status = resp.status().as_u16(), ?wait, url = %display_url(url), "retrying");
                tokio::time::sleep(wait).await;
            }
            Ok(resp) => return Ok(resp),
            Err(e)
                if (e.is_connect() || (idempotent && e.is_timeout()))
                    && attempt < policy.max_retries =>
            {
                let wait = policy.delay(attempt, None);
                tracing::debug!(error = %transport_message(&e), ?wait, url = %display_url(url), "retrying after a transport error");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(Error::http(display_url(url), transport_message(&e))),
        }
        attempt += 1;
    }
}

/// A transport error without the URL's query (which may hold secrets).
fn transport_message(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_request() {
        "request failed"
    } else {
        "failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// An HTTP client that sends every request with a PoP or DPoP token and a
/// fresh proof bound to that request.
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
#[derive(Clone, Debug)]
pub struct PopClient {
    http: reqwest::Client,
    tokens: TokenClient,
    cache: Arc<TokenCache>,
    request: TokenRequest,
    key: PopKey,
    nonces: Arc<Nonces>,
    retry: RetryPolicy,
}

impl PopClient {
    /// A client for `request`'s tokens, bound to `key`.
    pub fn new(key: PopKey, request: TokenRequest) -> Result<Self> {
        Self::with_parts(
            key,
            request,
            default_http()?,
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
        key: PopKey,
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
            key,
            nonces,
            retry,
        })
    }

    /// The key proofs are signed with.
    pub fn key(&self) -> &PopKey {
        &self.key
    }

    /// The token cache.
    pub fn cache(&self) -> &Arc<TokenCache> {
        &self.cache
    }

    /// A token for this client (from the cache when fresh).
    pub async fn token(&self) -> Result<Arc<super::TokenResponse>> {
        let key = CacheKey::new(&self.request, self.key.kid());
        self.cache
            .get_or_fetch(&key, || self.tokens.request(&self.request, &self.key))
            .await
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<Response> {
        self.send(Method::GET, url, &[], None).await
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
        let token = self.token().await?;
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
                    .authorization(&method, url, &token, nonce.as_deref())
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
            if let Some(n) = header(&resp, "DPoP-Nonce") {
                self.nonces.set(&origin, &n);
            }
            if let Some(n) = header(&resp, "Authentication-Info").and_then(|v| next_nonce(&v)) {
                self.nonces.set(&origin, &n);
            }
            if resp.status() == StatusCode::UNAUTHORIZED && !nonce_retry_done {
                let challenges = header(&resp, "WWW-Authenticate")
                    .map(|v| parse_www_authenticate(&v))
                    .unwrap_or_default();
                let wants_nonce = match self.request.scheme {
                    Scheme::Dpop => challenges
                        .iter()
                        .any(|c| c.is("DPoP") && c.param("error") == Some("use_dpop_nonce")),
                    Scheme::Pop => {
                        let pop_nonce = challenges
                            .iter()
                            .find(|c| c.is("PoP"))
                            .and_then(|c| c.param("nonce"));
                        if let Some(n) = pop_nonce {
                            self.nonces.set(&origin, n);
                        }
                        pop_nonce.is_some()
                    }
                    Scheme::Bearer => false,
                };
                if wants_nonce && self.nonces.get(&origin) != nonce {
                    nonce_retry_done = true;
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// (`Authorization` value, `DPoP` header value).
    async fn authorization(
        &self,
        method: &Method,
        url: &str,
        token: &super::TokenResponse,
        nonce: Option<&str>,
    ) -> Result<(String, Option<String>)> {
        let (key, m, u, at, n) = (
            self.key.clone(),
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
            Scheme::Bearer => Ok((format!("Bearer {at}"), None)),
        }
    }
}
