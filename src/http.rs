//! The HTTP request a proof is bound to: method and URL, checked once.

use url::Url;

use crate::error::{Error, Result};

/// Longest method name accepted.
const MAX_METHOD_LEN: usize = 32;
/// Longest URL accepted.
const MAX_URL_LEN: usize = 16 * 1024;

/// A validated HTTP method and absolute `http(s)` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpTarget {
    method: String,
    url: Url,
}

impl HttpTarget {
    /// Checks `method` (an uppercase HTTP token such as `GET`) and `url`
    /// (absolute `http` or `https` with a host, no user info).
    pub fn new(method: &str, url: &str) -> Result<Self> {
        check_method(method)?;
        Ok(HttpTarget {
            method: method.to_owned(),
            url: parse_url(url)?,
        })
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The URL as parsed (host lowercased, default port dropped).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Host, plus `:port` only when the port is not the scheme's default.
    pub fn host_and_port(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    /// The URL without query and fragment (DPoP `htu`, RFC 9449 §4.2).
    pub fn url_without_query(&self) -> String {
        let mut u = self.url.clone();
        u.set_query(None);
        u.set_fragment(None);
        u.into()
    }
}

fn check_method(method: &str) -> Result<()> {
    if method.is_empty() {
        return Err(Error::request(
            "the HTTP method is empty; give one such as GET or POST",
        ));
    }
    if method.len() > MAX_METHOD_LEN {
        return Err(Error::request(format!(
            "the HTTP method is longer than {MAX_METHOD_LEN} characters"
        )));
    }
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Error::request(format!(
            "the HTTP method `{method}` must be uppercase, e.g. `{}`",
            method.to_ascii_uppercase()
        )));
    }
    if !method.bytes().all(is_tchar) {
        return Err(Error::request(
            "the HTTP method may contain only letters, digits and !#$%&'*+-.^_`|~",
        ));
    }
    Ok(())
}

/// RFC 9110 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_url(text: &str) -> Result<Url> {
    if text.len() > MAX_URL_LEN {
        return Err(Error::request(format!(
            "the URL is longer than {MAX_URL_LEN} bytes"
        )));
    }
    let url = Url::parse(text).map_err(|e| {
        Error::request(format!(
            "`{}` is not an absolute URL ({e}); give one like https://api.example.com/path",
            text.chars().take(80).collect::<String>()
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::request(format!(
            "the URL scheme `{}` is not http or https",
            url.scheme()
        )));
    }
    if url.host_str().map_or(true, str::is_empty) {
        return Err(Error::request("the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::request(
            "the URL carries user info (user:password@); remove it",
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods() {
        assert!(HttpTarget::new("GET", "https://a.example/").is_ok());
        assert!(HttpTarget::new("M-SEARCH", "https://a.example/").is_ok());
        for bad in ["", "get", "Get", "G ET", "GET\n", &"X".repeat(40)] {
            assert!(matches!(
                HttpTarget::new(bad, "https://a.example/"),
                Err(Error::InvalidRequest(_))
            ));
        }
    }

    #[test]
    fn urls() {
        let t = HttpTarget::new("GET", "HTTPS://API.Example.COM:443/a/b?x=1#f").unwrap();
        assert_eq!(t.host_and_port(), "api.example.com");
        assert_eq!(t.url_without_query(), "https://api.example.com/a/b");
        let t = HttpTarget::new("GET", "http://[::1]:8080/p").unwrap();
        assert_eq!(t.host_and_port(), "[::1]:8080");
        for bad in [
            "/relative",
            "ftp://h/x",
            "https://u:p@h/x",
            "file:///etc/passwd",
            "https://",
            "nonsense",
        ] {
            assert!(
                matches!(HttpTarget::new("GET", bad), Err(Error::InvalidRequest(_))),
                "{bad}"
            );
        }
    }
}
