//! Access tokens from an issuer: OAuth/OIDC discovery, the JWKS cached and
//! refreshed, and introspection for opaque tokens.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::verify::introspect::IntrospectionValidator;
use crate::verify::token::{AccessTokenValidator, HashedToken, JwksValidator};
use crate::verify::{ErrorKind, VerifyError};

/// Largest discovery document or JWKS read.
const MAX_DOCUMENT: usize = 1024 * 1024;
/// How long a JWKS is used when its response says nothing (no max-age).
const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Longest a JWKS is used without asking again, whatever max-age says.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// The issuer's keys could not be fetched (discovery or JWKS): the message
/// names the step and the HTTP status, never a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerError(String);

impl std::fmt::Display for IssuerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "issuer: {}", self.0)
    }
}

impl std::error::Error for IssuerError {}

fn issuer_err(m: impl Into<String>) -> IssuerError {
    IssuerError(m.into())
}

/// An authorization server whose access tokens an API accepts, found by
/// discovery: `{issuer}/.well-known/openid-configuration`, else RFC 8414's
/// `/.well-known/oauth-authorization-server`, gives the `jwks_uri` (and the
/// introspection endpoint).
///
/// As an [`AccessTokenValidator`] it checks JWT access tokens against the
/// cached JWKS — signature, `exp`, `nbf`, `iss` (always this issuer) and
/// `aud` (when [`IssuerBuilder::audience`] is set, which production should
/// do) — and, with [`IssuerBuilder::introspection`], opaque tokens through
/// RFC 7662 introspection.
///
/// The network is used only in [`Issuer::prepare`] (the
/// [`ResourceServer`](super::ResourceServer) calls it before each
/// verification, on the async path) and [`Issuer::refresh`]:
///
/// * the JWKS is cached for the response's `Cache-Control: max-age`
///   (5 minutes when absent, at least the refresh interval, at most a day)
///   and fetched again when stale; a failed refresh keeps the old keys;
/// * a token signed with an unknown `kid` (the issuer rotated its key)
///   fetches the JWKS again at once — one fetch for all requests waiting
///   (single flight), and at most one such fetch per
///   [`IssuerBuilder::min_refresh_interval`] (default 30 s), so tokens with
///   made-up `kid`s cannot make the API hammer the issuer.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use popkey::server::Issuer;
/// let issuer = Arc::new(Issuer::builder("https://login.example.com").audience("api://orders").build()?);
/// issuer.refresh().await?; // optional: fail at startup rather than on the first request
/// # Ok(()) }
/// ```
pub struct Issuer {
    issuer: String,
    audience: Option<String>,
    leeway: u64,
    min_refresh: Duration,
    introspection: Option<(String, String)>,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    refresh_lock: tokio::sync::Mutex<RefreshState>,
    jwks_fetches: AtomicU64,
    introspector: OnceLock<IntrospectionValidator>,
    introspection_http: Option<reqwest::Client>,
}

#[derive(Default)]
struct KeySet {
    validator: Option<JwksValidator>,
    kids: HashSet<String>,
    expires: Option<Instant>,
}

#[derive(Default)]
struct RefreshState {
    metadata: Option<Metadata>,
    last_kid_refresh: Option<Instant>,
    /// When a first fetch last failed: requests meanwhile fail fast
    /// instead of queueing one fetch each behind the lock.
    last_failure: Option<Instant>,
}

/// How long after a failed first fetch requests fail without asking again.
const FAILURE_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Metadata {
    jwks_uri: String,
    introspection_endpoint: Option<String>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field(
                "introspection",
                &self.introspection.as_ref().map(|(id, _)| id),
            )
            .finish_non_exhaustive()
    }
}

/// Builds an [`Issuer`].
#[derive(Debug)]
pub struct IssuerBuilder {
    issuer: String,
    audience: Option<String>,
    leeway: u64,
    min_refresh: Duration,
    introspection: Option<(String, String)>,
    http: Option<reqwest::Client>,
    /// The introspection validator runs on a runtime of its own: a client
    /// of its own, with the same trust.
    introspection_http: Option<reqwest::Client>,
}

