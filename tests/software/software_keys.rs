//! `mem:` and `file:` keys, keys made by OpenSSL, the pair proof, and bad input.

use popkey_testkit::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use popkey::{Algorithm, CreateOptions, Error, PopCryptoProvider, PopKey, PublicJwk};

fn file_uri(p: &Path) -> String {
    format!("file:{}", p.display())
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is needed for this test: apt-get install openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

fn chmod600(p: &Path) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn file_keys_round_trip_for_every_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    for alg in Algorithm::ALL {
        let path = dir.path().join(format!("{alg}.pem"));
        let created = PopKey::create(&file_uri(&path), &CreateOptions::new().alg(alg)).unwrap();
        assert_eq!(created.algorithm(), alg);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
        // The URI the key reports reopens the same key with the same alg.
        let reopened = PopKey::open(created.uri()).unwrap();
        assert_eq!(reopened.kid(), created.kid());
        assert_eq!(reopened.algorithm(), alg);
        assert!(!reopened.location().non_exportable);
        assert_eq!(reopened.location().backend, popkey::BackendKind::File);
        // And OpenSSL reads the file and agrees on the public key.
        let out = Command::new("openssl")
            .args(["pkey", "-in"])
            .arg(&path)
            .args(["-pubout", "-outform", "DER"])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, reopened.public_jwk().to_spki_der().unwrap());
    }
}

#[test]
fn create_refuses_to_overwrite_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    let uri = file_uri(&path);
    let first = PopKey::create(&uri, &CreateOptions::new()).unwrap();
    let err = PopKey::create(&uri, &CreateOptions::new()).unwrap_err();
    assert!(matches!(err, Error::KeyExists(_)), "{err}");
    assert_eq!(PopKey::open(&uri).unwrap().kid(), first.kid(), "untouched");
    let second = PopKey::create(&uri, &CreateOptions::new().overwrite(true)).unwrap();
    assert_ne!(second.kid(), first.kid());
    assert_eq!(PopKey::open(&uri).unwrap().kid(), second.kid());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp files left"
    );
}

#[test]
fn keys_made_by_openssl_open_and_sign() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str], Option<&str>, Algorithm)] = &[
        (
            "ec-pkcs8.pem",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
            None,
            Algorithm::ES256,
        ),
        (
            "rsa-pkcs8.pem",
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            None,
            Algorithm::RS256,
        ),
        (
            "rsa-pss.pem",
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            Some("PS256"),
            Algorithm::PS256,
        ),
        (
            "ec-sec1.pem",
            &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
            None,
            Algorithm::ES256,
        ),
    ];
    for (name, args, alg, want) in cases {
        let path = dir.path().join(name);
        let mut full: Vec<&str> = args.to_vec();
        let p = path.to_str().unwrap();
        full.extend(["-out", p]);
        openssl(&full);
        chmod600(&path);
        let uri = match alg {
            Some(a) => format!("file:{p}?alg={a}"),
            None => format!("file:{p}"),
        };
        let key = PopKey::open(&uri).unwrap();
        assert_eq!(key.algorithm(), *want);
        let shr = popkey::shr::SignedHttpRequest::new("GET", "https://a.example/", "t")
            .unwrap()
            .sign(&key)
            .unwrap();
        common::verify_shr(&shr);
    }
    // PKCS#1 RSA ("BEGIN RSA PRIVATE KEY").
    let pkcs1 = dir.path().join("rsa-pkcs1.pem");
    openssl(&[
        "pkey",
        "-in",
        dir.path().join("rsa-pkcs8.pem").to_str().unwrap(),
        "-traditional",
        "-out",
        pkcs1.to_str().unwrap(),
    ]);
    chmod600(&pkcs1);
    assert!(std::fs::read_to_string(&pkcs1)
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    assert_eq!(
        PopKey::open(&file_uri(&pkcs1)).unwrap().algorithm(),
        Algorithm::RS256
    );
}

