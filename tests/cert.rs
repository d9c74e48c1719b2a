//! Certificates and CSRs made by `popkey cert` for file, SoftHSM and swtpm
//! keys (ES256, RS256, PS256), checked by `openssl` (`req -verify`,
//! `x509 -text`, `verify`); the public key in each is the one the device
//! reports (`pkcs11-tool --read-object`, `tpm2_readpublic`, `openssl pkey`),
//! and the device still says the private key cannot leave it. Bad input
//! (a certificate for another key, an expired one, wrong formats) gets
//! typed errors.

#![cfg(all(
    feature = "cert",
    feature = "mtls",
    feature = "pkcs11",
    feature = "tpm"
))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use popkey::cert::{check_certificate_matches_key, CertificateChain, CertificateTemplate};
use popkey::tls::ClientIdentity;
use popkey::{Algorithm, CreateOptions, ErrorKind, PopKey};
use popkey_testkit::pki::openssl;
use popkey_testkit::softhsm;
use popkey_testkit::swtpm::Swtpm;

/// A public key file (PEM or DER, SPKI) normalized by openssl to DER.
fn spki_der(dir: &Path, file: &str, inform: &str) -> Vec<u8> {
    let out = dir.join(format!("{file}.norm.der"));
    openssl(
        dir,
        &[
            "pkey",
            "-pubin",
            "-inform",
            inform,
            "-in",
            file,
            "-outform",
            "DER",
            "-out",
            out.to_str().unwrap(),
        ],
    );
    std::fs::read(out).unwrap()
}

fn popkey(env: &[(&str, &Path)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_popkey"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .env_remove("POPKEY_KEY")
        .output()
        .unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One key under test: its URI, algorithm, and the public key its device
/// reports, written by a tool other than popkey into `dir/<name>.pub`.
struct Case {
    name: String,
    uri: String,
    alg: Algorithm,
    device_pub: Vec<u8>,
}

/// Makes a CSR and a self-signed certificate for the case with the CLI and
/// has openssl check both.
fn check_case(dir: &Path, env: &[(&str, &Path)], case: &Case) {
    let csr = dir.join(format!("{}.csr", case.name));
    let crt = dir.join(format!("{}.crt", case.name));
    let subject = format!("CN={},O=popkey tests", case.name);
    ok(
        &popkey(
            env,
            &[
                "cert",
                "csr",
                "--key",
                &case.uri,
                "--subject",
                &subject,
                "--san",
                "DNS:client.example",
                "--out",
                csr.to_str().unwrap(),
            ],
        ),
        "cert csr",
    );
    let verified = openssl(
        dir,
        &["req", "-verify", "-noout", "-in", csr.to_str().unwrap()],
    );
    assert!(verified.contains("verify OK"), "{}: {verified}", case.name);
    let text = openssl(
        dir,
        &["req", "-text", "-noout", "-in", csr.to_str().unwrap()],
    );
    assert!(text.contains("DNS:client.example"), "{text}");

    let pem = ok(
        &popkey(
            env,
            &[
                "cert",
                "self-signed",
                "--key",
                &case.uri,
                "--subject",
                &subject,
                "--days",
                "7",
                "--san",
                "DNS:client.example",
                "--san",
                "IP:127.0.0.1",
            ],
        ),
        "cert self-signed",
    );
    std::fs::write(&crt, pem).unwrap();
    let text = openssl(
        dir,
        &["x509", "-text", "-noout", "-in", crt.to_str().unwrap()],
    );
    let sig_alg = match case.alg {
        Algorithm::ES256 => "ecdsa-with-SHA256",
        Algorithm::RS256 => "sha256WithRSAEncryption",
        Algorithm::PS256 => "rsassaPss",
    };
    assert!(text.contains(sig_alg), "{}: {text}", case.name);
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(
        text.contains("DNS:client.example, IP Address:127.0.0.1"),
        "{text}"
    );
    // The certificate's signature verifies under its own key.
    let verify = openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            crt.to_str().unwrap(),
            "-purpose",
            "sslclient",
            crt.to_str().unwrap(),
        ],
    );
    assert!(verify.contains(": OK"), "{}: {verify}", case.name);
    // The public key in the certificate is the device's.
    let cert_pub = dir.join(format!("{}.certpub.pem", case.name));
    let out = openssl(
        dir,
        &["x509", "-pubkey", "-noout", "-in", crt.to_str().unwrap()],
    );
    std::fs::write(&cert_pub, out).unwrap();
    assert_eq!(
        spki_der(dir, cert_pub.to_str().unwrap(), "PEM"),
        case.device_pub,
        "{}: the certificate holds another public key than the device reports",
        case.name
    );
    // And the library agrees: the certificate is for that key.
    let key = PopKey::open(&case.uri).unwrap();
    let chain = CertificateChain::from_pem_file(&crt).unwrap();
    check_certificate_matches_key(&chain, &key).unwrap();
    assert_eq!(chain.public_key().unwrap().thumbprint(), key.kid());
}

