//! The key handle: one immutable, proven key pair in one backend.

use std::fmt;
use std::sync::Arc;

use rand::RngCore;

use crate::alg::Algorithm;
use crate::backend::{Backend, BackendKind, KeyLocation};
use crate::error::{Error, Result};
use crate::jwk::PublicJwk;
use crate::provider::PopCryptoProvider;
use crate::text::redact;
use crate::uri::KeyUri;

/// Options for [`PopKey::open_with`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Accept a device key (PKCS#11, TPM) whose device says it is exportable. Off by
    /// default: a PoP key that can be copied protects nothing.
    pub allow_exportable: bool,
}

impl OpenOptions {
    /// Default options: exportable device keys are refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`OpenOptions::allow_exportable`].
    pub fn allow_exportable(mut self, yes: bool) -> Self {
        self.allow_exportable = yes;
        self
    }
}

/// Options for [`PopKey::create`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CreateOptions {
    /// The algorithm of the new key. Falls back to the URI's `alg`, then ES256.
    pub alg: Option<Algorithm>,
    /// Replace an existing key file. Off by default.
    pub overwrite: bool,
}

impl CreateOptions {
    /// Default options: ES256 unless the URI says otherwise, never overwrite.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`CreateOptions::alg`].
    pub fn alg(mut self, alg: Algorithm) -> Self {
        self.alg = Some(alg);
        self
    }

    /// Sets [`CreateOptions::overwrite`].
    pub fn overwrite(mut self, yes: bool) -> Self {
        self.overwrite = yes;
        self
    }
}

/// An open proof-of-possession key.
///
/// A `PopKey` is immutable and cheap to clone (clones share one key). When it
/// is opened it reads the public key from its backend once, computes the
/// canonical JWK and thumbprint once, and proves the pair: it signs a random
/// challenge and verifies the signature in software against that public key.
/// A mismatch is an error. So the JWK you put into `cnf` and the key that
/// signs are always one pair.
///
/// ```
/// use popkey::{PopCryptoProvider, PopKey};
/// let key = PopKey::open("mem:")?;
/// assert_eq!(key.algorithm(), popkey::Algorithm::ES256);
/// let sig = key.sign(b"header.payload")?;
/// assert_eq!(sig.len(), 64); // raw r || s
/// key.public_jwk().verify(key.algorithm(), b"header.payload", &sig)?;
/// # Ok::<(), popkey::Error>(())
/// ```
#[derive(Clone)]
pub struct PopKey(Arc<Inner>);

struct Inner {
    backend: Box<dyn Backend>,
    alg: Algorithm,
    jwk: PublicJwk,
    location: KeyLocation,
    uri: String,
}

impl PopKey {
    /// Opens the key a URI names (see [`KeyUri`] for the schemes).
    ///
    /// `mem:` generates a fresh key on every open; its `rotate` attribute is
    /// honoured by [`crate::KeySlot`], not here.
    pub fn open(uri: &str) -> Result<Self> {
        Self::open_with(uri, &OpenOptions::default())
    }

    /// Opens a key with options.
    pub fn open_with(uri: &str, opts: &OpenOptions) -> Result<Self> {
        let parsed = KeyUri::parse(uri)?;
        let backend = crate::backend::open(&parsed, uri)?;
        Self::from_backend(backend, display_uri(uri, &parsed, None), opts)
    }

    /// Creates a new key where the URI says and opens it.
    ///
    /// `file:` keys are written as PKCS#8 PEM with mode 0600 and never replace
    /// an existing file unless [`CreateOptions::overwrite`] is set.
    pub fn create(uri: &str, opts: &CreateOptions) -> Result<Self> {
        let parsed = KeyUri::parse(uri)?;
        let alg = match (opts.alg, parsed.alg()) {
            (Some(a), Some(b)) if a != b => {
                return Err(Error::uri(
                    uri,
                    format!("the URI says alg={b} but {a} was requested"),
                ))
            }
            (a, b) => a.or(b).unwrap_or(Algorithm::ES256),
        };
        let backend = crate::backend::create(&parsed, uri, alg, opts.overwrite)?;
        Self::from_backend(
            backend,
            display_uri(uri, &parsed, Some(alg)),
            &OpenOptions::default(),
        )
    }

    /// Wraps any [`PopCryptoProvider`] in a proven handle.
    ///
    /// The provider's JWK must be canonical (RFC 7638) and a valid public key
    /// that fits its algorithm, and it must sign with the matching private
    /// key: this is checked here by signing a random challenge.
    pub fn from_provider(provider: Box<dyn PopCryptoProvider>) -> Result<Self> {
        let jwk = PublicJwk::parse(provider.canonical_public_key_jwk())?;
        if jwk.canonical_json() != provider.canonical_public_key_jwk() {
            return Err(Error::jwk(format!(
                "the provider's JWK is not in RFC 7638 canonical form; expected {}",
                jwk.canonical_json()
            )));
        }
        let backend = Box::new(CustomProvider { provider, jwk });
        Self::from_backend(backend, "custom:".into(), &OpenOptions::default())
    }

