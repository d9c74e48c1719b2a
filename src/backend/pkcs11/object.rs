//! Keys on a token: finding them, reading their public half and their
//! attributes, generating new ones.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::errors::{Ctx, Fail};
use crate::alg::Algorithm;
use crate::error::{Error, Pkcs11Error};
use crate::jwk::PublicJwk;

/// DER of the P-256 curve OID (1.2.840.10045.3.1.7), the `CKA_EC_PARAMS`
/// popkey writes and accepts.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// How a key is found again: its `CKA_ID` and/or `CKA_LABEL`.
#[derive(Clone, Debug, Default)]
pub(super) struct KeySelector {
    pub(super) id: Option<Vec<u8>>,
    pub(super) label: Option<String>,
}

impl KeySelector {
    fn template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut t = vec![Attribute::Class(class)];
        if let Some(id) = &self.id {
            t.push(Attribute::Id(id.clone()));
        }
        if let Some(label) = &self.label {
            t.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        t
    }

    pub(super) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(l) = &self.label {
            parts.push(format!("object={l}"));
        }
        if let Some(id) = &self.id {
            parts.push(format!("id={}", pct(id)));
        }
        if parts.is_empty() {
            "any private key".into()
        } else {
            parts.join(";")
        }
    }
}

/// Percent-encodes bytes the way RFC 7512 writes `id`.
pub(super) fn pct(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02x}")).collect()
}

/// The kind of key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Ec,
    Rsa,
}

/// What popkey knows about a private key on a token.
pub(super) struct KeyInfo {
    pub(super) handle: ObjectHandle,
    pub(super) kind: Kind,
    pub(super) id: Vec<u8>,
    pub(super) label: Option<String>,
    /// `CKA_SENSITIVE` and not `CKA_EXTRACTABLE`, as the token says.
    pub(super) non_exportable: bool,
    pub(super) jwk: PublicJwk,
    /// `CKA_ALLOWED_MECHANISMS`, empty when the token does not restrict.
    pub(super) allowed: Vec<MechanismType>,
}

/// The one private key `sel` matches on the token.
pub(super) fn find_private(
    session: &Session,
    sel: &KeySelector,
    token: &str,
) -> Result<ObjectHandle, Fail> {
    let found = session
        .find_objects(&sel.template(ObjectClass::PRIVATE_KEY))
        .ctx("search for the private key")?;
    match found.len() {
        1 => Ok(found[0]),
        0 => Err(Error::KeyNotFound(format!(
            "token `{token}` has no private key with {} (list them with `pkcs11-tool --list-objects --login`)",
            sel.describe()
        ))
        .into()),
        n => {
            let mut names = Vec::new();
            for h in found.iter().take(8) {
                if let Ok(attrs) =
                    session.get_attributes(*h, &[AttributeType::Label, AttributeType::Id])
                {
                    let (mut l, mut i) = (String::new(), String::new());
                    for a in attrs {
                        match a {
                            Attribute::Label(v) => l = String::from_utf8_lossy(&v).into_owned(),
                            Attribute::Id(v) => i = pct(&v),
                            _ => {}
                        }
                    }
                    names.push(format!("object={l};id={i}"));
                }
            }
            Err(Error::Pkcs11(Pkcs11Error::AmbiguousKey(format!(
                "{n} private keys on token `{token}` match {}: {}; add id= to the URI",
                sel.describe(),
                names.join(", ")
            )))
            .into())
        }
    }
}