#[test]
fn openssl_accepts_csrs_and_certificates_for_file_softhsm_and_swtpm_keys() {
    let _serial = softhsm::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let token = softhsm::token();
    let tpm = Swtpm::start();
    let conf = token.hsm.conf.clone();
    let env: Vec<(&str, &Path)> = vec![("SOFTHSM2_CONF", conf.as_path())];
    let mut cases = Vec::new();

    // File keys: the public key as openssl reads the key file.
    for (name, alg) in [
        ("file-es256", Algorithm::ES256),
        ("file-rs256", Algorithm::RS256),
    ] {
        let path = d.join(format!("{name}.pem"));
        let uri = format!("file:{}", path.display());
        PopKey::create(&uri, &CreateOptions::new().alg(alg)).unwrap();
        openssl(
            d,
            &[
                "pkey",
                "-in",
                path.to_str().unwrap(),
                "-pubout",
                "-out",
                &format!("{name}.pub"),
            ],
        );
        let device_pub = spki_der(d, &format!("{name}.pub"), "PEM");
        cases.push(Case {
            name: name.into(),
            uri,
            alg,
            device_pub,
        });
    }

    // SoftHSM keys: the public key object as pkcs11-tool reads it.
    for (name, alg) in [
        ("hsm-es256", Algorithm::ES256),
        ("hsm-ps256", Algorithm::PS256),
    ] {
        let uri = token.uri(name);
        PopKey::create(&uri, &CreateOptions::new().alg(alg)).unwrap();
        let out = d.join(format!("{name}.pub"));
        token.pkcs11_tool(&[
            "--read-object",
            "--type",
            "pubkey",
            "--label",
            name,
            "--output-file",
            out.to_str().unwrap(),
        ]);
        let device_pub = spki_der(d, out.to_str().unwrap(), "DER");
        // PS256 is a property of the use, not of the RSA key object.
        let uri = if alg == Algorithm::PS256 {
            token.uri_with(name, "&alg=PS256")
        } else {
            uri
        };
        cases.push(Case {
            name: name.into(),
            uri,
            alg,
            device_pub,
        });
    }

    // swtpm keys: the public area as tpm2_readpublic exports it.
    for (name, handle, alg) in [
        ("tpm-es256", "0x81000110", Algorithm::ES256),
        ("tpm-rs256", "0x81000111", Algorithm::RS256),
    ] {
        let uri = tpm.uri(&format!("handle={handle}"));
        drop(PopKey::create(&uri, &CreateOptions::new().alg(alg)).unwrap());
        let out = tpm.file(&format!("{name}.pub"));
        tpm.tool(
            "tpm2-tools",
            "tpm2_readpublic",
            &["-c", handle, "-f", "pem", "-o", out.to_str().unwrap()],
        );
        let device_pub = spki_der(d, out.to_str().unwrap(), "PEM");
        cases.push(Case {
            name: name.into(),
            uri,
            alg,
            device_pub,
        });
    }

    for case in &cases {
        check_case(d, &env, case);
    }

    // The devices still say the private keys cannot leave them.
    let listing = token.pkcs11_tool(&["--list-objects", "--type", "privkey"]);
    for name in ["hsm-es256", "hsm-ps256"] {
        let block = listing
            .split("Private Key Object")
            .find(|b| b.contains(&format!("label:      {name}")))
            .unwrap_or_else(|| panic!("{name} is not listed:\n{listing}"));
        assert!(block.contains("never extractable"), "{block}");
        assert!(block.contains("sensitive"), "{block}");
    }
    for handle in ["0x81000110", "0x81000111"] {
        let out = tpm.tool("tpm2-tools", "tpm2_readpublic", &["-c", handle]);
        let text = String::from_utf8_lossy(&out.stdout);
        for attr in ["fixedtpm", "fixedparent", "sensitivedataorigin"] {
            assert!(text.contains(attr), "{handle}: {text}");
        }
    }
}

