//! PKCS#11 keys against a real SoftHSM2: create, show, sign (SHR, DPoP),
//! keys from other tools, attributes, exportable keys, threads, bad input.
//! Every signature is verified with `ring` (tests/support/common.rs).
#![cfg(feature = "pkcs11")]

use popkey_testkit::common;
use popkey_testkit::softhsm;

use popkey::dpop::DpopProof;
use popkey::shr::SignedHttpRequest;
use popkey::{
    Algorithm, CreateOptions, Error, OpenOptions, Pkcs11Error, PopCryptoProvider, PopKey,
};
use serde_json::Value;
use softhsm::{hsm, token, Token};

const URL: &str = "https://api.example.com/v1/items?page=2";

fn sign_both(key: &PopKey) {
    let shr = SignedHttpRequest::new("GET", URL, "at-123")
        .unwrap()
        .sign(key)
        .unwrap();
    let (h, p) = common::verify_shr(&shr);
    assert_eq!(h["alg"], key.algorithm().as_str());
    assert_eq!(h["kid"], key.kid());
    assert_eq!(common::thumbprint(&p["cnf"]["jwk"]), key.kid());
    let dpop = DpopProof::new("POST", URL)
        .unwrap()
        .access_token("at-123")
        .unwrap()
        .sign(key)
        .unwrap();
    let (h, _) = common::verify_dpop(&dpop);
    assert_eq!(h["typ"], "dpop+jwt");
    assert_eq!(common::thumbprint(&h["jwk"]), key.kid());
}

fn show(t: &Token, uri: &str) -> Value {
    let out = t.popkey(&["key", "show", "--key", uri]);
    assert!(
        out.status.success(),
        "popkey key show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn create_show_sign(alg: Algorithm) {
    let _serial = softhsm::serial();
    let t = token();
    let uri = t.uri("pop");
    let key = PopKey::create(&uri, &CreateOptions::new().alg(alg)).unwrap();
    assert_eq!(key.algorithm(), alg);
    assert_eq!(key.location().backend, popkey::BackendKind::Pkcs11);
    // SoftHSM: a software token (softhsm_is_reported_as_a_software_device).
    assert!(!key.location().hardware);
    assert!(key.location().non_exportable);
    assert!(!key.uri().contains(softhsm::USER_PIN));
    sign_both(&key);

    // Opened again, in this process and by the CLI in another: same key.
    let again = PopKey::open(key.uri()).unwrap();
    assert_eq!(again.kid(), key.kid());
    assert_eq!(again.algorithm(), alg);
    sign_both(&again);
    let shown = show(&t, key.uri());
    assert_eq!(shown["backend"], "pkcs11");
    assert_eq!(shown["alg"], alg.as_str());
    assert_eq!(shown["kid"], key.kid());
    assert_eq!(shown["non_exportable"], true);
    assert_eq!(common::thumbprint(&shown["jwk"]), key.kid());

    // The CLI's SHR verifies too.
    let out = t.popkey(&[
        "shr",
        "--key",
        key.uri(),
        "--method",
        "GET",
        "--url",
        URL,
        "--access-token",
        "at",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shr = String::from_utf8(out.stdout).unwrap();
    let (_, p) = common::verify_shr(shr.trim());
    assert_eq!(common::thumbprint(&p["cnf"]["jwk"]), key.kid());

    // A second key under the same label is refused; nothing new appears.
    let before = t.objects();
    let err = PopKey::create(&uri, &CreateOptions::new().alg(alg)).unwrap_err();
    assert!(
        matches!(err, Error::Pkcs11(Pkcs11Error::LabelInUse { .. })),
        "{err}"
    );
    assert_eq!(t.objects(), before);
}

#[test]
fn es256_create_show_sign() {
    create_show_sign(Algorithm::ES256);
}

#[test]
fn rs256_create_show_sign() {
    create_show_sign(Algorithm::RS256);
}

#[test]
fn ps256_create_show_sign() {
    create_show_sign(Algorithm::PS256);
}

/// Our keys, as pkcs11-tool (OpenSC) reads them: sensitive, never
/// extractable, private, sign only.
#[test]
fn attributes_as_pkcs11_tool_reads_them() {
    let _serial = softhsm::serial();
    let t = token();
    PopKey::create(&t.uri("attrs"), &CreateOptions::new().alg(Algorithm::ES256)).unwrap();
    let listing = t.pkcs11_tool(&["--list-objects", "--type", "privkey"]);
    let block = listing
        .split("Private Key Object")
        .find(|b| b.contains("label:      attrs"))
        .unwrap_or_else(|| panic!("our key is not listed:\n{listing}"));
    let access = block
        .lines()
        .find(|l| l.trim_start().starts_with("Access:"))
        .unwrap_or_else(|| panic!("no Access line:\n{block}"));
    assert!(access.contains("sensitive"), "{access}");
    assert!(access.contains("never extractable"), "{access}");
    assert!(
        !access
            .replace("never extractable", "")
            .contains("extractable"),
        "{access}"
    );
    let usage = block.lines().find(|l| l.contains("Usage:")).unwrap();
    assert!(
        usage.contains("sign") && !usage.contains("decrypt"),
        "{usage}"
    );
    assert!(block.contains("Allowed mechanisms: ECDSA"), "{block}");
}

/// Keys made by pkcs11-tool --keypairgen are found by label and by id.
#[test]
fn keys_from_pkcs11_tool() {
    let _serial = softhsm::serial();
    let t = token();
    t.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "ext-ec",
        "--id",
        "a1b2",
    ]);
    t.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "rsa:2048",
        "--label",
        "ext-rsa",
        "--id",
        "c3d4",
    ]);
    for uri in [
        t.uri("ext-ec"),
        t.uri("ext-ec").replace("object=ext-ec", "id=%a1%b2"),
        t.uri("ext-ec")
            .replace("object=ext-ec", "object=ext-ec;id=%A1%B2;type=private"),
    ] {
        let key = PopKey::open(&uri).unwrap();
        assert_eq!(key.algorithm(), Algorithm::ES256);
        sign_both(&key);
    }
    let rs = PopKey::open(&t.uri("ext-rsa")).unwrap();
    assert_eq!(rs.algorithm(), Algorithm::RS256);
    sign_both(&rs);
    let ps = PopKey::open(&t.uri_with("ext-rsa", "&alg=PS256")).unwrap();
    assert_eq!(ps.algorithm(), Algorithm::PS256);
    assert_eq!(ps.kid(), rs.kid());
    sign_both(&ps);
}

