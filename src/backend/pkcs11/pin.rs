//! The user PIN: read once from `pin-source` (a file) or `pin-value`, kept
//! in memory that is zeroized on drop, never printed.

use std::fmt;
use std::io::Read;

use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
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
        let unavailable =
            |why: String| Error::PinUnavailable(format!("pin-source {}: {why}", path.display()));
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

    /// The PIN in cryptoki's form (a `secrecy` box, zeroized on drop).
    pub(super) fn auth(&self) -> Option<AuthPin> {
        self.0.as_deref().map(|p| AuthPin::from(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let p = Pin(Some(Zeroizing::new("123456".into())));
        assert!(!format!("{p:?}").contains("123456"));
    }
}
