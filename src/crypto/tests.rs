//! Every compiled provider against published vectors, against each other
//! and against `ring` (an implementation popkey does not use).

use super::*;
use crate::b64;

/// RFC 7515 A.3: ES256.
const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const A3_INPUT: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const A3_SIG: &str =
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
/// RFC 7515 A.3 public key as SubjectPublicKeyInfo (base64 of the PEM body).
const A3_SPKI: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEf83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEXH8UTNG72bfocs3+257rn0s2ldbqkLJK2KRiMohYjlrQ==";

/// RFC 7515 A.2: RS256.
const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const A2_E: &str = "AQAB";
const A2_INPUT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const A2_SIG: &str = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
const A2_SPKI: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd/wWJcyQoTbji9k0l8W26mPddxHmfHQp+Vaw+4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL+yRT+SFd2lZS+pCgNMsD1W/YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb/7OMg0LOL+bSf63kpaSHSXndS5z5rexMdbBYUsLA9e+KXBdQOS+UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6/I5IhlJH7aGhyxXFvUK+DWNmoudF8NAco9/h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQIDAQAB";

fn d(s: &str) -> Vec<u8> {
    b64::decode(s).unwrap()
}

fn std_b64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn a3_point() -> [u8; 65] {
    let mut p = [4u8; 65];
    p[1..33].copy_from_slice(&d(A3_X));
    p[33..].copy_from_slice(&d(A3_Y));
    p
}

fn tampered(sig: &[u8]) -> Vec<u8> {
    let mut t = sig.to_vec();
    t[10] ^= 1;
    t
}

impl PublicKey {
    /// [`PublicKey::verify_digest`] over a message.
    fn verify(&self, alg: Algorithm, msg: &[u8], sig: &[u8]) -> bool {
        self.verify_digest(alg, &sha256(msg), sig)
    }
}

/// ES256 through `P`, hashing with `P`.
fn verify_es256<P: Provider>(key: &P::EcPublic, msg: &[u8], sig: &[u8]) -> bool {
    P::verify_es256(key, &digest::<P>(msg), sig)
}

/// RS256 or PS256 through `P`, hashing with `P`.
fn verify_rsa<P: Provider>(key: &P::RsaPublic, pss: bool, msg: &[u8], sig: &[u8]) -> bool {
    P::verify_rsa(key, pss, &digest::<P>(msg), sig)
}

fn digest<P: Provider>(msg: &[u8]) -> [u8; 32] {
    let mut h = P::sha256_new();
    P::sha256_update(&mut h, msg);
    P::sha256_finish(h)
}

