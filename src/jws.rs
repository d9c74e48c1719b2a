//! Compact JWS (RFC 7515 §7.1) signed by any [`PopCryptoProvider`].

use crate::b64;
use crate::error::Result;
use crate::provider::PopCryptoProvider;

/// Signs `header` and `payload` (both compact JSON) as a compact JWS:
/// `b64url(header) . b64url(payload) . b64url(signature)`.
///
/// The signature is whatever the provider returns; a [`crate::PopKey`]
/// guarantees raw `r || s` for ECDSA.
pub fn sign_compact<P: PopCryptoProvider + ?Sized>(
    provider: &P,
    header: &[u8],
    payload: &[u8],
) -> Result<String> {
    let enc = base64::encoded_len(header.len(), false).unwrap_or(0)
        + base64::encoded_len(payload.len(), false).unwrap_or(0);
    // Encoded straight into one buffer (no intermediate strings).
    let mut out = Vec::with_capacity(enc + 1 + 700);
    b64::encode_append(header, &mut out);
    out.push(b'.');
    b64::encode_append(payload, &mut out);
    let signature = provider.sign(&out)?;
    out.push(b'.');
    b64::encode_append(signature, &mut out);
    // base64url and '.' are ASCII, so this never copies.
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}
