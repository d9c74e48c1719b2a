//! `popkey::server` against real components: axum apps on loopback (one of
//! them a reverse proxy), panva's oidc-provider as the issuer (discovery and
//! a key rotation), reqwest as the client, a bounded load test. Proofs are
//! signed in-process by popkey software keys and checked independently by
//! `ring` (testkit `common::verify_dpop` / `verify_shr`).

#![cfg(all(feature = "server", feature = "axum"))]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::{Extension, Json, Router};
use popkey::dpop::DpopProof;
use popkey::server::{Authenticated, Issuer, PopAuth, PopAuthLayer, ResourceServer};
use popkey::shr::SignedHttpRequest;
use popkey::verify::dpop::DpopVerifier;
use popkey::verify::nonce::NonceIssuer;
use popkey::verify::shr::ShrVerifier;
use popkey::verify::token::JwksValidator;
use popkey::{PopCryptoProvider, PopKey};
use popkey_testkit::authority::sign_jws;
use popkey_testkit::common::{thumbprint, verify_dpop, verify_shr};
use serde_json::{json, Value};

const AUDIENCE: &str = "api://popkey-server-test";
const AS_ISSUER: &str = "https://as.popkey.test";

/// A small authorization server: an ES256 key that signs access tokens.
struct Authority {
    key: PopKey,
    jwks: String,
}

impl Authority {
    fn new() -> Self {
        let key = PopKey::open("mem:").unwrap();
        let mut jwk: Value = serde_json::from_str(key.canonical_public_key_jwk()).unwrap();
        jwk["kid"] = "as-1".into();
        Authority {
            jwks: json!({"keys": [jwk]}).to_string(),
            key,
        }
    }

    /// A token bound to `client` (`cnf.jkt`), for `sub`.
    fn token(&self, client: &PopKey, sub: &str) -> String {
        let exp = now() + 3600;
        let claims = json!({"iss": AS_ISSUER, "aud": AUDIENCE, "sub": sub, "exp": exp,
            "scope": "items:read", "cnf": {"jkt": client.kid()}});
        sign_jws(
            &self.key,
            br#"{"alg":"ES256","kid":"as-1","typ":"at+jwt"}"#,
            claims.to_string().as_bytes(),
        )
        .unwrap()
    }

    fn validator(&self) -> Arc<JwksValidator> {
        Arc::new(
            JwksValidator::from_jwks(&self.jwks)
                .unwrap()
                .issuer(AS_ISSUER)
                .audience(AUDIENCE),
        )
    }