impl IssuerBuilder {
    /// Which servers to trust for discovery, the JWKS and introspection
    /// (the platform's store by default): e.g. an issuer behind a private
    /// CA, `TlsConfig::new().add_ca_pem_file("ca.pem")?`.
    pub fn tls(mut self, tls: &crate::client::TlsConfig) -> crate::Result<Self> {
        self.http = Some(tls.http_client()?);
        self.introspection_http = Some(tls.http_client()?);
        Ok(self)
    }

    /// Requires the token's `aud` to be (or contain) `audience`.
    pub fn audience(mut self, audience: &str) -> Self {
        self.audience = Some(audience.to_owned());
        self
    }

    /// Clock leeway for `exp` / `nbf`, in seconds (default 60).
    pub fn leeway(mut self, secs: u64) -> Self {
        self.leeway = secs;
        self
    }

    /// Least time between two JWKS fetches caused by an unknown `kid`, and
    /// the shortest cache life (default 30 s).
    pub fn min_refresh_interval(mut self, interval: Duration) -> Self {
        self.min_refresh = interval;
        self
    }

    /// Validates opaque (non-JWT) access tokens at the issuer's
    /// `introspection_endpoint` (from discovery), authenticating as
    /// `client_id` with `client_secret` (`client_secret_basic`). Without
    /// it, opaque tokens are refused.
    pub fn introspection(mut self, client_id: &str, client_secret: &str) -> Self {
        self.introspection = Some((client_id.to_owned(), client_secret.to_owned()));
        self
    }

    /// The issuer; nothing is fetched yet.
    pub fn build(self) -> crate::Result<Issuer> {
        let u = url::Url::parse(&self.issuer)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        if u.is_none() {
            return Err(crate::Error::Config(format!(
                "the issuer `{}` is not an http(s) URL",
                crate::text::clip(&self.issuer, 96)
            )));
        }
        Ok(Issuer {
            issuer: self.issuer,
            audience: self.audience,
            leeway: self.leeway,
            min_refresh: self.min_refresh,
            introspection: self.introspection,
            http: match self.http {
                Some(h) => h,
                None => crate::client::default_http()?,
            },
            keys: RwLock::new(Arc::new(KeySet::default())),
            refresh_lock: tokio::sync::Mutex::new(RefreshState::default()),
            jwks_fetches: AtomicU64::new(0),
            introspector: OnceLock::new(),
            introspection_http: self.introspection_http,
        })
    }
}

