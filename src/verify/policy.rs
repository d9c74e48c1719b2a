//! What both verifiers share: the nonce policy, the freshness window, the
//! replay store and the access-token validator.

use std::fmt;

use super::{err, nonce, replay, token, ErrorKind, VerifyError};

/// How a verifier treats the proof's nonce.
#[derive(Clone, Default)]
pub enum NoncePolicy {
    /// No server nonce: for SHR the client's random `nonce` must be present;
    /// for DPoP a `nonce` claim is not required.
    #[default]
    ClientChosen,
    /// The proof must carry exactly this nonce.
    Expected(String),
    /// The proof must carry a fresh nonce from this issuer.
    Issuer(std::sync::Arc<nonce::NonceIssuer>),
}

impl fmt::Debug for NoncePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoncePolicy::ClientChosen => f.write_str("ClientChosen"),
            NoncePolicy::Expected(n) => f.debug_tuple("Expected").field(n).finish(),
            NoncePolicy::Issuer(_) => f.write_str("Issuer(..)"),
        }
    }
}

impl NoncePolicy {
    /// Checks `nonce` (the proof's, if any) under this policy.
    pub(crate) fn check(
        &self,
        nonce: Option<&str>,
        now: u64,
        required_anyway: bool,
    ) -> Result<(), VerifyError> {
        match (self, nonce) {
            (NoncePolicy::ClientChosen, Some(n)) if !n.is_empty() => Ok(()),
            (NoncePolicy::ClientChosen, _) if !required_anyway => Ok(()),
            (NoncePolicy::ClientChosen, _) => Err(err(
                ErrorKind::MissingClaim,
                "claim `nonce` is missing or empty",
            )),
            (_, None) => Err(err(
                ErrorKind::NonceRequired,
                "this server requires a nonce; use the one it sent",
            )),
            (NoncePolicy::Expected(want), Some(n)) => {
                if n == want {
                    Ok(())
                } else {
                    Err(err(
                        ErrorKind::InvalidNonce,
                        "the nonce is not the one this server expects",
                    ))
                }
            }
            (NoncePolicy::Issuer(issuer), Some(n)) => issuer.validate_at(n, now),
        }
    }
}

/// A replay-store key that does not depend on attacker-chosen layout.
pub(crate) fn replay_id(prefix: &str, parts: &[&[u8]]) -> String {
    let mut h = crate::crypto::Sha256::new();
    for p in parts {
        h.update(&(p.len() as u64).to_be_bytes());
        h.update(p);
    }
    format!("{prefix}:{}", crate::b64::encode(h.finish()))
}

/// What both verifiers check the same way: the access-token validator, the
/// allowed algorithms, the freshness window, the nonce and replay.
#[derive(Clone)]
pub(crate) struct Common {
    pub(crate) validator: std::sync::Arc<dyn token::AccessTokenValidator>,
    pub(crate) algs: Vec<crate::Algorithm>,
    pub(crate) max_age: u64,
    pub(crate) skew: u64,
    pub(crate) nonce: NoncePolicy,
    pub(crate) replay: replay::ReplaySink,
}

impl Common {
    /// ES256/RS256/PS256, at most 300 s old and 60 s ahead, client-chosen
    /// nonce, an in-memory replay cache of its own.
    pub(crate) fn new(validator: std::sync::Arc<dyn token::AccessTokenValidator>) -> Self {
        Common {
            validator,
            algs: crate::Algorithm::ALL.to_vec(),
            max_age: 300,
            skew: 60,
            nonce: NoncePolicy::ClientChosen,
            replay: replay::ReplaySink::Sync(std::sync::Arc::new(replay::MemoryReplayCache::new(
                DEFAULT_REPLAY_CAPACITY,
            ))),
        }
    }
}

/// Capacity of the replay cache a verifier makes for itself.
pub(crate) const DEFAULT_REPLAY_CAPACITY: usize = 1 << 20;

impl Common {
    /// The record to make for a proof that passed every other check, when
    /// replay protection is on: its id lives until `time + max_age + skew`.
    pub(crate) fn replay_record(
        &self,
        label: &str,
        parts: &[&[u8]],
        time: u64,
        now: u64,
    ) -> Option<replay::ReplayRecord> {
        if !self.replay.is_on() {
            return None;
        }
        Some(replay::ReplayRecord {
            id: replay_id(label, parts),
            expires_at: time.saturating_add(self.max_age).saturating_add(self.skew),
            now,
        })
    }
}

/// The builder methods both verifiers share; `$time` names the claim the
/// freshness window applies to.
macro_rules! common_builders {
    ($ty:ty, $time:literal) => {
        impl $ty {
            /// Allowed algorithms (asymmetric only; the type admits nothing
            /// else). Advertise the same in `algs=`.
            pub fn algorithms(mut self, algs: &[crate::Algorithm]) -> Self {
                self.common.algs = algs.to_vec();
                self
            }

            /// The allowed algorithms.
            pub fn allowed_algorithms(&self) -> &[crate::Algorithm] {
                &self.common.algs
            }

            #[doc = concat!("Oldest acceptable `", $time, "`, in seconds (default 300).")]
            pub fn max_age(mut self, secs: u64) -> Self {
                self.common.max_age = secs;
                self
            }

            #[doc = concat!("How far in the future `", $time, "` may be, in seconds (default 60).")]
            pub fn clock_skew(mut self, secs: u64) -> Self {
                self.common.skew = secs;
                self
            }

            /// The nonce policy (for example a [`super::nonce::NonceIssuer`]).
            pub fn nonce(mut self, policy: super::NoncePolicy) -> Self {
                self.common.nonce = policy;
                self
            }

            /// Where seen proofs are recorded, to reject a second use of the
            /// same proof. By default each verifier has its own in-memory
            /// [`super::replay::MemoryReplayCache`]; give several verifiers (or
            /// instances, with a shared store) the same one.
            pub fn replay_store(
                mut self,
                store: std::sync::Arc<dyn super::replay::ReplayStore>,
            ) -> Self {
                self.common.replay = super::replay::ReplaySink::Sync(store);
                self
            }

            /// Where seen proofs are recorded, for a store that does network
            /// I/O (for example `RedisReplayStore`, feature `redis`): use
            /// `verify_async`; the blocking `verify` then fails closed with
            /// `replay_store_unavailable`.
            pub fn async_replay_store(
                mut self,
                store: std::sync::Arc<dyn super::replay::AsyncReplayStore>,
            ) -> Self {
                self.common.replay = super::replay::ReplaySink::Async(store);
                self
            }

            /// Turns replay protection off: the same proof is accepted again
            /// and again within its freshness window. Only for a verifier
            /// behind something that already refuses replays, or for tools.
            pub fn without_replay_protection(mut self) -> Self {
                self.common.replay = super::replay::ReplaySink::Off;
                self
            }
        }
    };
}
pub(crate) use common_builders;
