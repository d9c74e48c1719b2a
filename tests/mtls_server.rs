//! RFC 8705 on the API side of `popkey::server`, with real components:
//!
//! * panva's oidc-provider (tests/oidc/mtls-server.mjs, HTTPS with a test
//!   CA made by openssl) issues certificate-bound tokens to popkey file
//!   keys whose self-signed certificates popkey made;
//! * nginx (`ssl_verify_client optional_no_ca`) → `auth_request` →
//!   `popkey gateway --mtls` (which finds the issuer's keys by discovery
//!   over HTTPS, trusting the test CA through `--ca-file`) → an upstream:
//!   `popkey call --scheme mtls` passes; the same token with another popkey
//!   key's certificate, with none, or with a forged `Client-Cert` header is
//!   refused with `invalid_token`;
//! * a rustls server (tokio-rustls + hyper) puts the handshake's client
//!   certificate into the request extensions for `PopAuthLayer`: the same
//!   checks, without a proxy;
//! * `popkey verify --introspect` reaches an HTTPS endpoint behind the test
//!   CA only with `--ca-file`.
#![cfg(all(feature = "gateway", feature = "mtls"))]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use popkey_testkit::gateway::{EchoUpstream, GatewayProcess};
use popkey_testkit::nginx::Nginx;
use serde_json::{json, Value};

const AUDIENCE: &str = "urn:popkey:api";

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

fn openssl(args: &[&str]) -> String {
    String::from_utf8(run(Command::new("openssl").args(args), "openssl").stdout).unwrap()
}

fn popkey(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_popkey"))
        .args(args)
        .env_remove("POPKEY_KEY")
        .output()
        .expect("run popkey")
}

fn popkey_ok(args: &[&str]) -> String {
    let out = popkey(args);
    assert!(
        out.status.success(),
        "popkey {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// openssl's SHA-256 fingerprint of a PEM certificate, base64url.
fn openssl_thumbprint(cert: &Path) -> String {
    let out = openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-fingerprint",
        "-sha256",
    ]);
    let hex = out.trim().rsplit('=').next().unwrap().replace(':', "");
    let raw: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    URL_SAFE_NO_PAD.encode(raw)
}

fn der_of(cert: &Path) -> Vec<u8> {
    run(
        Command::new("openssl").args(["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"]),
        "openssl x509 -outform DER",
    )
    .stdout
}

/// The test CA and a server certificate for 127.0.0.1, made by openssl.
struct Pki {
    ca: PathBuf,
    server: PathBuf,
    server_key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    popkey_testkit::pki::ca_and_server(dir, "popkey test CA");
    Pki {
        ca: dir.join("ca.pem"),
        server: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    }
}

/// A popkey file key with a self-signed certificate popkey made for it.
struct Client {
    name: &'static str,
    uri: String,
    key_file: PathBuf,
    cert: PathBuf,
    thumbprint: String,
    metadata: Value,
}

fn client(dir: &Path, name: &'static str, alg: &str) -> Client {
    let key_file = dir.join(format!("{name}.key.pem"));
    let uri = format!("file:{}", key_file.display());
    let desc: Value =
        serde_json::from_str(&popkey_ok(&["key", "create", "--key", &uri, "--alg", alg])).unwrap();
    let pem = popkey_ok(&[
        "cert",
        "self-signed",
        "--key",
        &uri,
        "--subject",
        &format!("CN=popkey-{name}"),
        "--days",
        "1",
    ]);
    let cert = dir.join(format!("{name}.pem"));
    std::fs::write(&cert, format!("{}\n", pem.trim_end())).unwrap();
    let c = cert.to_str().unwrap();
    let verified = openssl(&["verify", "-CAfile", c, "-check_ss_sig", c]);
    assert!(verified.contains("OK"), "{verified}");
    let mut registered = desc["jwk"].clone();
    registered["x5c"] = json!([STANDARD.encode(der_of(&cert))]);
    Client {
        name,
        uri,
        key_file,
        thumbprint: openssl_thumbprint(&cert),
        cert,
        metadata: json!({
            "client_id": name,
            "token_endpoint_auth_method": "self_signed_tls_client_auth",
            "jwks": {"keys": [registered]},
        }),
    }
}