    fn server(&self) -> popkey::server::ResourceServerBuilder {
        let v = self.validator();
        ResourceServer::builder()
            .dpop(DpopVerifier::new(v.clone()))
            .pop(ShrVerifier::new(v))
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn whoami(Extension(who): Extension<Authenticated>) -> Json<Value> {
    Json(
        json!({"scheme": who.scheme.as_str(), "jkt": who.jkt, "sub": who.subject,
        "scopes": who.scopes()}),
    )
}

async fn echo(Extension(who): Extension<Authenticated>, body: Bytes) -> Json<Value> {
    Json(json!({"scheme": who.scheme.as_str(), "len": body.len(),
        "body": String::from_utf8_lossy(&body)}))
}

/// The protected app: `/items` and `/echo` behind the layer.
fn protected(server: ResourceServer) -> Router {
    Router::new()
        .route("/items", get(whoami))
        .route("/echo", post(echo))
        .layer(PopAuthLayer::new(Arc::new(server)))
}

/// Serves `app` on a fresh loopback port, with peer addresses.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// A DPoP request to `connect` (a URL reqwest sends to), with a proof
/// signed for `public` (the URL the client believes it is calling).
fn dpop_request(
    http: &reqwest::Client,
    method: reqwest::Method,
    connect: &str,
    public: &str,
    key: &PopKey,
    token: &str,
    nonce: Option<&str>,
) -> (reqwest::RequestBuilder, String) {
    let mut proof = DpopProof::new(method.as_str(), public)
        .unwrap()
        .access_token(token)
        .unwrap();
    if let Some(n) = nonce {
        proof = proof.nonce(n).unwrap();
    }
    let proof = proof.sign(key).unwrap();
    let rb = http
        .request(method, connect)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", &proof);
    (rb, proof)
}

fn pop_request(
    http: &reqwest::Client,
    connect: &str,
    public: &str,
    key: &PopKey,
    token: &str,
) -> (reqwest::RequestBuilder, String) {
    let shr = SignedHttpRequest::new("GET", public, token)
        .unwrap()
        .sign(key)
        .unwrap();
    let rb = http
        .get(connect)
        .header("authorization", format!("PoP {shr}"));
    (rb, shr)
}

fn challenge(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------
// The layer behind a reverse proxy.

struct Proxy {
    upstream: String,
    http: reqwest::Client,
}

/// A reverse proxy (the second axum app): `/api/*` → upstream `/*`, from
/// source address 127.0.0.2, APPENDING its `X-Forwarded-Host` to whatever
/// the client sent (a naive proxy), and setting `X-Forwarded-Proto` and
/// `X-Forwarded-Prefix`.
async fn proxy(State(p): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let rest = pq.strip_prefix("/api").unwrap_or(pq);
    let host = parts.headers["host"].to_str().unwrap().to_owned();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let mut out = p
        .http
        .request(parts.method.clone(), format!("{}{rest}", p.upstream));
    let mut forwarded_host = Vec::new();
    for (name, value) in &parts.headers {
        match name.as_str() {
            "host" | "content-length" | "connection" => {}
            "x-forwarded-host" => forwarded_host.push(value.to_str().unwrap().to_owned()),
            _ => out = out.header(name.as_str(), value.as_bytes()),
        }
    }
    forwarded_host.push(host);
    let resp = out
        .header("x-forwarded-host", forwarded_host.join(", "))
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-prefix", "/api")
        .body(body)
        .send()
        .await
        .unwrap();
    let mut r = Response::builder().status(resp.status().as_u16());
    for (name, value) in resp.headers() {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            r = r.header(name.as_str(), value.as_bytes());
        }
    }
    r.body(axum::body::Body::from(resp.bytes().await.unwrap()))
        .unwrap()
}

async fn spawn_proxy(upstream: SocketAddr) -> SocketAddr {
    let p = Arc::new(Proxy {
        upstream: format!("http://{upstream}"),
        http: reqwest::Client::builder()
            .local_address(Some("127.0.0.2".parse().unwrap()))
            .build()
            .unwrap(),
    });
    serve(
        Router::new()
            .route("/api/{*rest}", any(proxy))
            .with_state(p),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_behind_a_reverse_proxy_trusts_only_configured_proxies() {
    let authority = Authority::new();
    let client = PopKey::open("mem:").unwrap();
    let token = authority.token(&client, "alice");
    let trusting = serve(protected(
        authority
            .server()
            .trusted_proxies(["127.0.0.2/32"])
            .build()
            .unwrap(),
    ))
    .await;
    let distrusting = serve(protected(authority.server().build().unwrap())).await;
    let via_trusted = spawn_proxy(trusting).await;
    let via_distrusted = spawn_proxy(distrusting).await;
    let http = http();

    // Through the trusted proxy: the proof signed for the public URL passes,
    // whatever X-Forwarded-Host the client itself sent (the proxy appends;
    // the last value, the proxy's, counts).
    let public = format!("http://{via_trusted}/api/items");
    let (rb, proof) = dpop_request(
        &http,
        reqwest::Method::GET,
        &public,
        &public,
        &client,
        &token,
        None,
    );
    let resp = rb
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", challenge(&resp));
    let (header, claims) = verify_dpop(&proof);
    assert_eq!(claims["htu"], public.as_str());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["scheme"], "dpop");
    assert_eq!(body["sub"], "alice");
    assert_eq!(body["jkt"], thumbprint(&header["jwk"]).as_str());
    assert_eq!(body["scopes"], json!(["items:read"]));

    // PoP through the trusted proxy too.
    let (rb, shr) = pop_request(&http, &public, &public, &client, &token);
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", challenge(&resp));
    let (_, claims) = verify_shr(&shr);
    assert_eq!(claims["p"], "/api/items");
    assert_eq!(resp.json::<Value>().await.unwrap()["scheme"], "pop");

    // The same kind of proof through a proxy the app does not trust: the app
    // checks it against its own URL, and refuses it.
    let public = format!("http://{via_distrusted}/api/items");
    let (rb, _) = dpop_request(
        &http,
        reqwest::Method::GET,
        &public,
        &public,
        &client,
        &token,
        None,
    );
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        challenge(&resp)[0],
        r#"DPoP error="invalid_dpop_proof", error_description="url_mismatch", algs="ES256 RS256 PS256""#
    );

    // Straight to the trusting app from 127.0.0.1 (not a trusted proxy):
    // client-sent forwarding headers are ignored.
    let direct = format!("http://{trusting}/items");
    let forged = "https://api.public.example/items";
    for (signed_for, status) in [(forged, 401), (direct.as_str(), 200)] {
        let (rb, _) = dpop_request(
            &http,
            reqwest::Method::GET,
            &direct,
            signed_for,
            &client,
            &token,
            None,
        );
        let resp = rb
            .header("x-forwarded-host", "api.public.example")
            .header("x-forwarded-proto", "https")
            .header("forwarded", "host=api.public.example;proto=https")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "signed for {signed_for}");
    }
}

// ---------------------------------------------------------------------------
// Status codes and challenges, the body cap, the extractor alone, bearer.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_challenges_body_cap_and_extractor() {
    let authority = Authority::new();
    let client = PopKey::open("mem:").unwrap();
    let token = authority.token(&client, "bob");
    let addr = serve(protected(
        authority.server().body_limit(64).build().unwrap(),
    ))
    .await;
    let http = http();
    let url = format!("http://{addr}/items");

