//! Public JSON Web Keys: the canonical form and RFC 7638 thumbprint of a
//! popkey key, and strict parsing of keys that arrive from outside.

use std::fmt;

use p256::ecdsa::signature::Verifier;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::alg::Algorithm;
use crate::b64;
use crate::error::{Error, Result};
use crate::text::clip;

/// Smallest RSA modulus popkey accepts, in bits (RFC 7518 §3.3).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus popkey accepts, in bits.
pub const MAX_RSA_BITS: usize = 8192;

const EC_PRIVATE: &[&str] = &["d"];
const RSA_PRIVATE: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth"];

/// A validated public key in JWK form: EC P-256 or RSA (2048–8192 bits).
///
/// Construction always validates, so a `PublicJwk` is a usable verifying key;
/// its canonical JSON and thumbprint are computed once.
#[derive(Clone)]
pub struct PublicJwk {
    key: KeyMaterial,
    canonical: String,
    thumbprint: String,
}

#[derive(Clone)]
enum KeyMaterial {
    Ec(p256::ecdsa::VerifyingKey),
    Rsa(RsaPublicKey),
}

impl PublicJwk {
    /// A JWK for a P-256 public key.
    pub fn from_p256(key: &p256::ecdsa::VerifyingKey) -> Self {
        Self::new(KeyMaterial::Ec(*key))
    }

    /// A JWK for an RSA public key; fails outside 2048–8192 bits.
    pub fn from_rsa(key: &RsaPublicKey) -> Result<Self> {
        check_rsa_size(key.n().bits())?;
        Ok(Self::new(KeyMaterial::Rsa(key.clone())))
    }

    /// A JWK for a P-256 point given as its two 32-byte affine coordinates.
    pub fn from_ec_coordinates(x: &[u8], y: &[u8]) -> Result<Self> {
        if x.len() != 32 || y.len() != 32 {
            return Err(Error::jwk(format!(
                "P-256 coordinates must be 32 bytes each, got {} and {}",
                x.len(),
                y.len()
            )));
        }
        let point = p256::EncodedPoint::from_affine_coordinates(x.into(), y.into(), false);
        let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point)
            .map_err(|_| Error::jwk("the x/y coordinates are not a point on P-256"))?;
        Ok(Self::from_p256(&key))
    }

    /// A JWK for an RSA key given as big-endian modulus and exponent bytes.
    pub fn from_rsa_components(n: &[u8], e: &[u8]) -> Result<Self> {
        let n = BigUint::from_bytes_be(n);
        let e = BigUint::from_bytes_be(e);
        check_rsa_size(n.bits())?;
        let key = RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS)
            .map_err(|err| Error::jwk(format!("unusable RSA public key: {err}")))?;
        Self::from_rsa(&key)
    }

    fn new(key: KeyMaterial) -> Self {
        let canonical = match &key {
            KeyMaterial::Ec(vk) => {
                let point = vk.to_encoded_point(false);
                // An uncompressed point from a valid key always has both coordinates.
                let (x, y) = match (point.x(), point.y()) {
                    (Some(x), Some(y)) => (b64::encode(x), b64::encode(y)),
                    _ => (String::new(), String::new()),
                };
                format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
            KeyMaterial::Rsa(pk) => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                b64::encode(pk.e().to_bytes_be()),
                b64::encode(pk.n().to_bytes_be())
            ),
        };
        let thumbprint = thumbprint_of_canonical(&canonical);
        PublicJwk {
            key,
            canonical,
            thumbprint,
        }
    }

    /// Parses and validates a public JWK from JSON text.
    ///
    /// Rejects duplicate members, private members (`d`, `p`, ...), key types
    /// other than `EC` and `RSA`, curves other than P-256, RSA moduli under
    /// 2048 bits, non-minimal integers and a `use` other than `sig`.
    pub fn parse(json: &str) -> Result<Self> {
        let map = crate::json::parse_object(json).map_err(Error::jwk)?;
        Self::from_map(&map)
    }

    /// Validates a JWK already parsed into a JSON object.
    pub fn from_json_value(value: &Value) -> Result<Self> {
        match value {
            Value::Object(map) => Self::from_map(map),
            other => Err(Error::jwk(format!(
                "expected a JSON object, found {}",
                crate::json::kind(other)
            ))),
        }
    }

    fn from_map(map: &Map<String, Value>) -> Result<Self> {
        let kty = str_member(map, "kty")?;
        match map.get("use") {
            None => {}
            Some(Value::String(u)) if u == "sig" => {}
            Some(_) => return Err(Error::jwk("`use` must be \"sig\" for a signing key")),
        }
        match kty {
            "EC" => {
                reject_private(map, EC_PRIVATE)?;
                let crv = str_member(map, "crv")?;
                if crv != "P-256" {
                    return Err(Error::jwk(format!(
                        "curve `{}` is not supported; only P-256",
                        clip(crv, 32)
                    )));
                }
                let x = b64_member(map, "x")?;
                let y = b64_member(map, "y")?;
                Self::from_ec_coordinates(&x, &y)
            }
            "RSA" => {
                reject_private(map, RSA_PRIVATE)?;
                let n = b64_member(map, "n")?;
                let e = b64_member(map, "e")?;
                for (name, v) in [("n", &n), ("e", &e)] {
                    if v.first() == Some(&0) || v.is_empty() {
                        return Err(Error::jwk(format!(
                            "`{name}` must be a minimal big-endian integer (no leading zero octets)"
                        )));
                    }
                }
                Self::from_rsa_components(&n, &e)
            }
            other => Err(Error::jwk(format!(
                "key type `{}` is not supported; only EC (P-256) and RSA",
                clip(other, 32)
            ))),
        }
    }

    /// The RFC 7638 canonical JSON: required members only, sorted, no whitespace.
    pub fn canonical_json(&self) -> &str {
        &self.canonical
    }

    /// The RFC 7638 SHA-256 thumbprint, base64url.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// `EC` or `RSA`.
    pub fn kty(&self) -> &'static str {
        match self.key {
            KeyMaterial::Ec(_) => "EC",
            KeyMaterial::Rsa(_) => "RSA",
        }
    }

    /// The RSA modulus size in bits, or `None` for an EC key.
    pub fn rsa_bits(&self) -> Option<usize> {
        match &self.key {
            KeyMaterial::Rsa(pk) => Some(pk.n().bits()),
            KeyMaterial::Ec(_) => None,
        }
    }

    /// Whether this key can verify `alg` signatures.
    pub fn fits(&self, alg: Algorithm) -> bool {
        matches!(
            (&self.key, alg),
            (KeyMaterial::Ec(_), Algorithm::ES256)
                | (KeyMaterial::Rsa(_), Algorithm::RS256 | Algorithm::PS256)
        )
    }

    /// The exact JWS signature length `alg` produces with this key.
    pub fn signature_len(&self) -> usize {
        match &self.key {
            KeyMaterial::Ec(_) => 64,
            KeyMaterial::Rsa(pk) => pk.size(),
        }
    }

    /// Verifies a JWS signature (`alg` over `message`; ECDSA as raw `r || s`).
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> Result<()> {
        if !self.fits(alg) {
            return Err(Error::AlgorithmMismatch(format!(
                "{alg} cannot be verified with an {} key",
                self.kty()
            )));
        }
        if signature.len() != self.signature_len() {
            return Err(Error::BadSignature(format!(
                "{alg} signature must be {} bytes, got {}",
                self.signature_len(),
                signature.len()
            )));
        }
        let ok = match (&self.key, alg) {
            (KeyMaterial::Ec(vk), _) => p256::ecdsa::Signature::from_slice(signature)
                .map_err(|_| ())
                .and_then(|sig| vk.verify(message, &sig).map_err(|_| ())),
            (KeyMaterial::Rsa(pk), Algorithm::RS256) => {
                let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(pk.clone());
                rsa::pkcs1v15::Signature::try_from(signature)
                    .map_err(|_| ())
                    .and_then(|sig| vk.verify(message, &sig).map_err(|_| ()))
            }
            (KeyMaterial::Rsa(pk), _) => {
                let vk = rsa::pss::VerifyingKey::<Sha256>::new(pk.clone());
                rsa::pss::Signature::try_from(signature)
                    .map_err(|_| ())
                    .and_then(|sig| vk.verify(message, &sig).map_err(|_| ()))
            }
        };
        ok.map_err(|()| Error::BadSignature(format!("{alg} signature does not match the key")))
    }

    /// The key as a SubjectPublicKeyInfo DER document.
    pub fn to_spki_der(&self) -> Result<Vec<u8>> {
        use spki::EncodePublicKey;
        let doc = match &self.key {
            KeyMaterial::Ec(vk) => vk.to_public_key_der(),
            KeyMaterial::Rsa(pk) => pk.to_public_key_der(),
        };
        doc.map(|d| d.as_bytes().to_vec())
            .map_err(|e| Error::jwk(format!("cannot encode SubjectPublicKeyInfo: {e}")))
    }
}

