//! Test helpers. The JWS verifier here is `ring` (BoringSSL's primitives),
//! not popkey's own verification code, so every signature a test checks is
//! checked by an implementation we did not write.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

pub fn b64d(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("base64url")
}

/// Splits a compact JWS into (header, payload) JSON values.
pub fn parts(compact: &str) -> (Value, Value) {
    let mut it = compact.split('.');
    let h = serde_json::from_slice(&b64d(it.next().unwrap())).expect("header JSON");
    let p = serde_json::from_slice(&b64d(it.next().unwrap())).expect("payload JSON");
    (h, p)
}

/// Verifies `compact` with `ring` against `jwk` (a public JWK object);
/// panics with the reason when it does not verify.
pub fn ring_verify(compact: &str, jwk: &Value) {
    let (header, _) = parts(compact);
    let alg = header["alg"].as_str().expect("alg");
    let dot = compact.rfind('.').unwrap();
    let input = &compact.as_bytes()[..dot];
    let sig = b64d(&compact[dot + 1..]);
    let field = |n: &str| b64d(jwk[n].as_str().unwrap_or_else(|| panic!("jwk.{n}")));
    let ok = match alg {
        "ES256" => {
            assert_eq!(jwk["kty"], "EC");
            assert_eq!(jwk["crv"], "P-256");
            assert_eq!(sig.len(), 64, "ES256 JWS signatures are raw r||s");
            let mut point = vec![4u8];
            point.extend(field("x"));
            point.extend(field("y"));
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                point,
            )
            .verify(input, &sig)
        }
        "RS256" | "PS256" => {
            assert_eq!(jwk["kty"], "RSA");
            let params = if alg == "RS256" {
                &ring::signature::RSA_PKCS1_2048_8192_SHA256
            } else {
                &ring::signature::RSA_PSS_2048_8192_SHA256
            };
            ring::signature::RsaPublicKeyComponents {
                n: field("n"),
                e: field("e"),
            }
            .verify(params, input, &sig)
        }
        other => panic!("unexpected alg {other}"),
    };
    ok.unwrap_or_else(|_| panic!("ring rejected the {alg} signature of {compact}"));
}

/// Verifies an SHR with the JWK in its `cnf`; returns (header, payload).
pub fn verify_shr(compact: &str) -> (Value, Value) {
    let (h, p) = parts(compact);
    ring_verify(compact, &p["cnf"]["jwk"]);
    (h, p)
}

/// Verifies a DPoP proof with the JWK in its header; returns (header, payload).
pub fn verify_dpop(compact: &str) -> (Value, Value) {
    let (h, p) = parts(compact);
    ring_verify(compact, &h["jwk"]);
    (h, p)
}

/// The RFC 7638 thumbprint, computed independently of popkey: required
/// members in lexicographic order, no whitespace.
pub fn thumbprint(jwk: &Value) -> String {
    use sha2::Digest;
    let canonical = match jwk["kty"].as_str().unwrap() {
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        ),
        "RSA" => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            jwk["e"].as_str().unwrap(),
            jwk["n"].as_str().unwrap()
        ),
        k => panic!("kty {k}"),
    };
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
}

/// Verifies tokens with Python's joserfc (tests/interop/verify_jws.py);
/// `kind` is `shr` or `dpop`. Fails, naming what to install, when Python
/// or joserfc is missing: no test passes by skipping.
pub fn joserfc_verify(tokens: &[(&str, &str)]) -> Vec<Value> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/verify_jws.py");
    let check = Command::new("python3")
        .args(["-c", "import joserfc, cryptography"])
        .output()
        .expect("python3 is needed for the interop tests: apt-get install python3");
    assert!(
        check.status.success(),
        "the interop tests need joserfc and cryptography: run ci/test, or `python3 -m pip install joserfc cryptography`\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for (kind, token) in tokens {
            writeln!(stdin, "{kind} {token}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let results: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), tokens.len());
    results
}
