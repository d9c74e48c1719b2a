//! The user PIN: read once from `pin-source` (a file) or `pin-value`, kept
//! in memory that is zeroized on drop, never printed.

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::sync::{Mutex, OnceLock, PoisonError};

use rand::RngCore;

use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::error::{Error, Pkcs11Error, Result};
use crate::uri::Pkcs11Uri;

/// Longest PIN file accepted.
const MAX_PIN_FILE: u64 = 1024;

/// A user PIN, or none (tokens that need no login, or a protected
/// authentication path).
#[derive(Clone)]
pub(super) struct Pin(Option<Zeroizing<String>>);

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "Pin(<redacted>)",
            None => "Pin(none)",
        })
    }
}

impl Pin {
    /// Reads the PIN the URI points to.
    pub(super) fn from_uri(uri: &Pkcs11Uri) -> Result<Pin> {
        if let Some(v) = &uri.pin_value {
            return Ok(Pin(Some(v.clone())));
        }
        let Some(path) = &uri.pin_source else {
            return Ok(Pin(None));
        };
        let unavailable = |why: String| {
            Error::Pkcs11(Pkcs11Error::PinUnavailable(format!(
                "pin-source {}: {why}",
                path.display()
            )))
        };
        let file = std::fs::File::open(path).map_err(|e| {
            unavailable(if e.kind() == std::io::ErrorKind::NotFound {
                "the file does not exist; write the user PIN into it (one line)".into()
            } else {
                format!("cannot open it: {e}")
            })
        })?;
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(MAX_PIN_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| unavailable(format!("cannot read it: {e}")))?;
        if bytes.len() as u64 > MAX_PIN_FILE {
            return Err(unavailable(format!(
                "longer than {MAX_PIN_FILE} bytes; a PIN file holds just the PIN"
            )));
        }
        let mut end = bytes.len();
        if bytes[..end].ends_with(b"\n") {
            end -= 1;
        }
        if bytes[..end].ends_with(b"\r") {
            end -= 1;
        }
        let text = std::str::from_utf8(&bytes[..end])
            .map_err(|_| unavailable("the PIN is not UTF-8 text".into()))?;
        if text.is_empty() {
            return Err(unavailable("the file is empty".into()));
        }
        Ok(Pin(Some(Zeroizing::new(text.to_owned()))))
    }

    /// A SHA-256 of the PIN (salted with a per-process random value), to
    /// recognize a PIN without keeping it; `None` without a PIN.
    fn digest(&self) -> Option<[u8; 32]> {
        static SALT: OnceLock<[u8; 32]> = OnceLock::new();
        let salt = SALT.get_or_init(|| {
            let mut s = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut s);
            s
        });
        let p = self.0.as_deref()?;
        let mut h = crate::crypto::Sha256::new();
        h.update(salt);
        h.update(p.as_bytes());
        Some(h.finish())
    }

    /// The PIN in cryptoki's form (a `secrecy` box, zeroized on drop).
    pub(super) fn auth(&self) -> Option<AuthPin> {
        self.0.as_deref().map(|p| AuthPin::from(p.as_str()))
    }
}

/// PINs a token rejected, process-wide per module: every key offering the
/// same PIN to the same token (serial and label) fails at once instead of
/// spending another of the token's tries. Only digests are kept.
#[derive(Default)]
pub(crate) struct RejectedPins(Mutex<HashSet<(String, String, [u8; 32])>>);

impl RejectedPins {
    fn entry(serial: &str, label: &str, pin: &Pin) -> Option<(String, String, [u8; 32])> {
        Some((serial.to_owned(), label.to_owned(), pin.digest()?))
    }

    /// True when this token already rejected this PIN.
    pub(super) fn contains(&self, serial: &str, label: &str, pin: &Pin) -> bool {
        Self::entry(serial, label, pin).is_some_and(|e| {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&e)
        })
    }

    /// Remembers that this token rejected this PIN.
    pub(super) fn insert(&self, serial: &str, label: &str, pin: &Pin) {
        if let Some(e) = Self::entry(serial, label, pin) {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_by_token_and_pin() {
        let r = RejectedPins::default();
        let a = Pin(Some(Zeroizing::new("123456".into())));
        let b = Pin(Some(Zeroizing::new("654321".into())));
        r.insert("s1", "t", &a);
        assert!(r.contains("s1", "t", &a));
        assert!(!r.contains("s1", "t", &b));
        assert!(!r.contains("s2", "t", &a));
        assert!(!r.contains("s1", "u", &a));
        r.insert("s1", "t", &Pin(None));
        assert!(!r.contains("s1", "t", &Pin(None)));
    }

    #[test]
    fn debug_redacts() {
        let p = Pin(Some(Zeroizing::new("123456".into())));
        assert!(!format!("{p:?}").contains("123456"));
    }
}
