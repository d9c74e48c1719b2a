//! The HTTP authentication headers of PoP and DPoP, both directions, in one
//! place for the client and the server side (RFC 9110 §11):
//!
//! * parsing `WWW-Authenticate` and `Authentication-Info` — what PoP and
//!   DPoP servers say when they want a nonce ([`parse_www_authenticate`],
//!   [`next_nonce`]);
//! * parsing `Authorization` — which scheme a request presents
//!   ([`parse_authorization`]);
//! * rendering challenges ([`render_pop_challenge`],
//!   [`render_dpop_challenge`], and any [`Challenge`] through its `Display`).
//!
//! The older path `popkey::client::challenge` re-exports the parsers;
//! `popkey::verify::{pop_challenge, dpop_challenge}` render a
//! `VerifyError` through these renderers.
//! This module knows headers only, no verifier, so the client and the
//! server both depend on it and it on neither.

/// One challenge: a scheme and its parameters (names lowercased).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The auth scheme, as sent (`PoP`, `DPoP`, `Bearer`).
    pub scheme: String,
    /// `name=value` parameters, names lowercased, quoted strings unescaped.
    pub params: Vec<(String, String)>,
    /// A token68 value, if the challenge carried one instead of parameters.
    pub token68: Option<String>,
}

impl Challenge {
    /// The value of parameter `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True when the scheme is `scheme` (case-insensitive).
    pub fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }
}

impl Challenge {
    /// A challenge for `scheme` with no parameters yet.
    pub fn new(scheme: &str) -> Self {
        Challenge {
            scheme: scheme.to_owned(),
            params: Vec::new(),
            token68: None,
        }
    }

    /// Adds parameter `name` (rendered as a quoted string).
    pub fn with_param(mut self, name: &str, value: &str) -> Self {
        self.params.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// Renders the challenge as a `WWW-Authenticate` value: `Scheme
/// name="value", …`. Values are quoted and escaped; characters that may
/// not appear in a header value are replaced by `?`.
impl std::fmt::Display for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.scheme)?;
        if let Some(t) = &self.token68 {
            return write!(f, " {}", quoted(t).trim_matches('"'));
        }
        for (i, (name, value)) in self.params.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{name}={}", quoted(value))?;
        }
        Ok(())
    }
}

/// The credentials of an `Authorization` header: `<scheme> <token>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// The scheme as sent (`DPoP`, `PoP`, `Bearer`, …).
    pub scheme: &'a str,
    /// The token after the scheme, surrounding spaces removed (may be empty).
    pub token: &'a str,
}

impl Credentials<'_> {
    /// True when the scheme is `scheme` (case-insensitive).
    pub fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never printed.
        f.debug_struct("Credentials")
            .field("scheme", &self.scheme)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Splits an `Authorization` value into scheme and token
/// (`DPoP eyJ…` → `DPoP`, `eyJ…`). `None` when the scheme is not an HTTP
/// token; the token may be empty.
///
/// ```
/// use popkey::auth_header::parse_authorization;
/// let c = parse_authorization("DPoP  eyJhbGciOi.x.y ").unwrap();
/// assert!(c.is("dpop"));
/// assert_eq!(c.token, "eyJhbGciOi.x.y");
/// assert!(parse_authorization("").is_none());
/// ```
pub fn parse_authorization(value: &str) -> Option<Credentials<'_>> {
    let value = value.trim_matches([' ', '\t']);
    let (scheme, token) = match value.find([' ', '\t']) {
        Some(i) => (&value[..i], value[i..].trim_matches([' ', '\t'])),
        None => (value, ""),
    };
    if scheme.is_empty() || !scheme.bytes().all(crate::http::is_tchar) {
        return None;
    }
    Some(Credentials { scheme, token })
}

/// Parses a `WWW-Authenticate` value, which may hold several challenges:
/// `PoP nonce="abc", DPoP error="use_dpop_nonce", algs="ES256 PS256"`.
/// Whatever cannot be understood is skipped; nothing panics.
pub fn parse_www_authenticate(value: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    for item in split_top_level(value) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        // `scheme [rest]` starts a challenge when the first word is not `name=`.
        let first_end = item.find([' ', '\t', '=']).unwrap_or(item.len());
        let starts_challenge = !item[first_end..].starts_with('=');
        if starts_challenge {
            let scheme = item[..first_end].to_owned();
            let rest = item[first_end..].trim();
            let mut ch = Challenge {
                scheme,
                params: Vec::new(),
                token68: None,
            };
            if !rest.is_empty() {
                match parse_param(rest) {
                    Some(p) => ch.params.push(p),
                    None => ch.token68 = Some(rest.to_owned()),
                }
            }
            out.push(ch);
        } else if let (Some(ch), Some(p)) = (out.last_mut(), parse_param(item)) {
            ch.params.push(p);
        }
    }
    out
}

/// The `nextnonce` of an `Authentication-Info` value, if any.
pub fn next_nonce(authentication_info: &str) -> Option<String> {
    split_top_level(authentication_info)
        .iter()
        .filter_map(|i| parse_param(i.trim()))
        .find(|(n, _)| n == "nextnonce")
        .map(|(_, v)| v)
}

