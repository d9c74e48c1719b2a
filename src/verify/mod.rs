//! The resource-server side: decide whether a request's proof is genuine,
//! fresh, bound to this request and bound to the access token.
//!
//! * [`shr::ShrVerifier`] — Signed HTTP Requests (`Authorization: PoP …`),
//!   as strict as Microsoft.IdentityModel's SignedHttpRequest validator.
//! * [`dpop::DpopVerifier`] — DPoP proofs, every check of RFC 9449 §4.3.
//! * [`nonce::NonceIssuer`] — stateless server nonces (`PoP nonce=…`,
//!   `DPoP-Nonce`).
//! * [`replay::ReplayStore`] — seen `jti` / SHR values, in memory or shared.
//! * [`token::AccessTokenValidator`] — the pluggable access-token check, with
//!   a JWKS-based validator for JWT access tokens and (feature `client`)
//!   `introspect::IntrospectionValidator` for opaque ones (RFC 7662).
//!
//! Every rejection is a [`VerifyError`] whose [`ErrorKind`] names the check
//! that failed, so an API can log and answer precisely.

use std::fmt;

pub mod dpop;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod introspect;
mod jose;
pub mod nonce;
pub mod replay;
pub mod shr;
pub mod token;

pub use jose::ParsedJws;

/// Which check a proof failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Not a compact JWS, bad base64url, JSON that is not an object,
    /// duplicate members, oversized input.
    Malformed,
    /// `alg` is `none`, symmetric or otherwise not allowed.
    UnsupportedAlgorithm,
    /// The `typ` header is not the one this proof type requires.
    WrongType,
    /// The embedded public key is invalid (private members, bad curve, short RSA).
    InvalidKey,
    /// The signature does not verify with the embedded key.
    BadSignature,
    /// A required claim is missing or has the wrong JSON type.
    MissingClaim,
    /// `ts` / `iat` is older than the allowed window.
    Expired,
    /// `ts` / `iat` is in the future beyond the allowed skew.
    NotYetValid,
    /// `m` / `htm` differs from the request's method.
    MethodMismatch,
    /// `u` + `p` / `htu` differ from the request's URL.
    UrlMismatch,
    /// `q` does not match the request's query parameters.
    QueryMismatch,
    /// `h` does not match the request's headers.
    HeaderMismatch,
    /// `b` does not match the request body.
    BodyMismatch,
    /// The server requires a nonce and the proof has none, or an old one
    /// (DPoP answers `use_dpop_nonce`).
    NonceRequired,
    /// The nonce is not one this server issued, or not the expected one.
    InvalidNonce,
    /// This proof (its `jti`, or the same SHR payload) was seen before.
    Replay,
    /// The replay store cannot record another proof (fails closed).
    ReplayStoreUnavailable,
    /// `ath` is missing or differs from the hash of the presented token.
    AccessTokenHashMismatch,
    /// The access token's `cnf` does not name the proof's key.
    KeyNotBound,
    /// The access token itself failed validation (signature, issuer,
    /// audience, expiry).
    InvalidAccessToken,
    /// Zero or several `DPoP` headers.
    HeaderCount,
}

impl ErrorKind {
    /// A stable snake_case name, for logs and `{"error": …}` output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Malformed => "malformed",
            ErrorKind::UnsupportedAlgorithm => "unsupported_algorithm",
            ErrorKind::WrongType => "wrong_type",
            ErrorKind::InvalidKey => "invalid_key",
            ErrorKind::BadSignature => "bad_signature",
            ErrorKind::MissingClaim => "missing_claim",
            ErrorKind::Expired => "expired",
            ErrorKind::NotYetValid => "not_yet_valid",
            ErrorKind::MethodMismatch => "method_mismatch",
            ErrorKind::UrlMismatch => "url_mismatch",
            ErrorKind::QueryMismatch => "query_mismatch",
            ErrorKind::HeaderMismatch => "header_mismatch",
            ErrorKind::BodyMismatch => "body_mismatch",
            ErrorKind::NonceRequired => "nonce_required",
            ErrorKind::InvalidNonce => "invalid_nonce",
            ErrorKind::Replay => "replay",
            ErrorKind::ReplayStoreUnavailable => "replay_store_unavailable",
            ErrorKind::AccessTokenHashMismatch => "access_token_hash_mismatch",
            ErrorKind::KeyNotBound => "key_not_bound",
            ErrorKind::InvalidAccessToken => "invalid_access_token",
            ErrorKind::HeaderCount => "header_count",
        }
    }

    /// True when the fault lies with the access token rather than the proof
    /// (answer `invalid_token` rather than `invalid_dpop_proof`).
    pub fn is_token_problem(self) -> bool {
        matches!(self, ErrorKind::KeyNotBound | ErrorKind::InvalidAccessToken)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected proof: which check failed, and a message a person can act on.
/// Messages never contain the access token or the proof itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    kind: ErrorKind,
    message: String,
}

