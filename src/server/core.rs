//! The framework-neutral core: one request in, [`Authenticated`] or a
//! [`Rejection`] out.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use serde_json::{Map, Value};

use super::issuer::Issuer;
use super::mtls::{Binding, ClientCertificate, MtlsBinding, ResolvedMtls};
use super::public_url::{IpNet, UrlRules};
use super::rejection::{Offer, Rejection, RejectionKind};
use crate::auth_header::parse_authorization;
use crate::verify::dpop::DpopVerifier;
use crate::verify::nonce::NonceIssuer;
use crate::verify::shr::ShrVerifier;
use crate::verify::token::AccessTokenValidator;
use crate::verify::{ErrorKind, NoncePolicy, Request, VerifyError};

/// Default cap on a body that is read to check an SHR's `b`: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The scheme a request authenticated with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// `Authorization: DPoP <token>` with a `DPoP` proof (RFC 9449).
    Dpop,
    /// `Authorization: PoP <signed http request>` (MSAL SHR).
    Pop,
    /// `Authorization: Bearer <token>`, when a bearer policy allows it.
    Bearer,
    /// `Authorization: Bearer <token>` with a certificate-bound token
    /// (RFC 8705) matching the request's client certificate.
    Mtls,
}

impl Scheme {
    /// `dpop`, `pop`, `bearer` or `mtls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Dpop => "dpop",
            Scheme::Pop => "pop",
            Scheme::Bearer => "bearer",
            Scheme::Mtls => "mtls",
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request that passed: who, with which key, under which scheme.
/// The tower layer puts it into the request's extensions.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Authenticated {
    /// The scheme the request used.
    pub scheme: Scheme,
    /// RFC 7638 thumbprint of the proof key (the token's `cnf.jkt` /
    /// `cnf.kid`); `None` for bearer and certificate-bound tokens.
    pub jkt: Option<String>,
    /// The client certificate's SHA-256 thumbprint (`cnf.x5t#S256`) for
    /// [`Scheme::Mtls`]; `None` otherwise.
    pub certificate_thumbprint: Option<String>,
    /// The access token's `sub`, when it has one.
    pub subject: Option<String>,
    /// The access token's claims (from the JWT or the introspection answer).
    pub claims: Map<String, Value>,
    /// Whether the access-token validator checked the token's signature
    /// (false only with `DecodeOnly`).
    pub token_signature_checked: bool,
}

impl Authenticated {
    fn new(scheme: Scheme, jkt: Option<String>, claims: Map<String, Value>, checked: bool) -> Self {
        Authenticated {
            scheme,
            jkt,
            certificate_thumbprint: None,
            subject: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
            claims,
            token_signature_checked: checked,
        }
    }

    /// The access token's `scope` split on spaces (empty when it has none).
    pub fn scopes(&self) -> Vec<&str> {
        self.claims
            .get("scope")
            .and_then(Value::as_str)
            .map(|s| s.split(' ').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }
}

/// The resource server: which schemes it takes, the verifiers it drives,
/// how it rebuilds public URLs. Build once, share (`Arc`), call
/// [`ResourceServer::authenticate`] per request — from the tower layer, an
/// extractor or a forward-auth gateway that knows the original request.
pub struct ResourceServer {
    dpop: Option<DpopVerifier>,
    pop: Option<ShrVerifier>,
    bearer: Option<Arc<dyn AccessTokenValidator>>,
    mtls: Option<ResolvedMtls>,
    issuer: Option<Arc<Issuer>>,
    nonces: Option<Arc<NonceIssuer>>,
    urls: UrlRules,
    body_limit: usize,
}

impl std::fmt::Debug for ResourceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceServer")
            .field("dpop", &self.dpop.is_some())
            .field("pop", &self.pop.is_some())
            .field("bearer", &self.bearer.is_some())
            .field("mtls", &self.mtls.is_some())
            .field("issuer", &self.issuer.as_ref().map(|i| i.issuer()))
            .field("urls", &self.urls)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ResourceServer`].
#[must_use]
pub struct ResourceServerBuilder {
    dpop: Option<DpopVerifier>,
    pop: Option<ShrVerifier>,
    bearer: Option<Arc<dyn AccessTokenValidator>>,
    mtls: Option<MtlsBinding>,
    issuer: Option<Arc<Issuer>>,
    nonces: Option<Arc<NonceIssuer>>,
    origin: Option<String>,
    proxies: Vec<String>,
    body_limit: usize,
}

impl ResourceServerBuilder {
    /// Takes `Authorization: DPoP` requests, checked by `verifier`.
    pub fn dpop(mut self, verifier: DpopVerifier) -> Self {
        self.dpop = Some(verifier);
        self
    }

    /// Takes `Authorization: PoP` (SHR) requests, checked by `verifier`.
    pub fn pop(mut self, verifier: ShrVerifier) -> Self {
        self.pop = Some(verifier);
        self
    }

    /// Also takes `Authorization: Bearer` tokens validated by `validator`
    /// — an explicit policy, off by default. A token bound to a key (with
    /// `cnf`) is still refused as a bearer token (RFC 9449 §7.2).
    pub fn allow_bearer(mut self, validator: Arc<dyn AccessTokenValidator>) -> Self {
        self.bearer = Some(validator);
        self
    }

    /// Takes `Authorization: Bearer` tokens bound to the request's client
    /// certificate (RFC 8705 `cnf.x5t#S256`, [`Scheme::Mtls`]); see
    /// [`MtlsBinding`] for where the certificate comes from.
    pub fn mtls(mut self, binding: MtlsBinding) -> Self {
        self.mtls = Some(binding);
        self
    }

