//! The `popkey` binary, run as a user would, its output checked by joserfc
//! (Python) and ring.

use popkey_testkit::common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use serde_json::Value;

fn popkey(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_popkey"))
        .args(args)
        .env_remove("POPKEY_KEY")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = popkey(args);
    assert!(
        out.status.success(),
        "popkey {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = popkey(args);
    assert!(!out.status.success(), "popkey {args:?} should fail");
    assert!(out.stdout.is_empty(), "nothing on stdout when failing");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn key_create_and_show_print_the_description() {
    let dir = tempfile::tempdir().unwrap();
    for alg in ["ES256", "RS256", "PS256"] {
        let path = dir.path().join(format!("{alg}.pem"));
        let uri = format!("file:{}", path.display());
        let created: Value =
            serde_json::from_str(&ok(&["key", "create", "--key", &uri, "--alg", alg])).unwrap();
        let keys: Vec<&str> = created
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "alg",
                "backend",
                "device",
                "hardware",
                "jwk",
                "kid",
                "non_exportable",
                "uri"
            ]
        );
        assert_eq!(created["device"], Value::Null);
        assert_eq!(created["hardware"], false);
        assert_eq!(created["alg"], alg);
        assert_eq!(created["backend"], "file");
        assert_eq!(created["non_exportable"], false);
        assert_eq!(created["kid"], common::thumbprint(&created["jwk"]));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let shown: Value = serde_json::from_str(&ok(&[
            "key",
            "show",
            "--key",
            created["uri"].as_str().unwrap(),
        ]))
        .unwrap();
        assert_eq!(shown, created);
        // A second create refuses; --force replaces.
        let err = fails(&["key", "create", "--key", &uri, "--alg", alg]);
        assert!(
            err.contains("already exists") && err.contains("--force"),
            "{err}"
        );
        let forced: Value = serde_json::from_str(&ok(&[
            "key", "create", "--key", &uri, "--alg", alg, "--force",
        ]))
        .unwrap();
        assert_ne!(forced["kid"], created["kid"]);
    }
}

#[test]
fn shr_and_dpop_verify_with_joserfc() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, br#"{"a":1}"#).unwrap();
    let mut tokens = Vec::new();
    let mut kids = Vec::new();
    for alg in ["ES256", "RS256", "PS256"] {
        let path = dir.path().join(format!("{alg}.pem"));
        let uri = format!("file:{}", path.display());
        let desc: Value =
            serde_json::from_str(&ok(&["key", "create", "--key", &uri, "--alg", alg])).unwrap();
        let uri = desc["uri"].as_str().unwrap().to_owned();
        let shr = ok(&[
            "shr",
            "--key",
            &uri,
            "--method",
            "POST",
            "--url",
            "https://api.example.com:8443/v1/x?b=bar&a=foo",
            "--access-token",
            "at.at.at",
            "--nonce",
            "n1",
            "--sign-query",
            "--header",
            "Content-Type: application/json",
            "--body-file",
            body.to_str().unwrap(),
            "--client-claims",
            r#"{"c":1}"#,
        ]);
        assert!(
            shr.ends_with('\n') && shr.trim().split('.').count() == 3,
            "only the compact SHR: {shr:?}"
        );
        let dpop = ok(&[
            "dpop",
            "--key",
            &uri,
            "--method",
            "GET",
            "--url",
            "https://api.example.com/r?x=1",
            "--access-token",
            "at.at.at",
            "--nonce",
            "srv",
        ]);
        tokens.push(("shr", shr.trim().to_owned()));
        tokens.push(("dpop", dpop.trim().to_owned()));
        kids.push(desc["kid"].as_str().unwrap().to_owned());
    }
    let pairs: Vec<(&str, &str)> = tokens.iter().map(|(k, t)| (*k, t.as_str())).collect();
    let results = common::joserfc_verify(&pairs);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(
            r["ok"], true,
            "joserfc rejected {:?}: {}",
            pairs[i], r["error"]
        );
        assert_eq!(r["thumbprint"], kids[i / 2].as_str());
        if pairs[i].0 == "shr" {
            common::verify_shr(pairs[i].1);
            let c = &r["claims"];
            assert_eq!(r["header"]["kid"], kids[i / 2].as_str());
            assert_eq!(c["u"], "api.example.com:8443");
            assert_eq!(c["q"][0], serde_json::json!(["b", "a"]));
            assert_eq!(c["h"][0], serde_json::json!(["content-type"]));
            assert!(c["b"].is_string());
            assert_eq!(c["nonce"], "n1");
        } else {
            common::verify_dpop(pairs[i].1);
            assert_eq!(r["claims"]["htu"], "https://api.example.com/r");
            assert_eq!(r["claims"]["ath"], popkey::dpop::ath("at.at.at"));
            assert_eq!(r["header"]["typ"], "dpop+jwt");
        }
    }
}

