//! The crypto seam: every signature, key, hash and MAC popkey computes goes
//! through this module, and only this module chooses a provider.
//!
//! * `aws-lc-rs` (default): AWS-LC through `aws-lc-rs`, the provider rustls
//!   ships by default. Constant-time RSA and ECDSA, assembly-optimised.
//! * `rust-crypto`: the pure-Rust fallback (`p256`, `rsa`, `sha2`, `hmac`)
//!   for targets where AWS-LC cannot build. Its RSA signing is **not
//!   constant-time** (RUSTSEC-2023-0071, the Marvin attack on the `rsa`
//!   crate); software RSA keys should use the default provider.
//!
//! With both features on, aws-lc-rs is used (the other provider is still
//! compiled and its unit tests run, so both stay honest). Protocol code
//! never names a provider: it calls [`PublicKey`], [`SigningKey`],
//! [`sha256`], [`Sha256`], [`hmac_sha256`] and [`constant_time_eq`].

use zeroize::Zeroizing;

use crate::alg::Algorithm;

/// The largest RSA modulus popkey accepts, in bits (larger keys cost
/// attacker-chosen CPU to verify).
pub(crate) const MAX_RSA_BITS: usize = 8192;

// aws-lc-rs when its feature is on; RustCrypto otherwise, so a build with
// `default-features = false` still has a provider (pure Rust).
#[cfg(feature = "aws-lc-rs")]
mod aws_lc;
#[cfg(any(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
#[cfg_attr(feature = "aws-lc-rs", allow(dead_code))]
mod rust_crypto;

#[cfg(feature = "aws-lc-rs")]
type Active = aws_lc::AwsLc;
#[cfg(not(feature = "aws-lc-rs"))]
type Active = rust_crypto::RustCrypto;

/// The crypto provider this build of popkey uses: `"aws-lc-rs"` (the
/// default) or `"rust-crypto"` (the pure-Rust fallback, used by
/// every build without the `aws-lc-rs` feature).
pub fn crypto_provider() -> &'static str {
    <Active as Provider>::NAME
}

/// What a crypto provider implements. Errors are plain messages: the
/// callers turn them into the crate's typed errors.
pub(crate) trait Provider {
    /// Shown in diagnostics and benchmarks.
    const NAME: &'static str;
    /// A P-256 public key ready to verify.
    type EcPublic: Clone + Send + Sync + 'static;
    /// An RSA public key ready to verify.
    type RsaPublic: Clone + Send + Sync + 'static;
    /// A P-256 private key.
    type EcPrivate: Send + Sync + 'static;
    /// An RSA private key.
    type RsaPrivate: Send + Sync + 'static;
    /// A streaming SHA-256.
    type Hasher: Clone;

    /// Validates an uncompressed SEC1 point (`04 || x || y`, 65 bytes).
    fn ec_public(point: &[u8; 65]) -> Result<Self::EcPublic, String>;
    /// An RSA key from big-endian modulus and exponent (no leading zeros).
    fn rsa_public(n: &[u8], e: &[u8]) -> Result<Self::RsaPublic, String>;
    /// ES256 over the SHA-256 `digest` of the message, raw `r || s`
    /// signature.
    fn verify_es256(key: &Self::EcPublic, digest: &[u8; 32], sig: &[u8]) -> bool;
    /// RS256 (PKCS#1 v1.5) or PS256 (PSS, MGF1-SHA256, 32-byte salt) over
    /// the SHA-256 `digest` of the message.
    fn verify_rsa(key: &Self::RsaPublic, pss: bool, digest: &[u8; 32], sig: &[u8]) -> bool;

