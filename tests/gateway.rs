//! `popkey gateway` behind a real nginx (`auth_request`), in front of a
//! tiny axum API that echoes the identity headers it was given. Access
//! tokens come from real authorization servers: panva's oidc-provider
//! (DPoP-bound JWTs, found by issuer discovery) and the testkit's local
//! authority (MSAL-style `pop` tokens). Every proof a test signs and sends
//! by hand is also checked with `ring` (not popkey's verifier).
#![cfg(feature = "gateway")]

use popkey_testkit::common;
use popkey_testkit::gateway::{auth_request_http, get_status, EchoUpstream, GatewayProcess};
use popkey_testkit::nginx::Nginx;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

const AUDIENCE: &str = "urn:popkey:api";

/// oidc-provider, killed on drop.
struct OidcProvider {
    child: Child,
    issuer: String,
    token_endpoint: String,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn oidc_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc"))
}

fn start_oidc(client_jwks: &Path) -> OidcProvider {
    assert!(
        oidc_dir().join("node_modules/oidc-provider").exists(),
        "oidc-provider is not installed: run ci/test (it runs `npm ci` in tests/oidc), or `cd tests/oidc && npm ci`"
    );
    let port = popkey_testkit::nginx::reserve_ports(1)[0];
    let mut child = Command::new("node")
        .arg(oidc_dir().join("server.mjs"))
        .arg(port.to_string())
        .arg(client_jwks)
        .arg("false")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node is needed: apt-get install nodejs npm");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("oidc-provider output");
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let info: Value = serde_json::from_str(&line)
        .unwrap_or_else(|_| panic!("oidc-provider did not start: {line:?}"));
    OidcProvider {
        child,
        issuer: info["issuer"].as_str().expect("issuer").to_owned(),
        token_endpoint: info["token_endpoint"]
            .as_str()
            .expect("token_endpoint")
            .to_owned(),
    }
}

fn popkey(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_popkey"))
        .args(args)
        .env_remove("POPKEY_KEY")
        .output()
        .expect("run popkey")
}

fn ok_stdout(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A file key and what `key create` says about it.
struct Key {
    uri: String,
    kid: String,
    jwk: Value,
}

fn create_key(dir: &Path, name: &str) -> Key {
    let uri = format!("file:{}", dir.join(format!("{name}.pem")).display());
    let desc: Value = serde_json::from_str(&ok_stdout(
        popkey(&["key", "create", "--key", &uri, "--alg", "ES256"]),
        "key create",
    ))
    .expect("json");
    let key = Key {
        uri: desc["uri"].as_str().expect("uri").to_owned(),
        kid: desc["kid"].as_str().expect("kid").to_owned(),
        jwk: desc["jwk"].clone(),
    };
    // Computed here, not taken from popkey.
    assert_eq!(common::thumbprint(&key.jwk), key.kid);
    key
}

/// nginx → gateway → upstream, with tokens from oidc-provider.
struct Stack {
    dir: tempfile::TempDir,
    key: Key,
    oidc: OidcProvider,
    upstream: EchoUpstream,
    gateway: GatewayProcess,
    nginx: Nginx,
}

impl Stack {
    fn start(extra_gateway_args: &[&str]) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = create_key(dir.path(), "client");
        let mut jwk = key.jwk.clone();
        jwk["kid"] = key.kid.clone().into();
        let client_jwks = dir.path().join("client-jwks.json");
        std::fs::write(&client_jwks, json!({"keys": [jwk]}).to_string()).expect("write");
        let oidc = start_oidc(&client_jwks);
        // The gateway finds the issuer's keys by discovery.
        let mut args = vec!["--issuer", &oidc.issuer, "--audience", AUDIENCE];
        args.extend_from_slice(extra_gateway_args);
        let gateway = GatewayProcess::start(&args);
        let upstream = EchoUpstream::start();
        let nginx = Nginx::builder()
            .ports(2)
            .http(&auth_request_http(gateway.port, upstream.port))
            .start();
        Stack {
            dir,
            key,
            oidc,
            upstream,
            gateway,
            nginx,
        }
    }

    fn token_args(&self) -> Vec<String> {
        [
            "--key",
            &self.key.uri,
            "--token-endpoint",
            &self.oidc.token_endpoint,
            "--client-id",
            "popkey-client",
            "--scope",
            "api:read",
            "--scheme",
            "dpop",
            "--assertion-key",
            &self.key.uri,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// `popkey call --scheme dpop` through nginx.
    fn call(&self, path: &str, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["call".to_owned()];
        args.extend(self.token_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("{}{path}", self.nginx.url(0)));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        popkey(&args)
    }

    fn access_token(&self) -> String {
        let mut args = vec!["token".to_owned()];
        args.extend(self.token_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let resp: Value =
            serde_json::from_str(&ok_stdout(popkey(&args), "popkey token")).expect("json");
        assert_eq!(resp["token_type"], "DPoP");
        resp["access_token"].as_str().expect("token").to_owned()
    }

    /// A DPoP proof signed by `popkey dpop`, checked with ring.
    fn proof(&self, method: &str, url: &str, token: &str) -> String {
        let token_file = self.dir.path().join("at");
        std::fs::write(&token_file, token).expect("write token");
        let proof = ok_stdout(
            popkey(&[
                "dpop",
                "--key",
                &self.key.uri,
                "--method",
                method,
                "--url",
                url,
                "--access-token-file",
                token_file.to_str().expect("path"),
            ]),
            "popkey dpop",
        )
        .trim()
        .to_owned();
        let (header, claims) = common::verify_dpop(&proof);
        assert_eq!(common::thumbprint(&header["jwk"]), self.key.kid);
        assert_eq!(claims["htu"], url.split('?').next().expect("url"));
        proof
    }

    fn failure_context(&self) -> String {
        format!(
            "--- gateway log ---\n{}\n--- nginx error log ---\n{}",
            self.gateway.log(),
            self.nginx.error_log()
        )
    }
}

/// One request through nginx with reqwest; (status, headers, body).
fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut req = client.request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            url,
        );
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.expect("body");
        (status, headers, body)
    })
}

