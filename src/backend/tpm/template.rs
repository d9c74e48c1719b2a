//! Public areas: the templates popkey creates keys from, and what it reads
//! back from a key's public area (the JWK, the attributes, the algorithm).

use tss_esapi::attributes::ObjectAttributes;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::{
    EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme, Public, PublicBuilder,
    PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder, RsaExponent, RsaScheme,
    SignatureScheme, SymmetricDefinitionObject,
};

use crate::alg::Algorithm;
use crate::error::{Error, Result};
use crate::jwk::PublicJwk;

fn template_error(e: tss_esapi::Error) -> Error {
    Error::Backend {
        backend: "tpm",
        message: format!("cannot build a key template: {e}"),
    }
}

/// The standard ECC P-256 storage primary key under the owner hierarchy:
/// the TCG template tpm2-openssl and tpm2-tss-engine use for parent
/// `0x40000001` (restricted decrypt, AES-128-CFB, noDA, empty unique), so a
/// key file made by either loads under the primary popkey creates.
pub(crate) fn storage_primary() -> Result<Public> {
    let attributes = ObjectAttributes::builder()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(template_error)?;
    let params = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()
    .map_err(template_error)?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(template_error)
}

/// The attributes of every key popkey creates: it never leaves this TPM
/// (fixedTPM, fixedParent), the TPM generated it (sensitiveDataOrigin), it
/// is used with its auth value (userWithAuth) and it only signs: no
/// decrypt, not restricted.
fn signing_attributes() -> Result<ObjectAttributes> {
    ObjectAttributes::builder()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .with_decrypt(false)
        .with_restricted(false)
        .build()
        .map_err(template_error)
}

fn sha256() -> HashScheme {
    HashScheme::new(HashingAlgorithm::Sha256)
}

/// The template of a new signing key. The key's scheme is pinned to the
/// algorithm (ECDSA, RSASSA or RSAPSS, all with SHA-256), so the TPM itself
/// refuses any other use of it.
pub(crate) fn signing_key(alg: Algorithm) -> Result<Public> {
    let builder = PublicBuilder::new()
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(signing_attributes()?);
    match alg {
        Algorithm::ES256 => builder
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new_unrestricted_signing_key(
                    EccScheme::EcDsa(sha256()),
                    EccCurve::NistP256,
                )
                .build()
                .map_err(template_error)?,
            )
            .with_ecc_unique_identifier(EccPoint::default()),
        Algorithm::RS256 | Algorithm::PS256 => {
            let scheme = if alg == Algorithm::PS256 {
                RsaScheme::RsaPss(sha256())
            } else {
                RsaScheme::RsaSsa(sha256())
            };
            builder
                .with_public_algorithm(PublicAlgorithm::Rsa)
                .with_rsa_parameters(
                    PublicRsaParametersBuilder::new_unrestricted_signing_key(
                        scheme,
                        RsaKeyBits::Rsa2048,
                        RsaExponent::default(),
                    )
                    .build()
                    .map_err(template_error)?,
                )
                .with_rsa_unique_identifier(PublicKeyRsa::default())
        }
    }
    .build()
    .map_err(template_error)
}

/// What popkey needs from a key's public area.
#[derive(Clone, Debug)]
pub(crate) struct KeyInfo {
    pub(crate) jwk: PublicJwk,
    pub(crate) alg: Algorithm,
    /// fixedTPM and fixedParent: the private key cannot be duplicated.
    pub(crate) non_exportable: bool,
    /// The scheme to pass to TPM2_Sign.
    pub(crate) scheme: SignatureScheme,
    /// RSA modulus length in bytes, or 32 for P-256.
    pub(crate) sig_part_len: usize,
}