    /// A new P-256 key.
    fn ec_generate() -> Result<Self::EcPrivate, String>;
    /// A new RSA key of `bits` bits.
    fn rsa_generate(bits: usize) -> Result<Self::RsaPrivate, String>;
    /// A P-256 key from PKCS#8 or SEC1 (`ECPrivateKey`) DER.
    fn ec_from_der(der: &[u8]) -> Result<Self::EcPrivate, String>;
    /// An RSA key from PKCS#8 DER.
    fn rsa_from_pkcs8(der: &[u8]) -> Result<Self::RsaPrivate, String>;
    /// An RSA key from PKCS#1 (`RSAPrivateKey`) DER.
    fn rsa_from_pkcs1(der: &[u8]) -> Result<Self::RsaPrivate, String>;
    /// PKCS#8 v1 DER of a P-256 key.
    fn ec_to_pkcs8(key: &Self::EcPrivate) -> Result<Zeroizing<Vec<u8>>, String>;
    /// PKCS#8 v1 DER of an RSA key.
    fn rsa_to_pkcs8(key: &Self::RsaPrivate) -> Result<Zeroizing<Vec<u8>>, String>;
    /// The public point of a P-256 key, uncompressed.
    fn ec_public_point(key: &Self::EcPrivate) -> [u8; 65];
    /// Modulus and exponent of an RSA key, big-endian without leading zeros.
    fn rsa_public_components(key: &Self::RsaPrivate) -> (Vec<u8>, Vec<u8>);
    /// ES256 signature, raw `r || s`.
    fn sign_es256(key: &Self::EcPrivate, msg: &[u8]) -> Result<[u8; 64], String>;
    /// RS256 or PS256 signature (modulus length).
    fn sign_rsa(key: &Self::RsaPrivate, pss: bool, msg: &[u8]) -> Result<Vec<u8>, String>;

    /// A fresh SHA-256.
    fn sha256_new() -> Self::Hasher;
    /// Feeds the hasher.
    fn sha256_update(h: &mut Self::Hasher, data: &[u8]);
    /// The digest.
    fn sha256_finish(h: Self::Hasher) -> [u8; 32];
    /// HMAC-SHA256 of the concatenation of `parts`.
    fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32];
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(data);
    h.finish()
}

/// A streaming SHA-256.
#[derive(Clone)]
pub(crate) struct Sha256(<Active as Provider>::Hasher);

impl Sha256 {
    /// An empty hash.
    pub(crate) fn new() -> Self {
        Sha256(Active::sha256_new())
    }

    /// Adds `data`.
    pub(crate) fn update(&mut self, data: &[u8]) {
        Active::sha256_update(&mut self.0, data);
    }

    /// The digest.
    pub(crate) fn finish(self) -> [u8; 32] {
        Active::sha256_finish(self.0)
    }
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    Active::hmac_sha256(key, parts)
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A validated public key (P-256 or RSA), prepared for verification by the
/// active provider. Keeps its raw form for JWK and SPKI encoding.
#[derive(Clone)]
pub(crate) struct PublicKey {
    inner: PublicInner,
}

#[derive(Clone)]
enum PublicInner {
    Ec {
        point: [u8; 65],
        key: <Active as Provider>::EcPublic,
    },
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        key: <Active as Provider>::RsaPublic,
    },
}

/// The raw parts of a public key.
pub(crate) enum RawPublic<'a> {
    /// P-256 affine coordinates, 32 bytes each.
    Ec { x: &'a [u8], y: &'a [u8] },
    /// RSA modulus and exponent, big-endian, no leading zeros.
    Rsa { n: &'a [u8], e: &'a [u8] },
}

impl PublicKey {
    /// A P-256 key from its affine coordinates (32 bytes each); fails when
    /// the point is not on the curve.
    pub(crate) fn ec(x: &[u8], y: &[u8]) -> Result<Self, String> {
        if x.len() != 32 || y.len() != 32 {
            return Err(format!(
                "P-256 coordinates must be 32 bytes each, got {} and {}",
                x.len(),
                y.len()
            ));
        }
        let mut point = [0u8; 65];
        point[0] = 4;
        point[1..33].copy_from_slice(x);
        point[33..].copy_from_slice(y);
        let key = Active::ec_public(&point)
            .map_err(|_| "the x/y coordinates are not a point on P-256".to_string())?;
        Ok(PublicKey {
            inner: PublicInner::Ec { point, key },
        })
    }

