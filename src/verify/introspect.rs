//! RFC 7662 token introspection: validate opaque access tokens by asking
//! the authorization server, for the proof verifiers.

use std::collections::HashMap;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};

use super::token::{AccessTokenValidator, HashedToken};
use super::{err, ErrorKind, VerifyError};

/// Most introspection results kept in the cache.
const MAX_CACHED: usize = 10_000;
/// Largest introspection response read.
const MAX_RESPONSE: usize = 64 * 1024;

/// Validates opaque access tokens through an RFC 7662 introspection
/// endpoint, authenticating as a client with `client_secret_basic`.
///
/// A token is accepted when the answer says `"active": true`, its `exp`
/// (when present) is not past, and its `token_type` (when one is required)
/// matches. The answer's claims go to the proof verifier, which checks the
/// binding (`cnf.jkt`); for mTLS-bound tokens check `cnf.x5t#S256` with
/// [`super::token::check_certificate_binding`].
/// Answers are cached, keyed by the token's SHA-256, for no longer than the
/// token's remaining life (and [`IntrospectionValidator::max_cache`]);
/// answers without `exp` are not cached.
///
/// `validate` waits for the HTTP round trip (made on a runtime of the
/// validator's own, so it may be called from any thread). Called on a
/// multi-thread tokio runtime — a verifier in an async server, the
/// `server` layer — the wait runs in `tokio::task::block_in_place`, so the
/// worker's other tasks move to another thread and keep running; on a
/// current-thread runtime it blocks the runtime for the round trip.
///
/// ```no_run
/// use std::sync::Arc;
/// use popkey::verify::{dpop::DpopVerifier, introspect::IntrospectionValidator};
/// let tokens = IntrospectionValidator::new(
///     "https://as.example.com/token/introspection",
///     "orders-api",
///     "client secret",
/// )?
/// .require_token_type("DPoP");
/// let verifier = DpopVerifier::new(Arc::new(tokens));
/// # let _ = verifier;
/// # Ok::<(), popkey::Error>(())
/// ```
pub struct IntrospectionValidator {
    endpoint: reqwest::Url,
    client_id: String,
    client_secret: String,
    token_type: Option<String>,
    audience: Option<String>,
    max_cache: u64,
    cache: Mutex<HashMap<String, Cached>>,
    worker: Worker,
}

/// An answer's claims and the time until which they may be reused.
type Cached = (Map<String, Value>, u64);

impl std::fmt::Debug for IntrospectionValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionValidator")
            .field("endpoint", &self.endpoint.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("token_type", &self.token_type)
            .finish_non_exhaustive()
    }
}

/// A runtime of the validator's own, so a synchronous `validate` can wait
/// for an async request from any thread.
struct Worker {
    runtime: Option<tokio::runtime::Runtime>,
    http: reqwest::Client,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Never block in drop (it may run inside an async context).
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl IntrospectionValidator {
    /// A validator asking `endpoint` (http or https) as client `client_id`
    /// with `client_secret`.
    pub fn new(endpoint: &str, client_id: &str, client_secret: &str) -> crate::Result<Self> {
        let endpoint = reqwest::Url::parse(endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                crate::Error::Config(format!(
                    "the introspection endpoint `{}` is not an http(s) URL",
                    crate::text::clip(endpoint, 96)
                ))
            })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("popkey-introspect")
            .enable_all()
            .build()
            .map_err(|e| crate::Error::Config(format!("cannot start a runtime: {e}")))?;
        Ok(IntrospectionValidator {
            endpoint,
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            token_type: None,
            audience: None,
            max_cache: 300,
            cache: Mutex::new(HashMap::new()),
            worker: Worker {
                runtime: Some(runtime),
                http: crate::client::default_http()?,
            },
        })
    }

    /// Which servers to trust when asking the endpoint (the platform's
    /// store by default), e.g. `TlsConfig::new().add_ca_pem_file("ca.pem")?`
    /// for an authorization server behind a private CA.
    pub fn tls(self, tls: &crate::client::TlsConfig) -> crate::Result<Self> {
        Ok(self.with_http_client(tls.http_client()?))
    }

