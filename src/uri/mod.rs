//! Key URIs: one parser for every backend.
//!
//! This module holds the scheme dispatch, the shared helpers and the
//! `mem:`/`file:` schemes; `pkcs11.rs` and `tpm.rs` hold theirs.
//!
//! | scheme | example |
//! |---|---|
//! | `mem:` | `mem:`, `mem:?alg=PS256&rotate=8h` |
//! | `file:` | `file:/etc/popkey/key.pem`, `file:///etc/popkey/key.pem?alg=PS256` |
//! | `pkcs11:` | `pkcs11:token=popkey;object=api?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/pin` (RFC 7512) |
//! | `tpm:` | `tpm:handle=0x81000100`, `tpm:path=/var/lib/popkey/key.pem;tcti=swtpm:host=127.0.0.1,port=2321` |
//!
//! Every scheme takes an optional `alg` (`ES256`, `RS256`, `PS256`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::alg::Algorithm;
use crate::error::{Error, Result};
use crate::text::clip;

mod pkcs11;
mod tpm;

use self::pkcs11::parse_pkcs11;
pub use self::pkcs11::{Pkcs11ObjectType, Pkcs11Uri};
use self::tpm::parse_tpm;
pub use self::tpm::{TpmKeyRef, TpmUri};

/// Which backend holds a key.
///
/// Serialized (and displayed) as its [`as_str`](BackendKind::as_str)
/// spelling: `mem`, `file`, `pkcs11`, `tpm`, `custom`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// A software key generated in memory (`mem:`).
    Mem,
    /// A software key in a PKCS#8 PEM file (`file:`).
    File,
    /// A key in a PKCS#11 token (`pkcs11:`).
    Pkcs11,
    /// A key in a TPM 2.0 (`tpm:`).
    Tpm,
    /// A caller-supplied [`crate::PopCryptoProvider`]
    /// ([`crate::PopKey::from_provider`]).
    Custom,
}

impl BackendKind {
    /// The stable lower-case name: `mem`, `file`, `pkcs11`, `tpm` or
    /// `custom` (also the URI scheme, where there is one).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Mem => "mem",
            BackendKind::File => "file",
            BackendKind::Pkcs11 => "pkcs11",
            BackendKind::Tpm => "tpm",
            BackendKind::Custom => "custom",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for BackendKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Longest key URI accepted.
const MAX_URI_LEN: usize = 4096;

/// A parsed key URI.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyUri {
    /// A key generated in memory when opened.
    Mem(MemUri),
    /// A PKCS#8 PEM key file.
    File(FileUri),
    /// A key in a PKCS#11 token (RFC 7512).
    Pkcs11(Pkcs11Uri),
    /// A key in a TPM 2.0.
    Tpm(TpmUri),
}

/// `mem:?alg=…&rotate=…&bits=…`
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MemUri {
    /// Algorithm of generated keys (ES256 when absent).
    pub alg: Option<Algorithm>,
    /// Replace the key with a new one this often (MSAL rotates every 8 hours).
    pub rotate: Option<Duration>,
    /// RSA modulus size for RS256/PS256 (2048 when absent).
    pub bits: Option<usize>,
}

/// `file:/path/key.pem?alg=…&bits=…`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileUri {
    /// The key file.
    pub path: PathBuf,
    /// Algorithm; for RSA files it chooses RS256 (default) or PS256.
    pub alg: Option<Algorithm>,
    /// RSA modulus size when creating (2048 when absent).
    pub bits: Option<usize>,
}

