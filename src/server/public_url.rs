//! Which URL the client addressed: the public URL a proof is signed for,
//! rebuilt from the request as the server sees it.

use std::net::IpAddr;
use std::str::FromStr;

use super::rejection::Rejection;

/// An IP network in CIDR notation (`10.0.0.0/8`, `fd00::/8`), or a single
/// address (`127.0.0.1`, `::1`): the addresses of proxies whose forwarding
/// headers are believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside this network. An IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_match(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_match(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_match(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if net[..full] != ip[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (net[full] & mask) == (ip[full] & mask)
}

/// A text that is not an address or CIDR network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpNetParseError(String);

impl std::fmt::Display for IpNetParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` is not an IP address or CIDR network (like 10.0.0.0/8 or ::1)",
            self.0
        )
    }
}

impl std::error::Error for IpNetParseError {}

impl FromStr for IpNet {
    type Err = IpNetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IpNetParseError(crate::text::clip(s, 64).to_string());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl From<IpAddr> for IpNet {
    fn from(addr: IpAddr) -> Self {
        IpNet {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }
}

/// How the public URL is rebuilt (see [`super::ResourceServerBuilder::public_origin`]
/// and [`super::ResourceServerBuilder::trusted_proxies`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct UrlRules {
    /// `scheme://host[:port]` and a path prefix without trailing `/`.
    pub(crate) origin: Option<(String, String)>,
    pub(crate) trusted: Vec<IpNet>,
}

impl UrlRules {
    /// Parses an explicit public origin (`https://api.example.com`, with an
    /// optional path prefix such as `https://example.com/api`).
    pub(crate) fn parse_origin(origin: &str) -> Result<(String, String), String> {
        let u = url::Url::parse(origin).map_err(|e| format!("public origin: {e}"))?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err("public origin: must be an http(s) URL with a host".into());
        }
        if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
            return Err("public origin: no query, fragment or user info".into());
        }
        let mut base = format!("{}://{}", u.scheme(), u.host_str().unwrap_or_default());
        if let Some(port) = u.port() {
            base.push_str(&format!(":{port}"));
        }
        let prefix = u.path().trim_end_matches('/').to_owned();
        Ok((base, prefix))
    }

    fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|p| self.trusted.iter().any(|n| n.contains(p)))
    }

    /// The public URL of a request: `uri` as the server received it
    /// (origin-form or absolute), its headers and the peer's address.
    pub(crate) fn public_url(
        &self,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<String, Rejection> {
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        if !path_and_query.starts_with('/') {
            return Err(Rejection::invalid_request());
        }
        if let Some((base, prefix)) = &self.origin {
            return Ok(format!("{base}{prefix}{path_and_query}"));
        }
        let mut scheme = uri.scheme_str().unwrap_or("http").to_ascii_lowercase();
        let mut host = match uri.authority() {
            Some(a) => Some(a.as_str().to_owned()),
            None => single(headers, http::header::HOST)?.map(str::to_owned),
        };
        let mut prefix = String::new();
        if self.trusts(peer) {
            let forwarded = forwarded_last(headers)?;
            let (f_proto, f_host) = match &forwarded {
                Some(f) => (f.proto.clone(), f.host.clone()),
                None => (
                    last_value(headers, "x-forwarded-proto")?,
                    last_value(headers, "x-forwarded-host")?,
                ),
            };
            if let Some(p) = f_proto {
                scheme = p.to_ascii_lowercase();
            }
            if let Some(h) = f_host {
                host = Some(h);
            }
            if let Some(p) = last_value(headers, "x-forwarded-prefix")? {
                let p = p.trim_end_matches('/');
                if !p.is_empty() {
                    if !p.starts_with('/') || p.contains(['?', '#', ' ']) {
                        return Err(Rejection::invalid_request());
                    }
                    prefix = p.to_owned();
                }
            }
        }
        if !matches!(scheme.as_str(), "http" | "https") {
            return Err(Rejection::invalid_request());
        }
        let host = host.ok_or_else(Rejection::invalid_request)?;
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~:[]%!$&'()*+,;=".contains(&b))
        {
            return Err(Rejection::invalid_request());
        }
        let url = format!("{scheme}://{host}{prefix}{path_and_query}");
        // The host must be all of the authority: nothing that re-shapes the URL.
        match url::Url::parse(&url) {
            Ok(u) if u.host_str().is_some() && u.username().is_empty() => Ok(url),
            _ => Err(Rejection::invalid_request()),
        }
    }
}

/// The one value of header `name`, if present; several → 400.
fn single(
    headers: &http::HeaderMap,
    name: http::header::HeaderName,
) -> Result<Option<&str>, Rejection> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| Rejection::invalid_request()),
        _ => Err(Rejection::invalid_request()),
    }
}