#[test]
fn bad_key_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str, mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        file_uri(&p)
    };
    let missing = file_uri(&dir.path().join("missing.pem"));
    assert!(matches!(PopKey::open(&missing), Err(Error::KeyNotFound(_))));
    let not_pem = write("junk.pem", "hello", 0o600);
    assert!(matches!(
        PopKey::open(&not_pem),
        Err(Error::MalformedKey { .. })
    ));
    let bad_b64 = write(
        "bad.pem",
        "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
        0o600,
    );
    assert!(matches!(
        PopKey::open(&bad_b64),
        Err(Error::MalformedKey { .. })
    ));
    let cert = write(
        "cert.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        0o600,
    );
    let err = PopKey::open(&cert).unwrap_err();
    assert!(err.to_string().contains("CERTIFICATE"), "{err}");
    let tss = write(
        "tpm.pem",
        "-----BEGIN TSS2 PRIVATE KEY-----\nAAAA\n-----END TSS2 PRIVATE KEY-----\n",
        0o600,
    );
    assert!(PopKey::open(&tss)
        .unwrap_err()
        .to_string()
        .contains("tpm:path="));

    // A readable-by-others key is refused with the fix in the message.
    let good = dir.path().join("good.pem");
    PopKey::create(&file_uri(&good), &CreateOptions::new()).unwrap();
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = PopKey::open(&file_uri(&good)).unwrap_err();
    assert!(matches!(err, Error::UnsafeKeyFile { .. }));
    assert!(err.to_string().contains("chmod 600"));
    chmod600(&good);
    // An EC key asked to sign RS256.
    let err = PopKey::open(&format!("{}?alg=RS256", file_uri(&good))).unwrap_err();
    assert!(matches!(err, Error::AlgorithmMismatch(_)), "{err}");
    // A conflicting alg between URI and options.
    let err = PopKey::create(
        "mem:?alg=RS256",
        &CreateOptions::new().alg(Algorithm::ES256),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidUri { .. }));
}

#[test]
fn hardware_schemes_answer_clearly_until_built() {
    if cfg!(feature = "pkcs11") || cfg!(feature = "tpm") {
        return assert_hardware_parse_errors();
    }
    for uri in ["pkcs11:token=a;object=b", "tpm:handle=0x81000100"] {
        assert!(matches!(
            PopKey::open(uri),
            Err(Error::BackendNotBuilt { .. })
        ));
    }
}

fn assert_hardware_parse_errors() {
    for uri in ["pkcs11:bogus=1", "tpm:handle=0x1"] {
        assert!(matches!(PopKey::open(uri), Err(Error::InvalidUri { .. })));
    }
}

/// A provider whose JWK and signing key are not one pair.
struct Mismatched {
    jwk: String,
    signer: PopKey,
}

impl PopCryptoProvider for Mismatched {
    fn canonical_public_key_jwk(&self) -> &str {
        &self.jwk
    }
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
    fn sign(&self, input: &[u8]) -> popkey::Result<Vec<u8>> {
        self.signer.sign(input)
    }
}

/// A provider that returns DER instead of raw r||s.
struct DerSigner(PopKey);

impl PopCryptoProvider for DerSigner {
    fn canonical_public_key_jwk(&self) -> &str {
        self.0.canonical_public_key_jwk()
    }
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
    fn sign(&self, input: &[u8]) -> popkey::Result<Vec<u8>> {
        let raw = self.0.sign(input)?;
        let sig = p256::ecdsa::Signature::from_slice(&raw).unwrap();
        Ok(sig.to_der().as_bytes().to_vec())
    }
}

#[test]
fn providers_are_proven_on_wrap() {
    let a = PopKey::open("mem:").unwrap();
    let b = PopKey::open("mem:").unwrap();
    let good = PopKey::from_provider(Box::new(a.clone())).unwrap();
    assert_eq!(good.kid(), a.kid());
    assert_eq!(good.location().backend, popkey::BackendKind::Custom);
    let err = PopKey::from_provider(Box::new(Mismatched {
        jwk: a.canonical_public_key_jwk().to_owned(),
        signer: b,
    }))
    .unwrap_err();
    assert!(matches!(err, Error::KeyMismatch(_)), "{err}");
    let err = PopKey::from_provider(Box::new(DerSigner(a.clone()))).unwrap_err();
    assert!(err.to_string().contains("not DER"), "{err}");
    let spaced = a.canonical_public_key_jwk().replace(',', ", ");
    let err = PopKey::from_provider(Box::new(Mismatched {
        jwk: spaced,
        signer: a,
    }))
    .unwrap_err();
    assert!(matches!(err, Error::InvalidJwk(_)), "{err}");
}

