//! The crypto-provider contract (MSAL.NET's `IPoPCryptoProvider`).

use crate::alg::Algorithm;
use crate::error::Result;
use crate::jwk::thumbprint_of_canonical;

/// A proof-of-possession key pair, as the protocols see it.
///
/// The three required members MUST describe one key pair: the JWK that goes
/// into `cnf`, `req_cnf` and `kid` is the public half of the key that signs.
/// [`crate::PopKey`] guarantees this for every backend (it proves the pair
/// when a key is opened, and never changes afterwards); wrap your own
/// implementation with [`crate::PopKey::from_provider`] to get the same
/// guarantee.
pub trait PopCryptoProvider: Send + Sync {
    /// RFC 7638 canonical public JWK: required members only, sorted, no whitespace.
    fn canonical_public_key_jwk(&self) -> &str;

    /// The JWS `alg`: ES256, RS256 or PS256.
    fn algorithm(&self) -> Algorithm;

    /// Signs the JWS signing input; returns JWS signature bytes (ECDSA: raw `r || s`).
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>>;

    /// The RFC 7638 thumbprint of the public key (base64url SHA-256 of the
    /// canonical JWK). Implementations may return a cached value.
    fn thumbprint(&self) -> String {
        thumbprint_of_canonical(self.canonical_public_key_jwk())
    }
}

/// Implements the contract for a pointer type by delegating to its target.
macro_rules! delegate_provider {
    ($($ptr:ty),*) => {$(
        impl<P: PopCryptoProvider + ?Sized> PopCryptoProvider for $ptr {
            fn canonical_public_key_jwk(&self) -> &str {
                (**self).canonical_public_key_jwk()
            }
            fn algorithm(&self) -> Algorithm {
                (**self).algorithm()
            }
            fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>> {
                (**self).sign(signing_input)
            }
            fn thumbprint(&self) -> String {
                (**self).thumbprint()
            }
        }
    )*};
}

delegate_provider!(&P, std::sync::Arc<P>, Box<P>);
