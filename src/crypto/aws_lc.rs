//! The default provider: AWS-LC through `aws-lc-rs`.

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, KeyPair, ParsedPublicKey, RsaKeyPair, RsaPublicKeyComponents,
};
use aws_lc_rs::{digest, hmac};
use zeroize::Zeroizing;

use super::Provider;

/// AWS-LC.
pub(crate) struct AwsLc;

/// An RSA public key parsed once for each padding.
#[derive(Clone)]
pub(crate) struct RsaPublic {
    pkcs1: Arc<ParsedPublicKey>,
    pss: Arc<ParsedPublicKey>,
}

impl Provider for AwsLc {
    const NAME: &'static str = "aws-lc-rs";
    type EcPublic = Arc<ParsedPublicKey>;
    type RsaPublic = RsaPublic;
    type EcPrivate = EcdsaKeyPair;
    type RsaPrivate = RsaKeyPair;
    type Hasher = digest::Context;

    fn ec_public(point: &[u8; 65]) -> Result<Self::EcPublic, String> {
        ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    fn rsa_public(n: &[u8], e: &[u8]) -> Result<Self::RsaPublic, String> {
        let parts = RsaPublicKeyComponents { n, e };
        let parse = |params| {
            parts
                .to_parsed_public_key(params)
                .map(Arc::new)
                .map_err(|e| format!("unusable RSA public key: {e}"))
        };
        Ok(RsaPublic {
            pkcs1: parse(&signature::RSA_PKCS1_2048_8192_SHA256)?,
            pss: parse(&signature::RSA_PSS_2048_8192_SHA256)?,
        })
    }

    fn verify_es256(key: &Self::EcPublic, msg: &[u8], sig: &[u8]) -> bool {
        key.verify_sig(msg, sig).is_ok()
    }

    fn verify_rsa(key: &Self::RsaPublic, pss: bool, msg: &[u8], sig: &[u8]) -> bool {
        let key = if pss { &key.pss } else { &key.pkcs1 };
        key.verify_sig(msg, sig).is_ok()
    }

    fn ec_generate() -> Result<Self::EcPrivate, String> {
        EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| "P-256 key generation failed".to_string())
    }

    fn rsa_generate(bits: usize) -> Result<Self::RsaPrivate, String> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            _ => return Err(format!("RSA-{bits} is not offered")),
        };
        RsaKeyPair::generate(size).map_err(|_| format!("RSA-{bits} key generation failed"))
    }

    fn ec_from_der(der: &[u8]) -> Result<Self::EcPrivate, String> {
        EcdsaKeyPair::from_private_key_der(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| e.to_string())
    }

    fn rsa_from_pkcs8(der: &[u8]) -> Result<Self::RsaPrivate, String> {
        RsaKeyPair::from_pkcs8(der).map_err(|e| e.to_string())
    }

    fn rsa_from_pkcs1(der: &[u8]) -> Result<Self::RsaPrivate, String> {
        RsaKeyPair::from_der(der).map_err(|e| e.to_string())
    }

    fn ec_to_pkcs8(key: &Self::EcPrivate) -> Result<Zeroizing<Vec<u8>>, String> {
        key.to_pkcs8v1()
            .map(|doc| Zeroizing::new(doc.as_ref().to_vec()))
            .map_err(|_| "cannot encode the key as PKCS#8".to_string())
    }

    fn rsa_to_pkcs8(key: &Self::RsaPrivate) -> Result<Zeroizing<Vec<u8>>, String> {
        AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'static>>::as_der(key)
            .map(|doc| Zeroizing::new(doc.as_ref().to_vec()))
            .map_err(|_| "cannot encode the key as PKCS#8".to_string())
    }

    fn ec_public_point(key: &Self::EcPrivate) -> [u8; 65] {
        let mut out = [0u8; 65];
        let point = key.public_key().as_ref();
        // An uncompressed P-256 point is always 65 bytes; anything else
        // leaves zeros, which the public-key check then rejects.
        if point.len() == 65 {
            out.copy_from_slice(point);
        }
        out
    }

    fn rsa_public_components(key: &Self::RsaPrivate) -> (Vec<u8>, Vec<u8>) {
        let public = key.public_key();
        (
            public.modulus().big_endian_without_leading_zero().to_vec(),
            public.exponent().big_endian_without_leading_zero().to_vec(),
        )
    }

    fn sign_es256(key: &Self::EcPrivate, msg: &[u8]) -> Result<[u8; 64], String> {
        let sig = key
            .sign(&SystemRandom::new(), msg)
            .map_err(|_| "ECDSA signing failed".to_string())?;
        sig.as_ref()
            .try_into()
            .map_err(|_| "ECDSA signature is not 64 bytes".to_string())
    }

    fn sign_rsa(key: &Self::RsaPrivate, pss: bool, msg: &[u8]) -> Result<Vec<u8>, String> {
        let padding: &'static dyn signature::RsaEncoding = if pss {
            &signature::RSA_PSS_SHA256
        } else {
            &signature::RSA_PKCS1_SHA256
        };
        let mut sig = vec![0u8; key.public_modulus_len()];
        key.sign(padding, &SystemRandom::new(), msg, &mut sig)
            .map_err(|_| "RSA signing failed".to_string())?;
        Ok(sig)
    }

    fn sha256_new() -> Self::Hasher {
        digest::Context::new(&digest::SHA256)
    }

    fn sha256_update(h: &mut Self::Hasher, data: &[u8]) {
        h.update(data);
    }

    fn sha256_finish(h: Self::Hasher) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(h.finish().as_ref());
        out
    }

    fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        let mut ctx = hmac::Context::with_key(&key);
        for p in parts {
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}
