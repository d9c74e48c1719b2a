//! Bad input to the TPM backend gets typed errors naming the cause; nothing
//! panics.

use popkey_testkit::swtpm;

use popkey::{Algorithm, CreateOptions, Error, PopKey, TpmError};
use swtpm::Swtpm;

fn open_err(uri: &str) -> Error {
    match PopKey::open(uri) {
        Ok(k) => panic!("{uri} opened: {k:?}"),
        Err(e) => e,
    }
}

#[test]
fn malformed_uris_and_tctis() {
    for uri in [
        "tpm:",
        "tpm:handle=0x80000001",
        "tpm:handle=0x81000001;path=/k.pem",
        "tpm:handle=0x81000001;frob=1",
    ] {
        assert!(matches!(open_err(uri), Error::InvalidUri { .. }), "{uri}");
    }
    for tcti in [
        "bogus:x",
        "swtpm:port=abc",
        "swtpm:port=99999",
        "swtpm:hots=127.0.0.1",
        "device:relative/path",
    ] {
        let uri = format!("tpm:handle=0x81000001;tcti={tcti}");
        match open_err(&uri) {
            Error::Tpm(TpmError::InvalidTcti { reason, .. }) => assert!(!reason.is_empty()),
            other => panic!("{tcti}: {other:?}"),
        }
    }
}

