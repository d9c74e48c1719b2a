//! # popkey
//!
//! OAuth Proof-of-Possession keys that stay where they cannot be copied — a
//! TPM 2.0 or a PKCS#11 HSM — and the artifacts the protocols need, signed
//! with them:
//!
//! * MSAL-style Signed HTTP Requests (`Authorization: PoP …`), [`shr`];
//! * RFC 9449 DPoP proofs, [`dpop`];
//! * the `token_type=pop` / `req_cnf` token-request parameters, [`shr::req_cnf`].
//!
//! Keys are named by URI (see [`KeyUri`]): `mem:` and `file:` for software
//! keys, `pkcs11:` (RFC 7512) and `tpm:` for hardware.
//!
//! With the `pkcs11` feature, `pkcs11:` URIs open and create keys in any
//! PKCS#11 token (HSMs, smart cards, SoftHSM2): one `C_Initialize` per
//! module per process, a pool of logged-in sessions per key, recovery from
//! lost sessions and removed tokens. See `docs/pkcs11.md`.
//!
//! ```
//! use popkey::{dpop::DpopProof, shr::SignedHttpRequest, PopKey};
//!
//! let key = PopKey::open("mem:")?; // ES256, in memory
//! let shr = SignedHttpRequest::new("GET", "https://api.example.com/v1/items", "access-token")?
//!     .sign(&key)?;
//! let dpop = DpopProof::new("GET", "https://api.example.com/v1/items")?
//!     .access_token("access-token")?
//!     .sign(&key)?;
//! println!("Authorization: PoP {shr}\nDPoP: {dpop}\nkid: {}", key.kid());
//! # Ok::<(), popkey::Error>(())
//! ```
//!
//! ## Crypto providers
//!
//! Signature verification, software keys (`mem:`, `file:`), hashing and
//! MACs go through one internal seam with two providers, chosen by feature
//! in the style of rustls:
//!
//! * `aws-lc-rs` (default): AWS-LC, constant-time RSA and ECDSA;
//! * `rust-crypto`: the pure-Rust RustCrypto crates (`p256`, `rsa`, `sha2`,
//!   `hmac`) for targets where AWS-LC cannot build. **Software RSA signing
//!   on this path is not constant-time** (RUSTSEC-2023-0071, the `rsa`
//!   crate); prefer the default provider or hardware keys.
//!
//! With both on, aws-lc-rs is used; with neither, the build fails with a
//! message. [`crypto_provider`] names the provider of a build.
//!
//! ## The contract
//!
//! [`PopCryptoProvider`] is the three-member contract MSAL calls
//! `IPoPCryptoProvider`. [`PopKey`] implements it for every backend and adds
//! the promise: the JWK and the signing key are one pair, proven when the
//! key is opened and never changed afterwards. The process-wide key
//! ([`install_default`], [`default_key`], [`KeySlot`]) rotates by swapping
//! whole snapshots.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod alg;
pub mod assertion;
pub mod b64;
mod backend;
#[cfg(feature = "client")]
pub mod client;
mod crypto;
pub mod dpop;
mod error;
mod global;
mod http;
mod json;
pub mod jwk;
pub mod jws;
mod key;
mod pem;
mod provider;
pub mod shr;
mod signer;
mod text;
mod uri;
pub mod verify;

pub use alg::Algorithm;
pub use backend::KeyLocation;
pub use crypto::crypto_provider;
pub use error::{Error, Result};
pub use global::{
    default_key, default_slot, install_default, install_default_slot, rotate_default, KeySlot,
};
pub use http::HttpTarget;
pub use jwk::PublicJwk;
pub use key::{CreateOptions, OpenOptions, PopKey};
pub use provider::PopCryptoProvider;
pub use signer::JwsSignature;
pub use uri::{redact, FileUri, KeyUri, MemUri, Pkcs11Uri, TpmKeyRef, TpmUri};

/// Seconds since the Unix epoch, now.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
