//! Getting PoP and DPoP tokens, and calling APIs with them (feature
//! `client`: reqwest + tokio).
//!
//! * [`TokenClient`] asks a token endpoint (any OAuth 2.0 server; Microsoft
//!   Entra ID conventions built in) for a `pop`, `DPoP` or bearer token with
//!   the client-credentials grant, authenticating with a client secret or a
//!   `private_key_jwt` assertion signed by a popkey key.
//! * [`TokenCache`] reuses tokens until shortly before they expire, with one
//!   request in flight per key however many callers wait.
//! * [`PopClient`] wraps `reqwest::Client`: every request gets a cached token
//!   and a fresh proof bound to its method and URL, nonce challenges are
//!   answered once, 429/5xx are retried with backoff.
//! * [`KeySource`] is where a client's key comes from: a fixed key, a
//!   rotating [`KeySlot`](crate::KeySlot) or the process-wide key. One
//!   snapshot per request serves the token lookup and the proof.
//! * [`PopClient::authorize`] is the `reqwest` integration: it signs a
//!   request you built with your own client (`.query()`, `.json()`, …).
//! * [`RetryPolicy`]: which failures are retried, and how long to wait.
//! * [`Scheme::Mtls`]: RFC 8705 certificate-bound tokens over mutual TLS,
//!   bound to a [`BindingCertificate`] for the popkey key.
//! * [`TlsConfig`]: which servers to trust (the platform store by default,
//!   plus your CA files) and, with feature `mtls`, the client certificate.
//!
//! Signing runs on tokio's blocking pool (`spawn_blocking`): a real TPM can
//! take 200 ms per signature, which must not stall the executor.

mod cache;
pub mod challenge;
mod key_source;
mod mtls;
mod pop_client;
mod retry;
mod tls;
mod token;

pub use cache::{CacheKey, TokenCache};
pub use key_source::KeySource;
pub use mtls::BindingCertificate;
pub use pop_client::PopClient;
pub use retry::RetryPolicy;
pub use tls::TlsConfig;
pub use token::{
    entra_scope, entra_token_endpoint, ClientAuth, Scheme, TokenClient, TokenRequest, TokenResponse,
};

/// Default per-request timeout for token and API calls.
pub(crate) const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A response header's value, when it is visible ASCII.
pub(crate) fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Runs a signing closure off the async executor.
pub(crate) async fn sign_blocking<T, F>(f: F) -> crate::Result<T>
where
    F: FnOnce() -> crate::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| crate::Error::Backend {
            backend: "client",
            message: format!("signing task failed: {e}"),
        })?
}

/// `scheme://host[:port]` of a URL, the key for remembered nonces.
pub(crate) fn origin(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

/// A URL without its query, for error messages (queries may carry secrets).
pub(crate) fn display_url(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.into()
}

/// The latest server nonce per origin (`DPoP-Nonce`, `PoP nonce=…`,
/// `Authentication-Info: nextnonce`).
#[derive(Debug, Default)]
pub(crate) struct Nonces(std::sync::Mutex<std::collections::HashMap<String, String>>);

impl Nonces {
    pub(crate) fn get(&self, origin: &str) -> Option<String> {
        self.0.lock().ok()?.get(origin).cloned()
    }

    pub(crate) fn set(&self, origin: &str, nonce: &str) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() > 10_000 {
                m.clear(); // bounded: nonces are cheap to ask for again
            }
            m.insert(origin.to_owned(), nonce.to_owned());
        }
    }
}

/// A reqwest client with popkey's defaults: the platform's trust store,
/// timeouts on connect and on every request, no automatic redirects (a
/// proof is bound to one URL). See [`TlsConfig::http_client`].
pub(crate) fn default_http() -> crate::Result<reqwest::Client> {
    TlsConfig::new().http_client()
}
