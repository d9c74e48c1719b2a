//! RustCrypto `signature` traits on [`PopKey`], so a popkey key plugs into
//! crates that take a generic `Signer` (certificate and CSR builders, JWT
//! libraries).
//!
//! ```
//! use popkey::PopKey;
//! use signature::{Keypair, Signer};
//! let key = PopKey::open("mem:")?;
//! let sig: p256::ecdsa::Signature = key.try_sign(b"message")?;
//! // The verifying key is the key's public JWK; it also encodes as SPKI DER.
//! let public = key.verifying_key();
//! public.verify(popkey::Algorithm::ES256, b"message", &sig.to_bytes())?;
//! assert!(!public.to_spki_der()?.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use signature::{Keypair, SignatureEncoding, Signer};

use crate::alg::Algorithm;
use crate::jwk::PublicJwk;
use crate::key::PopKey;
use crate::provider::PopCryptoProvider;

/// A JWS signature as bytes, whatever the algorithm (ECDSA: raw `r || s`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwsSignature(Vec<u8>);

impl JwsSignature {
    /// The signature bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<JwsSignature> for Vec<u8> {
    fn from(s: JwsSignature) -> Vec<u8> {
        s.0
    }
}

impl TryFrom<&[u8]> for JwsSignature {
    type Error = signature::Error;
    fn try_from(bytes: &[u8]) -> Result<Self, signature::Error> {
        Ok(JwsSignature(bytes.to_vec()))
    }
}

impl SignatureEncoding for JwsSignature {
    type Repr = Vec<u8>;
}

fn wrap(e: crate::Error) -> signature::Error {
    signature::Error::from_source(e)
}

fn need(key: &PopKey, alg: Algorithm) -> Result<(), signature::Error> {
    if key.algorithm() == alg {
        Ok(())
    } else {
        Err(wrap(crate::Error::AlgorithmMismatch(format!(
            "this key signs {}, not {alg}",
            key.algorithm()
        ))))
    }
}

impl Signer<JwsSignature> for PopKey {
    fn try_sign(&self, msg: &[u8]) -> Result<JwsSignature, signature::Error> {
        PopKey::sign(self, msg).map(JwsSignature).map_err(wrap)
    }
}

impl Signer<p256::ecdsa::Signature> for PopKey {
    /// ES256 keys only.
    fn try_sign(&self, msg: &[u8]) -> Result<p256::ecdsa::Signature, signature::Error> {
        need(self, Algorithm::ES256)?;
        p256::ecdsa::Signature::from_slice(&PopKey::sign(self, msg).map_err(wrap)?)
    }
}

impl Signer<rsa::pkcs1v15::Signature> for PopKey {
    /// RS256 keys only.
    fn try_sign(&self, msg: &[u8]) -> Result<rsa::pkcs1v15::Signature, signature::Error> {
        need(self, Algorithm::RS256)?;
        rsa::pkcs1v15::Signature::try_from(PopKey::sign(self, msg).map_err(wrap)?.as_slice())
    }
}

impl Signer<rsa::pss::Signature> for PopKey {
    /// PS256 keys only.
    fn try_sign(&self, msg: &[u8]) -> Result<rsa::pss::Signature, signature::Error> {
        need(self, Algorithm::PS256)?;
        rsa::pss::Signature::try_from(PopKey::sign(self, msg).map_err(wrap)?.as_slice())
    }
}

impl Keypair for PopKey {
    type VerifyingKey = PublicJwk;
    fn verifying_key(&self) -> PublicJwk {
        self.public_jwk().clone()
    }
}