impl KeyUri {
    /// Parses a key URI.
    ///
    /// ```
    /// use popkey::{Algorithm, KeyUri};
    /// let KeyUri::Mem(m) = KeyUri::parse("mem:?alg=PS256&rotate=8h")? else { unreachable!() };
    /// assert_eq!(m.alg, Some(Algorithm::PS256));
    /// assert_eq!(m.rotate, Some(std::time::Duration::from_secs(8 * 3600)));
    /// # Ok::<(), popkey::Error>(())
    /// ```
    pub fn parse(uri: &str) -> Result<Self> {
        if uri.len() > MAX_URI_LEN {
            let start: String = uri.chars().take(64).collect();
            return Err(Error::uri(
                &start,
                format!("longer than {MAX_URI_LEN} bytes"),
            ));
        }
        if uri.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Error::uri(
                uri,
                "contains spaces or control characters; percent-encode them",
            ));
        }
        let (scheme, rest) = uri.split_once(':').ok_or_else(|| {
            Error::uri(uri, "no scheme; expected one of mem:, file:, pkcs11:, tpm:")
        })?;
        match scheme.to_ascii_lowercase().as_str() {
            "mem" => parse_mem(uri, rest).map(KeyUri::Mem),
            "file" => parse_file(uri, rest).map(KeyUri::File),
            "pkcs11" => parse_pkcs11(uri, rest).map(KeyUri::Pkcs11),
            "tpm" => parse_tpm(uri, rest).map(KeyUri::Tpm),
            _ => Err(Error::uri(
                uri,
                format!(
                    "unknown scheme `{}`; expected one of mem:, file:, pkcs11:, tpm:",
                    scheme.chars().take(16).collect::<String>()
                ),
            )),
        }
    }

    /// The backend that serves this URI.
    pub fn backend(&self) -> BackendKind {
        match self {
            KeyUri::Mem(_) => BackendKind::Mem,
            KeyUri::File(_) => BackendKind::File,
            KeyUri::Pkcs11(_) => BackendKind::Pkcs11,
            KeyUri::Tpm(_) => BackendKind::Tpm,
        }
    }

    /// The `alg` the URI asks for, if any.
    pub fn alg(&self) -> Option<Algorithm> {
        match self {
            KeyUri::Mem(m) => m.alg,
            KeyUri::File(f) => f.alg,
            KeyUri::Pkcs11(p) => p.alg,
            KeyUri::Tpm(t) => t.alg,
        }
    }
}

