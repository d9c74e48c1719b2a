//! The tower layer: every request through [`ResourceServer::authenticate`].

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};

use super::core::ResourceServer;
use super::rejection::RejectionKind;

/// The address of the peer that sent a request, for
/// [`ResourceServerBuilder::trusted_proxies`](super::ResourceServerBuilder::trusted_proxies).
/// Insert it into the request's extensions from your server loop; with
/// feature `axum`, axum's `ConnectInfo<SocketAddr>` is read as well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub IpAddr);

/// A tower [`Layer`](tower_layer::Layer) that authenticates every request
/// with a [`ResourceServer`]: on success the inner service gets the request
/// with [`Authenticated`](super::Authenticated) in its extensions; on
/// failure the layer answers the [`Rejection`](super::Rejection) itself.
///
/// Bodies are streamed through untouched, except for a PoP request whose
/// SHR signs the body (`b`): that body is read up to the server's
/// [`body_limit`](super::ResourceServerBuilder::body_limit) (413 beyond it),
/// checked, and handed on as read. The request body type must be
/// constructible from `Bytes` (axum's `Body` is).
///
/// With [`ResourceServerBuilder::mtls`](super::ResourceServerBuilder::mtls),
/// a [`ClientCertificate`](super::ClientCertificate) in the request's
/// extensions is the connection's client certificate (insert it from your
/// TLS server; see [`MtlsBinding`](super::MtlsBinding)).
///
/// ```
/// use std::sync::Arc;
/// use axum::{routing::get, Extension, Router};
/// use popkey::server::{Authenticated, PopAuthLayer, ResourceServer};
/// use popkey::verify::{dpop::DpopVerifier, token::DecodeOnly};
///
/// let server = ResourceServer::builder()
///     .dpop(DpopVerifier::new(Arc::new(DecodeOnly)))
///     .public_origin("https://api.example.com")
///     .build()?;
/// let app: Router = Router::new()
///     .route("/me", get(|Extension(who): Extension<Authenticated>| async move {
///         who.subject.unwrap_or_default()
///     }))
///     .layer(PopAuthLayer::new(Arc::new(server)));
/// # let _ = app;
/// # Ok::<(), popkey::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct PopAuthLayer {
    server: Arc<ResourceServer>,
}

impl PopAuthLayer {
    /// A layer checking requests with `server`.
    pub fn new(server: Arc<ResourceServer>) -> Self {
        PopAuthLayer { server }
    }
}

impl<S> tower_layer::Layer<S> for PopAuthLayer {
    type Service = PopAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PopAuthService {
            inner,
            server: self.server.clone(),
        }
    }
}

/// The service [`PopAuthLayer`] wraps around an inner service.
#[derive(Clone, Debug)]
pub struct PopAuthService<S> {
    inner: S,
    server: Arc<ResourceServer>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for PopAuthService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready handles this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let server = self.server.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let peer = peer_of(&parts.extensions);
            let (body, bytes) = if server.wants_body(&parts.headers) {
                match read_capped(body, &parts.headers, server.body_limit()).await {
                    Ok(bytes) => (None, Some(bytes)),
                    Err(kind) => {
                        let refused = server.reject(kind, Some(super::Scheme::Pop), None);
                        return Ok(refused.into_response());
                    }
                }
            } else {
                (Some(body), None)
            };
            match server
                .authenticate_with_certificate(
                    &parts.method,
                    &parts.uri,
                    &parts.headers,
                    peer,
                    bytes.as_deref(),
                    parts.extensions.get::<super::ClientCertificate>(),
                )
                .await
            {
                Ok(who) => {
                    parts.extensions.insert(who);
                    let body = match (body, bytes) {
                        (Some(b), _) => b,
                        (None, Some(bytes)) => ReqBody::from(bytes),
                        (None, None) => ReqBody::from(Bytes::new()),
                    };
                    inner.call(Request::from_parts(parts, body)).await
                }
                Err(refused) => Ok(refused.into_response()),
            }
        })
    }
}

/// The peer's address from the request's extensions.
pub(crate) fn peer_of(extensions: &http::Extensions) -> Option<IpAddr> {
    if let Some(PeerAddr(ip)) = extensions.get::<PeerAddr>() {
        return Some(*ip);
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        return Some(info.0.ip());
    }
    None
}

/// Reads a body of at most `limit` bytes.
async fn read_capped<B>(
    body: B,
    headers: &http::HeaderMap,
    limit: usize,
) -> Result<Bytes, RejectionKind>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(RejectionKind::BodyTooLarge);
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(RejectionKind::BodyTooLarge),
        Err(_) => Err(RejectionKind::InvalidRequest),
    }
}