/// Known answers every provider must give.
fn known_answers<P: Provider>() {
    let ec = P::ec_public(&a3_point()).unwrap();
    let sig = d(A3_SIG);
    assert!(
        verify_es256::<P>(&ec, A3_INPUT.as_bytes(), &sig),
        "{}",
        P::NAME
    );
    assert!(!verify_es256::<P>(
        &ec,
        A3_INPUT.as_bytes(),
        &tampered(&sig)
    ));
    assert!(!verify_es256::<P>(&ec, b"other", &sig));
    assert!(!verify_es256::<P>(&ec, A3_INPUT.as_bytes(), &sig[..63]));

    let rsa = P::rsa_public(&d(A2_N), &d(A2_E)).unwrap();
    let sig = d(A2_SIG);
    assert!(
        verify_rsa::<P>(&rsa, false, A2_INPUT.as_bytes(), &sig),
        "{}",
        P::NAME
    );
    assert!(!verify_rsa::<P>(&rsa, true, A2_INPUT.as_bytes(), &sig));
    assert!(!verify_rsa::<P>(
        &rsa,
        false,
        A2_INPUT.as_bytes(),
        &tampered(&sig)
    ));

    // A point off the curve.
    let mut bad = a3_point();
    bad[64] ^= 1;
    assert!(P::ec_public(&bad).is_err());

    // FIPS 180-2 "abc"; RFC 4231 test case 2.
    let mut h = P::sha256_new();
    P::sha256_update(&mut h, b"a");
    P::sha256_update(&mut h, b"bc");
    assert_eq!(
        hex(&P::sha256_finish(h)),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        hex(&P::hmac_sha256(
            b"Jefe",
            &[b"what do ya want ", b"for nothing?"]
        )),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `ring` verifies what `P` signs; `Q` verifies it too, and `Q` opens the
/// PKCS#8 `P` writes (and signs with it, verified by `P`).
fn cross<P: Provider, Q: Provider>(rsa: &P::RsaPrivate) {
    let msg = b"eyJhbGciOiJFUzI1NiJ9.eyJwIjoxfQ";
    let ec = P::ec_generate().unwrap();
    let point = P::ec_public_point(&ec);
    let sig = P::sign_es256(&ec, msg).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(msg, &sig)
        .unwrap();
    assert!(verify_es256::<Q>(&Q::ec_public(&point).unwrap(), msg, &sig));
    let ec_q = Q::ec_from_der(&P::ec_to_pkcs8(&ec).unwrap()).unwrap();
    assert_eq!(Q::ec_public_point(&ec_q), point);
    let sig = Q::sign_es256(&ec_q, msg).unwrap();
    assert!(verify_es256::<P>(&P::ec_public(&point).unwrap(), msg, &sig));

    let (n, e) = P::rsa_public_components(rsa);
    let ring_key = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
    let q_key = Q::rsa_public(&n, &e).unwrap();
    for (pss, ring_alg) in [
        (false, &ring::signature::RSA_PKCS1_2048_8192_SHA256),
        (true, &ring::signature::RSA_PSS_2048_8192_SHA256),
    ] {
        let sig = P::sign_rsa(rsa, pss, msg).unwrap();
        assert_eq!(sig.len(), n.len());
        ring_key.verify(ring_alg, msg, &sig).unwrap();
        assert!(verify_rsa::<Q>(&q_key, pss, msg, &sig));
        assert!(!verify_rsa::<Q>(&q_key, !pss, msg, &sig));
    }
    let rsa_q = Q::rsa_from_pkcs8(&P::rsa_to_pkcs8(rsa).unwrap()).unwrap();
    assert_eq!(Q::rsa_public_components(&rsa_q), (n.clone(), e.clone()));
    let sig = Q::sign_rsa(&rsa_q, true, msg).unwrap();
    assert!(verify_rsa::<P>(
        &P::rsa_public(&n, &e).unwrap(),
        true,
        msg,
        &sig
    ));
}

#[cfg(feature = "aws-lc-rs")]
#[test]
fn aws_lc_known_answers_and_ring() {
    known_answers::<aws_lc::AwsLc>();
    let rsa = aws_lc::AwsLc::rsa_generate(2048).unwrap();
    cross::<aws_lc::AwsLc, aws_lc::AwsLc>(&rsa);
}

#[cfg(any(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
#[test]
fn rust_crypto_known_answers_and_ring() {
    known_answers::<rust_crypto::RustCrypto>();
    let rsa = rust_crypto::RustCrypto::rsa_generate(2048).unwrap();
    cross::<rust_crypto::RustCrypto, rust_crypto::RustCrypto>(&rsa);
}

/// Both providers in one build: each verifies and opens what the other makes.
#[cfg(all(feature = "aws-lc-rs", feature = "rust-crypto"))]
#[test]
fn providers_agree() {
    use aws_lc::AwsLc;
    use rust_crypto::RustCrypto;
    let rsa = AwsLc::rsa_generate(2048).unwrap();
    cross::<AwsLc, RustCrypto>(&rsa);
    let rsa = RustCrypto::rsa_generate(2048).unwrap();
    cross::<RustCrypto, AwsLc>(&rsa);
    let key = b"0123456789abcdef0123456789abcdef";
    assert_eq!(
        AwsLc::hmac_sha256(key, &[b"x", b"y"]),
        RustCrypto::hmac_sha256(key, &[b"xy"])
    );
}

#[test]
fn active_provider_through_the_seam() {
    let ec = PublicKey::ec(&d(A3_X), &d(A3_Y)).unwrap();
    assert!(ec.verify(Algorithm::ES256, A3_INPUT.as_bytes(), &d(A3_SIG)));
    assert!(!ec.verify(Algorithm::RS256, A3_INPUT.as_bytes(), &d(A3_SIG)));
    assert_eq!(ec.spki_der(), std_b64(A3_SPKI));
    assert_eq!(ec.signature_len(), 64);

    let rsa = PublicKey::rsa(&d(A2_N), &d(A2_E)).unwrap();
    assert!(rsa.verify(Algorithm::RS256, A2_INPUT.as_bytes(), &d(A2_SIG)));
    assert!(!rsa.verify(Algorithm::PS256, A2_INPUT.as_bytes(), &d(A2_SIG)));
    assert!(!rsa.verify(Algorithm::ES256, A2_INPUT.as_bytes(), &d(A2_SIG)));
    assert_eq!(rsa.spki_der(), std_b64(A2_SPKI));
    assert_eq!((rsa.rsa_bits(), rsa.signature_len()), (Some(2048), 256));

    for bad_e in [&[1u8][..], &[2], &[4, 0, 0, 0, 1], &[]] {
        assert!(PublicKey::rsa(&d(A2_N), bad_e).is_err(), "{bad_e:?}");
    }
    let mut even_n = d(A2_N);
    *even_n.last_mut().unwrap() &= 0xfe;
    assert!(PublicKey::rsa(&even_n, &[1, 0, 1]).is_err());

    assert_eq!(
        hex(&sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}

#[test]
fn signing_keys_round_trip_through_pkcs8() {
    let key = SigningKey::generate_p256().unwrap();
    let again =
        SigningKey::from_der(&key.to_pkcs8_der().unwrap(), PrivateKeyFormat::Pkcs8).unwrap();
    assert_eq!(again.public_key().spki_der(), key.public_key().spki_der());
    let sig = again.sign(Algorithm::ES256, b"m").unwrap();
    assert!(key.public_key().verify(Algorithm::ES256, b"m", &sig));
    assert!(key.sign(Algorithm::RS256, b"m").is_err());
    assert!(!key.is_rsa());
    assert!(SigningKey::generate_rsa(1024).is_err());
    assert!(SigningKey::from_der(b"\x30\x03\x02\x01\x00", PrivateKeyFormat::Pkcs8).is_err());
}

#[test]
fn ecdsa_der_conversion() {
    // r = 1, s = 0x80 (needs a leading zero in DER).
    let der = [0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0x80];
    let raw = ecdsa_der_to_raw(&der).unwrap();
    assert_eq!(raw[31], 1);
    assert_eq!(raw[63], 0x80);
    assert!(raw[..31].iter().chain(&raw[32..63]).all(|&b| b == 0));
    for bad in [
        &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x80][..], // negative s
        &[0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01], // non-minimal r
        &[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01],     // r = 0
        &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00], // trailing byte
        &[0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01],     // not a SEQUENCE
    ] {
        assert!(ecdsa_der_to_raw(bad).is_none(), "{bad:?}");
    }
    // A real DER signature from ring converts to one the provider accepts.
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &rng,
    )
    .unwrap();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .unwrap();
    use ring::signature::KeyPair as _;
    let point = pair.public_key().as_ref().to_vec();
    let der = pair.sign(&rng, b"msg").unwrap();
    let raw = ecdsa_der_to_raw(der.as_ref()).unwrap();
    let key = PublicKey::ec(&point[1..33], &point[33..]).unwrap();
    assert!(key.verify(Algorithm::ES256, b"msg", &raw));
}

/// The TPM's PSS salt-length diagnosis recovers the salt length of
/// signatures made by the `rsa` crate with chosen salt lengths, and finds
/// no PSS structure in an RS256 signature.
#[test]
fn pss_salt_length_is_recovered() {
    use rsa::signature::{RandomizedSigner, SignatureEncoding};
    use rsa::traits::PublicKeyParts;
    let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let public = PublicKey::rsa(&private.n().to_bytes_be(), &private.e().to_bytes_be()).unwrap();
    let msg = b"popkey PSS salt-length probe";
    let max = 256 - 32 - 2;
    for salt in [32, 20, max] {
        let key =
            rsa::pss::SigningKey::<rsa::sha2::Sha256>::new_with_salt_len(private.clone(), salt);
        let sig = key.sign_with_rng(&mut rand::rngs::OsRng, msg).to_vec();
        assert_eq!(pss_salt_len(&public, msg, &sig), Some(salt));
        assert_eq!(pss_salt_len(&public, b"other", &sig), None);
        // Only the 32-byte salt is a JWS PS256 signature.
        assert_eq!(public.verify(Algorithm::PS256, msg, &sig), salt == 32);
    }
    let pkcs1 = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(private);
    let sig = rsa::signature::Signer::sign(&pkcs1, msg).to_vec();
    assert_eq!(pss_salt_len(&public, msg, &sig), None);
    let ec = PublicKey::ec(&d(A3_X), &d(A3_Y)).unwrap();
    assert_eq!(pss_salt_len(&ec, msg, &sig), None);
}
