//! A local Entra-style authority and a protected API, on loopback, for the
//! client tests and the main demo (`examples/local_authority.rs`).
//!
//! * `POST {base}/{tenant}/oauth2/v2.0/token`: client credentials with a
//!   client secret or a `private_key_jwt` assertion (checked against the
//!   client's registered key); `token_type=pop` + `req_cnf` gives a `pop`
//!   token with `cnf.kid`, a `DPoP` header gives a `DPoP` token with
//!   `cnf.jkt` (optionally demanding a server nonce first), otherwise a
//!   bearer token. Tokens are ES256 JWTs signed by the authority's key.
//! * `GET {base}/jwks`: the authority's keys.
//! * `ANY {base}/api/*`: verifies `Authorization: PoP <shr>` or
//!   `Authorization: DPoP <at>` + `DPoP: <proof>` with popkey's verifiers
//!   and the JWKS validator, and answers with what it verified.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use popkey::verify::dpop::DpopVerifier;
use popkey::verify::nonce::NonceIssuer;
use popkey::verify::replay::MemoryReplayCache;
use popkey::verify::shr::ShrVerifier;
use popkey::verify::token::{AccessTokenValidator, DecodeOnly, JwksValidator};
use popkey::verify::{dpop_challenge, pop_challenge, ErrorKind, NoncePolicy, Request};
use popkey::{Algorithm, PopCryptoProvider, PopKey, PublicJwk};
use serde_json::{json, Value};

/// A registered client.
#[derive(Clone)]
pub struct Client {
    pub id: String,
    pub secret: Option<String>,
    pub jwk: Option<PublicJwk>,
}

/// How the authority and API behave.
#[derive(Default)]
pub struct Config {
    pub clients: Vec<Client>,
    /// Token lifetime in seconds (default 3600).
    pub expires_in: Option<u64>,
    /// Demand a DPoP nonce at the token endpoint.
    pub token_dpop_nonce: bool,
    /// Demand a DPoP nonce at the API.
    pub api_dpop_nonce: bool,
    /// Demand a server nonce in SHRs at the API.
    pub api_pop_nonce: bool,
    /// Keep rejecting nonces at the token endpoint (a misbehaving server).
    pub nonce_loop: bool,
    /// Answer with this token_type whatever was asked (a misbehaving server).
    pub force_token_type: Option<String>,
    /// Leave `expires_in` out of token responses (a misbehaving server).
    pub omit_expires_in: bool,
    /// Send `refresh_in` (Entra's early-refresh hint) with tokens.
    pub refresh_in: Option<u64>,
}

/// Counters and failure switches, shared with the test.
#[derive(Default)]
pub struct Stats {
    pub token_requests: AtomicUsize,
    pub api_requests: AtomicUsize,
    /// Answer the next N token requests with 503 + Retry-After: 0.
    pub token_unavailable: AtomicU32,
    /// Answer the next N API requests with 429 + Retry-After: 0.
    pub api_throttled: AtomicU32,
    /// Answer the next N API requests with 500.
    pub api_errors: AtomicU32,
    /// Every API request's Authorization and DPoP header values, in order.
    pub api_credentials: Mutex<Vec<String>>,
}

struct Inner {
    config: Config,
    key: PopKey,
    jwks: Value,
    issuer: String,
    validator: Arc<JwksValidator>,
    nonces: Arc<NonceIssuer>,
    /// The API's own nonces (the API is a separate party from the authority).
    api_nonces: Arc<NonceIssuer>,
    assertion_replay: MemoryReplayCache,
    api_replay: Arc<MemoryReplayCache>,
    stats: Arc<Stats>,
    token_endpoint: Mutex<String>,
}

/// A running authority.
pub struct Running {
    pub base: String,
    pub token_endpoint: String,
    pub api: String,
    pub stats: Arc<Stats>,
    pub jwks: Value,
}

pub const TENANT: &str = "local-tenant";

/// Starts the authority on `addr` (e.g. "127.0.0.1:0") on the current tokio runtime.
pub async fn spawn(config: Config, addr: &str) -> Running {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let key = PopKey::open("mem:").expect("authority key");
    let mut jwk: Value = serde_json::from_str(key.canonical_public_key_jwk()).expect("jwk");
    jwk["kid"] = "local-as".into();
    jwk["alg"] = "ES256".into();
    let jwks = json!({"keys": [jwk]});
    let issuer = format!("{base}/{TENANT}/v2.0");
    let validator = Arc::new(
        JwksValidator::from_jwks(&jwks.to_string())
            .expect("jwks")
            .issuer(&issuer)
            .audience("api://local"),
    );
    let stats = Arc::new(Stats::default());
    let token_endpoint = format!("{base}/{TENANT}/oauth2/v2.0/token");
    let inner = Arc::new(Inner {
        config,
        key,
        jwks: jwks.clone(),
        issuer,
        validator,
        nonces: Arc::new(NonceIssuer::random(300)),
        api_nonces: Arc::new(NonceIssuer::random(300)),
        assertion_replay: MemoryReplayCache::new(100_000),
        api_replay: Arc::new(MemoryReplayCache::new(1_000_000)),
        stats: stats.clone(),
        token_endpoint: Mutex::new(token_endpoint.clone()),
    });
    let app = Router::new()
        .route(&format!("/{TENANT}/oauth2/v2.0/token"), post(token))
        .route(
            "/jwks",
            get(|State(s): State<Arc<Inner>>| async move { Json(s.jwks.clone()) }),
        )
        .route("/api/{*rest}", any(api))
        .with_state(inner);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Running {
        api: format!("{base}/api/hello"),
        base,
        token_endpoint,
        stats,
        jwks,
    }
}