fn header_text(h: &reqwest::header::HeaderMap, name: &str) -> String {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn dpop_through_nginx_replay_and_wrong_path_refused() {
    let s = Stack::start(&[]);
    let ctx = || s.failure_context();

    // Health endpoints are the gateway's own, never auth endpoints.
    assert_eq!(
        get_status(s.gateway.port, "/healthz"),
        Some(200),
        "{}",
        ctx()
    );
    let ready = (0..100).any(|_| {
        get_status(s.gateway.port, "/readyz") == Some(200) || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            false
        }
    });
    assert!(ready, "/readyz never became ready\n{}", ctx());

    // popkey call through nginx: 200 from the upstream, which sees who
    // called; a client-sent X-Pop-Subject is not what reaches it.
    let out = s.call(
        "/api/orders?limit=5",
        &[
            "--header",
            "X-Pop-Subject: admin",
            "--header",
            "X-Pop-Jkt: forged",
        ],
    );
    let body: Value = serde_json::from_str(&ok_stdout(out, "popkey call"))
        .unwrap_or_else(|e| panic!("{e}\n{}", ctx()));
    assert_eq!(body["uri"], "/api/orders?limit=5", "{body}");
    assert_eq!(body["x_pop_scheme"], "dpop", "{body}");
    assert_eq!(body["x_pop_jkt"], s.key.kid.as_str(), "{body}");
    assert_eq!(body["x_pop_subject"], "popkey-client", "{body}");
    assert_eq!(s.upstream.count(), 1);

    // A proof sent twice: the second time it is a replay.
    let token = s.access_token();
    let url = format!("{}/api/orders", s.nginx.url(0));
    let proof = s.proof("GET", &url, &token);
    let auth = format!("DPoP {token}");
    let creds = [("Authorization", auth.as_str()), ("DPoP", proof.as_str())];
    let (status, _, body) = send("GET", &url, &creds);
    assert_eq!(status, 200, "{body}\n{}", ctx());
    let (status, h, _) = send("GET", &url, &creds);
    assert_eq!(status, 401, "{}", ctx());
    let challenge = header_text(&h, "www-authenticate");
    assert!(challenge.starts_with("DPoP "), "{challenge}");
    assert!(
        challenge.contains("error=\"invalid_dpop_proof\""),
        "{challenge}"
    );
    assert_eq!(header_text(&h, "cache-control"), "no-store");
    assert_eq!(s.upstream.count(), 2);

    // A proof for another path is refused, and does not reach the API.
    let other = s.proof("GET", &format!("{}/api/other", s.nginx.url(0)), &token);
    let (status, h, _) = send("GET", &url, &[("Authorization", &auth), ("DPoP", &other)]);
    assert_eq!(status, 401);
    assert!(header_text(&h, "www-authenticate").contains("invalid_dpop_proof"));
    // And for another method.
    let post = s.proof("POST", &url, &token);
    let (status, _, _) = send("GET", &url, &[("Authorization", &auth), ("DPoP", &post)]);
    assert_eq!(status, 401);
    // No credentials at all: a challenge that names DPoP.
    let (status, h, _) = send("GET", &url, &[]);
    assert_eq!(status, 401);
    assert!(
        header_text(&h, "www-authenticate").contains("DPoP"),
        "{h:?}"
    );
    // Two DPoP headers: a malformed request, 400 (given back by nginx
    // through X-Pop-Status; auth_request alone would say 500).
    let p1 = s.proof("GET", &url, &token);
    let p2 = s.proof("GET", &url, &token);
    let (status, _, _) = send(
        "GET",
        &url,
        &[("Authorization", &auth), ("DPoP", &p1), ("DPoP", &p2)],
    );
    assert!(status == 400 || status == 401, "two DPoP headers: {status}");
    assert_eq!(
        s.upstream.count(),
        2,
        "refused requests never reach the API"
    );

    // The logs never carry credentials.
    let log = s.gateway.log();
    assert!(!log.contains(&token[..40]), "a token in the gateway log");
    assert!(!log.contains(&proof[..40]), "a proof in the gateway log");
    assert!(log.contains("allowed") && log.contains("refused"), "{log}");
}

