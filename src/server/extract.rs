//! The axum extractor.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use super::core::{Authenticated, ResourceServer};
use super::rejection::Rejection;

/// The verified identity of a request, for axum handlers.
///
/// Behind [`PopAuthLayer`](super::PopAuthLayer) it takes the
/// [`Authenticated`] the layer inserted. Alone, it authenticates the
/// request itself with the `Arc<ResourceServer>` found in the request's
/// extensions (add it with `axum::Extension`); the peer address comes from
/// `ConnectInfo` or [`PeerAddr`](super::PeerAddr). An extractor cannot see
/// the body, so alone it refuses SHRs that sign the body (413): use the
/// layer for those.
///
/// ```
/// use std::sync::Arc;
/// use axum::{routing::get, Extension, Router};
/// use popkey::server::{PopAuth, ResourceServer};
/// use popkey::verify::{dpop::DpopVerifier, token::DecodeOnly};
///
/// async fn me(PopAuth(who): PopAuth) -> String {
///     format!("{} via {}", who.subject.unwrap_or_default(), who.scheme)
/// }
/// let server = ResourceServer::builder()
///     .dpop(DpopVerifier::new(Arc::new(DecodeOnly)))
///     .build()?;
/// let app: Router = Router::new()
///     .route("/me", get(me))
///     .layer(Extension(Arc::new(server)));
/// # let _ = app;
/// # Ok::<(), popkey::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct PopAuth(pub Authenticated);

/// Why [`PopAuth`] could not extract: the request was refused, or the
/// application forgot to provide a [`ResourceServer`] (500).
#[derive(Debug)]
pub enum PopAuthRejection {
    /// The request failed authentication.
    Refused(Rejection),
    /// Neither the layer nor an `Arc<ResourceServer>` extension is there.
    NotConfigured,
}

impl IntoResponse for PopAuthRejection {
    fn into_response(self) -> Response {
        match self {
            PopAuthRejection::Refused(r) => r.into_response(),
            PopAuthRejection::NotConfigured => {
                (http::StatusCode::INTERNAL_SERVER_ERROR, "").into_response()
            }
        }
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        Rejection::into_response(self)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PopAuth {
    type Rejection = PopAuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(who) = parts.extensions.get::<Authenticated>() {
            return Ok(PopAuth(who.clone()));
        }
        let server = parts
            .extensions
            .get::<Arc<ResourceServer>>()
            .cloned()
            .ok_or(PopAuthRejection::NotConfigured)?;
        let peer = super::layer::peer_of(&parts.extensions);
        let who = server
            .authenticate_with_certificate(
                &parts.method,
                &parts.uri,
                &parts.headers,
                peer,
                None,
                parts.extensions.get::<super::ClientCertificate>(),
            )
            .await
            .map_err(PopAuthRejection::Refused)?;
        parts.extensions.insert(who.clone());
        Ok(PopAuth(who))
    }
}
