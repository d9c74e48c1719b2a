//! Raw signatures and verifications of the crypto libraries themselves
//! (aws-lc-rs, popkey's default provider, and the RustCrypto crates, its
//! pure-Rust fallback), so the benches print them beside popkey's rows.
#![allow(dead_code)]

use popkey::Algorithm;

/// A software key of one library: `sign` and `verify` (the latter parses
/// the public key on every call, as a verifier of a proof that carries its
/// key must).
pub struct RawKey {
    pub name: &'static str,
    pub sign: SignFn,
    pub verify: VerifyFn,
}

/// Signs a message.
pub type SignFn = Box<dyn Fn(&[u8]) -> Vec<u8>>;
/// Checks a signature over a message.
pub type VerifyFn = Box<dyn Fn(&[u8], &[u8]) -> bool>;
/// A [`VerifyFn`] that threads can share.
pub type SharedVerifyFn = Box<dyn Fn(&[u8], &[u8]) -> bool + Send + Sync>;

/// One key per library compiled in, for `alg`.
pub fn keys(alg: Algorithm) -> Vec<RawKey> {
    vec![
        #[cfg(feature = "aws-lc-rs")]
        aws_lc(alg),
        rust_crypto(alg),
    ]
}

#[cfg(feature = "aws-lc-rs")]
fn aws_lc(alg: Algorithm) -> RawKey {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self as sig, KeyPair, UnparsedPublicKey};
    use std::sync::Arc;
    match alg {
        Algorithm::ES256 => {
            let key = Arc::new(
                sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            );
            let public = key.public_key().as_ref().to_vec();
            let rng = SystemRandom::new();
            RawKey {
                name: "aws_lc_rs",
                sign: Box::new(move |m| key.sign(&rng, m).unwrap().as_ref().to_vec()),
                verify: Box::new(move |m, s| {
                    UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, &public)
                        .verify(m, s)
                        .is_ok()
                }),
            }
        }
        Algorithm::RS256 | Algorithm::PS256 => {
            let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
            let public = key.public_key().as_ref().to_vec();
            let (padding, params): (&'static dyn sig::RsaEncoding, _) = if alg == Algorithm::PS256 {
                (&sig::RSA_PSS_SHA256, &sig::RSA_PSS_2048_8192_SHA256)
            } else {
                (&sig::RSA_PKCS1_SHA256, &sig::RSA_PKCS1_2048_8192_SHA256)
            };
            let rng = SystemRandom::new();
            RawKey {
                name: "aws_lc_rs",
                sign: Box::new(move |m| {
                    let mut out = vec![0u8; key.public_modulus_len()];
                    key.sign(padding, &rng, m, &mut out).unwrap();
                    out
                }),
                verify: Box::new(move |m, s| {
                    UnparsedPublicKey::new(params, &public).verify(m, s).is_ok()
                }),
            }
        }
    }
}

fn rust_crypto(alg: Algorithm) -> RawKey {
    use rand::rngs::OsRng;
    use rsa::sha2::Sha256;
    use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer, Verifier};
    use rsa::traits::PublicKeyParts;
    match alg {
        Algorithm::ES256 => {
            let key = p256::ecdsa::SigningKey::random(&mut OsRng);
            let point = key.verifying_key().to_encoded_point(false);
            RawKey {
                name: "rust_crypto",
                sign: Box::new(move |m| {
                    let s: p256::ecdsa::Signature = key.sign(m);
                    s.to_bytes().to_vec()
                }),
                verify: Box::new(move |m, s| {
                    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(point.as_bytes()).unwrap();
                    let sig = p256::ecdsa::Signature::from_slice(s).unwrap();
                    vk.verify(m, &sig).is_ok()
                }),
            }
        }
        Algorithm::RS256 | Algorithm::PS256 => {
            let private = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
            let (n, e) = (private.n().clone(), private.e().clone());
            let public = move || rsa::RsaPublicKey::new(n.clone(), e.clone()).unwrap();
            if alg == Algorithm::PS256 {
                let key = rsa::pss::BlindedSigningKey::<Sha256>::new(private);
                RawKey {
                    name: "rust_crypto",
                    sign: Box::new(move |m| key.sign_with_rng(&mut OsRng, m).to_vec()),
                    verify: Box::new(move |m, s| {
                        let sig = rsa::pss::Signature::try_from(s).unwrap();
                        rsa::pss::VerifyingKey::<Sha256>::new(public())
                            .verify(m, &sig)
                            .is_ok()
                    }),
                }
            } else {
                let key = rsa::pkcs1v15::SigningKey::<Sha256>::new(private);
                RawKey {
                    name: "rust_crypto",
                    sign: Box::new(move |m| key.sign(m).to_vec()),
                    verify: Box::new(move |m, s| {
                        let sig = rsa::pkcs1v15::Signature::try_from(s).unwrap();
                        rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public())
                            .verify(m, &sig)
                            .is_ok()
                    }),
                }
            }
        }
    }
}

/// An ES256 verifier for an existing key (`point`: the uncompressed SEC1
/// point, `04‖x‖y`), in the default provider's library: aws-lc-rs, or the
/// RustCrypto `p256` crate on the pure-Rust build. Parses the key on every
/// call, as `keys` does.
pub fn es256_verifier(point: Vec<u8>) -> SharedVerifyFn {
    #[cfg(feature = "aws-lc-rs")]
    {
        use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
        Box::new(move |m, s| {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
                .verify(m, s)
                .is_ok()
        })
    }
    #[cfg(not(feature = "aws-lc-rs"))]
    {
        use p256::ecdsa::{signature::Verifier, Signature, VerifyingKey};
        Box::new(move |m, s| {
            let Ok(key) = VerifyingKey::from_sec1_bytes(&point) else {
                return false;
            };
            Signature::from_slice(s).is_ok_and(|sig| key.verify(m, &sig).is_ok())
        })
    }
}