/// oidc-provider over HTTPS with mTLS features; returns what it printed.
fn start_authority(dir: &Path, pki: &Pki, clients: &[&Client]) -> (Node, Value) {
    let oidc = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
    assert!(
        oidc.join("node_modules/oidc-provider").exists(),
        "oidc-provider is not installed: run ci/test (it runs `npm ci` in tests/oidc), or `cd tests/oidc && npm ci`"
    );
    let config = dir.join("authority.json");
    let config_json = json!({
        "port": 0,
        "server_cert": pki.server,
        "server_key": pki.server_key,
        "client_ca": pki.ca,
        "clients": clients.iter().map(|c| c.metadata.clone()).collect::<Vec<_>>(),
    });
    std::fs::write(&config, config_json.to_string()).unwrap();
    let log = std::fs::File::create(dir.join("authority.log")).unwrap();
    let mut child = Command::new("node")
        .arg(oidc.join("mtls-server.mjs"))
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("node is needed: apt-get install nodejs npm");
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let info: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
        panic!(
            "oidc-provider did not start: {line:?}\n{}",
            std::fs::read_to_string(dir.join("authority.log")).unwrap_or_default()
        )
    });
    (Node(child), info)
}

/// `popkey call|token --scheme mtls` arguments for `c`.
fn mtls_args<'a>(c: &'a Client, endpoint: &'a str, ca: &'a str) -> Vec<&'a str> {
    vec![
        "--scheme",
        "mtls",
        "--key",
        c.uri.as_str(),
        "--cert",
        c.cert.to_str().unwrap(),
        "--ca-file",
        ca,
        "--token-endpoint",
        endpoint,
        "--client-id",
        c.name,
        "--tls-client-auth",
        "--scope",
        "api:read",
    ]
}

/// A certificate-bound token for `c` (checked: `cnf.x5t#S256` is openssl's
/// fingerprint of the certificate).
fn token_for(c: &Client, endpoint: &str, ca: &str) -> String {
    let mut args = vec!["token"];
    args.extend(mtls_args(c, endpoint, ca));
    let resp: Value = serde_json::from_str(&popkey_ok(&args)).unwrap();
    let at = resp["access_token"].as_str().unwrap().to_owned();
    let payload = at.split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["cnf"]["x5t#S256"], c.thumbprint, "{claims}");
    at
}

/// Node's https client (OpenSSL, not popkey) with `Authorization: Bearer
/// token`, an optional client certificate and extra headers; returns
/// (status, WWW-Authenticate, body).
fn https_get(
    url: &str,
    ca: &Path,
    token: &str,
    identity: Option<(&Path, &Path)>,
    extra: &[String],
) -> (u16, String, String) {
    const SCRIPT: &str = r#"
const [url, ca, token, cert, key, extra] = process.argv.slice(1);
const fs = require('fs');
const headers = { authorization: `Bearer ${token}` };
for (const h of JSON.parse(extra)) { const i = h.indexOf(':'); headers[h.slice(0, i).trim()] = h.slice(i + 1).trim(); }
const opts = { ca: fs.readFileSync(ca), headers, agent: false };
if (cert) { opts.cert = fs.readFileSync(cert); opts.key = fs.readFileSync(key); }
require('https').get(url, opts, (res) => {
  let body = '';
  res.on('data', (c) => { body += c; });
  res.on('end', () => console.log(JSON.stringify({ status: res.statusCode, challenge: res.headers['www-authenticate'] ?? '', body })));
}).on('error', (e) => { console.error(e.message); process.exit(1); });
"#;
    let (cert, key) = identity
        .map(|(c, k)| (c.to_str().unwrap(), k.to_str().unwrap()))
        .unwrap_or(("", ""));
    let out = run(
        Command::new("node").args([
            "-e",
            SCRIPT,
            url,
            ca.to_str().unwrap(),
            token,
            cert,
            key,
            &serde_json::to_string(extra).unwrap(),
        ]),
        "node https client",
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["status"].as_u64().unwrap() as u16,
        v["challenge"].as_str().unwrap().to_owned(),
        v["body"].as_str().unwrap().to_owned(),
    )
}