/// base64url without padding (RFC 7515 §2).
pub fn b64url(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// A compact JWS of `header` and `payload` (compact JSON) signed by `key`.
pub fn sign_jws(key: &PopKey, header: &[u8], payload: &[u8]) -> popkey::Result<String> {
    let input = format!("{}.{}", b64url(header), b64url(payload));
    let signature = key.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", b64url(signature)))
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn token(
    State(s): State<Arc<Inner>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    s.stats.token_requests.fetch_add(1, Ordering::SeqCst);
    if s.stats
        .token_unavailable
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("Retry-After", "0")],
            "<html><body>busy</body></html>",
        )
            .into_response();
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials",
        );
    }
    let Some(client_id) = form.get("client_id") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id is missing",
        );
    };
    let Some(client) = s.config.clients.iter().find(|c| &c.id == client_id) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
    };
    let endpoint = s
        .token_endpoint
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default();
    // Client authentication.
    if let Some(secret) = form.get("client_secret") {
        if client.secret.as_deref() != Some(secret.as_str()) {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "bad client secret",
            );
        }
    } else if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str)
            != Some(popkey::assertion::ASSERTION_TYPE)
        {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "bad client_assertion_type",
            );
        }
        if let Err(m) = check_assertion(&s, client, assertion, &endpoint) {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &m);
        }
    } else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "no client authentication",
        );
    }
    // Binding.
    let now = now();
    let (cnf, token_type) = if let Some(proof) = headers.get("DPoP").and_then(|v| v.to_str().ok()) {
        let mut v = DpopVerifier::new(Arc::new(DecodeOnly));
        if s.config.token_dpop_nonce || s.config.nonce_loop {
            v = v.nonce(NoncePolicy::Issuer(s.nonces.clone()));
        }
        match v.verify_at(&Request::new("POST", &endpoint).header("DPoP", proof), now) {
            Ok(ok) => (Some(json!({"jkt": ok.jkt})), "DPoP"),
            Err(e)
                if matches!(e.kind(), ErrorKind::NonceRequired | ErrorKind::InvalidNonce)
                    || s.config.nonce_loop =>
            {
                let fresh = if s.config.nonce_loop {
                    s.nonces.issue_at(now - 10_000)
                } else {
                    s.nonces.issue()
                };
                return (
                    StatusCode::BAD_REQUEST,
                    [("DPoP-Nonce", fresh)],
                    Json(json!({"error": "use_dpop_nonce", "error_description": "Authorization server requires nonce in DPoP proof"})),
                )
                    .into_response();
            }
            Err(e) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_dpop_proof",
                    &e.to_string(),
                )
            }
        }
    } else if form.get("token_type").map(String::as_str) == Some("pop") {
        let kid = form
            .get("req_cnf")
            .and_then(|r| b64url_decode(r))
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["kid"].as_str().map(str::to_owned));
        match kid {
            Some(kid) => (Some(json!({"kid": kid})), "pop"),
            None => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "req_cnf must be base64url of {\"kid\":…}",
                )
            }
        }
    } else {
        (None, "Bearer")
    };
    let expires_in = s.config.expires_in.unwrap_or(3600);
    let mut claims = json!({
        "iss": s.issuer, "aud": "api://local", "sub": client.id, "azp": client.id,
        "iat": now, "nbf": now, "exp": now + expires_in,
        "scp": form.get("scope").cloned().unwrap_or_default(),
    });
    if let Some(cnf) = cnf {
        claims["cnf"] = cnf;
    }
    let at = sign_jws(
        &s.key,
        br#"{"alg":"ES256","kid":"local-as","typ":"at+jwt"}"#,
        claims.to_string().as_bytes(),
    )
    .expect("authority signs");
    let token_type = s.config.force_token_type.as_deref().unwrap_or(token_type);
    let mut body = json!({"access_token": at, "token_type": token_type, "expires_in": expires_in, "ext_expires_in": expires_in});
    if let Some(r) = s.config.refresh_in {
        body["refresh_in"] = r.into();
    }
    if s.config.omit_expires_in {
        body.as_object_mut().map(|o| o.remove("expires_in"));
    }
    Json(body).into_response()
}

