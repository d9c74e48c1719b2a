//! Software keys: `mem:` (in memory, MSAL's default provider) and
//! `file:` (PKCS#8 PEM on disk, for development). Neither is hardware and
//! both say so.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rand::rngs::OsRng;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{Backend, KeyLocation};
use crate::alg::Algorithm;
use crate::error::{Error, Result};
use crate::jwk::PublicJwk;

/// Default RSA modulus size for new software keys.
pub(crate) const DEFAULT_RSA_BITS: usize = 2048;

enum Private {
    Ec(p256::ecdsa::SigningKey),
    Rs256(rsa::pkcs1v15::SigningKey<Sha256>),
    Ps256(rsa::pss::BlindedSigningKey<Sha256>),
}

/// A software key pair.
pub(crate) struct SoftwareKey {
    private: Private,
    public: PublicJwk,
    backend: &'static str,
}

impl SoftwareKey {
    /// Generates a new key pair in memory.
    pub(crate) fn generate(alg: Algorithm, rsa_bits: usize, backend: &'static str) -> Result<Self> {
        match alg {
            Algorithm::ES256 => Ok(Self::from_ec(
                p256::ecdsa::SigningKey::random(&mut OsRng),
                backend,
            )),
            Algorithm::RS256 | Algorithm::PS256 => {
                let key = RsaPrivateKey::new(&mut OsRng, rsa_bits).map_err(|e| Error::Backend {
                    backend,
                    message: format!("RSA-{rsa_bits} key generation failed: {e}"),
                })?;
                Self::from_rsa(key, alg, backend)
            }
        }
    }

    fn from_ec(key: p256::ecdsa::SigningKey, backend: &'static str) -> Self {
        let public = PublicJwk::from_p256(key.verifying_key());
        SoftwareKey {
            private: Private::Ec(key),
            public,
            backend,
        }
    }

    fn from_rsa(key: RsaPrivateKey, alg: Algorithm, backend: &'static str) -> Result<Self> {
        let public = PublicJwk::from_rsa(&key.to_public_key())?;
        let private = match alg {
            Algorithm::PS256 => Private::Ps256(rsa::pss::BlindedSigningKey::new(key)),
            _ => Private::Rs256(rsa::pkcs1v15::SigningKey::new(key)),
        };
        Ok(SoftwareKey {
            private,
            public,
            backend,
        })
    }

    /// The private key as PKCS#8 PEM (zeroized on drop).
    fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>> {
        let pem = match &self.private {
            Private::Ec(k) => k.to_pkcs8_pem(LineEnding::LF),
            Private::Rs256(k) => k.as_ref().to_pkcs8_pem(LineEnding::LF),
            Private::Ps256(k) => k.as_ref().to_pkcs8_pem(LineEnding::LF),
        };
        pem.map_err(|e| Error::Backend {
            backend: self.backend,
            message: format!("cannot encode the key as PKCS#8: {e}"),
        })
    }

    /// Decodes a PEM private key: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE
    /// KEY`) or PKCS#1 (`RSA PRIVATE KEY`). `alg` picks RS256 or PS256 for an
    /// RSA key (RS256 when `None`) and must fit the key type.
    pub(crate) fn from_pem(pem: &str, alg: Option<Algorithm>, source: &Path) -> Result<Self> {
        let malformed = |reason: String| Error::MalformedKey {
            source_name: source.display().to_string(),
            reason,
        };
        let label = pem
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
            .ok_or_else(|| malformed("no PEM `-----BEGIN ...-----` line found".into()))?;
        let key = match label {
            "PRIVATE KEY" => {
                if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
                    Ok(Key::Ec(k))
                } else {
                    RsaPrivateKey::from_pkcs8_pem(pem).map(|k| Key::Rsa(Box::new(k))).map_err(|e| {
                        malformed(format!(
                            "not a P-256 or RSA PKCS#8 private key ({e}); popkey reads EC P-256 and RSA keys"
                        ))
                    })
                }
            }
            "EC PRIVATE KEY" => {
                use p256::elliptic_curve::SecretKey;
                SecretKey::<p256::NistP256>::from_sec1_pem(pem)
                    .map(|sk| Key::Ec(sk.into()))
                    .map_err(|e| malformed(format!("not a P-256 SEC1 private key: {e}")))
            }
            "RSA PRIVATE KEY" => RsaPrivateKey::from_pkcs1_pem(pem)
                .map(|k| Key::Rsa(Box::new(k)))
                .map_err(|e| malformed(format!("not a PKCS#1 RSA private key: {e}"))),
            "ENCRYPTED PRIVATE KEY" => Err(malformed(
                "encrypted PKCS#8 is not supported; keep keys that need protection in a TPM or HSM"
                    .into(),
            )),
            "TSS2 PRIVATE KEY" => Err(malformed(
                "this is a TPM key file; open it with a `tpm:path=...` URI".into(),
            )),
            other => Err(malformed(format!(
                "PEM label `{}` is not a private key",
                other.chars().take(40).collect::<String>()
            ))),
        }?;
        match (key, alg) {
            (Key::Ec(k), None | Some(Algorithm::ES256)) => Ok(Self::from_ec(k, "file")),
            (Key::Rsa(k), None) => Self::from_rsa(*k, Algorithm::RS256, "file"),
            (Key::Rsa(k), Some(a @ (Algorithm::RS256 | Algorithm::PS256))) => {
                Self::from_rsa(*k, a, "file")
            }
            (Key::Ec(_), Some(a)) => Err(Error::AlgorithmMismatch(format!(
                "{} holds an EC P-256 key, which cannot sign {a}",
                source.display()
            ))),
            (Key::Rsa(_), Some(a)) => Err(Error::AlgorithmMismatch(format!(
                "{} holds an RSA key, which cannot sign {a}",
                source.display()
            ))),
        }
    }
}