    // No credentials: 401, a bare challenge per scheme, no-store.
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        challenge(&resp),
        [r#"DPoP algs="ES256 RS256 PS256""#, "PoP"]
    );
    assert_eq!(resp.headers()["cache-control"], "no-store");
    // Bearer is not offered without a policy.
    let resp = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(challenge(&resp)[1], "PoP");
    // Two Authorization headers: 400 invalid_request.
    let resp = http
        .get(&url)
        .header("authorization", format!("DPoP {token}"))
        .header("authorization", format!("PoP {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(challenge(&resp)[0].starts_with(r#"DPoP error="invalid_request""#));
    // A proof for another key than the token's: invalid_token, nothing more
    // than the kind goes out.
    let other = PopKey::open("mem:").unwrap();
    let (rb, _) = dpop_request(
        &http,
        reqwest::Method::GET,
        &url,
        &url,
        &other,
        &token,
        None,
    );
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        challenge(&resp)[0],
        r#"DPoP error="invalid_token", error_description="key_not_bound", algs="ES256 RS256 PS256""#
    );
    // A PoP failure puts the error on the PoP challenge.
    let (rb, _) = pop_request(
        &http,
        &url,
        &format!("http://{addr}/other"),
        &client,
        &token,
    );
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        challenge(&resp),
        [
            r#"DPoP algs="ES256 RS256 PS256""#,
            r#"PoP error="invalid_token", error_description="url_mismatch""#
        ]
    );