#[test]
fn req_cnf_and_key_from_environment() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("file:{}", dir.path().join("k.pem").display());
    let desc: Value = serde_json::from_str(&ok(&["key", "create", "--key", &uri])).unwrap();
    assert_eq!(desc["alg"], "ES256", "ES256 is the default");
    let out = Command::new(env!("CARGO_BIN_EXE_popkey"))
        .args(["req-cnf"])
        .env("POPKEY_KEY", &uri)
        .output()
        .unwrap();
    assert!(out.status.success());
    let req_cnf = String::from_utf8(out.stdout).unwrap();
    let v: Value = serde_json::from_slice(&common::b64d(req_cnf.trim())).unwrap();
    assert_eq!(v, serde_json::json!({"kid": desc["kid"]}));
}

#[test]
fn bench_prints_raw_beside_protocol_costs() {
    let out: Value = serde_json::from_str(&ok(&[
        "bench",
        "--key",
        "mem:",
        "--seconds",
        "0.2",
        "--threads",
        "2",
    ]))
    .unwrap();
    for name in [
        "raw_sign",
        "shr",
        "dpop",
        "raw_verify",
        "verify_shr",
        "verify_dpop",
    ] {
        assert!(out[format!("{name}_per_sec")].as_f64().unwrap() > 0.0);
        let p50 = out[format!("{name}_p50_us")].as_f64().unwrap();
        let p99 = out[format!("{name}_p99_us")].as_f64().unwrap();
        assert!(p50 > 0.0 && p99 >= p50);
    }
    assert!(out["shr_vs_raw"].as_f64().unwrap() > 0.0);
    // The overheads are p50 differences, so they are consistent with the
    // p50s printed beside them (their sign is not asserted: no timings).
    for (overhead, full, raw) in [
        ("verify_shr_overhead_us", "verify_shr", "raw_verify"),
        ("verify_dpop_overhead_us", "verify_dpop", "raw_verify_dpop"),
    ] {
        let p50 = |n: &str| out[format!("{n}_p50_us")].as_f64().unwrap();
        let got = out[overhead].as_f64().unwrap();
        assert!(
            (got - (p50(full) - p50(raw))).abs() <= 0.16,
            "{overhead}: {got}"
        );
    }
    assert_eq!(out["threads"], 2);
    // The crypto libraries' own figures, the pure-Rust one always among them.
    let libs = out["crypto_libraries"].as_object().unwrap();
    assert!(libs["rust-crypto"]["verify_per_sec"].as_f64().unwrap() > 0.0);
    assert!(libs.contains_key(popkey::crypto_provider()));
}

