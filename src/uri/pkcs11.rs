//! `pkcs11:` URIs (RFC 7512).

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use super::{pairs, parse_alg, pct_decode, pct_string};
use crate::alg::Algorithm;
use crate::error::{Error, Result};
use crate::text::clip;

/// An RFC 7512 PKCS#11 URI.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Pkcs11Uri {
    /// `token`: the token label.
    pub token: Option<String>,
    /// `manufacturer`: the token manufacturer ID.
    pub manufacturer: Option<String>,
    /// `model`: the token model.
    pub model: Option<String>,
    /// `serial`: the token serial number.
    pub serial: Option<String>,
    /// `slot-id`: the slot number.
    pub slot_id: Option<u64>,
    /// `object`: the key label (`CKA_LABEL`).
    pub object: Option<String>,
    /// `id`: the key ID (`CKA_ID`), raw bytes.
    pub id: Option<Vec<u8>>,
    /// `type`: the kind of object (`private`, `public`, `cert`,
    /// `secret-key` or `data`).
    pub object_type: Option<Pkcs11ObjectType>,
    /// `module-path`: the PKCS#11 module (shared library) to load.
    pub module_path: Option<PathBuf>,
    /// `pin-value`: the user PIN, inline (prefer `pin-source`).
    pub pin_value: Option<Zeroizing<String>>,
    /// `pin-source`: a file holding the user PIN.
    pub pin_source: Option<PathBuf>,
    /// `alg` (popkey): the JWS algorithm for RSA keys, or for new keys.
    pub alg: Option<Algorithm>,
}

/// The RFC 7512 `type` attribute: which kind of PKCS#11 object a URI names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Pkcs11ObjectType {
    /// `private`: a private key (`CKO_PRIVATE_KEY`), the only kind popkey signs with.
    Private,
    /// `public`: a public key (`CKO_PUBLIC_KEY`).
    Public,
    /// `cert`: a certificate (`CKO_CERTIFICATE`).
    Cert,
    /// `secret-key`: a secret key (`CKO_SECRET_KEY`).
    SecretKey,
    /// `data`: a data object (`CKO_DATA`).
    Data,
}

impl Pkcs11ObjectType {
    /// The RFC 7512 spelling: `private`, `public`, `cert`, `secret-key`, `data`.
    pub fn as_str(self) -> &'static str {
        match self {
            Pkcs11ObjectType::Private => "private",
            Pkcs11ObjectType::Public => "public",
            Pkcs11ObjectType::Cert => "cert",
            Pkcs11ObjectType::SecretKey => "secret-key",
            Pkcs11ObjectType::Data => "data",
        }
    }
}

impl fmt::Display for Pkcs11ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Pkcs11ObjectType {
    type Err = ();

    /// Parses the RFC 7512 spelling (exactly, lower case).
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        Ok(match s {
            "private" => Pkcs11ObjectType::Private,
            "public" => Pkcs11ObjectType::Public,
            "cert" => Pkcs11ObjectType::Cert,
            "secret-key" => Pkcs11ObjectType::SecretKey,
            "data" => Pkcs11ObjectType::Data,
            _ => return Err(()),
        })
    }
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Uri")
            .field("token", &self.token)
            .field("manufacturer", &self.manufacturer)
            .field("model", &self.model)
            .field("serial", &self.serial)
            .field("slot_id", &self.slot_id)
            .field("object", &self.object)
            .field("id", &self.id)
            .field("object_type", &self.object_type)
            .field("module_path", &self.module_path)
            .field("pin_value", &self.pin_value.as_ref().map(|_| "<redacted>"))
            .field("pin_source", &self.pin_source)
            .field("alg", &self.alg)
            .finish()
    }
}

pub(super) fn parse_pkcs11(uri: &str, rest: &str) -> Result<Pkcs11Uri> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut p = Pkcs11Uri::default();
    for (name, value) in pairs(uri, path, ';')? {
        match name {
            "token" => p.token = Some(pct_string(uri, name, value)?),
            "manufacturer" => p.manufacturer = Some(pct_string(uri, name, value)?),
            "model" => p.model = Some(pct_string(uri, name, value)?),
            "serial" => p.serial = Some(pct_string(uri, name, value)?),
            "object" => p.object = Some(pct_string(uri, name, value)?),
            "id" => p.id = Some(pct_decode(uri, value)?),
            "slot-id" => {
                p.slot_id = Some(pct_string(uri, name, value)?.parse().map_err(|_| {
                    Error::uri(uri, format!("slot-id `{}` is not a number", clip(value, 40)))
                })?)
            }
            "type" => {
                let t = pct_string(uri, name, value)?;
                p.object_type = Some(t.parse().map_err(|()| {
                    Error::uri(
                        uri,
                        format!(
                            "type `{}` is not one of private, public, cert, secret-key, data",
                            clip(&t, 40)
                        ),
                    )
                })?);
            }
            // RFC 7512 library attributes select a module; popkey picks the
            // module by module-path, so these are accepted and not used.
            "library-manufacturer" | "library-description" | "library-version"
            | "slot-description" | "slot-manufacturer" => {}
            other => {
                return Err(Error::uri(
                    uri,
                    format!(
                        "unknown pkcs11: path attribute `{}`; known: token, manufacturer, model, serial, slot-id, object, id, type",
                        clip(other, 40)
                    ),
                ))
            }
        }
    }
    for (name, value) in pairs(uri, query, '&')? {
        match name {
            "module-path" => p.module_path = Some(PathBuf::from(pct_string(uri, name, value)?)),
            "pin-value" => p.pin_value = Some(Zeroizing::new(pct_string(uri, name, value)?)),
            "pin-source" => {
                let src = pct_string(uri, name, value)?;
                let src = src.strip_prefix("file:").unwrap_or(&src).to_owned();
                p.pin_source = Some(PathBuf::from(src));
            }
            "alg" => p.alg = Some(parse_alg(uri, value)?),
            // RFC 7512 §2.3: module-name selects a module by name; ignored in
            // favour of module-path.
            "module-name" => {}
            other => {
                return Err(Error::uri(
                    uri,
                    format!(
                        "unknown pkcs11: query attribute `{}`; known: module-path, pin-value, pin-source, alg",
                        clip(other, 40)
                    ),
                ))
            }
        }
    }
    if p.pin_value.is_some() && p.pin_source.is_some() {
        return Err(Error::uri(uri, "give pin-value or pin-source, not both"));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use crate::uri::KeyUri;

    #[test]
    fn pkcs11_rfc7512() {
        let KeyUri::Pkcs11(p) = KeyUri::parse(
            "pkcs11:token=My%20Token;object=api;id=%01%02%ff;type=private;slot-id=3?module-path=/usr/lib/x.so&pin-value=1234",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(p.token.as_deref(), Some("My Token"));
        assert_eq!(p.id.as_deref(), Some(&[1u8, 2, 255][..]));
        assert_eq!(p.slot_id, Some(3));
        assert_eq!(p.object_type, Some(super::Pkcs11ObjectType::Private));
        assert_eq!(p.pin_value.as_deref().map(String::as_str), Some("1234"));
        assert!(!format!("{p:?}").contains("1234"));
    }
}