#[test]
fn traefik_forward_auth_headers() {
    let s = Stack::start(&[]);
    // Traefik's forwardAuth sends the original request as X-Forwarded-*.
    let token = s.access_token();
    let public = "https://api.example.com/v1/items";
    let proof = s.proof("DELETE", public, &token);
    let gw = format!("http://127.0.0.1:{}/auth", s.gateway.port);
    let auth = format!("DPoP {token}");
    let traefik = [
        ("X-Forwarded-Method", "DELETE"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "api.example.com"),
        ("X-Forwarded-Uri", "/v1/items?x=1"),
        ("Authorization", auth.as_str()),
        ("DPoP", proof.as_str()),
    ];
    let (status, h, body) = send("GET", &gw, &traefik);
    assert_eq!(status, 200, "{body}\n{}", s.failure_context());
    assert_eq!(header_text(&h, "x-pop-scheme"), "dpop");
    assert_eq!(header_text(&h, "x-pop-jkt"), s.key.kid);
    assert_eq!(header_text(&h, "x-pop-subject"), "popkey-client");
    // The same proof for another host is not accepted (and is not a replay
    // check: a fresh proof for the same URL is).
    let proof = s.proof("DELETE", public, &token);
    let mut wrong_host = traefik;
    wrong_host[2] = ("X-Forwarded-Host", "evil.example.com");
    wrong_host[5] = ("DPoP", proof.as_str());
    let (status, h, _) = send("GET", &gw, &wrong_host);
    assert_eq!(status, 401);
    assert_eq!(header_text(&h, "x-pop-status"), "401");

    // Only the proxies may ask: from a peer outside --trusted-proxy, 403.
    let strict = GatewayProcess::start(&[
        "--issuer",
        &s.oidc.issuer,
        "--audience",
        AUDIENCE,
        "--trusted-proxy",
        "10.0.0.0/8",
    ]);
    let proof = s.proof("DELETE", public, &token);
    let mut fresh = traefik;
    fresh[5] = ("DPoP", proof.as_str());
    let (status, _, _) = send(
        "GET",
        &format!("http://127.0.0.1:{}/auth", strict.port),
        &fresh,
    );
    assert_eq!(status, 403);
}

/// The replay store fails closed: with the shared Redis down, 503 (with
/// Retry-After) reaches the client through nginx, not auth_request's 500;
/// once Redis is back, requests pass again.
#[cfg(feature = "redis")]
#[test]
fn replay_store_down_is_503_through_nginx() {
    let mut redis = popkey_testkit::redis::RedisServer::tcp();
    let url = redis.url();
    let s = Stack::start(&["--replay-store", &url, "--replay-timeout-ms", "200"]);
    let token = s.access_token();
    let target = format!("{}/api/fleet", s.nginx.url(0));
    let auth = format!("DPoP {token}");
    let proof = s.proof("GET", &target, &token);
    let (status, _, _) = send(
        "GET",
        &target,
        &[("Authorization", &auth), ("DPoP", &proof)],
    );
    assert_eq!(status, 200, "{}", s.failure_context());
    redis.kill();
    let proof = s.proof("GET", &target, &token);
    let (status, h, _) = send(
        "GET",
        &target,
        &[("Authorization", &auth), ("DPoP", &proof)],
    );
    assert_eq!(status, 503, "{}", s.failure_context());
    assert_eq!(header_text(&h, "retry-after"), "1");
    assert_eq!(header_text(&h, "cache-control"), "no-store");
    redis.start();
    let passed = (0..50).any(|_| {
        let proof = s.proof("GET", &target, &token);
        let (status, _, _) = send(
            "GET",
            &target,
            &[("Authorization", &auth), ("DPoP", &proof)],
        );
        status == 200 || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            false
        }
    });
    assert!(
        passed,
        "no recovery after Redis restarted\n{}",
        s.failure_context()
    );
    assert_eq!(s.upstream.count(), 2);
}