/// Reads a private key's attributes and its public key.
pub(super) fn read_key(
    session: &Session,
    handle: ObjectHandle,
    token: &str,
) -> Result<KeyInfo, Fail> {
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::Id,
                AttributeType::Label,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Sign,
                AttributeType::AlwaysAuthenticate,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
                AttributeType::AllowedMechanisms,
            ],
        )
        .ctx("read the private key's attributes")?;
    let mut allowed = Vec::new();
    let mut key_type = None;
    let (mut id, mut label) = (Vec::new(), None);
    let (mut sensitive, mut extractable, mut sign, mut always_auth) = (false, true, true, false);
    let (mut modulus, mut exponent) = (None, None);
    for a in attrs {
        match a {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::Id(v) => id = v,
            Attribute::Label(v) => label = Some(String::from_utf8_lossy(&v).into_owned()),
            Attribute::Sensitive(b) => sensitive = b,
            Attribute::Extractable(b) => extractable = b,
            Attribute::Sign(b) => sign = b,
            Attribute::AlwaysAuthenticate(b) => always_auth = b,
            Attribute::Modulus(v) => modulus = Some(v),
            Attribute::PublicExponent(v) => exponent = Some(v),
            Attribute::AllowedMechanisms(v) => allowed = v,
            _ => {}
        }
    }
    let name = format!(
        "private key {} on token `{token}`",
        KeySelector {
            id: Some(id.clone()),
            label: label.clone()
        }
        .describe()
    );
    if !sign {
        return Err(
            Error::AlgorithmMismatch(format!("{name} has CKA_SIGN false; it cannot sign")).into(),
        );
    }
    if always_auth {
        return Err(Error::Backend {
            backend: "pkcs11",
            message: format!("{name} has CKA_ALWAYS_AUTHENTICATE set (a PIN per signature), which popkey does not support; use a key without it"),
        }
        .into());
    }
    let (kind, jwk) = match key_type {
        Some(t) if t == KeyType::EC => {
            (Kind::Ec, ec_public(session, &id, label.as_deref(), &name)?)
        }
        Some(t) if t == KeyType::RSA => {
            let jwk = match (modulus, exponent) {
                (Some(n), Some(e)) if !n.is_empty() && !e.is_empty() => {
                    PublicJwk::from_rsa_components(&n, &e)?
                }
                _ => rsa_public(session, &id, label.as_deref(), &name)?,
            };
            (Kind::Rsa, jwk)
        }
        Some(t) => {
            return Err(Error::AlgorithmMismatch(format!(
                "{name} is a {t} key; popkey signs with EC P-256 and RSA keys"
            ))
            .into())
        }
        None => {
            return Err(Error::KeyNotFound(format!("{name} does not say its CKA_KEY_TYPE")).into())
        }
    };
    Ok(KeyInfo {
        handle,
        kind,
        id,
        label,
        non_exportable: sensitive && !extractable,
        jwk,
        allowed,
    })
}

/// The public key object that goes with a private key: same `CKA_ID` (or,
/// for keys without one, same label).
fn public_object(
    session: &Session,
    id: &[u8],
    label: Option<&str>,
    key_type: KeyType,
    name: &str,
) -> Result<ObjectHandle, Fail> {
    let mut t = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(key_type),
    ];
    if !id.is_empty() {
        t.push(Attribute::Id(id.to_vec()));
    } else if let Some(l) = label {
        t.push(Attribute::Label(l.as_bytes().to_vec()));
    }
    let found = session.find_objects(&t).ctx("search for the public key")?;
    // Several public objects with one CKA_ID would be odd; the first one is
    // checked against the private key when the key is opened anyway.
    found.first().copied().ok_or_else(|| {
        Error::KeyNotFound(format!(
            "{name} has no public key object with the same CKA_ID, and popkey needs one to read the public key"
        ))
        .into()
    })
}

fn ec_public(
    session: &Session,
    id: &[u8],
    label: Option<&str>,
    name: &str,
) -> Result<PublicJwk, Fail> {
    let h = public_object(session, id, label, KeyType::EC, name)?;
    let attrs = session
        .get_attributes(h, &[AttributeType::EcParams, AttributeType::EcPoint])
        .ctx("read the public key")?;
    let (mut params, mut point) = (None, None);
    for a in attrs {
        match a {
            Attribute::EcParams(v) => params = Some(v),
            Attribute::EcPoint(v) => point = Some(v),
            _ => {}
        }
    }
    if params.as_deref().is_some_and(|p| p != P256_PARAMS) {
        return Err(Error::AlgorithmMismatch(format!(
            "{name} is not on curve P-256; ES256 needs P-256 (secp256r1 / prime256v1)"
        ))
        .into());
    }
    let point = point.ok_or_else(|| {
        Error::KeyNotFound(format!("{name}: its public key object has no CKA_EC_POINT"))
    })?;
    let raw = ec_point(&point).ok_or_else(|| Error::MalformedKey {
        source_name: name.to_owned(),
        reason: format!(
            "CKA_EC_POINT of {} bytes is not an uncompressed P-256 point (65 bytes raw, or wrapped in a DER OCTET STRING)",
            point.len()
        ),
    })?;
    Ok(PublicJwk::from_ec_coordinates(&raw[1..33], &raw[33..65])?)
}

