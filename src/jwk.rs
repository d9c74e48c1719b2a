//! Public JSON Web Keys: the canonical form and RFC 7638 thumbprint of a
//! popkey key, and strict parsing of keys that arrive from outside.

use std::fmt;

use rsa::traits::PublicKeyParts;
use rsa::RsaPublicKey;
use serde_json::{Map, Value};

use crate::alg::Algorithm;
use crate::b64;
use crate::crypto::{self, RawPublic};
use crate::error::{Error, Result};
use crate::text::clip;

/// Smallest RSA modulus popkey accepts, in bits (RFC 7518 §3.3).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus popkey accepts, in bits.
pub const MAX_RSA_BITS: usize = crate::crypto::MAX_RSA_BITS;

const EC_PRIVATE: &[&str] = &["d"];
const RSA_PRIVATE: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth"];

/// A validated public key in JWK form: EC P-256 or RSA (2048–8192 bits).
///
/// Construction always validates, so a `PublicJwk` is a usable verifying key;
/// its canonical JSON and thumbprint are computed once.
#[derive(Clone)]
pub struct PublicJwk {
    key: crypto::PublicKey,
    canonical: String,
    thumbprint: String,
}

impl PublicJwk {
    /// A JWK for a P-256 public key (from the RustCrypto `p256` crate).
    pub fn from_p256(key: &p256::ecdsa::VerifyingKey) -> Result<Self> {
        let point = key.to_encoded_point(false);
        match (point.x(), point.y()) {
            (Some(x), Some(y)) => Self::from_ec_coordinates(x, y),
            _ => Err(Error::jwk("the P-256 key has no affine coordinates")),
        }
    }

    /// A JWK for an RSA public key (from the RustCrypto `rsa` crate); fails
    /// outside 2048–8192 bits.
    pub fn from_rsa(key: &RsaPublicKey) -> Result<Self> {
        Self::from_rsa_components(&key.n().to_bytes_be(), &key.e().to_bytes_be())
    }

    /// A JWK for a P-256 point given as its two 32-byte affine coordinates.
    pub fn from_ec_coordinates(x: &[u8], y: &[u8]) -> Result<Self> {
        crypto::PublicKey::ec(x, y)
            .map(Self::new)
            .map_err(Error::jwk)
    }

    /// A JWK for an RSA key given as big-endian modulus and exponent bytes.
    pub fn from_rsa_components(n: &[u8], e: &[u8]) -> Result<Self> {
        let first = n.iter().position(|&b| b != 0).unwrap_or(n.len());
        let n = &n[first..];
        let bits = n
            .first()
            .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
        check_rsa_size(bits)?;
        crypto::PublicKey::rsa(n, e)
            .map(Self::new)
            .map_err(|err| Error::jwk(format!("unusable RSA public key: {err}")))
    }

    /// Wraps a key the crypto seam validated; RSA keys must be 2048–8192 bits.
    pub(crate) fn from_crypto(key: &crypto::PublicKey) -> Result<Self> {
        if let Some(bits) = key.rsa_bits() {
            check_rsa_size(bits)?;
        }
        Ok(Self::new(key.clone()))
    }

    fn new(key: crypto::PublicKey) -> Self {
        let canonical = match key.raw() {
            RawPublic::Ec { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64::encode(x),
                b64::encode(y)
            ),
            RawPublic::Rsa { n, e } => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                b64::encode(e),
                b64::encode(n)
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
        match self.key.raw() {
            RawPublic::Ec { .. } => "EC",
            RawPublic::Rsa { .. } => "RSA",
        }
    }

    /// The RSA modulus size in bits, or `None` for an EC key.
    pub fn rsa_bits(&self) -> Option<usize> {
        self.key.rsa_bits()
    }

    /// Whether this key can verify `alg` signatures.
    pub fn fits(&self, alg: Algorithm) -> bool {
        matches!(
            (self.key.raw(), alg),
            (RawPublic::Ec { .. }, Algorithm::ES256)
                | (RawPublic::Rsa { .. }, Algorithm::RS256 | Algorithm::PS256)
        )
    }

    /// The exact JWS signature length `alg` produces with this key.
    pub fn signature_len(&self) -> usize {
        self.key.signature_len()
    }

    /// Verifies a JWS signature (`alg` over `message`; ECDSA as raw `r || s`).
    ///
    /// The crate's crypto provider does the work: aws-lc-rs by default,
    /// RustCrypto with only the `rust-crypto` feature.
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
        if self.key.verify(alg, message, signature) {
            Ok(())
        } else {
            Err(Error::BadSignature(format!(
                "{alg} signature does not match the key"
            )))
        }
    }

    /// The key as a SubjectPublicKeyInfo DER document.
    pub fn to_spki_der(&self) -> Result<Vec<u8>> {
        Ok(self.key.spki_der())
    }

    /// The key the crypto seam verifies with.
    #[cfg_attr(not(feature = "tpm"), allow(dead_code))]
    pub(crate) fn crypto_key(&self) -> &crypto::PublicKey {
        &self.key
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
        spki::Document::try_from(self.key.spki_der()).map_err(spki::Error::from)
    }
}

/// The RFC 7638 thumbprint of an already canonical JWK: base64url(SHA-256(json)).
pub fn thumbprint_of_canonical(canonical_json: &str) -> String {
    b64::encode(crypto::sha256(canonical_json.as_bytes()))
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
