//! TPM 2.0 keys through tss-esapi: `tpm:handle=0x81…` (a persistent key)
//! and `tpm:path=…` (a `TSS2 PRIVATE KEY` file, as tpm2-openssl writes).
//!
//! * [`tcti`]: which transport reaches the TPM.
//! * [`keyfile`]: the PEM key file.
//! * [`template`]: the templates of new keys and the reading of public areas.
//! * [`device`]: one connection per TCTI, loading, signing and recovery.
//! * [`rc`]: what a response code means for a retry.
//!
//! See docs/tpm.md for the user-facing description.

mod device;
mod keyfile;
mod rc;
mod tcti;
mod template;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tss_esapi::structures::{Auth, Digest, Private, Public, Signature};
use tss_esapi::traits::{Marshall, UnMarshall};

use self::device::{Device, KeySpec, Source};
use self::keyfile::{KeyFile, MAX_FILE_LEN, OWNER};
use self::template::{left_pad, KeyInfo};
use super::{Backend, BackendKind, KeyLocation};
use crate::alg::Algorithm;
use crate::error::{Error, Result, TpmError};
use crate::jwk::PublicJwk;
use crate::text::redact;
use crate::uri::{TpmKeyRef, TpmUri};

/// Longest authorization value: the digest size of the key's name
/// algorithm (SHA-256).
const MAX_AUTH_LEN: usize = 32;

/// A key in a TPM, loaded and ready to sign.
pub(crate) struct TpmKey {
    spec: KeySpec,
    info: KeyInfo,
    device: Registration,
    /// When the handle was opened; the clock for `checked_ms`.
    opened: Instant,
    /// Milliseconds after `opened` of the last software check of a
    /// persistent key's signature (`u64::MAX`: never).
    checked_ms: AtomicU64,
}

/// How often a persistent key's signature is checked in software against
/// the public key the handle advertises. A persistent handle names a slot,
/// not a key, and another program may put another key there; checking
/// every signature would cost a software verification (more than the TPM
/// signature itself on swtpm), so one signature a second is checked and a
/// replaced key is caught within that second.
const PERSISTENT_CHECK_INTERVAL_MS: u64 = 1000;

/// A key's claim on its device: dropping it flushes what was loaded for it.
struct Registration {
    device: Arc<Device>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.device.release(self.id);
    }
}

impl TpmKey {
    /// Opens the key a `tpm:` URI names. `uri` is the text, for messages.
    pub(crate) fn open(parsed: &TpmUri, uri: &str) -> Result<Self> {
        let name = redact(uri);
        let tcti = tcti::resolve(parsed.tcti.as_deref())?;
        let auth = read_auth(parsed.auth_source.as_deref())?;
        let source = match &parsed.key {
            TpmKeyRef::Handle(h) => Source::Persistent(*h),
            TpmKeyRef::Path(path) => {
                // A file without emptyAuth and no auth-source is tried with
                // the empty auth value: tpm2-tools 5.4's tpm2_encodeobject
                // writes emptyAuth FALSE even for keys without one. A key
                // that does have one then fails with TpmAuthFailed.
                let file = read_key_file(path)?;
                blob_source(&file, path)?
            }
        };
        Self::open_source(Device::get(tcti), source, auth, parsed.alg, name)
    }

    /// Opens a key from where it lives; `name` is its redacted URI.
    fn open_source(
        device: Arc<Device>,
        source: Source,
        auth: Option<Auth>,
        alg: Option<Algorithm>,
        name: String,
    ) -> Result<Self> {
        let spec = KeySpec {
            id: device.next_key_id(),
            source,
            auth,
            name: name.clone(),
            pinned: Default::default(),
        };
        // From here on, dropping `reg` flushes whatever was loaded.
        let reg = Registration {
            id: spec.id,
            device,
        };
        let public = reg.device.read_public(&spec)?;
        let info = template::inspect(&public, alg, &name)?;
        let key = TpmKey {
            spec,
            info,
            device: reg,
            opened: Instant::now(),
            checked_ms: AtomicU64::new(u64::MAX),
        };
        if key.info.alg == Algorithm::PS256 {
            key.check_pss_salt()?;
        }
        Ok(key)
    }