/// Splits on commas outside quoted strings.
fn split_top_level(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// `name = value` or `name = "quoted"`; `None` if `text` is not one.
fn parse_param(text: &str) -> Option<(String, String)> {
    let (name, value) = text.split_once('=')?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(crate::http::is_tchar) {
        return None;
    }
    let value = value.trim();
    let value = if let Some(inner) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.chars();
        loop {
            match chars.next()? {
                '\\' => out.push(chars.next()?),
                '"' => break,
                c => out.push(c),
            }
        }
        if !chars.as_str().trim().is_empty() {
            return None;
        }
        out
    } else {
        if value.is_empty()
            || value.starts_with('=')
            || !value
                .bytes()
                .all(|b| crate::http::is_tchar(b) || b == b'/' || b == b'=')
        {
            return None;
        }
        value.to_owned()
    };
    Some((name.to_ascii_lowercase(), value))
}

/// Escapes a value for a quoted-string in an HTTP auth parameter.
pub(crate) fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            // Only visible ASCII may go into a header value; attacker-chosen
            // text (an `alg`, a claim) could carry anything else.
            c if c == ' ' || c.is_ascii_graphic() => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

/// The `WWW-Authenticate` value for a PoP (SHR) refusal: `PoP nonce="…"`
/// and, when there is an error, `error="invalid_token"` with
/// `error_description`. Clients such as MSAL read the nonce from it.
///
/// ```
/// use popkey::auth_header::render_pop_challenge;
/// assert_eq!(render_pop_challenge(None, None), "PoP");
/// assert_eq!(
///     render_pop_challenge(Some("n-1"), Some("url_mismatch")),
///     r#"PoP nonce="n-1", error="invalid_token", error_description="url_mismatch""#
/// );
/// ```
pub fn render_pop_challenge(nonce: Option<&str>, error_description: Option<&str>) -> String {
    let mut params = Vec::new();
    if let Some(n) = nonce {
        params.push(format!("nonce={}", quoted(n)));
    }
    if let Some(d) = error_description {
        params.push(r#"error="invalid_token""#.to_owned());
        params.push(format!("error_description={}", quoted(d)));
    }
    if params.is_empty() {
        "PoP".to_owned()
    } else {
        format!("PoP {}", params.join(", "))
    }
}

/// The `WWW-Authenticate` value for a DPoP refusal (RFC 9449 §7.1):
/// `DPoP error="…", error_description="…", algs="…"`. `error` is the RFC
/// 9449 code (`invalid_dpop_proof`, `use_dpop_nonce`, `invalid_token`).
///
/// ```
/// use popkey::{auth_header::render_dpop_challenge, Algorithm};
/// assert_eq!(
///     render_dpop_challenge("use_dpop_nonce", "nonce_required", &[Algorithm::ES256]),
///     r#"DPoP error="use_dpop_nonce", error_description="nonce_required", algs="ES256""#
/// );
/// ```
pub fn render_dpop_challenge(
    error: &str,
    error_description: &str,
    algs: &[crate::Algorithm],
) -> String {
    let algs: Vec<&str> = algs.iter().map(|a| a.as_str()).collect();
    format!(
        "DPoP error={}, error_description={}, algs={}",
        quoted(error),
        quoted(error_description),
        quoted(&algs.join(" "))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_challenges() {
        let c = parse_www_authenticate(
            r#"PoP nonce="a\"b", DPoP error="use_dpop_nonce", error_description="Authorization server requires nonce in DPoP proof", algs="ES256 PS256", Bearer realm=x"#,
        );
        assert_eq!(c.len(), 3, "{c:?}");
        assert!(c[0].is("pop"));
        assert_eq!(c[0].param("nonce"), Some("a\"b"));
        assert!(c[1].is("DPoP"));
        assert_eq!(c[1].param("error"), Some("use_dpop_nonce"));
        assert_eq!(c[1].param("algs"), Some("ES256 PS256"));
        assert_eq!(c[2].param("realm"), Some("x"));
    }

    #[test]
    fn token68_and_bare_schemes_and_junk() {
        let c = parse_www_authenticate("Basic dXNlcjpwYXNz==");
        assert_eq!(c[0].token68.as_deref(), Some("dXNlcjpwYXNz=="));
        let c = parse_www_authenticate("PoP, Bearer");
        assert_eq!(
            c.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(),
            ["PoP", "Bearer"]
        );
        assert!(parse_www_authenticate("").is_empty());
        let _ = parse_www_authenticate("\"\"\",,,==x=\"");
        let _ = parse_www_authenticate("a b c d=\"unterminated");
    }

    #[test]
    fn authentication_info() {
        assert_eq!(
            next_nonce(r#"nextnonce="n2", qop=auth"#).as_deref(),
            Some("n2")
        );
        assert_eq!(next_nonce("qop=auth"), None);
    }

    #[test]
    fn challenge_round_trip_and_authorization() {
        let c = Challenge::new("DPoP")
            .with_param("error", "use_dpop_nonce")
            .with_param("algs", "ES256 \"x\"\n");
        let text = c.to_string();
        assert_eq!(text, r#"DPoP error="use_dpop_nonce", algs="ES256 \"x\"?""#);
        let back = parse_www_authenticate(&text);
        assert_eq!(back[0].param("algs"), Some("ES256 \"x\"?"));
        assert_eq!(Challenge::new("PoP").to_string(), "PoP");
        assert!(parse_authorization("Bearer").is_some_and(|c| c.token.is_empty()));
        assert!(parse_authorization("Bé x").is_none());
        assert!(!format!("{:?}", parse_authorization("PoP secret").unwrap()).contains("secret"));
    }
}