    fn from_backend(backend: Box<dyn Backend>, uri: String, opts: &OpenOptions) -> Result<Self> {
        let alg = backend.algorithm();
        let jwk = backend.public_key().clone();
        let location = backend.location();
        if !jwk.fits(alg) {
            return Err(Error::AlgorithmMismatch(format!(
                "{uri} holds an {} key, which cannot sign {alg}",
                jwk.kty()
            )));
        }
        // Any key in a device (hardware or a software token such as
        // SoftHSM) must say it cannot leave it, unless the caller allows it.
        if location.device.is_some() && !location.non_exportable && !opts.allow_exportable {
            return Err(Error::ExportableKey { uri });
        }
        let key = PopKey(Arc::new(Inner {
            backend,
            alg,
            jwk,
            location,
            uri,
        }));
        key.prove_pair()?;
        Ok(key)
    }

    /// Signs a random challenge and verifies it against the public key.
    fn prove_pair(&self) -> Result<()> {
        let mut nonce = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut nonce);
        let challenge = format!("popkey pair check {}", crate::b64::encode(nonce));
        let sig = self.sign(challenge.as_bytes())?;
        self.0
            .jwk
            .verify(self.0.alg, challenge.as_bytes(), &sig)
            .map_err(|e| {
                Error::KeyMismatch(format!(
                    "{}: the public key the backend reports did not verify a signature its private key made ({e})",
                    self.0.uri
                ))
            })
    }

    /// Signs a JWS signing input ([`PopCryptoProvider::sign`]) and checks the
    /// signature's shape (ECDSA: 64 raw bytes; RSA: the modulus length), so a
    /// backend that returns DER or garbage is caught here.
    ///
    /// An inherent method, so `key.sign(..)` is unambiguous even with
    /// `signature::Signer` in scope.
    pub fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>> {
        let sig = self.0.backend.sign(signing_input)?;
        let want = self.0.jwk.signature_len();
        if sig.len() != want {
            return Err(Error::Backend {
                backend: self.0.location.backend.as_str(),
                message: format!(
                    "returned a {}-byte signature; {} needs {want} bytes{}",
                    sig.len(),
                    self.0.alg,
                    if self.0.alg == Algorithm::ES256 {
                        " (raw r || s, not DER)"
                    } else {
                        ""
                    }
                ),
            });
        }
        Ok(sig)
    }

    /// The validated public key.
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.0.jwk
    }

    /// The RFC 7638 thumbprint (cached), borrowed.
    pub fn kid(&self) -> &str {
        self.0.jwk.thumbprint()
    }

    /// Where the key lives, as the backend reports it.
    pub fn location(&self) -> &KeyLocation {
        &self.0.location
    }

    /// The key's URI with secrets redacted; opening it again yields this key
    /// (for `mem:`, a new key with the same settings).
    pub fn uri(&self) -> &str {
        &self.0.uri
    }

    /// True when both handles share one opened key (not merely equal JWKs).
    pub fn same_handle(&self, other: &PopKey) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl PopCryptoProvider for PopKey {
    fn canonical_public_key_jwk(&self) -> &str {
        self.0.jwk.canonical_json()
    }

    fn algorithm(&self) -> Algorithm {
        self.0.alg
    }

    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>> {
        PopKey::sign(self, signing_input)
    }

    fn thumbprint(&self) -> String {
        self.0.jwk.thumbprint().to_owned()
    }
}

impl fmt::Debug for PopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PopKey")
            .field("uri", &self.0.uri)
            .field("alg", &self.0.alg)
            .field("kid", &self.kid())
            .field("backend", &self.0.location.backend)
            .field("non_exportable", &self.0.location.non_exportable)
            .finish()
    }
}

/// The redacted URI that reopens this key: adds `alg=` when the key's
/// algorithm is not the one its type implies (ES256 for EC, RS256 for RSA).
fn display_uri(uri: &str, parsed: &KeyUri, created_alg: Option<Algorithm>) -> String {
    let redacted = redact(uri);
    match created_alg {
        Some(Algorithm::PS256) if parsed.alg().is_none() && !matches!(parsed, KeyUri::Mem(_)) => {
            let sep = if redacted.contains('?') { '&' } else { '?' };
            format!("{redacted}{sep}alg=PS256")
        }
        _ => redacted,
    }
}

/// A caller-supplied provider, adapted to the backend interface.
struct CustomProvider {
    provider: Box<dyn PopCryptoProvider>,
    jwk: PublicJwk,
}

impl Backend for CustomProvider {
    fn algorithm(&self) -> Algorithm {
        self.provider.algorithm()
    }
    fn public_key(&self) -> &PublicJwk {
        &self.jwk
    }
    fn location(&self) -> KeyLocation {
        KeyLocation {
            backend: BackendKind::Custom,
            hardware: false,
            non_exportable: false,
            device: None,
        }
    }
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>> {
        self.provider.sign(signing_input)
    }
}