    /// Creates a key where a `tpm:` URI says, then opens it. A `path=` key
    /// is written as a key file (mode 0600) under the owner storage
    /// primary; a `handle=` key is created under the same primary and made
    /// persistent, refusing an occupied handle unless `overwrite`.
    pub(crate) fn create(
        parsed: &TpmUri,
        uri: &str,
        alg: Algorithm,
        overwrite: bool,
    ) -> Result<Self> {
        let tcti = tcti::resolve(parsed.tcti.as_deref())?;
        let auth = read_auth(parsed.auth_source.as_deref())?;
        if let TpmKeyRef::Path(path) = &parsed.key {
            if !overwrite && fs::symlink_metadata(path).is_ok() {
                return Err(Error::KeyExists(path.display().to_string()));
            }
        }
        let device = Device::get(tcti);
        if let TpmKeyRef::Handle(h) = parsed.key {
            if !overwrite && device.persistent_exists(h)? {
                return Err(Error::KeyExists(format!(
                    "TPM persistent handle {h:#010x} (evict it with `tpm2_evictcontrol -C o -c {h:#010x}` or choose another handle)"
                )));
            }
        }
        let template = template::signing_key(alg)?;
        let (public, private) = device.create(&template, auth.as_ref())?;
        match &parsed.key {
            TpmKeyRef::Path(path) => {
                // Opened from the blob before the file is written: a key
                // that does not open leaves no file, and an old file stays.
                let file = KeyFile {
                    empty_auth: auth.is_none(),
                    parent: OWNER,
                    public: public_to_tpm2b(&public)?,
                    private: private_to_tpm2b(&private)?,
                };
                let source = Source::Blob {
                    parent: OWNER,
                    public,
                    private,
                };
                let key = Self::open_source(device, source, auth, Some(alg), redact(uri));
                #[cfg(test)]
                let key = tests::maybe_fail(key);
                let key = key?;
                let pem = file.to_pem()?;
                super::software::write_key_file(path, pem.as_bytes(), overwrite)?;
                Ok(key)
            }
            TpmKeyRef::Handle(h) => {
                let blob = KeySpec {
                    id: 0,
                    source: Source::Blob {
                        parent: OWNER,
                        public,
                        private,
                    },
                    auth: None,
                    name: redact(uri),
                    pinned: Default::default(),
                };
                device.persist(&blob, *h, overwrite)?;
                let key = Self::open_source(
                    Arc::clone(&device),
                    Source::Persistent(*h),
                    auth,
                    Some(alg),
                    redact(uri),
                );
                #[cfg(test)]
                let key = tests::maybe_fail(key);
                if key.is_err() {
                    // Leave no key behind that popkey just made and will not
                    // use (an old key replaced under `overwrite` is gone
                    // already).
                    let _ = device.evict(*h);
                }
                key
            }
        }
    }
}

impl TpmKey {
    /// JWS PS256 needs a 32-byte salt (RFC 7518 §3.5). TPMs use the hash
    /// length (swtpm/libtpms, current spec) or, on some older firmware, the
    /// maximum; the latter cannot make PS256 signatures, and saying so
    /// beats a bare pair-check failure.
    fn check_pss_salt(&self) -> Result<()> {
        let probe = b"popkey PSS salt-length probe";
        let sig = self.sign_unchecked(probe)?;
        let Some(salt) = crate::crypto::pss_salt_len(self.info.jwk.crypto_key(), probe, &sig)
        else {
            // Not PSS at all: the pair check that follows says so.
            return Ok(());
        };
        if salt == 32 {
            return Ok(());
        }
        let em_len = self.info.jwk.rsa_bits().map_or(0, |bits| (bits + 6) / 8);
        let which = if em_len > 34 && salt == em_len - 34 {
            "the maximum salt length"
        } else {
            "a salt length"
        };
        Err(Error::AlgorithmMismatch(format!(
            "{}: this TPM makes RSA-PSS signatures with {which} ({salt} bytes); JWS PS256 requires a 32-byte salt, so use RS256 with this TPM",
            self.spec.name
        )))
    }
}

impl Backend for TpmKey {
    fn algorithm(&self) -> Algorithm {
        self.info.alg
    }

    fn public_key(&self) -> &PublicJwk {
        &self.info.jwk
    }

    fn location(&self) -> KeyLocation {
        KeyLocation::in_device(
            BackendKind::Tpm,
            self.info.non_exportable,
            self.device.device.info(),
        )
    }

