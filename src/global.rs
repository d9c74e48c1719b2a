//! The process-wide key, in the style of rustls' `CryptoProvider::install_default`.
//!
//! A [`KeySlot`] holds the current [`PopKey`] snapshot. Readers take a
//! snapshot (a cheap clone) and use it for both the JWK and the signature,
//! so the two always come from the same key even while another thread
//! rotates. Rotation swaps the whole snapshot at once.

use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::key::PopKey;
use crate::uri::KeyUri;

/// A replaceable current key.
///
/// ```
/// use popkey::{KeySlot, PopCryptoProvider};
/// let slot = KeySlot::open("mem:?rotate=8h")?;
/// let key = slot.current();          // a snapshot: JWK and signer agree
/// let _sig = key.sign(b"input")?;
/// let old = slot.rotate_now()?;       // a fresh key for new callers
/// assert_ne!(old.kid(), slot.current().kid());
/// # Ok::<(), popkey::Error>(())
/// ```
pub struct KeySlot {
    current: RwLock<Current>,
    /// The URI to regenerate from, and how often (only `mem:` keys rotate).
    regenerate: Option<(String, Option<Duration>)>,
}

struct Current {
    key: PopKey,
    born: Instant,
}

impl KeySlot {
    /// A slot holding `key`; it changes only through [`KeySlot::replace`].
    pub fn new(key: PopKey) -> Self {
        KeySlot {
            current: RwLock::new(Current {
                key,
                born: Instant::now(),
            }),
            regenerate: None,
        }
    }

    /// Opens the key a URI names. For `mem:` URIs the slot can make new keys
    /// ([`KeySlot::rotate_now`]) and does so by itself every `rotate=`
    /// interval, as MSAL's in-memory provider does every 8 hours.
    pub fn open(uri: &str) -> Result<Self> {
        let parsed = KeyUri::parse(uri)?;
        let key = PopKey::open(uri)?;
        let mut slot = KeySlot::new(key);
        if let KeyUri::Mem(m) = parsed {
            slot.regenerate = Some((uri.to_owned(), m.rotate));
        }
        Ok(slot)
    }

    /// The current key snapshot; rotates first when a `rotate=` interval has
    /// passed. If making the new key fails, the current key stays in use and
    /// the next call tries again.
    pub fn current(&self) -> PopKey {
        {
            let cur = self.read();
            if !self.due(cur.born) {
                return cur.key.clone();
            }
        }
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        if self.due(cur.born) {
            if let Some(Ok(key)) = self.regenerate.as_ref().map(|(uri, _)| PopKey::open(uri)) {
                *cur = Current {
                    key,
                    born: Instant::now(),
                };
            }
        }
        cur.key.clone()
    }

    /// Installs `key` as the current key; returns the previous one. Holders
    /// of the old snapshot keep signing with the old key.
    pub fn replace(&self, key: PopKey) -> PopKey {
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(
            &mut *cur,
            Current {
                key,
                born: Instant::now(),
            },
        );
        old.key
    }

    /// Makes a new key now (slots opened from a `mem:` URI only); returns the
    /// previous one.
    pub fn rotate_now(&self) -> Result<PopKey> {
        let (uri, _) = self.regenerate.as_ref().ok_or_else(|| Error::Backend {
            backend: "slot",
            message: "only slots opened from a mem: URI can make new keys; use replace() with a key you opened".into(),
        })?;
        let key = PopKey::open(uri)?;
        Ok(self.replace(key))
    }

    fn due(&self, born: Instant) -> bool {
        matches!(&self.regenerate, Some((_, Some(every))) if born.elapsed() >= *every)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        // The guarded data is a whole snapshot; a panic elsewhere cannot
        // leave it half-written, so a poisoned lock is still usable.
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySlot")
            .field("current", &self.read().key)
            .finish()
    }
}

static DEFAULT: OnceLock<KeySlot> = OnceLock::new();

/// Installs the process-wide key. Fails (returning the key) if one is
/// already installed; use [`rotate_default`] to change it.
///
/// ```
/// let key = popkey::PopKey::open("mem:")?;
/// popkey::install_default(key.clone()).expect("first install");
/// assert!(popkey::default_key().unwrap().same_handle(&key));
/// assert!(popkey::install_default(key).is_err());
/// # Ok::<(), popkey::Error>(())
/// ```
pub fn install_default(key: PopKey) -> Result<(), PopKey> {
    DEFAULT.set(KeySlot::new(key)).map_err(|slot| {
        slot.current
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .key
    })
}

/// Installs a whole slot (for example a rotating `mem:` slot) as the
/// process-wide key. Fails if one is already installed.
pub fn install_default_slot(slot: KeySlot) -> Result<(), Error> {
    DEFAULT
        .set(slot)
        .map_err(|_| Error::DefaultAlreadyInstalled)
}

/// The process-wide key snapshot, if one is installed.
pub fn default_key() -> Option<PopKey> {
    DEFAULT.get().map(KeySlot::current)
}

/// The process-wide slot, if one is installed.
pub fn default_slot() -> Option<&'static KeySlot> {
    DEFAULT.get()
}

/// Replaces the process-wide key, installing it if none was; returns the
/// previous key, if any.
pub fn rotate_default(key: PopKey) -> Option<PopKey> {
    match install_default(key) {
        Ok(()) => None,
        Err(key) => DEFAULT.get().map(|slot| slot.replace(key)),
    }
}
