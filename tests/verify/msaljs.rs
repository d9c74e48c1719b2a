//! Signed HTTP Requests made by Microsoft's own MSAL.js code
//! (`@azure/msal-browser`'s `SignedHttpRequest`, driving `@azure/msal-common`'s
//! `PopTokenGenerator`; pinned by tests/msaljs/package-lock.json) are
//! verified by popkey: header `kid` = base64url({"kid":…}), `cnf.jwk` with
//! `alg`/`ext`/`key_ops`, `q = [[], raw]`, a trailing `/` on `p`, the whole
//! URL lower-cased.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use popkey::verify::shr::ShrVerifier;
use popkey::verify::{ErrorKind, NoncePolicy, Request};
use serde_json::{json, Value};

use super::Authority;

fn msaljs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/msaljs")
}

/// Runs the real MSAL.js code for `cases`; the access token (bound to the
/// key MSAL generated) comes from `token_for(kid)`.
pub fn msal_shrs(cases: &[Value], token_for: impl FnOnce(&str) -> String) -> Vec<String> {
    assert!(
        msaljs_dir()
            .join("node_modules/@azure/msal-browser")
            .exists(),
        "@azure/msal-browser is not installed in tests/msaljs: run `npm ci` there \
         (ci/lib.sh ensure_node_modules does)"
    );
    let mut child = Command::new("node")
        .arg("make_shrs.mjs")
        .current_dir(msaljs_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node (Node.js 20+) must be installed");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    writeln!(stdin, "{}", json!({ "cases": cases })).unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let kid: Value = serde_json::from_str(&line).expect("MSAL.js key thumbprint");
    let kid = kid["kid"].as_str().unwrap().to_owned();
    writeln!(stdin, "{}", json!({ "access_token": token_for(&kid) })).unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let out: Value = serde_json::from_str(&line).expect("MSAL.js SHRs");
    assert!(child.wait().unwrap().success());
    out["shrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

struct Case {
    method: &'static str,
    url: &'static str,
    nonce: Option<&'static str>,
    claims: Option<&'static str>,
    /// The URL has upper-case letters MSAL.js lower-cases before signing:
    /// in the path (refused as url_mismatch without msal_js_compat) or only
    /// in the query (query_mismatch).
    mixed_case: Option<ErrorKind>,
}

const fn case(method: &'static str, url: &'static str, mixed_case: Option<ErrorKind>) -> Case {
    Case {
        method,
        url,
        nonce: None,
        claims: None,
        mixed_case,
    }
}

#[test]
fn msal_js_shrs_verify() {
    let cases = [
        case("GET", "https://api.example.com/items", None),
        case("GET", "https://api.example.com/items/", None),
        case("GET", "https://api.example.com/", None),
        case("GET", "https://api.example.com/items?a=1&b=two", None),
        case("POST", "https://api.example.com/orders?x=1", None),
        case("DELETE", "https://api.example.com:8443/items/42", None),
        case(
            "DELETE",
            "https://api.example.com:443/items/42?force=true",
            None,
        ),
        case(
            "GET",
            "https://api.example.com/files/a%20b?name=x%2fy&q=hello+world&e=%c3%a9",
            None,
        ),
        Case {
            nonce: Some("server-nonce-1"),
            ..case("POST", "https://api.example.com/orders", None)
        },
        Case {
            claims: Some(r#"{"device":"d1","n":2}"#),
            ..case("GET", "https://api.example.com/items?a=1", None)
        },
        case(
            "GET",
            "https://API.Example.com/Users/Alice",
            Some(ErrorKind::UrlMismatch),
        ),
        case(
            "POST",
            "https://api.example.com:8443/Files/A%2FB?Q=%2F",
            Some(ErrorKind::UrlMismatch),
        ),
        case(
            "GET",
            "https://api.example.com/users?Filter=Name",
            Some(ErrorKind::QueryMismatch),
        ),
    ];
    let input: Vec<Value> = cases
        .iter()
        .map(|c| {
            let mut v = json!({"method": c.method, "uri": c.url});
            if let Some(n) = c.nonce {
                v["shrNonce"] = n.into();
            }
            if let Some(cl) = c.claims {
                v["shrClaims"] = cl.into();
            }
            v
        })
        .collect();
    let authority = Authority::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let shrs = msal_shrs(&input, |kid| {
        authority.token(json!({"iss": "https://as.example", "aud": "api",
                               "exp": now + 600, "cnf": {"kid": kid}}))
    });
    assert_eq!(shrs.len(), cases.len());

    for (c, shr) in cases.iter().zip(&shrs) {
        // What MSAL.js sends, as the issue describes it.
        let (header, claims) = super::common::parts(shr);
        assert_eq!(header["typ"], "pop");
        assert_eq!(header["alg"], "RS256");
        let wrapped: Value =
            serde_json::from_slice(&super::common::b64d(header["kid"].as_str().unwrap())).unwrap();
        assert!(wrapped["kid"].is_string(), "{wrapped}");
        assert_eq!(claims["cnf"]["jwk"]["alg"], "RS256");
        assert_eq!(claims["cnf"]["jwk"]["key_ops"], json!(["verify"]));
        if let Some(q) = claims.get("q") {
            assert_eq!(q[0], json!([]));
            assert!(q[1].is_string());
        }
        // The signature, checked by a verifier that is not popkey's.
        super::common::ring_verify(shr, &claims["cnf"]["jwk"]);

        let req = Request::new(c.method, c.url);
        let policy = || match c.nonce {
            Some(n) => NoncePolicy::Expected(n.to_owned()),
            None => NoncePolicy::ClientChosen,
        };
        let strict = ShrVerifier::new(authority.validator.clone()).nonce(policy());
        let compat = ShrVerifier::new(authority.validator.clone())
            .nonce(policy())
            .msal_js_compat();
        let ok = compat
            .verify(shr, &req)
            .unwrap_or_else(|e| panic!("{} {}: {e}\n{claims}", c.method, c.url));
        assert_eq!(ok.thumbprint, wrapped["kid"]);
        assert!(ok.access_token_signature_checked);
        if let Some(cl) = c.claims {
            assert_eq!(ok.claims["client_claims"], cl);
        }
        match (strict.verify(shr, &req), c.mixed_case) {
            (Ok(_), None) => {}
            (Ok(_), Some(_)) => panic!("{} accepted without msal_js_compat", c.url),
            (Err(e), Some(want)) => assert_eq!(e.kind(), want, "{}: {e}", c.url),
            (Err(e), None) => panic!("{} {}: {e}\n{claims}", c.method, c.url),
        }
        // Still strict on what matters: another method, host or path.
        let other = ShrVerifier::new(authority.validator.clone())
            .nonce(policy())
            .msal_js_compat();
        let wrong_method = if c.method == "GET" { "POST" } else { "GET" };
        assert_eq!(
            other
                .verify(shr, &Request::new(wrong_method, c.url))
                .unwrap_err()
                .kind(),
            ErrorKind::MethodMismatch
        );
        assert_eq!(
            other
                .verify(
                    shr,
                    &Request::new(c.method, "https://api.example.com/elsewhere")
                )
                .unwrap_err()
                .kind(),
            ErrorKind::UrlMismatch,
        );
    }
}