/// A key the token says may leave it is refused unless allowed.
#[test]
fn exportable_key_refused_unless_allowed() {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::Attribute;
    use cryptoki::session::UserType;
    let _serial = softhsm::serial();
    let t = token();
    // Popkey's module initialization first, so SOFTHSM2_CONF is ours.
    let _ = PopKey::open(&t.uri("none"));
    let p = softhsm::cryptoki();
    let session = p.open_rw_session(softhsm::slot_of(&p, &t.label)).unwrap();
    let _ = session.login(
        UserType::User,
        Some(&cryptoki::types::AuthPin::from(softhsm::USER_PIN)),
    );
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Verify(true),
                Attribute::EcParams(p256),
                Attribute::Label(b"loose".to_vec()),
                Attribute::Id(vec![0x10]),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sign(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Label(b"loose".to_vec()),
                Attribute::Id(vec![0x10]),
            ],
        )
        .unwrap();
    drop(session);
    let uri = t.uri("loose");
    match PopKey::open(&uri) {
        Err(Error::ExportableKey { uri: u }) => assert!(!u.contains(softhsm::USER_PIN)),
        other => panic!("expected ExportableKey, got {other:?}"),
    }
    let key = PopKey::open_with(&uri, &OpenOptions::new().allow_exportable(true)).unwrap();
    assert!(!key.location().non_exportable);
    sign_both(&key);
    let shown = t.popkey(&["key", "show", "--key", &uri]);
    assert!(!shown.status.success());
    let stderr = String::from_utf8_lossy(&shown.stderr);
    // The library names OpenOptions::allow_exportable; the CLI adds its flag.
    assert!(
        stderr.contains("allow_exportable") && stderr.contains("--allow-exportable"),
        "{stderr}"
    );
    let shown = t.popkey(&["key", "show", "--allow-exportable", "--key", &uri]);
    assert!(shown.status.success());
    let v: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(v["non_exportable"], false);
}

/// 4 threads x 500 signatures with one key handle; every one verifies.
#[test]
fn four_threads_500_signatures_each() {
    let _serial = softhsm::serial();
    let t = token();
    let key = PopKey::create(
        &t.uri("threads"),
        &CreateOptions::new().alg(Algorithm::ES256),
    )
    .unwrap();
    let jwk: Value = serde_json::from_str(key.canonical_public_key_jwk()).unwrap();
    std::thread::scope(|s| {
        for th in 0..4 {
            let key = key.clone();
            let jwk = &jwk;
            s.spawn(move || {
                for i in 0..500 {
                    let shr = SignedHttpRequest::new("GET", &format!("{URL}&t={th}&i={i}"), "at")
                        .unwrap()
                        .sign(&key)
                        .unwrap();
                    common::ring_verify(&shr, jwk);
                }
            });
        }
    });
}

