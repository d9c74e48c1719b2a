//! The pure-Rust fallback: RustCrypto `p256`, `rsa`, `sha2` and `hmac`.
//!
//! RSA signing here uses the `rsa` crate, which is not constant-time
//! (RUSTSEC-2023-0071); PS256 uses blinding, RS256 cannot.

use hmac::{Hmac, Mac};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rand::rngs::OsRng;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::signature::hazmat::PrehashVerifier;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::Provider;

/// RustCrypto.
pub(crate) struct RustCrypto;

/// An RSA private key, ready for either padding.
pub(crate) struct RsaPrivate {
    pkcs1: rsa::pkcs1v15::SigningKey<Sha256>,
    pss: rsa::pss::BlindedSigningKey<Sha256>,
}

impl RsaPrivate {
    fn new(key: RsaPrivateKey) -> Self {
        RsaPrivate {
            pkcs1: rsa::pkcs1v15::SigningKey::new(key.clone()),
            pss: rsa::pss::BlindedSigningKey::new(key),
        }
    }
}

impl Provider for RustCrypto {
    const NAME: &'static str = "rust-crypto";
    type EcPublic = p256::ecdsa::VerifyingKey;
    type RsaPublic = RsaPublicKey;
    type EcPrivate = p256::ecdsa::SigningKey;
    type RsaPrivate = RsaPrivate;
    type Hasher = Sha256;

    fn ec_public(point: &[u8; 65]) -> Result<Self::EcPublic, String> {
        p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|e| e.to_string())
    }

    fn rsa_public(n: &[u8], e: &[u8]) -> Result<Self::RsaPublic, String> {
        RsaPublicKey::new_with_max_size(
            BigUint::from_bytes_be(n),
            BigUint::from_bytes_be(e),
            super::MAX_RSA_BITS,
        )
        .map_err(|err| format!("unusable RSA public key: {err}"))
    }

    fn verify_es256(key: &Self::EcPublic, digest: &[u8; 32], sig: &[u8]) -> bool {
        p256::ecdsa::Signature::from_slice(sig)
            .map(|sig| key.verify_prehash(digest, &sig).is_ok())
            .unwrap_or(false)
    }

    fn verify_rsa(key: &Self::RsaPublic, pss: bool, digest: &[u8; 32], sig: &[u8]) -> bool {
        if pss {
            let vk = rsa::pss::VerifyingKey::<Sha256>::new(key.clone());
            rsa::pss::Signature::try_from(sig)
                .map(|sig| vk.verify_prehash(digest, &sig).is_ok())
                .unwrap_or(false)
        } else {
            let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.clone());
            rsa::pkcs1v15::Signature::try_from(sig)
                .map(|sig| vk.verify_prehash(digest, &sig).is_ok())
                .unwrap_or(false)
        }
    }

    fn ec_generate() -> Result<Self::EcPrivate, String> {
        Ok(p256::ecdsa::SigningKey::random(&mut OsRng))
    }

    fn rsa_generate(bits: usize) -> Result<Self::RsaPrivate, String> {
        RsaPrivateKey::new(&mut OsRng, bits)
            .map(RsaPrivate::new)
            .map_err(|e| format!("RSA-{bits} key generation failed: {e}"))
    }

    fn ec_from_der(der: &[u8]) -> Result<Self::EcPrivate, String> {
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
            return Ok(k);
        }
        p256::SecretKey::from_sec1_der(der)
            .map(Into::into)
            .map_err(|e| e.to_string())
    }

    fn rsa_from_pkcs8(der: &[u8]) -> Result<Self::RsaPrivate, String> {
        RsaPrivateKey::from_pkcs8_der(der)
            .map(RsaPrivate::new)
            .map_err(|e| e.to_string())
    }

    fn rsa_from_pkcs1(der: &[u8]) -> Result<Self::RsaPrivate, String> {
        RsaPrivateKey::from_pkcs1_der(der)
            .map(RsaPrivate::new)
            .map_err(|e| e.to_string())
    }

    fn ec_to_pkcs8(key: &Self::EcPrivate) -> Result<Zeroizing<Vec<u8>>, String> {
        key.to_pkcs8_der()
            .map(|doc| Zeroizing::new(doc.as_bytes().to_vec()))
            .map_err(|e| format!("cannot encode the key as PKCS#8: {e}"))
    }

    fn rsa_to_pkcs8(key: &Self::RsaPrivate) -> Result<Zeroizing<Vec<u8>>, String> {
        key.pkcs1
            .as_ref()
            .to_pkcs8_der()
            .map(|doc| Zeroizing::new(doc.as_bytes().to_vec()))
            .map_err(|e| format!("cannot encode the key as PKCS#8: {e}"))
    }

    fn ec_public_point(key: &Self::EcPrivate) -> [u8; 65] {
        let mut out = [0u8; 65];
        let point = key.verifying_key().to_encoded_point(false);
        if point.as_bytes().len() == 65 {
            out.copy_from_slice(point.as_bytes());
        }
        out
    }

    fn rsa_public_components(key: &Self::RsaPrivate) -> (Vec<u8>, Vec<u8>) {
        let k: &RsaPrivateKey = key.pkcs1.as_ref();
        (k.n().to_bytes_be(), k.e().to_bytes_be())
    }

    fn sign_es256(key: &Self::EcPrivate, msg: &[u8]) -> Result<[u8; 64], String> {
        let sig: p256::ecdsa::Signature = key
            .try_sign(msg)
            .map_err(|e| format!("ECDSA signing failed: {e}"))?;
        Ok(sig.to_bytes().into())
    }

    fn sign_rsa(key: &Self::RsaPrivate, pss: bool, msg: &[u8]) -> Result<Vec<u8>, String> {
        let fail = |e: rsa::signature::Error| format!("RSA signing failed: {e}");
        if pss {
            Ok(key
                .pss
                .try_sign_with_rng(&mut OsRng, msg)
                .map_err(fail)?
                .to_vec())
        } else {
            Ok(key.pkcs1.try_sign(msg).map_err(fail)?.to_vec())
        }
    }

    fn sha256_new() -> Self::Hasher {
        Sha256::new()
    }

    fn sha256_update(h: &mut Self::Hasher, data: &[u8]) {
        Digest::update(h, data);
    }

    fn sha256_finish(h: Self::Hasher) -> [u8; 32] {
        h.finalize().into()
    }

    fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        // HMAC takes keys of any length, so this cannot fail.
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
            unreachable!("HMAC accepts keys of any length")
        };
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }
}