#[test]
fn incoming_jwks_are_validated() {
    let ec = PopKey::open("mem:").unwrap();
    let good: serde_json::Value = serde_json::from_str(ec.canonical_public_key_jwk()).unwrap();
    let with = |k: &str, v: serde_json::Value| {
        let mut j = good.clone();
        j[k] = v;
        j.to_string()
    };
    let bad = [
        with("d", "AAAA".into()),
        with("crv", "P-384".into()),
        with("kty", "oct".into()),
        with("x", "AAAA".into()),
        with("x", "not base64!".into()),
        with("y", good["x"].clone()), // not on the curve
        with("use", "enc".into()),
        with("crv", 5.into()),
        r#"{"kty":"EC","kty":"EC"}"#.to_owned(),
        "[]".to_owned(),
        "{".to_owned(),
        r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#
            .to_owned(),
    ];
    for text in bad {
        assert!(
            matches!(PublicJwk::parse(&text), Err(Error::InvalidJwk(_))),
            "{text}"
        );
    }
    // Extra public members are fine and do not change the thumbprint.
    let extra = with("kid", "k1".into());
    assert_eq!(PublicJwk::parse(&extra).unwrap().thumbprint(), ec.kid());

    // RSA: short moduli, private members and non-minimal integers.
    let rsa = PopKey::open("mem:?alg=RS256").unwrap();
    let good: serde_json::Value = serde_json::from_str(rsa.canonical_public_key_jwk()).unwrap();
    let n = common::b64d(good["n"].as_str().unwrap());
    let mut short = good.clone();
    short["n"] = b64(&n[..128]).into(); // 1024 bits
    let err = PublicJwk::parse(&short.to_string()).unwrap_err();
    assert!(err.to_string().contains("at least 2048"), "{err}");
    let mut leading_zero = good.clone();
    let mut padded = vec![0u8];
    padded.extend(n);
    leading_zero["n"] = b64(&padded).into();
    assert!(PublicJwk::parse(&leading_zero.to_string()).is_err());
    let mut private = good.clone();
    private["p"] = "AQAB".into();
    assert!(PublicJwk::parse(&private.to_string())
        .unwrap_err()
        .to_string()
        .contains("private"));
    assert_eq!(
        PublicJwk::parse(&good.to_string()).unwrap().thumbprint(),
        rsa.kid()
    );
}

#[test]
fn debug_output_names_the_key_not_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    let key = PopKey::create(&file_uri(&path), &CreateOptions::new()).unwrap();
    let debug = format!("{key:?}");
    assert!(debug.contains(key.kid()));
    let pem = std::fs::read_to_string(&path).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!debug.contains(&body[..20]));
}

/// Files written by earlier popkey versions (which encoded keys with the
/// RustCrypto `p256` and `rsa` crates: PKCS#8, and SEC1/PKCS#1 from other
/// tools) open with whichever crypto provider this build uses, and sign
/// what ring verifies.
#[test]
fn keys_written_by_the_rustcrypto_encoders_still_open() {
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let dir = tempfile::tempdir().unwrap();
    let ec = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let ec_secret = p256::SecretKey::from(&ec);
    let rsa = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let files: Vec<(&str, String, Option<&str>, Algorithm)> = vec![
        (
            "ec-pkcs8.pem",
            ec.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            None,
            Algorithm::ES256,
        ),
        (
            "ec-sec1.pem",
            ec_secret.to_sec1_pem(LineEnding::LF).unwrap().to_string(),
            None,
            Algorithm::ES256,
        ),
        (
            "rsa-pkcs8.pem",
            rsa.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            Some("PS256"),
            Algorithm::PS256,
        ),
        (
            "rsa-pkcs1.pem",
            rsa.to_pkcs1_pem(LineEnding::LF).unwrap().to_string(),
            None,
            Algorithm::RS256,
        ),
    ];
    for (name, pem, alg, want) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, pem.as_bytes()).unwrap();
        chmod600(&path);
        let uri = match alg {
            Some(a) => format!("{}?alg={a}", file_uri(&path)),
            None => file_uri(&path),
        };
        let key = PopKey::open(&uri).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key.algorithm(), want, "{name}");
        let dpop = popkey::dpop::DpopProof::new("POST", "https://as.example/token")
            .unwrap()
            .sign(&key)
            .unwrap();
        common::verify_dpop(&dpop);
    }
}
