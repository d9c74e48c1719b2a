//! Stateless server nonces for SHR `nonce` and `DPoP-Nonce`.
//!
//! A nonce is `base64url(issued_at || HMAC-SHA256(secret, issued_at)[..16])`:
//! the server keeps no list, only a secret, and can tell its own fresh
//! nonces from anything else. Secrets rotate: nonces made under the
//! previous secret stay valid until they age out.
//!
//! # A fleet: one key ring
//!
//! Instances of one API accept each other's nonces when they load the same
//! key ring ([`NonceIssuer::from_key_ring_file`], or
//! [`NonceIssuer::from_key_ring_env`]) from the operator's secret manager.
//! The ring is either lines of `<id> <base64 32-byte secret>` (`#` starts a
//! comment) or JSON `{"keys": [{"id": "…", "secret": "…"}, …]}`. The **last**
//! key issues; every key is accepted (at most 16).
//!
//! Rotation without refusing in-flight nonces:
//! 1. Add the new key at the **start** of the ring and roll it out to every
//!    instance (accepted everywhere, issued nowhere yet).
//! 2. Move it to the **end** and roll out again: instances now issue with
//!    it, and still accept nonces made with the old one.
//! 3. After one nonce lifetime, remove the old key and roll out.
//!
//! Generate a secret with `openssl rand -base64 32`.

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
    /// The secret new nonces are made with.
    current: Zeroizing<[u8; 32]>,
    /// Other secrets still accepted.
    previous: Vec<Zeroizing<[u8; 32]>>,
    /// The key ids, oldest first (not secret; for Debug).
    ids: Vec<String>,
}

/// Most keys a ring may hold (each is tried when checking a nonce).
pub const MAX_RING_KEYS: usize = 16;

/// A key ring that cannot be used. The message never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRingError(String);

impl std::fmt::Display for KeyRingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "nonce key ring: {}", self.0)
    }
}

impl std::error::Error for KeyRingError {}

fn ring_err(m: impl Into<String>) -> KeyRingError {
    KeyRingError(m.into())
}

/// Decodes a 32-byte secret in standard or URL-safe base64, padded or not.
fn decode_secret(id: &str, text: &str) -> Result<Zeroizing<[u8; 32]>, KeyRingError> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;
    let text = text.trim();
    let bytes = Zeroizing::new(
        [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|e| e.decode(text).ok())
            .ok_or_else(|| ring_err(format!("the secret of key `{id}` is not base64")))?,
    );
    if bytes.len() != 32 {
        return Err(ring_err(format!(
            "the secret of key `{id}` must be 32 bytes, not {}",
            bytes.len()
        )));
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// One key of a ring: its id and secret.
type RingKey = (String, Zeroizing<[u8; 32]>);

/// Parses a ring (lines or JSON) into (id, secret), oldest first.
fn parse_ring(text: &str) -> Result<Vec<RingKey>, KeyRingError> {
    let mut keys = Vec::new();
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: serde_json::Value = serde_json::from_str(trimmed)
            .map_err(|e| ring_err(format!("not valid JSON (line {})", e.line())))?;
        let list = match &v {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Object(o) => match o.get("keys") {
                Some(serde_json::Value::Array(a)) => a,
                _ => return Err(ring_err("JSON ring needs a `keys` array")),
            },
            _ => return Err(ring_err("JSON ring needs a `keys` array")),
        };
        for k in list {
            let id = k.get("id").and_then(|v| v.as_str());
            let secret = k.get("secret").and_then(|v| v.as_str());
            match (id, secret) {
                (Some(id), Some(secret)) => keys.push((id.to_owned(), decode_secret(id, secret)?)),
                _ => return Err(ring_err("each key needs string `id` and `secret`")),
            }
        }
    } else {
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(id), Some(secret), None) => {
                    keys.push((id.to_owned(), decode_secret(id, secret)?))
                }
                _ => {
                    return Err(ring_err(format!(
                        "line {} is not `<id> <base64 secret>`",
                        n + 1
                    )))
                }
            }
        }
    }
    if keys.is_empty() {
        return Err(ring_err("no keys"));
    }
    if keys.len() > MAX_RING_KEYS {
        return Err(ring_err(format!("more than {MAX_RING_KEYS} keys")));
    }
    for (i, (id, _)) in keys.iter().enumerate() {
        if keys[..i].iter().any(|(other, _)| other == id) {
            return Err(ring_err(format!("key id `{id}` appears twice")));
        }
    }
    Ok(keys)
}