    /// The issuer whose keys are fetched (async, before verification) for
    /// the access tokens: pass the same `Arc` the verifiers validate with.
    pub fn issuer(mut self, issuer: Arc<Issuer>) -> Self {
        self.issuer = Some(issuer);
        self
    }

    /// Server nonces: the verifiers require a fresh nonce from `issuer`
    /// (overriding their own nonce policy), and 401 answers carry a new
    /// one (`DPoP-Nonce`, `PoP nonce=`).
    pub fn nonce_issuer(mut self, issuer: Arc<NonceIssuer>) -> Self {
        self.nonces = Some(issuer);
        self
    }

    /// The public origin clients address, `https://api.example.com`
    /// (optionally with a path prefix, `https://example.com/api`): the URL
    /// a proof is checked against is this plus the request's path and query,
    /// whatever the request's `Host` or forwarding headers say.
    pub fn public_origin(mut self, origin: &str) -> Self {
        self.origin = Some(origin.to_owned());
        self
    }

    /// Proxies (addresses or CIDRs, `10.0.0.0/8`, `::1`) whose `Forwarded`
    /// or `X-Forwarded-Proto` / `-Host` / `-Prefix` headers are believed
    /// when the request comes from them. From any other peer they are
    /// ignored.
    pub fn trusted_proxies<I, S>(mut self, proxies: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.proxies
            .extend(proxies.into_iter().map(|s| s.as_ref().to_owned()));
        self
    }

    /// Largest body read to check an SHR's `b` claim (default 1 MiB);
    /// larger ones are refused with 413. Bodies of requests whose proof
    /// does not sign the body are never read.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The server. Fails when no scheme is enabled, or on a bad origin or
    /// proxy address.
    pub fn build(self) -> crate::Result<ResourceServer> {
        if self.dpop.is_none() && self.pop.is_none() && self.bearer.is_none() && self.mtls.is_none()
        {
            return Err(crate::Error::Config(
                "the resource server takes no scheme: enable dpop, pop, bearer or mtls".into(),
            ));
        }
        let origin = match &self.origin {
            Some(o) => Some(UrlRules::parse_origin(o).map_err(crate::Error::Config)?),
            None => None,
        };
        let trusted = self
            .proxies
            .iter()
            .map(|p| p.parse::<IpNet>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| crate::Error::Config(e.to_string()))?;
        let (mut dpop, mut pop) = (self.dpop, self.pop);
        if let Some(n) = &self.nonces {
            dpop = dpop.map(|v| v.nonce(NoncePolicy::Issuer(n.clone())));
            pop = pop.map(|v| v.nonce(NoncePolicy::Issuer(n.clone())));
        }
        let mtls = match self.mtls {
            Some(m) => Some(m.resolve().map_err(crate::Error::Config)?),
            None => None,
        };
        Ok(ResourceServer {
            dpop,
            pop,
            bearer: self.bearer,
            mtls,
            issuer: self.issuer,
            nonces: self.nonces,
            urls: UrlRules { origin, trusted },
            body_limit: self.body_limit,
        })
    }
}

