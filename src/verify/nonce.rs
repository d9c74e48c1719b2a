//! Stateless server nonces for SHR `nonce` and `DPoP-Nonce`.
//!
//! A nonce is `base64url(issued_at || HMAC-SHA256(secret, issued_at)[..16])`:
//! the server keeps no list, only a secret, and can tell its own fresh
//! nonces from anything else. Secrets rotate: nonces made under the
//! previous secret stay valid until they age out.

use std::sync::RwLock;

use rand::RngCore;
use zeroize::Zeroizing;

use super::{err, ErrorKind, VerifyError};

const TAG_LEN: usize = 16;
const DOMAIN: &[u8] = b"popkey server nonce v1";

/// Issues and validates stateless nonces.
///
/// ```
/// use popkey::verify::nonce::NonceIssuer;
/// let issuer = NonceIssuer::random(300);
/// let nonce = issuer.issue_at(1_700_000_000);
/// issuer.validate_at(&nonce, 1_700_000_100)?;            // fresh
/// assert!(issuer.validate_at(&nonce, 1_700_000_400).is_err()); // too old
/// # Ok::<(), popkey::verify::VerifyError>(())
/// ```
pub struct NonceIssuer {
    secrets: RwLock<Secrets>,
    lifetime: u64,
    skew: u64,
}

struct Secrets {
    current: Zeroizing<[u8; 32]>,
    previous: Option<Zeroizing<[u8; 32]>>,
}

impl NonceIssuer {
    /// An issuer with a fresh random secret; nonces live `lifetime_secs`.
    pub fn random(lifetime_secs: u64) -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut *secret);
        Self::with_secret(*secret, lifetime_secs)
    }

    /// An issuer with a given 32-byte secret (share it between instances of
    /// one API so each accepts the others' nonces).
    pub fn with_secret(secret: [u8; 32], lifetime_secs: u64) -> Self {
        NonceIssuer {
            secrets: RwLock::new(Secrets {
                current: Zeroizing::new(secret),
                previous: None,
            }),
            lifetime: lifetime_secs.max(1),
            skew: 5,
        }
    }

    /// How long a nonce is accepted, in seconds.
    pub fn lifetime(&self) -> u64 {
        self.lifetime
    }

    /// Starts using `secret` for new nonces; nonces under the old secret
    /// remain valid until they expire.
    pub fn rotate(&self, secret: [u8; 32]) {
        let mut s = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut s.current, Zeroizing::new(secret));
        s.previous = Some(old);
    }

    /// A nonce issued now.
    pub fn issue(&self) -> String {
        self.issue_at(crate::now())
    }

    /// A nonce issued at `now` (Unix seconds).
    pub fn issue_at(&self, now: u64) -> String {
        let s = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(8 + TAG_LEN);
        out.extend_from_slice(&now.to_be_bytes());
        out.extend_from_slice(&tag(&s.current, now)[..TAG_LEN]);
        crate::b64::encode(out)
    }

    /// Checks a nonce now.
    pub fn validate(&self, nonce: &str) -> Result<(), VerifyError> {
        self.validate_at(nonce, crate::now())
    }

    /// Checks that `nonce` was issued by this server (current or previous
    /// secret) and is not older than the lifetime at `now`.
    pub fn validate_at(&self, nonce: &str, now: u64) -> Result<(), VerifyError> {
        let bytes = crate::b64::decode(nonce)
            .ok()
            .filter(|b| b.len() == 8 + TAG_LEN)
            .ok_or_else(|| {
                err(
                    ErrorKind::InvalidNonce,
                    "the nonce was not issued by this server",
                )
            })?;
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&bytes[..8]);
        let issued = u64::from_be_bytes(ts);
        let s = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        let ours = std::iter::once(&s.current)
            .chain(s.previous.as_ref())
            .any(|secret| check_tag(secret, issued, &bytes[8..]));
        if !ours {
            return Err(err(
                ErrorKind::InvalidNonce,
                "the nonce was not issued by this server",
            ));
        }
        if issued > now.saturating_add(self.skew) || now.saturating_sub(issued) > self.lifetime {
            return Err(err(
                ErrorKind::NonceRequired,
                "the nonce has expired; use the fresh one the server sent",
            ));
        }
        Ok(())
    }
}

fn mac(secret: &[u8; 32], ts: u64) -> [u8; 32] {
    crate::crypto::hmac_sha256(secret, &[DOMAIN, &ts.to_be_bytes()])
}

fn tag(secret: &[u8; 32], ts: u64) -> Vec<u8> {
    mac(secret, ts).to_vec()
}

/// Constant-time comparison of a truncated tag (1 to 32 bytes).
fn check_tag(secret: &[u8; 32], ts: u64, tag: &[u8]) -> bool {
    let full = mac(secret, ts);
    !tag.is_empty()
        && tag.len() <= full.len()
        && crate::crypto::constant_time_eq(&full[..tag.len()], tag)
}

impl std::fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceIssuer")
            .field("lifetime", &self.lifetime)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_validate_rotate() {
        let a = NonceIssuer::with_secret([1; 32], 60);
        let n = a.issue_at(1000);
        a.validate_at(&n, 1000).unwrap();
        a.validate_at(&n, 1060).unwrap();
        assert_eq!(
            a.validate_at(&n, 1061).unwrap_err().kind(),
            ErrorKind::NonceRequired
        );
        assert_eq!(
            a.validate_at(&n, 900).unwrap_err().kind(),
            ErrorKind::NonceRequired
        );
        // Another server's nonce, garbage, and a tampered timestamp.
        let b = NonceIssuer::with_secret([2; 32], 60);
        assert_eq!(
            b.validate_at(&n, 1000).unwrap_err().kind(),
            ErrorKind::InvalidNonce
        );
        assert_eq!(
            a.validate_at("nope", 1000).unwrap_err().kind(),
            ErrorKind::InvalidNonce
        );
        let mut raw = crate::b64::decode(&n).unwrap();
        raw[7] ^= 1;
        assert_eq!(
            a.validate_at(&crate::b64::encode(raw), 1000)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidNonce
        );
        // Rotation keeps the previous secret's nonces valid.
        a.rotate([3; 32]);
        a.validate_at(&n, 1010).unwrap();
        let m = a.issue_at(1010);
        a.validate_at(&m, 1010).unwrap();
        a.rotate([4; 32]);
        assert_eq!(
            a.validate_at(&n, 1010).unwrap_err().kind(),
            ErrorKind::InvalidNonce
        );
        assert!(!format!("{a:?}").contains("[4"));
    }
}