fn check_assertion(
    s: &Inner,
    client: &Client,
    assertion: &str,
    endpoint: &str,
) -> Result<(), String> {
    let key = client
        .jwk
        .as_ref()
        .ok_or("this client has no registered key")?;
    let jws =
        popkey::verify::ParsedJws::parse(assertion, &Algorithm::ALL).map_err(|e| e.to_string())?;
    jws.verify_signature(key).map_err(|e| e.to_string())?;
    let c = &jws.claims;
    if c.get("iss").and_then(Value::as_str) != Some(&client.id)
        || c.get("sub").and_then(Value::as_str) != Some(&client.id)
    {
        return Err("iss and sub must be the client id".into());
    }
    if c.get("aud").and_then(Value::as_str) != Some(endpoint) {
        return Err("aud must be the token endpoint".into());
    }
    let now = now();
    let exp = jws.time_claim("exp").map_err(|e| e.to_string())?;
    if exp < now {
        return Err("the assertion has expired".into());
    }
    let jti = jws.str_claim("jti").map_err(|e| e.to_string())?;
    use popkey::verify::replay::ReplayStore;
    s.assertion_replay
        .check_and_record(&format!("{}:{jti}", client.id), exp, now)
        .map_err(|e| e.to_string())
}

async fn api(
    State(s): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.stats.api_requests.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut seen) = s.stats.api_credentials.lock() {
        for name in ["authorization", "dpop"] {
            if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                seen.push(v.to_owned());
            }
        }
    }
    let dec = |c: &AtomicU32| {
        c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    };
    if dec(&s.stats.api_throttled) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("Retry-After", "0")],
            "slow down",
        )
            .into_response();
    }
    if dec(&s.stats.api_errors) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response();
    }
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let url = format!("http://{host}{uri}");
    let auth = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let (scheme, credential) = auth.split_once(' ').unwrap_or((auth, ""));
    let now = now();
    let validator: Arc<dyn AccessTokenValidator> = s.validator.clone();
    match scheme.to_ascii_lowercase().as_str() {
        "pop" => {
            let mut v = ShrVerifier::new(validator).replay_store(s.api_replay.clone());
            if s.config.api_pop_nonce {
                v = v.nonce(NoncePolicy::Issuer(s.api_nonces.clone()));
            }
            let req = Request::new(method.as_str(), &url).body(&body);
            match v.verify_at(credential, &req, now) {
                Ok(ok) => Json(json!({"ok": true, "scheme": "pop", "sub": ok.access_token_claims.get("sub"), "kid": ok.thumbprint})).into_response(),
                Err(e) => {
                    let nonce = s.config.api_pop_nonce.then(|| s.api_nonces.issue());
                    (StatusCode::UNAUTHORIZED, [("WWW-Authenticate", pop_challenge(nonce.as_deref(), Some(&e)))], Json(e.to_json())).into_response()
                }
            }
        }
        "dpop" => {
            let proofs: Vec<&str> = headers.get_all("dpop").iter().filter_map(|v| v.to_str().ok()).collect();
            let mut v = DpopVerifier::new(validator).replay_store(s.api_replay.clone());
            if s.config.api_dpop_nonce {
                v = v.nonce(NoncePolicy::Issuer(s.api_nonces.clone()));
            }
            let authorization = format!("DPoP {credential}");
            let mut request = Request::new(method.as_str(), &url).header("Authorization", &authorization);
            for p in &proofs {
                request = request.header("DPoP", p);
            }
            match v.verify_at(&request, now) {
                Ok(ok) => Json(json!({"ok": true, "scheme": "dpop", "sub": ok.access_token_claims.and_then(|c| c.get("sub").cloned()), "jkt": ok.jkt})).into_response(),
                Err(e) => {
                    let mut resp = (StatusCode::UNAUTHORIZED, Json(e.to_json())).into_response();
                    let h = resp.headers_mut();
                    if let Ok(v) = dpop_challenge(&e, &Algorithm::ALL).parse() {
                        h.insert("WWW-Authenticate", v);
                    }
                    if s.config.api_dpop_nonce {
                        if let Ok(v) = s.api_nonces.issue().parse() {
                            h.insert("DPoP-Nonce", v);
                        }
                    }
                    resp
                }
            }
        }
        "bearer" => match s.validator.validate(credential, now) {
            Ok(claims) if claims.contains_key("cnf") => {
                (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_token", "message": "a bound token cannot be used as a bearer token"}))).into_response()
            }
            Ok(claims) => Json(json!({"ok": true, "scheme": "bearer", "sub": claims.get("sub")})).into_response(),
            Err(e) => (StatusCode::UNAUTHORIZED, Json(e.to_json())).into_response(),
        },
        _ => (StatusCode::UNAUTHORIZED, [("WWW-Authenticate", "PoP, DPoP algs=\"ES256 RS256 PS256\", Bearer")], "no credentials").into_response(),
    }
}
