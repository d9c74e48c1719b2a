//! Token acquisition and PopClient against the local authority and API.

use popkey_testkit::authority;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use authority::{Client, Config, Running};
use popkey::client::{
    ClientAuth, PopClient, RetryPolicy, Scheme, TokenCache, TokenClient, TokenRequest,
};
use popkey::{ClientError, Error, PopKey};
use serde_json::Value;

const SECRET: &str = "s3cret-value-never-logged";

fn clients(jwt_key: &PopKey) -> Vec<Client> {
    vec![
        Client {
            id: "app-secret".into(),
            secret: Some(SECRET.into()),
            jwk: None,
        },
        Client {
            id: "app-jwt".into(),
            secret: None,
            jwk: Some(jwt_key.public_jwk().clone()),
        },
    ]
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn client(server: &Running, key: &PopKey, scheme: Scheme, auth: ClientAuth, id: &str) -> PopClient {
    let req = TokenRequest::new(
        &server.token_endpoint,
        id,
        &["api://local/.default"],
        scheme,
        auth,
    )
    .unwrap();
    PopClient::with_parts(
        key.clone(),
        req,
        http(),
        Arc::new(TokenCache::new()),
        fast_retry(),
    )
    .unwrap()
}

async fn start(config: impl FnOnce(&mut Config), jwt_key: &PopKey) -> Running {
    let mut c = Config {
        clients: clients(jwt_key),
        ..Config::default()
    };
    config(&mut c);
    authority::spawn(c, "127.0.0.1:0").await
}

async fn body(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200, "unexpected status");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn every_scheme_and_client_authentication() {
    let assertion_key = PopKey::open("mem:?alg=RS256").unwrap();
    let server = start(|_| {}, &assertion_key).await;
    for alg in ["ES256", "RS256", "PS256"] {
        let key = PopKey::open(&format!("mem:?alg={alg}")).unwrap();
        let cases = [
            (Scheme::Pop, ClientAuth::secret(SECRET), "app-secret", "kid"),
            (
                Scheme::Dpop,
                ClientAuth::secret(SECRET),
                "app-secret",
                "jkt",
            ),
            (
                Scheme::Pop,
                ClientAuth::PrivateKeyJwt {
                    key: assertion_key.clone(),
                    certificate_pem: None,
                },
                "app-jwt",
                "kid",
            ),
            (
                Scheme::Dpop,
                ClientAuth::PrivateKeyJwt {
                    key: assertion_key.clone(),
                    certificate_pem: None,
                },
                "app-jwt",
                "jkt",
            ),
        ];
        for (scheme, auth, id, bound) in cases {
            let c = client(&server, &key, scheme, auth, id);
            let token = c.token().await.unwrap();
            assert_eq!(token.token_type, scheme.expected_token_type());
            // The token's cnf names our key.
            let claims: Value = serde_json::from_slice(
                &authority::b64url_decode(token.access_token().split('.').nth(1).unwrap()).unwrap(),
            )
            .unwrap();
            assert_eq!(claims["cnf"][bound], key.kid(), "{alg} {scheme:?}");
            let v = body(c.get(&server.api).await.unwrap()).await;
            assert_eq!(v["ok"], true);
            assert_eq!(v[bound], key.kid());
            assert_eq!(v["sub"], id);
        }
    }
    // Bearer, for comparison: works, and a bound token is refused as bearer.
    let key = PopKey::open("mem:").unwrap();
    let c = client(
        &server,
        &key,
        Scheme::Bearer,
        ClientAuth::secret(SECRET),
        "app-secret",
    );
    assert_eq!(
        body(c.get(&server.api).await.unwrap()).await["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn cache_hits_single_flight_and_expiry() {
    let key = PopKey::open("mem:").unwrap();
    let server = start(|c| c.expires_in = Some(2), &key).await;
    let c = client(
        &server,
        &key,
        Scheme::Dpop,
        ClientAuth::secret(SECRET),
        "app-secret",
    );
    // 1,000 concurrent callers, one token request.
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.token().await.map(|t| t.access_token().to_owned()) })
        })
        .collect();
    let mut tokens = std::collections::HashSet::new();
    for t in tasks {
        tokens.insert(t.await.unwrap().unwrap());
    }
    assert_eq!(tokens.len(), 1);
    assert_eq!(server.stats.token_requests.load(Ordering::SeqCst), 1);
    // Calls reuse it.
    for _ in 0..3 {
        body(c.get(&server.api).await.unwrap()).await;
    }
    assert_eq!(server.stats.token_requests.load(Ordering::SeqCst), 1);
    // Past its refresh point (a tenth of the lifetime before expiry) a new one is fetched.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    body(c.get(&server.api).await.unwrap()).await;
    assert_eq!(server.stats.token_requests.load(Ordering::SeqCst), 2);
    assert_eq!(c.cache().len(), 1);
}