/// `CKA_EC_POINT` is a DER OCTET STRING holding the point (PKCS#11 2.40;
/// SoftHSM: 67 bytes), but some tokens return the raw point (65 bytes).
/// Decided by length.
pub(super) fn ec_point(v: &[u8]) -> Option<&[u8]> {
    let raw = match v.len() {
        65 => v,
        67 if v[0] == 0x04 && v[1] == 65 => &v[2..],
        68 if v[0] == 0x04 && v[1] == 0x81 && v[2] == 65 => &v[3..],
        _ => return None,
    };
    (raw[0] == 0x04).then_some(raw)
}

fn rsa_public(
    session: &Session,
    id: &[u8],
    label: Option<&str>,
    name: &str,
) -> Result<PublicJwk, Fail> {
    let h = public_object(session, id, label, KeyType::RSA, name)?;
    let attrs = session
        .get_attributes(h, &[AttributeType::Modulus, AttributeType::PublicExponent])
        .ctx("read the public key")?;
    let (mut n, mut e) = (None, None);
    for a in attrs {
        match a {
            Attribute::Modulus(v) => n = Some(v),
            Attribute::PublicExponent(v) => e = Some(v),
            _ => {}
        }
    }
    match (n, e) {
        (Some(n), Some(e)) => Ok(PublicJwk::from_rsa_components(&n, &e)?),
        _ => Err(Error::KeyNotFound(format!(
            "{name}: its public key object lacks CKA_MODULUS or CKA_PUBLIC_EXPONENT"
        ))
        .into()),
    }
}

/// True when any object on the token carries `label`.
pub(super) fn label_in_use(session: &Session, label: &str) -> Result<bool, Fail> {
    let found = session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .ctx("search for objects with the label")?;
    Ok(!found.is_empty())
}

/// True when any object on the token carries `id`.
pub(super) fn id_in_use(session: &Session, id: &[u8]) -> Result<bool, Fail> {
    let found = session
        .find_objects(&[Attribute::Id(id.to_vec())])
        .ctx("search for objects with the id")?;
    Ok(!found.is_empty())
}

/// Generates a non-exportable signing key pair: private key `CKA_TOKEN`,
/// `CKA_PRIVATE`, `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, `CKA_SIGN`, and
/// `CKA_ALLOWED_MECHANISMS` when the token takes it; public key `CKA_VERIFY`.
/// Returns (public, private).
pub(super) fn generate(
    session: &Session,
    alg: Algorithm,
    rsa_bits: usize,
    id: &[u8],
    label: &str,
) -> Result<(ObjectHandle, ObjectHandle), Fail> {
    let label = label.as_bytes().to_vec();
    let (mechanism, allowed, mut public) = match alg {
        Algorithm::ES256 => (
            Mechanism::EccKeyPairGen,
            MechanismType::ECDSA,
            vec![Attribute::EcParams(P256_PARAMS.to_vec())],
        ),
        Algorithm::RS256 | Algorithm::PS256 => (
            Mechanism::RsaPkcsKeyPairGen,
            if alg == Algorithm::RS256 {
                MechanismType::SHA256_RSA_PKCS
            } else {
                MechanismType::SHA256_RSA_PKCS_PSS
            },
            vec![
                Attribute::ModulusBits((rsa_bits as u64).into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            ],
        ),
    };
    public.extend([
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.clone()),
    ]);
    let mut private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label),
    ];
    private.push(Attribute::AllowedMechanisms(vec![allowed]));
    match session.generate_key_pair(&mechanism, &public, &private) {
        Ok(pair) => Ok(pair),
        // A token that does not know CKA_ALLOWED_MECHANISMS: go without.
        Err(CkError::Pkcs11(RvError::AttributeTypeInvalid | RvError::TemplateInconsistent, _)) => {
            private.pop();
            session
                .generate_key_pair(&mechanism, &public, &private)
                .ctx("generate a key pair")
        }
        Err(e) => Err(Fail::Ck("generate a key pair", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_wrapped_or_raw() {
        let mut raw = vec![0x04];
        raw.extend([7u8; 64]);
        assert_eq!(ec_point(&raw), Some(&raw[..]));
        let mut wrapped = vec![0x04, 65];
        wrapped.extend(&raw);
        assert_eq!(ec_point(&wrapped), Some(&raw[..]));
        let mut long = vec![0x04, 0x81, 65];
        long.extend(&raw);
        assert_eq!(ec_point(&long), Some(&raw[..]));
        assert_eq!(ec_point(&raw[..64]), None);
        let mut compressed = raw.clone();
        compressed[0] = 0x02;
        assert_eq!(ec_point(&compressed), None);
    }
}