    /// An RSA key from big-endian modulus and exponent. The exponent must be
    /// odd, at least 3 and below 2^33; leading zero octets are stripped.
    /// The modulus size is checked by the caller.
    pub(crate) fn rsa(n: &[u8], e: &[u8]) -> Result<Self, String> {
        let n = strip_zeros(n);
        let e = strip_zeros(e);
        if n.last().is_none_or(|b| b & 1 == 0) {
            return Err("the RSA modulus must be odd".into());
        }
        let e_value = e.iter().try_fold(0u64, |acc, b| {
            acc.checked_mul(256).map(|v| v | u64::from(*b))
        });
        match e_value {
            Some(v) if (3..(1u64 << 33)).contains(&v) && v & 1 == 1 => {}
            _ => {
                return Err("the RSA public exponent must be odd, at least 3 and below 2^33".into())
            }
        }
        let key = Active::rsa_public(n, e)?;
        Ok(PublicKey {
            inner: PublicInner::Rsa {
                n: n.to_vec(),
                e: e.to_vec(),
                key,
            },
        })
    }

    /// The raw parts.
    pub(crate) fn raw(&self) -> RawPublic<'_> {
        match &self.inner {
            PublicInner::Ec { point, .. } => RawPublic::Ec {
                x: &point[1..33],
                y: &point[33..],
            },
            PublicInner::Rsa { n, e, .. } => RawPublic::Rsa { n, e },
        }
    }

    /// The RSA modulus size in bits; `None` for P-256.
    pub(crate) fn rsa_bits(&self) -> Option<usize> {
        match &self.inner {
            PublicInner::Rsa { n, .. } => Some(bit_len(n)),
            PublicInner::Ec { .. } => None,
        }
    }

    /// The length of a JWS signature made with this key.
    pub(crate) fn signature_len(&self) -> usize {
        match &self.inner {
            PublicInner::Ec { .. } => 64,
            PublicInner::Rsa { n, .. } => bit_len(n).div_ceil(8),
        }
    }

    /// Verifies a JWS signature (ECDSA as raw `r || s`) given the SHA-256
    /// of the signed message (every algorithm popkey verifies hashes with
    /// SHA-256, and callers use the digest again). `false` also when `alg`
    /// does not fit the key.
    pub(crate) fn verify_digest(&self, alg: Algorithm, digest: &[u8; 32], sig: &[u8]) -> bool {
        match (&self.inner, alg) {
            (PublicInner::Ec { key, .. }, Algorithm::ES256) => {
                Active::verify_es256(key, digest, sig)
            }
            (PublicInner::Rsa { key, .. }, Algorithm::RS256) => {
                Active::verify_rsa(key, false, digest, sig)
            }
            (PublicInner::Rsa { key, .. }, Algorithm::PS256) => {
                Active::verify_rsa(key, true, digest, sig)
            }
            _ => false,
        }
    }

    /// SubjectPublicKeyInfo DER (RFC 5480 for P-256, RFC 3279 for RSA).
    pub(crate) fn spki_der(&self) -> Vec<u8> {
        match &self.inner {
            PublicInner::Ec { point, .. } => {
                let mut out = EC_SPKI_PREFIX.to_vec();
                out.extend_from_slice(point);
                out
            }
            PublicInner::Rsa { n, e, .. } => {
                let mut body = der_integer(n);
                body.extend(der_integer(e));
                let rsa_public_key = der_tlv(0x30, &body);
                let mut bits = vec![0u8];
                bits.extend(rsa_public_key);
                let mut spki = RSA_ALGORITHM_ID.to_vec();
                spki.extend(der_tlv(0x03, &bits));
                der_tlv(0x30, &spki)
            }
        }
    }
}

