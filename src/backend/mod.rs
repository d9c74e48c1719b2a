//! Key backends: where a private key lives and how it signs.
//!
//! A backend knows nothing of protocols: it holds one key pair, reports its
//! public half and signs JWS signing inputs with the private half. The key
//! handle ([`crate::PopKey`]) adds the checks every backend shares.

use crate::alg::Algorithm;
use crate::error::Result;
use crate::jwk::PublicJwk;

#[cfg(feature = "pkcs11")]
pub(crate) mod pkcs11;
pub(crate) mod software;
#[cfg(feature = "tpm")]
pub(crate) mod tpm;

/// What a backend reports about where its key lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLocation {
    /// `mem`, `file`, `pkcs11`, `tpm` or `custom`.
    pub backend: &'static str,
    /// True when the key is held by a hardware device (HSM, TPM).
    pub hardware: bool,
    /// True only when the device itself says the private key cannot leave it.
    pub non_exportable: bool,
}

/// One key pair in one place. Implementations must be safe to call from
/// many threads at once.
pub(crate) trait Backend: Send + Sync {
    /// The algorithm this key signs with.
    fn algorithm(&self) -> Algorithm;
    /// The public key, as read from the device when the key was opened.
    fn public_key(&self) -> &PublicJwk;
    /// Where the key lives.
    fn location(&self) -> KeyLocation;
    /// Signs a JWS signing input; returns the JWS signature bytes.
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>>;
}
