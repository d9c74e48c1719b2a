//! The request a proof is checked against.

use super::{err, ErrorKind, VerifyError};

/// The request a proof claims to be bound to, as the server received it.
#[derive(Clone, Debug, Default)]
pub struct Request<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The absolute URL as the client addressed it (scheme, host, port,
    /// path, query). Behind a proxy, rebuild it from the forwarded host.
    pub url: &'a str,
    /// Request headers: for SHR, the ones signed into `h`; for DPoP, the
    /// `DPoP` header(s) and `Authorization: DPoP <token>` (names compared
    /// ignoring ASCII case).
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
