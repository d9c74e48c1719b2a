//! mTLS client authentication with a popkey key (feature `mtls`): a
//! rustls [`SigningKey`] and client-certificate resolver backed by any
//! [`PopKey`] (file, PKCS#11, TPM), for RFC 8705 certificate-bound tokens.
//!
//! * [`PopKeySigningKey`] signs TLS handshakes with the key: ES256 →
//!   `ecdsa_secp256r1_sha256` (the signature converted from JWS `r || s`
//!   to the DER `ECDSA-Sig-Value` TLS wants), RS256 → `rsa_pkcs1_sha256`,
//!   PS256 → `rsa_pss_rsae_sha256`. It offers only the scheme its key can
//!   make.
//! * [`ClientIdentity`] is a key with its certificate chain (checked to be
//!   for that key and valid now). Give it to
//!   `popkey::client::TlsConfig::client_identity` to get a `reqwest::Client`
//!   or a `rustls::ClientConfig` that presents it.
//!
//! TLS 1.3 forbids PKCS#1 v1.5 signatures in `CertificateVerify` (RFC 8446
//! §4.4.3), so a client with an RS256 identity speaks TLS 1.2; ES256 and
//! PS256 identities speak TLS 1.3 and 1.2.
//!
//! **Slow keys and the async executor.** rustls calls the signer
//! synchronously, in the middle of a handshake that tokio is driving; a
//! real TPM takes 50–200 ms per signature. On a multi-thread tokio runtime
//! the signature runs inside [`tokio::task::block_in_place`]: the worker
//! hands its other tasks to a fresh thread first, so they keep running
//! while the key signs. (A separate signing thread would not help: the
//! synchronous `sign` call would still hold the worker while it waits.) On
//! a current-thread runtime, where `block_in_place` is not allowed, and
//! outside any runtime the key signs inline; use a multi-thread runtime
//! with slow keys. A pooled connection signs once, at its handshake, not
//! per request.
//!
//! ```
//! use popkey::cert::CertificateTemplate;
//! use popkey::client::TlsConfig;
//! use popkey::tls::ClientIdentity;
//! use popkey::PopKey;
//!
//! let key = PopKey::open("mem:")?;
//! let cert = CertificateTemplate::new("CN=orders-daemon")?.self_signed(&key)?;
//! let identity = ClientIdentity::new(key, cert)?;
//! println!("x5t#S256: {}", identity.certificate_thumbprint());
//! let http: reqwest::Client = TlsConfig::new().client_identity(identity).http_client()?;
//! # let _ = http;
//! # Ok::<(), popkey::Error>(())
//! ```

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use rustls::sign::{CertifiedKey, Signer as TlsSigner, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::alg::Algorithm;
use crate::cert::{check_certificate_matches_key, CertificateChain};
use crate::error::Result;
use crate::key::PopKey;
use crate::provider::PopCryptoProvider;

/// A rustls signing key backed by a [`PopKey`]; it is also the
/// [`rustls::sign::Signer`] for the one scheme the key can make.
#[derive(Clone)]
pub struct PopKeySigningKey {
    key: PopKey,
    scheme: SignatureScheme,
    spki: Arc<Vec<u8>>,
    signatures: Arc<AtomicU64>,
}

impl fmt::Debug for PopKeySigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PopKeySigningKey")
            .field("kid", &self.key.kid())
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl PopKeySigningKey {
    /// A signing key for `key`.
    pub fn new(key: PopKey) -> Result<Self> {
        let spki = key.public_jwk().to_spki_der()?;
        Ok(PopKeySigningKey {
            scheme: tls_scheme(key.algorithm()),
            key,
            spki: Arc::new(spki),
            signatures: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The TLS signature scheme the key signs with.
    pub fn signature_scheme(&self) -> SignatureScheme {
        self.scheme
    }

    /// The key.
    pub fn key(&self) -> &PopKey {
        &self.key
    }

    /// How many handshake signatures this key (and its clones) has made.
    pub fn signatures(&self) -> u64 {
        self.signatures.load(Ordering::Relaxed)
    }
}

/// The TLS signature scheme for a JWS algorithm.
pub fn tls_scheme(alg: Algorithm) -> SignatureScheme {
    match alg {
        Algorithm::ES256 => SignatureScheme::ECDSA_NISTP256_SHA256,
        Algorithm::RS256 => SignatureScheme::RSA_PKCS1_SHA256,
        Algorithm::PS256 => SignatureScheme::RSA_PSS_SHA256,
    }
}

impl SigningKey for PopKeySigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn TlsSigner>> {
        if offered.contains(&self.scheme) {
            Some(Box::new(self.clone()))
        } else {
            None
        }
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.key.algorithm() {
            Algorithm::ES256 => SignatureAlgorithm::ECDSA,
            Algorithm::RS256 | Algorithm::PS256 => SignatureAlgorithm::RSA,
        }
    }
}

impl TlsSigner for PopKeySigningKey {
    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, rustls::Error> {
        let raw = crate::executor::off_executor(|| self.key.sign(message)).map_err(|e| {
            rustls::Error::General(format!("popkey {} could not sign: {e}", self.key.uri()))
        })?;
        self.signatures.fetch_add(1, Ordering::Relaxed);
        match self.key.algorithm() {
            Algorithm::ES256 => p256::ecdsa::Signature::from_slice(&raw)
                .map(|s| s.to_der().as_bytes().to_vec())
                .map_err(|e| {
                    rustls::Error::General(format!(
                        "popkey {} returned a malformed ECDSA signature: {e}",
                        self.key.uri()
                    ))
                }),
            Algorithm::RS256 | Algorithm::PS256 => Ok(raw),
        }
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// A popkey key with its certificate chain: what a TLS client presents for
/// mutual TLS.
#[derive(Clone)]
pub struct ClientIdentity {
    signing_key: PopKeySigningKey,
    chain: CertificateChain,
    certified: Arc<CertifiedKey>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("key", &self.signing_key)
            .field("certificate", &self.chain)
            .finish()
    }
}

impl ClientIdentity {
    /// `key` with `chain` (leaf first). Refused when the leaf is not for
    /// `key` or not valid now (see
    /// [`check_certificate_matches_key`]).
    pub fn new(key: PopKey, chain: CertificateChain) -> Result<Self> {
        check_certificate_matches_key(&chain, &key)?;
        let signing_key = PopKeySigningKey::new(key)?;
        let certs = chain
            .ders()
            .iter()
            .map(|d| CertificateDer::from(d.clone()))
            .collect();
        let certified = Arc::new(CertifiedKey::new(certs, Arc::new(signing_key.clone())));
        Ok(ClientIdentity {
            signing_key,
            chain,
            certified,
        })
    }

    /// `key` with the PEM certificate chain in the file at `path`.
    pub fn from_pem_file(key: PopKey, path: impl AsRef<Path>) -> Result<Self> {
        Self::new(key, CertificateChain::from_pem_file(path)?)
    }

    /// The key.
    pub fn key(&self) -> &PopKey {
        self.signing_key.key()
    }

    /// The certificate chain.
    pub fn certificate_chain(&self) -> &CertificateChain {
        &self.chain
    }

    /// The leaf certificate's SHA-256 thumbprint (RFC 8705 `cnf.x5t#S256`).
    pub fn certificate_thumbprint(&self) -> &str {
        self.chain.thumbprint_sha256()
    }

    /// The rustls signing key.
    pub fn signing_key(&self) -> &PopKeySigningKey {
        &self.signing_key
    }

    /// How many TLS handshakes this identity has signed (all clones
    /// count): a pooled connection signs once, however many requests it
    /// carries.
    pub fn handshake_signatures(&self) -> u64 {
        self.signing_key.signatures()
    }

    /// The client-certificate resolver for
    /// `rustls::ConfigBuilder::with_client_cert_resolver`.
    pub fn cert_resolver(&self) -> Arc<dyn ResolvesClientCert> {
        Arc::new(PopKeyCertResolver {
            certified: self.certified.clone(),
            scheme: self.signing_key.scheme,
        })
    }

    /// True when the identity can only sign in TLS 1.2 (RS256: TLS 1.3
    /// forbids PKCS#1 v1.5 handshake signatures).
    pub fn needs_tls12(&self) -> bool {
        self.key().algorithm() == Algorithm::RS256
    }
}

/// Presents one certificate chain when the server accepts the key's scheme.
#[derive(Debug)]
struct PopKeyCertResolver {
    certified: Arc<CertifiedKey>,
    scheme: SignatureScheme,
}

impl ResolvesClientCert for PopKeyCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        if sigschemes.contains(&self.scheme) {
            Some(self.certified.clone())
        } else {
            tracing::warn!(
                scheme = ?self.scheme,
                offered = ?sigschemes,
                "the TLS server does not accept the client key's signature scheme; no client certificate sent"
            );
            None
        }
    }

    fn has_certs(&self) -> bool {
        true
    }
}