impl Issuer {
    /// An issuer identified by `issuer` (its `iss`, exactly; discovery
    /// documents are looked up under it).
    pub fn builder(issuer: &str) -> IssuerBuilder {
        IssuerBuilder {
            issuer: issuer.to_owned(),
            audience: None,
            leeway: 60,
            min_refresh: Duration::from_secs(30),
            introspection: None,
            http: None,
            introspection_http: None,
        }
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// How many times the JWKS was fetched (for metrics and tests).
    pub fn jwks_fetches(&self) -> u64 {
        self.jwks_fetches.load(Ordering::Relaxed)
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Discovers the issuer (once) and fetches its JWKS now.
    pub async fn refresh(&self) -> Result<(), IssuerError> {
        let mut state = self.refresh_lock.lock().await;
        self.fetch_keys(&mut state).await
    }

    /// Makes sure the keys for `token` are at hand: discovery and the first
    /// JWKS fetch, a refresh when the cache is stale, or one when the
    /// token's `kid` is unknown (single flight, rate-limited). Fails only
    /// when no keys at all can be had (answer 503); an unknown `kid` that
    /// stays unknown is left to validation (401).
    pub async fn prepare(&self, token: &str) -> Result<(), IssuerError> {
        let kid = match jwt_header(token) {
            Some(h) => h.get("kid").and_then(Value::as_str).map(str::to_owned),
            None => {
                // Opaque: introspection needs the discovered endpoint.
                if self.introspection.is_some() && self.introspector.get().is_none() {
                    let mut state = self.refresh_lock.lock().await;
                    self.discover(&mut state).await?;
                }
                return Ok(());
            }
        };
        let now = Instant::now();
        let needs = |set: &KeySet| -> Need {
            if set.validator.is_none() {
                Need::First
            } else if set.expires.is_some_and(|e| now >= e) {
                Need::Stale
            } else if kid.as_ref().is_some_and(|k| !set.kids.contains(k)) {
                Need::UnknownKid
            } else {
                Need::Nothing
            }
        };
        if needs(&self.current()) == Need::Nothing {
            return Ok(());
        }
        let mut state = self.refresh_lock.lock().await;
        let now = Instant::now();
        // Someone else may have refreshed while this task waited.
        let set = self.current();
        match needs(&set) {
            Need::Nothing => Ok(()),
            Need::First => {
                if state
                    .last_failure
                    .is_some_and(|t| now.duration_since(t) < FAILURE_BACKOFF.min(self.min_refresh))
                {
                    return Err(issuer_err(
                        "the issuer's keys are unavailable (retrying shortly)",
                    ));
                }
                let fetched = self.fetch_keys(&mut state).await;
                state.last_failure = fetched.as_ref().err().map(|_| Instant::now());
                fetched
            }
            Need::Stale => {
                if let Err(e) = self.fetch_keys(&mut state).await {
                    // Keep the old keys; ask again after the interval.
                    tracing::warn!(error = %e, "JWKS refresh failed; keeping the cached keys");
                    self.extend(now + self.min_refresh);
                }
                Ok(())
            }
            Need::UnknownKid => {
                if state
                    .last_kid_refresh
                    .is_some_and(|t| now.duration_since(t) < self.min_refresh)
                {
                    return Ok(());
                }
                state.last_kid_refresh = Some(now);
                if let Err(e) = self.fetch_keys(&mut state).await {
                    tracing::warn!(error = %e, "JWKS refresh for an unknown kid failed");
                }
                Ok(())
            }
        }
    }

    fn extend(&self, until: Instant) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let set = KeySet {
            validator: keys.validator.clone(),
            kids: keys.kids.clone(),
            expires: Some(until),
        };
        *keys = Arc::new(set);
    }

    async fn discover(&self, state: &mut RefreshState) -> Result<Metadata, IssuerError> {
        if let Some(m) = &state.metadata {
            return Ok(m.clone());
        }
        let base = self.issuer.trim_end_matches('/');
        let mut candidates = vec![format!("{base}/.well-known/openid-configuration")];
        if let Ok(u) = url::Url::parse(&self.issuer) {
            // RFC 8414 §3: the well-known segment goes before the issuer's path.
            let path = u.path().trim_end_matches('/');
            let mut origin = u.clone();
            origin.set_path("");
            origin.set_query(None);
            let origin = origin.as_str().trim_end_matches('/').to_owned();
            candidates.push(format!(
                "{origin}/.well-known/oauth-authorization-server{path}"
            ));
        }
        let mut last = issuer_err("no discovery document");
        for url in candidates {
            match self.get_json(&url).await {
                Ok((doc, _)) => {
                    if doc.get("issuer").and_then(Value::as_str) != Some(self.issuer.as_str()) {
                        return Err(issuer_err(
                            "the discovery document names a different issuer",
                        ));
                    }
                    let jwks_uri = doc
                        .get("jwks_uri")
                        .and_then(Value::as_str)
                        .ok_or_else(|| issuer_err("the discovery document has no jwks_uri"))?
                        .to_owned();
                    let m = Metadata {
                        jwks_uri,
                        introspection_endpoint: doc
                            .get("introspection_endpoint")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    };
                    if let (Some((id, secret)), Some(endpoint)) =
                        (&self.introspection, &m.introspection_endpoint)
                    {
                        let mut v = IntrospectionValidator::new(endpoint, id, secret)
                            .map_err(|e| issuer_err(format!("introspection: {e}")))?;
                        if let Some(http) = &self.introspection_http {
                            v = v.with_http_client(http.clone());
                        }
                        if let Some(aud) = &self.audience {
                            v = v.audience(aud);
                        }
                        let _ = self.introspector.set(v);
                    }
                    state.metadata = Some(m.clone());
                    return Ok(m);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn fetch_keys(&self, state: &mut RefreshState) -> Result<(), IssuerError> {
        let meta = self.discover(state).await?;
        self.jwks_fetches.fetch_add(1, Ordering::Relaxed);
        let (doc, max_age) = self.get_json(&meta.jwks_uri).await?;
        let text = Value::Object(doc.clone()).to_string();
        let mut validator = JwksValidator::from_jwks(&text)
            .map_err(|e| issuer_err(format!("the JWKS: {e}")))?
            .issuer(&self.issuer)
            .leeway(self.leeway);
        if let Some(aud) = &self.audience {
            validator = validator.audience(aud);
        }
        let kids = doc
            .get("keys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k.get("kid").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let ttl = max_age
            .unwrap_or(DEFAULT_TTL)
            .clamp(self.min_refresh, MAX_TTL.max(self.min_refresh));
        let set = KeySet {
            validator: Some(validator),
            kids,
            expires: Some(Instant::now() + ttl),
        };
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(())
    }

    /// GETs a JSON object; returns it and the response's max-age.
    async fn get_json(
        &self,
        url: &str,
    ) -> Result<(Map<String, Value>, Option<Duration>), IssuerError> {
        let resp = self
            .http
            .get(url)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| {
                issuer_err(format!(
                    "GET {}: {}",
                    crate::text::clip(url, 96),
                    e.without_url()
                ))
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(issuer_err(format!(
                "GET {} answered {status}",
                crate::text::clip(url, 96)
            )));
        }
        let max_age = resp
            .headers()
            .get_all(reqwest::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(max_age);
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_DOCUMENT as u64)
        {
            return Err(issuer_err("the document is too large"));
        }
        let body = resp.bytes().await.map_err(|e| {
            issuer_err(format!(
                "reading {}: {}",
                crate::text::clip(url, 96),
                e.without_url()
            ))
        })?;
        if body.len() > MAX_DOCUMENT {
            return Err(issuer_err("the document is too large"));
        }
        let text =
            std::str::from_utf8(&body).map_err(|_| issuer_err("the document is not UTF-8"))?;
        let doc = crate::json::parse_object(text)
            .map_err(|e| issuer_err(format!("{}: {e}", crate::text::clip(url, 96))))?;
        Ok((doc, max_age))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    First,
    Stale,
    UnknownKid,
}

/// `max-age` of a `Cache-Control` value; `no-store`/`no-cache` count as 0.
fn max_age(value: &str) -> Option<Duration> {
    for directive in value.split(',') {
        let d = directive.trim().to_ascii_lowercase();
        if d == "no-store" || d == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = d.strip_prefix("max-age=") {
            return v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    None
}

/// The protected header of a JWT (three dot-separated parts), unverified.
fn jwt_header(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let header = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(_), Some(_), None) if h.len() <= 4096 => h,
        _ => return None,
    };
    let bytes = crate::b64::decode(header).ok()?;
    crate::json::parse_object(std::str::from_utf8(&bytes).ok()?).ok()
}

impl AccessTokenValidator for Issuer {
    fn validate(&self, token: &str, now: u64) -> Result<Map<String, Value>, VerifyError> {
        self.validate_with(token, None, now)
    }

    fn validate_hashed(
        &self,
        token: &HashedToken<'_>,
        now: u64,
    ) -> Result<Map<String, Value>, VerifyError> {
        self.validate_with(token.token(), Some(token), now)
    }
}

impl Issuer {
    /// Opaque tokens through introspection, JWTs through the current keys;
    /// `hashed` (the token with its SHA-256) when the caller has it.
    fn validate_with(
        &self,
        token: &str,
        hashed: Option<&HashedToken<'_>>,
        now: u64,
    ) -> Result<Map<String, Value>, VerifyError> {
        let by = |v: &dyn AccessTokenValidator| match hashed {
            Some(h) => v.validate_hashed(h, now),
            None => v.validate(token, now),
        };
        if jwt_header(token).is_none() {
            return match self.introspector.get() {
                Some(v) => by(v),
                None => Err(VerifyError::new(
                    ErrorKind::InvalidAccessToken,
                    "the access token is not a JWT, and introspection is not configured",
                )),
            };
        }
        match &self.current().validator {
            Some(v) => by(v),
            None => Err(VerifyError::new(
                ErrorKind::InvalidAccessToken,
                "the issuer's keys are not loaded",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=x"), None);
    }

    #[test]
    fn headers_of_tokens() {
        assert!(jwt_header("opaque-token").is_none());
        assert!(jwt_header("eyJraWQiOiJrMSJ9.e30.sig")
            .is_some_and(|h| h.get("kid").and_then(Value::as_str) == Some("k1")));
        assert!(Issuer::builder("not a url").build().is_err());
    }
}