    /// Hashes in software, then one TPM2_Sign with a NULL hashcheck ticket.
    /// A persistent key's signature is verified in software before it is
    /// returned once every [`PERSISTENT_CHECK_INTERVAL_MS`]: the TPM does not
    /// tie a persistent handle to a key, and another program may have put
    /// another key there since.
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>> {
        let sig = self.sign_unchecked(signing_input)?;
        if let Source::Persistent(_) = self.spec.source {
            if self.check_due()
                && self
                    .info
                    .jwk
                    .verify(self.info.alg, signing_input, &sig)
                    .is_err()
            {
                // Most likely replaced: this says so with the handle.
                self.device.device.recheck(&self.spec)?;
                return Err(Error::Backend {
                    backend: "tpm",
                    message: format!(
                        "{}: the TPM returned a {} signature that does not verify with the key's public key; it was not used",
                        self.spec.name, self.info.alg
                    ),
                });
            }
        }
        Ok(sig)
    }
}

impl TpmKey {
    /// True when this signature should be checked in software (one caller
    /// per interval wins the check).
    fn check_due(&self) -> bool {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.checked_ms.load(Ordering::Relaxed);
        (last == u64::MAX || now.saturating_sub(last) >= PERSISTENT_CHECK_INTERVAL_MS)
            && self
                .checked_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The TPM's signature, in JWS form, unverified.
    fn sign_unchecked(&self, signing_input: &[u8]) -> Result<Vec<u8>> {
        let digest =
            Digest::try_from(crate::crypto::sha256(signing_input).to_vec()).map_err(|e| {
                Error::Backend {
                    backend: "tpm",
                    message: format!("cannot pass the digest to the TSS: {e}"),
                }
            })?;
        let sig = self
            .device
            .device
            .sign(&self.spec, &digest, self.info.scheme)?;
        let bad = |what: &str| Error::Backend {
            backend: "tpm",
            message: format!(
                "{}: the TPM returned {what} for a {} key",
                self.spec.name, self.info.alg
            ),
        };
        let n = self.info.sig_part_len;
        match (&sig, self.info.alg) {
            (Signature::EcDsa(s), Algorithm::ES256) => {
                let r = left_pad(s.signature_r().value(), n)
                    .ok_or_else(|| bad("an r over 32 bytes"))?;
                let s = left_pad(s.signature_s().value(), n)
                    .ok_or_else(|| bad("an s over 32 bytes"))?;
                Ok([r, s].concat())
            }
            (Signature::RsaSsa(s), Algorithm::RS256) | (Signature::RsaPss(s), Algorithm::PS256) => {
                left_pad(s.signature().value(), n).ok_or_else(|| bad("an over-long RSA signature"))
            }
            (other, _) => Err(bad(&format!("a {:?} signature", other.algorithm()))),
        }
    }
}

/// Reads the auth value file: raw bytes, one trailing newline ignored.
fn read_auth(path: Option<&Path>) -> Result<Option<Auth>> {
    let Some(path) = path else { return Ok(None) };
    let io = |source| Error::Io {
        action: "cannot read the auth-source file",
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    fs::File::open(path)
        .map_err(io)?
        .take(1024)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let mut len = bytes.len();
    if bytes[..len].ends_with(b"\n") {
        len -= 1;
        if bytes[..len].ends_with(b"\r") {
            len -= 1;
        }
    }
    if len == 0 {
        return Ok(None);
    }
    if len > MAX_AUTH_LEN {
        return Err(Error::Tpm(TpmError::AuthFailed {
            key: path.display().to_string(),
            reason: format!(
                "the auth value in the auth-source file is {len} bytes; a TPM key's auth value is at most {MAX_AUTH_LEN} bytes"
            ),
        }));
    }
    Auth::try_from(bytes[..len].to_vec())
        .map(Some)
        .map_err(|e| {
            Error::Tpm(TpmError::AuthFailed {
                key: path.display().to_string(),
                reason: format!("unusable auth value: {e}"),
            })
        })
}

fn read_key_file(path: &Path) -> Result<KeyFile> {
    let text = crate::pem::read_file(
        path,
        MAX_FILE_LEN,
        || {
            format!(
                "{} does not exist; create it with PopKey::create(\"tpm:path={}\")",
                path.display(),
                path.display()
            )
        },
        |_| Ok(()),
    )?;
    KeyFile::from_pem(&text, path)
}

fn blob_source(file: &KeyFile, path: &Path) -> Result<Source> {
    let malformed = |reason: String| Error::MalformedKey {
        source_name: path.display().to_string(),
        reason,
    };
    let public = public_from_tpm2b(&file.public).map_err(&malformed)?;
    let private = private_from_tpm2b(&file.private).map_err(&malformed)?;
    Ok(Source::Blob {
        parent: file.parent,
        public,
        private,
    })
}

/// Splits a TPM2B (big-endian u16 size, then exactly that many bytes).
fn tpm2b_body<'a>(bytes: &'a [u8], what: &str) -> std::result::Result<&'a [u8], String> {
    match bytes {
        [hi, lo, body @ ..]
            if usize::from(u16::from_be_bytes([*hi, *lo])) == body.len() && !body.is_empty() =>
        {
            Ok(body)
        }
        _ => Err(format!("the {what} is not a well-formed TPM2B structure")),
    }
}

