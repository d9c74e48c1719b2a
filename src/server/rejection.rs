//! Refusals: the status, the challenges and nothing more.

use std::fmt;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use super::Scheme;
use crate::auth_header::Challenge;
use crate::verify::dpop_error_code;
use crate::verify::{ErrorKind, VerifyError};

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// No `Authorization` header (401, bare challenges, no error code —
    /// RFC 6750 §3.1).
    MissingCredentials,
    /// An `Authorization` scheme this server does not take, for example
    /// `Bearer` without a bearer policy (401, bare challenges).
    UnsupportedScheme,
    /// The request cannot be understood: several `Authorization` headers,
    /// an unreadable one, a missing or malformed `Host` (400,
    /// `invalid_request`).
    InvalidRequest,
    /// The proof or the access token failed a check (401; 503 for
    /// [`ErrorKind::ReplayStoreUnavailable`]).
    Proof(ErrorKind),
    /// The proof signs the body (SHR `b`) but the body is larger than the
    /// configured cap (413).
    BodyTooLarge,
    /// The check cannot be made now: the issuer's keys cannot be fetched
    /// (503; fails closed).
    TemporarilyUnavailable,
}

impl RejectionKind {
    /// A stable snake_case name: the verifier's [`ErrorKind::as_str`] for
    /// proof failures, else `missing_credentials`, `unsupported_scheme`,
    /// `invalid_request`, `body_too_large`, `temporarily_unavailable`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionKind::MissingCredentials => "missing_credentials",
            RejectionKind::UnsupportedScheme => "unsupported_scheme",
            RejectionKind::InvalidRequest => "invalid_request",
            RejectionKind::Proof(k) => k.as_str(),
            RejectionKind::BodyTooLarge => "body_too_large",
            RejectionKind::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            RejectionKind::MissingCredentials
            | RejectionKind::UnsupportedScheme
            | RejectionKind::Proof(_) => {
                StatusCode::from_u16(self.proof_status()).unwrap_or(StatusCode::UNAUTHORIZED)
            }
            RejectionKind::InvalidRequest => StatusCode::BAD_REQUEST,
            RejectionKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RejectionKind::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn proof_status(self) -> u16 {
        match self {
            RejectionKind::Proof(k) => k.http_status(),
            _ => 401,
        }
    }
}

impl fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: the status, the `WWW-Authenticate` challenges, a
/// fresh `DPoP-Nonce` when the server uses nonces, `Cache-Control:
/// no-store`, and an empty body ([`Rejection::into_response`]).
///
/// What goes to the client names the failed check's kind only
/// (`error_description="url_mismatch"`), never the verifier's message,
/// which may hold internal URLs or claim values; that message is available
/// to the server's own logs through [`Rejection::detail`].
#[derive(Clone, Debug)]
pub struct Rejection(Box<Inner>);

#[derive(Clone, Debug)]
struct Inner {
    kind: RejectionKind,
    scheme: Option<Scheme>,
    headers: HeaderMap,
    detail: Option<VerifyError>,
}

/// What the server offers, for rendering challenges.
pub(crate) struct Offer<'a> {
    pub(crate) dpop_algs: Option<&'a [crate::Algorithm]>,
    pub(crate) pop: bool,
    pub(crate) bearer: bool,
    pub(crate) nonce: Option<String>,
}

impl Rejection {
    /// A 400 `invalid_request` before the server's offer is known; the
    /// challenges are filled in by [`Rejection::with_offer`].
    pub(crate) fn invalid_request() -> Self {
        Rejection::new(RejectionKind::InvalidRequest, None, None)
    }

    pub(crate) fn new(
        kind: RejectionKind,
        scheme: Option<Scheme>,
        detail: Option<VerifyError>,
    ) -> Self {
        Rejection(Box::new(Inner {
            kind,
            scheme,
            headers: HeaderMap::new(),
            detail,
        }))
    }

