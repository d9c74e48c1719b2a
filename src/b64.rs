//! base64url without padding (RFC 7515 §2), strict on input.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Encodes `bytes` as unpadded base64url.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url, rejecting padding, other alphabets and
/// non-canonical trailing bits.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| format!("invalid base64url: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn strict() {
        assert_eq!(super::encode(b"\xfb\xff"), "-_8");
        assert_eq!(super::decode("-_8").unwrap(), b"\xfb\xff");
        for bad in ["-_8=", "+/8", "-_9", "a"] {
            assert!(super::decode(bad).is_err(), "{bad}");
        }
    }
}