#[test]
fn wrong_pin_is_typed_and_not_retried() {
    let _serial = softhsm::serial();
    let t = token();
    PopKey::create(&t.uri("pinned"), &CreateOptions::new()).unwrap();
    let bad = t.uri("pinned").replace(
        &format!("pin-source={}", hsm().pin_file.display()),
        "pin-value=999999",
    );
    for _ in 0..2 {
        match PopKey::open(&bad) {
            Err(e @ Error::Pkcs11(Pkcs11Error::WrongPin { .. })) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("does not retry") && !msg.contains("999999"),
                    "{msg}"
                );
            }
            other => panic!("expected WrongPin, got {other:?}"),
        }
    }
    // The right PIN still works: two wrong tries did not lock the token.
    sign_both(&PopKey::open(&t.uri("pinned")).unwrap());
}

#[test]
fn bad_input_is_typed() {
    let _serial = softhsm::serial();
    let t = token();
    // Keys from another process first: SoftHSM shows a process the objects
    // others wrote when it first looks at a token.
    t.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "twin",
        "--id",
        "01",
    ]);
    t.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "twin",
        "--id",
        "02",
    ]);
    PopKey::create(&t.uri("dup-a"), &CreateOptions::new()).unwrap();
    PopKey::create(
        &t.uri("rsa-only"),
        &CreateOptions::new().alg(Algorithm::RS256),
    )
    .unwrap();
    let q = |extra: &str| {
        format!(
            "pkcs11:token={};object=dup-a?pin-source={}{extra}",
            t.label,
            hsm().pin_file.display()
        )
    };
    let not_a_module = hsm().dir.join("softhsm2.conf");
    type Check = fn(&Error) -> bool;
    let cases: Vec<(String, Check)> = vec![
        ("pkcs11:token=a;token=b".into(), |e| {
            matches!(e, Error::InvalidUri { .. })
        }),
        ("pkcs11:objekt=x".into(), |e| {
            matches!(e, Error::InvalidUri { .. })
        }),
        ("pkcs11:id=%zz".into(), |e| {
            matches!(e, Error::InvalidUri { .. })
        }),
        (
            t.uri("pub").replace("object=pub", "object=pub;type=public"),
            |e| matches!(e, Error::InvalidUri { .. }),
        ),
        (q("&module-path=/nonexistent/libnothing.so"), |e| {
            matches!(e, Error::Pkcs11(Pkcs11Error::Module { .. }))
        }),
        (
            q(&format!("&module-path={}", not_a_module.display())),
            |e| matches!(e, Error::Pkcs11(Pkcs11Error::Module { .. })),
        ),
        (q("&module-path=/lib/x86_64-linux-gnu/libm.so.6"), |e| {
            matches!(e, Error::Pkcs11(Pkcs11Error::Module { .. }))
                || cfg!(not(target_arch = "x86_64"))
        }),
        (
            t.uri("dup-a")
                .replace(&format!("token={}", t.label), "token=no-such-token"),
            |e| matches!(e, Error::Pkcs11(Pkcs11Error::TokenNotFound(_))),
        ),
        (
            t.uri("dup-a").replace(&format!("token={};", t.label), ""),
            |e| matches!(e, Error::Pkcs11(Pkcs11Error::TokenNotFound(_))),
        ),
        (t.uri("no-such-key"), |e| matches!(e, Error::KeyNotFound(_))),
        (t.uri("twin"), |e| {
            matches!(e, Error::Pkcs11(Pkcs11Error::AmbiguousKey(_)))
        }),
        (t.uri_with("dup-a", "&alg=RS256"), |e| {
            matches!(e, Error::AlgorithmMismatch(_))
        }),
        (t.uri_with("rsa-only", "&alg=ES256"), |e| {
            matches!(e, Error::AlgorithmMismatch(_))
        }),
        (t.uri_with("rsa-only", "&alg=PS256"), |e| {
            matches!(e, Error::AlgorithmMismatch(_))
        }),
        (
            t.uri("dup-a").replace(
                &hsm().pin_file.display().to_string(),
                "/nonexistent/pin-file",
            ),
            |e| matches!(e, Error::Pkcs11(Pkcs11Error::PinUnavailable(_))),
        ),
        (
            t.uri("dup-a")
                .replace(&format!("&pin-source={}", hsm().pin_file.display()), ""),
            |e| matches!(e, Error::Pkcs11(Pkcs11Error::PinUnavailable(_))),
        ),
    ];
    for (uri, ok) in cases {
        // Every pkcs11: URI without a module-path gets SoftHSM's.
        let uri = if uri.starts_with("pkcs11:") && !uri.contains("module-path") {
            let sep = if uri.contains('?') { '&' } else { '?' };
            format!("{uri}{sep}module-path={}", hsm().module.display())
        } else {
            uri
        };
        match PopKey::open(&uri) {
            Err(e) => {
                eprintln!("{uri}\n  -> {e}");
                assert!(ok(&e), "{uri}: unexpected error {e:?}");
                assert!(!e.to_string().contains(softhsm::USER_PIN), "{e}");
            }
            Ok(k) => panic!("{uri}: opened {k:?}"),
        }
    }
    // Creating without object=, or with id=, is refused before touching the token.
    for uri in [
        t.uri("x").replace("object=x", "id=%01"),
        t.uri("x").replace("object=x", "object=x;id=%01"),
    ] {
        let err = PopKey::create(&uri, &CreateOptions::new()).unwrap_err();
        assert!(matches!(err, Error::InvalidUri { .. }), "{err}");
    }
    // A failed creation leaves nothing behind.
    let before = t.objects();
    let bad_pin = t.uri("fresh").replace(
        &format!("pin-source={}", hsm().pin_file.display()),
        "pin-value=000000",
    );
    assert!(matches!(
        PopKey::create(&bad_pin, &CreateOptions::new()),
        Err(Error::Pkcs11(Pkcs11Error::WrongPin { .. }))
    ));
    assert_eq!(t.objects(), before);
}

