//! Signed HTTP Requests: the `Authorization: PoP …` token MSAL sends.
//!
//! Header `{"alg","kid","typ":"pop"}`; payload `at`, `ts`, `m`, `u`, `p`,
//! optionally `q`, `h`, `b` (draft-ietf-oauth-signed-http-request-03 §3),
//! `nonce`, `cnf.jwk` and optionally `client_claims`.
//!
//! ```
//! use popkey::{shr::SignedHttpRequest, PopKey};
//! let key = PopKey::open("mem:")?;
//! let token = SignedHttpRequest::new("GET", "https://api.example.com/items?page=2", "eyJ0eXAi...")?
//!     .sign_query(true)
//!     .sign(&key)?;
//! assert_eq!(token.split('.').count(), 3);
//! let authorization = format!("PoP {token}");
//! # let _ = authorization;
//! # Ok::<(), popkey::Error>(())
//! ```

use rand::RngCore;

use crate::b64;
use crate::error::{Error, Result};
use crate::http::HttpTarget;
use crate::json::ObjectWriter;
use crate::provider::PopCryptoProvider;

/// Longest access token accepted for signing.
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// A Signed HTTP Request under construction.
#[derive(Clone)]
pub struct SignedHttpRequest {
    target: HttpTarget,
    access_token: String,
    ts: Option<u64>,
    nonce: Option<String>,
    sign_query: bool,
    headers: Vec<(String, String)>,
    body_hash: Option<String>,
    client_claims: Option<String>,
}

impl std::fmt::Debug for SignedHttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedHttpRequest")
            .field("method", &self.target.method())
            .field("url", &self.target.url().as_str())
            .field("access_token", &"<redacted>")
            .field("sign_query", &self.sign_query)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl SignedHttpRequest {
    /// A request to sign: uppercase `method`, absolute `url`, and the PoP
    /// access token the authority issued for this key.
    pub fn new(method: &str, url: &str, access_token: &str) -> Result<Self> {
        let target = HttpTarget::new(method, url)?;
        check_token(access_token)?;
        Ok(SignedHttpRequest {
            target,
            access_token: access_token.to_owned(),
            ts: None,
            nonce: None,
            sign_query: false,
            headers: Vec::new(),
            body_hash: None,
            client_claims: None,
        })
    }

    /// Uses a server-provided nonce instead of 128 random bits.
    pub fn nonce(mut self, nonce: &str) -> Self {
        self.nonce = Some(nonce.to_owned());
        self
    }

    /// Sets `ts` (seconds since the Unix epoch) instead of the current time.
    pub fn timestamp(mut self, ts: u64) -> Self {
        self.ts = Some(ts);
        self
    }

    /// Signs the URL's query parameters into `q`.
    pub fn sign_query(mut self, yes: bool) -> Self {
        self.sign_query = yes;
        self
    }

    /// Signs a request header into `h`. Call once per header.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self> {
        if name.is_empty() || !name.bytes().all(crate::http::is_tchar) {
            return Err(Error::request(format!(
                "header name `{}` is not a valid HTTP token",
                name.chars().take(40).collect::<String>()
            )));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(Error::request(format!(
                "the value of header `{name}` contains CR, LF or NUL"
            )));
        }
        self.headers.push((name.to_owned(), value.to_owned()));
        Ok(self)
    }

    /// Signs the request body into `b`.
    pub fn body(mut self, body: &[u8]) -> Self {
        self.body_hash = Some(b64::encode(crate::crypto::sha256(body)));
        self
    }

    /// Adds `client_claims`: a JSON object, carried as a string as MSAL does.
    pub fn client_claims(mut self, json: &str) -> Result<Self> {
        crate::json::parse_object(json)
            .map_err(|e| Error::request(format!("client claims must be a JSON object: {e}")))?;
        self.client_claims = Some(json.to_owned());
        Ok(self)
    }

    /// The JWS payload this request signs, as compact JSON.
    pub fn payload<P: PopCryptoProvider + ?Sized>(&self, provider: &P) -> Vec<u8> {
        let jwk = provider.canonical_public_key_jwk();
        let mut w = ObjectWriter::with_capacity(self.access_token.len() + jwk.len() + 256);
        w.str("at", &self.access_token)
            .uint("ts", self.ts.unwrap_or_else(crate::now))
            .str("m", self.target.method())
            .str("u", &self.target.host_and_port())
            .str("p", self.target.url().path());
        if self.sign_query {
            let (names, hash) = query_claim(self.target.url().query().unwrap_or(""));
            w.value("q", &serde_json::json!([names, hash]));
        }
        if !self.headers.is_empty() {
            let (names, hash) = header_claim(&self.headers);
            w.value("h", &serde_json::json!([names, hash]));
        }
        if let Some(b) = &self.body_hash {
            w.str("b", b);
        }
        match &self.nonce {
            Some(n) => w.str("nonce", n),
            None => w.str("nonce", &random_nonce()),
        };
        let mut cnf = String::with_capacity(jwk.len() + 8);
        cnf.push_str(r#"{"jwk":"#);
        cnf.push_str(jwk);
        cnf.push('}');
        w.raw("cnf", &cnf);
        if let Some(c) = &self.client_claims {
            w.str("client_claims", c);
        }
        w.finish()
    }

    /// Signs the request; returns the compact SHR for `Authorization: PoP <shr>`.
    pub fn sign<P: PopCryptoProvider + ?Sized>(&self, provider: &P) -> Result<String> {
        let thumbprint = provider.thumbprint();
        let mut header = ObjectWriter::with_capacity(96);
        header
            .str("alg", provider.algorithm().as_str())
            .str("kid", &thumbprint)
            .str("typ", "pop");
        crate::jws::sign_compact(provider, &header.finish(), &self.payload(provider))
    }
}

