//! DPoP proofs (RFC 9449 §4).
//!
//! Header `{"typ":"dpop+jwt","alg","jwk"}`; claims `jti` (128 random bits),
//! `htm`, `htu` (no query or fragment), `iat`, and `ath` / `nonce` when given.
//!
//! ```
//! use popkey::{dpop::DpopProof, PopKey};
//! let key = PopKey::open("mem:")?;
//! let proof = DpopProof::new("POST", "https://server.example.com/token")?.sign(&key)?;
//! // send it as the `DPoP` request header
//! assert_eq!(proof.split('.').count(), 3);
//! # Ok::<(), popkey::Error>(())
//! ```

use rand::RngCore;

use crate::b64;
use crate::error::{Error, Result};
use crate::http::HttpTarget;
use crate::json::ObjectWriter;
use crate::provider::PopCryptoProvider;

/// A DPoP proof under construction.
#[derive(Clone)]
pub struct DpopProof {
    target: HttpTarget,
    ath: Option<String>,
    nonce: Option<String>,
    iat: Option<u64>,
    jti: Option<String>,
}

impl std::fmt::Debug for DpopProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopProof")
            .field("htm", &self.target.method())
            .field("htu", &self.target.url_without_query())
            .field("ath", &self.ath)
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

impl DpopProof {
    /// A proof for a request: uppercase `method` and absolute `url` (its
    /// query and fragment are left out of `htu`).
    pub fn new(method: &str, url: &str) -> Result<Self> {
        Ok(DpopProof {
            target: HttpTarget::new(method, url)?,
            ath: None,
            nonce: None,
            iat: None,
            jti: None,
        })
    }

    /// Binds the proof to an access token (`ath`), for calls to a resource.
    pub fn access_token(mut self, token: &str) -> Result<Self> {
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::request(
                "the access token is empty or contains whitespace",
            ));
        }
        self.ath = Some(ath(token));
        Ok(self)
    }

    /// Includes a server-provided nonce (`DPoP-Nonce`).
    pub fn nonce(mut self, nonce: &str) -> Result<Self> {
        // RFC 9449 §8.1: nonce = 1*NQCHAR
        if nonce.is_empty()
            || !nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err(Error::request(
                "a DPoP nonce must be non-empty printable ASCII without quotes or backslashes",
            ));
        }
        self.nonce = Some(nonce.to_owned());
        Ok(self)
    }

    /// Sets `iat` (seconds since the Unix epoch) instead of the current time.
    pub fn issued_at(mut self, iat: u64) -> Self {
        self.iat = Some(iat);
        self
    }

    /// Sets `jti` instead of 128 random bits (for tests and known answers).
    pub fn jti(mut self, jti: &str) -> Self {
        self.jti = Some(jti.to_owned());
        self
    }

    /// Signs the proof; returns the compact JWS for the `DPoP` header.
    pub fn sign<P: PopCryptoProvider + ?Sized>(&self, provider: &P) -> Result<String> {
        let jwk = provider.canonical_public_key_jwk();
        let mut header = ObjectWriter::with_capacity(jwk.len() + 48);
        header
            .str("typ", "dpop+jwt")
            .str("alg", provider.algorithm().as_str())
            .raw("jwk", jwk);

        let jti = match &self.jti {
            Some(j) => j.clone(),
            None => {
                let mut bytes = [0u8; 16];
                rand::thread_rng().fill_bytes(&mut bytes);
                b64::encode(bytes)
            }
        };
        let mut claims = ObjectWriter::with_capacity(256);
        claims
            .str("jti", &jti)
            .str("htm", self.target.method())
            .str("htu", &self.target.url_without_query())
            .uint("iat", self.iat.unwrap_or_else(crate::now));
        if let Some(a) = &self.ath {
            claims.str("ath", a);
        }
        if let Some(n) = &self.nonce {
            claims.str("nonce", n);
        }
        crate::jws::sign_compact(provider, &header.finish(), &claims.finish())
    }
}

/// The `ath` claim: base64url(SHA-256(ASCII(access token))), RFC 9449 §4.2.
pub fn ath(access_token: &str) -> String {
    b64::encode(crate::crypto::sha256(access_token.as_bytes()))
}
