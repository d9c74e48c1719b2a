//! TPM keys on a private swtpm: create, show and sign SHR and DPoP with
//! ES256, RS256 and PS256, by key file and by persistent handle. Every
//! signature is verified with `ring` (tests/support/common.rs), not with popkey.

use popkey_testkit::common;
use popkey_testkit::swtpm;

use popkey::dpop::DpopProof;
use popkey::shr::SignedHttpRequest;
use popkey::{Algorithm, CreateOptions, Error, PopCryptoProvider, PopKey};
use serde_json::Value;
use swtpm::{stdout, Swtpm};

fn jwk(key: &PopKey) -> Value {
    serde_json::from_str(key.canonical_public_key_jwk()).unwrap()
}

/// Checks what the key reports and signs an SHR and a DPoP proof with it.
fn exercise(key: &PopKey, alg: Algorithm) {
    assert_eq!(key.algorithm(), alg);
    let loc = key.location();
    assert_eq!(loc.backend, popkey::BackendKind::Tpm);
    // swtpm: a software TPM (swtpm_is_reported_as_a_software_device).
    assert!(!loc.hardware);
    assert!(
        loc.non_exportable,
        "fixedTPM|fixedParent keys are non-exportable"
    );
    let jwk = jwk(key);
    assert_eq!(key.kid(), common::thumbprint(&jwk));

    let shr = SignedHttpRequest::new("GET", "https://api.example.com/v1/items?page=2", "at")
        .unwrap()
        .sign(key)
        .unwrap();
    let (h, p) = common::verify_shr(&shr);
    assert_eq!(h["alg"], alg.as_str());
    assert_eq!(h["kid"], key.kid());
    assert_eq!(p["cnf"]["jwk"], jwk);

    let dpop = DpopProof::new("POST", "https://login.example.com/token")
        .unwrap()
        .sign(key)
        .unwrap();
    let (h, _) = common::verify_dpop(&dpop);
    assert_eq!(h["alg"], alg.as_str());
    assert_eq!(h["jwk"], jwk);
}

fn create_show_sign(alg: Algorithm) {
    let tpm = Swtpm::start();
    let opts = CreateOptions::new().alg(alg);

    // A key file.
    let path = tpm.file("key.pem");
    let file_uri = tpm.uri(&format!("path={}", path.display()));
    let created = PopKey::create(&file_uri, &opts).unwrap();
    exercise(&created, alg);
    let file_jwk = created.public_jwk().clone();
    let reopen_uri = created.uri().to_owned();
    drop(created);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let pem = std::fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN TSS2 PRIVATE KEY-----\n"));
    // The reported URI reopens the same key; the key's own scheme gives
    // the algorithm, so the plain URI does too.
    for uri in [&reopen_uri, &file_uri] {
        let opened = PopKey::open(uri).unwrap();
        assert_eq!(opened.public_jwk(), &file_jwk);
        exercise(&opened, alg);
    }
    assert!(matches!(
        PopKey::create(&file_uri, &opts),
        Err(Error::KeyExists(_))
    ));

    // A persistent handle.
    let handle_uri = tpm.uri("handle=0x81000100");
    let created = PopKey::create(&handle_uri, &opts).unwrap();
    exercise(&created, alg);
    let handle_jwk = created.public_jwk().clone();
    assert_ne!(handle_jwk, file_jwk);
    drop(created);
    let opened = PopKey::open(&handle_uri).unwrap();
    assert_eq!(opened.public_jwk(), &handle_jwk);
    exercise(&opened, alg);
    match PopKey::create(&handle_uri, &opts) {
        Err(Error::KeyExists(msg)) => assert!(msg.contains("0x81000100"), "{msg}"),
        other => panic!("an occupied handle must be refused: {other:?}"),
    }
    drop(opened);

    // What the TPM itself says (the connection is closed once no key uses it).
    let out = tpm.tool("tpm2-tools", "tpm2_readpublic", &["-c", "0x81000100"]);
    let text = stdout(&out);
    let attrs = text
        .lines()
        .skip_while(|l| !l.starts_with("attributes:"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        attrs.contains("fixedtpm") && attrs.contains("fixedparent") && attrs.contains("sign"),
        "{text}"
    );
    assert!(
        !attrs.contains("decrypt") && !attrs.contains("restricted"),
        "{text}"
    );
    let path_arg = path.display().to_string();
    let out = tpm.tool(
        "tpm2-tools",
        "tpm2_print",
        &["-t", "TSSPRIVKEY_OBJ", &path_arg],
    );
    let text = stdout(&out);
    assert!(
        text.contains("fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign"),
        "{text}"
    );
}

#[test]
fn es256_file_and_handle() {
    create_show_sign(Algorithm::ES256);
}

#[test]
fn rs256_file_and_handle() {
    create_show_sign(Algorithm::RS256);
}

#[test]
fn ps256_file_and_handle() {
    create_show_sign(Algorithm::PS256);
}

#[test]
fn force_replaces_a_persistent_key() {
    let tpm = Swtpm::start();
    let uri = tpm.uri("handle=0x81000123");
    let first = PopKey::create(&uri, &CreateOptions::new()).unwrap();
    let first_jwk = first.public_jwk().clone();
    drop(first);
    let second = PopKey::create(&uri, &CreateOptions::new().overwrite(true)).unwrap();
    assert_ne!(second.public_jwk(), &first_jwk);
    exercise(&second, Algorithm::ES256);
}

/// The CLI end to end: `key create`, `key show`, `shr`.
#[test]
fn cli_create_show_shr() {
    let tpm = Swtpm::start();
    let bin = env!("CARGO_BIN_EXE_popkey");
    let path = tpm.file("cli.pem");
    let uri = tpm.uri(&format!("path={}", path.display()));
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .env("TSS2_LOG", "all+none")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "popkey {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let created: Value =
        serde_json::from_str(&run(&["key", "create", "--key", &uri, "--alg", "ES256"])).unwrap();
    let shown: Value = serde_json::from_str(&run(&["key", "show", "--key", &uri])).unwrap();
    assert_eq!(created["jwk"], shown["jwk"]);
    assert_eq!(shown["backend"], "tpm");
    assert_eq!(shown["hardware"], false);
    assert_eq!(shown["device"]["kind"], "software");
    assert_eq!(shown["non_exportable"], true);
    assert_eq!(shown["alg"], "ES256");
    let shr = run(&[
        "shr",
        "--key",
        &uri,
        "--method",
        "GET",
        "--url",
        "https://api.example.com/",
        "--access-token",
        "at",
    ]);
    let (h, p) = common::verify_shr(shr.trim());
    assert_eq!(h["kid"], shown["kid"]);
    assert_eq!(p["cnf"]["jwk"], shown["jwk"]);
}

/// The `raw:` and `value:` lines `tpm2_getcap properties-fixed` prints
/// under `name:`.
fn getcap(listing: &str, name: &str) -> (u32, Option<String>) {
    let mut lines = listing
        .lines()
        .skip_while(|l| l.trim_end() != format!("{name}:"));
    assert!(lines.next().is_some(), "no {name} in:\n{listing}");
    let mut raw = None;
    let mut value = None;
    for l in lines.take_while(|l| l.starts_with(' ')) {
        let l = l.trim();
        if let Some(r) = l.strip_prefix("raw: ") {
            raw = Some(match r.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).unwrap(),
                None => r.parse().unwrap(),
            });
        } else if let Some(v) = l.strip_prefix("value: ") {
            value = Some(v.trim_matches('"').to_owned());
        }
    }
    (
        raw.unwrap_or_else(|| panic!("no raw value for {name}")),
        value,
    )
}

