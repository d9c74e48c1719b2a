//! JWS signatures from PKCS#11 mechanisms.
//!
//! * ES256: `CKM_ECDSA` over the SHA-256 digest (computed here), raw `r || s`;
//! * RS256: `CKM_SHA256_RSA_PKCS`;
//! * PS256: `CKM_SHA256_RSA_PKCS_PSS`, MGF1-SHA256, 32-byte salt.

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;

use super::errors::{Ctx, Fail};
use crate::alg::Algorithm;
use crate::error::Error;

/// The mechanism for `alg`.
pub(super) fn mechanism(alg: Algorithm) -> Mechanism<'static> {
    match alg {
        Algorithm::ES256 => Mechanism::Ecdsa,
        Algorithm::RS256 => Mechanism::Sha256RsaPkcs,
        Algorithm::PS256 => Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
            hash_alg: MechanismType::SHA256,
            mgf: PkcsMgfType::MGF1_SHA256,
            s_len: 32.into(),
        }),
    }
}

/// One `C_Sign` on `session`; returns the JWS signature bytes.
/// `sig_len` is the signature length the public key implies.
pub(super) fn sign(
    session: &Session,
    key: ObjectHandle,
    alg: Algorithm,
    mechanism: &Mechanism<'_>,
    input: &[u8],
    sig_len: usize,
) -> Result<Vec<u8>, Fail> {
    match alg {
        Algorithm::ES256 => {
            let digest = crate::crypto::sha256(input);
            let sig = session.sign(mechanism, key, &digest).ctx("sign")?;
            Ok(ecdsa_raw(sig)?)
        }
        Algorithm::RS256 | Algorithm::PS256 => {
            let sig = session.sign(mechanism, key, input).ctx("sign")?;
            Ok(left_pad(sig, sig_len)?)
        }
    }
}

/// `r || s`, each left-padded to 32 bytes. Tokens return `r || s` of equal
/// halves; a DER `SEQUENCE` (some vendors) is converted too.
pub(super) fn ecdsa_raw(sig: Vec<u8>) -> Result<Vec<u8>, Error> {
    if sig.len() == 64 {
        return Ok(sig);
    }
    if sig.first() == Some(&0x30) {
        if let Some(raw) = crate::crypto::ecdsa_der_to_raw(&sig) {
            return Ok(raw.to_vec());
        }
    }
    if sig.len() % 2 == 0 && sig.len() < 64 && !sig.is_empty() {
        let half = sig.len() / 2;
        let mut out = vec![0u8; 64];
        out[32 - half..32].copy_from_slice(&sig[..half]);
        out[64 - half..].copy_from_slice(&sig[half..]);
        return Ok(out);
    }
    Err(Error::Backend {
        backend: "pkcs11",
        message: format!(
            "the token returned a {}-byte ECDSA signature; expected 64 bytes (r || s)",
            sig.len()
        ),
    })
}

/// RSA signatures are as long as the modulus; a token that drops leading
/// zero bytes gets them back.
fn left_pad(sig: Vec<u8>, len: usize) -> Result<Vec<u8>, Error> {
    match sig.len() {
        n if n == len => Ok(sig),
        n if n < len => {
            let mut out = vec![0u8; len - n];
            out.extend(sig);
            Ok(out)
        }
        n => Err(Error::Backend {
            backend: "pkcs11",
            message: format!(
                "the token returned a {n}-byte RSA signature for a {len}-byte modulus"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads() {
        assert_eq!(ecdsa_raw(vec![1; 64]).unwrap(), vec![1; 64]);
        let short = ecdsa_raw(vec![1, 2, 3, 4]).unwrap();
        assert_eq!(short.len(), 64);
        assert_eq!(&short[30..32], &[1, 2]);
        assert_eq!(&short[62..], &[3, 4]);
        assert!(ecdsa_raw(vec![1; 65]).is_err());
        assert_eq!(left_pad(vec![9; 255], 256).unwrap()[0], 0);
        assert!(left_pad(vec![9; 257], 256).is_err());
    }
}