impl ResourceServer {
    /// A builder with no scheme enabled yet.
    pub fn builder() -> ResourceServerBuilder {
        ResourceServerBuilder {
            dpop: None,
            pop: None,
            bearer: None,
            mtls: None,
            issuer: None,
            nonces: None,
            origin: None,
            proxies: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// A builder for tokens from `issuer`: DPoP and PoP enabled with
    /// default verifiers validating through it (each with its own in-memory
    /// replay cache; give them a shared store with
    /// [`ResourceServerBuilder::dpop`] / [`ResourceServerBuilder::pop`] for
    /// a fleet).
    pub fn for_issuer(issuer: Arc<Issuer>) -> ResourceServerBuilder {
        let validator: Arc<dyn AccessTokenValidator> = issuer.clone();
        Self::builder()
            .dpop(DpopVerifier::new(validator.clone()))
            .pop(ShrVerifier::new(validator))
            .issuer(issuer)
    }

    /// The cap on bodies read for SHR `b`.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    fn offer(&self) -> Offer<'_> {
        Offer {
            dpop_algs: self.dpop.as_ref().map(|v| v.allowed_algorithms()),
            pop: self.pop.is_some(),
            bearer: self.bearer.is_some() || self.mtls.is_some(),
            nonce: self.nonces.as_ref().map(|n| n.issue()),
        }
    }

    pub(crate) fn reject(
        &self,
        kind: RejectionKind,
        scheme: Option<super::Scheme>,
        detail: Option<VerifyError>,
    ) -> Rejection {
        Rejection::new(kind, scheme, detail).with_offer(&self.offer())
    }

    /// The public URL of a request (see the [module docs](super)): `uri`
    /// as received (origin-form `/path?q` or absolute), its headers and the
    /// address of the peer that sent it.
    pub fn public_url(
        &self,
        uri: &http::Uri,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<String, Rejection> {
        self.urls
            .public_url(uri, headers, peer)
            .map_err(|r| r.with_offer(&self.offer()))
    }

    /// Whether the body must be read to check this request: a PoP request
    /// whose SHR carries `b` (looked at without trusting it). The tower
    /// layer reads the body (up to the cap) only then.
    pub fn wants_body(&self, headers: &HeaderMap) -> bool {
        if self.pop.is_none() {
            return false;
        }
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let (Some(v), None) = (values.next(), values.next()) else {
            return false;
        };
        let Some(c) = v.to_str().ok().and_then(parse_authorization) else {
            return false;
        };
        c.is("pop") && unverified_claims(c.token).is_some_and(|claims| claims.contains_key("b"))
    }

    /// Checks a request: `method` and `uri` as received, its headers, the
    /// peer's address (for trusted proxies) and, when the proof may sign
    /// it, the body (see [`ResourceServer::wants_body`]). The public URL is
    /// rebuilt by the configured rules.
    pub async fn authenticate(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        body: Option<&[u8]>,
    ) -> Result<Authenticated, Rejection> {
        self.authenticate_with_certificate(method, uri, headers, peer, body, None)
            .await
    }

    /// [`ResourceServer::authenticate`] for a request whose TLS connection
    /// carried the client certificate `certificate` (for [`Scheme::Mtls`];
    /// the tower layer passes the [`ClientCertificate`] found in the
    /// request's extensions).
    pub async fn authenticate_with_certificate(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        body: Option<&[u8]>,
        certificate: Option<&ClientCertificate>,
    ) -> Result<Authenticated, Rejection> {
        let url = self.public_url(uri, headers, peer)?;
        self.authenticate_url_from(method.as_str(), &url, headers, body, peer, certificate)
            .await
    }

    /// Checks a request whose public URL the caller already knows
    /// (absolute, with query): for gateways that receive the original
    /// method and URL out of band.
    pub async fn authenticate_url(
        &self,
        method: &str,
        public_url: &str,
        headers: &HeaderMap,
        body: Option<&[u8]>,
    ) -> Result<Authenticated, Rejection> {
        self.authenticate_url_from(method, public_url, headers, body, None, None)
            .await
    }

    /// [`ResourceServer::authenticate_url`] knowing the peer's address
    /// (a trusted proxy's certificate header is believed, see
    /// [`MtlsBinding::trusted_proxies`]) and the connection's client
    /// certificate, for [`Scheme::Mtls`].
    pub async fn authenticate_url_from(
        &self,
        method: &str,
        public_url: &str,
        headers: &HeaderMap,
        body: Option<&[u8]>,
        peer: Option<IpAddr>,
        certificate: Option<&ClientCertificate>,
    ) -> Result<Authenticated, Rejection> {
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => return Err(self.reject(RejectionKind::MissingCredentials, None, None)),
            (Some(v), None) => v,
            _ => return Err(self.reject(RejectionKind::InvalidRequest, None, None)),
        };
        let Some(credentials) = value.to_str().ok().and_then(parse_authorization) else {
            return Err(self.reject(RejectionKind::InvalidRequest, None, None));
        };
        let scheme = if credentials.is("dpop") && self.dpop.is_some() {
            Scheme::Dpop
        } else if credentials.is("pop") && self.pop.is_some() {
            Scheme::Pop
        } else if credentials.is("bearer") && (self.bearer.is_some() || self.mtls.is_some()) {
            Scheme::Bearer
        } else {
            return Err(self.reject(RejectionKind::UnsupportedScheme, None, None));
        };
        if credentials.token.is_empty() {
            return Err(self.reject(RejectionKind::InvalidRequest, Some(scheme), None));
        }
        let fail =
            |e: VerifyError| self.reject(RejectionKind::Proof(e.kind()), Some(scheme), Some(e));
        let request = Request {
            method,
            url: public_url,
            headers: headers
                .iter()
                .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
                .collect(),
            body,
        };
        match scheme {
            Scheme::Dpop => {
                self.prepare(credentials.token, scheme).await?;
                let Some(verifier) = &self.dpop else {
                    return Err(self.reject(RejectionKind::UnsupportedScheme, None, None));
                };
                let v = verifier.verify_async(&request).await.map_err(fail)?;
                Ok(Authenticated::new(
                    Scheme::Dpop,
                    Some(v.jkt),
                    v.access_token_claims.unwrap_or_default(),
                    v.access_token_signature_checked,
                ))
            }
            Scheme::Pop => {
                let Some(verifier) = &self.pop else {
                    return Err(self.reject(RejectionKind::UnsupportedScheme, None, None));
                };
                let claims = unverified_claims(credentials.token);
                if let Some(at) = claims
                    .as_ref()
                    .and_then(|c| c.get("at"))
                    .and_then(Value::as_str)
                {
                    self.prepare(at, scheme).await?;
                }
                if body.is_none() && claims.is_some_and(|c| c.contains_key("b")) {
                    // The caller did not read the body: it was over the cap.
                    return Err(self.reject(RejectionKind::BodyTooLarge, Some(scheme), None));
                }
                let v = verifier
                    .verify_async(credentials.token, &request)
                    .await
                    .map_err(fail)?;
                Ok(Authenticated::new(
                    Scheme::Pop,
                    Some(v.thumbprint),
                    v.access_token_claims,
                    v.access_token_signature_checked,
                ))
            }
            Scheme::Bearer => {
                if headers.contains_key("dpop") {
                    return Err(self.reject(RejectionKind::InvalidRequest, Some(scheme), None));
                }
                self.prepare(credentials.token, scheme).await?;
                if let Some(m) = &self.mtls {
                    let mtls_fail = |e: VerifyError| {
                        self.reject(RejectionKind::Proof(e.kind()), Some(Scheme::Mtls), Some(e))
                    };
                    let cert = m
                        .certificate(headers, peer, certificate)
                        .map_err(mtls_fail)?;
                    match m
                        .check(credentials.token, cert.as_ref())
                        .map_err(mtls_fail)?
                    {
                        Binding::Bound(claims, thumbprint) => {
                            let mut who = Authenticated::new(
                                Scheme::Mtls,
                                None,
                                claims,
                                m.checks_signature(),
                            );
                            who.certificate_thumbprint = Some(thumbprint);
                            return Ok(who);
                        }
                        Binding::Unbound if self.bearer.is_none() => {
                            return Err(mtls_fail(VerifyError::new(
                                ErrorKind::KeyNotBound,
                                "the access token is not bound to a certificate (no cnf.x5t#S256)",
                            )));
                        }
                        Binding::Unbound => {}
                    }
                }
                let Some(validator) = &self.bearer else {
                    return Err(self.reject(RejectionKind::UnsupportedScheme, None, None));
                };
                let claims = validator
                    .validate(credentials.token, crate::now())
                    .map_err(fail)?;
                if claims.contains_key("cnf") {
                    return Err(fail(VerifyError::new(
                        ErrorKind::InvalidAccessToken,
                        "a key-bound access token was presented as a bearer token",
                    )));
                }
                Ok(Authenticated::new(
                    Scheme::Bearer,
                    None,
                    claims,
                    validator.checks_signature(),
                ))
            }
            Scheme::Mtls => Err(self.reject(RejectionKind::UnsupportedScheme, None, None)),
        }
    }

    async fn prepare(&self, token: &str, scheme: Scheme) -> Result<(), Rejection> {
        let Some(issuer) = &self.issuer else {
            return Ok(());
        };
        issuer.prepare(token).await.map_err(|e| {
            tracing::warn!(error = %e, "the issuer's keys are unavailable");
            self.reject(RejectionKind::TemporarilyUnavailable, Some(scheme), None)
        })
    }
}

/// The payload claims of a compact JWS, unverified (to look for `b`/`at`).
fn unverified_claims(jws: &str) -> Option<Map<String, Value>> {
    let mut parts = jws.split('.');
    let payload = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(p), Some(_), None) if p.len() <= 256 * 1024 => p,
        _ => return None,
    };
    let bytes = crate::b64::decode(payload).ok()?;
    crate::json::parse_object(std::str::from_utf8(&bytes).ok()?).ok()
}