    /// Uses `http` (built with the caller's TLS trust) for the requests.
    pub(crate) fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.worker.http = http;
        self
    }

    /// Requires the answer's `token_type` to be `token_type` (compared
    /// ignoring ASCII case; e.g. `DPoP`).
    pub fn require_token_type(mut self, token_type: &str) -> Self {
        self.token_type = Some(token_type.to_owned());
        self
    }

    /// Requires the answer's `aud` to be (or contain) `audience`, so a token
    /// the server issued for another API is refused here.
    pub fn audience(mut self, audience: &str) -> Self {
        self.audience = Some(audience.to_owned());
        self
    }

    /// Longest time an answer is cached, in seconds (default 300; 0
    /// disables the cache). Never longer than the token's remaining life.
    pub fn max_cache(mut self, secs: u64) -> Self {
        self.max_cache = secs;
        self
    }

    /// Asks the endpoint about `token` (no cache, no checks): the answer's
    /// members as the server sent them.
    pub fn introspect(&self, token: &str) -> Result<Map<String, Value>, VerifyError> {
        // The endpoint could not say whether the token is good: 503, not
        // 401, so the client keeps its token and retries.
        let unavailable = |m: String| {
            err(
                ErrorKind::TokenValidationUnavailable,
                format!("token introspection failed: {m}"),
            )
        };
        let rt = self
            .worker
            .runtime
            .as_ref()
            .ok_or_else(|| unavailable("the validator is shut down".into()))?;
        let request = self
            .worker
            .http
            .post(self.endpoint.clone())
            .basic_auth(form(&self.client_id), Some(form(&self.client_secret)))
            .header("Accept", "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")]);
        let (tx, rx) = mpsc::channel();
        rt.spawn(async move {
            let result = async {
                let resp = request
                    .send()
                    .await
                    .map_err(|e| e.without_url().to_string())?;
                let status = resp.status();
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| e.without_url().to_string())?;
                Ok::<_, String>((status, body))
            }
            .await;
            let _ = tx.send(result);
        });
        // The wait must not hold a tokio worker: other requests on it keep
        // being served while the endpoint answers.
        let (status, body) =
            crate::executor::off_executor(|| rx.recv_timeout(Duration::from_secs(60)))
                .map_err(|_| unavailable("no answer".into()))?
                .map_err(unavailable)?;
        if !status.is_success() {
            // RFC 6749 §5.2 error codes are safe to show (no token, no secret).
            let code = std::str::from_utf8(&body)
                .ok()
                .and_then(|t| crate::json::parse_object(t).ok())
                .and_then(|o| o.get("error").and_then(Value::as_str).map(str::to_owned))
                .map(|c| format!(" ({})", crate::text::clip(&c, 64)))
                .unwrap_or_default();
            return Err(unavailable(format!("the endpoint answered {status}{code}")));
        }
        if body.len() > MAX_RESPONSE {
            return Err(unavailable("the answer is too large".into()));
        }
        let text = std::str::from_utf8(&body)
            .map_err(|_| unavailable("the answer is not UTF-8".into()))?;
        crate::json::parse_object(text).map_err(|e| unavailable(format!("the answer: {e}")))
    }

    /// Validation with the answer cache keyed by `key`.
    fn validate_keyed(
        &self,
        token: &str,
        key: String,
        now: u64,
    ) -> Result<Map<String, Value>, VerifyError> {
        if let Some(claims) = self.cached(&key, now) {
            return Ok(claims);
        }
        let claims = self.introspect(token)?;
        let exp = check_answer(&claims, self.token_type.as_deref(), now)?;
        if let Some(aud) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => a == aud,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(aud)),
                _ => false,
            };
            if !ok {
                return Err(err(
                    ErrorKind::InvalidAccessToken,
                    "the access token's audience is not this API (introspection `aud`)",
                ));
            }
        }
        if let Some(exp) = exp {
            let until = exp.min(now.saturating_add(self.max_cache));
            self.remember(key, &claims, until, now);
        }
        Ok(claims)
    }

    fn cached(&self, key: &str, now: u64) -> Option<Map<String, Value>> {
        let cache = self.cache.lock().ok()?;
        match cache.get(key) {
            Some((claims, until)) if now < *until => Some(claims.clone()),
            _ => None,
        }
    }

    fn remember(&self, key: String, claims: &Map<String, Value>, until: u64, now: u64) {
        if until <= now {
            return;
        }
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, (_, u)| *u > now);
                if cache.len() >= MAX_CACHED {
                    return;
                }
            }
            cache.insert(key, (claims.clone(), until));
        }
    }
}

