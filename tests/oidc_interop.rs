//! Interop with a real authorization server nobody here wrote: panva's
//! `oidc-provider` (npm, pinned by tests/oidc/package-lock.json), set up for
//! client_credentials, private_key_jwt and DPoP-bound JWT access tokens,
//! with and without required nonces. `popkey token --scheme dpop` must come
//! back with a DPoP token whose `cnf.jkt` is our key's thumbprint.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn oidc_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc"))
}

fn start(jwks: &Path, require_nonce: bool) -> (Server, String) {
    let (server, info) = start_with(jwks, require_nonce, &[]);
    (server, info["token_endpoint"].as_str().unwrap().to_owned())
}

/// Starts oidc-provider with extra environment (see tests/oidc/server.mjs);
/// returns what it printed.
fn start_with(jwks: &Path, require_nonce: bool, env: &[(&str, &str)]) -> (Server, Value) {
    assert!(
        oidc_dir().join("node_modules/oidc-provider").exists(),
        "oidc-provider is not installed: run ci/test (it runs `npm ci` in tests/oidc), or `cd tests/oidc && npm ci`"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("node")
        .arg(oidc_dir().join("server.mjs"))
        .arg(port.to_string())
        .arg(jwks)
        .arg(require_nonce.to_string())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node is needed for the oidc-provider interop test: apt-get install nodejs npm");
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    // Keep reading, so a later line from the server never meets a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let info: Value = serde_json::from_str(&line)
        .unwrap_or_else(|_| panic!("oidc-provider did not start: {line:?}"));
    (Server(child), info)
}

fn popkey(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_popkey"))
        .args(args)
        .env_remove("POPKEY_KEY")
        .output()
        .unwrap()
}

#[test]
fn oidc_provider_issues_dpop_tokens_bound_to_our_key() {
    let dir = tempfile::tempdir().unwrap();
    for alg in ["ES256", "RS256", "PS256"] {
        let uri = format!("file:{}", dir.path().join(format!("{alg}.pem")).display());
        let out = popkey(&["key", "create", "--key", &uri, "--alg", alg]);
        assert!(out.status.success());
        let desc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let uri = desc["uri"].as_str().unwrap();
        let kid = desc["kid"].as_str().unwrap();
        let mut jwk = desc["jwk"].clone();
        jwk["kid"] = kid.into();
        let jwks = dir.path().join(format!("{alg}-jwks.json"));
        std::fs::write(&jwks, json!({"keys": [jwk]}).to_string()).unwrap();

        for require_nonce in [false, true] {
            let (_server, token_endpoint) = start(&jwks, require_nonce);
            let out = popkey(&[
                "token",
                "--key",
                uri,
                "--token-endpoint",
                &token_endpoint,
                "--client-id",
                "popkey-client",
                "--scope",
                "api:read",
                "--scheme",
                "dpop",
                "--assertion-key",
                uri,
            ]);
            assert!(
                out.status.success(),
                "{alg} nonce={require_nonce}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let resp: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(resp["token_type"], "DPoP");
            let payload = resp["access_token"]
                .as_str()
                .unwrap()
                .split('.')
                .nth(1)
                .unwrap();
            let claims: Value = serde_json::from_slice(
                &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(claims["cnf"]["jkt"], kid, "{alg} nonce={require_nonce}");
            assert_eq!(claims["client_id"], "popkey-client");
            // The server's own JWKS validates the token it issued.
            let jwks_url = token_endpoint.replace("/token", "/jwks");
            let server_jwks = fetch(&jwks_url);
            let v = popkey::verify::token::JwksValidator::from_jwks(&server_jwks).unwrap();
            use popkey::verify::token::AccessTokenValidator;
            v.validate(
                resp["access_token"].as_str().unwrap(),
                claims["iat"].as_u64().unwrap(),
            )
            .unwrap();
        }
    }
}

/// A plain GET on loopback, without pulling an HTTP client into the test.
fn fetch(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// RFC 7662 against a real server: oidc-provider issues an OPAQUE DPoP-bound
/// access token, and `popkey verify dpop --introspect` accepts a proof for
/// it only with the right key, token and client secret.
#[test]
fn opaque_dpop_token_verified_through_introspection() {
    let dir = tempfile::tempdir().unwrap();
    let key = format!("file:{}", dir.path().join("k.pem").display());
    let out = popkey(&["key", "create", "--key", &key, "--alg", "ES256"]);
    assert!(out.status.success());
    let desc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let uri = desc["uri"].as_str().unwrap().to_owned();
    let kid = desc["kid"].as_str().unwrap().to_owned();
    let mut jwk = desc["jwk"].clone();
    jwk["kid"] = kid.clone().into();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [jwk]}).to_string()).unwrap();
    let secret = "rs-secret: with spaces & symbols";
    let secret_file = dir.path().join("rs-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let (_server, info) = start_with(
        &jwks,
        false,
        &[
            ("POPKEY_OIDC_OPAQUE", "1"),
            ("POPKEY_OIDC_RS_SECRET", secret),
        ],
    );
    let token_endpoint = info["token_endpoint"].as_str().unwrap();
    let introspection = info["introspection_endpoint"].as_str().unwrap();

    let out = popkey(&[
        "token",
        "--key",
        &uri,
        "--token-endpoint",
        token_endpoint,
        "--client-id",
        "popkey-client",
        "--scope",
        "api:read",
        "--scheme",
        "dpop",
        "--assertion-key",
        &uri,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(resp["token_type"], "DPoP");
    let at = resp["access_token"].as_str().unwrap().to_owned();
    assert!(!at.contains('.'), "the token is opaque, not a JWT: {at}");
    let at_file = dir.path().join("at");
    std::fs::write(&at_file, &at).unwrap();

    let url = "https://api.example.com/orders?id=1";
    let proof = |key: &str| {
        let out = popkey(&[
            "dpop",
            "--key",
            key,
            "--method",
            "GET",
            "--url",
            url,
            "--access-token-file",
            at_file.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let verify_for = |proof: &str, token: &str, secret_file: &Path, audience: &str| {
        popkey(&[
            "verify",
            "dpop",
            "--proof",
            proof,
            "--method",
            "GET",
            "--url",
            url,
            "--access-token",
            token,
            "--introspect",
            introspection,
            "--introspect-client-id",
            "popkey-rs",
            "--introspect-secret-file",
            secret_file.to_str().unwrap(),
            "--audience",
            audience,
        ])
    };
    let verify = |proof: &str, token: &str, secret_file: &Path| {
        verify_for(proof, token, secret_file, "urn:popkey:api")
    };
    let out = verify(&proof(&uri), &at, &secret_file);
    assert!(
        out.status.success(),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let claims: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["htm"], "GET");

    let error = |out: std::process::Output| -> String {
        assert!(!out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        eprintln!("refused: {v}");
        v["error"].as_str().unwrap().to_owned()
    };
    // A proof by another key: the server's cnf.jkt names ours.
    let other = format!("file:{}", dir.path().join("other.pem").display());
    assert!(
        popkey(&["key", "create", "--key", &other, "--alg", "ES256"])
            .status
            .success()
    );
    assert_eq!(
        error(verify(&proof(&other), &at, &secret_file)),
        "key_not_bound"
    );
    // A token the server never issued (the proof's ath is for it, so only
    // the server can refuse it).
    let fake = "x".repeat(43);
    let fake_file = dir.path().join("fake");
    std::fs::write(&fake_file, &fake).unwrap();
    let out = popkey(&[
        "dpop",
        "--key",
        &uri,
        "--method",
        "GET",
        "--url",
        url,
        "--access-token-file",
        fake_file.to_str().unwrap(),
    ]);
    let fake_proof = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(
        error(verify(&fake_proof, &fake, &secret_file)),
        "invalid_access_token"
    );
    // A token for another API (its `aud` is urn:popkey:api).
    assert_eq!(
        error(verify_for(&proof(&uri), &at, &secret_file, "urn:other:api")),
        "invalid_access_token"
    );
    // The wrong client secret: the server refuses to introspect, so the
    // token cannot be checked (not: the token is bad).
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "nope").unwrap();
    assert_eq!(
        error(verify(&proof(&uri), &at, &wrong)),
        "token_validation_unavailable"
    );
}
