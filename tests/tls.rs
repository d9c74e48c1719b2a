//! TLS with popkey keys against a TLS server nobody here wrote (Node's
//! `https`, i.e. OpenSSL, in tests/tls/server.mjs), with a test CA made
//! here by `openssl`:
//!
//! * client certificates whose handshake signature is made by a file,
//!   SoftHSM or swtpm key (ES256, RS256, PS256): OpenSSL checks the
//!   signature and reports the certificate it saw;
//! * a pooled connection signs once, however many requests it carries;
//! * a slow key does not stall the async executor: a heartbeat task keeps
//!   ticking while handshakes sign;
//! * trust: a server under a private CA is refused until its CA is added.

#![cfg(all(feature = "mtls", feature = "pkcs11", feature = "tpm"))]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use popkey::cert::CertificateTemplate;
use popkey::client::TlsConfig;
use popkey::tls::ClientIdentity;
use popkey::{Algorithm, CreateOptions, ErrorKind, PopCryptoProvider, PopKey};
use popkey_testkit::softhsm;
use popkey_testkit::swtpm::Swtpm;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A test CA and a server certificate for 127.0.0.1 it issued.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        popkey_testkit::pki::ca_and_server(pki.dir.path(), "popkey test CA");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The Node TLS server, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts tests/tls/server.mjs; with `client_ca`, client certificates
    /// are required and must be (or chain to) one in that file.
    fn start(pki: &Pki, client_ca: Option<&Path>) -> Server {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/server.mjs");
        let mut cmd = Command::new("node");
        cmd.arg(script)
            .arg(pki.path("server.pem"))
            .arg(pki.path("server.key"));
        if let Some(ca) = client_ca {
            cmd.arg(ca);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node is needed: apt-get install nodejs");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let info: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the TLS server did not start: {line:?}"));
        Server {
            child,
            port: info["port"].as_u64().unwrap() as u16,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}

/// RFC 8705 x5t#S256 of a DER certificate, computed here with `sha2`.
fn x5t(der: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

fn multi_thread(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let resp = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e:?}"));
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.json().await.unwrap()
}

/// Writes the leaf certificates of `identities` into one PEM file, the
/// server's list of accepted client certificates.
fn client_ca_file(pki: &Pki, identities: &[&ClientIdentity]) -> PathBuf {
    let path = pki.path("clients.pem");
    let pem: String = identities
        .iter()
        .map(|i| i.certificate_chain().to_pem())
        .collect();
    std::fs::write(&path, pem).unwrap();
    path
}

fn identity(key: PopKey, name: &str) -> ClientIdentity {
    let cert = CertificateTemplate::new(&format!("CN={name}"))
        .unwrap()
        .validity_days(2)
        .self_signed(&key)
        .unwrap();
    ClientIdentity::new(key, cert).unwrap()
}

#[test]
fn client_certificates_signed_by_file_softhsm_and_swtpm_keys_pass_openssl() {
    let _serial = softhsm::serial();
    let pki = Pki::new();
    let tpm = Swtpm::start();
    let token = softhsm::token();
    let files = tempfile::tempdir().unwrap();
    let file = |name: &str| format!("file:{}", files.path().join(name).display());
    let keys: Vec<(String, PopKey)> = vec![
        (
            "file-es256".into(),
            PopKey::create(&file("es.pem"), &CreateOptions::new()).unwrap(),
        ),
        (
            "file-rs256".into(),
            PopKey::create(&file("rs.pem"), &CreateOptions::new().alg(Algorithm::RS256)).unwrap(),
        ),
        (
            "softhsm-es256".into(),
            PopKey::create(&token.uri("mtls-es"), &CreateOptions::new()).unwrap(),
        ),
        (
            "softhsm-ps256".into(),
            PopKey::create(
                &token.uri("mtls-ps"),
                &CreateOptions::new().alg(Algorithm::PS256),
            )
            .unwrap(),
        ),
        (
            "swtpm-es256".into(),
            PopKey::create(&tpm.uri("handle=0x81000101"), &CreateOptions::new()).unwrap(),
        ),
        (
            "swtpm-rs256".into(),
            PopKey::create(
                &tpm.uri("handle=0x81000102"),
                &CreateOptions::new().alg(Algorithm::RS256),
            )
            .unwrap(),
        ),
    ];
    let identities: Vec<(String, ClientIdentity)> = keys
        .into_iter()
        .map(|(name, key)| {
            let id = identity(key, &name);
            (name, id)
        })
        .collect();
    let refs: Vec<&ClientIdentity> = identities.iter().map(|(_, i)| i).collect();
    let server = Server::start(&pki, Some(&client_ca_file(&pki, &refs)));
    let rt = multi_thread(2);
    for (name, id) in &identities {
        let http = TlsConfig::new()
            .add_ca_pem_file(pki.path("ca.pem"))
            .unwrap()
            .client_identity(id.clone())
            .http_client()
            .unwrap();
        let answers: Vec<Value> = rt.block_on(async {
            let mut answers = Vec::new();
            for i in 0..3 {
                answers.push(get_json(&http, &server.url(&format!("/{name}/{i}"))).await);
            }
            answers
        });
        let expected = x5t(id.certificate_chain().leaf_der());
        assert_eq!(id.certificate_thumbprint(), expected, "{name}");
        for a in &answers {
            assert_eq!(a["authorized"], true, "{name}: {a}");
            assert_eq!(a["client_cert_sha256"], expected.as_str(), "{name}: {a}");
        }
        let protocol = if id.key().algorithm() == Algorithm::RS256 {
            "TLSv1.2" // TLS 1.3 forbids PKCS#1 v1.5 handshake signatures
        } else {
            "TLSv1.3"
        };
        assert_eq!(answers[0]["protocol"], protocol, "{name}");
        // Three requests, one pooled connection: one handshake signature.
        assert_eq!(id.handshake_signatures(), 1, "{name}");
    }
    // The keys are still where they were made, and still not exportable.
    for (name, id) in &identities {
        let loc = id.key().location();
        if name.starts_with("file") {
            assert!(!loc.non_exportable, "{name}");
        } else {
            assert!(loc.non_exportable, "{name}");
        }
    }
}

