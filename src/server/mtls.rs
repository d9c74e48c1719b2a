//! Certificate-bound access tokens (RFC 8705) in the resource server: see
//! [`MtlsBinding`].

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use serde_json::{Map, Value};

use super::public_url::IpNet;
pub use crate::verify::mtls::ClientCertificate;
use crate::verify::mtls::{check_binding, MAX_HEADER_LEN};
use crate::verify::token::AccessTokenValidator;
use crate::verify::{ErrorKind, VerifyError};

/// The header a proxy forwards the client certificate in (RFC 9440).
pub const CLIENT_CERT_HEADER: &str = "client-cert";

/// The RFC 8705 policy of a [`ResourceServer`](super::ResourceServer):
/// `Authorization: Bearer` taken only when the token's `cnf.x5t#S256` is
/// the thumbprint of the client certificate the request came with; how
/// the tokens are validated and where the certificate may come from.
///
/// Enable it with [`ResourceServerBuilder::mtls`](super::ResourceServerBuilder::mtls).
/// The client certificate comes from one of two places:
///
/// * **the TLS connection** — your server terminates TLS and asks for
///   client certificates; put the peer's leaf certificate into the
///   request's extensions as a [`ClientCertificate`]
///   ([`ClientCertificate::from_der`]); [`PopAuthLayer`](super::PopAuthLayer)
///   and the axum extractor read it from there (see below);
/// * **a trusted proxy's header** — the TLS-terminating proxy forwards the
///   certificate in `Client-Cert` (RFC 9440 `:base64 DER:`, or nginx's
///   `$ssl_client_escaped_cert`, the URL-escaped PEM: both are recognised).
///   The header is believed only when the request's peer is one of
///   [`MtlsBinding::trusted_proxies`]; from anyone else it is ignored, and
///   from a trusted proxy the connection's own certificate (the proxy's)
///   is ignored.
///
/// A certificate-bound token presented without a certificate or with
/// another one is refused with 401 `Bearer error="invalid_token"`. A token
/// with no `cnf.x5t#S256` is refused too, unless a plain bearer policy
/// ([`ResourceServerBuilder::allow_bearer`](super::ResourceServerBuilder::allow_bearer))
/// takes it (and that policy refuses any token with `cnf`).
///
/// # The certificate from a rustls server connection
///
/// With `tokio-rustls` (or anything that hands you the rustls
/// `ServerConnection`), set a client-certificate verifier that asks for a
/// certificate, e.g. one accepting any well-formed certificate (under RFC
/// 8705 the token's binding authenticates it), and per connection:
///
/// ```no_run
/// # #[cfg(feature = "axum")]
/// # mod demo {
/// use popkey::server::{ClientCertificate, PeerAddr};
/// use tower::ServiceExt;
///
/// /// `app`: an axum `Router` with `PopAuthLayer`; `acceptor`: a
/// /// tokio-rustls acceptor whose `ServerConfig` asks for client certificates.
/// async fn serve(
///     listener: tokio::net::TcpListener,
///     acceptor: tokio_rustls::TlsAcceptor,
///     app: axum::Router,
/// ) {
///     while let Ok((tcp, peer)) = listener.accept().await {
///         let (acceptor, app) = (acceptor.clone(), app.clone());
///         tokio::spawn(async move {
///             let Ok(tls) = acceptor.accept(tcp).await else { return };
///             // The connection's leaf certificate, for every request on it.
///             let certificate = tls
///                 .get_ref()
///                 .1
///                 .peer_certificates()
///                 .and_then(|chain| chain.first())
///                 .and_then(|leaf| ClientCertificate::from_der(leaf).ok());
///             let service = hyper::service::service_fn(
///                 move |mut request: hyper::Request<hyper::body::Incoming>| {
///                     if let Some(c) = &certificate {
///                         request.extensions_mut().insert(c.clone());
///                     }
///                     request.extensions_mut().insert(PeerAddr(peer.ip()));
///                     app.clone().oneshot(request.map(axum::body::Body::new))
///                 },
///             );
///             let _ = hyper::server::conn::http1::Builder::new()
///                 .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
///                 .await;
///         });
///     }
/// }
/// # }
/// ```
///
/// `tests/mtls_server.rs` runs exactly this with hyper-util.
///
/// ```
/// use std::sync::Arc;
/// use popkey::server::{MtlsBinding, ResourceServer};
/// use popkey::verify::token::DecodeOnly;
///
/// let server = ResourceServer::builder()
///     .mtls(MtlsBinding::new(Arc::new(DecodeOnly)).trusted_proxies(["127.0.0.1"]))
///     .build()?;
/// # let _ = server;
/// # Ok::<(), popkey::Error>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct MtlsBinding {
    validator: Arc<dyn AccessTokenValidator>,
    proxies: Vec<String>,
    header: String,
}