/// Reads a public area: the public key, and whether this key can sign
/// `wanted` (or which algorithm it signs with when `wanted` is `None`).
/// `what` names the key in errors.
pub(crate) fn inspect(public: &Public, wanted: Option<Algorithm>, what: &str) -> Result<KeyInfo> {
    let attrs = public.object_attributes();
    let mismatch = |reason: String| Error::AlgorithmMismatch(format!("{what}: {reason}"));
    if !attrs.sign_encrypt() {
        return Err(mismatch(
            "the key does not have the `sign` attribute; it cannot sign".into(),
        ));
    }
    if attrs.restricted() {
        return Err(mismatch(
            "the key is restricted (an attestation key); it only signs digests the TPM computed itself, and popkey needs an unrestricted signing key".into(),
        ));
    }
    let non_exportable = attrs.fixed_tpm() && attrs.fixed_parent();
    let hash_ok = |h: HashScheme| h.hashing_algorithm() == HashingAlgorithm::Sha256;
    match public {
        Public::Ecc {
            parameters, unique, ..
        } => {
            if parameters.ecc_curve() != EccCurve::NistP256 {
                return Err(mismatch(format!(
                    "the key is on curve {:?}; popkey signs ES256 with P-256 keys",
                    parameters.ecc_curve()
                )));
            }
            if let Some(a) = wanted.filter(|a| *a != Algorithm::ES256) {
                return Err(mismatch(format!(
                    "the key is an EC P-256 key, which cannot sign {a}"
                )));
            }
            match parameters.ecc_scheme() {
                EccScheme::Null => {}
                EccScheme::EcDsa(h) if hash_ok(h) => {}
                other => {
                    return Err(mismatch(format!(
                        "the key's scheme is fixed to {other:?}; ES256 needs ECDSA with SHA-256"
                    )))
                }
            }
            if parameters.key_derivation_function_scheme() != KeyDerivationFunctionScheme::Null {
                return Err(mismatch(
                    "the key has a KDF scheme; not a signing key".into(),
                ));
            }
            let x = left_pad(unique.x().value(), 32)
                .ok_or_else(|| mismatch("the public point's x is longer than 32 bytes".into()))?;
            let y = left_pad(unique.y().value(), 32)
                .ok_or_else(|| mismatch("the public point's y is longer than 32 bytes".into()))?;
            Ok(KeyInfo {
                jwk: PublicJwk::from_ec_coordinates(&x, &y)?,
                alg: Algorithm::ES256,
                non_exportable,
                scheme: SignatureScheme::EcDsa {
                    hash_scheme: sha256(),
                },
                sig_part_len: 32,
            })
        }
        Public::Rsa {
            parameters, unique, ..
        } => {
            let alg = match (parameters.rsa_scheme(), wanted) {
                (RsaScheme::Null, Some(a @ (Algorithm::RS256 | Algorithm::PS256))) => a,
                (RsaScheme::Null, None) => Algorithm::RS256,
                (RsaScheme::RsaSsa(h), None | Some(Algorithm::RS256)) if hash_ok(h) => {
                    Algorithm::RS256
                }
                (RsaScheme::RsaPss(h), None | Some(Algorithm::PS256)) if hash_ok(h) => {
                    Algorithm::PS256
                }
                (_, Some(Algorithm::ES256)) => {
                    return Err(mismatch("the key is an RSA key, which cannot sign ES256".into()))
                }
                (scheme, Some(a)) => {
                    return Err(mismatch(format!(
                        "the key's scheme is fixed to {scheme:?}, which cannot sign {a}"
                    )))
                }
                (scheme, None) => {
                    return Err(mismatch(format!(
                        "the key's scheme is fixed to {scheme:?}; popkey signs RSASSA or RSAPSS with SHA-256"
                    )))
                }
            };
            let exponent = match parameters.exponent().value() {
                0 => 65537u32,
                e => e,
            };
            let e = exponent.to_be_bytes();
            let first = e.iter().position(|b| *b != 0).unwrap_or(3);
            let n = strip_zeros(unique.value());
            let jwk = PublicJwk::from_rsa_components(n, &e[first..])?;
            Ok(KeyInfo {
                sig_part_len: n.len(),
                jwk,
                alg,
                non_exportable,
                scheme: if alg == Algorithm::PS256 {
                    SignatureScheme::RsaPss {
                        hash_scheme: sha256(),
                    }
                } else {
                    SignatureScheme::RsaSsa {
                        hash_scheme: sha256(),
                    }
                },
            })
        }
        _ => Err(mismatch(
            "the object is neither an RSA nor an ECC key".into(),
        )),
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[first..]
}

/// Left-pads a big-endian number to `len` bytes; `None` when it is longer.
pub(crate) fn left_pad(bytes: &[u8], len: usize) -> Option<Vec<u8>> {
    let bytes = strip_zeros(bytes);
    if bytes.len() > len {
        return None;
    }
    let mut out = vec![0u8; len - bytes.len()];
    out.extend_from_slice(bytes);
    Some(out)
}
