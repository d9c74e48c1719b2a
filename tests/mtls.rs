//! RFC 8705 mutual-TLS certificate-bound tokens end to end, with real
//! components only:
//!
//! * popkey makes a certificate for a SoftHSM key, a swtpm key and file keys
//!   (ES256 and RS256): self-signed, or a CSR that a test CA (openssl)
//!   signs; openssl checks every one;
//! * panva's oidc-provider (tests/oidc/mtls-server.mjs, on a Node `https`
//!   server that requests client certificates) authenticates the client by
//!   `self_signed_tls_client_auth`, `tls_client_auth` or `private_key_jwt`
//!   and binds the token to the handshake's certificate; its
//!   `cnf.x5t#S256` must equal openssl's SHA-256 fingerprint of the
//!   certificate popkey made;
//! * nginx (`ssl_verify_client optional_no_ca`) forwards
//!   `$ssl_client_escaped_cert` to a small upstream app that checks the
//!   binding with `popkey::verify::mtls`: `popkey call --scheme mtls`
//!   passes; the same token with another key's certificate, with none, or
//!   with a forged certificate header is refused with `invalid_token`.

#![cfg(all(feature = "mtls", feature = "cli", feature = "pkcs11", feature = "tpm"))]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use popkey::verify::mtls::{bearer_challenge, check_binding, CertificateHeader, TrustedProxies};
use popkey::verify::token::{AccessTokenValidator, JwksValidator};
use popkey_testkit::nginx::Nginx;
use popkey_testkit::softhsm;
use popkey_testkit::swtpm::Swtpm;
use serde_json::{json, Value};

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
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

/// openssl's SHA-256 fingerprint of a PEM certificate, as base64url (the
/// form of `x5t#S256`).
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
    assert_eq!(raw.len(), 32, "{out}");
    URL_SAFE_NO_PAD.encode(raw)
}

fn der_of(cert: &Path) -> Vec<u8> {
    let out = run(
        Command::new("openssl").args(["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"]),
        "openssl x509 -outform DER",
    );
    out.stdout
}

fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The test CA and the server certificate for 127.0.0.1 (oidc-provider and
/// nginx), made by openssl.
struct Pki {
    ca: PathBuf,
    ca_key: PathBuf,
    server: PathBuf,
    server_key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    popkey_testkit::pki::ca_and_server(dir, "popkey test CA");
    Pki {
        ca: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        server: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    }
}

/// A popkey key with the certificate popkey made for it.
struct Client {
    name: &'static str,
    uri: String,
    cert: PathBuf,
    jwk: Value,
    /// The key's RFC 7638 thumbprint.
    kid: String,
    /// openssl's fingerprint of `cert`, base64url.
    thumbprint: String,
    /// Extra `popkey token` arguments (client authentication).
    auth: Vec<String>,
    metadata: Value,
}

fn popkey(token: &softhsm::Token, args: &[&str]) -> Output {
    token.popkey(args)
}

fn popkey_ok(token: &softhsm::Token, args: &[&str]) -> String {
    let out = popkey(token, args);
    assert!(
        out.status.success(),
        "popkey {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Creates the key, a self-signed certificate for it (checked by openssl)
/// and returns its description.
fn self_signed_client(
    hsm: &softhsm::Token,
    dir: &Path,
    name: &'static str,
    uri: &str,
    alg: &str,
) -> Client {
    let desc: Value = serde_json::from_str(&popkey_ok(
        hsm,
        &["key", "create", "--key", uri, "--alg", alg],
    ))
    .unwrap();
    let uri = desc["uri"].as_str().unwrap().to_owned();
    let pem = popkey_ok(
        hsm,
        &[
            "cert",
            "self-signed",
            "--key",
            &uri,
            "--subject",
            &format!("CN=popkey-{name}"),
            "--days",
            "1",
        ],
    );
    let cert = dir.join(format!("{name}.pem"));
    std::fs::write(&cert, format!("{}\n", pem.trim_end())).unwrap();
    // openssl accepts it and its self-signature verifies.
    let text = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-subject"]);
    assert!(text.contains(&format!("popkey-{name}")), "{text}");
    let c = cert.to_str().unwrap();
    let verified = openssl(&["verify", "-CAfile", c, "-check_ss_sig", c]);
    assert!(verified.contains("OK"), "{verified}");
    let thumbprint = openssl_thumbprint(&cert);
    let jwk = desc["jwk"].clone();
    let mut registered = jwk.clone();
    registered["x5c"] = json!([STANDARD.encode(der_of(&cert))]);
    Client {
        name,
        uri,
        cert,
        kid: desc["kid"].as_str().unwrap().to_owned(),
        jwk,
        thumbprint,
        auth: vec!["--tls-client-auth".into()],
        metadata: json!({
            "client_id": name,
            "token_endpoint_auth_method": "self_signed_tls_client_auth",
            "jwks": {"keys": [registered]},
        }),
    }
}

/// A key whose certificate the test CA issued from popkey's CSR
/// (`tls_client_auth`: the authority checks the chain and the subject DN).
fn ca_issued_client(hsm: &softhsm::Token, dir: &Path, pki: &Pki, uri: &str) -> Client {
    let name = "tls-file";
    let desc: Value = serde_json::from_str(&popkey_ok(
        hsm,
        &["key", "create", "--key", uri, "--alg", "ES256"],
    ))
    .unwrap();
    let uri = desc["uri"].as_str().unwrap().to_owned();
    let csr_pem = popkey_ok(
        hsm,
        &[
            "cert",
            "csr",
            "--key",
            &uri,
            "--subject",
            "CN=tls-client,O=popkey",
        ],
    );
    let csr = dir.join("tls.csr");
    std::fs::write(&csr, format!("{}\n", csr_pem.trim_end())).unwrap();
    let verified = run(
        Command::new("openssl").args(["req", "-in", csr.to_str().unwrap(), "-noout", "-verify"]),
        "openssl req -verify",
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(
        said.contains("verify OK") || said.contains("self-signature ok"),
        "{said}"
    );
    let cert = dir.join("tls.pem");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    #[rustfmt::skip]
    openssl(&["x509", "-req", "-in", &s(&csr), "-CA", &s(&pki.ca), "-CAkey", &s(&pki.ca_key),
        "-CAcreateserial", "-out", &s(&cert), "-days", "1"]);
    let ok = openssl(&["verify", "-CAfile", &s(&pki.ca), &s(&cert)]);
    assert!(ok.contains("OK"), "{ok}");
    let thumbprint = openssl_thumbprint(&cert);
    Client {
        name,
        uri,
        cert,
        jwk: desc["jwk"].clone(),
        kid: desc["kid"].as_str().unwrap().to_owned(),
        thumbprint,
        auth: vec!["--tls-client-auth".into()],
        metadata: json!({
            "client_id": name,
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_subject_dn": "CN=tls-client,O=popkey",
        }),
    }
}

/// A certificate for the key at `uri` that the test CA issued (from
/// popkey's CSR) for 2020 only, with `openssl ca`.
fn expired_certificate(dir: &Path, pki: &Pki, uri: &str) -> PathBuf {
    let ca_dir = dir.join("ca-db");
    std::fs::create_dir_all(ca_dir.join("new")).unwrap();
    std::fs::write(ca_dir.join("index.txt"), "").unwrap();
    std::fs::write(ca_dir.join("serial"), "1000\n").unwrap();
    let conf = ca_dir.join("ca.cnf");
    std::fs::write(
        &conf,
        format!(
            "[ca]\ndefault_ca = test\n[test]\ndatabase = {db}/index.txt\nnew_certs_dir = {db}/new\n\
             serial = {db}/serial\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n",
            db = ca_dir.display()
        ),
    )
    .unwrap();
    let csr_out = Command::new(popkey_testkit::popkey_bin())
        .args([
            "cert",
            "csr",
            "--key",
            uri,
            "--subject",
            "CN=expired-client",
        ])
        .env_remove("POPKEY_KEY")
        .output()
        .unwrap();
    assert!(csr_out.status.success(), "{csr_out:?}");
    let csr = dir.join("expired.csr");
    std::fs::write(&csr, &csr_out.stdout).unwrap();
    let cert = dir.join("expired.pem");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    #[rustfmt::skip]
    openssl(&["ca", "-batch", "-config", &s(&conf), "-cert", &s(&pki.ca), "-keyfile", &s(&pki.ca_key),
        "-in", &s(&csr), "-out", &s(&cert), "-notext",
        "-startdate", "20200101000000Z", "-enddate", "20200102000000Z"]);
    let dates = openssl(&["x509", "-in", &s(&cert), "-noout", "-enddate"]);
    assert!(dates.contains("2020"), "{dates}");
    cert
}

/// Starts oidc-provider with mTLS; returns what it printed.
fn start_authority(dir: &Path, pki: &Pki, clients: &[&Client]) -> (Node, Value) {
    assert!(
        oidc_dir().join("node_modules/oidc-provider").exists(),
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
        .arg(oidc_dir().join("mtls-server.mjs"))
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("node is needed for the oidc-provider mTLS test: apt-get install nodejs npm");
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

/// The API behind nginx: validates the JWT access token (the authority's
/// JWKS, issuer, audience) and its binding to the certificate nginx
/// forwarded, believed only from 127.0.0.1. Answers 200 with the token's
/// client and thumbprint, or 401 with a Bearer challenge.
struct Api {
    port: u16,
    _runtime: tokio::runtime::Runtime,
}

fn start_api(authority: &Value) -> Api {
    let validator: Arc<dyn AccessTokenValidator> = Arc::new(
        JwksValidator::from_jwks(&authority["jwks"].to_string())
            .unwrap()
            .issuer(authority["issuer"].as_str().unwrap())
            .audience("urn:popkey:api"),
    );
    let proxies = Arc::new(TrustedProxies::new(["127.0.0.1".parse().unwrap()]));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(
        move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
              headers: axum::http::HeaderMap| {
            let (validator, proxies) = (validator.clone(), proxies.clone());
            async move { api_answer(&*validator, &proxies, peer, &headers) }
        },
    );
    runtime.spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    Api {
        port,
        _runtime: runtime,
    }
}

fn api_answer(
    validator: &dyn AccessTokenValidator,
    proxies: &TrustedProxies,
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let result = (|| {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                popkey::verify::VerifyError::new(
                    popkey::verify::ErrorKind::InvalidAccessToken,
                    "no Bearer token",
                )
            })?;
        let claims = validator.validate(token, now)?;
        let values: Vec<&str> = headers
            .get_all("x-ssl-client-cert")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let cert =
            proxies.client_certificate(peer.ip(), CertificateHeader::NginxEscapedPem, &values)?;
        check_binding(&claims, cert.as_ref())?;
        Ok::<_, popkey::verify::VerifyError>(json!({
            "client_id": claims["client_id"],
            "x5t#S256": claims["cnf"]["x5t#S256"],
        }))
    })();
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => (
            axum::http::StatusCode::UNAUTHORIZED,
            [("www-authenticate", bearer_challenge(&e))],
            axum::Json(e.to_json()),
        )
            .into_response(),
    }
}

fn start_nginx(pki: &Pki, api: &Api) -> Nginx {
    Nginx::builder()
        .ports(1)
        .file("server.pem", std::fs::read(&pki.server).unwrap())
        .file("server.key", std::fs::read(&pki.server_key).unwrap())
        .http(&format!(
            "server {{\n\
               listen 127.0.0.1:@PORT0@ ssl;\n\
               ssl_certificate @DIR@/server.pem;\n\
               ssl_certificate_key @DIR@/server.key;\n\
               ssl_verify_client optional_no_ca;\n\
               location / {{\n\
                 proxy_pass http://127.0.0.1:{};\n\
                 proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;\n\
               }}\n\
             }}\n",
            api.port
        ))
        .start()
}

/// Node's https client (OpenSSL's TLS, not popkey's) with
/// `Authorization: Bearer token`, optionally a client certificate and key,
/// and extra headers; returns (status, WWW-Authenticate, body).
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

/// `popkey token --scheme mtls …` arguments for `client`.
fn token_args<'a>(client: &'a Client, endpoint: &'a str, ca: &'a str) -> Vec<&'a str> {
    let mut args = vec![
        "--scheme",
        "mtls",
        "--key",
        client.uri.as_str(),
        "--cert",
        client.cert.to_str().unwrap(),
        "--ca-file",
        ca,
        "--token-endpoint",
        endpoint,
        "--client-id",
        client.name,
        "--scope",
        "api:read",
    ];
    args.extend(client.auth.iter().map(String::as_str));
    args
}

#[test]
fn certificate_bound_tokens_from_oidc_provider_and_through_nginx() {
    let _serial = softhsm::serial();
    let hsm = softhsm::token();
    let tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = make_pki(d);
    let ca = pki.ca.to_str().unwrap().to_owned();

    let file = |n: &str| format!("file:{}", d.join(n).display());
    let softhsm_es = self_signed_client(&hsm, d, "softhsm-es256", &hsm.uri("mtls-es"), "ES256");
    let tpm_es = self_signed_client(
        &hsm,
        d,
        "swtpm-es256",
        &tpm.uri(&format!("path={}", tpm.file("mtls.pem").display())),
        "ES256",
    );
    let file_es = self_signed_client(&hsm, d, "file-es256", &file("es.pem"), "ES256");
    let mut file_rs = self_signed_client(&hsm, d, "file-rs256", &file("rs.pem"), "RS256");
    // This one authenticates with private_key_jwt (its own key signs the
    // assertion); the certificate only binds the token.
    file_rs.auth = vec!["--assertion-key".into(), file_rs.uri.clone()];
    let mut assertion_jwk = file_rs.jwk.clone();
    assertion_jwk["kid"] = file_rs.kid.clone().into(); // the assertion's header names it
    file_rs.metadata = json!({
        "client_id": file_rs.name,
        "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": "RS256",
        "jwks": {"keys": [assertion_jwk]},
    });
    let tls_file = ca_issued_client(&hsm, d, &pki, &file("tls-key.pem"));

    let clients = [&softhsm_es, &tpm_es, &file_es, &file_rs, &tls_file];
    let (_authority, info) = start_authority(d, &pki, &clients);
    let endpoint = info["token_endpoint"].as_str().unwrap().to_owned();

    let mut tokens = std::collections::HashMap::new();
    for c in clients {
        let mut args = vec!["token"];
        args.extend(token_args(c, &endpoint, &ca));
        let out = popkey(&hsm, &args);
        assert!(
            out.status.success(),
            "{}: popkey token --scheme mtls failed: {}\n{}",
            c.name,
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(d.join("authority.log")).unwrap_or_default()
        );
        let resp: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(resp["token_type"], "Bearer", "{}", c.name);
        let at = resp["access_token"].as_str().unwrap().to_owned();
        let claims = jwt_claims(&at);
        assert_eq!(
            claims["cnf"]["x5t#S256"], c.thumbprint,
            "{}: the token is bound to the certificate popkey made (openssl's fingerprint)",
            c.name
        );
        assert_eq!(claims["client_id"], c.name);
        tokens.insert(c.name, at);
    }

    // The SoftHSM key stayed non-exportable after signing certificates and
    // handshakes (pkcs11-tool reads the token's attributes).
    let listed = hsm.pkcs11_tool(&["--list-objects", "--type", "privkey"]);
    assert!(listed.contains("mtls-es"), "{listed}");
    assert!(listed.contains("never extractable"), "{listed}");
    // And the TPM key (tpm2-tools reads its key file's public area).
    let printed = tpm.tool(
        "tpm2-tools",
        "tpm2_print",
        &[
            "-t",
            "TSSPRIVKEY_OBJ",
            tpm.file("mtls.pem").to_str().unwrap(),
        ],
    );
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed.contains("fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign"),
        "{printed}"
    );

    // A certificate for another key than --key: refused before any network
    // call, naming both thumbprints (the endpoint here does not exist).
    let mut mismatched = token_args(&softhsm_es, "https://127.0.0.1:9/token", &ca);
    let cert_pos = mismatched.iter().position(|a| *a == "--cert").unwrap() + 1;
    let other_cert = file_es.cert.to_str().unwrap().to_owned();
    mismatched[cert_pos] = &other_cert;
    let mut args = vec!["token"];
    args.extend(mismatched);
    let out = popkey(&hsm, &args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&file_es.thumbprint), "{err}");
    assert!(err.contains(&softhsm_es.kid), "{err}");
    assert!(
        !err.contains("Connection refused") && !err.contains("HTTP request"),
        "{err}"
    );

    // An expired certificate for the right key (the test CA issued it from
    // popkey's CSR, valid in 2020 only): refused before any network call.
    let expired = expired_certificate(d, &pki, &tls_file.uri);
    let mut args = vec!["token"];
    let mut stale = token_args(&tls_file, "https://127.0.0.1:9/token", &ca);
    let cert_pos = stale.iter().position(|a| *a == "--cert").unwrap() + 1;
    stale[cert_pos] = expired.to_str().unwrap();
    args.extend(stale);
    let out = popkey(&hsm, &args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expired") && !err.contains("HTTP request"),
        "{err}"
    );

    // A private key file given as --cert, and --scheme mtls without --cert:
    // refused before any network call.
    let es_key_path = d.join("es.pem");
    let mut wrong = token_args(&file_es, "https://127.0.0.1:9/token", &ca);
    let cert_pos = wrong.iter().position(|a| *a == "--cert").unwrap() + 1;
    wrong[cert_pos] = es_key_path.to_str().unwrap();
    let mut args = vec!["token"];
    args.extend(wrong);
    let out = popkey(&hsm, &args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--cert") && !err.contains("HTTP request"),
        "{err}"
    );
    let mut no_cert = token_args(&file_es, "https://127.0.0.1:9/token", &ca);
    no_cert.drain(cert_pos - 1..=cert_pos);
    no_cert.retain(|a| *a != "--tls-client-auth");
    no_cert.extend(["--assertion-key", file_es.uri.as_str()]);
    let mut args = vec!["token"];
    args.extend(no_cert);
    let out = popkey(&hsm, &args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--scheme mtls needs"), "{err}");

    // The API behind nginx.
    let api = start_api(&info);
    let nginx = start_nginx(&pki, &api);
    let url = format!("https://127.0.0.1:{}/orders", nginx.port(0));
    for c in [&softhsm_es, &tpm_es] {
        let mut args = vec!["call"];
        args.extend(token_args(c, &endpoint, &ca));
        args.push(&url);
        let body: Value = serde_json::from_str(&popkey_ok(&hsm, &args)).unwrap();
        assert_eq!(body["client_id"], c.name);
        assert_eq!(body["x5t#S256"], c.thumbprint);
    }

    // The library: one PopClient over mTLS with a file key. Six requests
    // (one token, five API calls) take at most two handshakes, one per
    // pooled connection (authority, nginx): one signature each.
    {
        use popkey::client::{ClientAuth, PopClient, Scheme, TlsConfig, TokenRequest};
        let key = popkey::PopKey::open(&file_es.uri).unwrap();
        let identity =
            popkey::tls::ClientIdentity::from_pem_file(key.clone(), &file_es.cert).unwrap();
        let tls = TlsConfig::new()
            .add_ca_pem_file(&pki.ca)
            .unwrap()
            .client_identity(identity.clone());
        let request = TokenRequest::new(
            &endpoint,
            file_es.name,
            &["api:read"],
            Scheme::Mtls,
            ClientAuth::TlsClientAuth,
        )
        .unwrap();
        let client = PopClient::with_tls(key, request, &tls).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for _ in 0..5 {
                let resp = client.get(&url).await.unwrap();
                assert_eq!(resp.status(), 200);
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["x5t#S256"], file_es.thumbprint);
            }
        });
        assert_eq!(client.cache().len(), 1, "one token, cached per certificate");
        let handshakes = identity.handshake_signatures();
        eprintln!("mTLS: {handshakes} handshake signatures for 1 token request + 5 API calls");
        assert!(
            (1..=2).contains(&handshakes),
            "{handshakes} handshake signatures for 6 requests"
        );
    }

    // The same token with another popkey key's certificate (Node's
    // client presents the file key's certificate with its key), with none, and with a
    // forged certificate header: invalid_token.
    let token = &tokens[softhsm_es.name];
    let es_key = d.join("es.pem");
    let (status, challenge, body) =
        https_get(&url, &pki.ca, token, Some((&file_es.cert, &es_key)), &[]);
    assert_eq!(status, 401, "{body}");
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{challenge}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "key_not_bound"
    );

    let (status, challenge, body) = https_get(&url, &pki.ca, token, None, &[]);
    assert_eq!(status, 401, "{body}");
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{challenge}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "client_certificate_missing"
    );

    // A client cannot set the header itself: nginx replaces it.
    let forged = std::fs::read_to_string(&softhsm_es.cert)
        .unwrap()
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect::<String>();
    let (status, challenge, _) = https_get(
        &url,
        &pki.ca,
        token,
        None,
        &[format!("X-SSL-Client-Cert: {forged}")],
    );
    assert_eq!(status, 401);
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{challenge}"
    );

    // The right certificate with Node's client passes too (the binding, not popkey's
    // client, is what the API checks).
    let (status, _, body) = https_get(
        &url,
        &pki.ca,
        &tokens[file_es.name],
        Some((&file_es.cert, &es_key)),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    drop(nginx);
}