impl PartialEq for PublicJwk {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}
impl Eq for PublicJwk {}

impl fmt::Debug for PublicJwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicJwk")
            .field("kty", &self.kty())
            .field("thumbprint", &self.thumbprint)
            .finish()
    }
}

impl fmt::Display for PublicJwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl spki::EncodePublicKey for PublicJwk {
    fn to_public_key_der(&self) -> spki::Result<spki::Document> {
        match &self.key {
            KeyMaterial::Ec(vk) => vk.to_public_key_der(),
            KeyMaterial::Rsa(pk) => pk.to_public_key_der(),
        }
    }
}

/// The RFC 7638 thumbprint of an already canonical JWK: base64url(SHA-256(json)).
pub fn thumbprint_of_canonical(canonical_json: &str) -> String {
    b64::encode(Sha256::digest(canonical_json.as_bytes()))
}

fn check_rsa_size(bits: usize) -> Result<()> {
    if bits < MIN_RSA_BITS {
        return Err(Error::jwk(format!(
            "RSA modulus is {bits} bits; at least {MIN_RSA_BITS} are required"
        )));
    }
    if bits > MAX_RSA_BITS {
        return Err(Error::jwk(format!(
            "RSA modulus is {bits} bits; at most {MAX_RSA_BITS} are supported"
        )));
    }
    Ok(())
}

fn reject_private(map: &Map<String, Value>, names: &[&str]) -> Result<()> {
    if let Some(name) = names.iter().find(|n| map.contains_key(**n)) {
        return Err(Error::jwk(format!(
            "private member `{name}` present; a public JWK must not carry private key material"
        )));
    }
    Ok(())
}

fn str_member<'a>(map: &'a Map<String, Value>, name: &str) -> Result<&'a str> {
    match map.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(Error::jwk(format!(
            "`{name}` must be a string, found {}",
            crate::json::kind(other)
        ))),
        None => Err(Error::jwk(format!("missing required member `{name}`"))),
    }
}

fn b64_member(map: &Map<String, Value>, name: &str) -> Result<Vec<u8>> {
    b64::decode(str_member(map, name)?).map_err(|e| Error::jwk(format!("`{name}`: {e}")))
}
