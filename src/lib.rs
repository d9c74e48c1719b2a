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
//! With `aws-lc-rs` on, it is used; a build without it (for example
//! `default-features = false`) uses RustCrypto. [`crypto_provider`] names
//! the provider of a build.
//!
//! ## Features
//!
//! | feature | default | what it adds | pulls in |
//! |---|---|---|---|
//! | `client` | yes | [`client`]: tokens from a token endpoint, the cache, [`client::PopClient`] and the `reqwest` integration | `reqwest` (rustls), `tokio`, `tracing` |
//! | `cli` | yes | the `popkey` command-line tool (no library API) | `clap` |
//! | `pkcs11` | no | `pkcs11:` keys in any PKCS#11 token | `cryptoki` |
//! | `tpm` | no | `tpm:` keys in a TPM 2.0 | `tss-esapi` (needs `libtss2-dev`) |
//! | `server` | no | [`server`]: a resource server as middleware — the framework-neutral core, a tower layer, issuer discovery (enables `client`) | `tower-layer`, `tower-service`, `http`, `http-body` |
//! | `axum` | no | the axum extractor `server::PopAuth` (enables `server`) | `axum` |
//! | `redis` | no | `verify::redis::RedisReplayStore`: one replay store for a fleet of verifiers | `redis`, `tokio` |
//! | `aws-lc-rs` | yes | the AWS-LC crypto provider (see above) | `aws-lc-rs` (builds C with `cc`) |
//! | `rust-crypto` | no | names the pure-Rust provider explicitly; used whenever `aws-lc-rs` is off | — |
//! | `cert` | yes (via `mtls`) | [`cert`]: CSRs and self-signed certificates signed by a popkey key, certificate chains and `x5t#S256` | `x509-cert` |
//! | `mtls` | yes | [`tls`]: a rustls client identity backed by a popkey key (RFC 8705 mTLS); implies `client` and `cert` | — |
//!
//! A library user who wants neither the CLI nor the HTTP client writes
//! `popkey = { version = "0.1", default-features = false, features = ["pkcs11", "aws-lc-rs"] }`:
//! no `clap`, `reqwest` or `tokio` then (leave out `aws-lc-rs` for a
//! pure-Rust build).
//!
//! ## Architecture
//!
//! **The contract.** [`PopCryptoProvider`] is the three-member contract MSAL
//! calls `IPoPCryptoProvider`: the canonical public JWK, the JWS `alg`, and
//! `sign`. [`PopKey`] implements it for every backend and adds the promise:
//! the JWK and the signing key are one pair, proven when the key is opened
//! (a challenge signed and verified in software) and never changed
//! afterwards. It also implements the RustCrypto `signature` traits. The
//! process-wide key ([`install_default`], [`default_key`], [`KeySlot`])
//! rotates by swapping whole snapshots: whoever holds a snapshot signs with
//! the key its JWK describes.
//!
//! **Backends** (private, behind [`KeyUri`]): software keys (`mem:`,
//! `file:`), PKCS#11 (one `C_Initialize` per module per process, a session
//! pool per key) and TPM 2.0 (one context per TCTI, keys kept loaded). A
//! backend knows nothing of protocols; [`KeyLocation`] says where a key
//! lives.
//!
//! **Protocols** name no backend; they sign with any provider: [`shr`]
//! (MSAL's Signed HTTP Requests and `req_cnf`), [`dpop`] (RFC 9449) and
//! [`assertion`] (RFC 7523 `private_key_jwt`). [`jwk`] holds public keys
//! and RFC 7638 thumbprints.
//!
//! **Verification** ([`verify`]) is the API side: SHRs from MSAL.NET,
//! MSAL.js and Microsoft.IdentityModel, DPoP proofs, access tokens (JWKS or
//! introspection), server nonces and replay caches, each failure named by a
//! [`verify::ErrorKind`].
//!
//! **The client** ([`client`], feature `client`) is the daemon side: a
//! token endpoint client (client secret or `private_key_jwt`), a
//! single-flight token cache keyed by the key's thumbprint, and
//! [`client::PopClient`], which signs a fresh proof for every request with
//! the same key snapshot its token is bound to, following a rotating key
//! (a [`client::KeySource`]).
//!
//! **The server** (`server`, feature `server`) is the API side as
//! middleware: a framework-neutral `ResourceServer` that picks the scheme,
//! rebuilds the public URL behind proxies and renders challenges, a tower
//! layer, an axum extractor (feature `axum`), and issuer discovery with a
//! cached JWKS. Authorization-header parsing and challenge rendering live in
//! [`auth_header`], shared by the client and the server.
//!
//! Source layout: `src/{key,global,provider,signer}.rs` (the handle, the
//! slot, the contract), `src/{shr,dpop,assertion}.rs` (what gets signed),
//! `src/backend/` (where keys live), `src/verify/` (the API side),
//! `src/client/` (tokens and calls), `src/bin/popkey/` (the CLI).

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod alg;
pub mod assertion;
pub mod auth_header;
pub(crate) mod b64;
mod backend;
#[cfg(feature = "cert")]
#[cfg_attr(docsrs, doc(cfg(feature = "cert")))]
pub mod cert;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
mod crypto;
pub mod dpop;
mod error;
#[cfg(feature = "client")]
mod executor;
mod global;
mod http;
mod json;
pub mod jwk;
pub(crate) mod jws;
mod key;
mod pem;
mod provider;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
pub mod shr;
mod signer;
mod text;
#[cfg(feature = "mtls")]
#[cfg_attr(docsrs, doc(cfg(feature = "mtls")))]
pub mod tls;
mod uri;
pub mod verify;

pub use alg::Algorithm;
pub use backend::{BackendKind, DeviceInfo, DeviceKind, KeyLocation};
pub use crypto::crypto_provider;
#[cfg(feature = "cert")]
pub use error::CertificateError;
#[cfg(feature = "client")]
pub use error::ClientError;
#[cfg(feature = "pkcs11")]
pub use error::Pkcs11Error;
#[cfg(feature = "tpm")]
pub use error::TpmError;
pub use error::{Error, ErrorKind, Result};
pub use global::{
    default_key, default_slot, install_default, install_default_slot, rotate_default, KeySlot,
};
pub use http::HttpTarget;
pub use jwk::PublicJwk;
pub use key::{CreateOptions, OpenOptions, PopKey};
pub use provider::PopCryptoProvider;
pub use signer::JwsSignature;
pub use uri::{FileUri, KeyUri, MemUri, Pkcs11ObjectType, Pkcs11Uri, TpmKeyRef, TpmUri};

/// Seconds since the Unix epoch, now.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
