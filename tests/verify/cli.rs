//! `popkey verify` from the command line: `--jkt` for opaque tokens (the
//! RFC 9449 §7.1 example), `--proof -`, and the flags that exclude each other.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

// RFC 9449 §7.1, Figure 13 (iat 1562262618) and its opaque token.
const PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA";
const TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
const JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
const URL: &str = "https://resource.example.org/protectedresource";

fn popkey(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_popkey"))
        .args(args)
        .env_remove("POPKEY_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn dpop_args<'a>(proof: &'a str, jkt: &'a str, now: &'a str) -> Vec<&'a str> {
    vec![
        "verify",
        "dpop",
        "--proof",
        proof,
        "--method",
        "GET",
        "--url",
        URL,
        "--access-token",
        TOKEN,
        "--jkt",
        jkt,
        "--now",
        now,
    ]
}

#[test]
fn jkt_verifies_the_rfc9449_opaque_token_example() {
    let out = popkey(&dpop_args(PROOF, JKT, "1562262618"), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let claims: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["ath"], "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo");

    // Another thumbprint: not bound.
    let out = popkey(&dpop_args(PROOF, "another-thumbprint", "1562262618"), None);
    assert!(!out.status.success());
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["error"], "key_not_bound");

    // The proof from standard input.
    let out = popkey(
        &dpop_args("-", JKT, "1562262618"),
        Some(&format!("{PROOF}\n")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn jkt_and_jwks_exclude_each_other() {
    let mut args = dpop_args(PROOF, JKT, "1562262618");
    args.extend(["--jwks", "/nonexistent/jwks.json"]);
    let out = popkey(&args, None);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--jkt") && err.contains("--jwks"), "{err}");
}

/// `--compat msal-js` with a proof from Microsoft's real MSAL.js code, read
/// from standard input.
#[test]
fn compat_msal_js_accepts_lower_cased_urls() {
    let url = "https://api.example.com/Orders/A1?Sort=Desc";
    let authority = super::Authority::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let shrs =
        super::msaljs::msal_shrs(&[serde_json::json!({"method": "GET", "uri": url})], |kid| {
            authority.token(serde_json::json!({"exp": now + 600, "cnf": {"kid": kid}}))
        });
    let args = |compat: bool| {
        let mut a = vec![
            "verify", "shr", "--proof", "-", "--method", "GET", "--url", url,
        ];
        if compat {
            a.extend(["--compat", "msal-js"]);
        }
        popkey(&a, Some(&shrs[0]))
    };
    let out = args(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let claims: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["p"], "/orders/a1");
    let out = args(false);
    assert!(!out.status.success());
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["error"], "url_mismatch");
}

/// Opaque tokens, nonces and thumbprints are base64url and may start with
/// `-`: they are values, never taken for flags.
#[test]
fn values_that_start_with_a_hyphen_are_values() {
    let mut args = dpop_args(
        PROOF,
        "-ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
        "1562262618",
    );
    let token = args.iter().position(|a| *a == "--access-token").unwrap() + 1;
    args[token] = "-pKz~8mXK1EalYznwH-LC-1fBAo";
    let out = popkey(&args, None);
    // Parsed as values: the verifier (exit 1) refuses the proof, the
    // argument parser (exit 2) does not.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["error"], "access_token_hash_mismatch");
}
