//! A persistent key replaced at its handle after it was opened: the open
//! key refuses to sign instead of signing with the other key, whether the
//! replacement came through this process (`overwrite`) or through another
//! program while the connection was down.

use popkey_testkit::common;
use popkey_testkit::swtpm;

use popkey::shr::SignedHttpRequest;
use popkey::{Algorithm, CreateOptions, Error, PopCryptoProvider, PopKey, TpmError};
use serde_json::Value;
use swtpm::Swtpm;

/// A little more than the backend's interval between software checks of a
/// persistent key's signatures.
const CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1100);

fn shr(key: &PopKey) -> popkey::Result<String> {
    SignedHttpRequest::new("GET", "https://api.example.com/replaced", "at")?.sign(key)
}

fn jwk(key: &PopKey) -> Value {
    serde_json::from_str(key.canonical_public_key_jwk()).unwrap()
}

/// Signs and checks the signature against the key's own JWK.
fn sign_and_verify(key: &PopKey) {
    let token = shr(key).unwrap();
    common::ring_verify(&token, &jwk(key));
    let (_, p) = common::verify_shr(&token);
    assert_eq!(p["cnf"]["jwk"], jwk(key));
}

fn assert_replaced(result: popkey::Result<String>, handle: &str) {
    match result {
        Err(Error::Tpm(TpmError::KeyUnloadable { reason, .. })) => {
            assert!(
                reason.contains(handle) && reason.contains("is not the key this handle opened"),
                "{reason}"
            );
        }
        Err(e) => panic!("expected TpmKeyUnloadable, got {e:?}"),
        Ok(token) => panic!("signed with a replaced key: {token}"),
    }
}

#[test]
fn replaced_through_this_process() {
    let mut tpm = Swtpm::start();
    let uri = tpm.uri("handle=0x81000300");
    let old = PopKey::create(&uri, &CreateOptions::new()).unwrap();
    sign_and_verify(&old);

    let new = PopKey::create(
        &uri,
        &CreateOptions::new().alg(Algorithm::ES256).overwrite(true),
    )
    .unwrap();
    assert_ne!(jwk(&old), jwk(&new));
    sign_and_verify(&new);
    assert_replaced(shr(&old), "0x81000300");
    sign_and_verify(&new);

    // Still refused after a reconnect; the new key still signs.
    tpm.restart();
    assert_replaced(shr(&old), "0x81000300");
    sign_and_verify(&new);
    assert_replaced(shr(&old), "0x81000300");
}

#[test]
fn replaced_by_another_program() {
    let mut tpm = Swtpm::start();
    let uri = tpm.uri("handle=0x81000301");
    let old = PopKey::create(&uri, &CreateOptions::new().alg(Algorithm::ES256)).unwrap();
    sign_and_verify(&old);

    // The swtpm TCTI connects anew for each command, so popkey notices
    // neither the restart nor the replacement: its ESYS handle still names
    // 0x81000301, and TPM2_Sign there signs with the new key.
    tpm.restart();
    let t = "tpm2-tools";
    tpm.tool(t, "tpm2_evictcontrol", &["-C", "o", "-c", "0x81000301"]);
    tpm.tool(
        t,
        "tpm2_createprimary",
        &["-C", "o", "-g", "sha256", "-G", "ecc", "-c", "prim.ctx"],
    );
    tpm.flush_transient();
    tpm.tool(
        t,
        "tpm2_create",
        &[
            "-C", "prim.ctx", "-G", "ecc256", "-u", "k.pub", "-r", "k.priv",
        ],
    );
    tpm.flush_transient();
    tpm.tool(
        t,
        "tpm2_load",
        &[
            "-C", "prim.ctx", "-u", "k.pub", "-r", "k.priv", "-c", "k.ctx",
        ],
    );
    tpm.flush_transient();
    tpm.tool(
        t,
        "tpm2_evictcontrol",
        &["-C", "o", "-c", "k.ctx", "0x81000301"],
    );
    tpm.flush_transient();

    // Opened anew (while the old key is still open on the handle), the
    // handle is the new key, and it signs.
    let new = PopKey::open(&uri).unwrap();
    assert_ne!(jwk(&old), jwk(&new));
    sign_and_verify(&new);

    // The old key's signatures are checked in software once a second
    // (PERSISTENT_CHECK_INTERVAL_MS): past that, its next signature does not
    // verify, it resolves the handle anew and finds another key: refused,
    // and no token comes out.
    std::thread::sleep(CHECK_INTERVAL);
    assert_replaced(shr(&old), "0x81000301");
    assert_replaced(shr(&old), "0x81000301");
    sign_and_verify(&new);
    assert_replaced(shr(&old), "0x81000301");

    // Replaced again while nothing popkey holds notices: the old key, never
    // used in between, is refused on its first signature.
    let third_old = PopKey::open(&uri).unwrap();
    sign_and_verify(&third_old);
    drop(new);
    tpm.tool(t, "tpm2_evictcontrol", &["-C", "o", "-c", "0x81000301"]);
    tpm.tool(
        t,
        "tpm2_create",
        &[
            "-C", "prim.ctx", "-G", "ecc256", "-u", "k2.pub", "-r", "k2.priv",
        ],
    );
    tpm.flush_transient();
    tpm.tool(
        t,
        "tpm2_load",
        &[
            "-C", "prim.ctx", "-u", "k2.pub", "-r", "k2.priv", "-c", "k2.ctx",
        ],
    );
    tpm.flush_transient();
    tpm.tool(
        t,
        "tpm2_evictcontrol",
        &["-C", "o", "-c", "k2.ctx", "0x81000301"],
    );
    tpm.flush_transient();
    std::thread::sleep(CHECK_INTERVAL);
    assert_replaced(shr(&third_old), "0x81000301");
    assert_replaced(shr(&old), "0x81000301");

    // An untouched handle key keeps signing across reconnects.
    let other = PopKey::create(&tpm.uri("handle=0x81000302"), &CreateOptions::new()).unwrap();
    sign_and_verify(&other);
    tpm.restart();
    sign_and_verify(&other);
}
