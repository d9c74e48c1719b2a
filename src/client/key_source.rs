//! Where a client gets its key: one fixed key, a rotating [`KeySlot`], or
//! the process-wide key.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::global::KeySlot;
use crate::key::PopKey;

/// The key a client signs with, followed through rotations.
///
/// Every request takes **one snapshot** ([`KeySource::current`]) and uses it
/// for both the token (the token cache is keyed by the key's thumbprint, so
/// a rotated key gets a token bound to it) and the proof. The token's `cnf`
/// and the proof's key are therefore always one pair, also while another
/// thread rotates the slot.
///
/// ```
/// use std::sync::Arc;
/// use popkey::client::KeySource;
/// use popkey::{KeySlot, PopKey};
///
/// // One key for the client's lifetime.
/// let fixed: KeySource = PopKey::open("mem:")?.into();
/// // A slot that rotates (MSAL's in-memory key, every 8 hours).
/// let slot = Arc::new(KeySlot::open("mem:?rotate=8h")?);
/// let rotating = KeySource::from(slot.clone());
/// let before = rotating.current();
/// slot.rotate_now()?;
/// assert_ne!(before.kid(), rotating.current().kid());
/// # let _ = fixed;
/// # Ok::<(), popkey::Error>(())
/// ```
///
/// The process-wide key ([`crate::install_default`],
/// [`crate::rotate_default`]) is [`KeySource::process_default`].
#[derive(Clone)]
pub struct KeySource(Source);

#[derive(Clone)]
enum Source {
    Fixed(PopKey),
    Shared(Arc<KeySlot>),
    Static(&'static KeySlot),
}

impl KeySource {
    /// Always `key`.
    pub fn fixed(key: PopKey) -> Self {
        KeySource(Source::Fixed(key))
    }

    /// The current key of a shared slot.
    pub fn slot(slot: Arc<KeySlot>) -> Self {
        KeySource(Source::Shared(slot))
    }

    /// The current key of a slot that lives for the whole process.
    pub fn static_slot(slot: &'static KeySlot) -> Self {
        KeySource(Source::Static(slot))
    }

    /// The process-wide key ([`crate::default_slot`]), following
    /// [`crate::rotate_default`]. Fails when no key has been installed
    /// yet ([`crate::install_default`] or [`crate::install_default_slot`]).
    pub fn process_default() -> Result<Self> {
        crate::global::default_slot()
            .map(Self::static_slot)
            .ok_or_else(|| {
                Error::Config(
                    "no process-wide key is installed: call popkey::install_default (or install_default_slot) first"
                        .into(),
                )
            })
    }

    /// A snapshot of the current key. Use it for everything one request
    /// signs: the snapshot's JWK and signatures always belong together.
    /// For a slot with a `rotate=` interval this may make the next key.
    pub fn current(&self) -> PopKey {
        match &self.0 {
            Source::Fixed(key) => key.clone(),
            Source::Shared(slot) => slot.current(),
            Source::Static(slot) => slot.current(),
        }
    }

    /// True when the key can change between requests (a slot).
    pub fn rotates(&self) -> bool {
        !matches!(self.0, Source::Fixed(_))
    }
}

impl From<PopKey> for KeySource {
    fn from(key: PopKey) -> Self {
        Self::fixed(key)
    }
}

impl From<&PopKey> for KeySource {
    fn from(key: &PopKey) -> Self {
        Self::fixed(key.clone())
    }
}

impl From<Arc<KeySlot>> for KeySource {
    fn from(slot: Arc<KeySlot>) -> Self {
        Self::slot(slot)
    }
}

impl From<&'static KeySlot> for KeySource {
    fn from(slot: &'static KeySlot) -> Self {
        Self::static_slot(slot)
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key's Debug form shows no secrets (URI redacted, public data).
        match &self.0 {
            Source::Fixed(key) => f.debug_tuple("KeySource::Fixed").field(key).finish(),
            Source::Shared(slot) => f.debug_tuple("KeySource::Slot").field(slot).finish(),
            Source::Static(slot) => f.debug_tuple("KeySource::StaticSlot").field(slot).finish(),
        }
    }
}
