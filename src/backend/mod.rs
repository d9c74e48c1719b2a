//! Key backends: where a private key lives and how it signs.
//!
//! A backend knows nothing of protocols: it holds one key pair, reports its
//! public half and signs JWS signing inputs with the private half. The key
//! handle ([`crate::PopKey`]) adds the checks every backend shares.

use crate::alg::Algorithm;
use crate::error::Result;
use crate::jwk::PublicJwk;
use crate::uri::KeyUri;

pub use self::device::{DeviceInfo, DeviceKind};

pub(crate) mod device;
#[cfg(feature = "pkcs11")]
pub(crate) mod pkcs11;
pub(crate) mod software;
#[cfg(feature = "tpm")]
pub(crate) mod tpm;

pub use crate::uri::BackendKind;

/// What a backend reports about where its key lives.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyLocation {
    /// The backend that holds the key.
    pub backend: BackendKind,
    /// True when the key is held by a hardware device (HSM, TPM): its
    /// `device` is [`DeviceKind::Hardware`].
    /// SoftHSM and swtpm are software devices, so `false` for them.
    pub hardware: bool,
    /// True only when the device itself says the private key cannot leave it.
    pub non_exportable: bool,
    /// What the device (PKCS#11 token, TPM) says about itself; `None` for
    /// software keys and custom providers.
    pub device: Option<DeviceInfo>,
}

impl KeyLocation {
    /// A software key (`mem` or `file`, as the software backend names it):
    /// not hardware, exportable.
    pub(crate) fn software(backend: &'static str) -> Self {
        KeyLocation {
            backend: if backend == "file" {
                BackendKind::File
            } else {
                BackendKind::Mem
            },
            hardware: false,
            non_exportable: false,
            device: None,
        }
    }

    /// A key in a device (PKCS#11 token, TPM): hardware when the device is.
    #[cfg(any(feature = "pkcs11", feature = "tpm"))]
    pub(crate) fn in_device(
        backend: BackendKind,
        non_exportable: bool,
        device: DeviceInfo,
    ) -> Self {
        KeyLocation {
            backend,
            hardware: device.is_hardware(),
            non_exportable,
            device: Some(device),
        }
    }
}

/// One key pair in one place. Implementations must be safe to call from
/// many threads at once.
pub(crate) trait Backend: Send + Sync {
    /// The algorithm this key signs with.
    fn algorithm(&self) -> Algorithm;
    /// The public key, as read from the device when the key was opened.
    fn public_key(&self) -> &PublicJwk;
    /// Where the key lives.
    fn location(&self) -> KeyLocation;
    /// Signs a JWS signing input; returns the JWS signature bytes.
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>>;
}

/// Opens the key `uri` names in its backend. `raw` is the URI as given,
/// for messages (redacted there). The one place that knows which backend
/// serves which scheme and which ones this build contains.
pub(crate) fn open(uri: &KeyUri, raw: &str) -> Result<Box<dyn Backend>> {
    Ok(match uri {
        KeyUri::Mem(m) => Box::new(software::SoftwareKey::generate(
            m.alg.unwrap_or(Algorithm::ES256),
            m.bits.unwrap_or(software::DEFAULT_RSA_BITS),
            "mem",
        )?),
        KeyUri::File(f) => Box::new(software::open_file(&f.path, f.alg)?),
        #[cfg(feature = "pkcs11")]
        KeyUri::Pkcs11(p) => Box::new(pkcs11::open(raw, p)?),
        #[cfg(feature = "tpm")]
        KeyUri::Tpm(t) => Box::new(tpm::TpmKey::open(t, raw)?),
        #[cfg(not(all(feature = "pkcs11", feature = "tpm")))]
        other => return Err(not_built(other, raw)),
    })
}

/// Creates a new key where `uri` says, with algorithm `alg` (already
/// reconciled with the URI's `alg`). `overwrite`: replace an existing key
/// (file and TPM backends; PKCS#11 refuses, see [`crate::CreateOptions`]).
pub(crate) fn create(
    uri: &KeyUri,
    raw: &str,
    alg: Algorithm,
    overwrite: bool,
) -> Result<Box<dyn Backend>> {
    Ok(match uri {
        KeyUri::Mem(m) => Box::new(software::SoftwareKey::generate(
            alg,
            m.bits.unwrap_or(software::DEFAULT_RSA_BITS),
            "mem",
        )?),
        KeyUri::File(f) => Box::new(software::create_file(
            &f.path,
            alg,
            f.bits.unwrap_or(software::DEFAULT_RSA_BITS),
            overwrite,
        )?),
        #[cfg(feature = "pkcs11")]
        KeyUri::Pkcs11(p) => Box::new(pkcs11::create(
            raw,
            p,
            alg,
            software::DEFAULT_RSA_BITS,
            overwrite,
        )?),
        #[cfg(feature = "tpm")]
        KeyUri::Tpm(t) => Box::new(tpm::TpmKey::create(t, raw, alg, overwrite)?),
        #[cfg(not(all(feature = "pkcs11", feature = "tpm")))]
        other => return Err(not_built(other, raw)),
    })
}

/// The error for a scheme whose backend this build leaves out.
#[cfg(not(all(feature = "pkcs11", feature = "tpm")))]
fn not_built(uri: &KeyUri, _raw: &str) -> crate::error::Error {
    let (scheme, hint) = match uri {
        KeyUri::Pkcs11(_) => (
            "pkcs11",
            "this build was made without the `pkcs11` feature; rebuild with `--features pkcs11`",
        ),
        _ => (
            "tpm",
            "rebuild popkey with `--features tpm` (it needs libtss2-dev and pkg-config to build)",
        ),
    };
    crate::error::Error::BackendNotBuilt { scheme, hint }
}