/// The key file as PKCS#8 PEM (what Node's TLS and rustls load).
fn key_pem(c: &Client) -> PathBuf {
    let out = c.key_file.with_extension("pk8.pem");
    openssl(&[
        "pkey",
        "-in",
        c.key_file.to_str().unwrap(),
        "-out",
        out.to_str().unwrap(),
    ]);
    out
}

fn assert_invalid_token(status: u16, challenge: &str, what: &str) {
    assert_eq!(status, 401, "{what}");
    assert!(
        challenge.contains("Bearer error=\"invalid_token\""),
        "{what}: {challenge}"
    );
}

#[test]
fn gateway_behind_nginx_checks_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = make_pki(d);
    let ca = pki.ca.to_str().unwrap().to_owned();
    let alice = client(d, "alice", "ES256");
    let bob = client(d, "bob", "ES256");
    let (_authority, info) = start_authority(d, &pki, &[&alice, &bob]);
    let issuer = info["issuer"].as_str().unwrap();
    let endpoint = info["token_endpoint"].as_str().unwrap().to_owned();

    // Discovery and the JWKS over HTTPS from a private CA: --ca-file.
    let gateway = GatewayProcess::start(&[
        "--issuer",
        issuer,
        "--audience",
        AUDIENCE,
        "--mtls",
        "--ca-file",
        &ca,
    ]);
    let upstream = EchoUpstream::start();
    let nginx = Nginx::builder()
        .ports(1)
        .file("server.pem", std::fs::read(&pki.server).unwrap())
        .file("server.key", std::fs::read(&pki.server_key).unwrap())
        .http(&format!(
            r#"
  server {{
    listen 127.0.0.1:@PORT0@ ssl;
    ssl_certificate @DIR@/server.pem;
    ssl_certificate_key @DIR@/server.key;
    ssl_verify_client optional_no_ca;

    location / {{
      auth_request /_popkey_auth;
      auth_request_set $pop_scheme $upstream_http_x_pop_scheme;
      auth_request_set $pop_x5t $upstream_http_x_pop_x5t_s256;
      auth_request_set $pop_subject $upstream_http_x_pop_subject;
      proxy_set_header X-Pop-Scheme $pop_scheme;
      proxy_set_header X-Pop-X5t-S256 $pop_x5t;
      proxy_set_header X-Pop-Subject $pop_subject;
      proxy_set_header Client-Cert "";
      proxy_pass http://127.0.0.1:{upstream};
    }}

    location = /_popkey_auth {{
      internal;
      proxy_pass http://127.0.0.1:{gateway};
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      # Always set (empty without a certificate): a client's own header
      # never reaches the gateway.
      proxy_set_header Client-Cert $ssl_client_escaped_cert;
    }}
  }}
"#,
            upstream = upstream.port,
            gateway = gateway.port,
        ))
        .start();
    let url = format!("https://127.0.0.1:{}/orders", nginx.port(0));

    // popkey's own client: token over mTLS, call over mTLS.
    let mut args = vec!["call"];
    args.extend(mtls_args(&alice, &endpoint, &ca));
    args.push(&url);
    let out = popkey(&args);
    assert!(
        out.status.success(),
        "popkey call --scheme mtls through nginx: {}\ngateway log:\n{}\nnginx:\n{}",
        String::from_utf8_lossy(&out.stderr),
        gateway.log(),
        nginx.error_log()
    );
    let echoed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(echoed["x_pop_scheme"], "mtls", "{echoed}");
    assert!(
        gateway.log().contains(&alice.thumbprint),
        "the gateway logs the certificate thumbprint:\n{}",
        gateway.log()
    );

    // The same kind of token through Node's client (OpenSSL TLS).
    let token = token_for(&alice, &endpoint, &ca);
    let (alice_key, bob_key) = (key_pem(&alice), key_pem(&bob));
    let (status, _, body) = https_get(&url, &pki.ca, &token, Some((&alice.cert, &alice_key)), &[]);
    assert_eq!(status, 200, "{body}\n{}", gateway.log());

    // Another popkey key's certificate: invalid_token.
    let (status, challenge, _) = https_get(&url, &pki.ca, &token, Some((&bob.cert, &bob_key)), &[]);
    assert_invalid_token(status, &challenge, "another key's certificate");
    // No certificate at all.
    let (status, challenge, _) = https_get(&url, &pki.ca, &token, None, &[]);
    assert_invalid_token(status, &challenge, "no certificate");
    // A client cannot forward a certificate itself: nginx overwrites the header.
    let forged = format!(":{}:", STANDARD.encode(der_of(&alice.cert)));
    let (status, challenge, _) = https_get(
        &url,
        &pki.ca,
        &token,
        Some((&bob.cert, &bob_key)),
        &[format!("Client-Cert: {forged}")],
    );
    assert_invalid_token(status, &challenge, "a forged Client-Cert header");
    let log = gateway.log();
    assert!(
        log.contains("key_not_bound") && log.contains("client_certificate_missing"),
        "{log}"
    );
    drop(nginx);

    // `popkey verify --introspect` over HTTPS from the test CA: without
    // --ca-file the TLS handshake fails; with it the authority answers
    // (this one has no introspection endpoint: 404).
    let token_file = d.join("at");
    std::fs::write(&token_file, &token).unwrap();
    let proof_url = "https://api.example.com/orders";
    let proof = popkey_ok(&[
        "dpop",
        "--key",
        &alice.uri,
        "--method",
        "GET",
        "--url",
        proof_url,
        "--access-token-file",
        token_file.to_str().unwrap(),
    ]);
    let secret = d.join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let introspection = format!("{issuer}/token/introspection");
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            "dpop",
            "--proof",
            proof.trim(),
            "--method",
            "GET",
            "--url",
            proof_url,
            "--access-token",
            &token,
            "--introspect",
            &introspection,
            "--introspect-client-id",
            "alice",
            "--introspect-secret-file",
            secret.to_str().unwrap(),
        ];
        args.extend(extra);
        let out = popkey(&args);
        assert!(!out.status.success());
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let untrusted = verify(&[]);
    let trusted = verify(&["--ca-file", &ca]);
    assert!(
        untrusted.contains("introspection failed") && !untrusted.contains("answered"),
        "the private CA is not trusted without --ca-file: {untrusted}"
    );
    assert!(
        trusted.contains("the endpoint answered 404"),
        "with --ca-file the HTTPS request reaches the authority: {trusted}"
    );
}