    // SHR signing the body: read (up to the cap), checked, handed on.
    let echo = format!("http://{addr}/echo");
    for (body, status) in [(&b"small body"[..], 200), (&[b'x'; 65][..], 413)] {
        let shr = SignedHttpRequest::new("POST", &echo, &token)
            .unwrap()
            .body(body)
            .sign(&client)
            .unwrap();
        let (_, claims) = verify_shr(&shr);
        assert!(claims["b"].is_string());
        let resp = http
            .post(&echo)
            .header("authorization", format!("PoP {shr}"))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status);
        if status == 200 {
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["body"], "small body");
        }
    }
    // The body differs from the signed one.
    let shr = SignedHttpRequest::new("POST", &echo, &token)
        .unwrap()
        .body(b"signed")
        .sign(&client)
        .unwrap();
    let resp = http
        .post(&echo)
        .header("authorization", format!("PoP {shr}"))
        .body("sent")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(challenge(&resp)[1].contains("body_mismatch"));
    // A large body without `b` streams through untouched (never read by the layer).
    let big = vec![b'y'; 100_000];
    let (rb, _) = dpop_request(
        &http,
        reqwest::Method::POST,
        &echo,
        &echo,
        &client,
        &token,
        None,
    );
    let resp = rb.body(big.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["len"], 100_000);

    // The extractor alone (no layer), with the server as an extension, and
    // a bearer policy: bearer tokens pass, key-bound tokens as bearer do not.
    let bearer_token = sign_jws(
        &authority.key,
        br#"{"alg":"ES256","kid":"as-1"}"#,
        json!({"iss": AS_ISSUER, "aud": AUDIENCE, "sub": "svc", "exp": now() + 600})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let server = Arc::new(
        authority
            .server()
            .allow_bearer(authority.validator())
            .build()
            .unwrap(),
    );
    let app = Router::new()
        .route(
            "/me",
            get(|PopAuth(who): PopAuth| async move {
                format!("{} {}", who.scheme, who.subject.unwrap_or_default())
            }),
        )
        .layer(Extension(server));
    let addr = serve(app).await;
    let me = format!("http://{addr}/me");
    let resp = http
        .get(&me)
        .bearer_auth(&bearer_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "bearer svc");
    let resp = http.get(&me).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        challenge(&resp)[2],
        r#"Bearer error="invalid_token", error_description="invalid_access_token""#
    );
    let (rb, _) = dpop_request(&http, reqwest::Method::GET, &me, &me, &client, &token, None);
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "dpop bob");

    // No server configured for the extractor: 500, not a pass.
    let addr =
        serve(Router::new().route("/me", get(|PopAuth(_): PopAuth| async { "unreachable" }))).await;
    let resp = http
        .get(format!("http://{addr}/me"))
        .bearer_auth("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
}

// ---------------------------------------------------------------------------
// Server nonces.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_challenge_flow_for_dpop_and_pop() {
    let authority = Authority::new();
    let client = PopKey::open("mem:").unwrap();
    let token = authority.token(&client, "carol");
    let nonces = Arc::new(NonceIssuer::random(300));
    let addr = serve(protected(
        authority.server().nonce_issuer(nonces).build().unwrap(),
    ))
    .await;
    let http = http();
    let url = format!("http://{addr}/items");

    // DPoP without a nonce: use_dpop_nonce and a DPoP-Nonce; the retry with
    // it passes.
    let (rb, _) = dpop_request(
        &http,
        reqwest::Method::GET,
        &url,
        &url,
        &client,
        &token,
        None,
    );
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        challenge(&resp)[0],
        r#"DPoP error="use_dpop_nonce", error_description="nonce_required", algs="ES256 RS256 PS256""#
    );
    let nonce = resp.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let (rb, proof) = dpop_request(
        &http,
        reqwest::Method::GET,
        &url,
        &url,
        &client,
        &token,
        Some(&nonce),
    );
    assert_eq!(verify_dpop(&proof).1["nonce"], nonce.as_str());
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", challenge(&resp));
    // A nonce this server never issued.
    let (rb, _) = dpop_request(
        &http,
        reqwest::Method::GET,
        &url,
        &url,
        &client,
        &token,
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    );
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(challenge(&resp)[0].contains("use_dpop_nonce"));
    assert!(resp.headers().contains_key("dpop-nonce"));

    // PoP: the client's own random nonce is refused; the challenge carries
    // the server's (as MSAL reads it), and the retry with it passes.
    let (rb, _) = pop_request(&http, &url, &url, &client, &token);
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let pop = popkey::auth_header::parse_www_authenticate(&challenge(&resp)[1]);
    assert!(pop[0].is("PoP"));
    assert_eq!(pop[0].param("error"), Some("invalid_token"));
    let nonce = pop[0].param("nonce").unwrap().to_owned();
    let shr = SignedHttpRequest::new("GET", &url, &token)
        .unwrap()
        .nonce(&nonce)
        .sign(&client)
        .unwrap();
    assert_eq!(verify_shr(&shr).1["nonce"], nonce.as_str());
    let resp = http
        .get(&url)
        .header("authorization", format!("PoP {shr}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", challenge(&resp));
}