// Short-lived (decoding only), so the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Key {
    Ec(p256::ecdsa::SigningKey),
    Rsa(Box<RsaPrivateKey>),
}

impl Backend for SoftwareKey {
    fn algorithm(&self) -> Algorithm {
        match self.private {
            Private::Ec(_) => Algorithm::ES256,
            Private::Rs256(_) => Algorithm::RS256,
            Private::Ps256(_) => Algorithm::PS256,
        }
    }

    fn public_key(&self) -> &PublicJwk {
        &self.public
    }

    fn location(&self) -> KeyLocation {
        KeyLocation::software(self.backend)
    }

    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>> {
        let fail = |e: signature::Error| Error::Backend {
            backend: self.backend,
            message: format!("signing failed: {e}"),
        };
        match &self.private {
            Private::Ec(k) => {
                let sig: p256::ecdsa::Signature = k.try_sign(signing_input).map_err(fail)?;
                Ok(sig.to_bytes().to_vec())
            }
            Private::Rs256(k) => Ok(k.try_sign(signing_input).map_err(fail)?.to_vec()),
            Private::Ps256(k) => Ok(k
                .try_sign_with_rng(&mut OsRng, signing_input)
                .map_err(fail)?
                .to_vec()),
        }
    }
}

/// Opens a `file:` key.
pub(crate) fn open_file(path: &Path, alg: Option<Algorithm>) -> Result<SoftwareKey> {
    let io = |action, source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::KeyNotFound(format!(
                "{} does not exist; create it with `popkey key create --key file:{}`",
                path.display(),
                path.display()
            ))
        } else {
            io("cannot read", e)
        }
    })?;
    check_private_mode(path, &meta)?;
    if meta.len() > 64 * 1024 {
        return Err(Error::MalformedKey {
            source_name: path.display().to_string(),
            reason: format!("{} bytes is too large for a PEM private key", meta.len()),
        });
    }
    let bytes = Zeroizing::new(fs::read(path).map_err(|e| io("cannot read", e))?);
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::MalformedKey {
        source_name: path.display().to_string(),
        reason: "not a text (PEM) file".into(),
    })?;
    SoftwareKey::from_pem(text, alg, path)
}

/// Creates a `file:` key: generates it and writes PKCS#8 PEM with mode 0600.
/// An existing file is replaced only when `overwrite` is set, and then
/// atomically (write a new 0600 file beside it, rename over).
pub(crate) fn create_file(
    path: &Path,
    alg: Algorithm,
    rsa_bits: usize,
    overwrite: bool,
) -> Result<SoftwareKey> {
    if !overwrite && fs::symlink_metadata(path).is_ok() {
        return Err(Error::KeyExists(path.display().to_string()));
    }
    let key = SoftwareKey::generate(alg, rsa_bits, "file")?;
    let pem = key.to_pkcs8_pem()?;
    write_key_file(path, pem.as_bytes(), overwrite)?;
    Ok(key)
}

/// Writes a key file with mode 0600. A new file never replaces an existing
/// one; with `overwrite`, the file is replaced atomically (a new 0600 file
/// written beside it, renamed over). Shared by the `file:` and `tpm:` backends.
pub(crate) fn write_key_file(path: &Path, contents: &[u8], overwrite: bool) -> Result<()> {
    let target: PathBuf = if overwrite {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".popkey-tmp-{}", std::process::id()));
        path.with_file_name(name)
    } else {
        path.to_path_buf()
    };
    write_new_private(&target, contents).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::KeyExists(path.display().to_string())
        } else {
            Error::Io {
                action: "cannot create",
                path: target.clone(),
                source: e,
            }
        }
    })?;
    if overwrite {
        fs::rename(&target, path).map_err(|e| {
            let _ = fs::remove_file(&target);
            Error::Io {
                action: "cannot replace",
                path: path.to_path_buf(),
                source: e,
            }
        })?;
    }
    Ok(())
}

fn write_new_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}

#[cfg(unix)]
fn check_private_mode(path: &Path, meta: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::UnsafeKeyFile {
            path: path.to_path_buf(),
            reason: format!(
                "mode {mode:04o} lets other users read the private key; run `chmod 600 {}`",
                path.display()
            ),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_: &Path, _: &fs::Metadata) -> Result<()> {
    Ok(())
}