fn check_token(token: &str) -> Result<()> {
    if token.is_empty() {
        return Err(Error::request("the access token is empty"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(Error::request(format!(
            "the access token is longer than {MAX_TOKEN_LEN} bytes"
        )));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::request(
            "the access token contains whitespace or control characters",
        ));
    }
    Ok(())
}

/// 128 random bits as 32 lowercase hex digits, as MSAL's nonces are.
fn random_nonce() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    let mut out = String::with_capacity(32);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// The `q` claim's parts for a raw query string (draft §3.1, §7.5).
///
/// Parameters are taken in the order they appear, as `name=value` with
/// nothing decoded; a parameter that is not exactly one `name=value` with
/// both parts non-empty is left out, and a name that appears more than once
/// is left out entirely (every occurrence), as the draft's §7.5 requires and
/// Microsoft.IdentityModel's validator expects.
pub fn query_claim(query: &str) -> (Vec<String>, String) {
    let pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter_map(|p| {
            let mut it = p.split('=');
            match (it.next(), it.next(), it.next()) {
                (Some(n), Some(v), None) if !n.is_empty() && !v.is_empty() => Some((n, v)),
                _ => None,
            }
        })
        .collect();
    let unique: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|(n, _)| pairs.iter().filter(|(m, _)| m == n).count() == 1)
        .copied()
        .collect();
    let canonical = unique
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    (
        unique.iter().map(|(n, _)| (*n).to_owned()).collect(),
        b64::encode(crate::crypto::sha256(canonical.as_bytes())),
    )
}

/// The `h` claim's parts for a list of headers (draft §3.2, §7.5).
///
/// Names are lowercased; entries are `name: value` joined by `\n`; the
/// `Authorization` header (which carries the SHR itself), empty names or
/// values, and any name given more than once (case-insensitively) are left
/// out.
pub fn header_claim(headers: &[(String, String)]) -> (Vec<String>, String) {
    let lowered: Vec<(String, &str)> = headers
        .iter()
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_str()))
        .filter(|(n, _)| n != "authorization")
        .collect();
    let unique: Vec<&(String, &str)> = lowered
        .iter()
        .filter(|(n, _)| lowered.iter().filter(|(m, _)| m == n).count() == 1)
        .collect();
    let canonical = unique
        .iter()
        .map(|(n, v)| format!("{n}: {v}"))
        .collect::<Vec<_>>()
        .join("\n");
    (
        unique.iter().map(|(n, _)| n.clone()).collect(),
        b64::encode(crate::crypto::sha256(canonical.as_bytes())),
    )
}

/// The `req_cnf` token-request parameter: base64url of `{"kid":"<thumbprint>"}`.
pub fn req_cnf<P: PopCryptoProvider + ?Sized>(provider: &P) -> String {
    let mut w = ObjectWriter::with_capacity(64);
    w.str("kid", &provider.thumbprint());
    b64::encode(w.finish())
}

/// The extra token-request parameters that ask for a PoP token bound to
/// `provider`'s key: `token_type=pop` and `req_cnf`.
pub fn token_request_params<P: PopCryptoProvider + ?Sized>(
    provider: &P,
) -> [(&'static str, String); 2] {
    [
        ("token_type", "pop".to_owned()),
        ("req_cnf", req_cnf(provider)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_known_answer_from_the_draft() {
        // draft-ietf-oauth-signed-http-request-03 §3.1 example.
        let (names, hash) = query_claim("b=bar&a=foo&c=duck");
        assert_eq!(names, ["b", "a", "c"]);
        assert_eq!(hash, "u4LgkGUWhP9MsKrEjA4dizIllDXluDku6ZqCeyuR-JY");
    }

    #[test]
    fn header_known_answer_from_the_draft() {
        // §3.2 example, with the "\n" separator the text specifies (the
        // draft's printed hash was computed with "\r\n").
        let h = vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("Etag".to_owned(), "742-3u8f34-3r2nvv3".to_owned()),
        ];
        let (names, hash) = header_claim(&h);
        assert_eq!(names, ["content-type", "etag"]);
        assert_eq!(hash, "P6z5XN4tTzHkfwe3XO1YvVUIurSuhvh_UG10N_j-aGs");
    }

    #[test]
    fn repeated_and_malformed_are_dropped_values_not_decoded() {
        let (names, hash) = query_claim("a=1&b=%41%20&a=2&c&d=&e=x=y&f=ok");
        assert_eq!(names, ["b", "f"]);
        assert_eq!(hash, b64::encode(crate::crypto::sha256(b"b=%41%20&f=ok")));
        let h = vec![
            ("X-A".to_owned(), "1".to_owned()),
            ("x-a".to_owned(), "2".to_owned()),
            ("Authorization".to_owned(), "PoP x".to_owned()),
            ("X-B".to_owned(), "v".to_owned()),
        ];
        let (names, hash) = header_claim(&h);
        assert_eq!(names, ["x-b"]);
        assert_eq!(hash, b64::encode(crate::crypto::sha256(b"x-b: v")));
    }
}
