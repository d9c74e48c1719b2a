//! `tpm:` URIs.

use std::path::PathBuf;

use super::{pairs, parse_alg, pct_string};
use crate::alg::Algorithm;
use crate::error::{Error, Result};
use crate::text::clip;

/// A TPM key: `tpm:handle=0x81…` or `tpm:path=…`, with `;tcti=…`,
/// `;auth-source=…` and `?alg=…` optional.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmUri {
    /// Where the key is.
    pub key: TpmKeyRef,
    /// The TCTI configuration string (`swtpm:host=…,port=…`,
    /// `device:/dev/tpmrm0`). When absent, `TPM2TOOLS_TCTI`, then `TCTI`,
    /// then `device:/dev/tpmrm0` (see docs/tpm.md).
    pub tcti: Option<String>,
    /// A file holding the key's authorization value (its bytes, one trailing
    /// newline ignored); without it the empty value is used.
    pub auth_source: Option<PathBuf>,
    /// The JWS algorithm for RSA keys, or for new keys.
    pub alg: Option<Algorithm>,
}

/// Where a TPM key is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TpmKeyRef {
    /// A persistent handle, `0x81000000`–`0x81FFFFFF`.
    Handle(u32),
    /// A `TSS2 PRIVATE KEY` PEM file.
    Path(PathBuf),
}

pub(super) fn parse_tpm(uri: &str, rest: &str) -> Result<TpmUri> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut key = None;
    let mut t = TpmUri {
        key: TpmKeyRef::Handle(0),
        tcti: None,
        auth_source: None,
        alg: None,
    };
    let both = || Error::uri(uri, "give handle= or path=, not both");
    for (name, value) in pairs(uri, path, ';')? {
        match name {
            "handle" => {
                if key.is_some() {
                    return Err(both());
                }
                key = Some(TpmKeyRef::Handle(parse_handle(uri, value)?));
            }
            "path" => {
                if key.is_some() {
                    return Err(both());
                }
                let p = pct_string(uri, name, value)?;
                if p.is_empty() {
                    return Err(Error::uri(uri, "path= is empty"));
                }
                key = Some(TpmKeyRef::Path(PathBuf::from(p)));
            }
            "tcti" => t.tcti = Some(pct_string(uri, name, value)?),
            "auth-source" => t.auth_source = Some(PathBuf::from(pct_string(uri, name, value)?)),
            "alg" => t.alg = Some(parse_alg(uri, value)?),
            other => {
                return Err(Error::uri(
                    uri,
                    format!(
                        "unknown tpm: attribute `{}`; known: handle, path, tcti, auth-source, alg",
                        clip(other, 40)
                    ),
                ))
            }
        }
    }
    for (name, value) in pairs(uri, query, '&')? {
        match name {
            "alg" if t.alg.is_none() => t.alg = Some(parse_alg(uri, value)?),
            other => {
                return Err(Error::uri(
                    uri,
                    format!(
                        "unknown or repeated tpm: query attribute `{}`; known: alg",
                        clip(other, 40)
                    ),
                ))
            }
        }
    }
    t.key = key.ok_or_else(|| {
        Error::uri(
            uri,
            "name the key with handle=0x81... or path=/path/key.pem",
        )
    })?;
    Ok(t)
}

fn parse_handle(uri: &str, text: &str) -> Result<u32> {
    let bad = || {
        Error::uri(
            uri,
            format!(
                "handle `{}` is not a persistent handle (0x81000000-0x81FFFFFF)",
                clip(text, 40)
            ),
        )
    };
    let hex = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .ok_or_else(bad)?;
    let h = u32::from_str_radix(hex, 16).map_err(|_| bad())?;
    if h >> 24 != 0x81 {
        return Err(bad());
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uri::KeyUri;

    #[test]
    fn tpm() {
        let KeyUri::Tpm(t) =
            KeyUri::parse("tpm:handle=0x81000100;tcti=swtpm:host=127.0.0.1,port=2321").unwrap()
        else {
            panic!()
        };
        assert_eq!(t.key, TpmKeyRef::Handle(0x8100_0100));
        assert_eq!(t.tcti.as_deref(), Some("swtpm:host=127.0.0.1,port=2321"));
    }
}
