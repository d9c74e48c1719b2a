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
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node is needed for the oidc-provider interop test: apt-get install nodejs npm");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: Value = serde_json::from_str(&line)
        .unwrap_or_else(|_| panic!("oidc-provider did not start: {line:?}"));
    (
        Server(child),
        info["token_endpoint"].as_str().unwrap().to_owned(),
    )
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