/// RFC 6749 §2.3.1: client credentials are form-encoded before Basic.
fn form(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn cache_key(token: &str) -> String {
    digest_key(&crate::crypto::sha256(token.as_bytes()))
}

/// The cache key of a token whose SHA-256 is `sha256`.
fn digest_key(sha256: &[u8; 32]) -> String {
    crate::b64::encode(sha256)
}

/// Checks an introspection answer at `now`; returns the time until which it
/// may be cached (its `exp`), if any.
pub(crate) fn check_answer(
    claims: &Map<String, Value>,
    token_type: Option<&str>,
    now: u64,
) -> Result<Option<u64>, VerifyError> {
    let bad = |m: &str| err(ErrorKind::InvalidAccessToken, m.to_owned());
    if claims.get("active") != Some(&Value::Bool(true)) {
        return Err(bad("the access token is not active (introspection)"));
    }
    let exp = match claims.get("exp") {
        None => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 => Some(f.floor() as u64),
            _ => return Err(bad("introspection `exp` is not a NumericDate")),
        },
        Some(_) => return Err(bad("introspection `exp` is not a number")),
    };
    if exp.is_some_and(|e| e <= now) {
        return Err(bad("the access token has expired (introspection `exp`)"));
    }
    if let Some(want) = token_type {
        match claims.get("token_type").and_then(Value::as_str) {
            Some(t) if t.eq_ignore_ascii_case(want) => {}
            _ => {
                return Err(bad(&format!(
                    "the access token is not a {} token (introspection `token_type`)",
                    crate::text::clip(want, 32)
                )))
            }
        }
    }
    Ok(exp)
}

impl AccessTokenValidator for IntrospectionValidator {
    fn validate(&self, token: &str, now: u64) -> Result<Map<String, Value>, VerifyError> {
        self.validate_keyed(token, cache_key(token), now)
    }

    /// The caller's hash of the token keys the answer cache (no second
    /// SHA-256 of the token).
    fn validate_hashed(
        &self,
        token: &HashedToken<'_>,
        now: u64,
    ) -> Result<Map<String, Value>, VerifyError> {
        self.validate_keyed(token.token(), digest_key(token.sha256()), now)
    }

    /// The authorization server vouches for the token: as good as a
    /// signature check.
    fn checks_signature(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn answers() {
        let now = 1_000;
        assert_eq!(
            check_answer(&answer(json!({"active": true, "exp": 1_300})), None, now).unwrap(),
            Some(1_300)
        );
        assert_eq!(
            check_answer(&answer(json!({"active": true})), None, now).unwrap(),
            None
        );
        for bad in [
            json!({"active": false, "exp": 1_300}),
            json!({"active": "true", "exp": 1_300}),
            json!({"exp": 1_300}),
            json!({"active": true, "exp": 999}),
            json!({"active": true, "exp": "2000"}),
            json!({"active": true, "exp": -1}),
        ] {
            assert_eq!(
                check_answer(&answer(bad.clone()), None, now)
                    .unwrap_err()
                    .kind(),
                ErrorKind::InvalidAccessToken,
                "{bad}"
            );
        }
        let dpop = answer(json!({"active": true, "token_type": "DPoP"}));
        check_answer(&dpop, Some("dpop"), now).unwrap();
        assert!(check_answer(&dpop, Some("Bearer"), now).is_err());
        assert!(check_answer(&answer(json!({"active": true})), Some("DPoP"), now).is_err());
        assert_eq!(form("a b:c%"), "a+b%3Ac%25");
    }

    /// An answer is cached until the token's `exp` or `max_cache`, whichever
    /// comes first, and never past it.
    #[test]
    fn cache_lives_no_longer_than_the_token() {
        let v = IntrospectionValidator::new("http://127.0.0.1:9/introspect", "rs", "s")
            .unwrap()
            .max_cache(300);
        let claims = answer(json!({"active": true, "exp": 1_100}));
        let now = 1_000;
        let exp = check_answer(&claims, None, now).unwrap().unwrap();
        let until = exp.min(now + v.max_cache);
        // `validate` and `validate_hashed` key the same entry.
        assert_eq!(
            cache_key("t"),
            digest_key(crate::verify::token::HashedToken::new("t").sha256())
        );
        v.remember(cache_key("t"), &claims, until, now);
        assert!(v.cached(&cache_key("t"), 1_099).is_some());
        assert!(v.cached(&cache_key("t"), 1_100).is_none(), "not past exp");
        assert!(v.cached(&cache_key("other"), 1_000).is_none());
        // With a long-lived token, max_cache bounds it.
        let claims = answer(json!({"active": true, "exp": 100_000}));
        v.remember(cache_key("u"), &claims, 100_000u64.min(now + 300), now);
        assert!(v.cached(&cache_key("u"), 1_299).is_some());
        assert!(v.cached(&cache_key("u"), 1_300).is_none());
        // Secrets stay out of Debug.
        assert!(!format!("{v:?}").contains("\"s\""));
    }
}
