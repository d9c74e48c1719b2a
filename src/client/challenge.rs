//! Parsing `WWW-Authenticate` and `Authentication-Info` (RFC 9110 §11):
//! what PoP and DPoP servers say when they want a nonce.

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
}
