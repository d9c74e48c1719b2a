//! The default provider: AWS-LC through `aws-lc-rs`.

use std::sync::{Arc, OnceLock};

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

/// An RSA public key, parsed for a padding the first time it verifies
/// with that padding. Clones share the parsed forms, so a key kept in a
/// cache is parsed once, and AWS-LC's Montgomery constants for its modulus
/// (computed on first use and kept in the parsed key) serve every later
/// proof signed with it.
#[derive(Clone)]
pub(crate) struct RsaPublic(Arc<RsaParsed>);

struct RsaParsed {
    n: Vec<u8>,
    e: Vec<u8>,
    pkcs1: OnceLock<Option<ParsedPublicKey>>,
    pss: OnceLock<Option<ParsedPublicKey>>,
}

impl RsaPublic {
    fn parsed(&self, pss: bool) -> Option<&ParsedPublicKey> {
        let key = &*self.0;
        let (cell, params): (_, &'static signature::RsaParameters) = if pss {
            (&key.pss, &signature::RSA_PSS_2048_8192_SHA256)
        } else {
            (&key.pkcs1, &signature::RSA_PKCS1_2048_8192_SHA256)
        };
        cell.get_or_init(|| {
            RsaPublicKeyComponents {
                n: &key.n,
                e: &key.e,
            }
            .to_parsed_public_key(params)
            .ok()
        })
        .as_ref()
    }
}

/// A SHA-256 digest popkey computed itself, in aws-lc-rs's type.
fn sha256_digest(bytes: &[u8; 32]) -> Option<digest::Digest> {
    digest::Digest::import_less_safe(bytes, &digest::SHA256).ok()
}

impl Provider for AwsLc {
    const NAME: &'static str = "aws-lc-rs";
    type EcPublic = Arc<ParsedPublicKey>;
    type RsaPublic = RsaPublic;
    type EcPrivate = EcdsaKeyPair;
    type RsaPrivate = RsaKeyPair;
    type Hasher = digest::Context;

    fn ec_public(point: &[u8; 65]) -> Result<Self::EcPublic, String> {
        // As SubjectPublicKeyInfo: the form aws-lc-rs tries first.
        let mut spki = [0u8; 91];
        spki[..26].copy_from_slice(&super::EC_SPKI_PREFIX);
        spki[26..].copy_from_slice(point);
        ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, spki)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    /// The components are checked by the seam (odd modulus of 2048–8192
    /// bits, odd exponent below 2^33); AWS-LC parses them when they first
    /// verify.
    fn rsa_public(n: &[u8], e: &[u8]) -> Result<Self::RsaPublic, String> {
        Ok(RsaPublic(Arc::new(RsaParsed {
            n: n.to_vec(),
            e: e.to_vec(),
            pkcs1: OnceLock::new(),
            pss: OnceLock::new(),
        })))
    }

    fn verify_es256(key: &Self::EcPublic, digest: &[u8; 32], sig: &[u8]) -> bool {
        sha256_digest(digest).is_some_and(|d| key.verify_digest_sig(&d, sig).is_ok())
    }

    fn verify_rsa(key: &Self::RsaPublic, pss: bool, digest: &[u8; 32], sig: &[u8]) -> bool {
        match (key.parsed(pss), sha256_digest(digest)) {
            (Some(k), Some(d)) => k.verify_digest_sig(&d, sig).is_ok(),
            _ => false,
        }
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
