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
        // Written in place (one allocation): the members in RFC 7638 order.
        let canonical = match key.raw() {
            RawPublic::Ec { x, y } => {
                let mut c = String::with_capacity(128);
                c.push_str(r#"{"crv":"P-256","kty":"EC","x":""#);
                b64::encode_into(x, &mut c);
                c.push_str(r#"","y":""#);
                b64::encode_into(y, &mut c);
                c.push_str(r#""}"#);
                c
            }
            RawPublic::Rsa { n, e } => {
                let mut c = String::with_capacity(40 + (n.len() + e.len()).div_ceil(3) * 4);
                c.push_str(r#"{"e":""#);
                b64::encode_into(e, &mut c);
                c.push_str(r#"","kty":"RSA","n":""#);
                b64::encode_into(n, &mut c);
                c.push_str(r#""}"#);
                c
            }
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
        Self::from_map(&map, false)
    }

    /// [`PublicJwk::from_json_value`] for keys that arrive in proofs: the
    /// same checks, in the same order, but a key seen recently (the same
    /// client signs many requests) reuses its validated point and its
    /// thumbprint instead of validating and hashing them again. Only keys
    /// that passed every check are remembered.
    pub(crate) fn from_json_value_cached(value: &Value) -> Result<Self> {
        match value {
            Value::Object(map) => Self::from_map(map, true),
            other => Err(Error::jwk(format!(
                "expected a JSON object, found {}",
                crate::json::kind(other)
            ))),
        }
    }

    /// Validates a JWK already parsed into a JSON object.
    pub fn from_json_value(value: &Value) -> Result<Self> {
        match value {
            Value::Object(map) => Self::from_map(map, false),
            other => Err(Error::jwk(format!(
                "expected a JSON object, found {}",
                crate::json::kind(other)
            ))),
        }
    }

    fn from_map(map: &Map<String, Value>, cached: bool) -> Result<Self> {
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
                if !cached || x.len() != 32 || y.len() != 32 {
                    return Self::from_ec_coordinates(&x, &y);
                }
                let mut id = [0u8; 65];
                id[0] = b'E';
                id[1..33].copy_from_slice(&x);
                id[33..].copy_from_slice(&y);
                recent::get_or_insert(&id, || Self::from_ec_coordinates(&x, &y))
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
                if !cached || e.len() > 8 {
                    return Self::from_rsa_components(&n, &e);
                }
                let mut id = Vec::with_capacity(2 + e.len() + n.len());
                id.extend_from_slice(&[b'R', e.len() as u8]);
                id.extend_from_slice(&e);
                id.extend_from_slice(&n);
                recent::get_or_insert(&id, || Self::from_rsa_components(&n, &e))
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
        self.verify_digest(alg, &crate::crypto::sha256(message), signature)
    }

    /// [`PublicJwk::verify`] given the SHA-256 of the message.
    pub(crate) fn verify_digest(
        &self,
        alg: Algorithm,
        digest: &[u8; 32],
        signature: &[u8],
    ) -> Result<()> {
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
        if self.key.verify_digest(alg, digest, signature) {
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

/// Public keys validated recently, by their raw material (`E`, x, y or
/// `R`, length of e, e, n): a small bounded cache shared by every verifier
/// of the process. A shard that fills up is emptied (keys from an attacker
/// sending a new key each time only cost the validation they would cost
/// anyway).
mod recent {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    use super::PublicJwk;
    use crate::error::Result;

    const SHARDS: usize = 8;
    const PER_SHARD: usize = 128;

    type Shard = Mutex<HashMap<Box<[u8]>, PublicJwk>>;

    fn shards() -> &'static [Shard] {
        static SHARDS_CELL: OnceLock<Vec<Shard>> = OnceLock::new();
        SHARDS_CELL.get_or_init(|| (0..SHARDS).map(|_| Mutex::default()).collect())
    }

    pub(super) fn get_or_insert(
        id: &[u8],
        build: impl FnOnce() -> Result<PublicJwk>,
    ) -> Result<PublicJwk> {
        // The last material byte (of y or n) is as good as random.
        let shard = &shards()[usize::from(id.last().copied().unwrap_or(0)) % SHARDS];
        if let Ok(map) = shard.lock() {
            if let Some(key) = map.get(id) {
                return Ok(key.clone());
            }
        }
        let key = build()?;
        if let Ok(mut map) = shard.lock() {
            if map.len() >= PER_SHARD {
                map.clear();
            }
            map.insert(id.into(), key.clone());
        }
        Ok(key)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A key the cache knows is still checked member by member: a private
    /// member, another `use` or a changed curve is refused as before, and a
    /// cached key is the same key (thumbprint, canonical form).
    #[test]
    fn cached_keys_keep_every_check() {
        let key = crate::PopKey::open("mem:").unwrap();
        let jwk: Value = serde_json::from_str(key.public_jwk().canonical_json()).unwrap();
        let first = PublicJwk::from_json_value_cached(&jwk).unwrap();
        let again = PublicJwk::from_json_value_cached(&jwk).unwrap();
        let plain = PublicJwk::from_json_value(&jwk).unwrap();
        for k in [&first, &again] {
            assert_eq!(k.thumbprint(), plain.thumbprint());
            assert_eq!(k.canonical_json(), plain.canonical_json());
        }
        for (member, value) in [
            ("d", Value::from("AAAA")),
            ("use", Value::from("enc")),
            ("crv", Value::from("P-384")),
            ("x", Value::from(1)),
        ] {
            let mut bad = jwk.clone();
            bad[member] = value;
            let cached = PublicJwk::from_json_value_cached(&bad).unwrap_err();
            let uncached = PublicJwk::from_json_value(&bad).unwrap_err();
            assert_eq!(cached.to_string(), uncached.to_string(), "{member}");
        }
        // A point off the curve is refused, and refused again (never cached).
        let mut off = jwk.clone();
        off["y"] = Value::from(b64::encode([7u8; 32]));
        for _ in 0..2 {
            assert!(PublicJwk::from_json_value_cached(&off).is_err());
        }
    }
}
