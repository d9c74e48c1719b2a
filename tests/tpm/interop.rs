//! Keys move between popkey, tpm2-tools and tpm2-openssl on one swtpm.
//!
//! popkey keeps one connection per TPM while a key is open, and swtpm
//! serves one client at a time, so each step drops its popkey keys before a
//! tool runs.

use popkey_testkit::common;
use popkey_testkit::swtpm;

use popkey::shr::SignedHttpRequest;
use popkey::{Algorithm, CreateOptions, Error, OpenOptions, PopCryptoProvider, PopKey};
use serde_json::Value;
use swtpm::{stdout, Swtpm};

fn jwk(key: &PopKey) -> Value {
    serde_json::from_str(key.canonical_public_key_jwk()).unwrap()
}

fn sign_and_verify(key: &PopKey) {
    let shr = SignedHttpRequest::new("GET", "https://api.example.com/v1/items", "at")
        .unwrap()
        .sign(key)
        .unwrap();
    let (_, p) = common::verify_shr(&shr);
    assert_eq!(p["cnf"]["jwk"], jwk(key));
}

/// Creates a key with tpm2-tools and persists it; `create_args` go to
/// tpm2_create.
fn tpm2_tools_persistent_key(tpm: &Swtpm, handle: &str, create_args: &[&str]) {
    let t = "tpm2-tools";
    tpm.tool(
        t,
        "tpm2_createprimary",
        &["-C", "o", "-g", "sha256", "-G", "ecc", "-c", "prim.ctx"],
    );
    tpm.flush_transient();
    let mut args = vec!["-C", "prim.ctx", "-u", "key.pub", "-r", "key.priv"];
    args.extend_from_slice(create_args);
    tpm.tool(t, "tpm2_create", &args);
    tpm.flush_transient();
    tpm.tool(
        t,
        "tpm2_load",
        &[
            "-C", "prim.ctx", "-u", "key.pub", "-r", "key.priv", "-c", "key.ctx",
        ],
    );
    tpm.flush_transient();
    tpm.tool(
        t,
        "tpm2_evictcontrol",
        &["-C", "o", "-c", "key.ctx", handle],
    );
    tpm.flush_transient();
}

#[test]
fn tpm2_tools_keys_by_handle() {
    let tpm = Swtpm::start();
    // An ECC key with tpm2_create's default attributes (sign and decrypt,
    // no scheme).
    tpm2_tools_persistent_key(&tpm, "0x81000010", &["-G", "ecc256"]);
    let key = PopKey::open(&tpm.uri("handle=0x81000010")).unwrap();
    assert_eq!(key.algorithm(), Algorithm::ES256);
    assert!(key.location().non_exportable);
    sign_and_verify(&key);
    drop(key);

    // An RSA key with a null scheme used for PS256, with an auth value.
    std::fs::write(tpm.file("auth"), "s3cret\n").unwrap();
    tpm2_tools_persistent_key(
        &tpm,
        "0x81000011",
        &[
            "-G",
            "rsa2048",
            "-p",
            "s3cret",
            "-a",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
        ],
    );
    let auth = tpm.file("auth").display().to_string();
    let uri = tpm.uri(&format!("handle=0x81000011;auth-source={auth};alg=PS256"));
    let key = PopKey::open(&uri).unwrap();
    assert_eq!(key.algorithm(), Algorithm::PS256);
    sign_and_verify(&key);
    drop(key);
    let uri = tpm.uri(&format!("handle=0x81000011;auth-source={auth}"));
    let key = PopKey::open(&uri).unwrap();
    assert_eq!(key.algorithm(), Algorithm::RS256);
    sign_and_verify(&key);
}

#[test]
fn tpm2_tools_exportable_key_is_refused_unless_allowed() {
    let tpm = Swtpm::start();
    tpm2_tools_persistent_key(
        &tpm,
        "0x81000012",
        &[
            "-G",
            "ecc256",
            "-a",
            "sensitivedataorigin|userwithauth|sign",
        ],
    );
    let uri = tpm.uri("handle=0x81000012");
    assert!(matches!(
        PopKey::open(&uri),
        Err(Error::ExportableKey { .. })
    ));
    let key = PopKey::open_with(&uri, &OpenOptions::new().allow_exportable(true)).unwrap();
    assert!(!key.location().non_exportable);
    sign_and_verify(&key);
}

