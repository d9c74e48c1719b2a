//! The request a proof is checked against.

use super::{err, ErrorKind, VerifyError};

/// The request a proof claims to be bound to, as the server received it.
///
/// `Debug` shows the values of credential headers (`Authorization`,
/// `Proxy-Authorization`, `DPoP`, `Cookie`) and the body only as lengths.
#[derive(Clone, Default)]
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

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const CREDENTIALS: [&str; 4] = ["authorization", "proxy-authorization", "dpop", "cookie"];
        let headers: Vec<(&str, String)> = self
            .headers
            .iter()
            .map(|(name, value)| {
                let shown = if CREDENTIALS.iter().any(|c| name.eq_ignore_ascii_case(c)) {
                    format!("<{} bytes>", value.len())
                } else {
                    (*value).to_string()
                };
                (*name, shown)
            })
            .collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &headers)
            .field("body_len", &self.body.map(<[u8]>::len))
            .finish()
    }
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

/// Decodes percent-encoded unreserved characters and uppercases the hex of
/// the remaining escapes.
pub(crate) fn normalize_path(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let v = hex_value(b[i + 1]) * 16 + hex_value(b[i + 2]);
            if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                out.push(v);
            } else {
                out.extend_from_slice(&[
                    b'%',
                    b[i + 1].to_ascii_uppercase(),
                    b[i + 2].to_ascii_uppercase(),
                ]);
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    // Only ASCII bytes were replaced, so the result is as valid UTF-8 as the input.
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_shows_credentials_as_lengths() {
        let r = super::Request::new("GET", "https://api.example.com/x")
            .header("Authorization", "DPoP secret-token")
            .header("dpop", "secret-proof")
            .header("Accept", "application/json")
            .body(b"secret body");
        let shown = format!("{r:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains("<17 bytes>") && shown.contains("application/json"),
            "{shown}"
        );
        assert!(shown.contains("body_len: Some(11)"), "{shown}");
    }
}
