//! Known answers from RFC 7638, RFC 9449 and RFC 7515 (signature
//! verification on whichever crypto provider this build uses).

use popkey_testkit::common;

use popkey::PublicJwk;

#[test]
fn rfc7638_section_3_1_thumbprint() {
    let jwk = r#"{
      "kty": "RSA",
      "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
      "e": "AQAB",
      "alg": "RS256",
      "kid": "2011-04-29"
    }"#;
    let key = PublicJwk::parse(jwk).unwrap();
    assert_eq!(
        key.thumbprint(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    assert!(key
        .canonical_json()
        .starts_with(r#"{"e":"AQAB","kty":"RSA","n":"0vx7"#));
}

const RFC9449_JWK: &str = r#"{"kty":"EC","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs","y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA","crv":"P-256"}"#;

#[test]
fn rfc9449_example_jwk_thumbprint() {
    let key = PublicJwk::parse(RFC9449_JWK).unwrap();
    // RFC 9449 §6.1 `jkt` of the example key.
    assert_eq!(
        key.thumbprint(),
        "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    );
    assert_eq!(
        key.canonical_json(),
        r#"{"crv":"P-256","kty":"EC","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs","y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"}"#
    );
}

#[test]
fn rfc9449_ath_example() {
    // RFC 9449 §7.1: the access token and the `ath` of the proof that carries it.
    assert_eq!(
        popkey::dpop::ath("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
}

/// RFC 9449 §4.1, Figure 3: the example proof's signature verifies with the
/// example key, both with ring and with popkey's own check.
#[test]
fn rfc9449_example_proof_verifies() {
    let proof = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";
    let (header, payload) = common::verify_dpop(proof);
    assert_eq!(payload["htu"], "https://server.example.com/token");
    let key = PublicJwk::from_json_value(&header["jwk"]).unwrap();
    let dot = proof.rfind('.').unwrap();
    key.verify(
        popkey::Algorithm::ES256,
        &proof.as_bytes()[..dot],
        &common::b64d(&proof[dot + 1..]),
    )
    .unwrap();
}

/// RFC 7515 A.3: ES256 JWS over the example payload.
const RFC7515_A3_JWK: &str = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
const RFC7515_A3_JWS: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

/// RFC 7515 A.2: RS256 JWS over the same payload.
const RFC7515_A2_JWK: &str = r#"{"kty":"RSA","n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ","e":"AQAB"}"#;
const RFC7515_A2_JWS: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

/// Verifies `jws` with popkey (whatever crypto provider this build uses) and
/// with ring, and checks that a flipped bit anywhere is rejected.
fn rfc7515_vector(jwk: &str, jws: &str, alg: popkey::Algorithm) {
    let key = PublicJwk::parse(jwk).unwrap();
    let jwk_value: serde_json::Value = serde_json::from_str(jwk).unwrap();
    common::ring_verify(jws, &jwk_value);
    let dot = jws.rfind('.').unwrap();
    let input = &jws.as_bytes()[..dot];
    let sig = common::b64d(&jws[dot + 1..]);
    key.verify(alg, input, &sig).unwrap();
    let mut bad_sig = sig.clone();
    bad_sig[5] ^= 0x20;
    assert!(key.verify(alg, input, &bad_sig).is_err());
    let mut bad_input = input.to_vec();
    bad_input[3] ^= 1;
    assert!(key.verify(alg, &bad_input, &sig).is_err());
    // The signature does not pass as another algorithm.
    let other = match alg {
        popkey::Algorithm::RS256 => popkey::Algorithm::PS256,
        _ => popkey::Algorithm::RS256,
    };
    assert!(key.verify(other, input, &sig).is_err());
}

#[test]
fn rfc7515_a3_es256_verifies() {
    rfc7515_vector(RFC7515_A3_JWK, RFC7515_A3_JWS, popkey::Algorithm::ES256);
}

#[test]
fn rfc7515_a2_rs256_verifies() {
    rfc7515_vector(RFC7515_A2_JWK, RFC7515_A2_JWS, popkey::Algorithm::RS256);
}

/// The RFC 7515 A.3 key's SubjectPublicKeyInfo, as OpenSSL encodes it.
#[test]
fn rfc7515_keys_encode_as_openssl_spki() {
    use base64::Engine;
    let std = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).unwrap();
    let ec = PublicJwk::parse(RFC7515_A3_JWK).unwrap();
    assert_eq!(
        ec.to_spki_der().unwrap(),
        std("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEf83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEXH8UTNG72bfocs3+257rn0s2ldbqkLJK2KRiMohYjlrQ==")
    );
    let rsa = PublicJwk::parse(RFC7515_A2_JWK).unwrap();
    assert_eq!(
        rsa.to_spki_der().unwrap(),
        std("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd/wWJcyQoTbji9k0l8W26mPddxHmfHQp+Vaw+4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL+yRT+SFd2lZS+pCgNMsD1W/YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb/7OMg0LOL+bSf63kpaSHSXndS5z5rexMdbBYUsLA9e+KXBdQOS+UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6/I5IhlJH7aGhyxXFvUK+DWNmoudF8NAco9/h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQIDAQAB")
    );
}