#[test]
fn required_nonce_flows_back_through_nginx() {
    let ring_dir = tempfile::tempdir().expect("tempdir");
    let ring = ring_dir.path().join("nonce-ring");
    std::fs::write(&ring, "k1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").expect("write ring");
    let s = Stack::start(&["--nonce-key-ring", ring.to_str().expect("path")]);
    let out = s.call("/api/nonce-please", &[]);
    let body: Value = serde_json::from_str(&ok_stdout(out, "popkey call"))
        .unwrap_or_else(|e| panic!("{e}\n{}", s.failure_context()));
    assert_eq!(body["x_pop_scheme"], "dpop");
    assert_eq!(s.upstream.count(), 1);
    // nginx saw exactly two requests for it: the 401 asking for a nonce,
    // then the retry that passed.
    // nginx writes an access-log line after it has sent the response, so
    // the last line may land a moment after `popkey call` returned: read
    // until both are there (bounded), then compare.
    let statuses_in = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("/api/nonce-please"))
            .filter_map(|l| Some(l.split("\" ").nth(1)?.split(' ').next()?.to_owned()))
            .collect()
    };
    let mut log = s.nginx.access_log();
    for _ in 0..50 {
        if statuses_in(&log).len() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        log = s.nginx.access_log();
    }
    assert_eq!(statuses_in(&log), ["401", "200"], "{log}");
}

#[test]
fn pop_scheme_through_nginx() {
    use popkey_testkit::authority;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "gw-secret").expect("write");
    let auth = rt.block_on(authority::spawn(
        authority::Config {
            clients: vec![authority::Client {
                id: "gw-client".into(),
                secret: Some("gw-secret".into()),
                jwk: None,
            }],
            ..Default::default()
        },
        "127.0.0.1:0",
    ));
    let jwks = dir.path().join("as-jwks.json");
    std::fs::write(&jwks, auth.jwks.to_string()).expect("write");
    let issuer = format!("{}/{}/v2.0", auth.base, authority::TENANT);
    let gateway = GatewayProcess::start(&[
        "--issuer",
        &issuer,
        "--audience",
        "api://local",
        "--jwks",
        jwks.to_str().expect("path"),
    ]);
    let upstream = EchoUpstream::start();
    let nginx = Nginx::builder()
        .ports(2)
        .http(&auth_request_http(gateway.port, upstream.port))
        .start();
    let key = create_key(dir.path(), "pop");
    let call = |scheme: &str| {
        popkey(&[
            "call",
            "--key",
            &key.uri,
            "--token-endpoint",
            &auth.token_endpoint,
            "--client-id",
            "gw-client",
            "--scope",
            "api://local/.default",
            "--scheme",
            scheme,
            "--client-secret-file",
            secret_file.to_str().expect("path"),
            &format!("{}/api/shr?a=b", nginx.url(0)),
        ])
    };
    let out = call("pop");
    let body: Value = serde_json::from_str(&ok_stdout(out, "popkey call --scheme pop"))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", gateway.log(), nginx.error_log()));
    assert_eq!(body["x_pop_scheme"], "pop", "{body}");
    assert_eq!(body["x_pop_jkt"], key.kid.as_str());
    assert_eq!(body["x_pop_subject"], "gw-client");
    // The authority's DPoP tokens pass through the same gateway too.
    let out = call("dpop");
    let body: Value =
        serde_json::from_str(&ok_stdout(out, "popkey call --scheme dpop")).expect("json");
    assert_eq!(body["x_pop_scheme"], "dpop", "{body}");
    // A bearer token (no binding) is refused.
    let out = call("bearer");
    assert!(!out.status.success());
    assert_eq!(upstream.count(), 2);
    drop(nginx);
    let mut gateway = gateway;
    assert!(gateway.terminate(), "graceful shutdown on SIGTERM");
}

/// The testkit's nginx: its own prefix and logs, a port per placeholder,
/// the error log in the panic when the config is wrong.
#[test]
fn nginx_kit_starts_and_reports_bad_configs() {
    let nginx = Nginx::start(
        2,
        "server { listen 127.0.0.1:@PORT0@; location / { return 200 \"zero\"; } }\n\
         server { listen 127.0.0.1:@PORT1@; location / { return 201 \"one\"; } }",
    );
    assert_eq!(get_status(nginx.port(0), "/"), Some(200));
    assert_eq!(get_status(nginx.port(1), "/x"), Some(201));
    assert!(nginx.access_log().contains("GET /x"));
    let pid = nginx.pid();
    drop(nginx);
    assert!(
        !PathBuf::from(format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true),
        "nginx still running after drop"
    );
    let err = std::panic::catch_unwind(|| {
        Nginx::start(
            1,
            "server { listen 127.0.0.1:@PORT0@; no_such_directive on; }",
        )
    })
    .expect_err("a bad config must not start");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("unknown directive \"no_such_directive\""),
        "{msg}"
    );
}