/// Accepts any client certificate whose handshake signature verifies (the
/// token's binding authenticates it, RFC 8705 §2.2 self-signed).
#[derive(Debug)]
struct AnyClientCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::server::danger::ClientCertVerifier for AnyClientCertificate {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn verify_client_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An axum app behind `PopAuthLayer` served over rustls: the handshake's
/// client certificate goes into the request extensions. Returns the port.
async fn rustls_api(pki: &Pki, issuer: &str) -> u16 {
    use popkey::client::TlsConfig;
    use popkey::server::{
        Authenticated, ClientCertificate, Issuer, MtlsBinding, PeerAddr, PopAuthLayer,
        ResourceServer,
    };
    use tower::ServiceExt;

    let tls = TlsConfig::new().add_ca_pem_file(&pki.ca).unwrap();
    let issuer = Arc::new(
        Issuer::builder(issuer)
            .audience(AUDIENCE)
            .tls(&tls)
            .unwrap()
            .build()
            .unwrap(),
    );
    let server = ResourceServer::builder()
        .mtls(MtlsBinding::new(issuer.clone()))
        .issuer(issuer)
        .build()
        .unwrap();
    let app = axum::Router::new()
        .route(
            "/orders",
            axum::routing::get(
                |axum::Extension(who): axum::Extension<Authenticated>| async move {
                    axum::Json(json!({
                        "scheme": who.scheme.as_str(),
                        "x5t#S256": who.certificate_thumbprint,
                        "client_id": who.claims.get("client_id"),
                    }))
                },
            ),
        )
        .layer(PopAuthLayer::new(Arc::new(server)));

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let read = |p: &Path| std::fs::read(p).unwrap();
    let chain = vec![rustls::pki_types::CertificateDer::from(
        STANDARD
            .decode(
                String::from_utf8(read(&pki.server))
                    .unwrap()
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap(),
    )];
    // PKCS#8 PEM from `openssl req -nodes`.
    let key_pem = String::from_utf8(read(&pki.server_key)).unwrap();
    assert!(
        key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{key_pem}"
    );
    let key_der = STANDARD
        .decode(
            key_pem
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into());
    let config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(Arc::new(AnyClientCertificate(provider)))
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // The leaf certificate of this connection, for every request on it.
                let certificate = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| ClientCertificate::from_der(leaf).ok());
                let service = hyper::service::service_fn(
                    move |mut request: hyper::Request<hyper::body::Incoming>| {
                        if let Some(c) = &certificate {
                            request.extensions_mut().insert(c.clone());
                        }
                        request.extensions_mut().insert(PeerAddr(peer.ip()));
                        app.clone().oneshot(request.map(axum::body::Body::new))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

#[test]
fn tower_layer_takes_the_certificate_from_the_rustls_connection() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = make_pki(d);
    let ca = pki.ca.to_str().unwrap().to_owned();
    let alice = client(d, "alice", "ES256");
    let bob = client(d, "bob", "RS256");
    let (_authority, info) = start_authority(d, &pki, &[&alice, &bob]);
    let issuer = info["issuer"].as_str().unwrap().to_owned();
    let endpoint = info["token_endpoint"].as_str().unwrap().to_owned();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let port = runtime.block_on(rustls_api(&pki, &issuer));
    let url = format!("https://127.0.0.1:{port}/orders");

    // popkey call --scheme mtls: accepted, bound to alice's certificate.
    let mut args = vec!["call"];
    args.extend(mtls_args(&alice, &endpoint, &ca));
    args.push(&url);
    let body: Value = serde_json::from_str(&popkey_ok(&args)).unwrap();
    assert_eq!(body["scheme"], "mtls");
    assert_eq!(body["x5t#S256"], alice.thumbprint);
    assert_eq!(body["client_id"], "alice");

    // Node's client with the right certificate, another one, and none.
    let token = token_for(&alice, &endpoint, &ca);
    let (alice_key, bob_key) = (key_pem(&alice), key_pem(&bob));
    let (status, _, body) = https_get(&url, &pki.ca, &token, Some((&alice.cert, &alice_key)), &[]);
    assert_eq!(status, 200, "{body}");
    let (status, challenge, _) = https_get(&url, &pki.ca, &token, Some((&bob.cert, &bob_key)), &[]);
    assert_invalid_token(status, &challenge, "another key's certificate");
    assert!(challenge.contains("key_not_bound"), "{challenge}");
    let (status, challenge, _) = https_get(&url, &pki.ca, &token, None, &[]);
    assert_invalid_token(status, &challenge, "no certificate");
    assert!(
        challenge.contains("client_certificate_missing"),
        "{challenge}"
    );
    // A Client-Cert header from a peer that is no trusted proxy is ignored.
    let forged = format!(":{}:", STANDARD.encode(der_of(&alice.cert)));
    let (status, challenge, _) = https_get(
        &url,
        &pki.ca,
        &token,
        None,
        &[format!("Client-Cert: {forged}")],
    );
    assert_invalid_token(status, &challenge, "a Client-Cert header from the client");

    // bob's own (RS256-key) certificate-bound token works with his certificate.
    let bob_token = token_for(&bob, &endpoint, &ca);
    let (status, _, body) = https_get(&url, &pki.ca, &bob_token, Some((&bob.cert, &bob_key)), &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["x5t#S256"],
        bob.thumbprint
    );
}
