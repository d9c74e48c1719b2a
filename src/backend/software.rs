//! Software keys: `mem:` (in memory, MSAL's default provider) and
//! `file:` (PKCS#8 PEM on disk, for development). Neither is hardware and
//! both say so.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{Backend, KeyLocation};
use crate::alg::Algorithm;
use crate::crypto::{self, PrivateKeyFormat};
use crate::error::{Error, Result};
use crate::jwk::PublicJwk;

/// Default RSA modulus size for new software keys.
pub(crate) const DEFAULT_RSA_BITS: usize = 2048;

/// Largest `file:` key popkey reads (an RSA-4096 PKCS#8 PEM is ~3.3 KiB).
const MAX_FILE_LEN: u64 = 64 * 1024;

/// A software key pair. The crate's crypto provider holds the private key
/// (aws-lc-rs by default; RustCrypto with only the `rust-crypto` feature).
pub(crate) struct SoftwareKey {
    private: crypto::SigningKey,
    alg: Algorithm,
    public: PublicJwk,
    backend: &'static str,
}

impl SoftwareKey {
    /// Generates a new key pair in memory.
    pub(crate) fn generate(alg: Algorithm, rsa_bits: usize, backend: &'static str) -> Result<Self> {
        let fail = |message: String| Error::Backend { backend, message };
        let key = match alg {
            Algorithm::ES256 => crypto::SigningKey::generate_p256().map_err(fail)?,
            Algorithm::RS256 | Algorithm::PS256 => {
                crypto::SigningKey::generate_rsa(rsa_bits).map_err(fail)?
            }
        };
        Self::new(key, alg, backend)
    }

    fn new(private: crypto::SigningKey, alg: Algorithm, backend: &'static str) -> Result<Self> {
        let public = PublicJwk::from_crypto(private.public_key())?;
        Ok(SoftwareKey {
            private,
            alg,
            public,
            backend,
        })
    }

    /// The private key as PKCS#8 PEM (zeroized on drop).
    fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>> {
        let der = self
            .private
            .to_pkcs8_der()
            .map_err(|message| Error::Backend {
                backend: self.backend,
                message,
            })?;
        Ok(crate::pem::encode("PRIVATE KEY", &der))
    }

    /// Decodes a PEM private key: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE
    /// KEY`) or PKCS#1 (`RSA PRIVATE KEY`). `alg` picks RS256 or PS256 for an
    /// RSA key (RS256 when `None`) and must fit the key type.
    pub(crate) fn from_pem(pem: &str, alg: Option<Algorithm>, source: &Path) -> Result<Self> {
        let malformed = |reason: String| Error::MalformedKey {
            source_name: source.display().to_string(),
            reason,
        };
        let label = crate::pem::first_label(pem)
            .ok_or_else(|| malformed("no PEM `-----BEGIN ...-----` line found".into()))?;
        let format = match label {
            "PRIVATE KEY" => PrivateKeyFormat::Pkcs8,
            "EC PRIVATE KEY" => PrivateKeyFormat::Sec1,
            "RSA PRIVATE KEY" => PrivateKeyFormat::Pkcs1,
            "ENCRYPTED PRIVATE KEY" => return Err(malformed(
                "encrypted PKCS#8 is not supported; keep keys that need protection in a TPM or HSM"
                    .into(),
            )),
            "TSS2 PRIVATE KEY" => {
                return Err(malformed(
                    "this is a TPM key file; open it with a `tpm:path=...` URI".into(),
                ))
            }
            other => {
                return Err(malformed(format!(
                    "PEM label `{}` is not a private key",
                    other.chars().take(40).collect::<String>()
                )))
            }
        };
        let (_, der) = crate::pem::decode(pem).map_err(&malformed)?;
        let key = crypto::SigningKey::from_der(&der, format).map_err(malformed)?;
        let alg = match (key.is_rsa(), alg) {
            (false, None | Some(Algorithm::ES256)) => Algorithm::ES256,
            (true, None) => Algorithm::RS256,
            (true, Some(a @ (Algorithm::RS256 | Algorithm::PS256))) => a,
            (false, Some(a)) => {
                return Err(Error::AlgorithmMismatch(format!(
                    "{} holds an EC P-256 key, which cannot sign {a}",
                    source.display()
                )))
            }
            (true, Some(a)) => {
                return Err(Error::AlgorithmMismatch(format!(
                    "{} holds an RSA key, which cannot sign {a}",
                    source.display()
                )))
            }
        };
        Self::new(key, alg, "file")
    }
}

impl Backend for SoftwareKey {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }

    fn public_key(&self) -> &PublicJwk {
        &self.public
    }

    fn location(&self) -> KeyLocation {
        KeyLocation::software(self.backend)
    }

    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>> {
        self.private
            .sign(self.alg, signing_input)
            .map_err(|message| Error::Backend {
                backend: self.backend,
                message,
            })
    }
}

/// Opens a `file:` key.
pub(crate) fn open_file(path: &Path, alg: Option<Algorithm>) -> Result<SoftwareKey> {
    let text = crate::pem::read_file(
        path,
        MAX_FILE_LEN,
        || {
            format!(
                "{} does not exist; create it with PopKey::create(\"file:{}\")",
                path.display(),
                path.display()
            )
        },
        |meta| check_private_mode(path, meta),
    )?;
    SoftwareKey::from_pem(&text, alg, path)
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