// ---------------------------------------------------------------------------
// An issuer we did not write: oidc-provider, discovery and key rotation.

struct Node(std::process::Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn oidc_dir() -> &'static std::path::Path {
    std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc"))
}

fn start_oidc(jwks: &std::path::Path, env: &[(&str, &str)]) -> (Node, Value) {
    use std::io::BufRead;
    assert!(
        oidc_dir().join("node_modules/oidc-provider").exists(),
        "oidc-provider is not installed: run ci/test (it runs `npm ci` in tests/oidc), or `cd tests/oidc && npm ci`"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new("node")
        .arg(oidc_dir().join("server.mjs"))
        .arg(port.to_string())
        .arg(jwks)
        .arg("false")
        .env("POPKEY_OIDC_ROTATE", "1")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("node is needed for the oidc-provider test: apt-get install nodejs npm");
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let info: Value = serde_json::from_str(&line)
        .unwrap_or_else(|_| panic!("oidc-provider did not start: {line:?}"));
    (Node(child), info)
}

/// A DPoP-bound token from oidc-provider, through `popkey token`.
fn oidc_token(token_endpoint: &str, key_uri: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_popkey"))
        .args([
            "token",
            "--key",
            key_uri,
            "--token-endpoint",
            token_endpoint,
            "--client-id",
            "popkey-client",
            "--scope",
            "api:read",
            "--scheme",
            "dpop",
            "--assertion-key",
            key_uri,
        ])
        .env_remove("POPKEY_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp: Value = serde_json::from_slice(&out.stdout).unwrap();
    resp["access_token"].as_str().unwrap().to_owned()
}

fn token_kid(token: &str) -> String {
    let (header, _) = popkey_testkit::common::parts(token);
    header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_discovery_and_key_rotation_refresh_once() {
    let dir = tempfile::tempdir().unwrap();
    let key_uri = format!("file:{}", dir.path().join("client.pem").display());
    let client = PopKey::create(&key_uri, &popkey::CreateOptions::default()).unwrap();
    let mut jwk: Value = serde_json::from_str(client.canonical_public_key_jwk()).unwrap();
    jwk["kid"] = client.kid().into();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [jwk]}).to_string()).unwrap();
    let (_node, info) = start_oidc(&jwks, &[]);
    let issuer_url = info["issuer"].as_str().unwrap().to_owned();
    let token_endpoint = info["token_endpoint"].as_str().unwrap().to_owned();
    let as_http = http();
    let jwks_hits = || async {
        as_http
            .get(format!("{issuer_url}/__popkey/jwks-hits"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["hits"]
            .as_u64()
            .unwrap()
    };

    let issuer = Arc::new(
        Issuer::builder(&issuer_url)
            .audience("urn:popkey:api")
            .min_refresh_interval(std::time::Duration::from_secs(120))
            .build()
            .unwrap(),
    );
    let addr = serve(protected(
        ResourceServer::for_issuer(issuer.clone()).build().unwrap(),
    ))
    .await;
    let url = format!("http://{addr}/items");
    let http = http();

    // First request: discovery, one JWKS fetch; the token verifies.
    let first = oidc_token(&token_endpoint, &key_uri);
    let first_kid = token_kid(&first);
    let (rb, proof) = dpop_request(
        &http,
        reqwest::Method::GET,
        &url,
        &url,
        &client,
        &first,
        None,
    );
    verify_dpop(&proof);
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", challenge(&resp));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["jkt"], client.kid());
    assert_eq!(body["sub"], "popkey-client");
    assert_eq!(jwks_hits().await, 1);
    assert_eq!(issuer.jwks_fetches(), 1);

    // The AS rotates its key; a token signed by the new key arrives at 8
    // requests at once: one JWKS fetch between them, all pass.
    let rotated: Value = as_http
        .post(format!("{issuer_url}/__popkey/rotate"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second = oidc_token(&token_endpoint, &key_uri);
    assert_eq!(token_kid(&second), rotated["kid"].as_str().unwrap());
    assert_ne!(token_kid(&second), first_kid);
    let mut calls = Vec::new();
    for _ in 0..8 {
        let (rb, _) = dpop_request(
            &http,
            reqwest::Method::GET,
            &url,
            &url,
            &client,
            &second,
            None,
        );
        calls.push(tokio::spawn(
            async move { rb.send().await.unwrap().status() },
        ));
    }
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    assert_eq!(jwks_hits().await, 2, "exactly one refresh for the new kid");
    assert_eq!(issuer.jwks_fetches(), 2);
    // The old key is still published: the first token still passes, no fetch.
    let (rb, _) = dpop_request(
        &http,
        reqwest::Method::GET,
        &url,
        &url,
        &client,
        &first,
        None,
    );
    assert_eq!(rb.send().await.unwrap().status(), 200);

    // A token with a made-up kid: refused, and it cannot make the API fetch
    // again within the refresh interval.
    let forger = PopKey::open("mem:").unwrap();
    let forged = sign_jws(
        &forger,
        br#"{"alg":"ES256","kid":"made-up"}"#,
        json!({"iss": issuer_url, "aud": "urn:popkey:api", "exp": now() + 600,
            "cnf": {"jkt": client.kid()}})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    for _ in 0..3 {
        let (rb, _) = dpop_request(
            &http,
            reqwest::Method::GET,
            &url,
            &url,
            &client,
            &forged,
            None,
        );
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert!(challenge(&resp)[0].contains(r#"error="invalid_token""#));
    }
    assert_eq!(jwks_hits().await, 2);

    // The issuer unreachable from the start: 503, fails closed.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = Arc::new(
        Issuer::builder(&format!("http://127.0.0.1:{dead_port}"))
            .build()
            .unwrap(),
    );
    let addr = serve(protected(ResourceServer::for_issuer(dead).build().unwrap())).await;
    let url = format!("http://{addr}/items");
    let (rb, _) = dpop_request(
        &http,
        reqwest::Method::GET,
        &url,
        &url,
        &client,
        &second,
        None,
    );
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
}

/// The resource server's client secret at the opaque-token authority.
const RS_SECRET: &str = "resource server secret";

/// oidc-provider issuing opaque DPoP-bound tokens to a file key in `dir`
/// (registered by its JWKS), with introspection for `popkey-rs`.
fn opaque_authority(dir: &std::path::Path) -> (PopKey, String, Node, Value) {
    let key_uri = format!("file:{}", dir.join("client.pem").display());
    let client = PopKey::create(&key_uri, &popkey::CreateOptions::default()).unwrap();
    let mut jwk: Value = serde_json::from_str(client.canonical_public_key_jwk()).unwrap();
    jwk["kid"] = client.kid().into();
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [jwk]}).to_string()).unwrap();
    let (node, info) = start_oidc(
        &jwks,
        &[
            ("POPKEY_OIDC_OPAQUE", "1"),
            ("POPKEY_OIDC_RS_SECRET", RS_SECRET),
        ],
    );
    (client, key_uri, node, info)
}

/// An API behind the layer whose issuer introspects opaque tokens as
/// `id`/`secret`; its URL.
async fn introspecting_api(issuer_url: &str, id: &str, secret: &str) -> String {
    let issuer = Arc::new(
        Issuer::builder(issuer_url)
            .audience("urn:popkey:api")
            .introspection(id, secret)
            .build()
            .unwrap(),
    );
    let addr = serve(protected(
        ResourceServer::for_issuer(issuer).build().unwrap(),
    ))
    .await;
    format!("http://{addr}/items")
}

/// Opaque tokens: the introspection endpoint comes from discovery, the
/// binding from the answer's `cnf.jkt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_opaque_tokens_through_discovered_introspection() {
    let dir = tempfile::tempdir().unwrap();
    let (client, key_uri, node, info) = opaque_authority(dir.path());
    let secret = RS_SECRET;
    let issuer_url = info["issuer"].as_str().unwrap();
    let token = oidc_token(info["token_endpoint"].as_str().unwrap(), &key_uri);
    assert!(!token.contains('.'), "an opaque token");
    let http = http();
    // A refused client secret: the token cannot be checked, 503 (the
    // client keeps its token and retries), not 401.
    for (id, secret, status) in [
        ("popkey-rs", secret, 200),
        ("popkey-rs", "wrong secret", 503),
    ] {
        let url = introspecting_api(issuer_url, id, secret).await;
        let (rb, proof) = dpop_request(
            &http,
            reqwest::Method::GET,
            &url,
            &url,
            &client,
            &token,
            None,
        );
        verify_dpop(&proof);
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), status, "{:?}", challenge(&resp));
        if status == 200 {
            assert_eq!(resp.json::<Value>().await.unwrap()["jkt"], client.kid());
        } else {
            assert_eq!(resp.headers()["retry-after"], "1");
            continue;
        }
        // Another key's proof for the same token: the answer's cnf.jkt names ours.
        let other = PopKey::open("mem:").unwrap();
        let (rb, _) = dpop_request(
            &http,
            reqwest::Method::GET,
            &url,
            &url,
            &other,
            &token,
            None,
        );
        assert_eq!(rb.send().await.unwrap().status(), 401);
    }
    // Without introspection configured, an opaque token is refused.
    let issuer = Arc::new(Issuer::builder(issuer_url).build().unwrap());
    let addr = serve(protected(
        ResourceServer::for_issuer(issuer).build().unwrap(),
    ))
    .await;
    let url = format!("http://{addr}/items");
    let (rb, _) = dpop_request(
        &http,
        reqwest::Method::GET,
        &url,
        &url,
        &client,
        &token,
        None,
    );
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(challenge(&resp)[0].contains("invalid_access_token"));

    // The authority goes away: a token the API has not seen yet cannot be
    // introspected, 503 with Retry-After (fail closed, the token not blamed).
    let url = introspecting_api(issuer_url, "popkey-rs", secret).await;
    let send = |token: &str| {
        dpop_request(
            &http,
            reqwest::Method::GET,
            &url,
            &url,
            &client,
            token,
            None,
        )
        .0
        .send()
    };
    assert_eq!(send(&token).await.unwrap().status(), 200);
    let unseen = oidc_token(info["token_endpoint"].as_str().unwrap(), &key_uri);
    drop(node);
    let resp = send(&unseen).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(resp.headers().get("www-authenticate").is_none());
    // The token introspected before the outage is still served from the
    // answer cache.
    assert_eq!(send(&token).await.unwrap().status(), 200);
}