fn with_size(body: Vec<u8>, what: &str) -> Result<Vec<u8>> {
    let len = u16::try_from(body.len()).map_err(|_| Error::Backend {
        backend: "tpm",
        message: format!("the {what} is too large to encode"),
    })?;
    let mut out = Vec::with_capacity(body.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend(body);
    Ok(out)
}

fn public_from_tpm2b(bytes: &[u8]) -> std::result::Result<Public, String> {
    let body = tpm2b_body(bytes, "public key (TPM2B_PUBLIC)")?;
    let public = Public::unmarshall(body)
        .map_err(|e| format!("the public key (TPM2B_PUBLIC) does not unmarshal: {e}"))?;
    // Unmarshalling stops at the end of the structure; the size must match.
    match public.marshall() {
        Ok(again) if again.len() == body.len() => Ok(public),
        _ => Err("the public key (TPM2B_PUBLIC) has trailing bytes".into()),
    }
}

fn private_from_tpm2b(bytes: &[u8]) -> std::result::Result<Private, String> {
    let body = tpm2b_body(bytes, "private key blob (TPM2B_PRIVATE)")?;
    Private::try_from(body.to_vec())
        .map_err(|e| format!("the private key blob (TPM2B_PRIVATE) is unusable: {e}"))
}

fn public_to_tpm2b(public: &Public) -> Result<Vec<u8>> {
    let body = public.marshall().map_err(|e| Error::Backend {
        backend: "tpm",
        message: format!("cannot marshal the public area: {e}"),
    })?;
    with_size(body, "public area")
}

fn private_to_tpm2b(private: &Private) -> Result<Vec<u8>> {
    with_size(private.value().to_vec(), "private blob")
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use crate::{CreateOptions, Error, PopKey};
    use popkey_testkit::swtpm::Swtpm;

    thread_local! {
        /// Makes `TpmKey::create` fail after the key was made, as a failed
        /// open (a PS256 salt probe, a lost TPM) would.
        pub(super) static FAIL_OPEN_AFTER_CREATE: Cell<bool> = const { Cell::new(false) };
    }

    /// The result of opening a key just created, failed if a test says so.
    pub(super) fn maybe_fail<T>(r: crate::error::Result<T>) -> crate::error::Result<T> {
        if FAIL_OPEN_AFTER_CREATE.with(Cell::get) {
            r.and(Err(Error::Backend {
                backend: "tpm",
                message: "opening the new key failed (test)".into(),
            }))
        } else {
            r
        }
    }

    fn failing_create(uri: &str, opts: &CreateOptions) -> Error {
        FAIL_OPEN_AFTER_CREATE.with(|f| f.set(true));
        let r = PopKey::create(uri, opts);
        FAIL_OPEN_AFTER_CREATE.with(|f| f.set(false));
        match r {
            Err(e) => e,
            Ok(_) => panic!("create succeeded"),
        }
    }

    fn assert_not_found(uri: &str) {
        match PopKey::open(uri) {
            Err(Error::KeyNotFound(_)) => {}
            Err(e) => panic!("expected KeyNotFound, got {e:?}"),
            Ok(_) => panic!("{uri} is still there"),
        }
    }

    #[test]
    fn a_failed_create_leaves_no_key_behind() {
        let tpm = Swtpm::start();

        let handle = tpm.uri("handle=0x81000500");
        failing_create(&handle, &CreateOptions::new());
        assert_not_found(&handle);
        // The handle is free: a plain create (no overwrite) works there.
        PopKey::create(&handle, &CreateOptions::new()).unwrap();

        let path = tpm.file("key.pem");
        let file = tpm.uri(&format!("path={}", path.display()));
        failing_create(&file, &CreateOptions::new());
        assert!(!path.exists(), "the key file was left behind");
        PopKey::create(&file, &CreateOptions::new()).unwrap();

        // With overwrite a key file stays as it was; a persistent key was
        // evicted before the new one was made persistent, so the handle
        // ends up empty (docs/tpm.md says so), not half-made.
        let before = std::fs::read(&path).unwrap();
        failing_create(&file, &CreateOptions::new().overwrite(true));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        PopKey::open(&file).unwrap();
        failing_create(&handle, &CreateOptions::new().overwrite(true));
        assert_not_found(&handle);
    }
}
