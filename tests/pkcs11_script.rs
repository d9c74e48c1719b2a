//! `softhsm/make-token` end to end: the environment it prints drives the
//! `popkey` CLI to create a key, show it and sign an SHR (verified by ring).
#![cfg(feature = "pkcs11")]

use popkey_testkit::common;

use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{:?} failed: {}{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn make_token_then_create_show_sign() {
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/softhsm/make-token");
    // Fails (and names the package) when softhsm2-util is missing.
    let vars = run(Command::new("bash").arg("-c").arg(format!(
        r#"set -e; eval "$('{script}' '{}' demo)"; printf '%s\n' "$SOFTHSM2_CONF" "$POPKEY_KEY" "$POPKEY_URI_PREFIX" "$POPKEY_URI_QUERY" "$POPKEY_PIN_FILE""#,
        dir.path().display()
    )));
    let v: Vec<&str> = vars.lines().collect();
    let (conf, key_uri, prefix, query, pin_file) = (v[0], v[1], v[2], v[3], v[4]);
    assert!(key_uri.starts_with("pkcs11:token=demo;object=popkey?"));
    assert_eq!(format!("{prefix}popkey{query}"), key_uri);
    assert!(std::path::Path::new(pin_file).exists());
    let popkey = |args: &[&str]| {
        run(Command::new(env!("CARGO_BIN_EXE_popkey"))
            .env("SOFTHSM2_CONF", conf)
            .env("POPKEY_KEY", key_uri)
            .args(args))
    };
    let created: serde_json::Value =
        serde_json::from_str(&popkey(&["key", "create", "--alg", "ES256"])).unwrap();
    let shown: serde_json::Value = serde_json::from_str(&popkey(&["key", "show"])).unwrap();
    assert_eq!(created["kid"], shown["kid"]);
    assert_eq!(shown["non_exportable"], true);
    let shr = popkey(&[
        "shr",
        "--method",
        "GET",
        "--url",
        "https://api.example.com/items",
        "--access-token",
        "at",
    ]);
    let (h, _) = common::verify_shr(shr.trim());
    assert_eq!(h["kid"], shown["kid"]);
    // A second run for the same label is refused.
    let again = Command::new("bash")
        .arg(script)
        .arg(dir.path())
        .arg("demo")
        .output()
        .unwrap();
    assert!(!again.status.success());
}