/// Splits `a=b` pairs on `sep`, rejecting empties and duplicates.
pub(super) fn pairs<'a>(uri: &str, text: &'a str, sep: char) -> Result<Vec<(&'a str, &'a str)>> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    if text.is_empty() {
        return Ok(out);
    }
    for part in text.split(sep) {
        let (name, value) = part.split_once('=').ok_or_else(|| {
            Error::uri(
                uri,
                format!("attribute `{}` has no `=value`", clip(part, 40)),
            )
        })?;
        if name.is_empty() {
            return Err(Error::uri(uri, "an attribute has an empty name"));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(Error::uri(
                uri,
                format!("attribute `{}` appears more than once", clip(name, 40)),
            ));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// Decodes RFC 3986 percent-encoding into bytes.
pub(crate) fn pct_decode(uri: &str, text: &str) -> Result<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::uri(uri, "a `%` is not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

pub(super) fn pct_string(uri: &str, name: &str, text: &str) -> Result<String> {
    String::from_utf8(pct_decode(uri, text)?)
        .map_err(|_| Error::uri(uri, format!("`{name}` is not UTF-8 after percent-decoding")))
}

pub(super) fn parse_alg(uri: &str, v: &str) -> Result<Algorithm> {
    v.parse().map_err(|_| {
        Error::uri(
            uri,
            format!("alg `{}` is not ES256, RS256 or PS256", clip(v, 40)),
        )
    })
}

fn parse_bits(uri: &str, v: &str) -> Result<usize> {
    match v.parse::<usize>() {
        Ok(b @ (2048 | 3072 | 4096)) => Ok(b),
        _ => Err(Error::uri(
            uri,
            format!("bits `{}` must be 2048, 3072 or 4096", clip(v, 40)),
        )),
    }
}

/// Parses `8h`, `30m`, `45s`, `1d` or a plain number of seconds.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let (num, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

fn parse_mem(uri: &str, rest: &str) -> Result<MemUri> {
    let query = match rest.split_once('?') {
        Some(("", q)) => q,
        None if rest.is_empty() => "",
        _ => return Err(Error::uri(uri, "mem: takes no path; write `mem:?alg=...`")),
    };
    let mut m = MemUri::default();
    for (name, value) in pairs(uri, query, '&')? {
        match name {
            "alg" => m.alg = Some(parse_alg(uri, value)?),
            "bits" => m.bits = Some(parse_bits(uri, value)?),
            "rotate" => {
                m.rotate = Some(parse_duration(value).ok_or_else(|| {
                    Error::uri(
                        uri,
                        format!(
                            "rotate `{}` is not a duration like 8h, 30m or 90s",
                            clip(value, 40)
                        ),
                    )
                })?)
            }
            other => {
                return Err(Error::uri(
                    uri,
                    format!(
                        "unknown mem: attribute `{}`; known: alg, rotate, bits",
                        clip(other, 40)
                    ),
                ))
            }
        }
    }
    if m.bits.is_some() && !m.alg.is_some_and(Algorithm::is_rsa) {
        return Err(Error::uri(uri, "bits applies to RS256 and PS256 keys only"));
    }
    Ok(m)
}

fn parse_file(uri: &str, rest: &str) -> Result<FileUri> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    // RFC 8089: file:/p, file:///p and file://localhost/p name the same file.
    let path = if let Some(auth_and_path) = path.strip_prefix("//") {
        let slash = auth_and_path.find('/').unwrap_or(auth_and_path.len());
        let (host, p) = auth_and_path.split_at(slash);
        if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
            return Err(Error::uri(
                uri,
                "file: URIs must name a local file (no host)",
            ));
        }
        p
    } else {
        path
    };
    if path.is_empty() {
        return Err(Error::uri(
            uri,
            "file: needs a path, e.g. file:/etc/popkey/key.pem",
        ));
    }
    let decoded = pct_string(uri, "path", path)?;
    let mut f = FileUri {
        path: PathBuf::from(decoded),
        alg: None,
        bits: None,
    };
    for (name, value) in pairs(uri, query, '&')? {
        match name {
            "alg" => f.alg = Some(parse_alg(uri, value)?),
            "bits" => f.bits = Some(parse_bits(uri, value)?),
            other => {
                return Err(Error::uri(
                    uri,
                    format!(
                        "unknown file: attribute `{}`; known: alg, bits",
                        clip(other, 40)
                    ),
                ))
            }
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_and_file() {
        assert_eq!(
            KeyUri::parse("mem:").unwrap(),
            KeyUri::Mem(MemUri::default())
        );
        let KeyUri::Mem(m) = KeyUri::parse("mem:?alg=RS256&bits=3072&rotate=30m").unwrap() else {
            panic!()
        };
        assert_eq!(
            (m.alg, m.bits, m.rotate),
            (
                Some(Algorithm::RS256),
                Some(3072),
                Some(Duration::from_secs(1800))
            )
        );
        for (text, path) in [
            ("file:/a/b.pem", "/a/b.pem"),
            ("file:///a/b.pem", "/a/b.pem"),
            ("file://localhost/a/b%20c.pem", "/a/b c.pem"),
            ("file:rel.pem?alg=PS256", "rel.pem"),
        ] {
            let KeyUri::File(f) = KeyUri::parse(text).unwrap() else {
                panic!()
            };
            assert_eq!(f.path, PathBuf::from(path));
        }
    }

    #[test]
    fn bad_uris_are_typed_errors() {
        for bad in [
            "",
            "nokey",
            "http://x",
            "mem:/path",
            "mem:?alg=HS256",
            "mem:?rotate=8x",
            "mem:?bits=2048",
            "mem:?alg=ES256&alg=ES256",
            "mem:?color=red",
            "file:",
            "file://host/a",
            "file:/a%zz",
            "pkcs11:token=a;token=b",
            "pkcs11:frob=1",
            "pkcs11:slot-id=x",
            "pkcs11:?pin-value=1&pin-source=/p",
            "tpm:",
            "tpm:handle=0x80000001",
            "tpm:handle=81000001",
            "tpm:handle=0x81000001;path=/k",
            "tpm:path=",
            "mem:?alg=ES256 x",
        ] {
            match KeyUri::parse(bad) {
                Err(Error::InvalidUri { .. }) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn long_uris_with_multibyte_characters_do_not_panic() {
        // Found by the key_uri fuzz target: the error message cut the URI at
        // byte 64, inside a multi-byte character.
        let uri = format!("pkcs11:{}{}", "a".repeat(55), "\u{10c70d}".repeat(2000));
        assert!(matches!(KeyUri::parse(&uri), Err(Error::InvalidUri { .. })));
    }

    #[test]
    fn redacts_pins() {
        assert_eq!(
            crate::text::redact("pkcs11:token=a?pin-value=1234&module-path=/m"),
            "pkcs11:token=a?pin-value=<redacted>&module-path=/m"
        );
        let err = KeyUri::parse("pkcs11:bogus=1?pin-value=secret").unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }
}