impl std::fmt::Debug for MtlsBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsBinding")
            .field("proxies", &self.proxies)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl MtlsBinding {
    /// Certificate-bound tokens validated by `validator` (signature,
    /// issuer, audience, expiry); the certificate from the connection only
    /// until [`MtlsBinding::trusted_proxies`] names proxies.
    pub fn new(validator: Arc<dyn AccessTokenValidator>) -> Self {
        MtlsBinding {
            validator,
            proxies: Vec::new(),
            header: CLIENT_CERT_HEADER.to_owned(),
        }
    }

    /// The proxies (addresses or CIDRs, `127.0.0.1`, `10.0.0.0/8`) whose
    /// certificate header is believed. Each must overwrite any copy of the
    /// header a client sends (nginx's `proxy_set_header` does).
    pub fn trusted_proxies<I, S>(mut self, proxies: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.proxies
            .extend(proxies.into_iter().map(|s| s.as_ref().to_owned()));
        self
    }

    /// The header the proxies put the certificate in (default
    /// `Client-Cert`), e.g. `X-SSL-Client-Cert`.
    pub fn header(mut self, name: &str) -> Self {
        self.header = name.to_ascii_lowercase();
        self
    }

    /// Checks the configuration (proxy addresses, header name).
    pub(crate) fn resolve(self) -> Result<ResolvedMtls, String> {
        let proxies = self
            .proxies
            .iter()
            .map(|p| p.parse::<IpNet>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let header = http::HeaderName::from_bytes(self.header.as_bytes())
            .map_err(|_| format!("`{}` is not a header name", self.header))?;
        Ok(ResolvedMtls {
            validator: self.validator,
            proxies,
            header,
        })
    }
}

/// An [`MtlsBinding`] with its addresses parsed.
pub(crate) struct ResolvedMtls {
    validator: Arc<dyn AccessTokenValidator>,
    proxies: Vec<IpNet>,
    header: http::HeaderName,
}

/// What a bearer token turned out to be.
pub(crate) enum Binding {
    /// Bound to the request's certificate: the claims and the thumbprint.
    Bound(Map<String, Value>, String),
    /// No `cnf` at all: a plain bearer token (for the bearer policy, if any).
    Unbound,
}

impl ResolvedMtls {
    /// The client certificate of a request: the trusted proxy's header when
    /// `peer` is a trusted proxy, else the connection's certificate.
    pub(crate) fn certificate(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        connection: Option<&ClientCertificate>,
    ) -> Result<Option<ClientCertificate>, VerifyError> {
        let from_proxy = peer.is_some_and(|ip| self.proxies.iter().any(|n| n.contains(ip)));
        if !from_proxy {
            return Ok(connection.cloned());
        }
        let mut values = headers.get_all(&self.header).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => return Ok(None),
            (Some(v), None) => v,
            _ => {
                return Err(VerifyError::new(
                    ErrorKind::ClientCertificateMalformed,
                    "the proxy sent the client certificate header more than once",
                ))
            }
        };
        if value.len() > MAX_HEADER_LEN {
            return Err(VerifyError::new(
                ErrorKind::ClientCertificateMalformed,
                "the client certificate header is too large",
            ));
        }
        let text = value.to_str().map_err(|_| {
            VerifyError::new(
                ErrorKind::ClientCertificateMalformed,
                "the client certificate header is not text",
            )
        })?;
        let text = text.trim();
        if text.is_empty() {
            // nginx sends an empty value when the client presented none.
            Ok(None)
        } else if text.starts_with(':') {
            ClientCertificate::from_client_cert_header(text).map(Some)
        } else {
            ClientCertificate::from_nginx_escaped_pem(text).map(Some)
        }
    }

    /// Validates `token` and checks its binding to `certificate`.
    pub(crate) fn check(
        &self,
        token: &str,
        certificate: Option<&ClientCertificate>,
    ) -> Result<Binding, VerifyError> {
        let claims = self.validator.validate(token, crate::now())?;
        if !claims.contains_key("cnf") {
            return Ok(Binding::Unbound);
        }
        check_binding(&claims, certificate)?;
        let thumbprint = certificate.map(ClientCertificate::thumbprint);
        Ok(Binding::Bound(claims, thumbprint.unwrap_or_default()))
    }

    /// Whether the validator checks signatures.
    pub(crate) fn checks_signature(&self) -> bool {
        self.validator.checks_signature()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use http::{HeaderMap, Method, Uri};

    use super::{ClientCertificate, MtlsBinding};
    use crate::server::{ResourceServer, Scheme};
    use crate::verify::token::DecodeOnly;

    /// Shapes only: the routing is under test here (tests/mtls_server.rs
    /// uses real certificates).
    fn cert(filler: u8) -> ClientCertificate {
        ClientCertificate::from_der(&[
            0x30, 0x0a, 0x30, 0x01, filler, 0x30, 0x00, 0x03, 0x03, 0x00, 0x01, 0x02,
        ])
        .expect("a certificate shape")
    }

    fn token(cnf: Option<&ClientCertificate>) -> String {
        let claims = match cnf {
            Some(c) => format!(
                r#"{{"sub":"alice","cnf":{{"x5t#S256":"{}"}}}}"#,
                c.thumbprint()
            ),
            None => r#"{"sub":"alice"}"#.to_owned(),
        };
        format!("e30.{}.c2ln", crate::b64::encode(claims.as_bytes()))
    }

    fn server(bearer: bool) -> ResourceServer {
        let mut b = ResourceServer::builder()
            .mtls(MtlsBinding::new(Arc::new(DecodeOnly)).trusted_proxies(["10.0.0.0/8"]))
            .public_origin("https://api.example");
        if bearer {
            b = b.allow_bearer(Arc::new(DecodeOnly));
        }
        b.build().expect("server")
    }

    fn run(
        server: &ResourceServer,
        token: &str,
        header: Option<String>,
        peer: &str,
        connection: Option<&ClientCertificate>,
    ) -> Result<crate::server::Authenticated, crate::server::Rejection> {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        if let Some(h) = header {
            headers.insert("client-cert", h.parse().unwrap());
        }
        let peer: IpAddr = peer.parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(server.authenticate_with_certificate(
            &Method::GET,
            &"/x".parse::<Uri>().unwrap(),
            &headers,
            Some(peer),
            None,
            connection,
        ))
    }

    fn header(c: &ClientCertificate) -> String {
        format!(":{}:", STANDARD.encode(c.der()))
    }

    #[test]
    fn the_certificate_comes_from_the_connection_or_a_trusted_proxy() {
        let (mine, other) = (cert(1), cert(2));
        let s = server(false);
        let t = token(Some(&mine));
        let who = run(&s, &t, None, "192.0.2.1", Some(&mine)).unwrap();
        assert_eq!(who.scheme, Scheme::Mtls);
        assert_eq!(who.certificate_thumbprint, Some(mine.thumbprint()));
        assert_eq!(who.subject.as_deref(), Some("alice"));
        // From a trusted proxy: its header, not its own connection certificate.
        let who = run(&s, &t, Some(header(&mine)), "10.1.2.3", Some(&other)).unwrap();
        assert_eq!(who.scheme, Scheme::Mtls);
        // The header from anyone else is ignored.
        let no = run(&s, &t, Some(header(&mine)), "192.0.2.1", None).unwrap_err();
        assert_eq!(no.status(), 401);
        assert_eq!(
            no.headers()["www-authenticate"],
            r#"Bearer error="invalid_token", error_description="client_certificate_missing""#
        );
        let no = run(&s, &t, Some(header(&mine)), "192.0.2.1", Some(&other)).unwrap_err();
        assert_eq!(
            no.headers()["www-authenticate"],
            r#"Bearer error="invalid_token", error_description="key_not_bound""#
        );
        assert_eq!(no.scheme(), Some(Scheme::Mtls));
        // A malformed header from the proxy is a token problem too.
        let no = run(&s, &t, Some(":bm90IGEgY2VydA==:".into()), "10.1.2.3", None).unwrap_err();
        assert_eq!(
            no.headers()["www-authenticate"],
            r#"Bearer error="invalid_token", error_description="client_certificate_malformed""#
        );
    }

    #[test]
    fn unbound_tokens_need_a_bearer_policy() {
        let mine = cert(1);
        let no = run(&server(false), &token(None), None, "192.0.2.1", Some(&mine)).unwrap_err();
        assert_eq!(
            no.headers()["www-authenticate"],
            r#"Bearer error="invalid_token", error_description="key_not_bound""#
        );
        let who = run(&server(true), &token(None), None, "192.0.2.1", None).unwrap();
        assert_eq!(who.scheme, Scheme::Bearer);
        assert_eq!(who.certificate_thumbprint, None);
        // A bound token is never taken as a plain bearer token.
        let no = run(&server(true), &token(Some(&mine)), None, "192.0.2.1", None).unwrap_err();
        assert_eq!(no.status(), 401);
    }

    #[test]
    fn a_bad_proxy_list_is_refused_at_build() {
        let e = ResourceServer::builder()
            .mtls(MtlsBinding::new(Arc::new(DecodeOnly)).trusted_proxies(["not-an-ip"]))
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("not-an-ip"), "{e}");
    }
}
