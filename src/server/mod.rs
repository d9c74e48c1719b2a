//! The resource-server side as middleware: put popkey in front of an API.
//!
//! [`ResourceServer`] is the framework-neutral core. Built once, it takes a
//! request's method, URL and headers (and the body, when a proof signs
//! it), decides which scheme the request presents — `Authorization: DPoP`
//! (RFC 9449), `Authorization: PoP` (MSAL Signed HTTP Requests), and
//! `Bearer` only when a bearer policy is set or, with
//! [`ResourceServerBuilder::mtls`], for tokens bound to the request's client
//! certificate (RFC 8705, [`MtlsBinding`]) — rebuilds the **public** URL
//! the client signed, runs the verifier and answers either
//! [`Authenticated`] (scheme, key thumbprint, subject, access-token claims)
//! or a [`Rejection`] that renders the status and challenges a client
//! expects.
//!
//! Around it:
//! * [`Issuer`]: access tokens from an authorization server found by
//!   discovery, its JWKS cached and refreshed on key rotation;
//! * (feature `server`) a tower layer, [`PopAuthLayer`], that inserts
//!   [`Authenticated`] into request extensions or answers the rejection;
//! * (feature `axum`) the extractor [`PopAuth`].
//!
//! # Public URL
//!
//! A proof is signed for the URL the client used (`htu`, SHR `u`/`p`).
//! Behind a reverse proxy the app sees another one. Either configure the
//! public origin ([`ResourceServerBuilder::public_origin`]), or name the
//! proxies whose `Forwarded` / `X-Forwarded-Proto`, `-Host`, `-Prefix`
//! headers are believed ([`ResourceServerBuilder::trusted_proxies`],
//! addresses or CIDRs; the last value, written by the nearest proxy,
//! counts). Without either, the URL is the request's own `Host` and path
//! with scheme `http` (unless the request URI is absolute), and forwarding
//! headers are ignored.
//!
//! # What a client sees
//!
//! | status | when | headers |
//! |---|---|---|
//! | 401 | no `Authorization`, or a scheme not offered | `WWW-Authenticate: DPoP algs="…"`, `PoP`, (`Bearer`) with no error |
//! | 401 | the proof or the token failed a check | the challenge of the scheme used gets `error="invalid_dpop_proof"` / `"use_dpop_nonce"` / `"invalid_token"` and `error_description="<kind>"` |
//! | 401 | DPoP with a server nonce missing or stale | `error="use_dpop_nonce"` and a fresh `DPoP-Nonce` |
//! | 400 | several `Authorization` headers, an unreadable one, no usable `Host` | challenges with `error="invalid_request"` |
//! | 413 | the SHR signs a body larger than the cap | — |
//! | 503 | the replay store or the issuer's keys are unreachable (fails closed) | `Retry-After: 1` |
//!
//! Every rejection has `Cache-Control: no-store`; with a nonce issuer every
//! 401 carries a fresh `DPoP-Nonce` and the `PoP` challenge a `nonce`.
//!
//! ```
//! use std::sync::Arc;
//! use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};
//! use popkey::dpop::DpopProof;
//! use popkey::server::{ResourceServer, Scheme};
//! use popkey::verify::{dpop::DpopVerifier, token::JwksValidator};
//! use popkey::{PopCryptoProvider, PopKey};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An authorization server's key and JWKS (use `Issuer` for discovery).
//! let as_key = PopKey::open("mem:")?;
//! let jwks = format!(r#"{{"keys":[{}]}}"#, as_key.canonical_public_key_jwk());
//! let tokens = Arc::new(JwksValidator::from_jwks(&jwks)?.audience("api://orders"));
//! let server = ResourceServer::builder()
//!     .dpop(DpopVerifier::new(tokens))
//!     .public_origin("https://api.example.com")
//!     .build()?;
//!
//! // A client's key, a DPoP-bound token for it, and a proof.
//! let client = PopKey::open("mem:")?;
//! let claims = format!(
//!     r#"{{"sub":"alice","aud":"api://orders","exp":{},"cnf":{{"jkt":"{}"}}}}"#,
//!     std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 600,
//!     client.kid()
//! );
//! let input = format!("{}.{}", B64.encode(r#"{"alg":"ES256"}"#), B64.encode(claims));
//! let token = format!("{input}.{}", B64.encode(as_key.sign(input.as_bytes())?));
//! let proof = DpopProof::new("GET", "https://api.example.com/orders")?
//!     .access_token(&token)?
//!     .sign(&client)?;
//!
//! // What the server received (behind a proxy, on an internal host).
//! let mut headers = http::HeaderMap::new();
//! headers.insert("authorization", format!("DPoP {token}").parse()?);
//! headers.insert("dpop", proof.parse()?);
//! headers.insert("host", "orders.internal:8080".parse()?);
//! let uri: http::Uri = "/orders".parse()?;
//! let who = server.authenticate(&http::Method::GET, &uri, &headers, None, None).await?;
//! assert_eq!(who.scheme, Scheme::Dpop);
//! assert_eq!(who.subject.as_deref(), Some("alice"));
//! assert_eq!(who.jkt.as_deref(), Some(client.kid()));
//!
//! // The same proof again: a replay, refused with a DPoP challenge.
//! let refused = server.authenticate(&http::Method::GET, &uri, &headers, None, None).await.unwrap_err();
//! assert_eq!(refused.status(), 401);
//! assert_eq!(
//!     refused.headers()["www-authenticate"],
//!     r#"DPoP error="invalid_dpop_proof", error_description="replay", algs="ES256 RS256 PS256""#
//! );
//! # Ok(()) }
//! ```

mod core;
#[cfg(feature = "axum")]
mod extract;
mod issuer;
mod layer;
mod mtls;
mod public_url;
mod rejection;

pub use self::core::{
    Authenticated, ResourceServer, ResourceServerBuilder, Scheme, DEFAULT_BODY_LIMIT,
};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::{PopAuth, PopAuthRejection};
pub use issuer::{Issuer, IssuerBuilder, IssuerError};
pub use layer::{PeerAddr, PopAuthLayer, PopAuthService};
pub use mtls::{ClientCertificate, MtlsBinding, CLIENT_CERT_HEADER};
pub use public_url::{IpNet, IpNetParseError};
pub use rejection::{Rejection, RejectionKind};