/// The last comma-separated element over all values of header `name`: the
/// one the nearest proxy wrote.
fn last_value(headers: &http::HeaderMap, name: &str) -> Result<Option<String>, Rejection> {
    // Only the very last element counts: when it is empty, nothing is
    // taken (never an earlier element, which a client may have written).
    let Some(v) = headers.get_all(name).iter().next_back() else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| Rejection::invalid_request())?;
    let item = v.rsplit(',').next().unwrap_or_default().trim();
    Ok((!item.is_empty()).then(|| item.to_owned()))
}

#[derive(Default)]
struct ForwardedElement {
    proto: Option<String>,
    host: Option<String>,
}

/// The last element of the RFC 7239 `Forwarded` header(s), if any.
fn forwarded_last(headers: &http::HeaderMap) -> Result<Option<ForwardedElement>, Rejection> {
    let Some(v) = headers.get_all(http::header::FORWARDED).iter().next_back() else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| Rejection::invalid_request())?;
    // The last element (the nearest proxy's), even if it is empty.
    let element = split_unquoted(v, ',').pop().unwrap_or_default();
    let mut out = ForwardedElement::default();
    for pair in split_unquoted(element, ';') {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value)
            .to_owned();
        match name.trim().to_ascii_lowercase().as_str() {
            "proto" => out.proto = Some(value),
            "host" => out.host = Some(value),
            _ => {}
        }
    }
    Ok(Some(out))
}

fn split_unquoted(value: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in value.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&value[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&value[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (n, v) in list {
            h.append(
                http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn cidrs() {
        let n: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
        let n: IpNet = "::1".parse().unwrap();
        assert!(n.contains("::1".parse().unwrap()));
        assert!(!n.contains("127.0.0.1".parse().unwrap()));
        let n: IpNet = "192.168.1.128/25".parse().unwrap();
        assert!(n.contains("192.168.1.200".parse().unwrap()));
        assert!(!n.contains("192.168.1.100".parse().unwrap()));
        assert!("0.0.0.0/0"
            .parse::<IpNet>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "x/8", "::/129", "10.0.0.0/"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rules() {
        let uri: http::Uri = "/v1/items?x=1".parse().unwrap();
        let peer = Some("10.0.0.5".parse().unwrap());
        let h = headers(&[
            ("host", "app:8080"),
            ("x-forwarded-host", "evil.example, api.example.com"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-prefix", "/api/"),
        ]);
        let open = UrlRules::default();
        assert_eq!(
            open.public_url(&uri, &h, peer).unwrap(),
            "http://app:8080/v1/items?x=1"
        );
        let trusting = UrlRules {
            origin: None,
            trusted: vec!["10.0.0.0/8".parse().unwrap()],
        };
        assert_eq!(
            trusting.public_url(&uri, &h, peer).unwrap(),
            "https://api.example.com/api/v1/items?x=1"
        );
        assert_eq!(
            trusting
                .public_url(&uri, &h, Some("192.0.2.1".parse().unwrap()))
                .unwrap(),
            "http://app:8080/v1/items?x=1"
        );
        assert_eq!(
            trusting.public_url(&uri, &h, None).unwrap(),
            "http://app:8080/v1/items?x=1"
        );
        let f = headers(&[
            ("host", "app"),
            (
                "forwarded",
                r#"for=1.2.3.4;host=evil, for="[::1]";proto=https;host="api.example.com:8443""#,
            ),
            ("x-forwarded-host", "ignored.example"),
        ]);
        assert_eq!(
            trusting.public_url(&uri, &f, peer).unwrap(),
            "https://api.example.com:8443/v1/items?x=1"
        );
        let fixed = UrlRules {
            origin: Some(UrlRules::parse_origin("https://API.example.com:443/base/").unwrap()),
            trusted: Vec::new(),
        };
        assert_eq!(
            fixed.public_url(&uri, &h, peer).unwrap(),
            "https://api.example.com/base/v1/items?x=1"
        );
        for bad in [
            &[("host", "a/b")][..],
            &[("host", "user@evil")][..],
            &[("host", "a"), ("host", "b")][..],
            &[][..],
        ] {
            assert!(open.public_url(&uri, &headers(bad), None).is_err());
        }
        assert!(trusting
            .public_url(
                &uri,
                &headers(&[("host", "a"), ("x-forwarded-proto", "ftp")]),
                peer
            )
            .is_err());
        // An empty last element takes nothing, not the client's earlier one.
        let h = headers(&[("host", "app"), ("x-forwarded-host", "evil.example, ")]);
        assert_eq!(
            trusting.public_url(&uri, &h, peer).unwrap(),
            "http://app/v1/items?x=1"
        );
        let h = headers(&[("host", "app"), ("forwarded", "host=evil.example, ")]);
        assert_eq!(
            trusting.public_url(&uri, &h, peer).unwrap(),
            "http://app/v1/items?x=1"
        );
        assert!(UrlRules::parse_origin("ftp://x").is_err());
        assert!(UrlRules::parse_origin("https://x/?q").is_err());
    }
}