#[tokio::test]
async fn dpop_nonce_at_token_endpoint_and_resource() {
    let key = PopKey::open("mem:?alg=PS256").unwrap();
    let server = start(
        |c| {
            c.token_dpop_nonce = true;
            c.api_dpop_nonce = true;
        },
        &key,
    )
    .await;
    let c = client(
        &server,
        &key,
        Scheme::Dpop,
        ClientAuth::secret(SECRET),
        "app-secret",
    );
    body(c.get(&server.api).await.unwrap()).await;
    assert_eq!(
        server.stats.token_requests.load(Ordering::SeqCst),
        2,
        "one use_dpop_nonce retry"
    );
    assert_eq!(
        server.stats.api_requests.load(Ordering::SeqCst),
        2,
        "one 401 + DPoP-Nonce retry"
    );
    // The nonce is remembered per origin: the next call needs no retry.
    body(c.get(&server.api).await.unwrap()).await;
    assert_eq!(server.stats.api_requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn pop_nonce_challenge_at_resource() {
    let key = PopKey::open("mem:").unwrap();
    let server = start(|c| c.api_pop_nonce = true, &key).await;
    let c = client(
        &server,
        &key,
        Scheme::Pop,
        ClientAuth::secret(SECRET),
        "app-secret",
    );
    body(c.get(&server.api).await.unwrap()).await;
    assert_eq!(server.stats.api_requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_nonce_loop_ends_with_an_error() {
    let key = PopKey::open("mem:").unwrap();
    let server = start(|c| c.nonce_loop = true, &key).await;
    let c = client(
        &server,
        &key,
        Scheme::Dpop,
        ClientAuth::secret(SECRET),
        "app-secret",
    );
    let err = c.get(&server.api).await.unwrap_err();
    assert!(
        matches!(err, Error::Client(ClientError::TokenEndpoint { ref error, .. }) if error == "use_dpop_nonce"),
        "{err}"
    );
    assert_eq!(server.stats.token_requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn retries_on_429_and_5xx_then_gives_up() {
    let key = PopKey::open("mem:").unwrap();
    let server = start(|_| {}, &key).await;
    let c = client(
        &server,
        &key,
        Scheme::Pop,
        ClientAuth::secret(SECRET),
        "app-secret",
    );
    server.stats.token_unavailable.store(2, Ordering::SeqCst);
    server.stats.api_throttled.store(1, Ordering::SeqCst);
    server.stats.api_errors.store(1, Ordering::SeqCst);
    body(c.get(&server.api).await.unwrap()).await;
    assert_eq!(server.stats.token_requests.load(Ordering::SeqCst), 3);
    assert_eq!(server.stats.api_requests.load(Ordering::SeqCst), 3);
    // Bounded: with more failures than retries, the last answer comes back.
    server.stats.api_errors.store(10, Ordering::SeqCst);
    let resp = c.get(&server.api).await.unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(server.stats.api_requests.load(Ordering::SeqCst), 3 + 4);
}

#[tokio::test]
async fn token_endpoint_failures_are_typed_and_secret_free() {
    let key = PopKey::open("mem:").unwrap();
    let server = start(|_| {}, &key).await;
    let tc = TokenClient::new().unwrap();
    let req = |scheme, auth, id: &str| {
        TokenRequest::new(&server.token_endpoint, id, &["s"], scheme, auth).unwrap()
    };

    let err = tc
        .request(
            &req(
                Scheme::Pop,
                ClientAuth::secret("wrong-secret-xyz"),
                "app-secret",
            ),
            &key,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Client(ClientError::TokenEndpoint { status: 401, ref error, .. }) if error == "invalid_client"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("wrong-secret-xyz")
            && !format!("{err:?}").contains("wrong-secret-xyz")
    );
    assert!(
        err.to_string().contains("bad client secret"),
        "the server's description is kept: {err}"
    );

    // An HTML error page after the retries run out.
    server.stats.token_unavailable.store(100, Ordering::SeqCst);
    let err = tc
        .request(
            &req(Scheme::Pop, ClientAuth::secret(SECRET), "app-secret"),
            &key,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Client(ClientError::UnexpectedResponse { status: 503, .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("HTML"));
    server.stats.token_unavailable.store(0, Ordering::SeqCst);

    // Misbehaving servers.
    let odd = start(|c| c.force_token_type = Some("Bearer".into()), &key).await;
    let r = TokenRequest::new(
        &odd.token_endpoint,
        "app-secret",
        &["s"],
        Scheme::Dpop,
        ClientAuth::secret(SECRET),
    )
    .unwrap();
    let err = tc.request(&r, &key).await.unwrap_err();
    assert!(err.to_string().contains("token_type"), "{err}");
    let odd = start(|c| c.omit_expires_in = true, &key).await;
    let r = TokenRequest::new(
        &odd.token_endpoint,
        "app-secret",
        &["s"],
        Scheme::Pop,
        ClientAuth::secret(SECRET),
    )
    .unwrap();
    let err = tc.request(&r, &key).await.unwrap_err();
    assert!(err.to_string().contains("expires_in"), "{err}");

    // Debug of a request and a response never shows secrets or tokens.
    let r = req(Scheme::Pop, ClientAuth::secret(SECRET), "app-secret");
    assert!(!format!("{r:?}").contains(SECRET));
    let t = tc.request(&r, &key).await.unwrap();
    assert!(!format!("{t:?}").contains(t.access_token()));
}

#[tokio::test]
async fn unreachable_and_silent_servers_do_not_hang() {
    let key = PopKey::open("mem:").unwrap();
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let req = TokenRequest::new(
        &format!("http://127.0.0.1:{port}/t/oauth2/v2.0/token"),
        "c",
        &["s"],
        Scheme::Pop,
        ClientAuth::secret("x"),
    )
    .unwrap();
    let c = PopClient::with_parts(
        key.clone(),
        req,
        http(),
        Arc::new(TokenCache::new()),
        fast_retry(),
    )
    .unwrap();
    let err = c.token().await.unwrap_err();
    assert!(
        matches!(err, Error::Client(ClientError::Http { .. })),
        "{err}"
    );
    // A server that accepts and never answers: the timeout ends it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let req = TokenRequest::new(
        &format!("http://{addr}/t/oauth2/v2.0/token"),
        "c",
        &["s"],
        Scheme::Pop,
        ClientAuth::secret("x"),
    )
    .unwrap();
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let policy = RetryPolicy {
        max_retries: 1,
        ..fast_retry()
    };
    let c = PopClient::with_parts(key, req, quick, Arc::new(TokenCache::new()), policy).unwrap();
    let started = std::time::Instant::now();
    let err = c.token().await.unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn refresh_in_is_honoured() {
    let key = PopKey::open("mem:").unwrap();
    let server = start(|c| c.refresh_in = Some(1), &key).await;
    let c = client(
        &server,
        &key,
        Scheme::Pop,
        ClientAuth::secret(SECRET),
        "app-secret",
    );
    c.token().await.unwrap();
    c.token().await.unwrap();
    assert_eq!(server.stats.token_requests.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.token().await.unwrap();
    assert_eq!(
        server.stats.token_requests.load(Ordering::SeqCst),
        2,
        "refreshed at refresh_in, long before expiry"
    );
}

#[tokio::test]
async fn tls_failure_is_a_typed_error() {
    // An https URL pointed at a plain-HTTP server: the handshake fails.
    let key = PopKey::open("mem:").unwrap();
    let server = start(|_| {}, &key).await;
    let https = server.token_endpoint.replace("http://", "https://");
    let req = TokenRequest::new(
        &https,
        "app-secret",
        &["s"],
        Scheme::Pop,
        ClientAuth::secret(SECRET),
    )
    .unwrap();
    let c = PopClient::with_parts(
        key,
        req,
        http(),
        Arc::new(TokenCache::new()),
        RetryPolicy {
            max_retries: 0,
            ..fast_retry()
        },
    )
    .unwrap();
    let err = c.token().await.unwrap_err();
    assert!(
        matches!(err, Error::Client(ClientError::Http { .. })),
        "{err}"
    );
    assert!(!err.to_string().contains(SECRET));
}

#[tokio::test]
async fn assertion_carries_the_certificate_thumbprint() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("k.pem");
    let cert_path = dir.path().join("c.pem");
    let key = PopKey::create(
        &format!("file:{}", key_path.display()),
        &popkey::CreateOptions::new(),
    )
    .unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-x509",
            "-days",
            "1",
            "-subj",
            "/CN=popkey-test",
            "-key",
        ])
        .arg(&key_path)
        .arg("-out")
        .arg(&cert_path)
        .output()
        .expect("openssl is needed: apt-get install openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read_to_string(&cert_path).unwrap();
    let jwt = popkey::assertion::ClientAssertion::new("cid", "https://as.example/token")
        .unwrap()
        .certificate_pem(&pem, true)
        .unwrap()
        .sign(&key)
        .unwrap();
    let mut parts = jwt.split('.');
    let header: Value =
        serde_json::from_slice(&authority::b64url_decode(parts.next().unwrap()).unwrap()).unwrap();
    let claims: Value =
        serde_json::from_slice(&authority::b64url_decode(parts.next().unwrap()).unwrap()).unwrap();
    let der_out = std::process::Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert_path)
        .output()
        .unwrap();
    assert_eq!(
        header["x5t#S256"],
        authority::b64url(sha2::Sha256::digest(&der_out.stdout))
    );
    assert_eq!(
        header["x5c"][0],
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der_out.stdout)
    );
    assert_eq!(
        (
            claims["iss"].as_str(),
            claims["sub"].as_str(),
            claims["aud"].as_str()
        ),
        (Some("cid"), Some("cid"), Some("https://as.example/token"))
    );
    assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());
    assert!(popkey::assertion::ClientAssertion::new("cid", "aud")
        .unwrap()
        .certificate_pem("junk", false)
        .is_err());
}

#[tokio::test]
async fn cli_token_and_call() {
    let key_dir = tempfile::tempdir().unwrap();
    let uri = format!("file:{}", key_dir.path().join("k.pem").display());
    let key = PopKey::create(&uri, &popkey::CreateOptions::new()).unwrap();
    let server = start(|_| {}, &key).await;
    let secret = key_dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_popkey"))
                .args(&args)
                .env_remove("POPKEY_CLIENT_SECRET")
                .output()
                .unwrap()
        })
    };
    let common = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "--key",
            &uri,
            "--token-endpoint",
            &server.token_endpoint,
            "--client-id",
            "app-secret",
            "--scope",
            "api://local/.default",
            "--client-secret-file",
            secret.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let mut args = vec!["token".to_string()];
    args.extend(common(&["--scheme", "dpop"]));
    let out = run(args).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["token_type"], "DPoP");

    let mut args = vec!["call".to_string()];
    args.extend(common(&["--scheme", "pop", &server.api]));
    let out = run(args).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kid"], key.kid());

    // An API error: the body is printed and the exit is non-zero.
    server.stats.api_errors.store(100, Ordering::SeqCst);
    let mut args = vec!["call".to_string()];
    args.extend(common(&["--scheme", "pop", &server.api]));
    let out = run(args).await.unwrap();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "oops");
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 500"));
    // No client authentication at all.
    let out = run(vec![
        "token".into(),
        "--key".into(),
        uri.clone(),
        "--token-endpoint".into(),
        server.token_endpoint.clone(),
        "--client-id".into(),
        "x".into(),
        "--scope".into(),
        "s".into(),
    ])
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--client-secret-file"));
}

