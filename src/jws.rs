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
    let mut out = String::with_capacity(enc + 1 + 700);
    b64::encode_into(header, &mut out);
    out.push('.');
    b64::encode_into(payload, &mut out);
    let signature = provider.sign(out.as_bytes())?;
    out.push('.');
    b64::encode_into(signature, &mut out);
    Ok(out)
}