/// `pkcs11-tool` (OpenSC, not popkey) on this test's SoftHSM, not logged in.
fn pkcs11_tool_info(t: &softhsm::Token, arg: &str) -> String {
    let out = softhsm::run(
        std::process::Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &t.hsm.conf)
            .arg("--module")
            .arg(&t.hsm.module)
            .arg(arg),
        "pkcs11-tool",
        "opensc",
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `name : value` in the `pkcs11-tool -L` block of the token
/// labelled `label`.
fn slot_field(listing: &str, label: &str, name: &str) -> String {
    let block = listing
        .split("\nSlot ")
        .find(|b| {
            b.lines()
                .any(|l| l.trim_start().starts_with("token label") && l.trim_end().ends_with(label))
        })
        .unwrap_or_else(|| panic!("no slot with token {label} in:\n{listing}"));
    block
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no `{name}` in:\n{block}"))
}

/// SoftHSM is a software token: `hardware` is false, and the device
/// description is what the token and the module report, compared with
/// OpenSC's `pkcs11-tool -L` / `-I`. `key show` prints the same object.
#[test]
fn softhsm_is_reported_as_a_software_device() {
    let _serial = softhsm::serial();
    let t = token();
    let uri = t.uri("device");
    let key = PopKey::create(&uri, &CreateOptions::new()).unwrap();
    let loc = key.location();
    assert!(!loc.hardware, "SoftHSM is not hardware");
    assert!(loc.non_exportable);
    let device = loc
        .device
        .as_ref()
        .expect("a PKCS#11 key reports its device");
    assert_eq!(device.kind, popkey::DeviceKind::Software);
    assert_eq!(device.known_as.as_deref(), Some("SoftHSM"));
    assert_eq!(device.hardware_slot, Some(false));

    let listing = pkcs11_tool_info(&t, "-L");
    for (field, name) in [
        (&device.manufacturer, "token manufacturer"),
        (&device.model, "token model"),
        (&device.serial, "serial num"),
        (&device.firmware, "firmware version"),
    ] {
        assert_eq!(
            field.as_deref(),
            Some(slot_field(&listing, &t.label, name).as_str()),
            "{name}"
        );
    }
    assert_eq!(device.manufacturer.as_deref(), Some("SoftHSM project"));
    // "Library          Implementation of PKCS11 (ver 2.6)"
    let info = pkcs11_tool_info(&t, "-I");
    let library = info
        .lines()
        .find_map(|l| l.strip_prefix("Library"))
        .expect("pkcs11-tool -I names the library")
        .trim();
    let (description, version) = library.rsplit_once(" (ver ").unwrap();
    assert_eq!(
        device.description.as_deref(),
        Some(format!("{description} {}", version.trim_end_matches(')')).as_str())
    );

    let shown = show(&t, key.uri());
    assert_eq!(shown["hardware"], false);
    assert_eq!(shown["device"]["kind"], "software");
    assert_eq!(shown["device"]["known_as"], "SoftHSM");
    assert_eq!(shown["device"]["manufacturer"], "SoftHSM project");
    assert_eq!(shown["device"]["serial"], device.serial.as_deref().unwrap());
    assert_eq!(shown["device"]["hardware_slot"], false);
}