impl Secrets {
    fn from_ring(text: &str) -> Result<Self, KeyRingError> {
        let mut keys = parse_ring(text)?;
        let ids = keys.iter().map(|(id, _)| id.clone()).collect();
        // parse_ring never returns an empty ring.
        let (_, current) = keys.pop().ok_or_else(|| ring_err("no keys"))?;
        Ok(Secrets {
            current,
            previous: keys.into_iter().map(|(_, s)| s).collect(),
            ids,
        })
    }
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
                previous: Vec::new(),
                ids: Vec::new(),
            }),
            lifetime: lifetime_secs.max(1),
            skew: 5,
        }
    }

    /// An issuer over a key ring (see the [module documentation](self)):
    /// `ring` is its text, lines or JSON. The last key issues; all are
    /// accepted, so every instance loading the same ring accepts the
    /// others' nonces.
    ///
    /// ```
    /// use popkey::verify::nonce::NonceIssuer;
    /// let ring = "2026-11 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\
    ///             2026-12 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n";
    /// let a = NonceIssuer::from_key_ring(ring, 300)?;
    /// let b = NonceIssuer::from_key_ring(ring, 300)?;
    /// b.validate_at(&a.issue_at(1_700_000_000), 1_700_000_010)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_key_ring(ring: &str, lifetime_secs: u64) -> Result<Self, KeyRingError> {
        Ok(NonceIssuer {
            secrets: RwLock::new(Secrets::from_ring(ring)?),
            lifetime: lifetime_secs.max(1),
            skew: 5,
        })
    }

    /// [`NonceIssuer::from_key_ring`] with the ring read from a file.
    pub fn from_key_ring_file(
        path: impl AsRef<std::path::Path>,
        lifetime_secs: u64,
    ) -> Result<Self, KeyRingError> {
        let path = path.as_ref();
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| ring_err(format!("cannot read {}: {e}", path.display())))?,
        );
        Self::from_key_ring(&text, lifetime_secs)
    }

    /// [`NonceIssuer::from_key_ring`] with the ring read from the
    /// environment variable `var`.
    pub fn from_key_ring_env(var: &str, lifetime_secs: u64) -> Result<Self, KeyRingError> {
        let text = Zeroizing::new(
            std::env::var(var).map_err(|_| ring_err(format!("`{var}` is not set")))?,
        );
        Self::from_key_ring(&text, lifetime_secs)
    }

    /// Replaces the ring of a running issuer (after the operator rolled out
    /// a new ring file): nonces under keys still in the ring stay valid.
    pub fn reload_key_ring(&self, ring: &str) -> Result<(), KeyRingError> {
        let fresh = Secrets::from_ring(ring)?;
        let mut s = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        *s = fresh;
        Ok(())
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
        s.previous = vec![old];
        s.ids.clear();
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
            .chain(s.previous.iter())
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
            .field(
                "key_ids",
                &self
                    .secrets
                    .read()
                    .map(|s| s.ids.clone())
                    .unwrap_or_default(),
            )
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

    #[test]
    fn key_ring_lines_and_json_rotation() {
        use base64::Engine;
        let k = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        let ring1 = format!("# ring\nold {}\n", k(1));
        let a = NonceIssuer::from_key_ring(&ring1, 60).unwrap();
        let n_old = a.issue_at(1000);
        // Step 1: new key first (accepted), step 2: new key last (issues).
        let ring2 = format!("new {}\nold {}\n", k(2), k(1));
        let b = NonceIssuer::from_key_ring(&ring2, 60).unwrap();
        b.validate_at(&n_old, 1010).unwrap();
        assert_eq!(b.issue_at(1000), n_old, "the last key issues");
        let ring3 = format!(
            r#"{{"keys": [{{"id": "old", "secret": "{}"}}, {{"id": "new", "secret": "{}"}}]}}"#,
            k(1),
            k(2)
        );
        let c = NonceIssuer::from_key_ring(&ring3, 60).unwrap();
        let n_new = c.issue_at(1020);
        assert_ne!(n_new, a.issue_at(1020));
        a.reload_key_ring(&ring3).unwrap();
        a.validate_at(&n_new, 1030).unwrap();
        a.validate_at(&n_old, 1030).unwrap();
        // Step 3: old key removed.
        a.reload_key_ring(&format!("new {}", k(2))).unwrap();
        assert_eq!(
            a.validate_at(&n_old, 1030).unwrap_err().kind(),
            ErrorKind::InvalidNonce
        );
        assert!(format!("{a:?}").contains("new"));
        for bad in [
            String::new(),
            "x".into(),
            "id notbase64!".into(),
            format!(
                "id {}",
                base64::engine::general_purpose::STANDARD.encode([1; 16])
            ),
            format!("a {}\na {}", k(1), k(2)),
            "{\"keys\": 1}".into(),
        ] {
            let e = NonceIssuer::from_key_ring(&bad, 60).unwrap_err();
            assert!(!e.to_string().contains(&k(1)), "{e}");
        }
    }
}