impl VerifyError {
    /// A rejection of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        VerifyError {
            kind,
            message: message.into(),
        }
    }

    /// Which check failed.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What was wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// `{"error": "<kind>", "message": "…"}`
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"error": self.kind.as_str(), "message": self.message})
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for VerifyError {}

pub(crate) fn err(kind: ErrorKind, message: impl Into<String>) -> VerifyError {
    VerifyError::new(kind, message)
}

/// Escapes a value for a quoted-string in an HTTP auth parameter.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            // Only visible ASCII may go into a header value; attacker-chosen
            // text (an `alg`, a claim) could carry anything else.
            c if c == ' ' || c.is_ascii_graphic() => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

/// The `WWW-Authenticate` value for a failed (or missing) SHR: `PoP
/// nonce="…"` with, when there is an error, `error="invalid_token"` and its
/// description. Clients such as MSAL read the nonce from it.
pub fn pop_challenge(nonce: Option<&str>, error: Option<&VerifyError>) -> String {
    let mut params = Vec::new();
    if let Some(n) = nonce {
        params.push(format!("nonce={}", quoted(n)));
    }
    if let Some(e) = error {
        params.push(r#"error="invalid_token""#.to_owned());
        params.push(format!("error_description={}", quoted(&e.to_string())));
    }
    if params.is_empty() {
        "PoP".to_owned()
    } else {
        format!("PoP {}", params.join(", "))
    }
}

/// The `WWW-Authenticate` value for a failed DPoP request (RFC 9449 §7.1,
/// §8, §12.2): `error="use_dpop_nonce"` when a nonce is needed (send a fresh
/// `DPoP-Nonce` header with it), `invalid_token` when the access token is at
/// fault, else `invalid_dpop_proof`; always with `algs`.
pub fn dpop_challenge(error: &VerifyError, algs: &[crate::Algorithm]) -> String {
    let code = match error.kind() {
        ErrorKind::NonceRequired | ErrorKind::InvalidNonce => "use_dpop_nonce",
        k if k.is_token_problem() => "invalid_token",
        _ => "invalid_dpop_proof",
    };
    let algs: Vec<&str> = algs.iter().map(|a| a.as_str()).collect();
    format!(
        "DPoP error={}, error_description={}, algs={}",
        quoted(code),
        quoted(&error.to_string()),
        quoted(&algs.join(" "))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let e = VerifyError::new(ErrorKind::NonceRequired, "a \"fresh\" nonce is required");
        assert_eq!(
            dpop_challenge(&e, &[crate::Algorithm::ES256, crate::Algorithm::PS256]),
            r#"DPoP error="use_dpop_nonce", error_description="nonce_required: a \"fresh\" nonce is required", algs="ES256 PS256""#
        );
        let e = VerifyError::new(ErrorKind::KeyNotBound, "x");
        assert!(dpop_challenge(&e, &[]).starts_with(r#"DPoP error="invalid_token""#));
        let e = VerifyError::new(ErrorKind::Expired, "x");
        assert!(dpop_challenge(&e, &[]).starts_with(r#"DPoP error="invalid_dpop_proof""#));
        assert_eq!(pop_challenge(Some("n1"), None), r#"PoP nonce="n1""#);
        assert_eq!(pop_challenge(None, None), "PoP");
        let e = VerifyError::new(
            ErrorKind::UnsupportedAlgorithm,
            "alg `é\u{7f}\n` is not allowed",
        );
        let c = dpop_challenge(&e, &[]);
        assert!(c.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "{c}");
    }
}

/// The request a proof claims to be bound to, as the server received it.
#[derive(Clone, Debug, Default)]
pub struct Request<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The absolute URL as the client addressed it (scheme, host, port,
    /// path, query). Behind a proxy, rebuild it from the forwarded host.
    pub url: &'a str,
    /// Request headers (needed when proofs sign headers into `h`).
    pub headers: Vec<(&'a str, &'a str)>,
    /// The body (needed when proofs sign it into `b`); `None` = not given.
    pub body: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    /// A request with `method` and `url`, no headers or body.
    pub fn new(method: &'a str, url: &'a str) -> Self {
        Request {
            method,
            url,
            headers: Vec::new(),
            body: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: &'a [u8]) -> Self {
        self.body = Some(body);
        self
    }

    pub(crate) fn target(&self) -> Result<crate::HttpTarget, VerifyError> {
        crate::HttpTarget::new(self.method, self.url).map_err(|e| {
            err(
                ErrorKind::Malformed,
                format!("the request to check against is unusable: {e}"),
            )
        })
    }
}

/// How a verifier treats the proof's nonce.
#[derive(Clone, Default)]
pub enum NoncePolicy {
    /// No server nonce: for SHR the client's random `nonce` must be present;
    /// for DPoP a `nonce` claim is not required.
    #[default]
    ClientChosen,
    /// The proof must carry exactly this nonce.
    Expected(String),
    /// The proof must carry a fresh nonce from this issuer.
    Issuer(std::sync::Arc<nonce::NonceIssuer>),
}

impl fmt::Debug for NoncePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoncePolicy::ClientChosen => f.write_str("ClientChosen"),
            NoncePolicy::Expected(n) => f.debug_tuple("Expected").field(n).finish(),
            NoncePolicy::Issuer(_) => f.write_str("Issuer(..)"),
        }
    }
}

impl NoncePolicy {
    /// Checks `nonce` (the proof's, if any) under this policy.
    pub(crate) fn check(
        &self,
        nonce: Option<&str>,
        now: u64,
        required_anyway: bool,
    ) -> Result<(), VerifyError> {
        match (self, nonce) {
            (NoncePolicy::ClientChosen, Some(n)) if !n.is_empty() => Ok(()),
            (NoncePolicy::ClientChosen, _) if !required_anyway => Ok(()),
            (NoncePolicy::ClientChosen, _) => Err(err(
                ErrorKind::MissingClaim,
                "claim `nonce` is missing or empty",
            )),
            (_, None) => Err(err(
                ErrorKind::NonceRequired,
                "this server requires a nonce; use the one it sent",
            )),
            (NoncePolicy::Expected(want), Some(n)) => {
                if n == want {
                    Ok(())
                } else {
                    Err(err(
                        ErrorKind::InvalidNonce,
                        "the nonce is not the one this server expects",
                    ))
                }
            }
            (NoncePolicy::Issuer(issuer), Some(n)) => issuer.validate_at(n, now),
        }
    }
}

/// A replay-store key that does not depend on attacker-chosen layout.
pub(crate) fn replay_id(prefix: &str, parts: &[&[u8]]) -> String {
    let mut h = crate::crypto::Sha256::new();
    for p in parts {
        h.update(&(p.len() as u64).to_be_bytes());
        h.update(p);
    }
    format!("{prefix}:{}", crate::b64::encode(h.finish()))
}

/// What both verifiers check the same way: the access-token validator, the
/// allowed algorithms, the freshness window, the nonce and replay.
#[derive(Clone)]
pub(crate) struct Common {
    pub(crate) validator: std::sync::Arc<dyn token::AccessTokenValidator>,
    pub(crate) algs: Vec<crate::Algorithm>,
    pub(crate) max_age: u64,
    pub(crate) skew: u64,
    pub(crate) nonce: NoncePolicy,
    pub(crate) replay: Option<std::sync::Arc<dyn replay::ReplayStore>>,
}

impl Common {
    /// ES256/RS256/PS256, at most 300 s old and 60 s ahead, client-chosen
    /// nonce, an in-memory replay cache of its own.
    pub(crate) fn new(validator: std::sync::Arc<dyn token::AccessTokenValidator>) -> Self {
        Common {
            validator,
            algs: crate::Algorithm::ALL.to_vec(),
            max_age: 300,
            skew: 60,
            nonce: NoncePolicy::ClientChosen,
            replay: Some(std::sync::Arc::new(replay::MemoryReplayCache::new(
                DEFAULT_REPLAY_CAPACITY,
            ))),
        }
    }
}

/// Capacity of the replay cache a verifier makes for itself.
pub(crate) const DEFAULT_REPLAY_CAPACITY: usize = 1 << 20;

impl Common {}

/// The builder methods both verifiers share; `$time` names the claim the
/// freshness window applies to.
macro_rules! common_builders {
    ($ty:ty, $time:literal) => {
        impl $ty {
            /// Allowed algorithms (asymmetric only; the type admits nothing
            /// else). Advertise the same in `algs=`.
            pub fn algorithms(mut self, algs: &[crate::Algorithm]) -> Self {
                self.common.algs = algs.to_vec();
                self
            }

            /// The allowed algorithms.
            pub fn allowed_algorithms(&self) -> &[crate::Algorithm] {
                &self.common.algs
            }

            #[doc = concat!("Oldest acceptable `", $time, "`, in seconds (default 300).")]
            pub fn max_age(mut self, secs: u64) -> Self {
                self.common.max_age = secs;
                self
            }

            #[doc = concat!("How far in the future `", $time, "` may be, in seconds (default 60).")]
            pub fn clock_skew(mut self, secs: u64) -> Self {
                self.common.skew = secs;
                self
            }

            /// The nonce policy (for example a [`super::nonce::NonceIssuer`]).
            pub fn nonce(mut self, policy: super::NoncePolicy) -> Self {
                self.common.nonce = policy;
                self
            }

            /// Where seen proofs are recorded, to reject a second use of the
            /// same proof. By default each verifier has its own in-memory
            /// [`super::replay::MemoryReplayCache`]; give several verifiers (or
            /// instances, with a shared store) the same one.
            pub fn replay_store(
                mut self,
                store: std::sync::Arc<dyn super::replay::ReplayStore>,
            ) -> Self {
                self.common.replay = Some(store);
                self
            }

            /// Turns replay protection off: the same proof is accepted again
            /// and again within its freshness window. Only for a verifier
            /// behind something that already refuses replays, or for tools.
            pub fn without_replay_protection(mut self) -> Self {
                self.common.replay = None;
                self
            }
        }
    };
}
pub(crate) use common_builders;