#[test]
fn no_tpm_reachable() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uri = format!("tpm:handle=0x81000001;tcti=swtpm:host=127.0.0.1,port={port}");
    match open_err(&uri) {
        Error::Tpm(TpmError::Unreachable { tcti, reason }) => {
            assert!(tcti.contains(&port.to_string()));
            assert!(reason.contains("swtpm"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let uri = "tpm:handle=0x81000001;tcti=device:/dev/no-such-tpm";
    match open_err(uri) {
        Error::Tpm(TpmError::Unreachable { reason, .. }) => {
            assert!(reason.contains("does not exist"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_handle_missing_file_and_key_type_mismatch() {
    let tpm = Swtpm::start();
    match open_err(&tpm.uri("handle=0x81000999")) {
        Error::KeyNotFound(msg) => assert!(msg.contains("0x81000999"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let missing = tpm.file("missing.pem");
    assert!(matches!(
        open_err(&tpm.uri(&format!("path={}", missing.display()))),
        Error::KeyNotFound(_)
    ));

    let ec = PopKey::create(&tpm.uri("handle=0x81000001"), &CreateOptions::new()).unwrap();
    drop(ec);
    for alg in ["RS256", "PS256"] {
        assert!(matches!(
            open_err(&tpm.uri(&format!("handle=0x81000001;alg={alg}"))),
            Error::AlgorithmMismatch(_)
        ));
    }
    // An RS256 key's scheme is fixed: it cannot be used for PS256.
    let rsa_path = tpm.file("rs.pem");
    let rsa_uri = tpm.uri(&format!("path={}", rsa_path.display()));
    drop(PopKey::create(&rsa_uri, &CreateOptions::new().alg(Algorithm::RS256)).unwrap());
    for alg in ["ES256", "PS256"] {
        let uri = tpm.uri(&format!("path={};alg={alg}", rsa_path.display()));
        match open_err(&uri) {
            Error::AlgorithmMismatch(msg) => assert!(msg.contains(alg), "{msg}"),
            other => panic!("{alg}: {other:?}"),
        }
    }
    // An occupied handle is refused before any key is generated.
    match PopKey::create(&tpm.uri("handle=0x81000001"), &CreateOptions::new()) {
        Err(Error::KeyExists(msg)) => assert!(msg.contains("0x81000001")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_and_foreign_key_files() {
    let tpm = Swtpm::start();
    let cases: &[(&str, &[u8])] = &[
        ("empty.pem", b""),
        ("text.pem", b"not a key\n"),
        ("binary.pem", &[0xff, 0xfe, 0x00, 0x01]),
        (
            "pkcs8.pem",
            b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n",
        ),
        (
            "tpm12.pem",
            b"-----BEGIN TSS KEY BLOB-----\nBIIBOQEBAAAA\n-----END TSS KEY BLOB-----\n",
        ),
        (
            "garbage.pem",
            b"-----BEGIN TSS2 PRIVATE KEY-----\nMAMCAQE=\n-----END TSS2 PRIVATE KEY-----\n",
        ),
    ];
    for (name, bytes) in cases {
        let path = tpm.file(name);
        std::fs::write(&path, bytes).unwrap();
        match open_err(&tpm.uri(&format!("path={}", path.display()))) {
            Error::MalformedKey { reason, .. } => assert!(!reason.is_empty()),
            other => panic!("{name}: {other:?}"),
        }
    }

    // A valid file whose public area was tampered with: the DER is fine,
    // the TPM2B is not.
    let good = tpm.file("good.pem");
    let uri = tpm.uri(&format!("path={}", good.display()));
    drop(PopKey::create(&uri, &CreateOptions::new()).unwrap());
    let pem = std::fs::read_to_string(&good).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = base64_decode(&body);
    // Offset 24: the first byte of the TPM2B_PUBLIC size (after the
    // SEQUENCE header, the OID, emptyAuth, the parent and the OCTET STRING
    // header: 3 + 8 + 5 + 6 + 2).
    assert_eq!(der[22], 0x04, "OCTET STRING");
    der[24] ^= 0x40;
    let bad = tpm.file("tampered.pem");
    std::fs::write(&bad, pem_encode(&der)).unwrap();
    match open_err(&tpm.uri(&format!("path={}", bad.display()))) {
        Error::MalformedKey { reason, .. } => assert!(reason.contains("TPM2B"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_or_missing_auth_value() {
    let tpm = Swtpm::start();
    std::fs::write(tpm.file("right"), "correct horse\n").unwrap();
    std::fs::write(tpm.file("wrong"), "battery staple\n").unwrap();
    let path = tpm.file("key.pem");
    let with = |auth: &str| {
        tpm.uri(&format!(
            "path={};auth-source={}",
            path.display(),
            tpm.file(auth).display()
        ))
    };
    let key = PopKey::create(&with("right"), &CreateOptions::new()).unwrap();
    let jwk = key.public_jwk().clone();
    drop(key);
    assert_eq!(PopKey::open(&with("right")).unwrap().public_jwk(), &jwk);
    match open_err(&with("wrong")) {
        Error::Tpm(TpmError::AuthFailed { reason, .. }) => {
            assert!(reason.contains("auth-source"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    match open_err(&tpm.uri(&format!("path={}", path.display()))) {
        Error::Tpm(TpmError::AuthFailed { .. }) => {}
        other => panic!("{other:?}"),
    }
    let missing = tpm.uri(&format!(
        "path={};auth-source={}",
        path.display(),
        tpm.file("nope").display()
    ));
    assert!(matches!(open_err(&missing), Error::Io { .. }));
    std::fs::write(tpm.file("long"), "x".repeat(33)).unwrap();
    assert!(matches!(
        open_err(&with("long")),
        Error::Tpm(TpmError::AuthFailed { .. })
    ));
}

/// A key file from another TPM: the load fails its integrity check.
#[test]
fn key_file_from_another_tpm() {
    let a = Swtpm::start();
    let b = Swtpm::start();
    let path = a.file("key.pem");
    drop(
        PopKey::create(
            &a.uri(&format!("path={}", path.display())),
            &CreateOptions::new(),
        )
        .unwrap(),
    );
    match open_err(&b.uri(&format!("path={}", path.display()))) {
        Error::Tpm(TpmError::KeyUnloadable { reason, .. }) => {
            assert!(reason.contains("another TPM"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn pem_encode(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN TSS2 PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str("-----END TSS2 PRIVATE KEY-----\n");
    out
}