#[tokio::test]
async fn every_attempt_carries_a_fresh_proof_and_posts_are_not_repeated() {
    let key = PopKey::open("mem:").unwrap();
    let server = start(|_| {}, &key).await;
    for scheme in [Scheme::Dpop, Scheme::Pop] {
        let c = client(
            &server,
            &key,
            scheme,
            ClientAuth::secret(SECRET),
            "app-secret",
        );
        c.token().await.unwrap();
        server.stats.api_credentials.lock().unwrap().clear();
        server.stats.api_throttled.store(1, Ordering::SeqCst);
        server.stats.api_errors.store(1, Ordering::SeqCst);
        body(c.get(&server.api).await.unwrap()).await;
        let seen = server.stats.api_credentials.lock().unwrap().clone();
        let proofs: Vec<&String> = seen.iter().filter(|v| !v.starts_with("DPoP ")).collect();
        assert_eq!(proofs.len(), 3, "{scheme:?}: three attempts");
        let unique: std::collections::HashSet<_> = proofs.iter().collect();
        assert_eq!(unique.len(), 3, "{scheme:?}: never the same proof twice");
    }
    // A POST answered 500 is not sent again (it may have been applied); 429 is.
    let c = client(
        &server,
        &key,
        Scheme::Dpop,
        ClientAuth::secret(SECRET),
        "app-secret",
    );
    let before = server.stats.api_requests.load(Ordering::SeqCst);
    server.stats.api_errors.store(1, Ordering::SeqCst);
    let resp = c
        .send(
            reqwest::Method::POST,
            &server.api,
            &[],
            Some(b"{}".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(server.stats.api_requests.load(Ordering::SeqCst), before + 1);
    server.stats.api_throttled.store(1, Ordering::SeqCst);
    let resp = c
        .send(
            reqwest::Method::POST,
            &server.api,
            &[],
            Some(b"{}".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(server.stats.api_requests.load(Ordering::SeqCst), before + 3);
}

#[tokio::test]
async fn absurd_expires_in_does_not_panic() {
    let key = PopKey::open("mem:").unwrap();
    let server = start(|c| c.expires_in = Some(10_000_000_000_000_000_000), &key).await;
    let c = client(
        &server,
        &key,
        Scheme::Pop,
        ClientAuth::secret(SECRET),
        "app-secret",
    );
    c.token().await.unwrap();
    c.token().await.unwrap();
    assert_eq!(server.stats.token_requests.load(Ordering::SeqCst), 1);
}

#[test]
fn plain_http_token_endpoints_only_on_loopback() {
    let r = |u: &str| TokenRequest::new(u, "c", &["s"], Scheme::Pop, ClientAuth::secret("x"));
    assert!(matches!(
        r("http://login.example.com/t/oauth2/v2.0/token"),
        Err(Error::Config(_))
    ));
    for ok in [
        "http://127.0.0.1:8080/t",
        "http://localhost/t",
        "http://[::1]/t",
        "https://login.example.com/t",
    ] {
        r(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn pop_client_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let key = PopKey::open("mem:").unwrap();
    let req = TokenRequest::new(
        "http://127.0.0.1:1/t",
        "c",
        &["s"],
        Scheme::Dpop,
        ClientAuth::secret("x"),
    )
    .unwrap();
    let c = PopClient::new(key, req).unwrap();
    is_send(&c.get("http://127.0.0.1:1/x"));
    is_send(&c.token());
    let r = reqwest::Client::new()
        .get("http://127.0.0.1:1/x")
        .build()
        .unwrap();
    is_send(&c.authorize(r));
}

/// Polls `done` until it holds; panics (naming `what`) after 60 s so a
/// broken client fails the test instead of hanging it.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    for _ in 0..60_000 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("gave up waiting for {what}");
}

/// The key the API saw: `kid` for PoP (the SHR's cnf), `jkt` for DPoP.
fn bound_key(v: &Value) -> String {
    v.get("kid")
        .or_else(|| v.get("jkt"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotating_slot_is_followed_under_concurrent_calls() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::Mutex;

    const ROTATIONS: usize = 5;
    const CALLS_PER_KEY: usize = 8;
    for scheme in [Scheme::Dpop, Scheme::Pop] {
        let server = start(|_| {}, &PopKey::open("mem:").unwrap()).await;
        let slot = Arc::new(popkey::KeySlot::open("mem:").unwrap());
        let req = TokenRequest::new(
            &server.token_endpoint,
            "app-secret",
            &["api://local/.default"],
            scheme,
            ClientAuth::secret(SECRET),
        )
        .unwrap();
        let c = PopClient::with_parts(
            slot.clone(),
            req,
            http(),
            Arc::new(TokenCache::new()),
            fast_retry(),
        )
        .unwrap();
        // Accepted calls per key, as the API saw them.
        let accepted = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let done = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..6)
            .map(|_| {
                let (c, accepted, done, calls, api) = (
                    c.clone(),
                    accepted.clone(),
                    done.clone(),
                    calls.clone(),
                    server.api.clone(),
                );
                tokio::spawn(async move {
                    while !done.load(Ordering::SeqCst) {
                        let resp = c.get(&api).await.unwrap();
                        let status = resp.status();
                        let v: Value = resp.json().await.unwrap();
                        // Every call is accepted: token cnf and proof key match.
                        assert_eq!(status, 200, "{scheme:?}: {v}");
                        assert_eq!(v["ok"], true);
                        calls.fetch_add(1, Ordering::SeqCst);
                        *accepted.lock().unwrap().entry(bound_key(&v)).or_default() += 1;
                    }
                })
            })
            .collect();
        // Another thread rotates while the calls run: each key is rotated
        // away once the API has accepted a few calls signed with it.
        let rotator = {
            let (slot, accepted, done) = (slot.clone(), accepted.clone(), done.clone());
            std::thread::spawn(move || {
                let mut kids = Vec::new();
                for round in 0..=ROTATIONS {
                    let kid = slot.current().kid().to_owned();
                    wait_for("calls with the current key", || {
                        accepted.lock().unwrap().get(&kid).copied().unwrap_or(0) >= CALLS_PER_KEY
                    });
                    kids.push(kid);
                    if round < ROTATIONS {
                        slot.rotate_now().unwrap();
                    }
                }
                done.store(true, Ordering::SeqCst);
                kids
            })
        };
        for w in workers {
            w.await.unwrap();
        }
        let kids = tokio::task::spawn_blocking(move || rotator.join().unwrap())
            .await
            .unwrap();
        // Every key was used, and each got exactly one token.
        let accepted = accepted.lock().unwrap().clone();
        assert_eq!(kids.len(), ROTATIONS + 1);
        assert_eq!(
            kids.iter().collect::<std::collections::HashSet<_>>().len(),
            ROTATIONS + 1
        );
        for kid in &kids {
            assert!(accepted[kid] >= CALLS_PER_KEY, "{scheme:?}: {kid} unused");
        }
        assert_eq!(
            accepted.values().sum::<usize>(),
            calls.load(Ordering::SeqCst)
        );
        assert!(accepted.keys().all(|k| kids.contains(k)));
        assert_eq!(
            server.stats.token_requests.load(Ordering::SeqCst),
            ROTATIONS + 1,
            "{scheme:?}: one token per key"
        );
        assert_eq!(c.cache().len(), ROTATIONS + 1);
    }
}

#[tokio::test]
async fn the_process_wide_key_is_followed() {
    use popkey::client::KeySource;
    // The only test in this binary that touches the process-wide key.
    assert!(
        KeySource::process_default().is_err(),
        "nothing installed yet"
    );
    let server = start(|_| {}, &PopKey::open("mem:").unwrap()).await;
    let first = PopKey::open("mem:").unwrap();
    assert!(popkey::rotate_default(first.clone()).is_none());
    let req = TokenRequest::new(
        &server.token_endpoint,
        "app-secret",
        &["api://local/.default"],
        Scheme::Dpop,
        ClientAuth::secret(SECRET),
    )
    .unwrap();
    let c = PopClient::new(KeySource::process_default().unwrap(), req).unwrap();
    for _ in 0..2 {
        assert_eq!(
            bound_key(&body(c.get(&server.api).await.unwrap()).await),
            first.kid()
        );
    }
    let second = PopKey::open("mem:?alg=PS256").unwrap();
    assert!(popkey::rotate_default(second.clone())
        .unwrap()
        .same_handle(&first));
    assert_eq!(c.key().kid(), second.kid());
    for _ in 0..2 {
        assert_eq!(
            bound_key(&body(c.get(&server.api).await.unwrap()).await),
            second.kid()
        );
    }
    assert_eq!(server.stats.token_requests.load(Ordering::SeqCst), 2);

    // TokenClient: one snapshot, returned with the token bound to it.
    let tokens = TokenClient::new().unwrap();
    let req = TokenRequest::new(
        &server.token_endpoint,
        "app-secret",
        &["api://local/.default"],
        Scheme::Pop,
        ClientAuth::secret(SECRET),
    )
    .unwrap();
    let (key, token) = tokens
        .request_current(&req, &KeySource::process_default().unwrap())
        .await
        .unwrap();
    assert_eq!(key.kid(), second.kid());
    let claims: Value = serde_json::from_slice(
        &authority::b64url_decode(token.access_token().split('.').nth(1).unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["cnf"]["kid"], second.kid());
}

#[tokio::test]
async fn authorize_signs_requests_built_with_the_callers_reqwest_client() {
    for (scheme, nonce_required) in [
        (Scheme::Dpop, false),
        (Scheme::Pop, false),
        (Scheme::Dpop, true),
        (Scheme::Pop, true),
    ] {
        let key = PopKey::open("mem:").unwrap();
        let server = start(
            |c| {
                c.api_dpop_nonce = nonce_required;
                c.api_pop_nonce = nonce_required;
            },
            &key,
        )
        .await;
        let c = client(
            &server,
            &key,
            scheme,
            ClientAuth::secret(SECRET),
            "app-secret",
        );
        // The caller's own client, builder, query and JSON body.
        let http = reqwest::Client::new();
        let build = || {
            http.post(&server.api)
                .query(&[("page", "2"), ("filter", "a b&c")])
                .header("Authorization", "Bearer stale")
                .json(&serde_json::json!({"item": "widget"}))
                .build()
                .unwrap()
        };
        let request = c.authorize(build()).await.unwrap();
        assert!(request.url().query().unwrap().contains("page=2"));
        assert_eq!(request.headers().get_all("authorization").iter().count(), 1);
        assert_eq!(
            request.headers().contains_key("dpop"),
            scheme == Scheme::Dpop
        );
        let mut resp = http.execute(request).await.unwrap();
        if nonce_required {
            assert_eq!(resp.status(), 401, "{scheme:?}: no nonce yet");
            assert!(c.learn_nonce(&resp), "{scheme:?}: a nonce challenge");
            resp = http
                .execute(c.authorize(build()).await.unwrap())
                .await
                .unwrap();
        } else {
            assert!(!c.learn_nonce(&resp));
        }
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "{scheme:?} nonce={nonce_required}: {v}");
        assert_eq!(v["ok"], true, "{scheme:?}");
        assert_eq!(bound_key(&v), key.kid());
        if nonce_required {
            // (The same SHR again within the second would carry the same
            // server nonce and timestamp: the API's replay cache refuses it.)
            continue;
        }
        // The same request again gets a fresh proof: a proof is never reused.
        let resp = http
            .execute(c.authorize(build()).await.unwrap())
            .await
            .unwrap();
        assert!(!c.learn_nonce(&resp));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "{scheme:?} nonce={nonce_required}, again: {v}");
        assert_eq!(bound_key(&v), key.kid());
        assert_eq!(server.stats.token_requests.load(Ordering::SeqCst), 1);
        assert_eq!(server.stats.api_requests.load(Ordering::SeqCst), 2);
    }
}
