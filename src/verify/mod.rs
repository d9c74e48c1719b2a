//! The resource-server side: decide whether a request's proof is genuine,
//! fresh, bound to this request and bound to the access token.
//!
//! * [`shr::ShrVerifier`] — Signed HTTP Requests (`Authorization: PoP …`),
//!   as strict as Microsoft.IdentityModel's SignedHttpRequest validator.
//! * [`dpop::DpopVerifier`] — DPoP proofs, every check of RFC 9449 §4.3.
//! * [`nonce::NonceIssuer`] — stateless server nonces (`PoP nonce=…`,
//!   `DPoP-Nonce`).
//! * [`replay::ReplayStore`] / [`replay::AsyncReplayStore`] — seen `jti` /
//!   SHR values, in memory or shared (feature `redis`: `redis::RedisReplayStore`,
//!   one Redis/Valkey for a fleet of instances).
//! * [`token::AccessTokenValidator`] — the pluggable access-token check, with
//!   a JWKS-based validator for JWT access tokens and (feature `client`)
//!   `introspect::IntrospectionValidator` for opaque ones (RFC 7662).
//! * [`mtls`] — certificate-bound tokens (RFC 8705): `cnf.x5t#S256` against
//!   the client certificate from the connection or a trusted proxy's header.
//!
//! Both verifiers take the same [`Request`]. Async servers call
//! `verify_async`, which runs the same checks and then records the proof
//! through an [`replay::AsyncReplayStore`] without blocking the runtime.
//!
//! Every rejection is a [`VerifyError`] whose [`ErrorKind`] names the check
//! that failed, so an API can log and answer precisely.

pub mod dpop;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod introspect;
mod jose;
pub mod mtls;
pub mod nonce;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub mod replay;
pub mod shr;
pub mod token;

pub mod error;
pub mod policy;
pub mod request;

pub(crate) use error::err;
pub use error::{dpop_challenge, dpop_error_code, pop_challenge, ErrorKind, VerifyError};
pub use jose::ParsedJws;
pub use policy::NoncePolicy;
pub(crate) use policy::{common_builders, Common};
pub use request::Request;