/// swtpm is a software TPM: `hardware` is false, and the device description
/// is what the TPM reports, compared with tpm2-tools' `tpm2_getcap
/// properties-fixed`.
#[test]
fn swtpm_is_reported_as_a_software_device() {
    let tpm = Swtpm::start();
    let path = tpm.file("device.pem");
    let key = PopKey::create(
        &tpm.uri(&format!("path={}", path.display())),
        &CreateOptions::new(),
    )
    .unwrap();
    let loc = key.location();
    assert!(!loc.hardware);
    let device = loc.device.as_ref().expect("a TPM key reports its device");
    assert_eq!(device.kind, popkey::DeviceKind::Software);
    assert!(device.known_as.is_some());

    let listing = stdout(&tpm.tool("tpm2-tools", "tpm2_getcap", &["properties-fixed"]));
    let value = |name: &str| getcap(&listing, name).1.unwrap_or_default();
    assert_eq!(
        device.manufacturer.as_deref(),
        Some(value("TPM2_PT_MANUFACTURER").as_str())
    );
    let vendor: Vec<String> = (1..=4)
        .map(|i| value(&format!("TPM2_PT_VENDOR_STRING_{i}")))
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.trim().to_owned())
        .collect();
    assert!(
        vendor.iter().any(|v| v == "SW") && vendor.iter().any(|v| v == "TPM"),
        "swtpm's vendor strings: {vendor:?}"
    );
    assert_eq!(device.model.as_deref(), Some(vendor.join(" ").as_str()));
    let (fw1, _) = getcap(&listing, "TPM2_PT_FIRMWARE_VERSION_1");
    let (fw2, _) = getcap(&listing, "TPM2_PT_FIRMWARE_VERSION_2");
    assert_eq!(
        device.firmware.as_deref(),
        Some(
            format!(
                "{}.{}.{}.{}",
                fw1 >> 16,
                fw1 & 0xffff,
                fw2 >> 16,
                fw2 & 0xffff
            )
            .as_str()
        )
    );
    let family = value("TPM2_PT_FAMILY_INDICATOR");
    let revision = value("TPM2_PT_REVISION");
    assert_eq!(
        device.description.as_deref(),
        Some(format!("TPM {family}, revision {revision}").as_str())
    );
}