/// `SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (66 bytes) ...`
const EC_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// `SEQUENCE { rsaEncryption, NULL }`
const RSA_ALGORITHM_ID: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}

fn bit_len(be: &[u8]) -> usize {
    let be = strip_zeros(be);
    match be.first() {
        Some(first) => be.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes = len.to_be_bytes();
    let skip = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len() - 1);
    let mut out = vec![0x80 | (bytes.len() - skip) as u8];
    out.extend_from_slice(&bytes[skip..]);
    out
}

fn der_tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(body.len()));
    out.extend_from_slice(body);
    out
}

/// A non-negative DER INTEGER from big-endian bytes.
fn der_integer(be: &[u8]) -> Vec<u8> {
    let be = strip_zeros(be);
    let mut body = Vec::with_capacity(be.len() + 1);
    if be.first().is_none_or(|b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(be);
    der_tlv(0x02, &body)
}

/// Converts a DER `ECDSA-Sig-Value` (`SEQUENCE { INTEGER r, INTEGER s }`)
/// for P-256 into raw `r || s`. Strict DER: minimal lengths and integers,
/// nothing after the sequence, `0 < r, s < 2^256`.
#[cfg_attr(not(feature = "pkcs11"), allow(dead_code))]
pub(crate) fn ecdsa_der_to_raw(der: &[u8]) -> Option<[u8; 64]> {
    fn take_tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        if t != tag {
            return None;
        }
        let (&l, rest) = rest.split_first()?;
        let (len, rest) = match l {
            0..=0x7f => (usize::from(l), rest),
            0x81 => {
                let (&l2, rest) = rest.split_first()?;
                if l2 < 0x80 {
                    return None;
                }
                (usize::from(l2), rest)
            }
            _ => return None,
        };
        if rest.len() < len {
            return None;
        }
        Some(rest.split_at(len))
    }
    fn integer(body: &[u8], out: &mut [u8]) -> Option<()> {
        let first = *body.first()?;
        if first & 0x80 != 0 {
            return None; // negative
        }
        let value = if first == 0 {
            let second = *body.get(1)?;
            if second & 0x80 == 0 {
                return None; // not minimal
            }
            &body[1..]
        } else {
            body
        };
        if value.len() > out.len() || value.iter().all(|&b| b == 0) {
            return None;
        }
        let pad = out.len() - value.len();
        out[pad..].copy_from_slice(value);
        Some(())
    }
    let (seq, trailing) = take_tlv(der, 0x30)?;
    if !trailing.is_empty() {
        return None;
    }
    let (r, rest) = take_tlv(seq, 0x02)?;
    let (s, rest) = take_tlv(rest, 0x02)?;
    if !rest.is_empty() {
        return None;
    }
    let mut out = [0u8; 64];
    integer(r, &mut out[..32])?;
    integer(s, &mut out[32..])?;
    Some(out)
}