    /// Renders the headers for what the server offers.
    pub(crate) fn with_offer(mut self, offer: &Offer<'_>) -> Self {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        let status = self.0.kind.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST {
            for c in self.challenges(offer) {
                if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
                    h.append(http::header::WWW_AUTHENTICATE, v);
                }
            }
            if offer.dpop_algs.is_some() && status == StatusCode::UNAUTHORIZED {
                if let Some(v) = offer
                    .nonce
                    .as_deref()
                    .and_then(|n| HeaderValue::from_str(n).ok())
                {
                    h.insert(HeaderName::from_static("dpop-nonce"), v);
                }
            }
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        self.0.headers = h;
        self
    }

    fn challenges(&self, offer: &Offer<'_>) -> Vec<Challenge> {
        let inner = &self.0;
        let code: Option<&'static str> = match inner.kind {
            RejectionKind::MissingCredentials | RejectionKind::UnsupportedScheme => None,
            RejectionKind::InvalidRequest => Some("invalid_request"),
            RejectionKind::Proof(k) => Some(match inner.scheme {
                Some(Scheme::Dpop) => dpop_error_code(k),
                _ => "invalid_token",
            }),
            RejectionKind::BodyTooLarge | RejectionKind::TemporarilyUnavailable => None,
        };
        // The error goes on the challenge of the scheme the request used
        // (or on every challenge for a request that named none).
        // (A certificate-bound token is presented as `Bearer`, RFC 8705.)
        let applies = |s: Scheme| {
            inner
                .scheme
                .is_none_or(|x| x == s || (x == Scheme::Mtls && s == Scheme::Bearer))
        };
        let with_error = |mut c: Challenge, s: Scheme| {
            if let (Some(code), true) = (code, applies(s)) {
                c = c
                    .with_param("error", code)
                    .with_param("error_description", inner.kind.as_str());
            }
            c
        };
        let mut out = Vec::new();
        if let Some(algs) = offer.dpop_algs {
            let algs: Vec<&str> = algs.iter().map(|a| a.as_str()).collect();
            out.push(
                with_error(Challenge::new("DPoP"), Scheme::Dpop)
                    .with_param("algs", &algs.join(" ")),
            );
        }
        if offer.pop {
            let mut c = Challenge::new("PoP");
            if let Some(n) = &offer.nonce {
                c = c.with_param("nonce", n);
            }
            out.push(with_error(c, Scheme::Pop));
        }
        if offer.bearer {
            out.push(with_error(Challenge::new("Bearer"), Scheme::Bearer));
        }
        out
    }

    /// Why the request was refused.
    pub fn kind(&self) -> RejectionKind {
        self.0.kind
    }

    /// The scheme the request presented, when it named one this server takes.
    pub fn scheme(&self) -> Option<Scheme> {
        self.0.scheme
    }

    /// The HTTP status: 401, 400, 413 or 503.
    pub fn status(&self) -> StatusCode {
        self.0.kind.status()
    }

    /// The headers to answer with: `WWW-Authenticate` (one per offered
    /// scheme), `DPoP-Nonce`, `Cache-Control: no-store`, `Retry-After` on 503.
    pub fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }

    /// The verifier's full message, for the server's logs only: it may name
    /// internal URLs or claim values, so never send it to the client.
    pub fn detail(&self) -> Option<&VerifyError> {
        self.0.detail.as_ref()
    }

    /// The response: status, headers, empty body.
    ///
    /// ```
    /// # #[cfg(feature = "server")] {
    /// # use std::sync::Arc;
    /// use popkey::server::ResourceServer;
    /// use popkey::verify::{dpop::DpopVerifier, token::DecodeOnly};
    /// let server = ResourceServer::builder()
    ///     .dpop(DpopVerifier::new(Arc::new(DecodeOnly)))
    ///     .build()?;
    /// let rt = tokio::runtime::Builder::new_current_thread().build()?;
    /// let refused = rt
    ///     .block_on(server.authenticate_url("GET", "https://api.example/x", &http::HeaderMap::new(), None))
    ///     .unwrap_err();
    /// let response: http::Response<String> = refused.into_response();
    /// assert_eq!(response.status(), 401);
    /// assert_eq!(response.headers()["www-authenticate"], r#"DPoP algs="ES256 RS256 PS256""#);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_response<B: Default>(self) -> http::Response<B> {
        let mut r = http::Response::new(B::default());
        *r.status_mut() = self.status();
        *r.headers_mut() = self.0.headers;
        r
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request refused ({}): {}",
            self.status().as_u16(),
            self.0.kind
        )
    }
}

impl std::error::Error for Rejection {}