/// A tpm2_create blob under a persistent parent, encoded with
/// tpm2_encodeobject, opened as a key file.
#[test]
fn tpm2_tools_blob_under_persistent_parent() {
    let tpm = Swtpm::start();
    let t = "tpm2-tools";
    tpm.tool(
        t,
        "tpm2_createprimary",
        &["-C", "o", "-g", "sha256", "-G", "ecc", "-c", "prim.ctx"],
    );
    tpm.flush_transient();
    tpm.tool(
        t,
        "tpm2_evictcontrol",
        &["-C", "o", "-c", "prim.ctx", "0x81000001"],
    );
    tpm.flush_transient();
    tpm.tool(
        t,
        "tpm2_create",
        &[
            "-C",
            "0x81000001",
            "-G",
            "ecc256",
            "-u",
            "key.pub",
            "-r",
            "key.priv",
        ],
    );
    tpm.flush_transient();
    tpm.tool(
        t,
        "tpm2_encodeobject",
        &[
            "-C",
            "0x81000001",
            "-u",
            "key.pub",
            "-r",
            "key.priv",
            "-o",
            "key.pem",
        ],
    );
    tpm.flush_transient();
    let path = tpm.file("key.pem");
    let key = PopKey::open(&tpm.uri(&format!("path={}", path.display()))).unwrap();
    sign_and_verify(&key);
}

fn openssl(tpm: &Swtpm, args: &[&str]) -> std::process::Output {
    let out = tpm.try_tool("openssl", "openssl", args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("unable to load provider tpm2"),
        "the tpm2 OpenSSL provider is missing: install the Debian package `tpm2-openssl`\n{err}"
    );
    assert!(out.status.success(), "openssl {args:?}: {err}");
    out
}

#[test]
fn openssl_genpkey_key_used_by_popkey() {
    let tpm = Swtpm::start();
    openssl(
        &tpm,
        &[
            "genpkey",
            "-provider",
            "tpm2",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "group:P-256",
            "-out",
            "key.pem",
        ],
    );
    let spki = openssl(
        &tpm,
        &[
            "pkey",
            "-provider",
            "tpm2",
            "-provider",
            "default",
            "-in",
            "key.pem",
            "-pubout",
            "-outform",
            "DER",
        ],
    )
    .stdout;
    tpm.flush_transient();
    let path = tpm.file("key.pem");
    let key = PopKey::open(&tpm.uri(&format!("path={}", path.display()))).unwrap();
    assert_eq!(key.public_jwk().to_spki_der().unwrap(), spki);
    assert!(key.location().non_exportable);
    sign_and_verify(&key);
}

#[test]
fn popkey_key_file_used_by_openssl() {
    let tpm = Swtpm::start();
    let path = tpm.file("key.pem");
    let key = PopKey::create(
        &tpm.uri(&format!("path={}", path.display())),
        &CreateOptions::new(),
    )
    .unwrap();
    let jwk = jwk(&key);
    let spki = key.public_jwk().to_spki_der().unwrap();
    drop(key);

    let theirs = openssl(
        &tpm,
        &[
            "pkey",
            "-provider",
            "tpm2",
            "-provider",
            "default",
            "-in",
            "key.pem",
            "-pubout",
            "-outform",
            "DER",
        ],
    )
    .stdout;
    assert_eq!(theirs, spki, "openssl reads the public key popkey reported");

    let message = b"signed by openssl with a popkey key";
    std::fs::write(tpm.file("msg"), message).unwrap();
    openssl(
        &tpm,
        &[
            "dgst",
            "-sha256",
            "-sign",
            "key.pem",
            "-provider",
            "tpm2",
            "-provider",
            "default",
            "-propquery",
            "?provider=tpm2",
            "-out",
            "sig.der",
            "msg",
        ],
    );
    let sig = std::fs::read(tpm.file("sig.der")).unwrap();
    let mut point = vec![4u8];
    point.extend(common::b64d(jwk["x"].as_str().unwrap()));
    point.extend(common::b64d(jwk["y"].as_str().unwrap()));
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
        .verify(message, &sig)
        .expect("ring verifies openssl's signature against popkey's JWK");

    // tpm2-tools parses the file as well.
    let printed = stdout(&tpm.tool(
        "tpm2-tools",
        "tpm2_print",
        &["-t", "TSSPRIVKEY_OBJ", "key.pem"],
    ));
    assert!(printed.contains("fixedtpm|fixedparent"), "{printed}");
}