/// An openssl-made certificate for `key_file` (PKCS#8 PEM), valid `days`
/// from now (-1: expired yesterday).
fn openssl_cert(dir: &Path, key_file: &Path, days: &str, out: &str) -> PathBuf {
    let csr = dir.join(format!("{out}.csr"));
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            key_file.to_str().unwrap(),
            "-subj",
            "/CN=openssl-made",
            "-out",
            csr.to_str().unwrap(),
        ],
    );
    let crt = dir.join(out);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-key",
            key_file.to_str().unwrap(),
            "-days",
            days,
            "-out",
            crt.to_str().unwrap(),
        ],
    );
    crt
}

#[test]
fn bad_certificates_get_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a_file = d.join("a.pem");
    let a = PopKey::create(&format!("file:{}", a_file.display()), &CreateOptions::new()).unwrap();
    let b = PopKey::create(
        &format!("file:{}", d.join("b.pem").display()),
        &CreateOptions::new(),
    )
    .unwrap();

    // A certificate for another key: refused, naming both thumbprints.
    let cert_b = CertificateTemplate::new("CN=b")
        .unwrap()
        .self_signed(&b)
        .unwrap();
    let e = check_certificate_matches_key(&cert_b, &a).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CertificateKeyMismatch, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(a.kid()) && msg.contains(b.kid()), "{msg}");
    assert!(msg.contains(cert_b.thumbprint_sha256()), "{msg}");
    let e = ClientIdentity::new(a.clone(), cert_b.clone()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CertificateKeyMismatch);
    // The CLI says the same and names the fix.
    let b_crt = d.join("b.crt");
    std::fs::write(&b_crt, cert_b.to_pem()).unwrap();
    let out = popkey(
        &[],
        &[
            "cert",
            "show",
            "--cert",
            b_crt.to_str().unwrap(),
            "--key",
            a.uri(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(a.kid()) && err.contains(b.kid()), "{err}");
    assert!(err.contains("popkey cert self-signed"), "{err}");

    // An expired certificate (made by openssl for key a).
    let expired = openssl_cert(d, &a_file, "-1", "expired.crt");
    let chain = CertificateChain::from_pem_file(&expired).unwrap();
    let e = check_certificate_matches_key(&chain, &a).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CertificateExpired, "{e}");
    assert_eq!(
        ClientIdentity::new(a.clone(), chain).unwrap_err().kind(),
        ErrorKind::CertificateExpired
    );
    // An openssl-made valid certificate for the key is accepted.
    let fine = openssl_cert(d, &a_file, "2", "fine.crt");
    ClientIdentity::from_pem_file(a.clone(), &fine).unwrap();

    // Wrong formats: a key instead of a certificate, DER, a CSR, garbage,
    // a PEM block with a broken body, a missing file.
    let der = d.join("fine.der");
    openssl(
        d,
        &[
            "x509",
            "-in",
            fine.to_str().unwrap(),
            "-outform",
            "DER",
            "-out",
            der.to_str().unwrap(),
        ],
    );
    let csr = d.join("a.csr");
    std::fs::write(
        &csr,
        CertificateTemplate::new("CN=a")
            .unwrap()
            .csr_pem(&a)
            .unwrap(),
    )
    .unwrap();
    let garbage = d.join("garbage.txt");
    std::fs::write(&garbage, "hello").unwrap();
    let broken = d.join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for (file, says) in [
        (&a_file, "PRIVATE KEY"),
        (&der, "PEM"),
        (&csr, "CERTIFICATE REQUEST"),
        (&garbage, "PEM"),
        (&broken, "certificate"),
    ] {
        let e = CertificateChain::from_pem_file(file).unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::MalformedCertificate,
            "{}: {e}",
            file.display()
        );
        assert!(e.to_string().contains(says), "{e}");
        let out = popkey(&[], &["cert", "show", "--cert", file.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("malformed certificate"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let e = CertificateChain::from_pem_file(d.join("missing.crt")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");

    // Bad subjects and SANs are refused before the key signs anything.
    for args in [
        vec!["--subject", "not a name"],
        vec!["--subject", "CN=x", "--san", "FTP:x"],
        vec!["--subject", "CN=x", "--san", "IP:999.1.1.1"],
    ] {
        let mut all = vec!["cert", "csr", "--key", a.uri()];
        all.extend(args.iter().copied());
        let out = popkey(&[], &all);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("invalid certificate name"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
