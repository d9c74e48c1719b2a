//! Rejections: which check failed ([`ErrorKind`]) and the challenges that
//! tell the client.

use std::fmt;

use crate::auth_header::{render_dpop_challenge, render_pop_challenge};

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
    /// This proof (its `jti`, or the same signed SHR) was seen before.
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
    /// The access token could not be checked now: the service its validator
    /// asks (the token-introspection endpoint) is unreachable, failing or
    /// refusing this server (503; fails closed; nothing is known to be wrong
    /// with the token, so the client should not discard it).
    TokenValidationUnavailable,
    /// Zero or several `DPoP` headers.
    HeaderCount,
    /// A certificate-bound (RFC 8705) token came without a client
    /// certificate (`invalid_token`).
    ClientCertificateMissing,
    /// The client certificate (from the connection or a proxy header) is
    /// not a well-formed certificate of bounded size (`invalid_token`).
    ClientCertificateMalformed,
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
            ErrorKind::TokenValidationUnavailable => "token_validation_unavailable",
            ErrorKind::HeaderCount => "header_count",
            ErrorKind::ClientCertificateMissing => "client_certificate_missing",
            ErrorKind::ClientCertificateMalformed => "client_certificate_malformed",
        }
    }

    /// The HTTP status to answer with: 503 (Service Unavailable) when the
    /// replay store cannot record the proof or the access token cannot be
    /// checked now (the client may retry the same request later with a
    /// fresh proof; nothing is wrong with it), 401 otherwise (with the
    /// challenge from [`dpop_challenge`] or [`pop_challenge`]).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::ReplayStoreUnavailable | ErrorKind::TokenValidationUnavailable => 503,
            _ => 401,
        }
    }

    /// True when the fault lies with the access token rather than the proof
    /// (answer `invalid_token` rather than `invalid_dpop_proof`).
    pub fn is_token_problem(self) -> bool {
        matches!(
            self,
            ErrorKind::KeyNotBound
                | ErrorKind::InvalidAccessToken
                | ErrorKind::ClientCertificateMissing
                | ErrorKind::ClientCertificateMalformed
        )
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

/// The `WWW-Authenticate` value for a failed (or missing) SHR: `PoP
/// nonce="…"` with, when there is an error, `error="invalid_token"` and its
/// description. Clients such as MSAL read the nonce from it.
pub fn pop_challenge(nonce: Option<&str>, error: Option<&VerifyError>) -> String {
    let description = error.map(|e| e.to_string());
    render_pop_challenge(nonce, description.as_deref())
}

/// The `WWW-Authenticate` value for a failed DPoP request (RFC 9449 §7.1,
/// §8, §12.2): `error="use_dpop_nonce"` when a nonce is needed (send a fresh
/// `DPoP-Nonce` header with it), `invalid_token` when the access token is at
/// fault, else `invalid_dpop_proof`; always with `algs`. Send it with
/// [`ErrorKind::http_status`]: 401, or 503 when the replay store is
/// unavailable.
pub fn dpop_challenge(error: &VerifyError, algs: &[crate::Algorithm]) -> String {
    render_dpop_challenge(dpop_error_code(error.kind()), &error.to_string(), algs)
}

/// The RFC 9449 error code for a failed DPoP check: `use_dpop_nonce` when a
/// (fresh) server nonce is needed, `invalid_token` when the access token is
/// at fault, else `invalid_dpop_proof`.
pub fn dpop_error_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NonceRequired | ErrorKind::InvalidNonce => "use_dpop_nonce",
        k if k.is_token_problem() => "invalid_token",
        _ => "invalid_dpop_proof",
    }
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
        assert_eq!(e.kind().http_status(), 401);
        assert_eq!(ErrorKind::ReplayStoreUnavailable.http_status(), 503);
        assert_eq!(ErrorKind::TokenValidationUnavailable.http_status(), 503);
        assert_eq!(pop_challenge(Some("n1"), None), r#"PoP nonce="n1""#);
        assert_eq!(pop_challenge(None, None), "PoP");
        let e = VerifyError::new(
            ErrorKind::UnsupportedAlgorithm,
            "alg `é\u{7f}\n` is not allowed",
        );
        let c = dpop_challenge(&e, &[]);
        assert!(c.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "{c}");
    }

    #[test]
    fn statuses() {
        let e = VerifyError::new(ErrorKind::Expired, "x");
        assert_eq!(e.kind().http_status(), 401);
        assert_eq!(ErrorKind::ReplayStoreUnavailable.http_status(), 503);
    }
}