/// A provider that delegates to a real key and takes `delay` per signature
/// as a real TPM does (swtpm signs in about a millisecond), marking when a
/// signature is under way.
struct SlowKey {
    inner: PopKey,
    delay: Duration,
    signing: Arc<AtomicBool>,
}

impl PopCryptoProvider for SlowKey {
    fn canonical_public_key_jwk(&self) -> &str {
        self.inner.canonical_public_key_jwk()
    }
    fn algorithm(&self) -> Algorithm {
        self.inner.algorithm()
    }
    fn sign(&self, signing_input: &[u8]) -> popkey::Result<Vec<u8>> {
        self.signing.store(true, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        let sig = self.inner.sign(signing_input);
        self.signing.store(false, Ordering::SeqCst);
        sig
    }
}

#[test]
fn heartbeat_keeps_ticking_while_swtpm_handshakes_sign() {
    let pki = Pki::new();
    let tpm = Swtpm::start();
    let tpm_key = PopKey::create(&tpm.uri("handle=0x81000103"), &CreateOptions::new()).unwrap();
    let signing = Arc::new(AtomicBool::new(false));
    let slow = PopKey::from_provider(Box::new(SlowKey {
        inner: tpm_key.clone(),
        delay: Duration::from_millis(150),
        signing: signing.clone(),
    }))
    .unwrap();
    // The certificate is for the swtpm key; the slow wrapper is the same pair.
    let cert = CertificateTemplate::new("CN=heartbeat")
        .unwrap()
        .self_signed(&tpm_key)
        .unwrap();
    let id = ClientIdentity::new(slow, cert).unwrap();
    let server = Server::start(&pki, Some(&client_ca_file(&pki, &[&id])));
    let ca = pki.path("ca.pem");

    // One worker thread: without moving the signature off it, the
    // heartbeat could not run at all while a handshake signs.
    let rt = multi_thread(1);
    const HANDSHAKES: usize = 4;
    let ticks_during: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let (handshake_signatures, answers) = rt.block_on(async {
        let ticks = Arc::new(AtomicU64::new(0));
        let ticks_while_signing = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let beat = {
            let (ticks, tws, stop, signing) = (
                ticks.clone(),
                ticks_while_signing.clone(),
                stop.clone(),
                signing.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                    if signing.load(Ordering::SeqCst) {
                        tws.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        let mut answers = Vec::new();
        for i in 0..HANDSHAKES {
            // A new client (new connection pool and TLS session cache) per
            // request: every request is a full handshake.
            let http = TlsConfig::new()
                .add_ca_pem_file(&ca)
                .unwrap()
                .client_identity(id.clone())
                .http_client()
                .unwrap();
            let before = ticks_while_signing.load(Ordering::SeqCst);
            // The request runs as its own task, as it would in a server.
            let url = server.url(&format!("/beat/{i}"));
            let answer = tokio::spawn(async move { get_json(&http, &url).await })
                .await
                .unwrap();
            answers.push(answer);
            ticks_during
                .lock()
                .unwrap()
                .push(ticks_while_signing.load(Ordering::SeqCst) - before);
        }
        stop.store(true, Ordering::SeqCst);
        beat.await.unwrap();
        (id.handshake_signatures(), answers)
    });
    assert_eq!(handshake_signatures, HANDSHAKES as u64);
    for a in &answers {
        assert_eq!(a["authorized"], true, "{a}");
        assert_eq!(a["client_cert_sha256"], id.certificate_thumbprint(), "{a}");
    }
    let during = ticks_during.lock().unwrap().clone();
    println!("heartbeat ticks while each handshake signed: {during:?}");
    // Work, not time: the heartbeat ran during every signature.
    assert!(during.iter().all(|&n| n >= 1), "{during:?}");
}

#[test]
fn current_thread_runtime_handshakes_without_panicking() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let key = PopKey::create(
        &format!("file:{}", dir.path().join("k.pem").display()),
        &CreateOptions::new(),
    )
    .unwrap();
    let id = identity(key, "current-thread");
    let server = Server::start(&pki, Some(&client_ca_file(&pki, &[&id])));
    let http = TlsConfig::new()
        .add_ca_pem_file(pki.path("ca.pem"))
        .unwrap()
        .client_identity(id.clone())
        .http_client()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = rt.block_on(get_json(&http, &server.url("/ct")));
    assert_eq!(answer["authorized"], true);
    assert_eq!(id.handshake_signatures(), 1);
}

#[test]
fn a_private_ca_is_trusted_only_once_added() {
    let pki = Pki::new();
    let server = Server::start(&pki, None);
    let rt = multi_thread(1);

    // The platform store does not know the test CA.
    let http = TlsConfig::new().http_client().unwrap();
    let err = rt
        .block_on(async { http.get(server.url("/untrusted")).send().await })
        .unwrap_err();
    let chain = format!("{err:?}");
    assert!(
        chain.contains("UnknownIssuer") || chain.contains("certificate"),
        "{chain}"
    );

    // With the CA added, it is.
    let http = TlsConfig::new()
        .add_ca_pem_file(pki.path("ca.pem"))
        .unwrap()
        .http_client()
        .unwrap();
    let answer = rt.block_on(get_json(&http, &server.url("/trusted")));
    assert_eq!(answer["client_cert_sha256"], Value::Null);

    // Only the added CA: still verified.
    let http = TlsConfig::new()
        .without_platform_roots()
        .add_ca_pem_file(pki.path("ca.pem"))
        .unwrap()
        .http_client()
        .unwrap();
    rt.block_on(get_json(&http, &server.url("/pinned")));

    // A CA file that holds no certificate, and no anchors at all, are
    // configuration errors.
    let e = TlsConfig::new()
        .add_ca_pem_file(pki.path("server.key"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    let e = TlsConfig::new()
        .without_platform_roots()
        .http_client()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
}

#[test]
fn cli_ca_file_reaches_a_token_endpoint_behind_a_private_ca() {
    let pki = Pki::new();
    let server = Server::start(&pki, None);
    let dir = tempfile::tempdir().unwrap();
    let key = format!("file:{}", dir.path().join("k.pem").display());
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "token",
            "--key",
            key.as_str(),
            "--client-id",
            "c",
            "--scope",
            "api",
            "--client-secret-file",
            secret.to_str().unwrap(),
            "--token-endpoint",
        ];
        let endpoint = server.url("/token");
        let mut owned: Vec<String> = args.drain(..).map(str::to_owned).collect();
        owned.push(endpoint);
        owned.extend(extra.iter().map(|s| s.to_string()));
        Command::new(env!("CARGO_BIN_EXE_popkey"))
            .args(&owned)
            .env_remove("POPKEY_KEY")
            .output()
            .unwrap()
    };
    std::process::Command::new(env!("CARGO_BIN_EXE_popkey"))
        .args(["key", "create", "--key", &key])
        .output()
        .unwrap();
    // Without --ca-file the TLS handshake fails on the unknown issuer.
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    println!("without --ca-file: {err}");
    assert!(!out.status.success());
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    // With it, the request reaches the server (which is no token endpoint,
    // so the answer is refused for what it is, not for TLS).
    let ca = pki.path("ca.pem");
    let out = run(&["--ca-file", ca.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    println!("with --ca-file: {err}");
    assert!(
        !err.contains("UnknownIssuer") && !err.contains("certificate"),
        "{err}"
    );
    assert!(err.contains("/token"), "{err}");
}
