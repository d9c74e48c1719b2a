//! Recovery: sessions invalidated, the user logged out, the module
//! finalized and the token removed or re-initialized behind popkey's back;
//! two processes signing with one token key. Against a real SoftHSM2, in a
//! test process of its own (these tests finalize the module).
#![cfg(feature = "pkcs11")]

use popkey_testkit::common;
use popkey_testkit::softhsm;

use popkey::shr::SignedHttpRequest;
use popkey::{Algorithm, CreateOptions, Error, Pkcs11Error, PopCryptoProvider, PopKey};
use serde_json::Value;
use softhsm::{cryptoki, slot_of, token};

fn signs(key: &PopKey) -> popkey::Result<()> {
    let shr = SignedHttpRequest::new("GET", "https://api.example.com/r", "at")?.sign(key)?;
    let jwk: Value = serde_json::from_str(key.canonical_public_key_jwk()).unwrap();
    common::ring_verify(&shr, &jwk);
    Ok(())
}

#[test]
fn logout_behind_our_back() {
    let _serial = softhsm::serial();
    let t = token();
    let key = PopKey::create(&t.uri("k"), &CreateOptions::new()).unwrap();
    signs(&key).unwrap();
    let p = cryptoki();
    let s = p.open_ro_session(slot_of(&p, &t.label)).unwrap();
    // Login state is per application and token: this logs popkey's pooled
    // sessions out too.
    s.logout().unwrap();
    drop(s);
    for _ in 0..3 {
        signs(&key).unwrap();
    }
}

#[test]
fn module_finalized_behind_our_back() {
    let _serial = softhsm::serial();
    let t = token();
    let key = PopKey::create(&t.uri("k"), &CreateOptions::new().alg(Algorithm::RS256)).unwrap();
    signs(&key).unwrap();
    // C_Finalize: every session closed, the module uninitialized.
    softhsm::past_reset_interval();
    cryptoki().finalize().unwrap();
    signs(&key).unwrap();
    // C_Finalize + C_Initialize: the module is up but every session and
    // object handle popkey holds is stale.
    cryptoki().finalize().unwrap();
    let _p = cryptoki();
    signs(&key).unwrap();
    // Threads racing through the recovery all succeed.
    softhsm::past_reset_interval();
    cryptoki().finalize().unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..50 {
                    signs(&key).unwrap();
                }
            });
        }
    });
}