// ---------------------------------------------------------------------------
// Bounded load: 16 clients on loopback, DPoP and PoP, every 10th request a
// replay of the one before. 20,000 requests (the issue's size) take about
// 13 s in a debug build on 2 shared cores; POPKEY_SERVER_LOAD_REQUESTS
// sets another size.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_sixteen_clients_no_errors_every_replay_refused() {
    let total: usize = std::env::var("POPKEY_SERVER_LOAD_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    const CLIENTS: usize = 16;
    let authority = Arc::new(Authority::new());
    let addr = serve(protected(authority.server().build().unwrap())).await;
    let url = Arc::new(format!("http://{addr}/items"));
    let http = http();
    let passed = Arc::new(AtomicUsize::new(0));
    let replays_refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (authority, url, http) = (authority.clone(), url.clone(), http.clone());
        let (passed, replays_refused) = (passed.clone(), replays_refused.clone());
        let share = total / CLIENTS + usize::from(c < total % CLIENTS);
        tasks.push(tokio::spawn(async move {
            let key = PopKey::open("mem:").unwrap();
            let token = authority.token(&key, &format!("client-{c}"));
            let mut last: Option<(&'static str, String)> = None;
            for i in 0..share {
                let (rb, replay) = if i % 10 == 9 {
                    let (scheme, proof) = last.take().unwrap();
                    let rb = if scheme == "dpop" {
                        http.get(url.as_str())
                            .header("authorization", format!("DPoP {token}"))
                            .header("dpop", proof)
                    } else {
                        http.get(url.as_str())
                            .header("authorization", format!("PoP {proof}"))
                    };
                    (rb, true)
                } else if i % 2 == 0 {
                    let (rb, proof) =
                        dpop_request(&http, reqwest::Method::GET, &url, &url, &key, &token, None);
                    if i == 0 {
                        verify_dpop(&proof);
                    }
                    last = Some(("dpop", proof));
                    (rb, false)
                } else {
                    let (rb, shr) = pop_request(&http, &url, &url, &key, &token);
                    if i == 1 {
                        verify_shr(&shr);
                    }
                    last = Some(("pop", shr));
                    (rb, false)
                };
                let resp = rb.send().await.unwrap();
                if replay {
                    assert_eq!(resp.status(), 401, "a replay passed");
                    assert!(
                        challenge(&resp)
                            .iter()
                            .any(|c| c.contains(r#"error_description="replay""#)),
                        "{:?}",
                        challenge(&resp)
                    );
                    replays_refused.fetch_add(1, Ordering::Relaxed);
                } else {
                    assert_eq!(resp.status(), 200, "{:?}", challenge(&resp));
                    let _ = resp.bytes().await.unwrap();
                    passed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let replays = (0..CLIENTS)
        .map(|c| (total / CLIENTS + usize::from(c < total % CLIENTS)) / 10)
        .sum::<usize>();
    assert_eq!(replays_refused.load(Ordering::Relaxed), replays);
    assert_eq!(passed.load(Ordering::Relaxed), total - replays);
}

/// A slow introspection endpoint does not hold a tokio worker: on a
/// one-worker runtime a heartbeat keeps ticking while `validate` waits for
/// oidc-provider's answer (delayed 300 ms by a forwarding proxy).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn slow_introspection_does_not_hold_the_worker() {
    use popkey::verify::introspect::IntrospectionValidator;
    use popkey::verify::token::AccessTokenValidator;
    let dir = tempfile::tempdir().unwrap();
    let (client, key_uri, _node, info) = opaque_authority(dir.path());
    let secret = RS_SECRET;
    let token = oidc_token(info["token_endpoint"].as_str().unwrap(), &key_uri);
    let endpoint = info["introspection_endpoint"].as_str().unwrap().to_owned();
    let slow = slow_forwarder(endpoint, std::time::Duration::from_millis(300));
    let validator = Arc::new(IntrospectionValidator::new(&slow, "popkey-rs", secret).unwrap());

    let ticks = Arc::new(AtomicUsize::new(0));
    let heartbeat = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                ticks.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let before = ticks.load(Ordering::SeqCst);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // On the runtime's only worker, like a verifier inside a request.
    let claims = tokio::spawn({
        let (validator, token) = (validator.clone(), token.clone());
        async move { validator.validate(&token, now) }
    })
    .await
    .unwrap()
    .unwrap();
    let during = ticks.load(Ordering::SeqCst) - before;
    heartbeat.abort();
    assert_eq!(claims["active"], true);
    assert_eq!(claims["cnf"]["jkt"], client.kid());
    assert!(
        during >= 10,
        "the heartbeat ticked {during} times during a 300 ms introspection"
    );
}

/// An HTTP server on a thread and runtime of its own that forwards every
/// POST to `target` after `delay` and returns the answer as it came.
fn slow_forwarder(target: String, delay: std::time::Duration) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let http = reqwest::Client::new();
            let app =
                Router::new().fallback(post(move |headers: axum::http::HeaderMap, body: Bytes| {
                    let (http, target) = (http.clone(), target.clone());
                    async move {
                        tokio::time::sleep(delay).await;
                        let mut rb = http.post(&target).body(body);
                        for name in ["authorization", "content-type", "accept"] {
                            if let Some(v) = headers.get(name) {
                                rb = rb.header(name, v.as_bytes());
                            }
                        }
                        let resp = rb.send().await.unwrap();
                        let status = resp.status().as_u16();
                        let body = resp.bytes().await.unwrap();
                        (
                            axum::http::StatusCode::from_u16(status).unwrap(),
                            [("content-type", "application/json")],
                            body,
                        )
                    }
                }));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}/introspect", rx.recv().unwrap())
}