#[test]
fn bad_input_fails_with_a_message_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("k.pem");
    let existing_uri = format!("file:{}", existing.display());
    ok(&["key", "create", "--key", &existing_uri]);
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key").unwrap();
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let junk_uri = format!("file:{}", junk.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["key", "show", "--key", "nope"], "invalid key URI"),
        (vec!["key", "show", "--key", "mem:?alg=HS256"], "alg"),
        (
            vec!["key", "create", "--key", "mem:", "--alg", "ES512"],
            "unsupported algorithm",
        ),
        (vec!["key", "show", "--key", &junk_uri], "malformed key"),
        (
            vec!["key", "show", "--key", "file:/nonexistent/k.pem"],
            "no key found",
        ),
        (
            vec![
                "shr",
                "--key",
                "mem:",
                "--method",
                "get",
                "--url",
                "https://a.example/",
                "--access-token",
                "t",
            ],
            "uppercase",
        ),
        (
            vec![
                "shr",
                "--key",
                "mem:",
                "--method",
                "",
                "--url",
                "https://a.example/",
                "--access-token",
                "t",
            ],
            "method is empty",
        ),
        (
            vec![
                "shr",
                "--key",
                "mem:",
                "--method",
                "GET",
                "--url",
                "https://",
                "--access-token",
                "t",
            ],
            "URL",
        ),
        (
            vec![
                "shr",
                "--key",
                "mem:",
                "--method",
                "GET",
                "--url",
                "https://a.example/",
            ],
            "access token",
        ),
        (
            vec![
                "shr",
                "--key",
                "mem:",
                "--method",
                "GET",
                "--url",
                "https://a.example/",
                "--access-token",
                "t",
                "--header",
                "nocolon",
            ],
            "Name: value",
        ),
        (
            vec![
                "shr",
                "--key",
                "mem:",
                "--method",
                "GET",
                "--url",
                "https://a.example/",
                "--access-token",
                "t",
                "--client-claims",
                "[]",
            ],
            "JSON object",
        ),
        (
            vec![
                "dpop",
                "--key",
                "mem:",
                "--method",
                "GET",
                "--url",
                "/relative",
            ],
            "absolute URL",
        ),
        (vec!["bench", "--key", "mem:", "--seconds=-1"], "--seconds"),
        (
            vec!["bench", "--key", "mem:", "--seconds", "0"],
            "--seconds",
        ),
    ];
    for (args, needle) in cases {
        let err = fails(&args);
        assert!(
            err.contains(needle),
            "popkey {args:?}: expected `{needle}` in {err:?}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // No --key and no POPKEY_KEY: clap names the missing option.
    assert!(fails(&["req-cnf"]).contains("--key"));
}

#[test]
fn verify_commands_accept_good_proofs_and_name_each_rejection() {
    use popkey::{PopCryptoProvider, PopKey};
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("file:{}", dir.path().join("client.pem").display());
    let desc: Value = serde_json::from_str(&ok(&["key", "create", "--key", &uri])).unwrap();
    let kid = desc["kid"].as_str().unwrap();
    // An authority key and a JWKS for it; a token bound to the client key.
    let authority = PopKey::open("mem:").unwrap();
    let mut jwk: Value = serde_json::from_str(authority.canonical_public_key_jwk()).unwrap();
    jwk["kid"] = "as-1".into();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({"keys": [jwk]}).to_string()).unwrap();
    let claims = serde_json::json!({"iss": "https://as.example", "aud": "api", "exp": 4_000_000_000u64, "cnf": {"kid": kid, "jkt": kid}});
    let at = {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"as-1","typ":"at+jwt"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = authority.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    };
    let jwks_s = jwks.to_str().unwrap();
    let url = "https://api.example.com/v1/x?y=1";

    let shr = ok(&[
        "shr",
        "--key",
        &uri,
        "--method",
        "GET",
        "--url",
        url,
        "--access-token",
        &at,
        "--ts",
        "1800000000",
        "--nonce",
        "n-1",
    ]);
    let shr = shr.trim();
    let verified: Value = serde_json::from_str(&ok(&[
        "verify",
        "shr",
        "--proof",
        shr,
        "--method",
        "GET",
        "--url",
        url,
        "--now",
        "1800000010",
        "--jwks",
        jwks_s,
        "--issuer",
        "https://as.example",
        "--audience",
        "api",
        "--nonce",
        "n-1",
    ]))
    .unwrap();
    assert_eq!(verified["m"], "GET");
    assert_eq!(verified["ts"], 1_800_000_000u64);

    let reject = |args: &[&str], want: &str| {
        let out = popkey(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["error"], want, "{v}");
        assert!(v["message"].as_str().unwrap().len() > 5);
    };
    reject(
        &[
            "verify",
            "shr",
            "--proof",
            shr,
            "--method",
            "POST",
            "--url",
            url,
            "--now",
            "1800000010",
        ],
        "method_mismatch",
    );
    reject(
        &[
            "verify",
            "shr",
            "--proof",
            shr,
            "--method",
            "GET",
            "--url",
            url,
            "--now",
            "1800000400",
        ],
        "expired",
    );
    reject(
        &[
            "verify",
            "shr",
            "--proof",
            shr,
            "--method",
            "GET",
            "--url",
            url,
            "--now",
            "1800000400",
            "--max-age",
            "100",
        ],
        "expired",
    );
    reject(
        &[
            "verify",
            "shr",
            "--proof",
            shr,
            "--method",
            "GET",
            "--url",
            url,
            "--now",
            "1800000010",
            "--nonce",
            "n-2",
        ],
        "invalid_nonce",
    );
    reject(
        &[
            "verify",
            "shr",
            "--proof",
            shr,
            "--method",
            "GET",
            "--url",
            url,
            "--now",
            "1800000010",
            "--jwks",
            jwks_s,
            "--audience",
            "other",
        ],
        "invalid_access_token",
    );
    reject(
        &[
            "verify", "shr", "--proof", "abc", "--method", "GET", "--url", url,
        ],
        "malformed",
    );

    let dpop = ok(&[
        "dpop",
        "--key",
        &uri,
        "--method",
        "GET",
        "--url",
        url,
        "--access-token",
        &at,
        "--iat",
        "1800000000",
        "--nonce",
        "srv",
    ]);
    let dpop = dpop.trim();
    let verified: Value = serde_json::from_str(&ok(&[
        "verify",
        "dpop",
        "--proof",
        dpop,
        "--method",
        "GET",
        "--url",
        url,
        "--access-token",
        &at,
        "--now",
        "1800000001",
        "--nonce",
        "srv",
        "--jwks",
        jwks_s,
    ]))
    .unwrap();
    assert_eq!(verified["htu"], "https://api.example.com/v1/x");
    reject(
        &[
            "verify",
            "dpop",
            "--proof",
            dpop,
            "--method",
            "GET",
            "--url",
            "https://api.example.com/other",
            "--access-token",
            &at,
            "--now",
            "1800000001",
        ],
        "url_mismatch",
    );
    reject(
        &[
            "verify",
            "dpop",
            "--proof",
            dpop,
            "--method",
            "GET",
            "--url",
            url,
            "--access-token",
            "other.token.x",
            "--now",
            "1800000001",
        ],
        "access_token_hash_mismatch",
    );
    reject(
        &[
            "verify",
            "dpop",
            "--proof",
            dpop,
            "--method",
            "GET",
            "--url",
            url,
            "--access-token",
            &at,
            "--now",
            "1800000001",
            "--nonce",
            "other",
        ],
        "invalid_nonce",
    );
    // A bad JWKS path is a usage error, not a rejection.
    let out = popkey(&[
        "verify",
        "dpop",
        "--proof",
        dpop,
        "--method",
        "GET",
        "--url",
        url,
        "--jwks",
        "/nonexistent",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read JWKS"));
}