/// The token's directory is taken away (the token is "removed"), then put
/// back; and the token is re-initialized (all keys gone), then restored.
#[test]
fn token_removed_and_reinitialized() {
    let _serial = softhsm::serial();
    let t = token();
    let key = PopKey::create(&t.uri("k"), &CreateOptions::new()).unwrap();
    signs(&key).unwrap();
    let tokens = t.hsm.dir.join("tokens");
    let dir = std::fs::read_dir(&tokens)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|d| {
            std::fs::read(d.join("token.object"))
                .map(|b| {
                    b.windows(t.label.len() + 1)
                        .any(|w| w == format!("{} ", t.label).as_bytes())
                        || b.windows(t.label.len()).any(|w| w == t.label.as_bytes())
                })
                .unwrap_or(false)
        })
        .expect("token directory");
    let backup = t.hsm.dir.join("backup");
    copy_dir(&dir, &backup);

    std::fs::remove_dir_all(&dir).unwrap();
    let err = signs(&key).unwrap_err();
    eprintln!("removed: {err}");
    assert!(
        matches!(
            err,
            Error::Pkcs11(Pkcs11Error::TokenUnavailable(_)) | Error::KeyNotFound(_)
        ),
        "{err:?}"
    );
    copy_dir(&backup, &dir);
    softhsm::past_reset_interval();
    signs(&key).unwrap();

    // Re-initialized: same label, no keys.
    softhsm::run(
        std::process::Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &t.hsm.conf)
            .args(["--init-token", "--token", &t.label, "--label", &t.label])
            .args(["--so-pin", softhsm::SO_PIN, "--pin", softhsm::USER_PIN]),
        "softhsm2-util --init-token",
        "softhsm2",
    );
    let err = signs(&key).unwrap_err();
    eprintln!("re-initialized: {err}");
    assert!(
        matches!(
            err,
            Error::Pkcs11(Pkcs11Error::TokenUnavailable(_)) | Error::KeyNotFound(_)
        ),
        "{err:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    copy_dir(&backup, &dir);
    softhsm::past_reset_interval();
    signs(&key).unwrap();
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Two processes sign with the same token key at the same time: two
/// threads each run the `popkey` binary 10 times in a row, so two processes
/// (each with its own C_Initialize, session and login) are signing with the
/// key at any moment; every SHR verifies.
#[test]
fn two_processes_sign_with_one_key() {
    let _serial = softhsm::serial();
    let t = token();
    let key = PopKey::create(&t.uri("shared"), &CreateOptions::new()).unwrap();
    let jwk: Value = serde_json::from_str(key.canonical_public_key_jwk()).unwrap();
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (conf, uri) = (t.hsm.conf.clone(), key.uri().to_owned());
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| {
                        let out = std::process::Command::new(env!("CARGO_BIN_EXE_popkey"))
                            .args(["shr", "--key", &uri, "--method", "GET"])
                            .arg("--url")
                            .arg(format!("https://api.example.com/{w}/{i}"))
                            .args(["--access-token", "at"])
                            .env("SOFTHSM2_CONF", &conf)
                            .output()
                            .unwrap();
                        assert!(
                            out.status.success(),
                            "popkey shr failed: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                        String::from_utf8(out.stdout).unwrap().trim().to_owned()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for w in workers {
        let shrs = w.join().unwrap();
        assert_eq!(shrs.len(), 10);
        for shr in &shrs {
            let (h, _) = common::verify_shr(shr);
            assert_eq!(h["kid"], key.kid());
            common::ring_verify(shr, &jwk);
        }
    }
}

/// A PIN that the token starts rejecting is reported and never offered
/// again to that token by this process: not by that key handle, not even
/// once the PIN would be right again, and not by the key opened anew with
/// it. A different PIN is offered.
#[test]
fn rejected_pin_is_not_retried() {
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;
    let _serial = softhsm::serial();
    let t = token();
    let key = PopKey::create(&t.uri("k"), &CreateOptions::new()).unwrap();
    signs(&key).unwrap();
    let p = cryptoki();
    let slot = slot_of(&p, &t.label);
    let change = |from: &str, to: &str| {
        let s = p.open_rw_session(slot).unwrap();
        match s.login(UserType::User, Some(&AuthPin::from(from))) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => {}
            Err(e) => panic!("login: {e}"),
        }
        s.set_pin(&AuthPin::from(from), &AuthPin::from(to)).unwrap();
        // Logs popkey's sessions out as well.
        s.logout().unwrap();
    };
    change(softhsm::USER_PIN, "654321");
    for _ in 0..2 {
        match signs(&key) {
            Err(Error::Pkcs11(Pkcs11Error::WrongPin { .. })) => {}
            other => panic!("expected WrongPin, got {other:?}"),
        }
    }
    change("654321", softhsm::USER_PIN);
    match signs(&key) {
        Err(Error::Pkcs11(Pkcs11Error::WrongPin { .. })) => {}
        other => panic!("the handle offered its rejected PIN again: {other:?}"),
    }
    match PopKey::open(key.uri()) {
        Err(Error::Pkcs11(Pkcs11Error::WrongPin { .. })) => {}
        other => panic!("a new handle offered the rejected PIN again: {other:?}"),
    }
    change(softhsm::USER_PIN, "135790");
    let other_pin = t.uri("k").replace(
        &format!("pin-source={}", t.hsm.pin_file.display()),
        "pin-value=135790",
    );
    signs(&PopKey::open(&other_pin).unwrap()).unwrap();
}

/// Without module-path the module comes from PKCS11_MODULE.
#[test]
fn module_from_environment() {
    let _serial = softhsm::serial();
    let t = token();
    let key = PopKey::create(&t.uri("env"), &CreateOptions::new()).unwrap();
    let uri = format!(
        "pkcs11:token={};object=env?pin-source={}",
        t.label,
        t.hsm.pin_file.display()
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_popkey"))
        .env("SOFTHSM2_CONF", &t.hsm.conf)
        .env("PKCS11_MODULE", &t.hsm.module)
        .args(["key", "show", "--key", &uri])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["kid"], key.kid());
}