/// The salt length of an RSA-PSS (MGF1-SHA256) signature over `msg`, or
/// `None` when `sig` is not such a signature for `key`.
///
/// A diagnostic only: it tells a TPM that salts PSS with the maximum length
/// from one that uses the 32 bytes JWS requires. Whether a PS256 signature
/// is accepted is always decided by the provider ([`PublicKey::verify_digest`]).
/// The RSA public operation here is plain modular exponentiation on public
/// values; nothing secret is involved.
#[cfg_attr(not(feature = "tpm"), allow(dead_code))]
pub(crate) fn pss_salt_len(key: &PublicKey, msg: &[u8], sig: &[u8]) -> Option<usize> {
    let PublicInner::Rsa { n, e, .. } = &key.inner else {
        return None;
    };
    let mod_bits = bit_len(n);
    if sig.len() != mod_bits.div_ceil(8) {
        return None;
    }
    let n_int = rsa::BigUint::from_bytes_be(n);
    let s_int = rsa::BigUint::from_bytes_be(sig);
    if s_int >= n_int {
        return None;
    }
    let m = s_int
        .modpow(&rsa::BigUint::from_bytes_be(e), &n_int)
        .to_bytes_be();
    // EMSA-PSS-VERIFY (RFC 8017 §9.1.2) with hLen = 32, emBits = modBits - 1.
    let em_bits = mod_bits - 1;
    let em_len = em_bits.div_ceil(8);
    if m.len() > em_len || em_len < 32 + 2 {
        return None;
    }
    let mut em = vec![0u8; em_len - m.len()];
    em.extend_from_slice(&m);
    if em[em_len - 1] != 0xbc {
        return None;
    }
    let (masked_db, rest) = em.split_at(em_len - 33);
    let h = &rest[..32];
    let top_bits = 8 * em_len - em_bits;
    let top_mask = 0xffu8.checked_shr(top_bits as u32).unwrap_or(0);
    if masked_db[0] & !top_mask != 0 {
        return None;
    }
    let mut db = masked_db.to_vec();
    let mut counter = 0u32;
    let mut offset = 0;
    while offset < db.len() {
        let mut mgf = Sha256::new();
        mgf.update(h);
        mgf.update(&counter.to_be_bytes());
        for (d, m) in db[offset..].iter_mut().zip(mgf.finish()) {
            *d ^= m;
        }
        offset += 32;
        counter += 1;
    }
    db[0] &= top_mask;
    let one = db.iter().position(|&b| b != 0)?;
    if db[one] != 1 {
        return None;
    }
    let salt = &db[one + 1..];
    let mut check = Sha256::new();
    check.update(&[0u8; 8]);
    check.update(&sha256(msg));
    check.update(salt);
    constant_time_eq(&check.finish(), h).then_some(salt.len())
}

/// A software private key (P-256 or RSA) of the active provider.
pub(crate) struct SigningKey {
    inner: PrivateInner,
    public: PublicKey,
}

enum PrivateInner {
    Ec(<Active as Provider>::EcPrivate),
    Rsa(Box<<Active as Provider>::RsaPrivate>),
}

/// The key formats [`SigningKey::from_der`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PrivateKeyFormat {
    /// PKCS#8 `PrivateKeyInfo` (`PRIVATE KEY`), P-256 or RSA.
    Pkcs8,
    /// SEC1 `ECPrivateKey` (`EC PRIVATE KEY`).
    Sec1,
    /// PKCS#1 `RSAPrivateKey` (`RSA PRIVATE KEY`).
    Pkcs1,
}

impl SigningKey {
    /// A new P-256 key.
    pub(crate) fn generate_p256() -> Result<Self, String> {
        Self::from_ec(Active::ec_generate()?)
    }

    /// A new RSA key; `bits` is 2048, 3072 or 4096.
    pub(crate) fn generate_rsa(bits: usize) -> Result<Self, String> {
        if !matches!(bits, 2048 | 3072 | 4096) {
            return Err(format!(
                "RSA-{bits} is not offered; use 2048, 3072 or 4096 bits"
            ));
        }
        Self::from_rsa(Active::rsa_generate(bits)?)
    }

    /// Decodes a private key from DER in `format`.
    pub(crate) fn from_der(der: &[u8], format: PrivateKeyFormat) -> Result<Self, String> {
        match format {
            PrivateKeyFormat::Sec1 => Self::from_ec(
                Active::ec_from_der(der)
                    .map_err(|e| format!("not a P-256 SEC1 private key: {e}"))?,
            ),
            PrivateKeyFormat::Pkcs1 => Self::from_rsa(
                Active::rsa_from_pkcs1(der)
                    .map_err(|e| format!("not a PKCS#1 RSA private key: {e}"))?,
            ),
            PrivateKeyFormat::Pkcs8 => match pkcs8_algorithm(der) {
                Some(Pkcs8Kind::Ec) => Self::from_ec(
                    Active::ec_from_der(der)
                        .map_err(|e| format!("not a P-256 PKCS#8 private key: {e}"))?,
                ),
                Some(Pkcs8Kind::Rsa) => Self::from_rsa(
                    Active::rsa_from_pkcs8(der)
                        .map_err(|e| format!("not a usable RSA PKCS#8 private key: {e}"))?,
                ),
                None => Err(
                    "not a P-256 or RSA PKCS#8 private key; popkey reads EC P-256 and RSA keys"
                        .into(),
                ),
            },
        }
    }

    fn from_ec(key: <Active as Provider>::EcPrivate) -> Result<Self, String> {
        let point = Active::ec_public_point(&key);
        let public = PublicKey::ec(&point[1..33], &point[33..])?;
        Ok(SigningKey {
            inner: PrivateInner::Ec(key),
            public,
        })
    }

    fn from_rsa(key: <Active as Provider>::RsaPrivate) -> Result<Self, String> {
        let (n, e) = Active::rsa_public_components(&key);
        let public = PublicKey::rsa(&n, &e)?;
        Ok(SigningKey {
            inner: PrivateInner::Rsa(Box::new(key)),
            public,
        })
    }

    /// The public half.
    pub(crate) fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Whether this is an RSA key.
    pub(crate) fn is_rsa(&self) -> bool {
        matches!(self.inner, PrivateInner::Rsa(_))
    }

    /// PKCS#8 v1 DER (zeroized on drop).
    pub(crate) fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, String> {
        match &self.inner {
            PrivateInner::Ec(k) => Active::ec_to_pkcs8(k),
            PrivateInner::Rsa(k) => Active::rsa_to_pkcs8(k),
        }
    }

    /// A JWS signature with `alg` (ECDSA as raw `r || s`).
    pub(crate) fn sign(&self, alg: Algorithm, msg: &[u8]) -> Result<Vec<u8>, String> {
        match (&self.inner, alg) {
            (PrivateInner::Ec(k), Algorithm::ES256) => Ok(Active::sign_es256(k, msg)?.to_vec()),
            (PrivateInner::Rsa(k), Algorithm::RS256) => Active::sign_rsa(k, false, msg),
            (PrivateInner::Rsa(k), Algorithm::PS256) => Active::sign_rsa(k, true, msg),
            _ => Err(format!("this key cannot sign {alg}")),
        }
    }
}

enum Pkcs8Kind {
    Ec,
    Rsa,
}

/// The key algorithm a PKCS#8 document names (its `AlgorithmIdentifier`
/// OID), without decoding the key.
fn pkcs8_algorithm(der: &[u8]) -> Option<Pkcs8Kind> {
    const EC_OID: [u8; 9] = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const RSA_OID: [u8; 11] = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    // PrivateKeyInfo ::= SEQUENCE { version INTEGER, algorithm SEQUENCE { OID, ... }, ... }
    let body = der_body(der, 0x30)?;
    let (version, rest) = der_split(body, 0x02)?;
    if version.len() != 1 || version[0] > 1 {
        return None;
    }
    let (alg, _) = der_split(rest, 0x30)?;
    if alg.starts_with(&EC_OID) {
        Some(Pkcs8Kind::Ec)
    } else if alg.starts_with(&RSA_OID) {
        Some(Pkcs8Kind::Rsa)
    } else {
        None
    }
}

/// The contents of one TLV with `tag` at the start of `input`, and the rest.
fn der_split(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&l, rest) = rest.split_first()?;
    let (len, rest) = if l < 0x80 {
        (usize::from(l), rest)
    } else {
        let n = usize::from(l & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

fn der_body(input: &[u8], tag: u8) -> Option<&[u8]> {
    der_split(input, tag).map(|(body, _)| body)
}

#[cfg(test)]
mod tests;
